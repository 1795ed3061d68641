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


def test_a_pool_loop_notes_a_signal_and_delivers_it_to_the_handler_before():
    from cnnfilters.run import _SignalsDeferred

    deferred = _SignalsDeferred()
    before = signal.getsignal(signal.SIGINT)
    with deferred:
        signal.raise_signal(signal.SIGINT)  # noted, not raised: no lock is left held
        signal.raise_signal(signal.SIGTERM)  # the first one noted is the one delivered
        assert deferred.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):
        deferred.deliver()


def test_a_noted_sigterm_reaches_the_command_lines_handler_and_an_ignored_signal_stays_ignored():
    from cnnfilters.run import _SignalsDeferred

    class Terminated(BaseException):
        pass

    def terminated(signum: int, frame: object) -> None:
        raise Terminated

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, terminated),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}  # fmt: skip
    try:
        deferred = _SignalsDeferred()
        with deferred:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            assert deferred.signum is None
            signal.raise_signal(signal.SIGTERM)
        assert deferred.signum == signal.SIGTERM
        with pytest.raises(Terminated):
            deferred.deliver()
        _SignalsDeferred().deliver()  # nothing noted: nothing raised
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_off_the_main_thread_the_handlers_are_left_alone():
    import threading

    from cnnfilters.run import _SignalsDeferred

    seen = []

    def run() -> None:
        with _SignalsDeferred() as deferred:
            seen.append(signal.getsignal(signal.SIGINT))
        seen.append(deferred.signum)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGINT), None]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_ctrl_c_at_any_moment_of_a_batch_ends_it_with_one_line(tmp_path):
    """A signal raised inside concurrent.futures.wait's loop over the futures' locks
    left one held: the run hung at its exit, or printed a traceback after its last
    line. Signals at spread-out moments of a -j 2 batch of quick files."""
    folder = tmp_path / "in"
    folder.mkdir()
    image = Image.linear_gradient("L").resize((300, 200))
    for index in range(60):
        image.save(folder / f"p{index:02d}.png", compress_level=1)
    command = [sys.executable, "-m", "cnnfilters", "gradient", os.fsdecode(folder),
               "-j", "2", "-q"]  # fmt: skip
    for trial in range(12):
        out = tmp_path / f"out{trial}"
        process = subprocess.Popen([*command, "--out-dir", os.fsdecode(out)],
                                   stderr=subprocess.PIPE, start_new_session=True,
                                   preexec_fn=_default_sigint)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(out.glob("*.png")):
            time.sleep(0.002)
        time.sleep(0.004 * trial)
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the batch hung after Ctrl-C (trial {trial})")
        lines = err.decode().strip().splitlines()
        if process.returncode == 0:
            continue  # it finished first
        assert process.returncode == 130, lines
        assert len(lines) == 1 and lines[0].startswith("cnnfilters: error: interrupted"), lines
