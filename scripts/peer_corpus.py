"""Run cnnfilters over a peer's test corpus: Pillow's own ``Tests/images``.

Pillow's source distribution carries about a thousand images its tests read:
real files of every format and mode, and broken, truncated and fuzzer-found
ones. This script fetches the source distribution of the Pillow that is
installed from the package index (checked against the index's SHA-256, kept
in ``--cache``), then, for every file of ``Tests/images``:

1. runs ``cnnfilters grayscale`` and ``cnnfilters gradient`` on it, one
   process per file and command under ``--timeout``, and records the exit
   code, the time, the peak memory (the child's maximum RSS) and whether
   stderr held anything but ``cnnfilters:`` lines (a bare library message, a
   traceback);
2. where cnnfilters reads the file, compares its decoded pixels with
   Pillow's own decode of the file (``ImageOps.exif_transpose`` of
   ``Image.open``, in the same mode): identical, or the largest difference
   and how many values differ. This too runs in a process of its own.

Prints the tally and the files that differ or misbehave, and writes every
figure to ``OUT/peer_corpus.json``. ``docs/INPUTS.md`` gives the figures of
a run and what differs and why.

Usage::

    python scripts/peer_corpus.py [--out bench-out] [--jobs 2] [--timeout 60]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

INDEX = "https://pypi.org/simple"
COMMANDS = ("grayscale", "gradient")


def fetch_sdist(version: str, cache: Path, index: str) -> Path:
    """Pillow's source distribution of ``version`` from the index, its hash checked."""
    name = f"pillow-{version}.tar.gz"
    target = cache / name
    request = urllib.request.Request(
        f"{index.rstrip('/')}/pillow/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    entry = next((f for f in files if f["filename"].lower() == name), None)
    if entry is None:
        raise SystemExit(f"{name} is not on {index}")
    digest = entry["hashes"]["sha256"]
    if not (target.exists() and _sha256(target) == digest):
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        with (
            urllib.request.urlopen(entry["url"], timeout=300) as response,
            open(partial, "wb") as out,
        ):
            shutil.copyfileobj(response, out)
        if _sha256(partial) != digest:
            partial.unlink()
            raise SystemExit(f"{name}: the download does not match the index's SHA-256")
        partial.replace(target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_images(sdist: Path, into: Path) -> Path:
    """``Tests/images`` of the source distribution, extracted under ``into``."""
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/Tests/images/" in m.name and m.isfile()]
        archive.extractall(into, members=members, filter="data")
    return next(into.glob("*/Tests/images"))


def run_measured(command: list[str], timeout: float, cwd: Path) -> dict:
    """Run ``command`` in a session of its own; its exit code (None: killed, with all
    its processes, at the timeout), seconds and output."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        out, err = process.communicate()
    finally:
        timer.cancel()
    return {
        "code": None if killed.is_set() else process.returncode,
        "seconds": round(time.perf_counter() - started, 3),
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace"),
    }


def run_with_rss(command: list[str], timeout: float, cwd: Path) -> dict:
    """:func:`run_measured` with the child's peak RSS, from a wrapper process that
    reports its child's ``ru_maxrss`` (each file's figure, not the run's largest)."""
    wrapper = [sys.executable, __file__, "--rss-of", "--", *command]
    result = run_measured(wrapper, timeout, cwd)
    match = re.search(r"\npeak-rss-kb (\d+)\n?$", result["stderr"])
    result["rss_mb"] = round(int(match[1]) / 1024, 1) if match else None
    if match:
        result["stderr"] = result["stderr"][: match.start()]
    code = re.search(r"\nexit (-?\d+)$", result["stderr"])
    if code:
        result["code"] = int(code[1]) if result["code"] is not None else None
        result["stderr"] = result["stderr"][: code.start()]
    return result


def _rss_of(command: list[str]) -> None:
    """Run ``command`` and report its exit code and peak RSS on stderr (the wrapper)."""
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    sys.stderr.flush()
    code = os.waitstatus_to_exitcode(status)
    sys.stderr.write(f"\nexit {code}\npeak-rss-kb {usage.ru_maxrss}\n")
    raise SystemExit(0)


def compare_decodes(path: str) -> dict:
    """cnnfilters' decode of ``path`` against Pillow's, as JSON-able figures."""
    import numpy as np
    from PIL import Image, ImageOps

    from cnnfilters.errors import CnnFiltersError
    from cnnfilters.images import load_image

    try:
        ours = load_image(path)
    except CnnFiltersError as exc:
        return {"ours": "refused", "why": str(exc)}
    try:
        with Image.open(path) as image:
            image.load()
            turned = ImageOps.exif_transpose(image)
            theirs = _like(turned, ours)
    except Exception as exc:  # any failure of Pillow's is a figure here
        return {"ours": "read", "pillow": f"fails: {type(exc).__name__}: {exc}"[:200]}
    if theirs is None:
        return {"ours": "read", "pillow": f"no comparable mode ({turned.mode})"}
    mine = np.asarray(ours.pixels)
    if theirs.shape != mine.shape:
        return {"ours": "read", "pillow": "read", "shape": [list(mine.shape), list(theirs.shape)]}
    diff = np.abs(mine.astype(np.float64) - theirs.astype(np.float64))
    both_nan = np.isnan(mine.astype(np.float64)) & np.isnan(theirs.astype(np.float64))
    diff[both_nan] = 0
    return {
        "ours": "read",
        "pillow": "read",
        "mode": ours.mode,
        "max_diff": float(np.nanmax(diff)) if diff.size else 0.0,
        "differing": int(np.count_nonzero(diff)),
        "total": int(diff.size),
    }


def _like(image, ours):
    """Pillow's pixels as ``(C, H, W)`` in cnnfilters' layout and scale, or None."""
    import numpy as np

    channels, kind = ours.pixels.shape[0], ours.kind
    if kind == "uint8":
        converted = image.convert("RGB" if channels == 3 else "L")
        array = np.asarray(converted)
    elif image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F") and channels == 1:
        array = np.asarray(image)
    else:
        return None
    return array.transpose(2, 0, 1) if array.ndim == 3 else array[np.newaxis]


def examine(path: Path, root: Path, out: Path, timeout: float) -> dict:
    """Every figure of one corpus file."""
    entry: dict = {"file": str(path.relative_to(root)), "bytes": path.stat().st_size}
    folder = Path(tempfile.mkdtemp(dir=out))
    try:
        for command in COMMANDS:
            call = [
                sys.executable,
                "-m",
                "cnnfilters",
                command,
                str(path),
                "--out-dir",
                str(folder),
                "-q",
                "--force",
            ]
            result = run_with_rss(call, timeout, folder)
            lines = [line for line in result["stderr"].splitlines() if line]
            entry[command] = {
                "code": result["code"],
                "seconds": result["seconds"],
                "rss_mb": result["rss_mb"],
                "stderr": lines[:3],
                "clean": all(line.startswith("cnnfilters: ") for line in lines),
            }
        compare = run_measured([sys.executable, __file__, "--compare", str(path)], timeout, folder)
        try:
            entry["decode"] = json.loads(compare["stdout"])
        except json.JSONDecodeError:
            entry["decode"] = {
                "ours": "crashed",
                "code": compare["code"],
                "stderr": compare["stderr"][-300:],
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return entry


def tally(entries: list[dict]) -> dict:
    codes = {c: collections.Counter(str(e[c]["code"]) for e in entries) for c in COMMANDS}
    decode = collections.Counter()
    differing = []
    for e in entries:
        d = e["decode"]
        if d.get("ours") != "read":
            decode["refused by cnnfilters"] += 1
        elif d.get("pillow") != "read":
            decode["read, Pillow fails or has no comparable mode"] += 1
        elif "shape" in d:
            decode["read, shapes differ"] += 1
            differing.append(e)
        elif d["differing"] == 0:
            decode["identical to Pillow"] += 1
        else:
            decode["differ from Pillow"] += 1
            differing.append(e)
    seconds = sorted(e[c]["seconds"] for e in entries for c in COMMANDS)
    rss = sorted(e[c]["rss_mb"] for e in entries for c in COMMANDS if e[c]["rss_mb"] is not None)
    return {
        "files": len(entries),
        "exit_codes": {c: dict(sorted(codes[c].items())) for c in COMMANDS},
        "unclean_stderr": [e["file"] for e in entries if not all(e[c]["clean"] for c in COMMANDS)],
        "timeouts": [e["file"] for e in entries if any(e[c]["code"] is None for c in COMMANDS)],
        "internal_errors": [
            e["file"] for e in entries if any(e[c]["code"] == 70 for c in COMMANDS)
        ],
        "seconds": {"median": seconds[len(seconds) // 2], "max": seconds[-1]},
        "rss_mb": {"median": rss[len(rss) // 2], "max": rss[-1]} if rss else {},
        "decode": dict(decode),
        "differing": [{"file": e["file"], **e["decode"]} for e in differing],
    }


def main() -> None:
    if sys.argv[1:2] == ["--rss-of"]:
        _rss_of(sys.argv[3:])
    if sys.argv[1:2] == ["--compare"]:
        sys.stdout.write(json.dumps(compare_decodes(sys.argv[2])) + "\n")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--cache", type=Path, default=Path("bench-out/cache"))
    parser.add_argument("--index", default=INDEX, help="The package index (PEP 691 JSON).")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--limit", type=int, default=0, help="Only the first N files.")
    args = parser.parse_args()

    from PIL import __version__ as pillow

    sdist = fetch_sdist(pillow, args.cache, args.index)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="peer-corpus-", dir=args.out))
    try:
        root = extract_images(sdist, work / "src")
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if args.limit:
            files = files[: args.limit]
        started = time.perf_counter()
        entries: list[dict] = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(examine, p, root, work, args.timeout) for p in files]
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                entries.append(future.result())
                if done % 100 == 0:
                    print(f"{done} of {len(files)} files", file=sys.stderr)
        entries.sort(key=lambda e: e["file"])
        summary = tally(entries)
        summary["pillow"] = pillow
        summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (args.out / "peer_corpus.json").write_text(
        json.dumps({"summary": summary, "files": entries}, indent=1) + "\n"
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "differing"}, indent=1))
    for item in summary["differing"]:
        print("differs:", json.dumps(item))


if __name__ == "__main__":
    main()
