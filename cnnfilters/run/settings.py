"""The run's settings, made once and passed down as they are, and its summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    EXIT_CHECK_FAILED,
    Terminated,
    stop_outcome,
)
from ..images import ReadOptions
from ..inputs import Source
from ..outputs import (
    Destination,
)

# Worker processes each run one image at a time: BLAS and OpenMP threads
# would only compete with the other workers for the same cores.
_SINGLE_THREAD_ENV = {
    name: "1"
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    )
}


@dataclass(frozen=True)
class Settings:
    """Everything a run needs besides its command and inputs: made once, passed down as is.

    ``jobs`` worker processes (1: this process); ``skip_existing`` skips an
    input whose outputs all exist; ``fail_fast`` stops at the first failure;
    ``scheduler`` runs on a Dask cluster; ``maps`` keeps difference maps for
    the visual report; ``keep`` keeps every input's entry in the report
    (True), none (False: a batch that only streams them, with ``on_input``,
    keeps counts), or at most that many failing and that many passing ones,
    the first in input order (what a table or a page shows of a large
    batch), so that its memory does not grow with its inputs; ``sync_once`` syncs
    the file systems once at the end instead of each file as it is written
    (see :func:`~cnnfilters.atomic.synced_once`); ``run_files`` the files the
    run writes once (see :mod:`cnnfilters.runfiles`), which no input's output
    may take.
    """

    destination: Destination = field(default_factory=Destination)
    read: ReadOptions = field(default_factory=ReadOptions)
    jobs: int = 1
    skip_existing: bool = False
    fail_fast: bool = False
    scheduler: str | None = None
    maps: bool = False
    keep: bool | int = True
    sync_once: bool = False
    run_files: tuple[tuple[str, Path], ...] = ()  # (option, file): --report, --html

    def folder_for(self, source: Source) -> Path | None:
        """The folder ``source``'s outputs go to (None: beside it)."""
        out_dir = self.destination.out_dir
        if out_dir is None:
            return source.folder
        return out_dir / source.relative_folder


@dataclass
class Summary:
    """What a run did, for the closing line."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    not_done: int = 0
    not_counted: bool = False  # inputs of folders never read are left out of not_done
    seconds: float = 0.0
    megapixels: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM
    terminated: bool = False  # stopped by SIGTERM
    worst_error: int = 0  # the largest exit code of an input's error
    check_failed: bool = False

    def stopped(self, exc: BaseException) -> None:
        """The run was stopped by ``exc``: Ctrl-C's KeyboardInterrupt or SIGTERM's
        :class:`~cnnfilters.errors.Terminated`."""
        self.interrupted = True
        self.terminated = isinstance(exc, Terminated)

    def stopped_dict(self) -> dict[str, Any] | None:
        """What the report says of a stopped run (None: it ran to its end)."""
        if not self.interrupted:
            return None
        by = "SIGTERM" if self.terminated else "Ctrl-C"
        return {"by": by, "not_done": self.not_done, "at_least": self.not_counted}

    @property
    def exit_code(self) -> int:
        """As :attr:`RunReport.exit_code`, from the counts alone."""
        if self.worst_error:
            return self.worst_error
        return EXIT_CHECK_FAILED if self.check_failed else 0

    @property
    def not_done_text(self) -> str:
        """``12 input(s) not done``, or ``at least 12 ...`` when folders were not read."""
        count = f"at least {self.not_done}" if self.not_counted else f"{self.not_done}"
        return f"{count} input(s) not done"

    def line(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.done} done, {self.skipped} skipped, {self.failed} failed in "
            f"{self.seconds:.1f} s ({rate:.1f} MP/s)"
        )
        if self.not_done or self.not_counted:
            text += f"; {self.not_done_text} ({stop_outcome(self.terminated)[0]})"
        return text
