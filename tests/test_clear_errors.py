"""Option values and odd outputs that once ended in exit 70 ("internal error"), or
allocated gigabytes first: each is one clear line and a documented exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_bounded
from helpers import run_cli as run
from PIL import Image

CLI = [sys.executable, "-m", "cnnfilters"]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    values = np.random.default_rng(18).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(values).save(path)
    return path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnfilters: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


@pytest.mark.parametrize("k", ["20000", "99999999999999999999"])
def test_a_kernel_larger_than_the_image_is_refused_before_any_allocation(k, photo):
    code, _, err = run_bounded("avgpool", photo, "-k", k, "-q")  # a 20000 x 20000 window: 6.3 GB
    assert code == 3
    assert f"kernel size {k} is larger than the padded input (64 x 80 pixels" in one_line(err)


@pytest.mark.parametrize("k", ["80", "20000", "99999999999999999999"])
def test_a_partial_window_larger_than_the_image_is_the_whole_image(k, photo):
    code, _, err = run_bounded("avgpool", photo, "-k", k, "--edge", "partial", "-q", "--raw")
    assert code == 0, err
    pooled = np.load(photo.parent / f"photo.avgpool{k}.npy")
    whole = np.asarray(Image.open(photo), dtype=np.float64).mean(axis=(0, 1))
    np.testing.assert_allclose(pooled[:, 0, 0], whole, rtol=1e-6)
    assert pooled.shape == (3, 1, 1)


@pytest.mark.parametrize(("args", "words"), [
    (["grayscale", "--weights", "1e308,1e308,1e308"], "grayscale weights must be at most 1e6"),
    (["convolve", "--kernel", "f1", "--bias", "nan"], "--bias must be a finite number within"),
    (["convolve", "--kernel", "f1", "--bias", "inf"], "--bias must be a finite number within"),
    (["convolve", "--kernel", "f1", "--bias", "1e300"],
     "--bias must be a finite number within float32's range (+-3.403e+38), got 1e+300"),
    (["grayscale", "--name", "{stem!r:>99999999999}"], "is not one of {stem}, {output}, {ext}"),
    (["grayscale", "--name", "{stem.__class__}"], "{stem.__class__} is not one of"),
    (["grayscale", "--name", "{nope}"], "{nope} is not one of"),
])  # fmt: skip
def test_wrong_option_values_are_usage_errors(args, words, photo, capsys):
    code, _, err = run(capsys, *args[:1], photo, *args[1:], "-q")
    assert code == 2
    assert words in one_line(err)
    assert sorted(p.name for p in photo.parent.iterdir()) == ["photo.png"]


@pytest.mark.parametrize(("args", "words"), [
    (["--widths", "4,100000,1"], "widths up to 512"),
    (["--widths", "4,100,100,100,100,100,100,100,100,100,100,100,100,100,100,100,100,1"],
     "at most 16 layers"),
    (["--points", "100000"], "points must be from 1 to 1000"),
    (["--seed", "-1"], "-1 is not in the range x>=0"),
])  # fmt: skip
def test_backprop_sizes_are_bounded_before_any_work(args, words):
    code, _, err = run_bounded("backprop", *args)
    assert code == 2
    assert words in one_line(err)


def test_an_out_dir_that_is_a_file_is_an_output_error(photo, capsys):
    code, _, err = run(capsys, "grayscale", photo, "--out-dir", photo, "-q")
    assert code == 3
    assert f"{photo}: is a file, not a folder for the outputs" in one_line(err)


def test_a_full_standard_output_is_exit_3(photo):
    assert Path("/dev/full").exists(), "no /dev/full here"
    for extra in (["--json"], []):
        with open("/dev/full", "w") as full:
            result = subprocess.run([*CLI, "grayscale", os.fsdecode(photo), "--force", *extra],
                                    stdout=full, stderr=subprocess.PIPE, timeout=60)  # fmt: skip
        assert result.returncode == 3
        assert result.stderr.decode().strip() == (
            "cnnfilters: error: standard output: No space left on device"
        )


def test_a_closed_standard_output_with_dash_o_is_exit_3(photo):
    result = subprocess.run([*CLI, "grayscale", os.fsdecode(photo), "-o", "-"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
                            preexec_fn=lambda: os.close(1))  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.decode().strip() == "cnnfilters: error: -o -: standard output is closed"


def test_a_reader_that_stops_early_is_not_a_failure(photo):
    """`cnnfilters commute ... | head -1`: the table's pipe closes; exit 0, nothing on stderr."""
    process = subprocess.Popen([*CLI, "commute", os.fsdecode(photo), "--force"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    process.stdout.readline()
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0 and err == b""


def test_control_characters_in_a_name_stay_on_one_escaped_line(tmp_path, capsys):
    path = tmp_path / "evil\nname\x1b[31m.png"
    path.write_bytes(b"not an image")
    code, _, err = run(capsys, "grayscale", path, "-q")
    assert code == 3
    line = one_line(err)
    assert "\x1b" not in line and "evil\\x0aname\\x1b[31m.png" in line


def test_standard_input_is_named_dash_in_errors_not_by_its_scratch_file():
    result = subprocess.run([*CLI, "grayscale", "-", "-o", "-"], input=b"garbage\n",
                            capture_output=True, timeout=60)  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.decode().strip() == "cnnfilters: error: -: not a recognised image file"


def test_only_standard_outputs_broken_pipe_is_a_reader_gone(capsys):
    """A reader that left standard output ends the run well (exit 0, tested above);
    a broken pipe of anything else is an error, and one naming no file is not
    blamed on standard output."""
    import errno

    from cnnfilters.cli.exits import exit_for

    assert exit_for(BrokenPipeError(errno.EPIPE, "Broken pipe")) == 3
    assert exit_for(OSError(errno.ENOSPC, "No space left on device")) == 3
    err = capsys.readouterr().err
    assert err == "cnnfilters: error: Broken pipe\ncnnfilters: error: No space left on device\n"
