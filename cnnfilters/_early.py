"""Ctrl-C or SIGTERM in the first milliseconds of the command line, while Python
imports the package, before :func:`cnnfilters.__main__.main` puts its handlers in
place: the run ends as one stopped later does (one line on stderr, 130 or 143),
not with a traceback through the imports. Nothing has been written yet, so the
process ends at once.

Only the command line is guarded (``cnnfilters`` or ``python -m cnnfilters``):
a program that imports the library keeps its own signal handling.
"""

from __future__ import annotations

import os
import signal
import sys

_WORDS = {signal.SIGINT: (b"interrupted", 130), signal.SIGTERM: (b"terminated", 143)}


def is_command_line() -> bool:
    """Whether this process is the ``cnnfilters`` command being started."""
    first = sys.argv[0] if sys.argv else ""
    return first == "-m" or os.path.basename(first) in ("cnnfilters", "cnnfilters.exe")


def guard() -> None:
    """End the process at once on Ctrl-C or SIGTERM (not when they are ignored, as a
    shell ignores SIGINT for a background job)."""
    for sig in _WORDS:
        if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(sig, _end)


def release() -> None:
    """Give Ctrl-C back to Python (KeyboardInterrupt), for the command line's own
    handling; SIGTERM's handler is the command line's to set."""
    if signal.getsignal(signal.SIGINT) is _end:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _end(signum: int, frame: object) -> None:
    word, code = _WORDS[signal.Signals(signum)]
    os.write(2, b"cnnfilters: error: " + word + b"\n")
    os._exit(code)
