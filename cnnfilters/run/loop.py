"""The main loop: plan the inputs, run them here or on a pool, record each as it
finishes, and make the report."""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..atomic import remove_stale_temporary_files
from ..commands import Command
from ..errors import (
    EXIT_IO,
    OutputError,
    Terminated,
)
from ..inflight import written_whole
from ..inputs import InputStream, Source
from ..outputs import make_folder, output_complete
from ..report import InputReport, RunReport
from ..startup import tune_malloc
from .planning import _an_input_among, _as_inputs, _Planner
from .pool import _CHUNK_MAX, _Chunks, _close, _executor, _Pool, _run_on
from .settings import Settings, Summary
from .steps import process_sources


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
        message = (
            f"{source.path}: its output {target} is an input of this run{same}; "
            "an input is never overwritten"
        )
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
            seconds, _ = process_sources(
                command, [source for _, source in chunk], settings, threads, finished
            )
        except (KeyboardInterrupt, Terminated) as exc:
            recorder.summary.stopped(exc)
            pending.not_done()
            return
        chunks.took(seconds, len(chunk))
        if failed and settings.fail_fast:
            pending.not_done()
            return
