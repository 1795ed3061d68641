"""cnnfilters convolve (any kernel through the engine) and the exported weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import naive_conv2d
from helpers import run_cli as run
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cnnfilters import CnnFiltersError, avgpool, conv2d, gradients, grayscale
from cnnfilters import reference as ref
from cnnfilters.kernels import NAMED_KERNELS, load_kernel_file, parse_kernel

runner = CliRunner()


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(8)
    Image.fromarray(rng.integers(0, 256, (21, 26, 3), dtype=np.uint8)).save(path)
    return path


def invoke(*args):
    from cnnfilters.cli import app

    return runner.invoke(app, [str(a) for a in args])


def test_parse_kernel_rows_and_names():
    np.testing.assert_array_equal(parse_kernel("0,0,0;0,-1,0;0,1,0"), NAMED_KERNELS["f1"])
    np.testing.assert_array_equal(parse_kernel(" 1 2 ; 3 4 "), [[1, 2], [3, 4]])
    assert parse_kernel("Sobel-X").shape == (3, 3)
    assert NAMED_KERNELS["gaussian5"].sum() == pytest.approx(1.0)
    assert NAMED_KERNELS["box3"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2;3", r"different lengths \[2, 1\]"),
        ("1,a;3,4", "'a', which is not a number"),
        ("", "empty"),
        ("1,2;;3,4", "empty row"),
        ("1,inf", "not finite"),
    ],
)
def test_malformed_kernels_are_clear_errors(text, message):
    with pytest.raises(CnnFiltersError, match=message):
        parse_kernel(text)


def test_kernel_files(tmp_path):
    (tmp_path / "k.txt").write_text("1 0 -1\n2 0 -2\n1 0 -1\n")
    np.testing.assert_array_equal(load_kernel_file(tmp_path / "k.txt"), -NAMED_KERNELS["sobel-x"])
    (tmp_path / "k.json").write_text(json.dumps([[[[1.0]], [[2.0]], [[3.0]]]]))
    assert load_kernel_file(tmp_path / "k.json").shape == (1, 3, 1, 1)
    np.save(tmp_path / "k.npy", np.ones((2, 1, 3, 3)))
    assert load_kernel_file(tmp_path / "k.npy").shape == (2, 1, 3, 3)
    (tmp_path / "ragged.json").write_text("[[1, 2], [3]]")
    with pytest.raises(CnnFiltersError, match="not a kernel"):
        load_kernel_file(tmp_path / "ragged.json")
    np.save(tmp_path / "k3.npy", np.ones((2, 3, 3)))
    with pytest.raises(CnnFiltersError, match="2-D matrix or a 4-D"):
        load_kernel_file(tmp_path / "k3.npy")
    with pytest.raises(CnnFiltersError, match=r"must be \.txt, \.json or \.npy"):
        load_kernel_file(tmp_path / "k.png")


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_the_direct_reference_is_the_naive_correlation_whole_and_by_strips(data):
    """The reference convolve is checked against equals nested loops, for every
    padding mode (padding up to the kernel's size, more than the image for
    reflect and circular), stride and groups, with a bias; and the same values
    come strip by strip, each strip padded from np.pad's own row numbers."""
    groups = data.draw(st.integers(1, 2))
    c_in, c_out = groups * data.draw(st.integers(1, 2)), groups * data.draw(st.integers(1, 2))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    stride = data.draw(st.integers(1, 3))
    padding = data.draw(st.integers(0, max(kh, kw)))
    mode = data.draw(st.sampled_from(["zeros", "replicate", "reflect", "circular"]))
    height = data.draw(st.integers(max(1, kh - 2 * padding), 9))
    width = data.draw(st.integers(max(1, kw - 2 * padding), 9))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(-50, 50, (c_in, height, width)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in // groups, kh, kw))
    bias = rng.standard_normal(c_out)
    geometry = {"stride": stride, "padding": padding, "padding_mode": mode, "groups": groups}
    whole = ref.direct_correlation(x, weight, bias, **geometry)
    loops = naive_conv2d(
        x,
        weight,
        bias,
        stride=(stride, stride),
        padding=(padding, padding),
        groups=groups,
        padding_mode=mode,
    )
    np.testing.assert_allclose(whole, loops, rtol=1e-12, atol=1e-9)
    rows = whole.shape[1]
    step = data.draw(st.integers(1, rows))
    strips = [
        ref.direct_correlation(x, weight, bias, rows=(first, min(rows, first + step)), **geometry)
        for first in range(0, rows, step)
    ]
    np.testing.assert_allclose(np.concatenate(strips, axis=1), whole, rtol=1e-12, atol=1e-9)


def test_convolve_matches_the_direct_reference(photo):
    result = invoke("convolve", photo, "--kernel", "sobel-x", "--json", "--raw")
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)["inputs"][0]["checks"][0]
    assert check["passed"] and check["max_abs"] <= check["tolerance"]
    values = np.load(photo.with_name("photo.convolve.npy"))
    assert values.shape == (3, 21, 26)  # a colour input stays colour
    with Image.open(photo.with_name("photo.convolve.png")) as image:
        assert image.mode == "RGB" and image.size == (26, 21)
    result = invoke("convolve", photo, "--kernel", "sobel-x", "--on", "gray", "--force", "--raw")
    assert result.exit_code == 0, result.output
    assert np.load(photo.with_name("photo.convolve.npy")).shape == (1, 21, 26)


def _picture(photo, *options):
    """convolve's values (.npy), its picture's pixels, and the note that says how."""
    result = invoke("convolve", photo, *options, "--raw", "--force", "--json")
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["inputs"][0]["notices"]
    values = np.load(photo.with_name("photo.convolve.npy")).astype(np.float64)
    with Image.open(photo.with_name("photo.convolve.png")) as image:
        pixels = np.moveaxis(np.asarray(image), -1, 0).astype(np.float64)
    return values, pixels, [n for n in notes if n.startswith("picture: ")]


def test_a_blur_or_a_sharpen_is_clipped_to_the_levels_in_colour(photo):
    values, pixels, notes = _picture(photo, "--kernel", "sharpen")
    np.testing.assert_array_equal(pixels, np.clip(np.floor(values + 0.5), 0, 255))
    outside = int(np.count_nonzero((values < -0.5) | (values >= 255.5)))
    assert outside > 0
    assert notes == [
        f"picture: clip: pixel = value, rounded; {outside} values outside 0..255 clipped"
    ]
    values, pixels, notes = _picture(photo, "--kernel", "gaussian5")
    np.testing.assert_array_equal(pixels, np.floor(values + 0.5))
    assert notes == ["picture: clip: pixel = value, rounded"]


def test_a_derivative_is_drawn_signed_and_map_chooses_otherwise(photo):
    values, pixels, notes = _picture(photo, "--kernel", "sobel-x")
    (note,) = notes
    units = float(note.rsplit("* ", 1)[1])
    assert note.startswith("picture: signed: value = (pixel - 128) * ")
    assert units == pytest.approx(np.abs(values).max() / 127, rel=1e-5)
    # units is printed to 6 digits: its rounding, times 128 levels, on top of half a level
    np.testing.assert_allclose((pixels - 128) * units, values, atol=units * (0.5 + 1e-3))
    values, pixels, notes = _picture(photo, "--kernel", "sobel-x", "--map", "clip")
    np.testing.assert_array_equal(pixels, np.clip(np.floor(values + 0.5), 0, 255))
    values, pixels, notes = _picture(photo, "--kernel", "sharpen", "--map", "scale")
    low, units = float(values.min()), float(notes[0].rsplit("* ", 1)[1])
    assert notes[0].startswith(f"picture: scale: value = {low:.6g} + pixel * ")
    np.testing.assert_allclose(low + pixels * units, values, atol=units * (0.5 + 1e-3))
    assert pixels.min() == 0 and pixels.max() == 255


@pytest.mark.parametrize(
    "args",
    [
        ["--kernel", "f1", "--padding", "1", "--stride", "2"],
        ["--kernel", "box3", "--padding-mode", "reflect", "--on", "rgb"],
        ["--kernel", "1,1,1;1,1,1;1,1,1", "--normalize", "--bias", "5"],
        ["--kernel", "laplacian", "--padding", "0", "--padding-mode", "circular"],
    ],
)
def test_convolve_options(args, photo):
    result = invoke("convolve", photo, *args, "--json", "--force")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"]


def test_convolve_with_a_full_tensor(photo, tmp_path):
    np.save(tmp_path / "mix.npy", np.random.default_rng(1).standard_normal((2, 3, 3, 3)))
    result = invoke(
        "convolve", photo, "--kernel-file", tmp_path / "mix.npy", "--on", "rgb", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inputs"][0]["info"]["weight_shape"] == [2, 3, 3, 3]
    result = invoke(
        "convolve", photo, "--kernel-file", tmp_path / "mix.npy", "--force", "--on", "gray"
    )
    assert result.exit_code == 3 and "takes 3 input channels, the image has 1" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kernel", "1,2;3,4"], "--padding same needs an odd kernel size, got 2 x 2"),
        (["--kernel", "1,2;3"], "different lengths"),
        ([], "exactly one of --kernel"),
        (["--kernel", "f1", "--padding", "x"], "--padding must be an int or 'same'"),
        (["--kernel", "1,-1", "--normalize", "--padding", "0"], "sum to 0"),
    ],
)
def test_convolve_errors(args, message, photo):
    result = invoke("convolve", photo, *args)
    assert result.exit_code in (2, 3) and message in result.stderr


def test_exported_weights_reproduce_the_constructions(tmp_path):
    result = invoke("kernels", "--export", tmp_path / "k.npz", "-k", "2")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "k.npz") as archive:  # closes the archive
        data = dict(archive)
    meta = {m["name"]: m for m in json.loads(str(data["metadata"]))}
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (3, 12, 14)).astype(np.float32)
    gray = rgb[:1]

    def run(name, x):
        m = meta[name]
        return conv2d(
            x, data[f"{name}.weight"], stride=m["stride"], padding=m["padding"], groups=m["groups"]
        )

    both = run("gradient", gray)
    np.testing.assert_array_equal(both[0:1], gradients(gray)[0])
    np.testing.assert_array_equal(both[1:2], gradients(gray)[1])
    np.testing.assert_array_equal(run("grayscale-bt601", rgb), grayscale(rgb))
    np.testing.assert_allclose(run("avgpool2", rgb), avgpool(rgb, 2), rtol=1e-6)
    np.testing.assert_allclose(
        run("avgpool2-onehot", gray).sum(axis=0, keepdims=True), avgpool(gray, 2), rtol=1e-6
    )
    assert invoke("kernels", "--export", tmp_path / "k.npz").exit_code == 3  # exists
    assert invoke("kernels", "--export", tmp_path / "k.json").exit_code == 0
    listed = json.loads((tmp_path / "k.json").read_text())
    assert listed[0]["name"] == "gradient" and listed[0]["padding"] == 1


def test_the_named_sharpen_kernel_is_pillows_and_passes_its_check(tmp_path, capsys):
    """Pillow's ImageFilter.SHARPEN, as a named kernel of convolve."""
    from PIL import ImageFilter

    pillow = ImageFilter.SHARPEN.filterargs  # (size, scale, offset, kernel)
    size, scale, _, weights = pillow
    expected = np.array(weights, dtype=np.float32).reshape(size) / np.float32(scale)
    np.testing.assert_array_equal(NAMED_KERNELS["sharpen"], expected)
    path = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(36).integers(0, 256, (9, 12), dtype=np.uint8)).save(path)
    code, out, err = run(capsys, "convolve", path, "--kernel", "sharpen", "--json")
    assert code == 0, err
    assert json.loads(out)["inputs"][0]["checks"][0]["passed"]
