"""A run's inputs: files, folders and glob patterns expanded, and standard input.

:func:`stream_inputs` turns what the user named into :class:`InputStream`: the
named files at once, each folder read only when the run reaches it (a
million-file tree starts work at once, in flat memory). The order is stable:
as given; a folder's image files by name, then its subfolders by name.
:func:`expand_inputs` is the same, as a list. :func:`stdin_source` saves
standard input where the decoders can seek in it.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "InputStream",
    "Source",
    "expand_inputs",
    "stdin_source",
    "stream_inputs",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp")
_GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One input file, and the folder its relative path is mirrored from (if any)."""

    path: Path
    root: Path | None = None
    empty_folder: bool = False
    folder: Path | None = None  # where outputs go by default, when not beside the input
    error: str | None = None  # why this entry cannot be read (an unreadable folder)

    @property
    def expanded(self) -> bool:
        """Found in a folder or by a pattern, rather than named by the user."""
        return self.root is not None

    @property
    def relative_folder(self) -> Path:
        """Where under --out-dir its outputs go: its folder relative to ``root``."""
        if self.root is None:
            return Path()
        return self.path.parent.relative_to(self.root)


class InputStream:
    """A run's inputs, read as they are needed: iterate once.

    ``named`` are the files the user named (bounded by the command line: the
    run checks them all before any work); the rest come folder by folder, a
    folder's files together. :meth:`peek` reads ahead without losing anything.
    """

    def __init__(self, sources: Iterable[Source], named: Sequence[Source] = ()) -> None:
        self.named = list(named)
        self._rest = iter(sources)
        self._ahead: list[Source] = []

    def peek(self, count: int) -> list[Source]:
        """Up to ``count`` first inputs, still to come when iterating."""
        if len(self._ahead) < count:
            self._ahead.extend(itertools.islice(self._rest, count - len(self._ahead)))
        return self._ahead[:count]

    def __iter__(self) -> Iterator[Source]:
        ahead, self._ahead = self._ahead, []
        yield from ahead
        yield from self._rest


def _walk(folder: Path, root: Path, recursive: bool) -> Iterator[Source]:
    """The image files of ``folder`` by name, then (``recursive``) each subfolder's, by
    name; a folder that cannot be read is an error entry (never skipped silently).

    One ``os.scandir`` per folder: its entries' types come with the listing, so
    no file is stat'ed (but symlinks, whose targets are looked at).
    """
    try:
        with os.scandir(folder) as entries:
            files, folders = [], []
            for entry in entries:
                if entry.name.lower().endswith(IMAGE_SUFFIXES) and _is_file(entry):
                    files.append(entry.name)
                elif recursive and entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
    except OSError as exc:
        message = f"{folder}: cannot read this folder ({exc.strerror or exc})"
        yield Source(folder, root, error=message)
        return
    files.sort()
    folders.sort()
    for name in files:
        yield Source(folder / name, root)
    for name in folders:
        yield from _walk(folder / name, root, recursive)


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a symlink whose target cannot be looked at: reported when read
        return True


def _folder(path: Path, recursive: bool) -> Iterator[Source]:
    """A folder argument's inputs; a folder without any image is one entry that says so."""
    found = _walk(path, path, recursive)
    first = next(found, None)
    if first is None:
        yield Source(path, empty_folder=True)
        return
    yield first
    yield from found


def _pattern(text: str) -> list[Source] | None:
    """The files a glob pattern matches, a folder's files together (as a folder is
    walked); None if it matches no file."""
    matches = [Path(m) for m in glob.glob(text, recursive=True)]
    files = sorted((m for m in matches if m.is_file()), key=lambda m: (m.parent.parts, m.name))
    if not files:
        return None
    prefix = Path(text.split("*")[0].split("?")[0].split("[")[0])
    root = prefix if text.endswith(os.sep) or prefix.is_dir() else prefix.parent
    return [Source(m, root) for m in files]


def stream_inputs(specs: Sequence[str | os.PathLike], *, recursive: bool = False) -> InputStream:
    """Files as given; directories as the image files they hold (``recursive``: all
    below), read when the run gets there; glob patterns (``**`` included) expanded
    here, so that scripts behave the same in every shell. A pattern that matches
    nothing, or a path that does not exist, stays as it is and is reported as a
    missing file.
    """
    parts: list[Iterable[Source]] = []
    named: list[Source] = []
    for spec in specs:
        text = os.fsdecode(spec)
        path = Path(text)
        if text != "-" and _GLOB_CHARACTERS & set(text) and not path.exists():
            matched = _pattern(text)
            parts.append(matched if matched is not None else [Source(path)])
            if matched is None:
                named.append(Source(path))
        elif path.is_dir():
            parts.append(_folder(path, recursive))
        else:
            parts.append([Source(path)])
            named.append(Source(path))
    return InputStream(itertools.chain.from_iterable(parts), named)


def expand_inputs(specs: Sequence[str | os.PathLike], *, recursive: bool = False) -> list[Source]:
    """:func:`stream_inputs` as a list (every folder read at once)."""
    return list(stream_inputs(specs, recursive=recursive))


def stdin_source(data: bytes, folder: Path) -> Source:
    """Standard input saved as ``folder/stdin.<format>`` (decoders need to seek).

    Its outputs go to the current folder (``stdin.grayscale.png``, ...) unless
    told otherwise.
    """
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as probe:
            suffix = "." + (probe.format or "img").lower()
    except Exception:  # not an image: the loader will say so
        suffix = ".img"
    path = folder / f"stdin{suffix}"
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise InputError(
            f"-: cannot keep standard input in a scratch file ({exc.strerror or exc})"
        ) from None
    return Source(path, folder=Path.cwd())
