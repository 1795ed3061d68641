"""Worker start-up: what a freshly forked worker process sets before its first task."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

from ..atomic import forget_temporary_files, remove_temporary_files
from ..errors import (
    EXIT_TERMINATED,
)
from ..startup import tune_malloc
from .signals import _STOPPING_SIGNALS


def _worker_start(parent: int | None = None) -> None:
    """Set up a worker process: it dies with its parent; SIGTERM or SIGINT end it cleanly.

    On Linux the kernel sends SIGTERM to the worker when the parent dies, even
    by SIGKILL (``PR_SET_PDEATHSIG``), so no orphan goes on writing. A worker
    that gets SIGTERM or SIGINT removes the temporary files of its writes under
    way and exits at once.
    """
    # The parent's temporary files (its report under way) are not this worker's.
    forget_temporary_files()
    # Ctrl-C reaches the whole group: the parent reports it; workers just stop.
    signal.signal(signal.SIGTERM, _on_worker_signal)
    signal.signal(signal.SIGINT, _on_worker_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING_SIGNALS)  # blocked by the fork
    # The pid that forked us (None from a fork server, which dies with the run):
    # read before the fork, so that a parent killed before this line is seen.
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        import ctypes

        # Without prctl (another libc), workers may outlive a parent killed by SIGKILL.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(EXIT_TERMINATED)
    # Only the processes that decode and encode keep their freed strips for reuse: the
    # parent of a pool returns what listing a folder took.
    tune_malloc()
    _one_blas_thread()


def _one_blas_thread() -> None:
    """Keep a worker's matrix products (the engine's 1x1 convolutions) to its own core.

    A forked worker inherits OpenBLAS's setting from the parent's import, a
    thread per core, fixed before the run could set ``OPENBLAS_NUM_THREADS``;
    with N workers on N cores their products would compete for the cores.
    (The threads themselves sleep when idle: see
    :func:`cnnfilters.startup.calm_blas_threads`.)
    """
    from threadpoolctl import threadpool_limits  # 3-5 ms: only where a pool is started

    threadpool_limits(limits=1, user_api="blas")


def _on_worker_signal(signum: int, frame: Any) -> None:
    """End a worker at once, removing the temporary files of the writes under way.

    No exception is raised into the task: one raised inside a finalizer or an
    import would be printed and swallowed, and the task would go on.
    """
    remove_temporary_files()
    os._exit(EXIT_TERMINATED)
