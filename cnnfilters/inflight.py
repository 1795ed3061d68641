"""What a batch stopped by Ctrl-C or SIGTERM had in flight on its workers.

A worker reports a chunk of inputs when the whole chunk is done, so a stop
meets chunks in three states: finished, with their entries waiting to be
read; under way, some of their inputs written whole (each output is written
atomically) but not reported; not started. The first are read as any
finished chunk is (:func:`harvest`); of the others, once the workers are
gone, an input whose every output is on disk whole, written by this run, is
counted as done, with a notice that its checks did not come back
(:func:`written_whole`). Only the rest are "not done", which a rerun with
``--skip-existing`` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .errors import OutputError
from .inputs import Source
from .outputs import output_complete, output_targets
from .report import InputReport

__all__ = ["UNREPORTED", "harvest", "written_whole"]

UNREPORTED = "written whole before the run stopped; its checks did not come back"

Chunk = list[tuple[int, Source]]


def harvest(
    futures: dict[Future, Chunk],
    outcomes: Callable[[Future, Chunk], list[list[InputReport]]],
    record: Callable[[int, list[InputReport]], Any],
) -> None:
    """Record the chunks that finished before the stop, and take them out of
    ``futures`` (``outcomes`` reads a finished chunk's entries)."""
    for future, chunk in list(futures.items()):
        if future.done() and not future.cancelled() and future.exception() is None:
            del futures[future]
            for (index, _), items in zip(chunk, outcomes(future, chunk), strict=True):
                record(index, items)


def written_whole(
    source: Source, names: list[str], settings: Any, since_ns: int
) -> InputReport | None:
    """``source``'s entry when every one of its outputs is on disk whole and was written
    at ``since_ns`` or later (by this run: one that existed before is older); None
    otherwise. ``settings``: the run's (:class:`cnnfilters.run.Settings`)."""
    folder = settings.folder_for(source)
    files = output_targets(source.path, names, settings.destination, folder=folder)
    paths = [path for group in files.values() for path in group]
    try:
        if not paths or not all(_new_and_whole(path, since_ns) for path in paths):
            return None
    except OutputError:
        return None
    item = InputReport(os.fsdecode(source.path), outputs=[os.fsdecode(p) for p in paths])
    item.notices.append(UNREPORTED)
    return item


def _new_and_whole(path: Path, since_ns: int) -> bool:
    try:
        return os.stat(path).st_mtime_ns >= since_ns and output_complete(path)
    except OSError:
        return False
