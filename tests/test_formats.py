"""The output format follows the file name's extension, for -o and --name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run
from PIL import Image

from cnnfilters.outputs import output_complete

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PHOTO = SAMPLES / "ihc.png"


def _format(path: Path) -> str:
    with Image.open(path) as image:
        return image.format


def _mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


@pytest.mark.parametrize(
    ("name", "fmt", "exact"),
    [
        ("g.png", "PNG", True),
        ("g.jpg", "JPEG", False),
        ("g.jpeg", "JPEG", False),
        ("g.tif", "TIFF", True),
        ("g.tiff", "TIFF", True),
        ("g.webp", "WEBP", True),
        ("g", "PNG", True),
    ],
)
def test_o_writes_the_format_its_extension_names(tmp_path, capsys, name, fmt, exact):
    code, _, err = run(capsys, "grayscale", PHOTO, "-o", tmp_path / name, "-q")
    assert code == 0, err
    run(capsys, "grayscale", PHOTO, "-o", tmp_path / "ref.png", "-q")
    with Image.open(tmp_path / "ref.png") as image:
        reference = np.asarray(image)
    with Image.open(tmp_path / name) as image:
        assert image.format == fmt
        pixels = np.asarray(image.convert("L"))
    if exact:  # lossless: the pixels that were checked
        np.testing.assert_array_equal(pixels, reference)
    else:  # JPEG at quality 92
        assert np.abs(pixels.astype(int) - reference).mean() < 3
    assert output_complete(tmp_path / name)


def test_several_outputs_take_o_s_extension(tmp_path, capsys):
    code, _, err = run(capsys, "gradient", PHOTO, "-o", tmp_path / "g.webp", "-q")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "g.dx.webp",
        "g.dy.webp",
        "g.gradient.webp",
    ]
    assert {_format(p) for p in tmp_path.iterdir()} == {"WEBP"}


def test_the_name_template_chooses_the_format_of_a_batch(tmp_path, capsys):
    code, _, err = run(
        capsys, "avgpool", SAMPLES, "--out-dir", tmp_path, "--name", "{stem}-k2.tif", "-q"
    )
    assert code == 0, err
    files = sorted(tmp_path.iterdir())
    assert len(files) == 4 and {_format(p) for p in files} == {"TIFF"}


@pytest.mark.parametrize("option", ["-o", "--name"])
def test_an_extension_no_format_has_is_a_usage_error_before_any_work(tmp_path, capsys, option):
    target = "out.gif" if option == "-o" else "{stem}.gif"
    code, out, err = run(
        capsys,
        "grayscale",
        PHOTO,
        option,
        tmp_path / target if option == "-o" else target,
        "--out-dir" if option == "--name" else "-q",
        *([tmp_path] if option == "--name" else []),
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "cannot write .gif images" in err and ".webp" in err
    assert list(tmp_path.iterdir()) == []


def test_a_16_bit_result_is_refused_for_jpeg_before_its_work_and_the_batch_goes_on(
    tmp_path, capsys
):
    folder = tmp_path / "in"
    folder.mkdir()
    deep = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20
    Image.fromarray(deep).save(folder / "deep.png")
    Image.open(PHOTO).save(folder / "photo.png")
    code, _, err = run(
        capsys,
        "grayscale",
        folder,
        "--out-dir",
        tmp_path / "o",
        "--name",
        "{stem}.jpg",
        "-q",
        "-j",
        "1",
    )
    assert code == 2
    assert err == (
        f"cnnfilters: error: {folder / 'deep.png'}: {tmp_path / 'o' / 'deep.jpg'}: "
        "a 16-bit result cannot "
        "be written as JPEG (8 bits a sample); name it .png or .tif\n"
    )
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["photo.jpg"]
    # TIFF holds it, 16 bits a sample.
    code, _, err = run(capsys, "grayscale", folder / "deep.png", "-o", tmp_path / "deep.tif")
    assert code == 0, err
    with Image.open(tmp_path / "deep.tif") as image:
        assert np.asarray(image).dtype == np.uint16


def test_jpeg_leaves_alpha_out_and_says_so(tmp_path, capsys):
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba).save(tmp_path / "a.png")
    code, out, err = run(capsys, "grayscale", tmp_path / "a.png", "-o", tmp_path / "a.jpg")
    assert code == 0, err
    assert "JPEG has no alpha: the alpha channel is left out" in out
    assert _mode(tmp_path / "a.jpg") == "L"
    code, _, err = run(capsys, "grayscale", tmp_path / "a.png", "-o", tmp_path / "a.tif", "-q")
    assert code == 0 and _mode(tmp_path / "a.tif") == "LA"


def test_a_cut_jpeg_or_webp_is_not_complete(tmp_path, capsys):
    for name in ("c.jpg", "c.webp"):
        run(capsys, "grayscale", PHOTO, "-o", tmp_path / name, "-q")
        path = tmp_path / name
        assert output_complete(path)
        path.write_bytes(path.read_bytes()[:-1])
        assert not output_complete(path)
