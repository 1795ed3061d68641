"""The files a run writes once, besides each input's images: ``--report``, ``--html``,
``learn``'s layer, loss curve and kernel, ``kernels --export``.

They follow the rule every image output follows (see
:func:`~cnnfilters.clobber.check_targets`), checked by :func:`check_run_files`
before any work, so that a refused file costs nothing and loses nothing:

- an input of the run is never one of them, not even with ``--force``: a
  named input (through a symlink or a hard link too), an image file in a
  folder argument, a file a pattern matches;
- a directory is never replaced, an existing file only with ``--force``;
- two of them never name one file.

The run's image outputs are checked against them as each input is planned
(an input whose output would take one of these names is refused), and they
are written atomically without replacing what exists (unless ``--force``),
so a file that appears while the run works is not lost either.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from .clobber import target_exists
from .errors import CnnFiltersError, OutputError
from .inputs import InputStream, Source

__all__ = ["check_run_files", "run_files"]


def run_files(files: Mapping[str, Path | None]) -> dict[str, Path]:
    """``files`` without the options not given: ``{"--report": path, ...}``."""
    return {option: Path(path) for option, path in files.items() if path is not None}


def check_run_files(
    files: Mapping[str, Path | None],
    *,
    inputs: InputStream | Iterable[Path],
    force: bool,
    replaced: Collection[str] = (),
) -> dict[str, Path]:
    """Refuse, before any work, a run file that would overwrite an input, a folder,
    an existing file without ``force``, or another run file; the files given.

    ``files`` maps the option that names a file (``--report``) to its path, or
    None when it was not given; those of ``replaced`` may be replaced without
    ``force`` (``learn --skip-existing`` redoes what is not whole).
    """
    given = run_files(files)
    stream = inputs if isinstance(inputs, InputStream) else _named(inputs)
    seen: dict[str, str] = {}
    for option, path in given.items():
        key = os.path.abspath(path)
        if key in seen:
            raise CnnFiltersError(f"{path}: named by both {seen[key]} and {option}; name two files")
        seen[key] = option
        if not target_exists(path):
            continue
        if stream.takes(path):
            raise OutputError(f"{path}: an input of this run is never overwritten ({option})")
        if path.is_dir():
            raise OutputError(f"{path}: is a directory ({option} names a file)")
        if not (force or option in replaced):
            raise OutputError(f"{path}: exists (use --force to overwrite)")
    return given


def _named(paths: Iterable[Path]) -> InputStream:
    sources = [Source(Path(path)) for path in paths if os.fsdecode(path) != "-"]
    return InputStream([], sources, arguments=0)
