"""EXIF kept as ImageMagick keeps it in a PNG, a "Raw profile type exif" text chunk
(hex digits), turns the image as Pillow's own reading of that chunk says: the
same pixels as ``ImageOps.exif_transpose`` of Pillow's decode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from cnnfilters import frames, pngrows
from cnnfilters.images import load_frames


def raw_profile(orientation: int) -> str:
    """ImageMagick's text: an empty line, the profile's name, its length, then hex."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = exif.tobytes()
    digits = data.hex()
    lines = [digits[i : i + 72] for i in range(0, len(digits), 72)]
    return "\nexif\n" + f"{len(data):8d}\n" + "\n".join(lines) + "\n"


def save_with_raw_profile(path, pixels: np.ndarray, orientation: int, kind: str) -> None:
    info = PngImagePlugin.PngInfo()
    text = raw_profile(orientation)
    if kind == "iTXt":
        info.add_itxt("Raw profile type exif", text, zip=True)
    else:
        info.add_text("Raw profile type exif", text, zip=kind == "zTXt")
    Image.fromarray(pixels).save(path, pnginfo=info)


def pillows_turn(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image))


RNG = np.random.default_rng(30)


@pytest.mark.parametrize("kind", ["tEXt", "zTXt", "iTXt"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("streamed", [False, True])
def test_an_imagemagick_exif_orientation_turns_the_image(
    tmp_path, monkeypatch, kind, orientation, streamed
):
    if streamed:  # the walk of pngrows would decode it, were it not turned
        monkeypatch.setattr(frames, "MAPPED_MEMORY_BYTES", 0)
    path = tmp_path / "turned.png"
    pixels = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)  # not square: a turn shows
    save_with_raw_profile(path, pixels, orientation, kind)
    (frame,) = load_frames(path, rows_once=streamed)
    expected = pillows_turn(path)
    assert expected.shape != pixels.shape or orientation == 3
    np.testing.assert_array_equal(np.asarray(frame.pixels).transpose(1, 2, 0), expected)


def test_a_sixteen_bit_png_is_turned_by_its_raw_profile_too(tmp_path):
    path = tmp_path / "deep.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", raw_profile(6))
    pixels = RNG.integers(0, 65536, (6, 10), dtype=np.uint16)
    Image.fromarray(pixels).save(path, pnginfo=info)
    (frame,) = load_frames(path)
    np.testing.assert_array_equal(frame.pixels[0], np.rot90(pixels, -1))


def test_an_exif_chunk_wins_over_a_raw_profile_as_in_pillow(tmp_path):
    path = tmp_path / "both.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", raw_profile(6))
    exif = Image.Exif()
    exif[0x0112] = 3
    pixels = RNG.integers(0, 256, (6, 10), dtype=np.uint8)
    Image.fromarray(pixels).save(path, pnginfo=info, exif=exif)
    (frame,) = load_frames(path)
    np.testing.assert_array_equal(frame.pixels[0], pillows_turn(path))
    np.testing.assert_array_equal(frame.pixels[0], pixels[::-1, ::-1])


def test_a_png_without_either_is_not_turned_and_still_streams(tmp_path):
    path = tmp_path / "plain.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "no exif here")
    Image.fromarray(RNG.integers(0, 256, (6, 10), dtype=np.uint8)).save(path, pnginfo=info)
    with Image.open(path) as image:
        assert pngrows.streamable(image, path)
    with open(path, "rb") as handle:
        assert pngrows.png_exif(handle) is None
