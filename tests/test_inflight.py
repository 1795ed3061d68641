"""A batch stopped by a signal counts what its workers finished: chunks done
before the stop are read, and an input of a chunk under way whose outputs are
on disk whole, written by this run, is done, not "not done"."""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path

from PIL import Image

from cnnfilters.inflight import UNREPORTED, harvest, written_whole
from cnnfilters.inputs import Source
from cnnfilters.report import InputReport
from cnnfilters.run import Settings


def _future(result=None, error=None, done=True) -> Future:
    future: Future = Future()
    if done and error is not None:
        future.set_exception(error)
    elif done:
        future.set_result(result)
    return future


def test_chunks_finished_before_the_stop_are_recorded_the_rest_kept():
    finished = _future(result="ok")
    failed = _future(error=KeyboardInterrupt())
    running = _future(done=False)
    a, b, c = (Source(Path(name)) for name in ("a.png", "b.png", "c.png"))
    futures = {finished: [(0, a), (1, b)], failed: [(2, c)], running: [(3, a)]}
    recorded = []

    def outcomes(future, chunk):
        assert future is finished
        return [[InputReport(os.fsdecode(source.path))] for _, source in chunk]

    harvest(futures, outcomes, lambda index, items: recorded.append((index, items[0].input)))
    assert recorded == [(0, "a.png"), (1, "b.png")]
    assert list(futures) == [failed, running]


def _written(path: Path, mtime_ns: int | None = None) -> None:
    Image.new("L", (4, 4)).save(path)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_an_input_written_whole_by_this_run_is_done(tmp_path):
    source = Source(tmp_path / "a.png")
    _written(source.path, 0)
    names = ["dy", "dx", "gradient"]
    for name in names:
        _written(tmp_path / f"a.{name}.png")
    since = min((tmp_path / f"a.{n}.png").stat().st_mtime_ns for n in names)
    item = written_whole(source, names, Settings(), since)
    assert item is not None and item.notices == [UNREPORTED]
    assert item.outputs == [os.fsdecode(tmp_path / f"a.{n}.png") for n in names]


def test_an_input_with_an_output_missing_cut_short_or_older_is_not_done(tmp_path):
    source = Source(tmp_path / "a.png")
    _written(source.path, 0)
    names = ["dy", "dx"]
    _written(tmp_path / "a.dy.png")
    since = (tmp_path / "a.dy.png").stat().st_mtime_ns
    assert written_whole(source, names, Settings(), since) is None  # a.dx.png missing
    (tmp_path / "a.dx.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    assert written_whole(source, names, Settings(), since) is None  # not whole
    _written(tmp_path / "a.dx.png", since - 10**9)
    assert written_whole(source, names, Settings(), since) is None  # from an earlier run
    _written(tmp_path / "a.dx.png", since)
    assert written_whole(source, names, Settings(), since) is not None
