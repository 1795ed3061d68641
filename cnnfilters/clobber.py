"""The clobber rule of every output an input makes, checked before its first byte
is written: an input is never a target (not even through a symlink or a hard
link, not even with ``--force``); a directory never; an existing file only
with ``force``. The files a run writes once follow it too
(:mod:`cnnfilters.runfiles`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputError

__all__ = ["check_targets", "target_exists"]


def target_exists(target: Path) -> bool:
    """Whether something (a file, a dangling symlink) is at ``target``; a path that
    cannot be used at all (a name over the file system's limit, a folder that
    cannot be searched) is that output's error, raised here before any work."""
    try:
        os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise OutputError(f"{target}: cannot write this output ({exc.strerror or exc})") from None
    return True


def check_targets(targets: dict[str, list[Path]], source: Path, *, force: bool) -> None:
    """The clobber rule: an input is never a target (even through a symlink or a hard
    link); an existing file is replaced only with ``force``; a directory never."""
    for files in targets.values():
        for target in files:
            if not target_exists(target):
                continue
            try:
                same = os.path.samefile(target, source)
            except OSError:
                same = False
            if same:
                raise OutputError(f"{target}: this is the input file; it is never overwritten")
            if target.is_dir():
                raise OutputError(f"{target}: is a directory")
            if not force:
                raise OutputError(f"{target}: exists (use --force to overwrite)")
