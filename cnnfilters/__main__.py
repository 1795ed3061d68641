"""``python -m cnnfilters`` and the ``cnnfilters`` command.

:func:`main` runs :func:`cnnfilters.cli.main`. A Ctrl-C or SIGTERM that comes
while the command line is being imported (its first tenth of a second; before
that, while the package itself is, :mod:`cnnfilters._early`) ends the run as
one that comes later does: one line on stderr, 130 or 143, and
no traceback. Settings that numpy reads when it is imported are made first
(:func:`cnnfilters.startup.calm_blas_threads`).
"""

from __future__ import annotations

import os
import signal
import sys

from ._early import release
from .errors import Terminated, stop_behind, stop_outcome
from .startup import calm_blas_threads


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)  # the command line puts its own in place
    calm_blas_threads()  # before numpy is imported
    try:
        release()  # Ctrl-C is a KeyboardInterrupt again, handled below and by the run
        from .cli import main as run
    except BaseException as exc:
        stop = stop_behind(exc)
        if stop is None:
            raise
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        word, code = stop_outcome(isinstance(stop, Terminated))
        sys.stderr.write(f"cnnfilters: error: {word}\n")
        sys.stderr.flush()
        os._exit(code)
    run()


if __name__ == "__main__":
    main()
