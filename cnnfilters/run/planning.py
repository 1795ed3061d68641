"""Output planning: every input's output files, planned a folder at a time as the
inputs come, with the checks that need several inputs at once."""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..clobber import target_exists
from ..commands import Command
from ..errors import (
    EXIT_USAGE,
    CnnFiltersError,
)
from ..inputs import Found, InputStream, Names, Source
from ..outputs import (
    output_namer,
    output_targets,
)
from ..report import InputReport
from .settings import Settings


class Planned(NamedTuple):
    """An input with its output files, or the reason it is refused before any work."""

    source: Source
    targets: list[Path]
    refused: InputReport | None = None


def plan_outputs(
    command: Command, sources: Iterable[Source] | InputStream, settings: Settings
) -> Iterator[Planned]:
    """Every input's output files, planned as the inputs come, a folder at a time.

    Files found in a folder or by a pattern that are outputs of this run (of
    another input, or under the output folder) are not inputs: they are left
    out, so that a rerun never takes its own results for new work. Two named
    files that would write one file are an error (raised before the first
    input is yielded); a found file that would write another input's output
    is refused (exit 2), the others go on.
    """
    inputs = _as_inputs(sources)
    yield from _Planner(command, settings, inputs).plan(inputs)


def existing_outputs(
    command: Command, sources: Iterable[Source] | InputStream, settings: Settings
) -> tuple[int, Path | None]:
    """How many of the run's planned outputs exist already as files that only
    ``--force`` may replace, and the first of them.

    A walk of the inputs as the run would take them, without reading one: what
    a rerun is told before any work (the files are listed again by the run)."""
    count, first = 0, None
    for item in plan_outputs(command, sources, settings):
        for target in item.targets if item.refused is None else []:
            # A folder or the input itself in an output's place is that input's own
            # error, --force or not (clobber.check_targets).
            if target_exists(target) and not target.is_dir():
                if _same_file(target, item.source.path):
                    continue
                count += 1
                first = first or target
    return count, first


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def plan(
    command: Command, sources: Iterable[Source] | InputStream, settings: Settings
) -> dict[Path, list[Path]]:
    """:func:`plan_outputs` as a mapping from each input to its output files."""
    return {
        item.source.path: item.targets
        for item in plan_outputs(command, sources, settings)
        if item.refused is None
    }


def _as_inputs(sources: Iterable[Source] | InputStream) -> InputStream:
    return sources if isinstance(sources, InputStream) else InputStream.of(sources)


class _Planner:
    """Plans a folder's inputs at a time, keeping between folders only what is bounded:
    the named files' outputs, and (with several folder arguments) 16 bytes per output.

    The checks that need to see several inputs at once are local to a folder:
    an output goes beside its input or to the mirror of its folder under
    --out-dir, and a name template cannot contain a separator. Only two folder
    arguments mirrored into one --out-dir can meet, which the claims catch (:class:`_Claimed`).
    """

    def __init__(self, command: Command, settings: Settings, inputs: InputStream) -> None:
        self.names = command.outputs()
        self.settings = settings
        self._filenames = output_namer(self.names, settings.destination)
        self.absolute = _absolute_paths()
        out_dir = settings.destination.out_dir
        self.inside = None if out_dir is None else self.absolute(out_dir) + os.sep
        named = inputs.named
        self.named = {
            source.path: self._targets(source, settings.folder_for(source))
            for source in named
            if source.error is None
        }
        self.reserved = {self.absolute(path): option for option, path in settings.run_files}
        self.owner: dict[str, Path] = {}
        for source in named:
            for target in self.named.get(source.path, []):
                if self.absolute(target) in self.reserved:
                    option = self.reserved[self.absolute(target)]
                    raise CnnFiltersError(_reserved(source.path, target, option))
                first = self.owner.setdefault(self.absolute(target), source.path)
                if first != source.path:
                    raise CnnFiltersError(_both_write(first, source.path, target))
        self.identities = _identities(self.named)
        self.claims: _Claims | None = {} if inputs.arguments > 1 else None

    def plan(self, inputs: InputStream) -> Iterator[Planned]:
        for item in inputs.items():
            if isinstance(item, Found):
                yield from self._found(item)
            elif not item.expanded:
                targets = self.named.get(item.path)
                if targets is None and item.error is None:
                    targets = self._targets(item, self.settings.folder_for(item))
                yield Planned(item, targets or [])
            elif item.error is None:  # a found file on its own
                yield from self._found(Found(item.path.parent, item.root, Names([item.path.name])))
            else:
                yield Planned(item, [])  # a folder that cannot be read: its error

    def _targets(self, source: Source, folder: Path | None) -> list[Path]:
        files = output_targets(source.path, self.names, self.settings.destination, folder=folder)
        return [target for targets in files.values() for target in targets]

    def _found(self, found: Found) -> Iterator[Planned]:
        """A folder's files: those that are outputs of this run left out, the others
        planned one by one, as the run takes them."""
        if self.settings.destination.output is not None:  # -o: one input, its own file name
            for source in found.sources():
                targets = self._targets(source, self.settings.folder_for(source))
                taken = next((t for t in targets if self.absolute(t) in self.reserved), None)
                refused = None
                if taken is not None:
                    option = self.reserved[self.absolute(taken)]
                    refused = _refusal(source, _reserved(source.path, taken, option))
                yield Planned(source, targets, refused)
            return
        # Where the folder's outputs go (any file name stands for all of them).
        folder = self.settings.folder_for(Source(found.folder / "-", found.root)) or found.folder
        here, place = self.absolute(found.folder) + os.sep, self.absolute(folder) + os.sep
        if self.inside is not None and here.startswith(self.inside):
            return  # under --out-dir: this run's outputs
        local = _Folder(found, self._filenames, beside=here == place)
        claimed = _Claimed(self.claims, place)
        for index, name in enumerate(found.names):
            if local.excluded(index) or here + name in self.owner:
                continue  # an output of this run, not an input
            source = Source(found.folder / name, found.root)
            files = self._filenames(name)
            targets = [folder / file for file in files]
            clash = local.earlier_writer(index, files) or next(
                ((self.owner[place + file], file) for file in files if place + file in self.owner),
                None,
            )
            refused = None
            taken = next((file for file in files if place + file in self.reserved), None)
            if taken is not None:
                option = self.reserved[place + taken]
                refused = _refusal(source, _reserved(source.path, folder / taken, option))
            elif clash is not None:
                refused = _refusal(source, _both_write(clash[0], source.path, folder / clash[1]))
            elif claimed.taken(files, here + name):
                refused = _refusal(source, _claimed(source.path, claimed.clash))
            yield Planned(source, targets, refused)
        claimed.close()


class _Folder:
    """The outputs of one folder's files, as hashes: which file is another one's
    output, and which writes a file an earlier one writes. Each hash that matches
    is confirmed on the names themselves; 16 bytes an output and 2 an input.

    Which inputs can be either is found for the whole folder at once: an input
    none of whose outputs shares its hash with another output writes no file
    another writes, and one whose name hashes like no output is none (most
    inputs are neither: they are then planned without a search).
    """

    def __init__(
        self, found: Found, filenames: Callable[[str], list[str]], *, beside: bool
    ) -> None:
        self.found, self.filenames, self.beside = found, filenames, beside
        each = len(filenames("-"))  # outputs per input: the same for every input
        inputs = len(found.names)
        files = (file for name in found.names for file in filenames(name))
        keys = np.fromiter((hash(file) for file in files), dtype=np.int64, count=inputs * each)
        order = np.argsort(keys, kind="stable")
        self.hashes = keys[order]
        self.owners = (order // each).astype(np.int32)  # the input of each sorted hash
        same = self.hashes[1:] == self.hashes[:-1]
        self.sharing = np.zeros(inputs, dtype=bool)  # an output's hash is another's too
        self.sharing[self.owners[1:][same]] = True
        self.sharing[self.owners[:-1][same]] = True
        self.like_output = np.zeros(inputs, dtype=bool)  # its name hashes like an output
        if beside and len(self.hashes):
            names = np.fromiter((hash(name) for name in found.names), dtype=np.int64, count=inputs)
            at = np.minimum(np.searchsorted(self.hashes, names), len(self.hashes) - 1)
            self.like_output = self.hashes[at] == names

    def writers(self, file: str, *, but: int = -1) -> list[int]:
        """The files of this folder that write ``file`` (their numbers, in order), file
        number ``but`` left out."""
        key = hash(file)
        start = int(np.searchsorted(self.hashes, key))
        if start == len(self.hashes) or self.hashes[start] != key:
            return []
        stop = int(np.searchsorted(self.hashes, key, side="right"))
        names = self.found.names
        return [
            int(j) for j in self.owners[start:stop] if j != but and file in self.filenames(names[j])
        ]

    def excluded(self, index: int) -> bool:
        """Whether file ``index`` is an output of a file of this folder (its outputs go
        beside it)."""
        # Only where the outputs go beside the inputs can a name hash like an output.
        return bool(self.like_output[index]) and bool(self.writers(self.found.names[index]))

    def earlier_writer(self, index: int, files: list[str]) -> tuple[Path, str] | None:
        """An earlier input of this folder that writes one of ``files`` (input
        ``index``'s outputs), and that file."""
        if not self.sharing[index]:
            return None
        for file in files:
            for other in self.writers(file, but=index):
                if other < index and not self.excluded(other):
                    return self.found.folder / self.found.names[other], file
        return None


def _refusal(source: Source, message: str) -> InputReport:
    return InputReport(os.fsdecode(source.path), error=message, exit_code=EXIT_USAGE)


def _both_write(first: Path, second: Path, target: Path) -> str:
    return (
        f"{first} and {second} would both write {target}; "
        "use --name with {ext}, or separate --out-dir runs"
    )


def _reserved(source: Path, target: Path, option: str) -> str:
    return f"{source}: its output {target} is also the file of {option}; name another"


def _claimed(source: Path, target: Path) -> str:
    return (
        f"{source}: its output {target} is also the output of an input of another "
        "folder argument; use --name, or separate --out-dir runs"
    )


# The outputs that earlier folders claimed, by output folder: two sorted arrays of
# 64-bit hashes (each output's name, its input's path): 16 MB for a million inputs,
# kept only when a run has several folder arguments. One whose outputs another's
# already claimed (both mirrored into one --out-dir) is caught; the same input met
# again through two arguments is not a clash.
_Claims = dict[str, tuple[np.ndarray, np.ndarray]]


class _Claimed:
    """One folder's claims: checked against the earlier folders' as each input is
    planned, added to them when the folder is done."""

    def __init__(self, claims: _Claims | None, place: str) -> None:
        self.claims, self.place = claims, place
        self.earlier = None if claims is None else claims.get(place)
        self.names, self.owners = array("q"), array("q")
        self.clash: Path | None = None

    def taken(self, files: list[str], source: str) -> bool:
        """Whether an earlier folder claimed one of ``files`` for another input; else
        they are claimed."""
        if self.claims is None:
            return False
        owner = hash(source)
        if self.earlier is not None:
            known, known_owners = self.earlier
            keys = np.array([hash(file) for file in files], dtype=np.int64)
            at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
            hits = np.flatnonzero((known[at] == keys) & (known_owners[at] != owner))
            if hits.size:
                self.clash = Path(self.place + files[hits[0]])
                return True
        for file in files:
            self.names.append(hash(file))
            self.owners.append(owner)
        return False

    def close(self) -> None:
        if self.claims is None or not self.names:
            return
        names = np.frombuffer(self.names, dtype=np.int64)
        owners = np.frombuffer(self.owners, dtype=np.int64)
        if self.earlier is not None:
            names = np.concatenate([self.earlier[0], names])
            owners = np.concatenate([self.earlier[1], owners])
        order = np.argsort(names, kind="stable")
        self.claims[self.place] = (names[order], owners[order])


def _absolute_paths() -> Callable[[Path], str]:
    """``os.path.abspath`` with the working folder read once (abspath asks the
    kernel for it at every call: most of planning's time on 200,000 inputs)."""
    cwd = os.getcwd()

    def absolute(path: Path) -> str:
        return os.path.normpath(os.path.join(cwd, os.fspath(path)))

    return absolute


def _identities(paths: Iterable[Path]) -> dict[tuple[int, int], Path]:
    """Each existing input's file identity (device, inode): the same through any
    symlink or hard link."""
    found = {}
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue  # reported as a missing or unreadable input when its turn comes
        found.setdefault((info.st_dev, info.st_ino), path)
    return found


def _an_input_among(
    targets: Sequence[Path], inputs: dict[tuple[int, int], Path], source: Path
) -> tuple[Path, Path] | None:
    """The first target that is another of the run's inputs, with that input; or None.

    A target that is ``source`` itself is refused later, with its own message.
    """
    for target in targets:
        try:
            info = os.stat(target)
            if os.path.samefile(target, source):
                continue
        except OSError:
            continue
        other = inputs.get((info.st_dev, info.st_ino))
        if other is not None:
            return target, other
    return None
