"""Files that are whole or absent: every file cnnfilters writes goes through here.

:func:`atomic_write` writes an unnamed file in the target's folder (a named
temporary one where the file system has none), flushed and fsynced (a batch
syncs once at its end instead: :func:`synced_once`), then links it into
place, so a target is either untouched or whole. :class:`ReportStream`
writes ``--report`` as the inputs finish, in a named temporary file linked
into place at the end. A run stopped by a signal removes its named
temporary files (:func:`remove_temporary_files`); those a killed run left
are removed by the next run in that folder (:func:`remove_stale_temporary_files`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import OutputError
from .report import to_json

__all__ = [
    "ReportStream",
    "atomic_write",
    "forget_temporary_files",
    "remove_stale_temporary_files",
    "remove_temporary_files",
    "synced_once",
]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import (single-threaded): os.umask can only be read by setting it.
_UMASK = _current_umask()

# The temporary files of the writes under way in this process, for a worker
# that is told to stop at once (see remove_temporary_files).
_TEMPORARY: set[Path] = set()


# Whether each file is fsynced before its rename (see synced_once).
_SYNC_EACH_FILE = True


@contextlib.contextmanager
def synced_once(enabled: bool = True) -> Iterator[None]:
    """Within this block, files are renamed into place without an fsync each: a
    batch calls :func:`os.sync` once at its end instead. A process that is
    killed loses nothing either way (the page cache is the kernel's); after a
    power cut a batch's last files may be empty or cut, which
    ``--skip-existing`` sees (:func:`~cnnfilters.outputs.output_complete`) and redoes."""
    global _SYNC_EACH_FILE
    previous, _SYNC_EACH_FILE = _SYNC_EACH_FILE, not enabled
    try:
        yield
    finally:
        _SYNC_EACH_FILE = previous


def atomic_write(target: Path, write: Callable[[IO[bytes]], None], *, replace: bool = True) -> None:
    """Write a file that appears whole or not at all: ``target`` is either untouched or whole.

    The data go to a file without a name in ``target``'s folder (Linux's
    ``O_TMPFILE``), flushed and fsynced (unless :func:`synced_once`), which is
    then linked into place: one change to the folder, and nothing is left
    behind by a process killed on the way, not even by SIGKILL. Where the file
    system has no unnamed files, a named temporary file is written and renamed
    instead. With ``replace=False`` an existing target is never replaced, even
    one that another process wrote a moment ago: linking fails if the name
    exists (no check-then-rename race).
    """
    folder = target.parent
    fd = _open_unnamed(folder, target)
    if fd is None:
        _write_named(target, write, replace=replace)
        return
    # Closing the file flushes what a failed write left in its buffer, which fails
    # again (a full disk): that too is this output's error, named.
    try:
        with open(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if _SYNC_EACH_FILE:
                os.fsync(fd)
            _link_unnamed(fd, target, replace=replace)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None


# Whether this system names open files in /proc: an unnamed file is linked into
# place through its /proc/self/fd entry (linkat's AT_EMPTY_PATH needs privileges).
_UNNAMED = (
    hasattr(os, "O_TMPFILE") and os.link in os.supports_dir_fd and os.path.isdir("/proc/self/fd")
)


def _open_unnamed(folder: Path, target: Path) -> int | None:
    """An unnamed file in ``folder``, open for writing; None where unnamed files are not
    to be had (another system, a file system without them)."""
    if not _UNNAMED:
        return None
    try:
        # The mode as for any new file: 0o666 less the umask, applied by open itself.
        return os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise _write_error(target, folder, exc) from None


def _link_unnamed(fd: int, target: Path, *, replace: bool) -> None:
    """Give the unnamed file ``fd`` the name ``target``; an existing file is replaced
    only with ``replace``, through a temporary name renamed over it."""
    source = f"/proc/self/fd/{fd}"
    try:
        # An absolute source ignores its folder descriptor, which only makes os.link
        # call linkat() with AT_SYMLINK_FOLLOW (link() would link the /proc entry).
        os.link(source, target, src_dir_fd=fd, follow_symlinks=True)
        return
    except FileExistsError:
        if not replace:
            raise OutputError(f"{target}: exists (use --force to overwrite)") from None
    temp = _temporary_name(target.parent)
    _TEMPORARY.add(temp)
    try:
        os.link(source, temp, src_dir_fd=fd, follow_symlinks=True)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    finally:
        _TEMPORARY.discard(temp)


def _write_error(target: Path, folder: Path, exc: OSError) -> OutputError:
    if isinstance(exc, FileNotFoundError):
        return OutputError(f"{target}: the folder {folder} does not exist")
    if isinstance(exc, PermissionError):
        return OutputError(f"{target}: permission denied in {folder}")
    return OutputError(f"{target}: cannot write ({exc.strerror or exc})")


def _write_named(target: Path, write: Callable[[IO[bytes]], None], *, replace: bool) -> None:
    """:func:`atomic_write` through a named temporary file, renamed into place."""
    folder = target.parent
    # A short temporary name (the target's own may already be 255 bytes long),
    # registered before the file exists: a worker told to stop at once removes
    # every registered one, so none is left whenever the signal comes. It names
    # its writer (host and process), so that what a killed one left is known.
    temp = _temporary_name(folder)
    _TEMPORARY.add(temp)
    try:
        handle = open(temp, "xb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        _TEMPORARY.discard(temp)
        raise _write_error(target, folder, exc) from None
    try:
        with handle:
            write(handle)
            handle.flush()
            if _SYNC_EACH_FILE:
                os.fsync(handle.fileno())
        os.chmod(temp, 0o666 & ~_UMASK)  # the umask's permissions, as for any new file
        if replace:
            os.replace(temp, target)
        else:
            _link_into_place(temp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(exc, OSError):
            raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
        raise
    finally:
        _TEMPORARY.discard(temp)


class ReportStream:
    """A JSON report written as its entries come, in input order; valid JSON once closed.

    Entries that finish early wait (a few: the tasks in flight) until those
    before them are in. Everything goes to a temporary file beside
    ``target``; :meth:`close` writes the end and renames it into place, and
    :meth:`abort` (an interrupted run) removes it: the target is never a
    partial report. Without ``replace``, a file that appeared at ``target``
    meanwhile is not replaced (an error says so). ``head`` holds the report's
    first keys (schema, command, version, options); ``passed`` comes last,
    once it is known.
    """

    def __init__(self, target: Path, head: dict[str, Any], *, replace: bool = True) -> None:
        self.target = Path(target)
        self.replace = replace
        self.temp = _temporary_name(self.target.parent)
        _TEMPORARY.add(self.temp)
        try:
            self.handle = open(self.temp, "x", encoding="utf-8")  # noqa: SIM115 (closed in close)
        except OSError as exc:
            _TEMPORARY.discard(self.temp)
            raise OutputError(
                f"{target}: cannot write the report ({exc.strerror or exc})"
            ) from None
        opening = to_json(head, indent=2)
        self.handle.write(opening[: opening.rindex("}")].rstrip() + ',\n  "inputs": [')
        self.waiting: dict[int, list[Any]] = {}
        self.next = 0
        self.first = True
        self.passed = True

    def add(self, index: int, items: list[Any]) -> None:
        """Input number ``index``'s entries (``InputReport``), in any order."""
        self.waiting[index] = items
        while self.next in self.waiting:
            self._write(self.waiting.pop(self.next))
            self.next += 1

    def _write(self, items: list[Any]) -> None:
        for item in items:
            self.passed = self.passed and item.passed
            entry = to_json(item.to_dict(), indent=2).replace("\n", "\n    ")
            self.handle.write(("\n    " if self.first else ",\n    ") + entry)
            self.first = False

    def close(self, stopped: dict[str, Any] | None = None) -> None:
        """Write what is left (inputs never run leave gaps) and put the report in place;
        ``stopped``: what stopped the run before its end (see ``RunReport.stopped``)."""
        for index in sorted(self.waiting):
            self._write(self.waiting.pop(index))
        passed = self.passed and stopped is None
        try:
            end = "\n  ]" if not self.first else "]"
            self.handle.write(
                f'{end},\n  "stopped": {to_json(stopped)},\n  '
                f'"passed": {"true" if passed else "false"}\n}}\n'
            )
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.chmod(self.temp, 0o666 & ~_UMASK)
            if self.replace:
                os.replace(self.temp, self.target)
            else:
                _link_into_place(self.temp, self.target)
        except OutputError:
            self.abort()
            raise
        except OSError as exc:
            self.abort()
            raise OutputError(
                f"{self.target}: cannot write the report ({exc.strerror or exc})"
            ) from None
        finally:
            _TEMPORARY.discard(self.temp)

    def abort(self) -> None:
        """Leave no partial report and no temporary file."""
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            self.temp.unlink()
        _TEMPORARY.discard(self.temp)


def forget_temporary_files() -> None:
    """In a process just forked from a writer: the temporary files registered are the
    parent's (a report it is writing), not this process's to remove when it stops."""
    _TEMPORARY.clear()


def remove_temporary_files() -> None:
    """Remove the temporary files of every write under way (safe in a signal handler:
    no lock is taken; a write that ends meanwhile has removed or renamed its own)."""
    for temp in list(_TEMPORARY):
        with contextlib.suppress(OSError):
            temp.unlink()


def _temporary_name(folder: Path) -> Path:
    """A name no other writer picks: this host's and process's, and 8 random bytes
    (``os.urandom``, as ``secrets`` would, whose import costs every run 7 ms)."""
    return folder / f".cnnfilters-{_HOST}-{os.getpid()}-{os.urandom(8).hex()}.tmp"


# This machine, in the temporary names: a process id means something only here.
_HOST = f"{zlib.crc32(os.uname().nodename.encode()):08x}"


_TEMPORARY_NAME = re.compile(r"\.cnnfilters-([0-9a-f]{8})-([0-9]+)-[0-9a-f]{16}\.tmp")


def remove_stale_temporary_files(folders: Iterable[Path]) -> int:
    """Remove the temporary files in ``folders`` whose writer is gone (a process
    killed by SIGKILL or the OOM killer cannot remove its own); how many.

    Only names of this machine's processes that no longer exist are touched:
    a write under way, here or on another host sharing the folder, is left be.
    """
    removed = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = _TEMPORARY_NAME.fullmatch(entry.name)
            if match is None or match[1] != _HOST or _alive(int(match[2])):
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        return True
    return True


def _link_into_place(temp: Path, target: Path) -> None:
    """Give ``temp`` the name ``target`` unless that name exists; then drop ``temp``."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise OutputError(f"{target}: exists (use --force to overwrite)") from None
    except OSError:  # a file system without hard links: check, then rename
        if target.exists() or target.is_symlink():
            raise OutputError(f"{target}: exists (use --force to overwrite)") from None
        os.replace(temp, target)
        return
    temp.unlink()
