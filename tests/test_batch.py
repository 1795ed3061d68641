"""Batch work: inputs, mirrored outputs, collisions, reruns, workers, JSON lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnfilters import CnnFiltersError
from cnnfilters.batch import BatchOptions, expand_inputs, plan, run_batch
from cnnfilters.cli import app

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
        plan("grayscale", sources, {}, BatchOptions(out_dir=out))


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
        report, summary = run_batch("gradient", sources, {}, BatchOptions(out_dir=tmp_path / folder,
                                                                         jobs=jobs))  # fmt: skip
        assert summary.done == 3 and summary.failed == 0
        reports.append(report)
    names = [[Path(i.input).name for i in r.inputs] for r in reports]
    assert names[0] == names[1] == ["a.png", "b.jpg", "c.png"]
    for one, two in zip(reports[0].inputs, reports[1].inputs, strict=True):
        assert [c.to_dict() for c in one.checks] == [c.to_dict() for c in two.checks]


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
