"""How the command line ends: one line on stderr and an exit code for every way out.

A library error is its own line and code; a usage error is Click's message
on one line with where to find help; Ctrl-C and SIGTERM stop the run
cleanly (finished outputs stay whole, nothing partial is left); a closed
standard output is not an error of ours; anything else is a bug (exit 70).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

import typer

from .. import render
from ..errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_OK,
    STANDARD_OUTPUT,
    CnnFiltersError,
    ReaderGone,
    Terminated,
    stop_outcome,
)


def reports_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn a library error into one line on stderr and its exit code (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CnnFiltersError as exc:
            render.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except (KeyboardInterrupt, Terminated) as exc:
            # Outputs are atomic: what was finished stays whole, nothing partial is left.
            raise typer.Exit(stopped(exc)) from None

    return wrapper


def usage_line(exc: Exception) -> str:
    """Click's usage error as one line, with where to look for help."""
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "") or ""
    sub = path.split(" ", 1)[1] + " " if " " in path else ""
    return f"{exc.format_message()} (see 'cnnfilters {sub}--help')"


def on_sigterm(signum: int, frame: object) -> None:
    ignore_signals()  # the run is ending: a second signal must not cut its unwinding short
    raise Terminated


def on_sigint(signum: int, frame: object) -> None:
    ignore_signals()  # (a KeyboardInterrupt raised in a finalizer would be swallowed)
    raise KeyboardInterrupt


def ignore_signals() -> None:
    """From now on Ctrl-C and SIGTERM change nothing: the run is already ending."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


_ARGV: list[str] | None = None  # the arguments main() ran with, for the HTML report


def stopped(exc: BaseException) -> int:
    """The goodbye of a run that Ctrl-C or SIGTERM stopped, and its exit code."""
    ignore_signals()  # a second signal must not cut the goodbye short
    word, code = stop_outcome(isinstance(exc, Terminated))
    render.error(word)
    return code


def end_at_once(code: int) -> NoReturn:
    """End a stopped run now, without waiting for any thread: one still encoding an
    output leaves nothing (the output is an unnamed file until it is whole; a named
    temporary file is removed here), and the interpreter's exit hooks, which join
    threads and pools, can neither hang nor print on the way out."""
    atomic = sys.modules.get(__name__.split(".")[0] + ".atomic")
    if atomic is not None:
        atomic.remove_temporary_files()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def is_internal(exc: Exception) -> bool:
    """Not a user's mistake, a closed pipe or a full disk: a bug."""
    known = (CnnFiltersError, OSError, ReaderGone)
    return not isinstance(exc, known) and not hasattr(exc, "format_message")


def exit_for(exc: Exception) -> int:
    """One line on stderr for ``exc`` (none for a reader that went away), and the exit code."""
    if isinstance(exc, CnnFiltersError):
        render.error(str(exc))
        return exc.exit_code
    if isinstance(exc, ReaderGone) or (
        isinstance(exc, OSError) and exc.filename == STANDARD_OUTPUT
    ):
        # Standard output went away (`| head`) or cannot be written (a full disk):
        # later writes go nowhere, so the interpreter's exit cannot fail on them.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        if isinstance(exc, ReaderGone):
            return EXIT_OK  # a reader such as `head` closed the pipe: not an error of ours
    if isinstance(exc, OSError):
        where = os.fsdecode(exc.filename) + ": " if exc.filename else ""
        render.error(f"{where}{exc.strerror or exc}")
        return EXIT_IO
    # Click's exceptions (a usage error, an abort), whichever copy of click Typer uses.
    if type(exc).__name__ == "Abort":
        render.error("interrupted")
        return EXIT_INTERRUPTED
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        if exc.format_message():  # empty when the help was shown for a bare command
            render.error(usage_line(exc))
        return exc.exit_code
    render.error(
        f"internal error: {type(exc).__name__}: {exc} "
        "(this is a bug; set CNNFILTERS_DEBUG=1 to see the traceback)"
    )
    return EXIT_INTERNAL
