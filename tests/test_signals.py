"""Any signal, any number of times, ends a -j 2 batch at once: 130/143, one line,
no worker left, no temporary file, and a rerun finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("signals") / "in"
    folder.mkdir()
    rng = np.random.default_rng(20)
    for index in range(24):
        values = rng.integers(0, 256, (700, 700, 3), dtype=np.uint8)
        Image.fromarray(values).save(folder / f"p{index:02d}.png", compress_level=1)
    return folder


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads worker processes from /proc")
@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
@pytest.mark.parametrize("to_group", [True, False])
def test_two_signals_end_the_batch_at_once(photos, tmp_path, sig, code, word, to_group):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cnnfilters", "gradient", os.fsdecode(photos),
               "--out-dir", os.fsdecode(out), "-j", "2", "-q"]  # fmt: skip

    # A shell starts background jobs with SIGINT ignored; a terminal's Ctrl-C is not.
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    process = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=default_sigint)  # fmt: skip
    deadline = time.monotonic() + 30
    workers: list[int] = []
    while time.monotonic() < deadline and (len(workers) < 2 or not out.exists()):
        time.sleep(0.05)
        workers = _children(process.pid)
    if len(workers) < 2:
        process.kill()
        pytest.skip("the batch ended before its workers could be seen")
    for _ in range(2):  # a second signal while the first is being handled
        try:
            if to_group:
                os.killpg(process.pid, sig)
            else:
                os.kill(process.pid, sig)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the batch hung after two signals")
    assert process.returncode == code, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cnnfilters: error: {word}"), lines
    settle = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < settle:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    rerun = subprocess.run([*command, "--skip-existing"], capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(out.glob("*.png"))) == 24 * 3
