"""Ctrl-C and SIGTERM around a pool: noted rather than raised where an exception
would leave a lock held, blocked while workers are forked."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_STOPPING_SIGNALS = {signal.SIGINT, signal.SIGTERM}

# How often, in seconds, the loop over a pool's results looks for a noted signal.
_SIGNAL_POLL = 0.1


class _SignalsDeferred:
    """SIGINT and SIGTERM noted, not raised, for the duration (main thread only;
    a signal that was ignored stays ignored); :meth:`deliver` then raises the
    first one noted through the handler that was in place before.

    ``concurrent.futures.wait`` takes the lock of each future in a loop: an
    exception raised by a signal handler between two of them leaves the first
    locks held, and the pool's manager thread, cancelling those futures, then
    waits for them for ever (a Ctrl-C that hangs the run at its exit).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalsDeferred:
        if threading.current_thread() is threading.main_thread():
            for sig in _STOPPING_SIGNALS:
                handler = signal.getsignal(sig)
                if handler not in (signal.SIG_IGN, None):
                    self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def deliver(self) -> None:
        if self.signum is not None:
            signal.raise_signal(self.signum)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold SIGINT and SIGTERM pending for the duration (inherited by forked children)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for the duration (main thread only; elsewhere nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOPPING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
