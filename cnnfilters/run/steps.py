"""One input's steps: decode its frames, run the command, check, write the outputs;
any error is that input's own."""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..atomic import synced_once
from ..clobber import check_targets
from ..commands import Command
from ..errors import (
    EXIT_IO,
    EXIT_USAGE,
    CnnFiltersError,
)
from ..formats import depth_refusal
from ..images import LoadedImage, load_frames
from ..inputs import Source
from ..outputs import make_folder, output_targets, verify_result, write_result
from ..report import Check, InputReport, difference_maps
from .settings import Settings


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

    def __init__(
        self,
        results: list[list[InputReport]],
        finished: Callable[[int, list[InputReport]], None] | None,
    ) -> None:
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
        frames = load_frames(source.path, settings.read, parallel=threads != 1, rows_once=rows_once)
        try:
            yield sum(_held_bytes(image) for image in frames)
            single = len(frames) == 1
            for image in frames:
                item = InputReport(name if single else f"{name}[frame {image.frame}]")
                items.append(item)
                yield from _frame_steps(command, image, item, settings, folder, single, threads)
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


def _frame_steps(
    command: Command,
    image: LoadedImage,
    item: InputReport,
    settings: Settings,
    folder: Path | None,
    single: bool,
    threads: int | None,
) -> Generator[int | _Ran, None, None]:
    """One frame's run, check and write into ``item`` (yielding between them for a
    single-frame input); an output format that cannot hold it is refused first."""
    _describe(item, image)
    command.check_output_size(image, settings.read.max_pixels)
    frame = None if single else image.frame
    refused = _format_refusal(command, image, settings, folder, frame)
    if refused is not None:  # the output's name, not the input, is wrong: a usage error
        item.error, item.exit_code = f"{item.input}: {refused}", EXIT_USAGE
        return
    ran = _Ran(command, image, item)
    if single:
        yield ran
    if threads == 1:  # a batch: nothing to overlap the checks with
        ran.check()
    if single:
        yield 0
    ran.write(settings, folder, frame, threads)


def _format_refusal(
    command: Command, image: LoadedImage, settings: Settings, folder: Path | None, frame: int | None
) -> str | None:
    """Why an output's format cannot hold the image's results (16-bit unless the input
    is 8-bit, see :mod:`cnnfilters.formats`), found before the work; None if it can."""
    targets = output_targets(
        image.path,
        command.outputs(),
        settings.destination,
        folder=folder,
        frame=frame,
    )
    for files in targets.values():
        refused = depth_refusal(files[0], sixteen_bit=image.kind != "uint8")
        if refused:
            return refused
    return None


def _held_bytes(image: LoadedImage) -> int:
    """The bytes of an image's decoded pixels (of the whole image, for one decoded
    as its rows are read)."""
    pixels = image.pixels
    itemsize = pixels.dtype.itemsize if isinstance(pixels, np.ndarray) else 1
    return math.prod(pixels.shape) * itemsize


def _describe(item: InputReport, image: LoadedImage) -> None:
    item.notices.extend(image.notices)
    item.info.update(
        mode=image.mode,
        format=image.format,
        bit_depth=image.bit_depth,
        kind=image.kind,
        height=image.size[0],
        width=image.size[1],
    )
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

    def write(
        self, settings: Settings, folder: Path | None, frame: int | None, threads: int | None
    ) -> None:
        """Write the outputs into ``item``: files, checks and notices."""
        result, image, item = self.result, self.image, self.item
        destination = settings.destination
        targets = output_targets(
            image.path, list(result.outputs), destination, folder=folder, frame=frame
        )
        # --skip-existing reruns an input that has only some of its outputs (an
        # interrupted run): those are replaced, the rest written.
        replace = destination.force or settings.skip_existing
        check_targets(targets, image.path, force=replace)
        written = write_result(
            result,
            image,
            targets,
            compress_level=destination.compress_level,
            threads=threads,
            replace=replace,
        )
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
