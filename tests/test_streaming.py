"""Large trees are read as the run goes: a folder when the run gets there, its checks
local to it, in memory that does not grow with the number of inputs."""

from __future__ import annotations

import os
import re
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run
from PIL import Image

import cnnfilters.run as run_module
from cnnfilters import inputs
from cnnfilters.commands import GrayscaleOptions
from cnnfilters.inputs import Source, expand_inputs, stream_inputs
from cnnfilters.outputs import Destination
from cnnfilters.run import Settings, loop, plan_outputs, planning, pool

RNG = np.random.default_rng(23)


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for name in ("b.png", "a.png", "m/c.png", "m/n/d.png", "z/e.png", "a0/f.png"):
        _image(root / name)
    (root / "m" / "notes.txt").write_text("not an image")
    return root


def _scandir_calls(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = os.scandir

    def scandir(path="."):
        calls.append(os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    return calls


def test_a_folder_lists_its_files_then_its_subfolders_each_by_name(tree):
    found = [s.path.relative_to(tree).as_posix() for s in expand_inputs([tree], recursive=True)]
    assert found == ["a.png", "b.png", "a0/f.png", "m/c.png", "m/n/d.png", "z/e.png"]
    # A pattern lists its matches in the same order.
    globbed = expand_inputs([f"{tree}/**/*.png"])
    assert [s.path.relative_to(tree).as_posix() for s in globbed] == found


def test_a_pattern_orders_names_that_are_not_utf8_as_a_folder_does(tmp_path):
    # U+E000 is b"\xee\x80\x80"; the undecodable byte 0xff is the string "\udcff",
    # which sorts before U+E000 as a string but after it as bytes.
    for name in ("\ue000.png", "\udcff.png", "a.png", "sub/\udcff.png", "sub/b.png"):
        _image(tmp_path / name)
    walked = [os.fsencode(s.path) for s in expand_inputs([tmp_path], recursive=True)]
    globbed = [os.fsencode(s.path) for s in expand_inputs([f"{tmp_path}/**/*.png"])]
    assert globbed == walked
    expected = [b"a.png", b"\xee\x80\x80.png", b"\xff.png", b"sub/b.png", b"sub/\xff.png"]
    assert [p[len(os.fsencode(tmp_path)) + 1 :] for p in walked] == expected


def test_folders_are_read_only_when_the_run_gets_there(tree, monkeypatch):
    calls = _scandir_calls(monkeypatch)
    found = stream_inputs([tree], recursive=True)
    assert calls == []  # nothing read yet
    assert [s.path.name for s in found.peek(2)] == ["a.png", "b.png"]
    assert calls == [os.fsdecode(tree)]  # the top folder only
    seen_at_first_input = []
    settings = Settings(destination=Destination(out_dir=tree.parent / "out"), keep=False)
    run_module.run(GrayscaleOptions(), found, settings,
                   on_input=lambda item: seen_at_first_input.append(len(calls)))  # fmt: skip
    assert seen_at_first_input[0] == 1  # the first image ran before any subfolder was read
    assert len(calls) == 5 and len(seen_at_first_input) == 6


def test_a_found_file_writing_another_ones_output_is_refused_the_others_run(tmp_path, capsys):
    folder = tmp_path / "in"
    for name in ("a.png", "a.jpg", "b.png"):
        _image(folder / name)
    out = tmp_path / "out"
    code, _, err = run(capsys, "grayscale", folder, "--out-dir", out, "-q")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert f"{folder / 'a.jpg'} and {folder / 'a.png'} would both write" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["a.grayscale.png", "b.grayscale.png"]


@pytest.mark.parametrize("out_dir", [False, True])
def test_a_folder_is_planned_alike_when_every_name_hashes_alike(tmp_path, monkeypatch, out_dir):
    """Which found file is an output of this run, and which writes another's output, is
    screened for the whole folder by hashes, then confirmed on the names: with
    every name hashing alike (each screen passes), the plan is the same."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ["a.grayscale.png", "a.png", "b.jpg", "b.png", "c.png", "d.grayscale.png"]:
        (folder / name).write_bytes(b"")
    destination = Destination(out_dir=tmp_path / "out" if out_dir else None)

    def planned() -> list[tuple[str, str | None]]:
        found = plan_outputs(GrayscaleOptions(), stream_inputs([folder]),
                             Settings(destination=destination))  # fmt: skip
        return [(item.source.path.name, item.refused and item.refused.error) for item in found]

    screened = planned()
    monkeypatch.setattr(planning, "hash", lambda value: 7, raising=False)
    assert planned() == screened
    names = [name for name, _ in screened]
    refused = {name: error for name, error in screened if error}
    # Beside their inputs, a.grayscale.png is a.png's output: not an input. In an
    # output folder it is one, writing a.grayscale.grayscale.png.
    assert ("a.grayscale.png" in names) == out_dir
    assert "d.grayscale.png" in names  # no d.png: an input
    assert list(refused) == ["b.png"] and "would both write" in refused["b.png"]


def test_two_folder_arguments_mirrored_into_one_out_dir_cannot_write_one_file(tmp_path, capsys):
    first, second, out = tmp_path / "one", tmp_path / "two", tmp_path / "out"
    _image(first / "x.png")
    _image(second / "x.png")
    _image(second / "y.png")
    code, _, err = run(capsys, "grayscale", first, second, "--out-dir", out, "-q")
    assert code == 2
    assert err.strip() == (
        f"cnnfilters: error: {second / 'x.png'}: its output {out / 'x.grayscale.png'} is also "
        "the output of an input of another folder argument; use --name, or separate "
        "--out-dir runs"
    )
    assert sorted(p.name for p in out.iterdir()) == ["x.grayscale.png", "y.grayscale.png"]
    # The same folder given twice is the same inputs, not a clash.
    items = list(plan_outputs(GrayscaleOptions(), expand_inputs([first, first]),
                              Settings(destination=Destination(out_dir=out))))  # fmt: skip
    assert [item.refused for item in items] == [None, None]


def test_a_dry_run_names_a_refused_input_and_goes_on(tmp_path, capsys):
    folder = tmp_path / "in"
    for name in ("a.png", "a.jpg", "b.png"):
        _image(folder / name)
    code, out, err = run(capsys, "grayscale", folder, "--out-dir", tmp_path / "o", "--dry-run")
    assert code == 2
    assert [line.split(" -> ")[0] for line in out.splitlines()] == [
        os.fsdecode(folder / "a.jpg"),
        os.fsdecode(folder / "b.png"),
    ]
    assert (
        f"{folder / 'a.jpg'} and {folder / 'a.png'} would both write" in err
        and not (tmp_path / "o").exists()
    )


def test_a_stopped_run_counts_what_it_left_within_half_a_second(tree):
    settings = Settings()
    recorder = loop._Recorder(None, None)
    found = stream_inputs([tree], recursive=True)
    planner = planning._Planner(GrayscaleOptions(), settings, found)
    pending = loop._Pending(planner, found, settings, recorder)
    next(iter(pending))
    pending.not_done()
    assert (recorder.summary.not_done, recorder.summary.not_counted) == (6, False)
    found = stream_inputs([tree], recursive=True)
    pending = loop._Pending(planner, found, settings, recorder)
    assert pending.count_rest(seconds=-1) == (1, False)  # out of time: a lower bound
    recorder.summary.not_done, recorder.summary.not_counted = 3, True
    assert recorder.summary.not_done_text == "at least 3 input(s) not done"


def test_chunks_grow_for_small_files_and_stay_single_for_large_ones():
    sources = iter([(index, Source(Path(f"{index}.png"))) for index in range(100)])
    chunks = pool._Chunks(sources)
    first = next(chunks)
    assert len(first) == 1  # one at a time until an input has been timed

    def finished(seconds: float, count: int) -> Future:
        future: Future = Future()
        future.set_result((seconds, [[] for _ in range(count)]))
        return future

    chunks.outcomes(finished(0.0001, 1), first)  # 0.1 ms an input
    assert len(next(chunks)) == pool._CHUNK_MAX
    chunks.took(0.002, 1)  # 2 ms an input: 25 of them make a chunk's time
    assert len(next(chunks)) == 25
    chunks.outcomes(finished(2.0, 16), [(0, first[0][1])] * 16)  # 125 ms an input
    assert len(next(chunks)) == 1
    one_by_one = pool._Chunks(sources, most=1)  # --fail-fast in one process
    one_by_one.took(0.0001, 1)
    assert len(next(one_by_one)) == 1


@pytest.mark.parametrize("longest", [12, 200])
def test_a_folders_names_are_packed_and_given_back_whole(longest):
    names = ["b.png", "a.png", "é.png", "\udcff.png", "a" * (longest - 4) + ".png", "B.png"]
    packed = inputs.Names(iter(names))
    expected = sorted(names, key=os.fsencode)  # by bytes: upper case first, then UTF-8
    assert list(packed) == expected and len(packed) == len(names)
    assert [packed[i] for i in range(-1, -len(names) - 1, -1)] == expected[::-1]
    assert packed[1:3] == expected[1:3]
    assert list(inputs.Names([])) == []


def test_a_folder_with_undecodable_names_is_read_and_written(tmp_path, capsys):
    folder = tmp_path / "in"
    raw = os.fsencode(folder) + b"/caf\xe9.png"  # Latin-1, not UTF-8
    folder.mkdir()
    Image.new("RGB", (4, 4)).save(raw.decode("utf-8", "surrogateescape"))
    code, _, err = run(capsys, "grayscale", folder, "--out-dir", tmp_path / "out", "-q")
    assert code == 0, err
    assert os.listdir(os.fsencode(tmp_path / "out")) == [b"caf\xe9.grayscale.png"]


@pytest.mark.parametrize(("jobs", "code"), [("auto", 0), ("0", 0), ("2", 0), ("-1", 2), ("x", 2)])
def test_jobs_is_a_count_zero_or_auto(tmp_path, capsys, jobs, code):
    folder = tmp_path / "in"
    _image(folder / "a.png")
    _image(folder / "b.png")
    got, _, err = run(capsys, "grayscale", folder, "--out-dir", tmp_path / "o", "-q", "-j", jobs)
    assert got == code, err
    if code:
        assert "(N, 0 or auto)" in err and not (tmp_path / "o").exists()
    else:
        assert len(list((tmp_path / "o").iterdir())) == 2


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_large_batch_keeps_its_first_failures_and_passes_and_counts_the_rest(tmp_path, jobs):
    folder = tmp_path / "in"
    for index in range(12):
        _image(folder / f"p{index:02d}.png")
    for broken in ("p03.png", "p07.png", "p09.png"):
        (folder / broken).write_bytes(b"not an image")
    settings = Settings(destination=Destination(out_dir=tmp_path / "out"), jobs=jobs, keep=2)
    report, summary = run_module.run(GrayscaleOptions(), expand_inputs([folder]), settings)
    kept = [Path(item.input).name for item in report.inputs]
    # The first in input order, whichever finished first.
    assert kept == ["p00.png", "p01.png", "p03.png", "p07.png"]
    assert (report.left_out, report.left_out_failed, report.left_out_files) == (8, 1, 7)
    assert not report.passed and report.exit_code == 3 == summary.exit_code


def test_the_table_of_a_large_batch_says_what_it_left_out(tmp_path, capsys, monkeypatch):
    from cnnfilters import table

    monkeypatch.setattr(table, "TABLE_ROWS", 4)  # keep 2 failing and 2 passing entries
    folder = tmp_path / "in"
    for index in range(6):
        _image(folder / f"p{index}.png")
    (folder / "p4.png").write_bytes(b"broken")
    code, out, _ = run(capsys, "grayscale", folder, "--out-dir", tmp_path / "o", "-j", "1")
    assert code == 3
    assert "3 more input(s) not shown here, 0 of them failed or errored" in out
    # The first two passes have rows; the failure, said on stderr, has none.
    shown = re.findall(r"^ (p\d\.png) ", out, flags=re.M)
    assert sorted(shown) == ["p0.png", "p1.png"]
    assert "6 input(s), 5 passed, 1 failed or errored; 5 file(s) written" in out
