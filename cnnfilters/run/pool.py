"""The worker pool and Dask: inputs in chunks on worker processes or a cluster, a
worker that dies replaced and its inputs run again, a stop that ends them all."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Executor, Future, wait
from typing import TYPE_CHECKING, Any, NamedTuple

from ..commands import Command
from ..errors import (
    EXIT_IO,
    EXIT_TERMINATED,
    CnnFiltersError,
    Terminated,
)
from ..inflight import harvest
from ..inputs import Source
from ..report import InputReport
from .settings import _SINGLE_THREAD_ENV, Settings
from .signals import _SIGNAL_POLL, _signals_blocked, _signals_held, _SignalsDeferred
from .steps import process_sources
from .workers import _worker_start

if TYPE_CHECKING:  # the loop's types, for annotations only (the loop imports this)
    from .loop import _Pending, _Recorder


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
            _run_chunks(
                pool, _Tasks(command, settings, threads), chunks, futures, recorder, deferred
            )
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
        return executor.submit(process_sources, self.command, sources, self.settings, self.threads)

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
    executor = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context(start),
        initializer=_worker_start,
        initargs=(parent,),
    )
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
