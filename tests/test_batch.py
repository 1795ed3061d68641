"""Batch work: inputs, mirrored outputs, collisions, reruns, workers, JSON lines."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnfilters import CnnFiltersError
from cnnfilters.cli import app
from cnnfilters.commands import GradientOptions, GrayscaleOptions
from cnnfilters.inputs import expand_inputs
from cnnfilters.outputs import Destination
from cnnfilters.run import Settings, plan, run

runner = CliRunner()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """photos/a.png, photos/b.jpg, photos/sub/c.png, photos/notes.txt"""
    rng = np.random.default_rng(6)
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.fromarray(rng.integers(0, 256, (18, 24, 3), dtype=np.uint8)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def invoke(*args):
    return runner.invoke(app, [os.fsdecode(a) for a in args])


def test_directories_globs_and_files_expand_in_a_stable_order(tree):
    flat = [s.path.name for s in expand_inputs([tree])]
    assert flat == ["a.png", "b.jpg"]
    deep = [s.path.relative_to(tree).as_posix() for s in expand_inputs([tree], recursive=True)]
    assert deep == ["a.png", "b.jpg", "sub/c.png"]
    globbed = expand_inputs([f"{tree}/**/*.png"])
    assert [s.path.name for s in globbed] == ["a.png", "c.png"]
    assert [s.relative_folder.as_posix() for s in globbed] == [".", "sub"]
    assert [s.path.name for s in expand_inputs([tree / "b.jpg", tree / "a.png"])] == [
        "b.jpg",
        "a.png",
    ]


def test_out_dir_mirrors_the_layout_under_a_folder_input(tree, tmp_path):
    out = tmp_path / "mirror"
    result = invoke("grayscale", tree, "-r", "--out-dir", out, "-q", "-j", "1")
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.grayscale.png", "b.grayscale.png", "sub/c.grayscale.png"]


def test_name_template_and_dry_run(tree, tmp_path):
    template = "{stem}-{ext}-{output}.png"
    result = invoke("avgpool", tree, "--out-dir", tmp_path / "o", "--name", template, "--dry-run")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].endswith("a-png-avgpool2.png") and lines[1].endswith("b-jpg-avgpool2.png")
    assert not (tmp_path / "o").exists()
    assert invoke("avgpool", tree, "--name", "{nope}").exit_code == 2


def test_two_inputs_writing_the_same_file_is_an_error_before_any_work(tree, tmp_path):
    Image.new("RGB", (8, 8)).save(tree / "a.jpg")
    out = tmp_path / "o"
    result = invoke("grayscale", tree / "a.png", tree / "a.jpg", "--out-dir", out)
    assert result.exit_code == 2 and "would both write" in result.stderr
    assert not list(out.glob("*")) if out.exists() else True
    sources = expand_inputs([tree / "a.png", tree / "a.jpg"])
    with pytest.raises(CnnFiltersError, match="would both write"):
        plan(GrayscaleOptions(), sources, Settings(destination=Destination(out_dir=out)))


def test_skip_existing_reruns_only_what_is_missing(tree, tmp_path):
    out = tmp_path / "o"
    assert invoke("grayscale", tree, "--out-dir", out, "-q").exit_code == 0
    (out / "b.grayscale.png").unlink()
    before = (out / "a.grayscale.png").stat().st_mtime_ns
    result = invoke("grayscale", tree, "--out-dir", out, "--skip-existing", "--json")
    assert result.exit_code == 0
    entries = json.loads(result.stdout)["inputs"]
    assert [e["skipped"] for e in entries] == [True, False]
    assert (out / "b.grayscale.png").exists()
    assert (out / "a.grayscale.png").stat().st_mtime_ns == before


def test_two_workers_give_the_same_report_in_input_order(tree, tmp_path):
    sources = expand_inputs([tree], recursive=True)
    reports = []
    for jobs, folder in ((1, "one"), (2, "two")):
        settings = Settings(destination=Destination(out_dir=tmp_path / folder), jobs=jobs)
        report, summary = run(GradientOptions(), sources, settings)
        assert summary.done == 3 and summary.failed == 0
        reports.append(report)
    names = [[Path(i.input).name for i in r.inputs] for r in reports]
    assert names[0] == names[1] == ["a.png", "b.jpg", "c.png"]
    for one, two in zip(reports[0].inputs, reports[1].inputs, strict=True):
        assert [c.to_dict() for c in one.checks] == [c.to_dict() for c in two.checks]
    assert gc.get_freeze_count() == 0  # frozen for the workers' fork, unfrozen after


def test_failures_keep_going_unless_fail_fast(tree, tmp_path):
    (tree / "0-broken.png").write_bytes(b"not a png")  # sorts first
    result = invoke("grayscale", tree, "--out-dir", tmp_path / "o", "-q", "-j", "1")
    assert result.exit_code == 3
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.grayscale.png",
                                                                  "b.grayscale.png"]  # fmt: skip
    result = invoke("grayscale", tree, "--out-dir", tmp_path / "f", "-q", "-j", "1", "--fail-fast")
    assert result.exit_code == 3
    assert list((tmp_path / "f").iterdir()) == []  # stopped at the first input


def test_jsonl_prints_one_object_per_finished_input(tree, tmp_path):
    result = invoke("avgpool", tree, "--out-dir", tmp_path / "o", "--jsonl")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert sorted(Path(entry["input"]).name for entry in lines) == ["a.png", "b.jpg"]
    assert all(entry["passed"] and entry["outputs"] for entry in lines)


def test_an_empty_folder_is_reported(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("grayscale", empty)
    assert result.exit_code == 3 and "no image files" in result.stderr


def test_pipes_read_stdin_and_write_stdout(tree, tmp_path):
    import subprocess
    import sys

    data = (tree / "a.png").read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, "-m", "cnnfilters", "grayscale", "-", "-o", "-"],
                          input=data, capture_output=True, cwd=work)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"\x89PNG") and list(work.iterdir()) == []
    import io

    with Image.open(io.BytesIO(done.stdout)) as image:
        assert image.mode == "L" and image.size == (24, 18)
    done = subprocess.run([sys.executable, "-m", "cnnfilters", "avgpool", "-", "-o", "-",
                           "--format", "webp"], input=data, capture_output=True)  # fmt: skip
    assert done.returncode == 0 and done.stdout[8:12] == b"WEBP"
    done = subprocess.run([sys.executable, "-m", "cnnfilters", "grayscale", "-", "-q"],
                          input=data, capture_output=True, cwd=work)  # fmt: skip
    assert done.returncode == 0 and (work / "stdin.grayscale.png").exists()


def test_the_same_batch_runs_on_a_dask_cluster(tree, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  host="127.0.0.1", protocol="tcp", dashboard_address=None,
                                  silence_logs=40) as cluster:  # fmt: skip
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        (tree / "broken.png").write_bytes(b"nope")
        result = invoke("gradient", tree, "-r", "--out-dir", tmp_path / "o", "--scheduler",
                        address, "--json")  # fmt: skip
    assert result.exit_code == 3, result.output  # the broken file, reported as everywhere
    entries = json.loads(result.stdout)["inputs"]
    assert [Path(e["input"]).name for e in entries] == ["a.png", "b.jpg", "broken.png", "c.png"]
    assert [e["error"] is None for e in entries] == [True, True, False, True]
    assert (tmp_path / "o" / "sub" / "c.dy.png").exists()


def test_an_unreachable_scheduler_is_one_clear_error(tree):
    pytest.importorskip("distributed")
    result = invoke("grayscale", tree, "--scheduler", "tcp://127.0.0.1:9", "-q")
    assert result.exit_code == 2 and "cannot reach the scheduler" in result.stderr


@pytest.mark.parametrize("script", ["gray-tree.sh", "gradient-report.sh"])
def test_the_example_batch_scripts_run(script, tree, tmp_path):
    import shutil
    import subprocess
    import sys

    exe_dir = os.path.dirname(sys.executable)
    assert shutil.which("cnnfilters", path=exe_dir), "no cnnfilters executable beside this Python"
    scripts = Path(__file__).resolve().parent.parent / "scripts"
    env = {**os.environ, "PATH": exe_dir + os.pathsep + os.environ.get("PATH", "")}
    out = tmp_path / "out"
    source = str(tree) if script == "gray-tree.sh" else f"{tree}/**/*.png"
    args = [source, str(out)]
    done = subprocess.run(["bash", str(scripts / script), *args], capture_output=True,
                          text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    if script == "gray-tree.sh":
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
            "a.png", "b.png", "sub/c.png"]  # fmt: skip
        again = subprocess.run(["bash", str(scripts / script), *args], capture_output=True,
                               text=True, env=env)  # fmt: skip
        assert again.returncode == 0  # a rerun skips what exists
    else:
        assert "2 inputs, all checks passed: True" in done.stdout
        assert (out / "sub" / "c.dy.png").exists()


def _small_pngs(folder: Path, count: int, *, seed: int, shape=(6, 5, 3)) -> Path:
    """``folder`` made, with ``count`` random RGB PNGs ``p00.png``, ``p01.png``, ..."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
            folder / f"p{index:02d}.png"
        )
    return folder


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_batch_that_streams_its_entries_keeps_counts_not_entries(tmp_path, monkeypatch, jobs):
    from cnnfilters.run import pool as run_module

    monkeypatch.setattr(run_module, "_WINDOW_PER_JOB", 1)  # refill the window at every step
    folder = _small_pngs(tmp_path / "in", 12, seed=3, shape=(6, 8, 3))
    (folder / "p05.png").write_bytes(b"not an image")
    seen = []
    settings = Settings(destination=Destination(out_dir=tmp_path / "out"), jobs=jobs, keep=False)
    report, summary = run(GrayscaleOptions(), expand_inputs([folder]), settings,
                          on_input=seen.append)  # fmt: skip
    assert report.inputs == []  # nothing kept ...
    assert len(seen) == 12  # ... but every entry went by
    assert (summary.done, summary.failed, summary.exit_code) == (11, 1, 3)
    assert len(list((tmp_path / "out").iterdir())) == 11


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_report_is_streamed_in_input_order_and_equals_the_json(tmp_path, jobs):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for index in range(9):
        Image.fromarray(rng.integers(0, 256, (5 + index, 7, 3), dtype=np.uint8)).save(
            folder / f"p{index}.png"
        )
    (folder / "p3.png").write_bytes(b"broken")
    report = tmp_path / "out" / "report.json"
    result = CliRunner().invoke(app, ["grayscale", str(folder), "--out-dir", str(tmp_path / "out"),
                                      "--report", str(report), "--json", "-j", jobs])  # fmt: skip
    assert result.exit_code == 3
    streamed, printed = json.loads(report.read_text()), json.loads(result.stdout)
    assert streamed["inputs"] == printed["inputs"]
    assert [Path(e["input"]).name for e in streamed["inputs"]] == [f"p{i}.png" for i in range(9)]
    assert streamed["passed"] is printed["passed"] is False
    assert {k: streamed[k] for k in ("schema", "command", "options")} == {
        k: printed[k] for k in ("schema", "command", "options")
    }
    assert not list((tmp_path / "out").glob(".cnnfilters-*"))


def test_a_quiet_batch_with_a_report_keeps_no_entries_in_memory(tmp_path, monkeypatch):
    from cnnfilters.run import loop as run_module

    kept = []
    real = run_module._Recorder.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        kept.append(self.limit)

    monkeypatch.setattr(run_module._Recorder, "__init__", spy)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (4, 4)).save(folder / "a.png")
    report = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["grayscale", str(folder), "--out-dir", str(tmp_path / "o"),
                                      "--report", str(report), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert kept == [0]  # counts, no entry
    assert json.loads(report.read_text())["passed"] is True


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_a_batch_worker_keeps_its_matrix_products_to_one_thread():
    """-j N keeps N cores busy and no more: a forked worker does not inherit the
    parent's BLAS threads (one per core), which the engine's 1x1 products would use."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from cnnfilters.run import workers as run_module

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=context, initializer=run_module._worker_start,
                             initargs=(os.getpid(),)) as pool:  # fmt: skip
        threads = pool.submit(_blas_threads).result(timeout=60)
    assert threads and set(threads) == {1}


def _chunk(tmp_path: Path, names: list[str]) -> list:
    from cnnfilters.inputs import Source

    rng = np.random.default_rng(9)
    sources = []
    for name in names:
        path = tmp_path / name
        if name.startswith("bad"):
            path.write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
        elif name.endswith(".gif"):
            frames = [Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).convert("P")
                      for _ in range(3)]  # fmt: skip
            frames[0].save(path, save_all=True, append_images=frames[1:])
        else:
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(path)
        sources.append(Source(path))
    return sources


def test_a_chunk_done_in_steps_keeps_each_inputs_own_result(tmp_path, monkeypatch):
    """A chunk runs its inputs a step at a time; each input still gets its own entries:
    a bad file fails alone, a file of several frames writes each, and the outputs
    are those of the inputs run one by one."""
    from cnnfilters.run import steps as run_module

    names = ["a.png", "bad.png", "c.png", "frames.gif", "e.png"]
    sources = _chunk(tmp_path, names)
    from cnnfilters.images import ReadOptions

    every = ReadOptions(all_frames=True)
    settings = Settings(destination=Destination(out_dir=tmp_path / "chunk"), read=every, keep=False)
    _, chunked = run_module.process_sources(GrayscaleOptions(), sources, settings, 1)
    alone = Settings(destination=Destination(out_dir=tmp_path / "alone"), read=every, keep=False)
    single = [run_module.process_source(GrayscaleOptions(), source, alone, 1) for source in sources]
    assert [len(items) for items in chunked] == [1, 1, 1, 3, 1]
    assert [[item.error is None for item in items] for items in chunked] == [
        [True], [False], [True], [True] * 3, [True]]  # fmt: skip
    assert "bad.png" in chunked[1][0].error
    for ours, theirs in zip(chunked, single, strict=True):
        assert [item.checks for item in ours] == [item.checks for item in theirs]
        assert [item.notices for item in ours] == [item.notices for item in theirs]
        for mine, other in zip(ours, theirs, strict=True):
            for file, alone_file in zip(mine.outputs, other.outputs, strict=True):
                assert Path(file).read_bytes() == Path(alone_file).read_bytes()


def test_a_chunks_decoded_images_are_bounded_between_steps(tmp_path, monkeypatch):
    """Once a chunk's decoded images hold _STEP_BYTES, the inputs decoded so far finish
    before the next is decoded (a chunk of large images goes one by one)."""
    from cnnfilters.run import steps as run_module

    sources = _chunk(tmp_path, [f"{index}.png" for index in range(5)])
    events = []
    real_load, real_write = run_module.load_frames, run_module.write_result

    def load(path, *args, **kwargs):
        events.append(("load", Path(path).name))
        return real_load(path, *args, **kwargs)

    def write(result, image, *args, **kwargs):
        events.append(("write", image.path.name))
        return real_write(result, image, *args, **kwargs)

    monkeypatch.setattr(run_module, "load_frames", load)
    monkeypatch.setattr(run_module, "write_result", write)
    settings = Settings(destination=Destination(out_dir=tmp_path / "out"), keep=False)
    run_module.process_sources(GrayscaleOptions(), sources, settings, 1)
    assert [kind for kind, _ in events] == ["load"] * 5 + ["write"] * 5  # all small: one group
    events.clear()
    monkeypatch.setattr(run_module, "_STEP_BYTES", 2 * 12 * 10 * 3)  # two images' worth
    settings = Settings(destination=Destination(out_dir=tmp_path / "out2"), keep=False)
    run_module.process_sources(GrayscaleOptions(), sources, settings, 1)
    assert [kind for kind, _ in events] == ["load", "load", "write", "write"] * 2 + [
        "load", "write"]  # fmt: skip


def test_a_chunk_makes_each_output_folder_once(tmp_path, monkeypatch):
    """A chunk's inputs mostly share an output folder: it is made (or found) once for
    them, and each folder of a mirrored tree is made for the inputs in it."""
    from cnnfilters.inputs import Source
    from cnnfilters.run import steps as run_module

    tree = tmp_path / "tree"
    for sub in ("a", "a/b", "c"):
        (tree / sub).mkdir(parents=True)
    names = ["a/1.png", "a/2.png", "a/b/3.png", "a/b/4.png", "c/5.png", "c/6.png"]
    rng = np.random.default_rng(3)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tree / name)
    made = []
    real = run_module.make_folder

    def counting(folder):
        made.append(folder)
        real(folder)

    monkeypatch.setattr(run_module, "make_folder", counting)
    out = tmp_path / "out"
    settings = Settings(destination=Destination(out_dir=out), keep=False)
    sources = [Source(tree / name, root=tree) for name in names]
    _, results = run_module.process_sources(GrayscaleOptions(), sources, settings, 1)
    assert all(item.error is None for items in results for item in items)
    assert made == [out / "a", out / "a" / "b", out / "c"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a/1.grayscale.png", "a/2.grayscale.png", "a/b/3.grayscale.png",
        "a/b/4.grayscale.png", "c/5.grayscale.png", "c/6.grayscale.png"]  # fmt: skip


def _ties_bt601() -> np.ndarray:
    """RGB triples whose BT.601 luma is exactly half-way between two levels."""
    r, g, b = np.meshgrid(np.arange(0, 256, 5), np.arange(0, 256, 3), np.arange(256),
                          indexing="ij")  # fmt: skip
    tie = (299 * r + 587 * g + 114 * b) % 1000 == 500
    return np.stack([r[tie], g[tie], b[tie]], axis=1).astype(np.uint8)


@pytest.mark.parametrize("weights", ["bt601", "bt709", "0.5,0.5,0.5"])
@pytest.mark.parametrize("maps", [False, True])
def test_small_images_checked_side_by_side_get_what_they_get_alone(tmp_path, monkeypatch,
                                                                   weights, maps):  # fmt: skip
    """A chunk's small 8-bit images of one size have their levels, float64 formula and
    Pillow reference computed side by side, as one wide image: each image's
    figures, maps, notices (values clipped) and output bytes are still those it
    gets alone. Ties of the rounding, gray inputs, and images of other sizes or
    depths (not put side by side) among them."""
    from cnnfilters import commands
    from cnnfilters.inputs import Source
    from cnnfilters.run import steps as run_module

    rng = np.random.default_rng(21)
    ties = _ties_bt601()
    images = {}
    for index in range(5):
        rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        rgb.reshape(-1, 3)[: 40 + index] = ties[rng.integers(0, len(ties), 40 + index)]
        images[f"rgb{index}.png"] = Image.fromarray(rgb)
    for index in range(2):
        images[f"gray{index}.png"] = Image.fromarray(rng.integers(0, 256, (16, 16), np.uint8))
    images["other-size.png"] = Image.fromarray(rng.integers(0, 256, (16, 17, 3), np.uint8))
    images["deep.png"] = Image.fromarray(rng.integers(0, 65536, (16, 16), np.uint16))
    sources = []
    for name, image in images.items():
        image.save(tmp_path / name)
        sources.append(Source(tmp_path / name))
    shared = []
    real = commands.grayscale._luma_side_by_side

    def counting(works):  # how many of ``works`` got their strip computed side by side
        real(works)
        shared.append(sum(work.shared is not None for work in works))

    monkeypatch.setattr(commands.grayscale, "_luma_side_by_side", counting)
    command = GrayscaleOptions(weights=weights)

    def settings(folder: str) -> Settings:
        return Settings(destination=Destination(out_dir=tmp_path / folder), maps=maps,
                        keep=False)  # fmt: skip

    _, together = run_module.process_sources(command, sources, settings("together"), 1)
    assert sorted(shared) == [2, 5]  # the RGB images, the gray ones; not the others
    alone = [run_module.process_source(command, source, settings("alone"), 1)
             for source in sources]  # fmt: skip
    assert len(shared) == 2  # alone, nothing is shared
    for ours, theirs in zip(together, alone, strict=True):
        (mine,), (other,) = ours, theirs
        assert mine.error is None and other.error is None
        assert mine.notices == other.notices
        if weights == "0.5,0.5,0.5":  # 1.5 times the gray level: bright pixels clip
            assert any("were clipped" in notice for notice in mine.notices)
        assert len(mine.checks) == len(other.checks) >= 1
        for a, b in zip(mine.checks, other.checks, strict=True):
            assert dataclasses.replace(a, maps=None) == dataclasses.replace(b, maps=None)
            assert (a.maps is None) == (b.maps is None) == (not maps)
            if maps:
                np.testing.assert_array_equal(a.maps.difference, b.maps.difference)
                np.testing.assert_array_equal(a.maps.reference, b.maps.reference)
        for file, alone_file in zip(mine.outputs, other.outputs, strict=True):
            assert Path(file).read_bytes() == Path(alone_file).read_bytes()


def test_work_shared_by_a_chunk_that_fails_is_done_by_each_input(tmp_path, monkeypatch):
    """Should the shared work fail, each input does its own, with the same results."""
    from cnnfilters import commands
    from cnnfilters.run import steps as run_module

    sources = _chunk(tmp_path, ["a.png", "b.png", "c.png"])

    def broken(works):
        raise MemoryError

    settings = Settings(destination=Destination(out_dir=tmp_path / "fine"), keep=False)
    _, fine = run_module.process_sources(GrayscaleOptions(), sources, settings, 1)
    monkeypatch.setattr(commands.grayscale, "_luma_side_by_side", broken)
    settings = Settings(destination=Destination(out_dir=tmp_path / "failed"), keep=False)
    _, failed = run_module.process_sources(GrayscaleOptions(), sources, settings, 1)
    assert [[item.checks for item in items] for items in failed] == [
        [item.checks for item in items] for items in fine]  # fmt: skip
    assert all(item.error is None for items in failed for item in items)


def test_a_chunk_a_broken_pool_refuses_is_held_and_none_after_it_is_lost(tmp_path, monkeypatch):
    """A pool that breaks while chunks are being submitted refuses one: it is held for
    the next submission, in its turn, and every input after it still runs (a
    refusal once dropped every chunk that did not fit in the next window)."""
    from concurrent.futures.process import BrokenProcessPool

    from cnnfilters.run import pool as run_module

    folder = _small_pngs(tmp_path / "in", 60, seed=4)
    monkeypatch.setattr(run_module, "_CHUNK_SECONDS", 1e-9)  # 60 chunks: more than a window
    real, calls = run_module._Tasks.submit, []

    def refusing(self, executor, chunk):
        calls.append(chunk[0][0])
        if len(calls) == 20:
            raise BrokenProcessPool("refused once")
        return real(self, executor, chunk)

    monkeypatch.setattr(run_module._Tasks, "submit", refusing)
    out = tmp_path / "out"
    settings = Settings(destination=Destination(out_dir=out), jobs=2, keep=False)
    _, summary = run(GrayscaleOptions(), expand_inputs([folder], recursive=True), settings)
    # Each input submitted once, and the refused one again.
    assert sorted(calls) == sorted([*range(60), calls[19]])
    assert len(list(out.iterdir())) == 60
    assert summary.exit_code == 0
