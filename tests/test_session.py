"""The library session under the command line: one run from options to exit code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from cnnfilters.commands import ConvolveOptions, GradientOptions, GrayscaleOptions, LearnOptions
from cnnfilters.errors import EXIT_CHECK_FAILED, EXIT_IO, EXIT_OK, OptionError
from cnnfilters.session import RunOptions, Session

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _steps(tmp_path: Path, height: int = 6, width: int = 9) -> Path:
    """A 6 x 9 gray image: a step of 100 between columns 3 and 4."""
    pixels = np.zeros((height, width), dtype=np.uint8)
    pixels[:, 4:] = 100
    path = tmp_path / "steps.png"
    Image.fromarray(pixels).save(path)
    return path


def test_a_run_returns_its_report_and_finish_gives_the_exit_code(tmp_path, capsys):
    image = _steps(tmp_path)
    options = RunOptions(out_dir=tmp_path / "out", quiet=True, jobs=1)
    with Session(options, collect=True) as session:
        report = session.run(GradientOptions(), [image])
        code = session.finish(report)
    assert code == EXIT_OK
    assert [item.input for item in report.inputs] == [str(image)]
    assert report.passed and report.inputs[0].checks
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["steps.dx.png", "steps.dy.png", "steps.gradient.png"]
    dx = np.asarray(Image.open(tmp_path / "out" / "steps.dx.png"))
    # The step's one column of positive differences, above mid-gray; 0 elsewhere.
    assert (dx[:, 3] > 128).all() and (np.delete(dx, 3, axis=1)[:, :-1] == 128).all()
    assert capsys.readouterr() == ("", "")  # quiet: nothing said


def test_finish_writes_the_report_and_prints_the_json(tmp_path, capsys):
    image = _steps(tmp_path)
    report_path = tmp_path / "run.json"
    options = RunOptions(out_dir=tmp_path / "out", json_=True, report=report_path, jobs=1)
    with Session(options) as session:
        code = session.finish(session.run(GrayscaleOptions(), [image]))
    assert code == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(report_path.read_text())
    assert printed["command"] == written["command"] == "grayscale"
    assert [entry["input"] for entry in written["inputs"]] == [str(image)]


def test_an_unreadable_input_is_its_own_error_and_the_others_run(tmp_path, capsys):
    image = _steps(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    options = RunOptions(out_dir=tmp_path / "out", quiet=True, jobs=1)
    with Session(options) as session:
        report = session.run(GrayscaleOptions(), [broken, image])
        code = session.finish(report)
    assert code == EXIT_IO
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.png" in err
    assert (tmp_path / "out" / "steps.grayscale.png").exists()
    assert not (tmp_path / "out" / "broken.grayscale.png").exists()


def test_collect_keeps_every_entry_and_its_maps_though_nothing_is_shown(tmp_path):
    image = _steps(tmp_path)
    options = RunOptions(out_dir=tmp_path / "out", quiet=True, jobs=1)
    with Session(options) as quiet:
        kept = quiet.run(GradientOptions(), [image])
    elsewhere = RunOptions(out_dir=tmp_path / "o2", quiet=True, jobs=1)
    with Session(elsewhere, collect=True) as session:
        collected = session.run(GradientOptions(), [image])
    assert kept.inputs == []  # a quiet run keeps counts only
    assert len(collected.inputs) == 1
    assert all(check.maps is not None for check in collected.inputs[0].checks)


def test_a_dry_run_writes_nothing_and_says_each_output(tmp_path, capsys):
    image = _steps(tmp_path)
    options = RunOptions(out_dir=tmp_path / "out", dry_run=True)
    with Session(options) as session:
        code = session.finish(session.run(GrayscaleOptions(), [image]))
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert out == f"{image} -> {tmp_path / 'out' / 'steps.grayscale.png'}\n"
    assert not (tmp_path / "out").exists()


def test_backprop_and_learn_end_in_the_same_finish(tmp_path, capsys):
    report_path = tmp_path / "backprop.json"
    with Session(RunOptions(report=report_path, quiet=True)) as session:
        code = session.finish(session.backprop((3, 4, 1), "tanh", points=2))
    assert code == EXIT_OK
    assert json.loads(report_path.read_text())["command"] == "backprop"
    image = _steps(tmp_path, 40, 40)
    options = RunOptions(out_dir=tmp_path / "learned", quiet=True)
    with Session(options) as session:
        report = session.learn(LearnOptions(what="gradient", steps=3), [image])
        code = session.finish(report)
    # Three steps do not learn the filters: the check fails, and says so.
    assert code == EXIT_CHECK_FAILED
    assert session.kernels and (tmp_path / "learned" / "steps.learn-gradient.npz").exists()


def test_a_command_names_the_option_it_refuses():
    with pytest.raises(OptionError, match=r"^bias must be a finite number") as caught:
        ConvolveOptions(kernel=np.ones((3, 3)), bias=float("nan"))
    assert caught.value.option == "bias"
    with pytest.raises(OptionError, match="kernel's weights sum to 0") as caught:
        ConvolveOptions(kernel=np.array([[0.0, 0, 0], [1, -1, 0], [0, 0, 0]]), normalize=True)
    assert caught.value.option == "normalize"


def test_the_command_line_says_the_refused_option_as_it_is_spelt(tmp_path, capsys):
    image = _steps(tmp_path)
    derivative = "0,0,0;1,-1,0;0,0,0"
    code, _, err = run_cli(capsys, "convolve", image, "--kernel", derivative, "--normalize")
    assert code == 2
    said = "cnnfilters: error: --normalize cannot be used: the kernel's weights sum to 0"
    assert err.strip() == said
    code, _, err = run_cli(capsys, "convolve", image, "--kernel", "f1", "--padding", "-1")
    assert code == 2
    assert err.strip() == "cnnfilters: error: --padding must be 'same' or an int >= 0, got -1"
