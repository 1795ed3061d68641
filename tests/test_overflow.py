"""Values beyond float32, the engine's type, are refused with one clear line: a
weight, a bias, or a kernel whose results could overflow on an image. Before,
an overflowed result was infinite on both sides of the check and "passed"."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import run_cli as run
from PIL import Image

from cnnfilters.commands import ConvolveOptions
from cnnfilters.errors import CnnFiltersError
from cnnfilters.kernels import FLOAT32_MAX, load_kernel_file, parse_kernel
from cnnfilters.report import compare


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "p.png"
    pixels = np.random.default_rng(34).integers(0, 256, (9, 12), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_a_bias_beyond_float32_is_a_usage_error(photo, capsys):
    code, _, err = run(capsys, "convolve", photo, "--kernel", "f1", "--bias", "1e300", "-q")
    assert code == 2
    assert "--bias must be a finite number within float32's range" in err
    assert sorted(p.name for p in photo.parent.iterdir()) == ["p.png"]
    with pytest.raises(CnnFiltersError, match="bias must be a finite number within"):
        ConvolveOptions(kernel=np.ones((3, 3)), bias=1e39)


def test_weights_beyond_float32_are_refused_wherever_they_come_from(tmp_path):
    with pytest.raises(CnnFiltersError, match=r"kernel has 1e\+300, beyond float32's range"):
        parse_kernel("1e300, 1; 1, 1")
    with pytest.raises(CnnFiltersError, match="beyond float32's range"):
        ConvolveOptions(kernel=np.full((3, 3), -1e39))
    path = tmp_path / "big.npy"
    np.save(path, np.full((1, 1, 3, 3), 1e300))
    with pytest.raises(CnnFiltersError, match=r"big.npy: the kernel has 1e\+300"):
        load_kernel_file(str(path))


def test_a_kernel_whose_results_overflow_float32_is_refused_for_that_image(photo, capsys):
    weights = ";".join([",".join(["1e38"] * 3)] * 3)  # each finite in float32
    code, _, err = run(capsys, "convolve", photo, "--kernel", weights, "-q")
    assert code == 3
    assert "p.png: this kernel's results can reach 2.29e+41 on this image" in err
    assert sorted(p.name for p in photo.parent.iterdir()) == ["p.png"]


def test_the_bound_is_the_images_own_peak(tmp_path, capsys):
    """1e34 x 9 x 255 fits float32, x 65535 does not: an 8-bit image runs, a 16-bit
    one is refused."""
    eight, sixteen = tmp_path / "eight.png", tmp_path / "sixteen.png"
    Image.fromarray(np.full((5, 6), 200, dtype=np.uint8)).save(eight)
    Image.fromarray(np.full((5, 6), 60000, dtype=np.uint16)).save(sixteen)
    code, out, _ = run(capsys, "convolve", eight, sixteen, "--kernel",
                       ";".join([",".join(["1e34"] * 3)] * 3), "--json")  # fmt: skip
    assert code == 3
    report = json.loads(out)
    first, second = report["inputs"]
    assert first["passed"] and first["error"] is None
    assert first["checks"][0]["max_abs"] is not None
    assert "beyond float32's range" in second["error"]


def test_a_json_kernel_nested_too_deeply_is_one_clear_error(tmp_path, photo, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run(capsys, "convolve", photo, "--kernel-file", deep)
    assert code == 3
    assert err == f"cnnfilters: error: {deep}: not a kernel (lists nested too deeply)\n"


def test_an_infinite_difference_fails_its_check_and_has_no_finite_psnr():
    actual = np.array([1.0, np.inf], dtype=np.float32)
    expected = np.array([1.0, FLOAT32_MAX * 10.0])
    check = compare(actual, expected, name="c", reference="r", tolerance=1.0, peak=255.0)
    assert not check.passed
    assert check.max_abs == math.inf
    assert check.psnr_db == -math.inf
    assert check.to_dict()["psnr_db"] is None


@pytest.mark.parametrize(
    "args",
    [
        ["pair", "missing.png", "missing.png", "-k", "15", "--patches", "100000"],
        ["grayscale", "missing.png", "--patches", "100000"],
    ],
)
def test_a_learn_too_large_for_memory_is_refused_before_reading_anything(args, capsys):
    from cnnfilters.commands import LearnOptions
    from cnnfilters.learning import MAX_WORKING_BYTES, working_bytes

    code, out, err = run(capsys, "learn", *args)
    assert code == 2
    assert out == ""
    assert "missing.png" not in err  # refused before any input was looked at
    most = int(err.split("use --patches ")[1].split()[0].replace(",", ""))
    options = LearnOptions(what=args[0], k=15 if "-k" in args else None, patches=most)
    assert working_bytes(options, 2 if args[0] == "pair" else 1) <= MAX_WORKING_BYTES
    bigger = LearnOptions(what=args[0], k=15 if "-k" in args else None, patches=most + 1)
    assert working_bytes(bigger, 2 if args[0] == "pair" else 1) > MAX_WORKING_BYTES


def test_the_working_set_estimate_grows_with_patches_and_kernel():
    from cnnfilters.commands import LearnOptions
    from cnnfilters.learning import MAX_WORKING_BYTES, working_bytes

    small = working_bytes(LearnOptions(what="pair", k=3, patches=64), 1)
    assert small < MAX_WORKING_BYTES / 100  # the defaults are far from the limit
    assert working_bytes(LearnOptions(what="pair", k=3, patches=128), 1) > 1.9 * small
    assert working_bytes(LearnOptions(what="pair", k=15, patches=64), 1) > 10 * small
    assert working_bytes(LearnOptions(what="pair", k=3, patches=64), 4) > small


def test_a_convolve_result_larger_than_max_pixels_is_refused_before_the_run(tmp_path, capsys):
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((6, 10), dtype=np.uint8)).save(path)
    # 1x1 kernel, padding 45: (6 + 90) x (10 + 90) = 9,600 pixels; padding 46: 9,996.
    code, _, err = run(capsys, "convolve", path, "--kernel", "1", "--padding", "45",
                       "--max-pixels", "9600", "-q")  # fmt: skip
    assert code == 0, err
    (tmp_path / "small.convolve.png").unlink()
    code, _, err = run(capsys, "convolve", path, "--kernel", "1", "--padding", "46",
                       "--max-pixels", "9600", "-q")  # fmt: skip
    assert code == 3
    assert "small.png: the result would be 98 x 102 pixels x 1 channel(s), over" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.png"]
