"""A run's inputs: files, folders and glob patterns expanded, and standard input.

:func:`stream_inputs` turns what the user named into :class:`InputStream`: the
named files at once, each folder read only when the run reaches it (a
million-file tree starts work at once, in flat memory). The order is stable:
as given; a folder's image files by name, then its subfolders by name.
:func:`expand_inputs` is the same, as a list. :func:`stdin_source` saves
standard input where the decoders can seek in it.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np

from .errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "Found",
    "InputStream",
    "Names",
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


class Names(Sequence[str]):
    """A folder's file names, sorted by their bytes, packed: in one fixed-width
    numpy array when they are short (about 15 bytes a name instead of 60 to 75 for a
    list of strings: a folder of a million files keeps 15 MB), else in one buffer.
    Sorting them needs no string object per name either, so listing a huge folder
    leaves no small objects behind to fragment the heap."""

    def __init__(self, names: Iterable[str]) -> None:
        chunks, widest = [], 0
        names = iter(names)
        while chunk := [name.encode(_ENCODING, _ERRORS) for name in itertools.islice(names, 4096)]:
            widest = max(widest, *map(len, chunk))
            chunks.append(chunk if widest > _PACKED_WIDTH else np.array(chunk, dtype="S"))
        if widest > _PACKED_WIDTH:  # long names: one buffer, each name's end
            ordered = sorted(name for chunk in chunks for name in chunk)
            self._packed = None
            self._ends = array("q", itertools.accumulate(map(len, ordered)))
            self._blob = b"".join(ordered)
        else:
            packed = np.concatenate(chunks) if chunks else np.empty(0, dtype="S1")
            packed.sort()
            self._packed = packed

    def __len__(self) -> int:
        return len(self._packed) if self._packed is not None else len(self._ends)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if self._packed is not None:
            return os.fsdecode(bytes(self._packed[index]))
        start = self._ends[index - 1] if index > 0 else 0
        return os.fsdecode(self._blob[start : self._ends[index]])

    def __iter__(self) -> Iterator[str]:
        if self._packed is None:
            yield from (self[index] for index in range(len(self)))
            return
        for start in range(0, len(self._packed), 4096):  # a slice's bytes at a time
            for name in self._packed[start : start + 4096].tolist():
                yield name.decode(_ENCODING, _ERRORS)

    def __repr__(self) -> str:
        return f"Names({list(self)!r})"


# Names up to this many bytes are packed at a fixed width (a name as long as the
# longest); a folder with a longer one keeps a buffer and the ends of its names.
_PACKED_WIDTH = 48
_ENCODING, _ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # as os.fsencode


@dataclass(frozen=True)
class Found:
    """The image files found in one folder, sorted by name: a packed name each until
    the run takes them (see :class:`Names`)."""

    folder: Path
    root: Path
    names: Names

    def sources(self) -> Iterator[Source]:
        for name in self.names:
            yield Source(self.folder / name, self.root)


class InputStream:
    """A run's inputs, read as they are needed: iterate once.

    ``named`` are the files the user named (bounded by the command line: the
    run checks them all before any work); the rest come a folder at a time
    (:meth:`items`: a :class:`Found` per folder, or a :class:`Source`).
    :meth:`peek` reads ahead without losing anything. ``arguments``: how many
    folder arguments and patterns it was made of.
    """

    def __init__(
        self,
        items: Iterable[Source | Found],
        named: Sequence[Source] = (),
        *,
        arguments: int = 1,
        folders: Sequence[tuple[Path, bool]] = (),
        patterns: Sequence[str] = (),
    ) -> None:
        self.named = list(named)
        self.arguments = arguments
        self.folders = list(folders)  # (folder, recursive), as given
        self.patterns = list(patterns)
        self._rest = iter(items)
        self._ahead: list[Source | Found] = []

    @classmethod
    def of(cls, sources: Iterable[Source]) -> InputStream:
        """Sources listed in advance (a folder's found files grouped as a :class:`Found`)."""
        listed = list(sources)
        roots = {source.root for source in listed if source.expanded}
        return cls(_grouped(listed), [s for s in listed if not s.expanded], arguments=len(roots))

    def peek(self, count: int) -> list[Source]:
        """Up to ``count`` first inputs, still to come when iterating."""
        while sum(_count(item) for item in self._ahead) < count:
            item = next(self._rest, None)
            if item is None:
                break
            self._ahead.append(item)
        return list(itertools.islice(_flat(self._ahead), count))

    def takes(self, path: Path) -> bool:
        """Whether the existing file ``path`` is one of this run's inputs: a named file
        (even through a symlink or a hard link), an image file in a folder argument
        (below it too when recursive), or a file a pattern matches. Nothing is read."""
        for source in self.named:
            with contextlib.suppress(OSError):
                if os.path.samefile(source.path, path):
                    return True
        place = Path(os.path.realpath(path.parent)) / path.name
        if place.name.lower().endswith(IMAGE_SUFFIXES):
            for folder, recursive in self.folders:
                root = Path(os.path.realpath(folder))
                if place.parent == root or (recursive and root in place.parents):
                    return True
        for pattern in self.patterns:
            for match in glob.glob(pattern, recursive=True):
                with contextlib.suppress(OSError):
                    if os.path.samefile(match, path):
                        return True
        return False

    def items(self) -> Iterator[Source | Found]:
        ahead, self._ahead = self._ahead, []
        yield from ahead
        yield from self._rest

    def __iter__(self) -> Iterator[Source]:
        return _flat(self.items())


def _count(item: Source | Found) -> int:
    return len(item.names) if isinstance(item, Found) else 1


def _flat(items: Iterable[Source | Found]) -> Iterator[Source]:
    for item in items:
        if isinstance(item, Found):
            yield from item.sources()
        else:
            yield item


def _grouped(sources: list[Source]) -> Iterator[Source | Found]:
    """Consecutive found files of one folder as one :class:`Found`."""

    def key(source: Source) -> tuple:
        if source.expanded and source.error is None and source.folder is None:
            return (source.path.parent, source.root)
        return (id(source),)

    for _, run in itertools.groupby(sources, key=key):
        group = list(run)
        first = group[0]
        if key(first)[0] == id(first):
            yield first
            continue
        names = [first.path.name]
        for source in group[1:]:
            if source.path.name <= names[-1]:  # the folder again (given twice): a new group
                yield Found(first.path.parent, first.root, Names(names))
                names = []
            names.append(source.path.name)
        yield Found(first.path.parent, first.root, Names(names))


def _walk(folder: Path, root: Path, recursive: bool) -> Iterator[Source | Found]:
    """The image files of ``folder`` by name, then (``recursive``) each subfolder's, by
    name; a folder that cannot be read is an error entry (never skipped silently).

    One ``os.scandir`` per folder: its entries' types come with the listing, so
    no file is stat'ed (but symlinks, whose targets are looked at).
    """
    folders: list[str] = []

    def image_files(entries: Iterable[os.DirEntry]) -> Iterator[str]:
        for entry in entries:
            if entry.name.lower().endswith(IMAGE_SUFFIXES) and _is_file(entry):
                yield entry.name
            elif recursive and entry.is_dir(follow_symlinks=False):
                folders.append(entry.name)

    try:
        with os.scandir(folder) as entries:
            names = Names(image_files(entries))  # packed as they are listed
    except OSError as exc:
        message = f"{folder}: cannot read this folder ({exc.strerror or exc})"
        yield Source(folder, root, error=message)
        return
    if names:
        yield Found(folder, root, names)
    folders.sort(key=os.fsencode)  # by bytes, as the names
    for name in folders:
        yield from _walk(folder / name, root, recursive)


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a symlink whose target cannot be looked at: reported when read
        return True


def _folder(path: Path, recursive: bool) -> Iterator[Source | Found]:
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


def stream_inputs(
    specs: Sequence[str | os.PathLike],
    *,
    recursive: bool = False,
    stdin: Callable[[], Source] | None = None,
) -> InputStream:
    """Files as given; directories as the image files they hold (``recursive``: all
    below), read when the run gets there; glob patterns (``**`` included) expanded
    here, so that scripts behave the same in every shell. A pattern that matches
    nothing, or a path that does not exist, stays as it is and is reported as a
    missing file. ``-`` is ``stdin()`` when given (see :func:`stdin_source`).
    """
    parts: list[Iterable[Source | Found]] = []
    named: list[Source] = []
    folders: list[tuple[Path, bool]] = []
    patterns: list[str] = []
    for spec in specs:
        text = os.fsdecode(spec)
        path = Path(text)
        if text == "-" and stdin is not None:
            source = stdin()
            parts.append([source])
            named.append(source)
        elif text != "-" and _GLOB_CHARACTERS & set(text) and not path.exists():
            matched = _pattern(text)
            if matched is None:
                parts.append([Source(path)])
                named.append(Source(path))
            else:
                parts.append(_grouped(matched))
                patterns.append(text)
        elif path.is_dir():
            parts.append(_folder(path, recursive))
            folders.append((path, recursive))
        else:
            parts.append([Source(path)])
            named.append(Source(path))
    return InputStream(
        itertools.chain.from_iterable(parts),
        named,
        arguments=len(folders) + len(patterns),
        folders=folders,
        patterns=patterns,
    )


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

    from .defaults import FORMATS

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as probe:
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
