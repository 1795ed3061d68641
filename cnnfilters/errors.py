"""The one exception family of cnnfilters, and the exit code each maps to.

Library code raises these with a message that quotes the values it got; the
command line turns them into one line on stderr and the exit code below.
"""

from __future__ import annotations

# Exit codes of the command line (documented in the README and in --help).
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_IO = 3
EXIT_INTERNAL = 70  # a bug in cnnfilters (sysexits' EX_SOFTWARE)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM


# The file name an OSError of standard output's carries (a file's error names its
# file; one of standard output's names nothing by itself).
STANDARD_OUTPUT = "standard output"


class ReaderGone(Exception):
    """Standard output's reader went away (``| head``): the run is done, not failed.

    Not an OSError, so that no layer in between takes it for a broken pipe of its
    own (Click ends the program with exit 1 on one); any other broken pipe is an
    error.
    """


class CnnFiltersError(ValueError):
    """An invalid argument or an input that cannot be processed.

    A subclass of ``ValueError`` so that library users can catch either.
    """

    exit_code = EXIT_USAGE


class OptionError(CnnFiltersError):
    """A command's option with a value it cannot take: ``option`` names the field,
    ``reason`` says why, so that the command line can name its own spelling."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option} {reason}")
        self.option = option
        self.reason = reason


class InputError(CnnFiltersError):
    """An input file could not be read, decoded or processed."""

    exit_code = EXIT_IO


class OutputError(CnnFiltersError):
    """An output file could not be written (or would clobber something)."""

    exit_code = EXIT_IO


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C so that temporary files are removed on the way out."""


def stop_outcome(terminated: bool) -> tuple[str, int]:
    """The word and the exit code of a run that SIGTERM (``terminated``) or Ctrl-C stopped."""
    return ("terminated", EXIT_TERMINATED) if terminated else ("interrupted", EXIT_INTERRUPTED)


def stop_behind(exc: BaseException | None) -> KeyboardInterrupt | Terminated | None:
    """The Ctrl-C (``KeyboardInterrupt``) or SIGTERM (:class:`Terminated`) behind
    ``exc``, if any: Python wraps an exception raised in some places (a class
    being made during an import) in another one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (KeyboardInterrupt, Terminated)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
