"""The ``cnnfilters`` command line: declares options, calls the library, renders.

- :mod:`.options`: every option's declaration, the shared ones once;
- :mod:`.commands`: the Typer app, one function a command, each making its
  command object and handing it to a :class:`~cnnfilters.session.Session`;
- :mod:`.tools`: the commands that read no image (``kernels``, ``demo``,
  ``completion``);
- :mod:`.help`: help with the shared options in panels, and examples;
- :mod:`.exits`: one line on stderr and an exit code for every way out;
- :func:`main` (here): the process around them: standard output, signals.
"""

from __future__ import annotations

import os
import signal
import sys

import typer

from .. import render, startup
from ..errors import (
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_OK,
    EXIT_TERMINATED,
    Terminated,
    stop_behind,
)
from . import commands, tools
from .commands import app
from .exits import (
    end_at_once,
    exit_for,
    ignore_signals,
    is_internal,
    on_sigint,
    on_sigterm,
    stopped,
)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; usage errors and library errors are one line on stderr."""
    commands.ARGV = list(argv) if argv is not None else sys.argv[1:]
    if sys.stdout is None:  # started with standard output closed (>&-)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
        sys.stdout.closed_at_start = True  # type: ignore[attr-defined]
    stdout, sys.stdout = sys.stdout, render.StandardOutput(sys.stdout)
    previous = {
        signal.SIGINT: signal.getsignal(signal.SIGINT),
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm),
    }
    if previous[signal.SIGINT] is signal.default_int_handler:  # not ignored (a background job)
        signal.signal(signal.SIGINT, on_sigint)
    if os.environ.get(tools.COMPLETE_VAR):
        # The shell asks for completions (`cnnfilters completion`): Typer answers
        # them, and ends the process, once its completion classes are registered.
        from typer._completion_classes import completion_init

        completion_init()
    try:
        lean = startup.lean_app(app, sys.argv[1:] if argv is None else argv)
        command = typer.main.get_command(lean)
        code = command.main(args=argv, prog_name="cnnfilters", standalone_mode=False)
    except (KeyboardInterrupt, Terminated) as exc:
        code = stopped(exc)
    except Exception as exc:
        stop = stop_behind(exc)
        if stop is not None:
            code = stopped(stop)
        elif os.environ.get("CNNFILTERS_DEBUG") and is_internal(exc):
            raise
        else:
            code = exit_for(exc)
    finally:
        sys.stdout = stdout
        if argv is None:
            ignore_signals()  # the process ends now, with this code
        else:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    code = EXIT_OK if code is None else int(code)
    if argv is None:
        if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
            end_at_once(code)
        startup.exit_now(code)
    return code


__all__ = ["EXIT_CHECK_FAILED", "EXIT_IO", "app", "main"]
