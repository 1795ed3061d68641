"""Benchmark cnnfilters against the usual tools: ratios measured in one run.

Makes deterministic photo-like test images from the bundled samples (12 MP
and 48 MP PNGs), then measures:

1. end to end, as a user runs it: ``cnnfilters grayscale|gradient|avgpool`` on
   the 12 MP PNG against a Pillow one-liner doing the same with default save
   settings, and against OpenCV one-liners when ``cv2`` is installed;
2. the engine alone, per construction, against a straightforward numpy
   implementation (``np.pad`` + ``sliding_window_view`` + ``einsum``) and
   OpenCV on one thread of ours (the default), and against PyTorch CPU when
   installed, both libraries on every core (``set_num_threads``);
3. peak memory (RSS) of ``cnnfilters gradient --on rgb`` on the 48 MP image
   and of ``grayscale`` on the 12 MP one, against the decoded RGB image;
4. start-up: ``cnnfilters --help`` and ``--version`` against ``import typer``;
5. batches of 16 photos: 2.5 MP ones through ``grayscale -j 2`` against the
   ``multiprocessing.Pool(2)`` Pillow script of 6; through ``gradient``,
   ``-j 2`` against ``-j 1``, 2.5 MP photos, then 12 MP ones;
6. ``scale``: 2,000 PNGs of 32 x 32 through ``grayscale -r -j 2`` against
   a plain ``multiprocessing.Pool(2)`` script doing Pillow's
   ``open().convert("L").save()`` with the fast save settings; ``-j 2``
   against ``-j 1``, and both against two ``-j 1`` runs at once over half the
   files each (what two processes that share nothing get of this machine: the
   ceiling of any ``-j 2`` / ``-j 1`` ratio here); peak RSS of
   a 2,000-file and a 200,000-file run (``--scale-files``; hard links to
   8 small PNGs) and the time to the first output;
7. ``learn``: one training step (the engine's forward pass and
   ``conv2d_grad``) on a 1 MP image, for each layer ``learn`` trains, against
   a PyTorch CPU autograd step on the same shapes (``conv2d`` then
   ``backward``), when torch is installed; and ``learn gradient`` end to end
   on a sample.

Timings come in pairs, ours and the baseline one after the other (which goes
first alternates), and each ratio is the median of the per-pair ratios: on a
shared machine whose speed drifts by tens of percent within a minute, that
compares like with like where medians taken minutes apart do not. A run
that writes a folder of outputs (the scale rows, the Pool script) starts
from an empty folder, emptied and synced to disk before its clock starts.

Prints a table of ratios (ours / baseline; below 1 is faster) with the
targets, and writes everything to ``OUT/bench.json``.

Usage::

    pip install ".[bench]"          # adds opencv-python-headless (optional)
    python scripts/bench.py [--out bench-out] [--reps 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

try:
    import cv2
except ImportError:
    cv2 = None
try:
    import torch
except ImportError:
    torch = None


def make_photo(width: int, height: int, target: Path) -> Path:
    """A deterministic photo-like RGB image: the IHC sample upscaled, with sensor noise."""
    if target.exists():
        return target
    source = Path(__file__).resolve().parent.parent / "samples" / "ihc.png"
    with Image.open(str(source)) as sample:
        base = sample.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(12)
    pixels = np.asarray(base, dtype=np.int16)
    # Noise in 8-row bands keeps generation fast and still looks like grain.
    noise = rng.normal(0, 3, size=(8, width, 3)).round().astype(np.int16)
    for top in range(0, height, 8):
        rows = pixels[top : top + 8]
        rows += noise[: rows.shape[0]]
        noise = np.roll(noise, 7, axis=1)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target, compress_level=1)
    return target


def timed(run: Callable[[], object]) -> float:
    prepare = getattr(run, "prepare", None)
    if prepare is not None:
        prepare()  # outside the clock (see afresh)
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def afresh(target: Path, run: Callable[[], None]) -> Callable[[], None]:
    """``run``, into a ``target`` folder emptied before each timing, outside the clock,
    and the removal written to disk (``sync``): a removal of 2,000 files left to
    the disk slowed the files the next run created by up to 300 us each, by
    turns for whichever of a pair came second."""

    def fresh() -> None:
        run()

    def prepare() -> None:
        shutil.rmtree(target, ignore_errors=True)
        os.sync()

    fresh.prepare = prepare  # type: ignore[attr-defined]
    return fresh


def paired(ours: Callable[[], object], baseline: Callable[[], object],
           reps: int) -> tuple[float, float, float]:  # fmt: skip
    """Time both ``reps`` times, alternating which goes first, so that a slow
    spell of a shared machine hits both alike. Returns the median times and
    the median of the per-pair ratios ``ours / baseline``.
    """
    pairs = []
    for rep in range(reps):
        if rep % 2:
            base = timed(baseline)
            pairs.append((timed(ours), base))
        else:
            pairs.append((timed(ours), timed(baseline)))
    return (statistics.median(o for o, _ in pairs), statistics.median(b for _, b in pairs),
            statistics.median(o / b for o, b in pairs))  # fmt: skip


def command(*args: str) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return run


def python_snippet(code: str) -> Callable[[], None]:
    return command(sys.executable, "-c", code)


def cnnfilters_exe() -> str:
    found = shutil.which("cnnfilters", path=os.path.dirname(sys.executable))
    return found or "cnnfilters"


def compile_package() -> None:
    """Byte-compile cnnfilters as ``pip install`` does: an editable install under
    PYTHONDONTWRITEBYTECODE would otherwise compile every module from source at each
    start (0.09 s here), a cost no installed copy pays."""
    import compileall

    import cnnfilters

    compileall.compile_dir(Path(cnnfilters.__file__).parent, quiet=2)


# ------------------------------------------------------- engine baselines


def swv_conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """The straightforward numpy conv: pad, sliding_window_view, einsum."""
    from numpy.lib.stride_tricks import sliding_window_view

    xp = np.pad(x, [(0, 0), (padding, padding), (padding, padding)])
    kh, kw = weight.shape[-2:]
    windows = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("chwuv,ocuv->ohw", windows, weight)


def engine_cases(rgb: np.ndarray) -> list[dict]:
    """Per construction: ours, the numpy baseline, OpenCV and PyTorch when installed."""
    import cnnfilters
    from cnnfilters.kernels import FORWARD_DIFF_X, FORWARD_DIFF_Y, gradient_weight

    chw = np.ascontiguousarray(np.moveaxis(rgb, -1, 0), dtype=np.float32)
    gray = np.ascontiguousarray(cnnfilters.grayscale(chw))
    hwc = np.ascontiguousarray(rgb, dtype=np.float32)
    luma = np.float32([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    box = np.eye(3, dtype=np.float32)[:, :, None, None] * np.full((4, 4), 1 / 16, np.float32)
    edge = cv2.BORDER_CONSTANT if cv2 else None

    def cv2_gradient():
        return (cv2.filter2D(gray[0], -1, FORWARD_DIFF_Y, borderType=edge),
                cv2.filter2D(gray[0], -1, FORWARD_DIFF_X, borderType=edge))  # fmt: skip

    def cv2_avgpool():
        return cv2.resize(hwc, (hwc.shape[1] // 4, hwc.shape[0] // 4), interpolation=cv2.INTER_AREA)

    def cv2_grayscale():
        return cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY)

    if torch is not None:
        t_gray, t_chw = torch.from_numpy(gray[None]), torch.from_numpy(chw[None])
        t_grad, t_luma = torch.from_numpy(gradient_weight(1)), torch.from_numpy(luma)

    def torch_gradient():
        return torch.nn.functional.conv2d(t_gray, t_grad, padding=1)

    def torch_avgpool():
        return torch.nn.functional.avg_pool2d(t_chw, 4)

    def torch_grayscale():
        return torch.nn.functional.conv2d(t_chw, t_luma)

    return [
        {"name": "gradient (F1, F2 on gray)", "ours": lambda: cnnfilters.gradients(gray),
         "numpy": lambda: swv_conv2d(gray, gradient_weight(1), padding=1),
         "cv2": cv2_gradient if cv2 else None, "torch": torch_gradient if torch else None},
        {"name": "avgpool k=4 (RGB)", "ours": lambda: cnnfilters.avgpool(chw, 4),
         "numpy": lambda: swv_conv2d(chw, box, stride=4),
         "cv2": cv2_avgpool if cv2 else None, "torch": torch_avgpool if torch else None},
        {"name": "grayscale 1x1 (RGB)", "ours": lambda: cnnfilters.grayscale(chw),
         "numpy": lambda: swv_conv2d(chw, luma),
         "cv2": cv2_grayscale if cv2 else None, "torch": torch_grayscale if torch else None},
    ]  # fmt: skip


# ------------------------------------------------------------------- main

SECTIONS = ("end-to-end", "engine", "memory", "startup", "batch", "scale", "learn")

# The plain-Python baseline of the scale section: what the work costs without cnnfilters.
POOL_SCRIPT = """
import os, sys
from multiprocessing import Pool
from PIL import Image
source, target = sys.argv[1], sys.argv[2]
os.makedirs(target, exist_ok=True)
def one(name):
    image = Image.open(os.path.join(source, name)).convert("L")
    image.save(os.path.join(target, name[:-4] + ".grayscale.png"), compress_level=1,
               compress_type=3)
if __name__ == "__main__":
    with Pool(2) as pool:
        pool.map(one, sorted(os.listdir(source)), chunksize=64)
"""

# The layers learn trains: (x shape, weight shape, padding, stride), on 1 MP.
LEARN_STEPS = {
    "gradient 1->2, 3x3": ((1, 1, 1024, 1024), (2, 1, 3, 3), 1, 1),
    "grayscale 3->1, 1x1": ((1, 3, 1024, 1024), (1, 3, 1, 1), 0, 1),
    "avgpool -k 3, stride 3": ((1, 1, 1023, 1023), (1, 1, 3, 3), 0, 3),
    "pair -k 5, 5x5": ((1, 1, 1024, 1024), (1, 1, 5, 5), 2, 1),
}


class Bench:
    """The rows measured so far, and how to add one."""

    def __init__(self, exe: str, work: Path, reps: int) -> None:
        self.exe, self.work, self.reps = exe, work, reps
        self.rows: list[dict] = []

    def row(self, group: str, name: str, ours: float, baseline_name: str, baseline: float,
            target: float | None, unit: str = "s", ratio: float | None = None) -> None:  # fmt: skip
        if ratio is None:
            ratio = ours / baseline if baseline else float("inf")
        entry = {"group": group, "name": name, "ours": ours, "baseline": baseline_name,
                 "baseline_value": baseline, "ratio": ratio, "target": target,
                 "met": None if target is None else ratio <= target, "unit": unit}  # fmt: skip
        self.rows.append(entry)
        met = "" if target is None else ("yes" if entry["met"] else "NO")
        goal = "" if target is None else f"<= {target:.3g}"
        print(f"  {name:<38} {ours:9.3f} {unit:<2} vs {baseline_name:<28} {baseline:9.3f} "
              f"ratio {ratio:6.2f}  target {goal:<8} {met}", flush=True)  # fmt: skip

    def versus(self, group: str, name: str, ours: Callable[[], object], baseline_name: str,
               baseline: Callable[[], object], target: float | None,
               reps: int | None = None) -> None:  # fmt: skip
        """One row from paired runs: its ratio is the median of the per-pair ratios."""
        ours_time, baseline_time, ratio = paired(ours, baseline, reps or self.reps)
        self.row(group, name, ours_time, baseline_name, baseline_time, target, ratio=ratio)

    def command(self, *args: str) -> Callable[[], None]:
        return command(self.exe, *args)

    def end_to_end(self, photo: Path) -> None:
        """1. As a user runs it, against one-liners of Pillow and OpenCV."""
        print(f"\n1. end to end on {photo.name} (median of {self.reps} pairs)", flush=True)
        src, dst, stem = str(photo), str(self.work / "out.png"), str(self.work / "grad")
        ours = self.command("grayscale", src, "-o", dst, "--force", "-q")
        pil = python_snippet(
            f"from PIL import Image; Image.open({src!r}).convert('L').save({dst!r})"
        )
        self.versus("end to end", "grayscale", ours, "Pillow one-liner", pil, 0.6)
        if cv2:
            ocv = python_snippet(
                f"import cv2; cv2.imwrite({dst!r}, cv2.cvtColor(cv2.imread({src!r}), "
                "cv2.COLOR_BGR2GRAY))")  # fmt: skip
            self.versus("end to end", "grayscale", ours, "OpenCV one-liner", ocv, 1.1)
        ours = self.command("gradient", src, "-o", stem, "--force", "-q")
        pil = python_snippet(
            "from PIL import Image, ImageFilter\n"
            f"g = Image.open({src!r}).convert('L')\n"
            "g.filter(ImageFilter.Kernel((3, 3), [0, 0, 0, 0, -1, 0, 0, 1, 0], 1, 128))"
            f".save({stem + '.dy.png'!r})\n"
            "g.filter(ImageFilter.Kernel((3, 3), [0, 0, 0, 0, -1, 1, 0, 0, 0], 1, 128))"
            f".save({stem + '.dx.png'!r})\n")  # fmt: skip
        self.versus("end to end", "gradient (3 maps vs 2)", ours, "Pillow ImageFilter.Kernel",
                    pil, 0.6)  # fmt: skip
        ours = self.command("avgpool", src, "-k", "4", "-o", dst, "--force", "-q")
        pil = python_snippet(f"from PIL import Image; Image.open({src!r}).reduce(4).save({dst!r})")
        self.versus("end to end", "avgpool -k 4", ours, "Pillow reduce(4)", pil, 1.2)

    def engine(self, photo: Path) -> None:
        """2. The engine alone, per construction."""
        import cnnfilters

        with Image.open(photo) as image:
            rgb = np.asarray(image.convert("RGB"))
        print(f"\n2. engine alone on a {rgb.shape[1]}x{rgb.shape[0]} float32 image "
              f"(median of {self.reps} pairs)", flush=True)  # fmt: skip
        cores = os.cpu_count() or 1
        if torch is not None:
            torch.set_num_threads(cores)
        for case in engine_cases(rgb):
            name, ours = case["name"], case["ours"]
            self.versus("engine", name, ours, "numpy sliding_window_view", case["numpy"], 1 / 3)
            if case["torch"] is not None:
                # The same threads for both: cnnfilters.set_num_threads as torch's.
                cnnfilters.set_num_threads(cores)
                try:
                    self.versus("engine", f"{name}, {cores} threads", ours,
                                f"PyTorch CPU, {cores} threads", case["torch"], 1.0)  # fmt: skip
                finally:
                    cnnfilters.set_num_threads(1)
            if case["cv2"] is not None:
                target = {"gradient": 3.0, "avgpool": 4.0}.get(name.split()[0])
                self.versus("engine", name, ours, "OpenCV", case["cv2"], target)

    def scale(self, out: Path, files: int) -> None:
        """6. Many small files: throughput against a Pool(2) script; memory as inputs grow."""
        # Runs over 2,000 small files vary on a disk: -j 2 took 0.61 to 0.91 s in runs
        # minutes apart here (0.58 to 0.63 s on a RAM file system). More pairs, for
        # steadier medians.
        reps = 2 * self.reps - 1
        print(f"\n6. scale: 2,000 PNGs of 32 x 32, then {files:,} (median of {reps} pairs)",
              flush=True)  # fmt: skip
        small, large = tiny_tree(out / "tiny-2000", 2000), tiny_tree(out / f"tiny-{files}", files)

        def ours(jobs: int, tree: Path = small) -> Callable[[], None]:
            target = self.work / f"scale-j{jobs}"
            return afresh(target, self.command("grayscale", "-r", str(tree), "--out-dir",
                                               str(target), "-q", "-j", str(jobs)))  # fmt: skip

        pool = self.pool_script(small, self.work / "scale-pool")

        # Throughput ratios as times: pool / ours >= 0.5 means ours / pool <= 2.
        self.versus("scale", "2,000 x 32x32, -j 2 (time)", ours(2), "Pool(2) Pillow script",
                    pool, 2.0, reps)  # fmt: skip
        two, one, ratio = paired(ours(2), ours(1), reps)
        self.row("scale", "2,000 x 32x32, -j 2 (time)", two, "-j 1 (time)", one, 1 / 1.7,
                 ratio=ratio)  # fmt: skip
        # What this machine gives two processes that share nothing: the best -j 2 can do.
        apart, one, ratio = paired(self.halves(small), ours(1), reps)
        self.row("scale", "two -j 1 runs on halves, at once", apart, "-j 1 (time)", one, None,
                 ratio=ratio)  # fmt: skip
        two, apart, ratio = paired(ours(2), self.halves(small), reps)
        self.row("scale", "2,000 x 32x32, -j 2 (time)", two, "two -j 1 on halves", apart, None,
                 ratio=ratio)  # fmt: skip
        peaks = {}
        for name, tree in (("2,000", small), (f"{files:,}", large)):
            target = self.work / "scale-rss"
            shutil.rmtree(target, ignore_errors=True)
            peaks[name], first = peak_rss_and_first_output(
                [self.exe, "grayscale", "-r", str(tree), "--out-dir", str(target), "-q", "-j", "2"],
                target,
            )
            print(f"  {name} files: peak RSS {peaks[name] / 1e6:.0f} MB, first output after "
                  f"{first:.2f} s", flush=True)  # fmt: skip
        names = list(peaks)
        self.row("scale", f"peak RSS, {names[1]} files", peaks[names[1]] / 1e6,
                 f"{names[0]} files", peaks[names[0]] / 1e6, 1.2, unit="MB")  # fmt: skip
        self.row("scale", f"time to the first output, {names[1]} files", first, "1 s", 1.0, 1.0)

    def learn(self) -> None:
        """7. One forward + backward step, against PyTorch's autograd; learn end to end."""
        from cnnfilters import conv2d, conv2d_grad

        print(f"\n7. learn: one forward + backward step on 1 MP (median of {self.reps} pairs)",
              flush=True)  # fmt: skip
        rng = np.random.default_rng(0)
        if torch is not None:
            torch.set_num_threads(os.cpu_count() or 1)
        for name, (x_shape, w_shape, pad, stride) in LEARN_STEPS.items():
            x = rng.standard_normal(x_shape).astype(np.float32)
            w = rng.standard_normal(w_shape).astype(np.float32)
            b = np.zeros(w_shape[0], np.float32)
            up = rng.standard_normal(conv2d(x, w, b, padding=pad, stride=stride).shape)
            up = up.astype(np.float32)

            def ours(x=x, w=w, b=b, up=up, pad=pad, stride=stride) -> None:
                conv2d(x, w, b, padding=pad, stride=stride)
                conv2d_grad(x, w, up, padding=pad, stride=stride)

            if torch is None:
                self.row("learn", f"step: {name}", timed(ours), "(torch not installed)", 0.0,
                         None)  # fmt: skip
                continue
            tx, tw, tb = (torch.from_numpy(a).requires_grad_(True) for a in (x, w, b))
            tup = torch.from_numpy(up)

            def theirs(tx=tx, tw=tw, tb=tb, tup=tup, pad=pad, stride=stride) -> None:
                tx.grad = tw.grad = tb.grad = None
                torch.nn.functional.conv2d(tx, tw, tb, padding=pad, stride=stride).backward(tup)

            self.versus("learn", f"step: {name}", ours, "PyTorch CPU autograd", theirs, 2.0)
        sample = Path(__file__).resolve().parent.parent / "samples" / "ihc.png"
        ours = self.command("learn", "gradient", str(sample), "--out-dir", str(self.work),
                            "--force", "-q")  # fmt: skip
        seconds = statistics.median(timed(ours) for _ in range(3))
        self.row("learn", "learn gradient, end to end", seconds, "the target (30 s)", 30.0, 1.0)

    def memory(self, photo: Path, photo12: Path) -> None:
        """3. Peak RSS of the largest run, and of grayscale on a camera photo, against
        the decoded image."""
        print(f"\n3. peak RSS of gradient --on rgb on {photo.name}, grayscale on "
              f"{photo12.name}", flush=True)  # fmt: skip
        cases = [("gradient --on rgb", photo, ["gradient", "--on", "rgb"], 4.0),
                 ("grayscale", photo12, ["grayscale"], 2.5)]  # fmt: skip
        for name, image_path, args, target in cases:
            peak_mb = self.peak_mb([self.exe, args[0], str(image_path), *args[1:], "-o",
                                    str(self.work / "big.png"), "--force", "-q"])  # fmt: skip
            with Image.open(image_path) as image:
                decoded_mb = image.width * image.height * 3 / 2**20
            self.row("memory", f"peak RSS, {name}, {image_path.stem}", peak_mb,
                     "decoded 8-bit RGB image", decoded_mb, target, unit="MB")  # fmt: skip

    @staticmethod
    def peak_mb(args: list[str]) -> float:
        """The peak resident memory of a command (its largest process), in MiB."""
        probe = ("import resource, subprocess, sys\n"
                 "subprocess.run(sys.argv[1:], check=True)\n"
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                              text=True, check=True)  # fmt: skip
        return int(done.stdout.strip().splitlines()[-1]) / 1024

    def startup(self) -> None:
        """4. Start-up: short and noisy, so four times the repetitions."""
        reps = 4 * self.reps
        print(f"\n4. start-up (median of {reps} pairs)", flush=True)
        typer = python_snippet("import typer")
        for key in ("help", "version"):
            self.versus("start-up", f"cnnfilters --{key}", self.command(f"--{key}"),
                        "python -c 'import typer'", typer, 1.5, reps)  # fmt: skip

    def halves(self, tree: Path) -> Callable[[], None]:
        """Two ``grayscale -j 1`` runs at the same time, each over half of ``tree``'s
        files, each into its own emptied folder: two processes that share nothing
        but the machine. Their time over one ``-j 1`` run over all is the most
        that any ``-j 2`` can gain here (start-up paid twice at once, two cores'
        contention for caches and the file system)."""
        names = sorted(tree.iterdir())
        parts = [names[: len(names) // 2], names[len(names) // 2 :]]
        folders = [tree.with_name(f"{tree.name}-half{index}") for index in range(2)]
        for folder, part in zip(folders, parts, strict=True):
            folder.mkdir(exist_ok=True)
            for name in part:
                if not (folder / name.name).exists():
                    os.link(name, folder / name.name)
        targets = [self.work / f"halves{index}" for index in range(2)]
        runs = [[self.exe, "grayscale", "-r", str(folder), "--out-dir", str(target), "-q",
                 "-j", "1"] for folder, target in zip(folders, targets, strict=True)]  # fmt: skip

        def run() -> None:
            started = [subprocess.Popen(args, stdout=subprocess.DEVNULL) for args in runs]
            if any([process.wait() != 0 for process in started]):  # both waited for
                raise SystemExit("a -j 1 run over half of the files failed")

        def prepare() -> None:
            for target in targets:
                shutil.rmtree(target, ignore_errors=True)
            os.sync()

        run.prepare = prepare  # type: ignore[attr-defined]
        return run

    def batch(self, folder: Path, reps: int, *, pool: bool = False) -> None:
        """5. Batch throughput: -j 2 against -j 1 on a folder of photos, and (``pool``)
        grayscale -j 2 against the Pool(2) Pillow script."""
        photos = sorted(folder.iterdir())
        with Image.open(photos[0]) as image:
            size = f"{image.width * image.height / 1e6:.1f} MP"
        print(f"\n5. batch of {len(photos)} photos of {size} (median of {reps} pairs)",
              flush=True)  # fmt: skip

        def jobs(n: int, name: str = "gradient") -> Callable[[], None]:
            return self.command(name, str(folder), "--out-dir", str(self.work / f"j{n}"),
                                "--force", "-q", "-j", str(n))  # fmt: skip

        if pool:
            # Throughput as time: at most 1 / 0.8 means at least 0.8x the script's.
            script = self.pool_script(folder, self.work / "pool-photos")
            name = f"{len(photos)} x {size}, grayscale -j 2 (time)"
            self.versus("batch", name, jobs(2, "grayscale"), "Pool(2) Pillow script", script,
                        1 / 0.8, reps)  # fmt: skip
        # Wall time of the whole command, start-up included; below 1/1.7 means
        # -j 2 has at least 1.7x the throughput of -j 1.
        two, one, ratio = paired(jobs(2), jobs(1), reps)
        self.row("batch", f"{len(photos)} x {size}, gradient -j 2 (time)", two, "-j 1 (time)",
                 one, 1 / 1.7, ratio=ratio)  # fmt: skip

    def pool_script(self, source: Path, target: Path) -> Callable[[], None]:
        """The plain-Python baseline: Pillow's convert("L") in a Pool(2), fast save."""
        script = self.work / "pool.py"
        script.write_text(POOL_SCRIPT)

        def run() -> None:
            subprocess.run([sys.executable, str(script), str(source), str(target)], check=True)

        return afresh(target, run)


def tiny_tree(folder: Path, count: int) -> Path:
    """``count`` PNGs of 32 x 32: hard links to 8 distinct small files (a file system
    caps a file's links at about 65,000)."""
    sources = folder.parent / "tiny-sources"
    sources.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(8)
    for index in range(8):
        path = sources / f"s{index}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        link = folder / f"f{index:07d}.png"
        if not link.exists():
            os.link(sources / f"s{index % 8}.png", link)
    return folder


def peak_rss_and_first_output(args: list[str], target: Path) -> tuple[int, float]:
    """Run ``args``; the peak of its resident memory, the process and its workers
    together (their proportional set sizes in ``/proc``, every 20 ms), and the
    seconds until a first file appears under ``target``."""
    started = time.perf_counter()
    process = subprocess.Popen(args)
    first, peak = None, 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        if first is None and target.exists() and next(target.rglob("*.png"), None) is not None:
            first = time.perf_counter() - started
        time.sleep(0.02)
    if process.returncode != 0:
        raise SystemExit(f"{args[:2]} failed with exit code {process.returncode}")
    return peak, first if first is not None else time.perf_counter() - started


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its children (0 for what has just ended), as their
    proportional set sizes: pages the forked workers share with the parent count once."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def photo_folder(seed: Path, count: int = 16) -> Path:
    """A folder of ``count`` copies of ``seed`` (hard links where the disk allows)."""
    folder = seed.with_name(f"batch-{seed.stem}")
    folder.mkdir(exist_ok=True)
    for index in range(count):
        target = folder / f"photo{index:02}.png"
        if not target.exists():
            try:
                os.link(seed, target)
            except OSError:
                shutil.copyfile(seed, target)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller images, fewer reps")
    parser.add_argument("--scale-files", type=int, default=200_000,
                        help="files of the large run of the scale section")  # fmt: skip
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"sections to run, comma-separated: {','.join(SECTIONS)}")  # fmt: skip
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    reps = 3 if args.quick else max(5, args.reps)
    small = (1600, 1200) if args.quick else (4000, 3000)
    large = (3200, 2400) if args.quick else (8000, 6000)
    started = time.perf_counter()
    print(f"making test images in {out} ...", flush=True)
    photo12 = make_photo(*small, out / f"photo-{small[0]}x{small[1]}.png")
    photo48 = (
        make_photo(*large, out / f"photo-{large[0]}x{large[1]}.png") if "memory" in only else None
    )
    work = Path(tempfile.mkdtemp(prefix="cnnfilters-bench-"))
    compile_package()
    bench = Bench(cnnfilters_exe(), work, reps)
    try:
        if "end-to-end" in only:
            bench.end_to_end(photo12)
        if "engine" in only:
            bench.engine(photo12)
        if photo48 is not None:
            bench.memory(photo48, photo12)
        if "startup" in only:
            bench.startup()
        if "batch" in only:
            # Start-up (about 0.3 s) weighs on small photos; camera-size ones show the
            # parallel throughput of a long batch.
            bench.batch(photo_folder(make_photo(1920, 1300, out / "photo-1920x1300.png")),
                        max(5, reps), pool=True)  # fmt: skip
            if not args.quick:
                bench.batch(photo_folder(photo12), 3)
        if "scale" in only:
            bench.scale(out, args.scale_files)
        if "learn" in only:
            bench.learn()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pillow": Image.__version__,
            "opencv": getattr(cv2, "__version__", None),
            "torch": getattr(torch, "__version__", None),
        },
        "images": {"end_to_end": photo12.name, "memory": photo48.name if photo48 else None},
        "repetitions": reps,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": bench.rows,
    }
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    missed = [r for r in bench.rows if r["met"] is False]
    print(f"\n{len(bench.rows)} measurements in {result['seconds']} s; "
          f"{len(missed)} target(s) missed; wrote {out / 'bench.json'}")  # fmt: skip


if __name__ == "__main__":
    main()
