"""Many inputs: expanding them, planning outputs, running them on all cores or a cluster.

:func:`expand_inputs` turns files, directories and glob patterns into a
stable list of image files; :func:`plan` finds every output before any work
starts (two inputs writing the same file is an error); :func:`run_batch`
runs one task per input on an executor (worker processes, or a Dask cluster
through the same ``concurrent.futures`` interface), streaming each finished
input to a callback, and returns the report in input order.
"""

from __future__ import annotations

import gc
import glob
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EXIT_TERMINATED, CnnFiltersError
from .images import ReadOptions
from .pipeline import COMMANDS, DEFAULT_NAME, jsonable, output_targets, process
from .report import InputReport, RunReport, difference_maps

__all__ = ["BatchOptions", "Source", "expand_inputs", "plan", "run_batch"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp")
_GLOB_CHARACTERS = set("*?[")

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
class Source:
    """One input file, and the folder its relative path is mirrored from (if any)."""

    path: Path
    root: Path | None = None
    empty_folder: bool = False
    folder: Path | None = None  # where outputs go by default, when not beside the input

    @property
    def relative_folder(self) -> Path:
        """Where under --out-dir its outputs go: its folder relative to ``root``."""
        if self.root is None:
            return Path()
        return self.path.parent.relative_to(self.root)


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    if recursive:
        found = [
            Path(parent) / name
            for parent, dirs, names in os.walk(folder)
            for name in names
            if not dirs.sort() and name.lower().endswith(IMAGE_SUFFIXES)
        ]
    else:
        found = [
            p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
        ]
    return sorted(found)


def expand_inputs(specs: Sequence[str | os.PathLike], *, recursive: bool = False) -> list[Source]:
    """Files as given; directories as the image files they hold (``recursive``: all
    below); glob patterns (``**`` included) expanded here, so that scripts behave
    the same in every shell. Order: as given, each expansion sorted. A pattern
    that matches nothing, or a path that does not exist, stays as it is and is
    reported as a missing file.
    """
    sources: list[Source] = []
    for spec in specs:
        text = os.fsdecode(spec)
        path = Path(text)
        if text != "-" and not path.exists() and _GLOB_CHARACTERS & set(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                sources.append(Source(path))
                continue
            prefix = Path(text.split("*")[0].split("?")[0].split("[")[0])
            root = prefix if text.endswith(os.sep) or prefix.is_dir() else prefix.parent
            sources.extend(Source(m, root) for m in files)
        elif path.is_dir():
            found = _images_in(path, recursive)
            sources.extend(Source(p, path) for p in found)
            if not found:
                sources.append(Source(path, empty_folder=True))
        else:
            sources.append(Source(path))
    return sources


@dataclass
class BatchOptions:
    """How a batch runs and where its outputs go."""

    output: Path | None = None
    out_dir: Path | None = None
    template: str = DEFAULT_NAME
    force: bool = False
    raw: bool = False
    skip_existing: bool = False
    read: ReadOptions = field(default_factory=ReadOptions)
    compress_level: int = 1
    jobs: int = 1
    fail_fast: bool = False
    scheduler: str | None = None
    batch: bool = False  # several inputs: parallelism comes from the workers
    maps: bool = False  # keep difference maps for the visual report


def _folder_for(source: Source, options: BatchOptions) -> Path | None:
    if options.out_dir is None:
        return source.folder
    return options.out_dir / source.relative_folder


def plan(command: str, sources: Sequence[Source], cmd_options: dict[str, Any],
         options: BatchOptions) -> dict[Path, list[Path]]:  # fmt: skip
    """Every input's output files; two inputs that would write the same file are an error."""
    names = COMMANDS[command].names(cmd_options)
    planned: dict[Path, list[Path]] = {}
    owner: dict[Path, Path] = {}
    for source in sources:
        by_name = output_targets(source.path, names, output=options.output,
                                 out_dir=_folder_for(source, options), raw=options.raw,
                                 template=options.template)  # fmt: skip
        targets = [target for files in by_name.values() for target in files]
        for target in targets:
            key = Path(os.path.abspath(target))
            if key in owner and owner[key] != source.path:
                raise CnnFiltersError(
                    f"{owner[key]} and {source.path} would both write {target}; "
                    "use --name with {ext}, or separate --out-dir runs"
                )
            owner[key] = source.path
        planned[source.path] = targets
    return planned


class _Stopped(BaseException):
    """SIGTERM in a worker process during a task: unwinds it, removing its temporary files."""


_busy = False  # a worker process is running a task


def _worker_start() -> None:
    """Set up a worker process: it dies with its parent, and SIGTERM ends it cleanly.

    On Linux the kernel sends SIGTERM to the worker when the parent dies, even
    by SIGKILL (``PR_SET_PDEATHSIG``), so no orphan goes on writing. An idle
    worker exits at once; a busy one unwinds its task first (so the atomic
    writes remove their temporary files), then exits.
    """
    signal.signal(signal.SIGTERM, _on_worker_sigterm)
    parent = os.getppid()  # this process's, or the fork server's (which dies with it)
    if sys.platform.startswith("linux"):
        import contextlib
        import ctypes

        # Without prctl (another libc), workers may outlive a parent killed by SIGKILL.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(EXIT_TERMINATED)


def _on_worker_sigterm(signum: int, frame: Any) -> None:
    if not _busy:
        os._exit(EXIT_TERMINATED)
    raise _Stopped


def _run_one(command: str, source: Source, cmd_options: dict[str, Any],
             options: BatchOptions) -> list[InputReport]:  # fmt: skip
    """One task: one input, in whichever process or cluster worker runs it."""
    global _busy
    _busy = True
    try:
        return _run_task(command, source, cmd_options, options)
    except _Stopped:
        os._exit(EXIT_TERMINATED)
    finally:
        _busy = False


def _run_task(command: str, source: Source, cmd_options: dict[str, Any],
              options: BatchOptions) -> list[InputReport]:  # fmt: skip
    if source.empty_folder:
        message = f"{source.path}: is a directory with no image files (-r looks in subfolders)"
        return [InputReport(os.fsdecode(source.path), error=message, exit_code=3)]
    folder = _folder_for(source, options)
    # In a batch the workers share the cores, one input each, encoding with one
    # thread; a single input uses every core for its images instead.
    threads = 1 if options.batch else None
    with difference_maps(options.maps):
        report = process(command, [source.path], cmd_options, output=options.output,
                         out_dir=folder, force=options.force, raw=options.raw, read=options.read,
                         compress_level=options.compress_level, template=options.template,
                         threads=threads)  # fmt: skip
    return report.inputs


@dataclass
class BatchSummary:
    """What a batch did, for the closing line."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    not_done: int = 0
    seconds: float = 0.0
    megapixels: float = 0.0
    interrupted: bool = False

    def line(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else 0.0
        text = (f"{self.done} done, {self.skipped} skipped, {self.failed} failed in "
                f"{self.seconds:.1f} s ({rate:.1f} MP/s)")  # fmt: skip
        if self.not_done:
            text += f"; {self.not_done} not done (interrupted)"
        return text


def _executor(options: BatchOptions) -> Executor | None:
    if options.scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise CnnFiltersError(
                "--scheduler needs Dask's distributed package: pip install 'cnnfilters[dask]'"
            ) from None
        try:
            client = Client(options.scheduler, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise CnnFiltersError(
                f"cannot reach the scheduler {options.scheduler} ({exc})"
            ) from None
        executor = client.get_executor(pure=False)
        executor._cnnfilters_client = client  # closed with the executor
        return executor
    if options.jobs <= 1:
        return None
    import multiprocessing

    for name, value in _SINGLE_THREAD_ENV.items():
        os.environ.setdefault(name, value)
    # fork starts workers at once, with everything imported; it is safe while
    # this process runs no other thread. Otherwise forkserver starts them clean.
    import threading

    start = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "forkserver"
    executor = ProcessPoolExecutor(max_workers=options.jobs,
                                   mp_context=multiprocessing.get_context(start),
                                   initializer=_worker_start)  # fmt: skip
    if start == "fork" and not gc.get_freeze_count():
        # Everything imported so far is shared with the workers: frozen, it is
        # neither walked by their garbage collections nor copied page by page
        # (the recipe of gc.freeze's documentation). Unfrozen at shutdown.
        gc.freeze()
        executor._cnnfilters_unfreeze = True
    return executor


def _identities(paths) -> dict[tuple[int, int], Path]:
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


def run_batch(
    command: str,
    sources: Sequence[Source],
    cmd_options: dict[str, Any],
    options: BatchOptions,
    *,
    on_input: Callable[[InputReport], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[RunReport, BatchSummary]:
    """Run ``command`` on every source, in parallel when asked; keep going after failures.

    ``on_input`` sees each input as it finishes (completion order); the
    report lists them in input order. With ``fail_fast`` the inputs not yet
    started are cancelled after the first failure. Ctrl-C stops cleanly:
    finished outputs stay (they are written atomically), the summary counts
    what was not done.
    """
    summary = BatchSummary()
    started = time.perf_counter()
    options.batch = len(sources) > 1
    report = RunReport(command, options=jsonable(cmd_options))
    planned = plan(command, sources, cmd_options, options)
    results: dict[int, list[InputReport]] = {}
    pending: list[tuple[int, Source]] = []
    inputs = _identities(source.path for source in sources)
    for index, source in enumerate(sources):
        targets = planned[source.path]
        clobbered = _an_input_among(targets, inputs, source.path)
        if clobbered is not None:
            target, other = clobbered
            same = "" if os.fspath(other) == os.fspath(target) else f" (the file {other})"
            message = (f"{source.path}: its output {target} is an input of this run{same}; "
                       "an input is never overwritten")  # fmt: skip
            results[index] = [InputReport(os.fsdecode(source.path), error=message, exit_code=3)]
            summary.failed += 1
            if on_input is not None:
                on_input(results[index][0])
        elif options.skip_existing and targets and all(t.exists() for t in targets):
            item = InputReport(os.fsdecode(source.path), skipped=True)
            item.notices.append("skipped: every output exists (--skip-existing)")
            results[index] = [item]
            summary.skipped += 1
        else:
            pending.append((index, source))
    total = len(sources)
    finished = summary.skipped

    def record(index: int, items: list[InputReport]) -> bool:
        nonlocal finished
        results[index] = items
        finished += 1
        failed = False
        for item in items:
            if item.error or not item.passed:
                summary.failed += 1
                failed = True
            else:
                summary.done += 1
            summary.megapixels += item.info.get("height", 0) * item.info.get("width", 0) / 1e6
            if on_input is not None:
                on_input(item)
        if on_progress is not None:
            on_progress(finished, total)
        return failed

    executor = _executor(options)
    try:
        if executor is None:
            for position, (index, source) in enumerate(pending):
                try:
                    failed = record(index, _run_one(command, source, cmd_options, options))
                except KeyboardInterrupt:
                    summary.interrupted = True
                    summary.not_done = len(pending) - position
                    break
                if failed and options.fail_fast:
                    summary.not_done = len(pending) - position - 1
                    break
        else:
            futures: dict[Future, int] = {
                executor.submit(_run_one, command, source, cmd_options, options): index
                for index, source in pending
            }
            try:
                for future in as_completed(futures):
                    index = futures[future]
                    try:
                        items = future.result()
                    except CnnFiltersError as exc:
                        items = [InputReport(os.fsdecode(sources[index].path), error=str(exc),
                                             exit_code=exc.exit_code)]  # fmt: skip
                    except Exception as exc:  # a worker that died, a lost cluster node
                        items = [InputReport(os.fsdecode(sources[index].path),
                                             error=f"{sources[index].path}: the worker failed "
                                                   f"({type(exc).__name__}: {exc})",
                                             exit_code=3)]  # fmt: skip
                    if record(index, items) and options.fail_fast:
                        for other in futures:
                            other.cancel()
                        break
            except KeyboardInterrupt:
                summary.interrupted = True
                for other in futures:
                    other.cancel()
            summary.not_done = sum(1 for index, _ in pending if index not in results)
    finally:
        if executor is not None:
            client = getattr(executor, "_cnnfilters_client", None)
            if client is None:
                executor.shutdown(wait=True, cancel_futures=True)
            else:
                client.close()
            if getattr(executor, "_cnnfilters_unfreeze", False):
                gc.unfreeze()
    for index in sorted(results):
        report.inputs.extend(results[index])
    summary.seconds = time.perf_counter() - started
    return report, summary


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
    path.write_bytes(data)
    return Source(path, folder=Path.cwd())
