"""Any signal, any number of times, ends a -j 2 batch at once: 130/143, one line,
no worker left, no temporary file, and a rerun finishes the job."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from held import held_batch, wait_gone
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


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
@pytest.mark.parametrize("to_group", [True, False])
def test_two_signals_end_the_batch_at_once(photos, tmp_path, sig, code, word, to_group):
    out, report = tmp_path / "out", tmp_path / "report.json"
    args = ["gradient", os.fsdecode(photos), "--out-dir", os.fsdecode(out), "-j", "2", "-q"]
    # A shell starts background jobs with SIGINT ignored; a terminal's Ctrl-C is not.
    with held_batch([*args, "--report", os.fsdecode(report)], stderr=subprocess.PIPE,
                    start_new_session=True, preexec_fn=_default_sigint) as batch:  # fmt: skip
        workers = batch.distinct_writers(2)  # both workers in the middle of a write
        for _ in range(2):  # a second signal while the first is being handled
            with contextlib.suppress(ProcessLookupError):
                if to_group:
                    os.killpg(batch.process.pid, sig)
                else:
                    os.kill(batch.process.pid, sig)
        _, err = batch.process.communicate()
    assert batch.process.returncode == code, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cnnfilters: error: {word}"), lines
    assert all(wait_gone(pid) for pid in workers)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    # The report of what was done is whole: the workers, stopped by the same signal,
    # left the parent's report alone.
    written = json.loads(report.read_text())
    by = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert written["stopped"]["by"] == by and written["stopped"]["not_done"] > 0
    assert written["passed"] is False  # what ran passed, but the run did not end
    for entry in written["inputs"]:
        assert entry["passed"] and all(Path(name).exists() for name in entry["outputs"])
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    rerun = subprocess.run([sys.executable, "-m", "cnnfilters", *args, "--skip-existing"],
                           capture_output=True)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(out.glob("*.png"))) == 24 * 3


def test_a_pool_loop_notes_a_signal_and_delivers_it_to_the_handler_before():
    from cnnfilters.run.signals import _SignalsDeferred

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
    from cnnfilters.run.signals import _SignalsDeferred

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

    from cnnfilters.run.signals import _SignalsDeferred

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
    line. Ctrl-C after 0 to 11 writes of a -j 2 batch, one write held: the parent is
    then waiting on its workers' futures."""
    folder = tmp_path / "in"
    folder.mkdir()
    image = Image.linear_gradient("L").resize((300, 200))
    for index in range(60):
        image.save(folder / f"p{index:02d}.png", compress_level=1)
    for trial in range(12):
        out = tmp_path / f"out{trial}"
        args = ["gradient", os.fsdecode(folder), "-j", "2", "-q", "--out-dir", os.fsdecode(out)]
        with held_batch(args, stderr=subprocess.PIPE, start_new_session=True,
                        preexec_fn=_default_sigint) as batch:  # fmt: skip
            for _ in range(trial):
                batch.writers(1)
                batch.release(1)
            batch.writers(1)
            batch.process.send_signal(signal.SIGINT)
            _, err = batch.process.communicate()
        lines = err.decode().strip().splitlines()
        assert batch.process.returncode == 130, lines
        assert len(lines) == 1 and lines[0].startswith("cnnfilters: error: interrupted"), lines


# Ctrl-C while the command line is being imported: a finder that raises it (bare, or
# wrapped by Python as a class is made) on the import of cnnfilters.cli.
_STOPPED_IMPORT = """
import sys
from cnnfilters import __main__ as entry
from cnnfilters.errors import Terminated
which, how = sys.argv[1:3]
class Stop:
    def find_spec(self, name, path=None, target=None):
        if name == "cnnfilters.cli":
            stop = {"int": KeyboardInterrupt(), "term": Terminated()}[which]
            if how == "wrapped":
                raise RuntimeError("Error calling __set_name__") from stop
            raise stop
sys.meta_path.insert(0, Stop())
sys.argv[1:] = ["grayscale", "x.png"]
entry.main()
"""


@pytest.mark.parametrize("how", ["bare", "wrapped"])
@pytest.mark.parametrize(("which", "code", "word"), [("int", 130, "interrupted"),
                                                     ("term", 143, "terminated")])  # fmt: skip
def test_a_stop_while_the_command_line_is_imported_is_one_line(how, which, code, word):
    done = subprocess.run([sys.executable, "-c", _STOPPED_IMPORT, which, how],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == code, done.stderr
    assert done.stderr == f"cnnfilters: error: {word}\n"


# A run stopped while a thread of it cannot end (an encoder waiting on work that will
# never come): the process ends at once all the same, with its one line.
_STOPPED_WITH_A_THREAD = """
import sys, threading
from cnnfilters import cli, run
never = threading.Event()
how = sys.argv[1]
def stuck(*args, **kwargs):
    threading.Thread(target=never.wait).start()  # not a daemon: the exit would join it
    error = KeyboardInterrupt() if how == "bare" else RuntimeError("wrapped")
    if how == "wrapped":
        error.__cause__ = KeyboardInterrupt()
    raise error
run.run = stuck
sys.argv[1:] = ["grayscale", sys.argv[2], "-q"]
cli.main()
"""


@pytest.mark.parametrize("how", ["bare", "wrapped"])
def test_a_stopped_run_ends_at_once_whatever_its_threads_do(tmp_path, how):
    source = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(source)
    command = [sys.executable, "-c", _STOPPED_WITH_A_THREAD, how, os.fsdecode(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "cnnfilters: error: interrupted\n"


@pytest.mark.parametrize(
    ("sig", "code", "word"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")]
)
def test_a_signal_while_the_package_is_imported_is_one_line(sig, code, word):
    """The command line's first milliseconds (the package's own imports): the signal
    is raised right after the package is imported as `python -m cnnfilters` imports
    it, before any handler of the command line's is in place."""
    script = (
        "import signal, sys\nsys.argv[0] = '-m'\nimport cnnfilters\n"
        f"signal.raise_signal(signal.{sig})\nprint('not reached')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == code
    assert done.stdout == ""
    assert done.stderr == f"cnnfilters: error: {word}\n"


def test_a_program_that_imports_the_library_keeps_its_signal_handlers():
    script = (
        "import signal, cnnfilters\n"
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler,"
        " signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout == "True True\n", done.stderr
