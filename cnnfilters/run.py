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
import gc
import itertools
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .commands import Command
from .errors import EXIT_CHECK_FAILED, EXIT_IO, EXIT_TERMINATED, CnnFiltersError, OutputError
from .images import LoadedImage, ReadOptions, load_frames
from .inputs import Source
from .outputs import (
    Destination,
    check_targets,
    make_folder,
    output_complete,
    output_targets,
    remove_stale_temporary_files,
    remove_temporary_files,
    synced_once,
    write_result,
)
from .report import InputReport, RunReport, difference_maps

__all__ = ["Settings", "Summary", "plan", "process_source", "run"]

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
    the visual report; ``keep`` keeps every input's entry in the report (a
    batch that only streams them, with ``on_input``, keeps counts instead,
    so that its memory does not grow with its inputs); ``sync_once`` syncs
    the file systems once at the end instead of each file as it is written
    (see :func:`~cnnfilters.outputs.synced_once`).
    """

    destination: Destination = field(default_factory=Destination)
    read: ReadOptions = field(default_factory=ReadOptions)
    jobs: int = 1
    skip_existing: bool = False
    fail_fast: bool = False
    scheduler: str | None = None
    maps: bool = False
    keep: bool = True
    sync_once: bool = False

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
    seconds: float = 0.0
    megapixels: float = 0.0
    interrupted: bool = False
    worst_error: int = 0  # the largest exit code of an input's error
    check_failed: bool = False

    @property
    def exit_code(self) -> int:
        """As :attr:`RunReport.exit_code`, from the counts alone."""
        if self.worst_error:
            return self.worst_error
        return EXIT_CHECK_FAILED if self.check_failed else 0

    def line(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else 0.0
        text = (f"{self.done} done, {self.skipped} skipped, {self.failed} failed in "
                f"{self.seconds:.1f} s ({rate:.1f} MP/s)")  # fmt: skip
        if self.not_done:
            text += f"; {self.not_done} not done (interrupted)"
        return text


def plan(command: Command, sources: Sequence[Source], settings: Settings) -> dict[Path, list[Path]]:
    """Every input's output files; two inputs that would write the same file are an error.

    Files found in a folder or by a pattern that are outputs of this run (of
    another input, or under the output folder) are not inputs: they are left
    out, so that a rerun never takes its own results for new work.
    """
    names = command.outputs()
    folders: dict[tuple, Path | None] = {}  # one folder_for per folder

    def folder(source: Source) -> Path | None:
        key = (os.path.dirname(os.fspath(source.path)), source.root, source.folder)
        if key not in folders:
            folders[key] = settings.folder_for(source)
        return folders[key]

    wanted = {
        source.path: [target for files in output_targets(
            source.path, names, settings.destination, folder=folder(source)
        ).values() for target in files]
        for source in sources if source.error is None
    }  # fmt: skip
    absolute = _absolute_paths()
    produced = {absolute(target) for targets in wanted.values() for target in targets}
    out_dir = settings.destination.out_dir
    inside = None if out_dir is None else absolute(out_dir) + os.sep
    planned: dict[Path, list[Path]] = {}
    owner: dict[str, Path] = {}
    for source in sources:
        if source.expanded:
            name = absolute(source.path)
            if name in produced or (inside is not None and name.startswith(inside)):
                continue
        targets = wanted.get(source.path, [])
        for target in targets:
            first = owner.setdefault(absolute(target), source.path)
            if first != source.path:
                raise CnnFiltersError(
                    f"{first} and {source.path} would both write {target}; "
                    "use --name with {ext}, or separate --out-dir runs"
                )
        planned[source.path] = targets
    return planned


def _absolute_paths() -> Callable[[Path], str]:
    """``os.path.abspath`` with the working folder read once (abspath asks the
    kernel for it at every call: most of planning's time on 200,000 inputs)."""
    cwd = os.getcwd()

    def absolute(path: Path) -> str:
        return os.path.normpath(os.path.join(cwd, os.fspath(path)))

    return absolute


def run(
    command: Command,
    sources: Sequence[Source],
    settings: Settings,
    *,
    on_input: Callable[[InputReport], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_entries: Callable[[int, list[InputReport]], None] | None = None,
) -> tuple[RunReport, Summary]:
    """Run ``command`` on every source, in parallel when asked; keep going after failures.

    ``on_input`` sees each input as it finishes (completion order); the
    report lists them in input order; ``on_entries`` gets each input's
    number (in the sources, after planning) and entries, skipped ones too.
    With ``fail_fast`` the inputs not yet started are cancelled after the first
    failure. Ctrl-C stops cleanly:
    finished outputs stay (they are written atomically), the summary counts
    what was not done.
    """
    started = time.perf_counter()
    report = RunReport(command.name, options=command.options())
    out_dir = settings.destination.out_dir
    if out_dir is not None:
        make_folder(out_dir)
    planned = plan(command, sources, settings)
    sources = [source for source in sources if source.path in planned]
    recorder = _Recorder(len(sources), on_input, on_progress, keep=settings.keep,
                         on_entries=on_entries)  # fmt: skip
    pending = []
    inputs = _identities(source.path for source in sources)
    for index, source in enumerate(sources):
        refused = _refused(source, planned[source.path], inputs, settings)
        if refused is None:
            pending.append((index, source))
        elif refused.skipped:
            recorder.skip(index, refused)
        else:
            recorder.record(index, [refused])
    folders = {target.parent for targets in planned.values() for target in targets}
    if settings.skip_existing:  # a rerun: clear what a killed run left
        remove_stale_temporary_files(folders)
    threads = 1 if len(sources) > 1 else None
    if _run_pending(command, pending, settings, threads, recorder):
        remove_stale_temporary_files(folders)  # a worker was killed: its writes are orphans
    if settings.sync_once and recorder.summary.done and not recorder.summary.interrupted:
        # The batch's files, written without an fsync each, reach the disk. Not after
        # Ctrl-C, which ends the run at once: the page cache keeps them all the same.
        os.sync()
    for index in sorted(recorder.results):
        report.inputs.extend(recorder.results[index])
    recorder.summary.seconds = time.perf_counter() - started
    return report, recorder.summary


class _Recorder:
    """Takes each input's entries as it finishes: keeps them, counts them, passes them on."""

    def __init__(
        self,
        total: int,
        on_input: Callable[[InputReport], None] | None,
        on_progress: Callable[[int, int], None] | None,
        *,
        keep: bool = True,
        on_entries: Callable[[int, list[InputReport]], None] | None = None,
    ) -> None:
        self.total, self.on_input, self.on_progress = total, on_input, on_progress
        self.keep, self.on_entries = keep, on_entries
        self.results: dict[int, list[InputReport]] = {}
        self.summary = Summary()
        self.finished = 0

    def skip(self, index: int, item: InputReport) -> None:
        """An input skipped before any work (counted, not announced)."""
        if self.keep:
            self.results[index] = [item]
        if self.on_entries is not None:
            self.on_entries(index, [item])
        self.summary.skipped += 1
        self.finished += 1

    def record(self, index: int, items: list[InputReport]) -> bool:
        """A finished input; whether it failed."""
        if self.keep:
            self.results[index] = items
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
        if self.on_progress is not None:
            self.on_progress(self.finished, self.total)
        return failed


def _refused(
    source: Source, targets: list[Path], inputs: dict[tuple[int, int], Path], settings: Settings
) -> InputReport | None:
    """An input not to run: one of its outputs is another input, or (``skip_existing``)
    all of them exist."""
    clobbered = _an_input_among(targets, inputs, source.path)
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
    pending: list[tuple[int, Source]],
    settings: Settings,
    threads: int | None,
    recorder: _Recorder,
) -> bool:
    """Run the tasks here, or on the executor ``settings`` asks for; whether a worker
    died (killed from outside: its temporary files are left for the caller)."""
    record, summary = recorder.record, recorder.summary
    executor = _executor(settings, len(pending))
    try:
        if executor is None:
            for position, (index, source) in enumerate(pending):
                try:
                    failed = record(index, process_source(command, source, settings, threads))
                except KeyboardInterrupt:
                    summary.interrupted = True
                    summary.not_done = len(pending) - position
                    break
                if failed and settings.fail_fast:
                    summary.not_done = len(pending) - position - 1
                    break
            return False
        return _run_on(executor, command, pending, settings, threads, recorder)
    finally:
        if executor is not None:
            _close(executor)


def _run_on(
    executor: Executor,
    command: Command,
    pending: list[tuple[int, Source]],
    settings: Settings,
    threads: int | None,
    recorder: _Recorder,
) -> bool:
    """The tasks on a pool of workers, in chunks of inputs (one round trip for several
    small files), a bounded window of chunks in flight (so that memory does not grow
    with the number of inputs); whether a worker died."""
    summary = recorder.summary
    futures: dict[Future, list[tuple[int, Source]]] = {}
    jobs = max(1, settings.jobs)
    size = max(1, min(_CHUNK_MAX, len(pending) // (jobs * _WINDOW_PER_JOB * 2)))
    chunks = (pending[start : start + size] for start in range(0, len(pending), size))
    finished = 0
    died = False
    try:
        # Workers are forked at the first submissions: with the signals blocked, so that
        # none of them meets Ctrl-C before its own handler is in place (it unblocks them
        # then); a signal meanwhile is delivered right after.
        with _signals_blocked():
            _submit(executor, chunks, futures, command, settings, threads, jobs * _WINDOW_PER_JOB)
        stop = False
        while futures and not stop:
            ready, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in ready:
                chunk = futures.pop(future)
                finished += len(chunk)
                died = died or _died(future)
                for (index, _), items in zip(chunk, _outcomes(future, chunk), strict=True):
                    failed = recorder.record(index, items)
                    stop = stop or (failed and settings.fail_fast)
            if stop:
                for other in futures:
                    other.cancel()
            else:
                _submit(executor, chunks, futures, command, settings, threads, len(ready))
    except KeyboardInterrupt:
        summary.interrupted = True
        _stop(executor, futures)
    except BaseException:  # SIGTERM (the command line's Terminated), or anything else
        _stop(executor, futures)
        raise
    summary.not_done = len(pending) - finished
    return died


# Chunks in flight per worker: enough to keep every worker busy, few enough to bound memory.
_WINDOW_PER_JOB = 8
# Inputs a task takes at most: one round trip with the worker for several small files.
_CHUNK_MAX = 16


def _submit(
    executor: Executor,
    chunks: Iterator[list[tuple[int, Source]]],
    futures: dict[Future, list[tuple[int, Source]]],
    command: Command,
    settings: Settings,
    threads: int | None,
    count: int,
) -> None:
    """Submit up to ``count`` more of the waiting chunks."""
    for chunk in itertools.islice(chunks, count):
        sources = [source for _, source in chunk]
        futures[executor.submit(process_sources, command, sources, settings, threads)] = chunk


def process_sources(
    command: Command, sources: list[Source], settings: Settings, threads: int | None = None
) -> list[list[InputReport]]:
    """One task of a pool: :func:`process_source` on each of a chunk of inputs."""
    return [process_source(command, source, settings, threads) for source in sources]


def _died(future: Future) -> bool:
    if not future.done() or future.cancelled():
        return False
    return isinstance(future.exception(), BrokenProcessPool)


def _outcomes(future: Future, chunk: list[tuple[int, Source]]) -> list[list[InputReport]]:
    """Each input's entries from a finished chunk, or each input's error if it failed."""
    try:
        return future.result()
    except Exception as exc:  # a worker that died, a lost cluster node
        failed = []
        for _, source in chunk:
            name = os.fsdecode(source.path)
            if isinstance(exc, CnnFiltersError):
                failed.append([InputReport(name, error=str(exc), exit_code=exc.exit_code)])
                continue
            message = f"{source.path}: the worker failed ({type(exc).__name__}: {exc})"
            failed.append([InputReport(name, error=message, exit_code=EXIT_IO)])
        return failed


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
        return _process(command, source, settings, threads)


def _process(
    command: Command, source: Source, settings: Settings, threads: int | None
) -> list[InputReport]:
    name = os.fsdecode(source.path)
    if source.error is not None:
        return [InputReport(name, error=source.error, exit_code=EXIT_IO)]
    if source.empty_folder:
        message = f"{source.path}: is a directory with no image files (-r looks in subfolders)"
        return [InputReport(name, error=message, exit_code=EXIT_IO)]
    items: list[InputReport] = []
    folder = settings.folder_for(source)
    try:
        if folder is not None and settings.destination.out_dir is not None:
            make_folder(folder)
        frames = load_frames(source.path, settings.read, parallel=threads != 1)
        for image in frames:
            label = name if len(frames) == 1 else f"{name}[frame {image.frame}]"
            item = InputReport(label)
            items.append(item)
            _describe(item, image)
            frame = image.frame if len(frames) > 1 else None
            _process_image(command, image, item, settings, folder, frame, threads)
    except CnnFiltersError as exc:
        _record_error(items, name, str(exc), max(exc.exit_code, EXIT_IO))
    except MemoryError:
        _record_error(items, name, f"{name}: not enough memory to process this image", EXIT_IO)
    except OSError as exc:  # a file system's refusal that no check above foresaw
        where = exc.filename if exc.filename is not None else name
        _record_error(items, name, f"{os.fsdecode(where)}: {exc.strerror or exc}", EXIT_IO)
    return items


def _describe(item: InputReport, image: LoadedImage) -> None:
    item.notices.extend(image.notices)
    item.info.update(mode=image.mode, format=image.format, bit_depth=image.bit_depth,
                     kind=image.kind, height=image.size[0], width=image.size[1])  # fmt: skip
    if image.damage is not None:
        item.info["damaged"] = image.damage


def _process_image(
    command: Command,
    image: LoadedImage,
    item: InputReport,
    settings: Settings,
    folder: Path | None,
    frame: int | None,
    threads: int | None,
) -> None:
    """Run ``command`` on one decoded image and write its outputs into ``item``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = command.run(image)
    item.notices.extend(result.notices)
    item.info.update(result.info)
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
    if written.error is not None:
        raise written.error
    item.notices.extend(f"warning: {w.message}" for w in caught)
    item.notices.extend(written.notices)


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
    import threading

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
    import threading
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
            executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.join(timeout=1.0)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=1.0)
        else:
            executor.shutdown(wait=True, cancel_futures=True)
        if getattr(executor, "_cnnfilters_unfreeze", False):
            gc.unfreeze()


_STOPPING_SIGNALS = {signal.SIGINT, signal.SIGTERM}


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
    import threading

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
    # Ctrl-C reaches the whole group: the parent reports it; workers just stop.
    signal.signal(signal.SIGTERM, _on_worker_signal)
    signal.signal(signal.SIGINT, _on_worker_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING_SIGNALS)  # blocked by the fork
    # The pid that forked us (None from a fork server, which dies with the run):
    # read before the fork, so that a parent killed before this line is seen.
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        import contextlib
        import ctypes

        # Without prctl (another libc), workers may outlive a parent killed by SIGKILL.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(EXIT_TERMINATED)


def _on_worker_signal(signum: int, frame: Any) -> None:
    """End a worker at once, removing the temporary files of the writes under way.

    No exception is raised into the task: one raised inside a finalizer or an
    import would be printed and swallowed, and the task would go on.
    """
    remove_temporary_files()
    os._exit(EXIT_TERMINATED)
