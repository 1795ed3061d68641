"""The one loop over inputs: plan every output, run each input, gather one report.

Single files, folders, standard input, the demo and a Dask cluster all go
through :func:`run`: it plans every output once (two inputs writing one file
is an error before any work starts; an output that is another input of the
run is refused for that input), then runs one task per input, in this
process, in worker processes or on a cluster, streaming each finished input
to a callback, and returns the report in input order.
:func:`process_source` is one task: decode the input's frames, run the
:class:`~cnnfilters.commands.Command` on each, write its outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import heapq
import itertools
import math
import os
import signal
import sys
import threading
import time
import warnings
from array import array
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .clobber import check_targets
from .commands import Command
from .errors import (
    EXIT_CHECK_FAILED,
    EXIT_IO,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CnnFiltersError,
    OutputError,
    Terminated,
    stop_outcome,
)
from .images import LoadedImage, ReadOptions, load_frames
from .inflight import harvest, written_whole
from .inputs import Found, InputStream, Names, Source
from .outputs import (
    Destination,
    forget_temporary_files,
    make_folder,
    output_complete,
    output_namer,
    output_targets,
    remove_stale_temporary_files,
    remove_temporary_files,
    synced_once,
    verify_result,
    write_result,
)
from .report import Check, InputReport, RunReport, difference_maps
from .startup import tune_malloc

__all__ = ["Planned", "Settings", "Summary", "plan", "plan_outputs", "process_source", "run"]

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
    (see :func:`~cnnfilters.outputs.synced_once`); ``run_files`` the files the
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
        text = (f"{self.done} done, {self.skipped} skipped, {self.failed} failed in "
                f"{self.seconds:.1f} s ({rate:.1f} MP/s)")  # fmt: skip
        if self.not_done or self.not_counted:
            text += f"; {self.not_done_text} ({stop_outcome(self.terminated)[0]})"
        return text


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


def plan(
    command: Command, sources: Iterable[Source] | InputStream, settings: Settings
) -> dict[Path, list[Path]]:
    """:func:`plan_outputs` as a mapping from each input to its output files."""
    return {item.source.path: item.targets for item in plan_outputs(command, sources, settings)
            if item.refused is None}  # fmt: skip


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
        self.named = {source.path: self._targets(source, settings.folder_for(source))
                      for source in named if source.error is None}  # fmt: skip
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
            names = np.fromiter((hash(name) for name in found.names), dtype=np.int64,
                                count=inputs)  # fmt: skip
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
        return [int(j) for j in self.owners[start:stop]
                if j != but and file in self.filenames(names[j])]  # fmt: skip

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
    return (f"{first} and {second} would both write {target}; "
            "use --name with {ext}, or separate --out-dir runs")  # fmt: skip


def _reserved(source: Path, target: Path, option: str) -> str:
    return f"{source}: its output {target} is also the file of {option}; name another"


def _claimed(source: Path, target: Path) -> str:
    return (f"{source}: its output {target} is also the output of an input of another "
            "folder argument; use --name, or separate --out-dir runs")  # fmt: skip


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


def run(
    command: Command,
    sources: Iterable[Source] | InputStream,
    settings: Settings,
    *,
    on_input: Callable[[InputReport], None] | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    on_entries: Callable[[int, list[InputReport]], None] | None = None,
) -> tuple[RunReport, Summary]:
    """Run ``command`` on every source, in parallel when asked; keep going after failures.

    The inputs are planned as they come (:func:`plan_outputs`): a folder is
    read when the run gets there. ``on_input`` sees each input as it
    finishes (completion order); the report lists them in input order;
    ``on_entries`` gets each input's number (after planning) and entries,
    skipped ones too; ``on_progress`` the inputs finished and their total
    (None until every folder has been read). With ``fail_fast`` the inputs not
    yet started are cancelled after the first failure. Ctrl-C stops cleanly:
    finished outputs stay (they are written atomically), the summary counts
    what was not done.
    """
    started = time.perf_counter()
    report = RunReport(command.name, options=command.options())
    out_dir = settings.destination.out_dir
    if out_dir is not None:
        make_folder(out_dir)
    inputs = _as_inputs(sources)
    # How many inputs to expect, without reading a folder: the workers are started
    # before the first folder is listed, so that they share none of its memory.
    ahead = len(inputs.named) + (max(2, settings.jobs) if inputs.arguments else 0)
    planner = _Planner(command, settings, inputs)  # named files that clash: raised here
    recorder = _Recorder(on_input, on_progress, keep=settings.keep, on_entries=on_entries)
    pending = _Pending(planner, inputs, settings, recorder)
    threads = 1 if ahead > 1 else None
    if _run_pending(command, pending, settings, threads, recorder, ahead):
        remove_stale_temporary_files(pending.folders)  # a worker was killed: its writes are orphans
    if settings.sync_once and recorder.summary.done and not recorder.summary.interrupted:
        # The batch's files, written without an fsync each, reach the disk. Not after
        # Ctrl-C, which ends the run at once: the page cache keeps them all the same.
        os.sync()
    for index in sorted(recorder.results):
        report.inputs.extend(recorder.results[index])
    report.left_out, report.left_out_failed = recorder.left_out, recorder.left_out_failed
    report.left_out_files = recorder.left_out_files
    report.stopped = recorder.summary.stopped_dict()
    recorder.summary.seconds = time.perf_counter() - started
    return report, recorder.summary


class _Pending:
    """The inputs to run, as ``(number, source)``, planned as they are asked for; those
    refused before any work go straight to the recorder."""

    def __init__(
        self, planner: _Planner, inputs: InputStream, settings: Settings, recorder: _Recorder
    ) -> None:
        self.planned = planner.plan(inputs)
        self.identities = planner.identities  # the named inputs'
        self.settings, self.recorder = settings, recorder
        self.listed = 0  # inputs planned so far
        self.folders: set[Path] = set()  # output folders met so far
        self._items = self._pending()

    def __iter__(self) -> Iterator[tuple[int, Source]]:
        return self._items

    def _pending(self) -> Iterator[tuple[int, Source]]:
        recorder = self.recorder
        for source, targets, refused in self.planned:
            index = self.listed
            self.listed += 1
            self._new_folders(targets)
            if refused is None:
                refused = _refused(source, targets, self.identities, self.settings)
            if refused is None:
                yield index, source
            elif refused.skipped:
                recorder.skip(index, refused)
            else:
                recorder.record(index, [refused])
        recorder.total = self.listed
        recorder.progress()

    def _new_folders(self, targets: list[Path]) -> None:
        for target in targets:
            if target.parent not in self.folders:
                self.folders.add(target.parent)
                if self.settings.skip_existing:  # a rerun: clear what a killed run left
                    remove_stale_temporary_files([target.parent])

    def count_rest(self, seconds: float = 0.5) -> tuple[int, bool]:
        """The inputs not yet planned, counted for at most ``seconds`` (a stopped run
        ends at once, even on a million-file tree); whether the count is whole."""
        deadline = time.perf_counter() + seconds
        count = 0
        for _ in self.planned:
            count += 1
            if time.perf_counter() > deadline:
                return count, False
        return count, True

    def not_done(self) -> None:
        """Count what a stopped run leaves: planned but not finished, and the rest."""
        rest, whole = self.count_rest()
        summary = self.recorder.summary
        summary.not_done = self.listed - self.recorder.finished + rest
        summary.not_counted = not whole


class _Recorder:
    """Takes each input's entries as it finishes: keeps them (all, none, or the first
    ``keep`` failing and passing ones in input order), counts them, passes them on."""

    def __init__(
        self,
        on_input: Callable[[InputReport], None] | None,
        on_progress: Callable[[int, int | None], None] | None,
        *,
        keep: bool | int = True,
        on_entries: Callable[[int, list[InputReport]], None] | None = None,
    ) -> None:
        self.on_input, self.on_progress = on_input, on_progress
        self.on_entries = on_entries
        self.limit = None if keep is True else int(keep)  # None: every entry
        self.results: dict[int, list[InputReport]] = {}
        self.kept: dict[bool, list[int]] = {True: [], False: []}  # heaps of -index, by passed
        self.left_out = self.left_out_failed = self.left_out_files = 0
        self.summary = Summary()
        self.finished = 0
        self.total: int | None = None  # known once every folder has been read

    def progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.finished, self.total)

    def _keep(self, index: int, items: list[InputReport]) -> None:
        if self.limit is None:
            self.results[index] = items
            return
        passed = all(item.passed for item in items)
        heap = self.kept[passed]
        if self.limit and len(heap) < self.limit:
            heapq.heappush(heap, -index)
            self.results[index] = items
            return
        if self.limit and -heap[0] > index:  # an earlier input: it takes the last one's place
            dropped = -heapq.heapreplace(heap, -index)
            self.results[index] = items
            items = self.results.pop(dropped)
        self.left_out += len(items)
        self.left_out_failed += sum(1 for item in items if not item.passed)
        self.left_out_files += sum(len(item.outputs) for item in items)

    def skip(self, index: int, item: InputReport) -> None:
        """An input skipped before any work (counted, not announced)."""
        self._keep(index, [item])
        if self.on_entries is not None:
            self.on_entries(index, [item])
        self.summary.skipped += 1
        self.finished += 1

    def record(self, index: int, items: list[InputReport]) -> bool:
        """A finished input; whether it failed."""
        self._keep(index, items)
        self.finished += 1
        failed = False
        for item in items:
            if item.error:
                self.summary.worst_error = max(self.summary.worst_error, item.exit_code)
            elif not item.passed:
                self.summary.check_failed = True
            if item.error or not item.passed:
                self.summary.failed += 1
                failed = True
            else:
                self.summary.done += 1
            self.summary.megapixels += item.info.get("height", 0) * item.info.get("width", 0) / 1e6
            if self.on_input is not None:
                self.on_input(item)
        if self.on_entries is not None:
            self.on_entries(index, items)
        self.progress()
        return failed


def _refused(
    source: Source, targets: list[Path], inputs: dict[tuple[int, int], Path], settings: Settings
) -> InputReport | None:
    """An input not to run: one of its outputs is a named input, or (``skip_existing``)
    all of them exist."""
    clobbered = _an_input_among(targets, inputs, source.path) if inputs else None
    if clobbered is not None:
        target, other = clobbered
        same = "" if os.fspath(other) == os.fspath(target) else f" (the file {other})"
        message = (f"{source.path}: its output {target} is an input of this run{same}; "
                   "an input is never overwritten")  # fmt: skip
        return InputReport(os.fsdecode(source.path), error=message, exit_code=EXIT_IO)
    try:
        done = settings.skip_existing and targets and all(output_complete(t) for t in targets)
    except OutputError as exc:
        name = os.fsdecode(source.path)
        return InputReport(name, error=f"{name}: {exc}", exit_code=EXIT_IO)
    if done:
        item = InputReport(os.fsdecode(source.path), skipped=True)
        item.notices.append("skipped: every output exists (--skip-existing)")
        return item
    return None


def _run_pending(
    command: Command,
    pending: _Pending,
    settings: Settings,
    threads: int | None,
    recorder: _Recorder,
    ahead: int,
) -> bool:
    """Run the tasks here, or on the executor ``settings`` asks for (``ahead``: how many
    inputs may come, at least); whether a worker died
    (killed from outside: its temporary files are left for the caller)."""
    executor = _executor(settings, ahead)
    if executor is None:
        tune_malloc()  # this process decodes and encodes: see the workers' start
        _run_here(command, pending, settings, threads, recorder)
        return False
    pool = _Pool(executor, settings, ahead)
    started_ns = time.time_ns()
    try:
        _run_on(pool, command, pending, settings, threads, recorder)
    finally:
        _close(pool.executor)
    # The workers are gone: what they wrote of the chunks they never reported is final.
    for index, source in pool.unreported:
        item = written_whole(source, command.outputs(), settings, started_ns)
        if item is not None:
            recorder.record(index, [item])
            recorder.summary.not_done -= 1
    return pool.died


def _run_here(
    command: Command,
    pending: _Pending,
    settings: Settings,
    threads: int | None,
    recorder: _Recorder,
) -> None:
    """The tasks in this process, in chunks as a worker takes them (done a step at a
    time, :func:`_in_steps`), each input recorded as it finishes. With
    ``--fail-fast``, one input at a time: none starts after a failure."""
    chunks = _Chunks(iter(pending), most=1 if settings.fail_fast else _CHUNK_MAX)
    for chunk in chunks:
        failed = False

        def finished(position: int, items: list[InputReport], chunk: list = chunk) -> None:
            nonlocal failed
            failed = recorder.record(chunk[position][0], items) or failed

        try:
            seconds, _ = process_sources(command, [source for _, source in chunk], settings,
                                         threads, finished)  # fmt: skip
        except (KeyboardInterrupt, Terminated) as exc:
            recorder.summary.stopped(exc)
            pending.not_done()
            return
        chunks.took(seconds, len(chunk))
        if failed and settings.fail_fast:
            pending.not_done()
            return


class _Pool:
    """The run's executor, made anew when one of its worker processes dies (killed
    from outside: the kernel's out-of-memory killer, a user's ``kill``). A process
    pool that has lost a worker fails every task in it; the inputs it was running
    are run again, one at a time, and the rest of the batch goes on."""

    def __init__(self, executor: Executor, settings: Settings, ahead: int) -> None:
        self.executor = executor
        self.settings, self.ahead = settings, ahead
        self.died = False  # a worker died (its temporary files may be left)
        self.unreported: list[tuple[int, Source]] = []  # a stopped run's inputs in flight
        self.held: list[list[tuple[int, Source]]] = []  # chunks a broken pool refused
        self._processes: dict[int, Any] = {}  # the pool's own (it adds what it starts)

    def start(self) -> None:
        """Fork the workers (a process pool's), with the signals blocked, so that none of
        them meets Ctrl-C before its own handler is in place (it unblocks them then);
        a signal meanwhile is delivered right after."""
        if _is_process_pool(self.executor):
            with _signals_blocked():
                self.executor.submit(int)
            self._processes = getattr(self.executor, "_processes", None) or {}

    @property
    def broken(self) -> bool:
        return bool(getattr(self.executor, "_broken", False))

    def restart(self) -> str:
        """A new pool for a broken one; what ended the worker that died."""
        self.died = True
        _close(self.executor)
        cause = _death_of(self._processes.values())
        executor = _executor(self.settings, self.ahead)
        assert executor is not None  # a pool has more than one worker
        self.executor = executor
        self.start()
        return cause


def _death_of(processes: Iterable[Any]) -> str:
    """What ended the worker of a broken pool that died first, from the exit codes
    (the pool ends its other workers with SIGTERM)."""
    codes = [p.exitcode for p in processes if p.exitcode not in (None, 0, EXIT_TERMINATED)]
    codes = [code for code in codes if code != -signal.SIGTERM] or codes
    died = "the worker process running it"
    if not codes:
        return f"{died} died"
    code = codes[0]
    if code == -signal.SIGKILL:
        return f"{died} was killed by SIGKILL (as the kernel does when memory runs out)"
    if code < 0:
        try:
            return f"{died} was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"{died} was killed by signal {-code}"
    return f"{died} exited with code {code}"


def _run_on(
    pool: _Pool,
    command: Command,
    pending: _Pending,
    settings: Settings,
    threads: int | None,
    recorder: _Recorder,
) -> None:
    """The tasks on a pool of workers, in chunks of inputs (one round trip for several
    small files), a bounded window of chunks in flight (so that memory does not grow
    with the number of inputs)."""
    futures: dict[Future, list[tuple[int, Source]]] = {}
    chunks = _Chunks(iter(pending))
    deferred = _SignalsDeferred()
    try:
        with deferred:
            _run_chunks(pool, _Tasks(command, settings, threads), chunks, futures, recorder,
                        deferred)  # fmt: skip
        deferred.deliver()  # to the handler in place before: KeyboardInterrupt, Terminated, ...
    except (KeyboardInterrupt, Terminated) as exc:
        recorder.summary.stopped(exc)
        harvest(futures, chunks.outcomes, recorder.record)  # finished before the stop
        _stop(pool.executor, futures)
        pool.unreported = [pair for chunk in futures.values() for pair in chunk]
    except BaseException:
        _stop(pool.executor, futures)
        raise
    if futures or recorder.summary.interrupted or chunks.left or pool.held:
        pending.not_done()


class _Tasks(NamedTuple):
    """What every task of a run is given besides its inputs."""

    command: Command
    settings: Settings
    threads: int | None

    def submit(self, executor: Executor, chunk: list[tuple[int, Source]]) -> Future:
        sources = [source for _, source in chunk]
        return executor.submit(process_sources, self.command, sources, self.settings,
                               self.threads)  # fmt: skip

    def again(self) -> _Tasks:
        """The tasks of inputs run a second time: they replace what their dead worker
        wrote (the outputs of an input are not there when it is planned, or are
        replaced anyway with --force or --skip-existing; an input is never replaced)."""
        destination = dataclasses.replace(self.settings.destination, force=True)
        return self._replace(settings=dataclasses.replace(self.settings, destination=destination))


def _run_chunks(
    pool: _Pool,
    tasks: _Tasks,
    chunks: _Chunks,
    futures: dict[Future, list[tuple[int, Source]]],
    recorder: _Recorder,
    deferred: _SignalsDeferred,
) -> None:
    """:func:`_run_on`'s loop, until the inputs are done, ``--fail-fast`` stops it or
    a signal is noted."""
    window = max(1, tasks.settings.jobs) * _WINDOW_PER_JOB
    fail_fast = tasks.settings.fail_fast
    retries = _Retries()
    pool.start()
    if not _is_process_pool(pool.executor):
        with _signals_blocked():  # a cluster's first task: no process of ours is forked
            _submit(pool, tasks, chunks, futures, 1)
    stop = False
    while not stop and deferred.signum is None:
        for index, source in _replenish(pool, tasks, chunks, futures, retries, window):
            failed = recorder.record(index, _failed(source, retries.cause))
            stop = stop or (failed and fail_fast)
        if not futures:
            break
        until = ALL_COMPLETED if pool.broken else FIRST_COMPLETED  # a broken pool fails them all
        ready, _ = wait(futures, timeout=_SIGNAL_POLL, return_when=until)
        if deferred.signum is not None:
            break  # what is ready may be the work of workers the same Ctrl-C ended
        for future in ready:
            if _died(future):
                continue  # its inputs run again once the pool is made anew
            chunk = futures.pop(future)
            outcomes = retries.noted(future, chunks.outcomes(future, chunk))
            for (index, _), items in zip(chunk, outcomes, strict=True):
                failed = recorder.record(index, items)
                stop = stop or (failed and fail_fast)
    if stop:
        for other in futures:
            other.cancel()


def _replenish(
    pool: _Pool,
    tasks: _Tasks,
    chunks: _Chunks,
    futures: dict[Future, list[tuple[int, Source]]],
    retries: _Retries,
    window: int,
) -> list[tuple[int, Source]]:
    """Make the pool anew once a worker has died and its tasks have failed, and submit
    more work; the inputs to report as failed (each killed its worker alone)."""
    failed = []
    if pool.broken and all(future.done() for future in futures):
        failed = retries.after_death(futures, pool.restart())
    if not pool.broken:
        if retries.waiting:
            retries.submit_next(pool, tasks, futures)
        else:
            _submit(pool, tasks, chunks, futures, window - len(futures))
    return failed


class _Retries:
    """The inputs of the tasks in flight when a worker died.

    A process pool that loses a worker fails every task in it. Any of their
    inputs may be what killed it (an image too large for the memory left), so
    each runs again on the new pool alone, nothing else in flight: one that kills
    its worker a second time is the only input to fail, and the batch goes on.
    """

    def __init__(self) -> None:
        self.waiting: deque[tuple[int, Source]] = deque()
        self.alone: Future | None = None  # the one running now
        self.cause = ""  # what ended the last worker that died

    def after_death(
        self, futures: dict[Future, list[tuple[int, Source]]], cause: str
    ) -> list[tuple[int, Source]]:
        """Take the failed tasks out of ``futures`` (those done before the death stay);
        the inputs that failed alone, to report as failed."""
        self.cause = cause
        failed = []
        for future, chunk in list(futures.items()):
            if _died(future):
                del futures[future]
                if future is self.alone:
                    failed.extend(chunk)
                else:
                    self.waiting.extend(chunk)
        self.alone = None
        return failed

    def submit_next(
        self, pool: _Pool, tasks: _Tasks, futures: dict[Future, list[tuple[int, Source]]]
    ) -> None:
        """Run the next input again, once nothing else is in flight."""
        if not futures:
            chunk = [self.waiting.popleft()]
            self.alone = tasks.again().submit(pool.executor, chunk)
            futures[self.alone] = chunk

    def noted(self, future: Future, outcomes: list[list[InputReport]]) -> list[list[InputReport]]:
        """``outcomes``, with a notice on an input that ran a second time."""
        if future is self.alone:
            self.alone = None
            for item in outcomes[0]:
                item.notices.append(f"run a second time: {self.cause}")
        return outcomes


# Chunks in flight per worker: enough to keep every worker busy, few enough to bound memory.
_WINDOW_PER_JOB = 8
# Inputs a task takes at most: one round trip with the worker for several small files.
_CHUNK_MAX = 64
# A chunk's aim in seconds of work: long enough to make a round trip's cost small,
# short enough to share the last inputs between the workers.
_CHUNK_SECONDS = 0.05


class _Chunks:
    """The pending inputs cut into chunks whose size follows the measured time an
    input takes: one at a time to start with (16 photos go to both workers), up to
    :data:`_CHUNK_MAX` for small files."""

    def __init__(self, pending: Iterator[tuple[int, Source]], most: int = _CHUNK_MAX) -> None:
        self.pending = pending
        self.size, self.most = 1, most
        self.left = True  # inputs may be left (the pending inputs are not exhausted)

    def __iter__(self) -> Iterator[list[tuple[int, Source]]]:
        return self

    def __next__(self) -> list[tuple[int, Source]]:
        chunk = list(itertools.islice(self.pending, self.size))
        if not chunk:
            self.left = False
            raise StopIteration
        return chunk

    def outcomes(self, future: Future, chunk: list[tuple[int, Source]]) -> list[list[InputReport]]:
        """Each input's entries from a finished chunk (and the chunk's time, to size the
        next ones), or each input's error if it failed."""
        try:
            seconds, results = future.result()
        except Exception as exc:  # a worker that died, a lost cluster node
            return [_failed(source, exc) for _, source in chunk]
        self.took(seconds, len(chunk))
        return results

    def took(self, seconds: float, inputs: int) -> None:
        """Size the next chunks from the seconds the last one's ``inputs`` took."""
        each = seconds / max(1, inputs)
        self.size = max(1, min(self.most, int(_CHUNK_SECONDS / max(each, 1e-6))))


def _failed(source: Source, exc: Exception | str) -> list[InputReport]:
    """An input's error entry: its task's exception, or what ended its worker."""
    name = os.fsdecode(source.path)
    if isinstance(exc, str):
        return [InputReport(name, error=f"{source.path}: {exc}", exit_code=EXIT_IO)]
    if isinstance(exc, CnnFiltersError):
        return [InputReport(name, error=str(exc), exit_code=exc.exit_code)]
    message = f"{source.path}: the worker failed ({type(exc).__name__}: {exc})"
    return [InputReport(name, error=message, exit_code=EXIT_IO)]


def _submit(
    pool: _Pool,
    tasks: _Tasks,
    chunks: Iterator[list[tuple[int, Source]]],
    futures: dict[Future, list[tuple[int, Source]]],
    count: int,
) -> None:
    """Submit up to ``count`` more of the waiting chunks, first those a broken pool
    refused; a chunk the pool refuses is held, in its turn, for the next pool.

    The held chunks not submitted this time stay held: none is dropped, and the
    chunks not yet cut stay uncut (a refusal does not pull in every input left).
    """
    for _ in range(max(0, count)):
        chunk = pool.held.pop(0) if pool.held else next(chunks, None)
        if chunk is None:
            return
        try:
            futures[tasks.submit(pool.executor, chunk)] = chunk
        except Exception as exc:
            if not _broken_pool(exc):
                raise
            pool.held.insert(0, chunk)
            return


def process_sources(
    command: Command,
    sources: list[Source],
    settings: Settings,
    threads: int | None = None,
    finished: Callable[[int, list[InputReport]], None] | None = None,
) -> tuple[float, list[list[InputReport]]]:
    """One task: each of a chunk of inputs (:func:`_in_steps`, which tells ``finished``
    of each as it is done), and the seconds it took."""
    started = time.perf_counter()
    with difference_maps(settings.maps), synced_once(settings.sync_once):
        results = _in_steps(command, sources, settings, threads, finished)
    return time.perf_counter() - started, results


def _died(future: Future) -> bool:
    """Whether ``future`` failed because a worker of its pool died."""
    if not future.done() or future.cancelled():
        return False
    return _broken_pool(future.exception())


def _is_process_pool(executor: Executor) -> bool:
    """Whether ``executor`` is a process pool. Its module (and multiprocessing with it,
    4 ms) is imported only by a run that starts one: until then none is."""
    process = sys.modules.get("concurrent.futures.process")
    return process is not None and isinstance(executor, process.ProcessPoolExecutor)


def _broken_pool(error: BaseException | None) -> bool:
    """Whether ``error`` says a process pool lost a worker (``BrokenProcessPool``; as
    :func:`_is_process_pool`, never before a pool was started)."""
    process = sys.modules.get("concurrent.futures.process")
    return process is not None and isinstance(error, process.BrokenProcessPool)


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


# ------------------------------------------------------------- one task


def process_source(
    command: Command, source: Source, settings: Settings, threads: int | None = None
) -> list[InputReport]:
    """One task: one input (each of its frames), in whichever process or worker runs it.

    ``threads`` bounds the threads that encode one input's images (None: one
    per core; a batch worker uses one, the processes being parallel).
    """
    with difference_maps(settings.maps), synced_once(settings.sync_once):
        return _in_steps(command, [source], settings, threads)[0]


# The decoded images a chunk's inputs may hold at once between their steps.
_STEP_BYTES = 32 << 20


def _in_steps(
    command: Command,
    sources: Sequence[Source],
    settings: Settings,
    threads: int | None,
    finished: Callable[[int, list[InputReport]], None] | None = None,
) -> list[list[InputReport]]:
    """Each input's work (:func:`_steps`), one step at a time over a group of inputs:
    every input of the group decoded, then each one's command, then (in a batch)
    the work their checks share (:meth:`Command.together`) and each one's
    remaining checks, then each one's outputs written.

    The code and data of one step for up to 64 small images in a row stay in
    the processor's caches, where one image's every step and then the next
    image's did not: a batch of 32 x 32 PNGs took 25 % less CPU so. A group
    closes once its decoded images hold :data:`_STEP_BYTES` (large inputs go
    one by one). ``finished`` is told of each input (its position and
    entries) as it is done.
    """
    results: list[list[InputReport]] = [[] for _ in sources]
    done = _Done(results, finished)
    tasks = iter(enumerate(sources))
    made: set[Path] = set()  # output folders made (or found) for this chunk's inputs
    for group in _groups(command, tasks, settings, threads, done, made):
        try:
            ran = [(i, steps, done.step(steps, i)) for i, steps in group]  # the command
            group = [(i, steps) for i, steps, step in ran if step is not None]
            if threads == 1:  # a batch: the checks come next, for all of the group
                _together(command, [step for _, _, step in ran if isinstance(step, _Ran)])
            for _ in range(2):  # the checks; the writing
                group = [(i, steps) for i, steps in group if done.step(steps, i) is not None]
        finally:
            for _, steps in group:
                steps.close()  # a step stopped by Ctrl-C: the other images are let go
    return results


def _together(command: Command, runs: list[_Ran]) -> None:
    """The work the checks of ``runs`` share, done at once (:meth:`Command.together`).

    Should it fail, each input does its own work in its own step, and meets
    its own error there.
    """
    if len(runs) > 1:
        with contextlib.suppress(Exception):
            command.together([run.result for run in runs])


def _groups(
    command: Command,
    tasks: Iterator[tuple[int, Source]],
    settings: Settings,
    threads: int | None,
    done: _Done,
    made: set[Path],
) -> Iterator[list[tuple[int, _Steps]]]:
    """Groups of inputs whose first step (the decode) is done, each group's images
    holding up to :data:`_STEP_BYTES` (an input that failed its first step is done)."""
    while True:
        group, held = [], 0
        try:
            for index, source in tasks:
                steps = _steps(command, source, settings, threads, made)
                size = done.step(steps, index)
                if size is not None:
                    group.append((index, steps))
                    held += size
                if held >= _STEP_BYTES:
                    break
        except BaseException:
            for _, steps in group:
                steps.close()
            raise
        if not group:
            return
        yield group


class _Done:
    """Where the inputs of :func:`_in_steps` put their entries once done."""

    def __init__(self, results: list[list[InputReport]],
                 finished: Callable[[int, list[InputReport]], None] | None) -> None:  # fmt: skip
        self.results, self.finished = results, finished

    def step(self, steps: _Steps, index: int) -> int | _Ran | None:
        """Do input ``index``'s next step: what it yields, or None once it is done."""
        try:
            return next(steps)
        except StopIteration as end:
            self.results[index] = end.value
            if self.finished is not None:
                self.finished(index, end.value)
            return None


def _steps(
    command: Command,
    source: Source,
    settings: Settings,
    threads: int | None,
    made: set[Path],
) -> _Steps:
    """One input's work, in steps: decode its frames (then yield the bytes they hold);
    run the command (then yield the run, :class:`_Ran`); in a batch (``threads
    == 1``), run the checks it left for later (then yield); write the outputs.
    Returns the input's entries: any error is its own, never another input's.
    A file with several frames runs and writes each frame before the next,
    with no yield between (their results are never all held at once). An
    output folder already in ``made`` is not made again (the inputs of a chunk
    mostly share one)."""
    name = os.fsdecode(source.path)
    if source.error is not None:
        return [InputReport(name, error=source.error, exit_code=EXIT_IO)]
    if source.empty_folder:
        message = f"{source.path}: is a directory with no image files (-r looks in subfolders)"
        return [InputReport(name, error=message, exit_code=EXIT_IO)]
    items: list[InputReport] = []
    folder = settings.folder_for(source)
    try:
        if folder is not None and settings.destination.out_dir is not None and folder not in made:
            make_folder(folder)
            made.add(folder)
        rows_once = command.rows_once and not settings.destination.raw
        frames = load_frames(source.path, settings.read, parallel=threads != 1,
                             rows_once=rows_once)  # fmt: skip
        try:
            yield sum(_held_bytes(image) for image in frames)
            single = len(frames) == 1
            for image in frames:
                item = InputReport(name if single else f"{name}[frame {image.frame}]")
                items.append(item)
                _describe(item, image)
                command.check_output_size(image, settings.read.max_pixels)
                ran = _Ran(command, image, item)
                if single:
                    yield ran
                if threads == 1:  # a batch: nothing to overlap the checks with
                    ran.check()
                if single:
                    yield 0
                ran.write(settings, folder, None if single else image.frame, threads)
        finally:
            for image in frames:
                image.close()
    except CnnFiltersError as exc:
        _record_error(items, name, str(exc), max(exc.exit_code, EXIT_IO))
    except MemoryError:
        _record_error(items, name, f"{name}: not enough memory to process this image", EXIT_IO)
    except OSError as exc:  # a file system's refusal that no check above foresaw
        where = exc.filename if exc.filename is not None else name
        _record_error(items, name, f"{os.fsdecode(where)}: {exc.strerror or exc}", EXIT_IO)
    return items


def _held_bytes(image: LoadedImage) -> int:
    """The bytes of an image's decoded pixels (of the whole image, for one decoded
    as its rows are read)."""
    pixels = image.pixels
    itemsize = pixels.dtype.itemsize if isinstance(pixels, np.ndarray) else 1
    return math.prod(pixels.shape) * itemsize


def _describe(item: InputReport, image: LoadedImage) -> None:
    item.notices.extend(image.notices)
    item.info.update(mode=image.mode, format=image.format, bit_depth=image.bit_depth,
                     kind=image.kind, height=image.size[0], width=image.size[1])  # fmt: skip
    if image.damage is not None:
        item.info["damaged"] = image.damage


class _Ran:
    """A command run on one decoded image, its outputs still to be written."""

    def __init__(self, command: Command, image: LoadedImage, item: InputReport) -> None:
        """Run ``command`` on ``image``; its notices and facts go into ``item``."""
        self.image, self.item = image, item
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.result = command.run(image)
        self.warnings = [f"warning: {w.message}" for w in caught]
        item.notices.extend(self.result.notices)
        self.noted = len(self.result.notices)
        item.info.update(self.result.info)
        self.checks: list[Check] = []
        self.checked: list[str] = []

    def check(self) -> None:
        """Run the checks left for later now, instead of while the outputs are written:
        they compute what the outputs hold."""
        self.checks, self.checked = verify_result(self.result)

    def write(self, settings: Settings, folder: Path | None, frame: int | None,
              threads: int | None) -> None:  # fmt: skip
        """Write the outputs into ``item``: files, checks and notices."""
        result, image, item = self.result, self.image, self.item
        destination = settings.destination
        targets = output_targets(image.path, list(result.outputs), destination, folder=folder,
                                 frame=frame)  # fmt: skip
        # --skip-existing reruns an input that has only some of its outputs (an
        # interrupted run): those are replaced, the rest written.
        replace = destination.force or settings.skip_existing
        check_targets(targets, image.path, force=replace)
        written = write_result(result, image, targets, compress_level=destination.compress_level,
                               threads=threads, replace=replace)  # fmt: skip
        item.outputs.extend(written.files)
        item.checks.extend(written.checks)
        item.checks.extend(self.checks)
        # A command that computes while its outputs are written (or checked) adds its
        # notices (values clipped, ...) on the way.
        item.notices.extend(result.notices[self.noted :])
        if written.error is not None:
            raise written.error
        item.notices.extend(self.warnings)
        item.notices.extend(self.checked)
        item.notices.extend(written.notices)


# One input's steps (_steps): they yield the bytes decoded, then the command's run
# (a single frame's), then 0; they return the input's entries.
_Steps = Generator["int | _Ran", None, list[InputReport]]


def _record_error(items: list[InputReport], name: str, message: str, code: int) -> None:
    """Put the error on the entry being processed (a new one if none was started)."""
    if not items or items[-1].error is not None:
        items.append(InputReport(name))
    item = items[-1]
    item.error = message if message.startswith(name) else f"{name}: {message}"
    item.exit_code = code


# ------------------------------------------------------------- executors


def _executor(settings: Settings, tasks: int) -> Executor | None:
    if settings.scheduler:
        return _dask_executor(settings.scheduler)
    jobs = min(settings.jobs, tasks)
    if jobs <= 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    for name, value in _SINGLE_THREAD_ENV.items():
        os.environ.setdefault(name, value)
    # fork starts workers at once, with everything imported; it is safe while
    # this process runs no other thread. Otherwise forkserver starts them clean.
    start = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "forkserver"
    parent = os.getpid() if start == "fork" else None
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(start),
                                   initializer=_worker_start, initargs=(parent,))  # fmt: skip
    if start == "fork" and not gc.get_freeze_count():
        # Everything imported so far is shared with the workers: frozen, it is
        # neither walked by their garbage collections nor copied page by page
        # (the recipe of gc.freeze's documentation). Unfrozen at shutdown.
        gc.freeze()
        executor._cnnfilters_unfreeze = True  # type: ignore[attr-defined]
    return executor


def _dask_executor(scheduler: str) -> Executor:
    try:
        from distributed import Client
    except ImportError:
        raise CnnFiltersError(
            "a scheduler needs Dask's distributed package: pip install 'cnnfilters[dask]'"
        ) from None
    try:
        client = Client(scheduler, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise CnnFiltersError(f"cannot reach the scheduler {scheduler} ({exc})") from None
    executor = client.get_executor(pure=False)
    executor._cnnfilters_client = client  # closed with the executor
    return executor


def _stop(executor: Executor, futures: Iterable[Future]) -> None:
    """An interrupted run: cancel what has not started and end the workers now.

    Each worker gets SIGTERM: an idle one exits at once, a busy one unwinds its
    task (its atomic writes remove their temporary files) and exits, so the
    run ends within a second instead of finishing the tasks under way.
    """
    _quiet_manager_thread()
    # Tell multiprocessing the process is cleaning up, which it now is: the
    # queue's feeder thread then takes the pipes closing under it quietly
    # (else it may print "OSError: Bad file descriptor"), and its exit hook
    # leaves the workers, which _close joins or kills, alone.
    from multiprocessing import util

    util._exiting = True
    for future in futures:
        future.cancel()
    processes = getattr(executor, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.terminate()
    executor._cnnfilters_stopped = True  # type: ignore[attr-defined]


def _quiet_manager_thread() -> None:
    """Silence the process pool's manager thread once the pool is being stopped.

    When workers are ended on purpose, CPython 3.11's manager thread may trip
    over the futures just cancelled (``InvalidStateError`` in
    ``terminate_broken``) and print a traceback; that thread's news is no
    longer of interest. Other threads' exceptions still print.
    """
    from concurrent.futures import process

    manager = getattr(process, "_ExecutorManagerThread", None)
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if manager is None or not isinstance(args.thread, manager):
            previous(args)

    threading.excepthook = hook


def _close(executor: Executor) -> None:
    """Shut the executor down; after an interruption, without waiting on tasks, and
    deaf to further signals (a second Ctrl-C or SIGTERM must not leave workers behind)."""
    with _signals_held():
        client = getattr(executor, "_cnnfilters_client", None)
        if client is not None:
            client.close()
        elif getattr(executor, "_cnnfilters_stopped", False):
            processes = list((getattr(executor, "_processes", None) or {}).values())
            manager = getattr(executor, "_executor_manager_thread", None)
            executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.join(timeout=1.0)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=1.0)
            _forget_manager(manager)
        else:
            executor.shutdown(wait=True, cancel_futures=True)
        if getattr(executor, "_cnnfilters_unfreeze", False):
            gc.unfreeze()


def _forget_manager(manager: threading.Thread | None) -> None:
    """Let a stopped pool's manager thread end before the interpreter's exit hook runs.

    CPython 3.11's hook wakes each pool's manager thread through a pipe that the
    thread closes as it ends, with no lock between the two: an exit while it is
    ending may print "OSError: Bad file descriptor" after the run's last line. The
    thread ends soon once its workers are gone; should it not, the hook is told to
    leave it alone (it is not waited for either way: the process is ending).
    """
    if manager is None:
        return
    manager.join(timeout=2.0)
    if manager.is_alive():
        from concurrent.futures import process

        process._threads_wakeups.pop(manager, None)


_STOPPING_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# How often, in seconds, the loop over a pool's results looks for a noted signal.
_SIGNAL_POLL = 0.1


class _SignalsDeferred:
    """SIGINT and SIGTERM noted, not raised, for the duration (main thread only;
    a signal that was ignored stays ignored); :meth:`deliver` then raises the
    first one noted through the handler that was in place before.

    ``concurrent.futures.wait`` takes the lock of each future in a loop: an
    exception raised by a signal handler between two of them leaves the first
    locks held, and the pool's manager thread, cancelling those futures, then
    waits for them for ever (a Ctrl-C that hangs the run at its exit).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalsDeferred:
        if threading.current_thread() is threading.main_thread():
            for sig in _STOPPING_SIGNALS:
                handler = signal.getsignal(sig)
                if handler not in (signal.SIG_IGN, None):
                    self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def deliver(self) -> None:
        if self.signum is not None:
            signal.raise_signal(self.signum)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold SIGINT and SIGTERM pending for the duration (inherited by forked children)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for the duration (main thread only; elsewhere nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOPPING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker_start(parent: int | None = None) -> None:
    """Set up a worker process: it dies with its parent; SIGTERM or SIGINT end it cleanly.

    On Linux the kernel sends SIGTERM to the worker when the parent dies, even
    by SIGKILL (``PR_SET_PDEATHSIG``), so no orphan goes on writing. A worker
    that gets SIGTERM or SIGINT removes the temporary files of its writes under
    way and exits at once.
    """
    # The parent's temporary files (its report under way) are not this worker's.
    forget_temporary_files()
    # Ctrl-C reaches the whole group: the parent reports it; workers just stop.
    signal.signal(signal.SIGTERM, _on_worker_signal)
    signal.signal(signal.SIGINT, _on_worker_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING_SIGNALS)  # blocked by the fork
    # The pid that forked us (None from a fork server, which dies with the run):
    # read before the fork, so that a parent killed before this line is seen.
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        import ctypes

        # Without prctl (another libc), workers may outlive a parent killed by SIGKILL.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(EXIT_TERMINATED)
    # Only the processes that decode and encode keep their freed strips for reuse: the
    # parent of a pool returns what listing a folder took.
    tune_malloc()
    _one_blas_thread()


def _one_blas_thread() -> None:
    """Keep a worker's matrix products (the engine's 1x1 convolutions) to its own core.

    A forked worker inherits OpenBLAS's setting from the parent's import, a
    thread per core, fixed before the run could set ``OPENBLAS_NUM_THREADS``;
    with N workers on N cores their products would compete for the cores.
    (The threads themselves sleep when idle: see
    :func:`cnnfilters.startup.calm_blas_threads`.)
    """
    from threadpoolctl import threadpool_limits  # 3-5 ms: only where a pool is started

    threadpool_limits(limits=1, user_api="blas")


def _on_worker_signal(signum: int, frame: Any) -> None:
    """End a worker at once, removing the temporary files of the writes under way.

    No exception is raised into the task: one raised inside a finalizer or an
    import would be printed and swallowed, and the task would go on.
    """
    remove_temporary_files()
    os._exit(EXIT_TERMINATED)
