"""Batches held at a chosen point, for tests of signals and killed processes.

A held batch runs the command line with its output writes wrapped: each
process, once the data of an output is written (the file not yet in place),
writes its process id as a line to the ``ready`` pipe and waits on the
``hold`` pipe for a byte. So a test knows, by reading a pipe, which
processes are in the middle of a write, and decides when they go on: no
sleep, no polling of the file system, whatever the machine's speed.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

_SCRIPT = """
import os, sys
from cnnfilters import atomic, cli, outputs
ready, hold, named = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "named"
atomic._UNNAMED = atomic._UNNAMED and not named
real = atomic.atomic_write
def atomic_write(target, write, **kwargs):
    def held(handle):
        write(handle)
        handle.flush()
        os.write(ready, f"{os.getpid()}\\n".encode())
        os.read(hold, 1)  # until the test lets it go, or the process ends
    return real(target, held, **kwargs)
outputs.atomic_write = atomic.atomic_write = atomic_write
sys.exit(cli.main(sys.argv[4:]))
"""


@dataclass
class HeldBatch:
    process: subprocess.Popen
    ready: int  # read end: process ids, a line each
    hold: int  # write end: a byte lets one write go on
    _buffer: bytes = b""

    def writers(self, count: int) -> list[int]:
        """Wait until ``count`` writes are held; their process ids (the same process
        may hold only one at a time). Fails if the batch ends first."""
        pids: list[int] = []
        while len(pids) < count:
            while b"\n" not in self._buffer:
                data = os.read(self.ready, 4096)
                assert data, "the batch ended before enough of its writes were held"
                self._buffer += data
            line, self._buffer = self._buffer.split(b"\n", 1)
            pids.append(int(line))
        return pids

    def distinct_writers(self, count: int) -> set[int]:
        """Wait until ``count`` different processes each hold a write (none is let go
        meanwhile: a process that holds one writes nothing more); their ids."""
        pids: set[int] = set()
        while len(pids) < count:
            pids.update(self.writers(1))
        return pids

    def release(self, count: int = 1 << 16) -> None:
        """Let ``count`` held writes (by default all, now and later) go on."""
        with contextlib.suppress(BrokenPipeError):
            os.write(self.hold, b"g" * count)


@contextlib.contextmanager
def held_batch(args: list[str], *, named: bool = False, **popen) -> Iterator[HeldBatch]:
    """Start ``cnnfilters ARGS`` held at its output writes (``named``: with named
    temporary files, as on a file system without unnamed ones)."""
    ready_read, ready_write = os.pipe()
    hold_read, hold_write = os.pipe()
    command = [sys.executable, "-c", _SCRIPT, str(ready_write), str(hold_read),
               "named" if named else "unnamed", *args]  # fmt: skip
    process = subprocess.Popen(command, pass_fds=(ready_write, hold_read), **popen)
    os.close(ready_write)  # the batch's processes hold the only write ends: EOF when all end
    os.close(hold_read)
    batch = HeldBatch(process, ready_read, hold_write)
    try:
        yield batch
    finally:
        batch.release()
        os.close(hold_write)
        os.close(ready_read)
        if process.poll() is None:
            process.kill()
        process.wait()


def wait_gone(pid: int, seconds: float = 30.0) -> bool:
    """Whether process ``pid`` has ended, waiting for its end (a pidfd becomes readable
    then) at most ``seconds``: a limit for a failure, not a measure."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], seconds)
        return bool(readable)
    finally:
        os.close(fd)
