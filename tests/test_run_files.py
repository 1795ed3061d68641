"""The files a run writes once (--report, --html, learn's files, kernels --export)
follow the rule every image output follows: never an input, never a folder, an
existing file only with --force, and refused before any work."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run
from PIL import Image

from cnnfilters.atomic import ReportStream
from cnnfilters.errors import OutputError
from cnnfilters.inputs import stream_inputs
from cnnfilters.runfiles import check_run_files

EXIT_USAGE, EXIT_IO = 2, 3


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(30)
    for name in ("a.png", "b.png", "sub/c.png"):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / name)
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {os.fsdecode(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.parametrize("option", ["--report", "--html"])
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_run_file_naming_the_input_is_refused_before_any_work(photos, capsys, option, force):
    before = _snapshot(photos)
    code, _, err = run(capsys, "grayscale", photos / "a.png", "--out-dir", photos / "out",
                       option, photos / "a.png", *force)  # fmt: skip
    assert code == EXIT_IO
    assert err.count("\n") == 1
    assert f"{photos / 'a.png'}: an input of this run is never overwritten ({option})" in err
    assert _snapshot(photos) == before  # the input whole, no output written


def test_a_report_naming_another_input_of_the_run_is_refused(photos, capsys):
    before = _snapshot(photos)
    code, _, err = run(capsys, "gradient", photos / "a.png", photos / "b.png", "--force",
                       "--report", photos / "b.png")  # fmt: skip
    assert code == EXIT_IO
    assert "b.png: an input of this run is never overwritten (--report)" in err
    assert _snapshot(photos) == before


def test_a_report_through_a_symlink_to_an_input_is_refused(photos, capsys):
    link = photos.parent / "link.json"
    link.symlink_to(photos / "a.png")
    before = _snapshot(photos)
    code, _, err = run(capsys, "grayscale", photos / "a.png", "--out-dir", photos.parent / "o",
                       "--report", link, "--force")  # fmt: skip
    assert code == EXIT_IO, err
    assert _snapshot(photos) == before


@pytest.mark.parametrize("recursive", [False, True])
def test_a_report_naming_a_file_of_a_folder_argument_is_refused(photos, capsys, recursive):
    target = photos / ("sub/c.png" if recursive else "b.png")
    before = _snapshot(photos)
    flags = ["-r"] if recursive else []
    code, _, err = run(capsys, "grayscale", photos, *flags, "--out-dir", photos.parent / "o",
                       "--report", target, "--force")  # fmt: skip
    assert code == EXIT_IO
    assert "an input of this run is never overwritten" in err
    assert _snapshot(photos) == before
    assert not (photos.parent / "o").exists()


def test_a_report_naming_a_file_a_pattern_matches_is_refused(photos, capsys):
    before = _snapshot(photos)
    code, _, err = run(capsys, "grayscale", os.fsdecode(photos / "*.png"), "--out-dir",
                       photos.parent / "o", "--report", photos / "b.png", "--force")  # fmt: skip
    assert code == EXIT_IO
    assert "an input of this run is never overwritten" in err
    assert _snapshot(photos) == before


def test_a_file_in_a_folder_argument_that_no_run_reads_may_be_replaced_with_force(photos):
    notes = photos / "notes.json"  # not an image: a folder's run never reads it
    notes.write_text("{}")
    stream = stream_inputs([photos])
    assert check_run_files({"--report": notes}, inputs=stream, force=True) == {"--report": notes}
    with pytest.raises(OutputError, match="exists"):
        check_run_files({"--report": notes}, inputs=stream_inputs([photos]), force=False)


@pytest.mark.parametrize("option", ["--report", "--html"])
def test_an_existing_run_file_is_replaced_only_with_force(photos, capsys, option):
    report = photos.parent / "kept.out"
    report.write_text("an earlier run's report\n")
    code, _, err = run(capsys, "grayscale", photos / "a.png", "--out-dir", photos.parent / "o",
                       option, report)  # fmt: skip
    assert code == EXIT_IO
    assert f"{report}: exists (use --force to overwrite)" in err
    assert report.read_text() == "an earlier run's report\n"
    assert not (photos.parent / "o").exists()  # refused before any work
    code, _, err = run(capsys, "grayscale", photos / "a.png", "--out-dir", photos.parent / "o",
                       option, report, "--force", "-q")  # fmt: skip
    assert code == 0, err
    assert report.read_text() != "an earlier run's report\n"


def test_a_run_file_that_is_a_folder_is_refused(photos, capsys):
    code, _, err = run(capsys, "grayscale", photos / "a.png", "--out-dir", photos.parent / "o",
                       "--report", photos / "sub", "--force")  # fmt: skip
    assert code == EXIT_IO
    assert "is a directory (--report names a file)" in err


def test_two_options_naming_one_file_are_refused(photos, capsys):
    page = photos.parent / "run.out"
    code, _, err = run(capsys, "grayscale", photos / "a.png", "--out-dir", photos.parent / "o",
                       "--report", page, "--html", page)  # fmt: skip
    assert code == EXIT_USAGE
    assert "named by both --report and --html" in err
    assert not page.exists()


def test_a_named_input_whose_output_is_the_report_is_refused_up_front(photos, capsys):
    out = photos.parent / "o"
    code, _, err = run(capsys, "grayscale", photos / "a.png", photos / "b.png", "--out-dir", out,
                       "--report", out / "b.grayscale.png")  # fmt: skip
    assert code == EXIT_USAGE
    assert f"its output {out / 'b.grayscale.png'} is also the file of --report" in err
    assert not out.exists() or not any(out.iterdir())


def test_a_found_input_whose_output_is_the_report_is_refused_the_others_run(photos, capsys):
    out = photos.parent / "o"
    code, _, err = run(capsys, "grayscale", photos, "--out-dir", out, "--report",
                       out / "b.grayscale.png", "-q")  # fmt: skip
    assert code == EXIT_USAGE
    assert "b.png: its output" in err
    assert (out / "a.grayscale.png").is_file()
    report = (out / "b.grayscale.png").read_text()  # the report, not b's image
    assert '"command": "grayscale"' in report


def test_a_report_that_appears_during_the_run_is_not_replaced(tmp_path):
    target = tmp_path / "report.json"
    stream = ReportStream(target, {"schema": 1}, replace=False)
    target.write_text("written by another process meanwhile\n")
    with pytest.raises(OutputError, match="exists"):
        stream.close()
    assert target.read_text() == "written by another process meanwhile\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_learn_never_writes_its_report_over_an_input(photos, capsys):
    before = _snapshot(photos)
    code, _, err = run(capsys, "learn", "grayscale", photos / "a.png", "--out-dir",
                       photos.parent / "o", "--report", photos / "a.png", "--force")  # fmt: skip
    assert code == EXIT_IO
    assert "an input of this run is never overwritten (--report)" in err
    assert _snapshot(photos) == before


def test_learn_refuses_a_report_over_its_own_layer(photos, capsys):
    out = photos.parent / "o"
    code, _, err = run(capsys, "learn", "grayscale", photos / "a.png", "--out-dir", out,
                       "--report", out / "a.learn-grayscale.npz")  # fmt: skip
    assert code == EXIT_USAGE
    assert "named by both --report and the learned layer" in err


def test_backprop_replaces_an_existing_report_only_with_force(tmp_path, capsys):
    report = tmp_path / "r.json"
    report.write_text("kept\n")
    code, _, err = run(capsys, "backprop", "--report", report)
    assert code == EXIT_IO
    assert report.read_text() == "kept\n"
    code, _, err = run(capsys, "backprop", "--report", report, "--force", "-q")
    assert code == 0, err
    assert '"command": "backprop"' in report.read_text()


def test_kernels_export_replaces_an_existing_file_only_with_force(tmp_path, capsys):
    export = tmp_path / "k.npz"
    export.write_bytes(b"kept")
    code, _, err = run(capsys, "kernels", "--export", export)
    assert code == EXIT_IO
    assert export.read_bytes() == b"kept"
    code, _, err = run(capsys, "kernels", "--export", export, "--force")
    assert code == 0, err
    assert export.read_bytes()[:2] == b"PK"


def _learn_pair_under_a_file_size_limit(before: Path, out: Path, limit: int):
    """learn pair in a process whose files cannot grow past ``limit`` bytes (what a
    full disk does to the file being written: the write fails, EFBIG)."""
    import resource
    import signal
    import subprocess
    import sys

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "cnnfilters", "learn", "pair", before, before,
               "--out-dir", out, "-q"]  # fmt: skip
    return subprocess.run(command, preexec_fn=small_files, capture_output=True, text=True)


def test_learn_writes_all_its_files_or_none(tmp_path, capsys):
    before, out = tmp_path / "a.png", tmp_path / "o"
    noise = np.random.default_rng(31).integers(0, 256, (48, 48), dtype=np.uint8)
    Image.fromarray(noise).save(before)
    # The layer (about 1.6 kB) fits, the loss curve (about 30 kB) does not.
    done = _learn_pair_under_a_file_size_limit(before, out, 8000)
    assert done.returncode == EXIT_IO, done.stderr
    assert "loss.png: cannot write (File too large)" in done.stderr
    assert sorted(out.iterdir()) == []  # the layer written before it was taken away
    # A rerun has nothing in its way; another one skips what is whole.
    code, _, err = run(capsys, "learn", "pair", before, before, "--out-dir", out, "-q")
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.learn-pair.loss.png", "a.learn-pair.npz", "a.learn-pair.txt"]
    stamps = [p.stat().st_mtime_ns for p in sorted(out.iterdir())]
    code, out_text, err = run(capsys, "learn", "pair", before, before, "--out-dir", out,
                              "--skip-existing", "--json")  # fmt: skip
    assert code == 0, err
    assert '"skipped": true' in out_text
    assert [p.stat().st_mtime_ns for p in sorted(out.iterdir())] == stamps
