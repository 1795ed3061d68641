"""The image layer: decoding into our own memory, the streaming PNG writer, strips, levels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageFile, ImageOps

from cnnfilters import conv2d, gradients
from cnnfilters.images import ReadOptions, load_image, pil_image
from cnnfilters.kernels import gradient_weight
from cnnfilters.levels import (
    Rows,
    mosaic,
    quantize,
    signed_mosaic,
    signed_to_image,
    units_per_level,
    unsigned_to_image,
)
from cnnfilters.outputs import save_array, save_image

RNG = np.random.default_rng(5)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_png_writer_round_trips_8_bit(channels, level, tmp_path):
    pixels = RNG.integers(0, 256, (channels, 37, 51), dtype=np.uint8)
    save_image(pixels, tmp_path / "x.png", compress_level=level)
    with Image.open(tmp_path / "x.png") as image:
        back = np.asarray(image)
    expected = pixels[0] if channels == 1 else np.moveaxis(pixels, 0, -1)
    np.testing.assert_array_equal(back, expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_writer_round_trips_16_bit_and_alpha(channels, tmp_path):
    pixels = RNG.integers(0, 65536, (channels, 9, 14), dtype=np.uint16)
    alpha = RNG.integers(0, 65536, (9, 14), dtype=np.uint16)
    save_image(pixels, tmp_path / "deep.png", alpha=alpha)
    loaded = load_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(loaded.pixels, pixels)
    np.testing.assert_array_equal(loaded.alpha, alpha)


def test_rows_are_written_strip_by_strip(tmp_path):
    full = RNG.integers(0, 256, (3, 100, 40), dtype=np.uint8)

    def strips():
        for first in range(0, 100, 7):
            yield full[:, first : first + 7]

    save_image(Rows(full.shape, np.uint8, strips), tmp_path / "rows.png")
    with Image.open(tmp_path / "rows.png") as image:
        np.testing.assert_array_equal(np.asarray(image), np.moveaxis(full, 0, -1))
    values = full.astype(np.float32) / 3
    pieces = lambda: (values[:, i : i + 9] for i in range(0, 100, 9))  # noqa: E731
    save_array(Rows(full.shape, np.float32, pieces), tmp_path / "rows.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "rows.npy"), values)


@pytest.mark.parametrize("mode", ["zeros", "replicate", "reflect", "circular"])
def test_conv2d_rows_are_slices_of_the_whole(mode):
    x = RNG.integers(0, 256, (3, 41, 23), dtype=np.uint8)
    whole = conv2d(x, gradient_weight(3), padding=1, padding_mode=mode, groups=3)
    for first, stop in [(0, 1), (0, 7), (5, 30), (39, 41), (40, 41)]:
        part = conv2d(x, gradient_weight(3), padding=1, padding_mode=mode, groups=3,
                      rows=(first, stop))  # fmt: skip
        np.testing.assert_array_equal(part, whole[:, first:stop])
    dy, _ = gradients(x, mode, rows=(10, 20))
    np.testing.assert_array_equal(dy, gradients(x, mode)[0][:, 10:20])


def test_quantize_rounds_half_up_and_clips():
    values = np.array([-3.0, 0.49, 0.5, 1.5, 2.5, 254.5, 300.0], dtype=np.float32)
    np.testing.assert_array_equal(quantize(values), [0, 0, 1, 2, 3, 255, 255])
    np.testing.assert_array_equal(quantize(np.array([65534.5, 7e4]), 16), [65535, 65535])


def test_signed_maps_put_zero_at_mid_gray_without_clipping():
    values = np.array([-254.0, -1.0, 0.0, 1.0, 254.0], dtype=np.float32)
    pixels, units = signed_to_image(values)
    assert units == 2.0
    np.testing.assert_array_equal(pixels, [1, 128, 128, 129, 255])  # 127.5 and 128.5 round up
    same_scale, _ = signed_to_image(values[:2], units=units)
    np.testing.assert_array_equal(same_scale, pixels[:2])


@pytest.mark.parametrize("tiny", [np.float32(1.1754944e-38), np.float32(1e-45), 1e-310])
def test_maps_of_the_smallest_floats_are_drawn_to_full_scale(tiny):
    """A map whose largest value is near the smallest float: one level's value does not
    fit float32 as a reciprocal (nor float64 for subnormals); the map is still
    drawn to full scale, with no warning."""
    dtype = np.float32 if isinstance(tiny, np.float32) else np.float64
    signed, units = signed_to_image(np.array([-tiny, 0.0, tiny], dtype=dtype))
    assert units > 0 and signed.tolist() == [1, 128, 255]
    unsigned, units = unsigned_to_image(np.array([0.0, tiny], dtype=dtype))
    assert units > 0 and unsigned.tolist() == [0, 255]


def test_a_map_of_the_smallest_float_takes_it_as_its_level():
    """5e-324 / 127 underflows to 0, which would scale nothing: a level is then the
    smallest float itself, the finest scale there is."""
    assert units_per_level(5e-324, 127) == 5e-324
    signed, units = signed_to_image(np.array([-5e-324, 0.0, 5e-324]))
    assert units == 5e-324 and signed.tolist() == [127, 128, 129]


@settings(max_examples=150, deadline=None)
@given(
    values=hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 7)),
        elements=st.one_of(st.floats(-1e6, 1e6, width=32),
                           st.sampled_from([np.inf, -np.inf, np.nan, 0.0, -0.0])),
    ),
    gap=st.integers(0, 2),
    rows=st.integers(1, 9),
    bit_depth=st.sampled_from([8, 16]),
)  # fmt: skip
def test_a_signed_mosaic_drawn_by_strips_is_the_one_drawn_whole(values, gap, rows, bit_depth):
    """Channels side by side (unless an image's 1 or 3), the scale from the largest
    finite value, infinities at the ends and NaN at 0: the pixels and the scale
    of signed_to_image on the whole mosaic, for strips of any number of rows."""
    height = values.shape[1]

    def strips():
        for first in range(0, height, rows):
            yield values[:, first : first + rows]

    pixels, units = signed_mosaic(Rows(values.shape, values.dtype.type, strips), gap, bit_depth)
    whole, whole_units = signed_to_image(mosaic(values, gap), bit_depth)
    assert units == whole_units
    assert pixels.dtype == whole.dtype and pixels.shape == whole.shape
    np.testing.assert_array_equal(pixels, whole)


# ------------------------------------------------- decoding into our memory


def _saved(
    tmp_path, mode: str, fmt: str, size: tuple[int, int] = (23, 31), **info
) -> tuple[Image.Image, object]:
    shape = size + {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    image = Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8), mode)
    path = tmp_path / f"x-{mode}.{fmt}"
    image.save(path, **info)
    return image, path


@pytest.mark.parametrize(
    ("mode", "fmt", "size"),
    [
        ("L", "png", (23, 31)),
        ("RGB", "png", (23, 31)),
        ("RGBA", "png", (23, 31)),
        ("L", "png", (2100, 2000)),
        ("L", "jpg", (2100, 2000)),
        ("RGB", "png", (1100, 1000)),
        ("RGB", "jpg", (1100, 1000)),
        ("RGBA", "png", (1100, 1000)),
    ],
)
def test_png_and_jpeg_are_decoded_into_an_array_of_ours(mode, fmt, size, tmp_path):
    # From 4 MB as Pillow lays them out, into a memory map of ours, RGB compacted there.
    _, path = _saved(tmp_path, mode, fmt, size=size)
    with Image.open(path) as pillow:
        expected = np.asarray(pillow.convert("RGB" if mode == "RGBA" else mode))
        expected_alpha = np.asarray(pillow.getchannel("A")) if mode == "RGBA" else None
        gray = np.asarray(pillow.convert("RGB" if mode == "RGBA" else mode).convert("L"))
    loaded = load_image(path, ReadOptions(alpha="keep"))
    planes = loaded.pixels[0] if mode == "L" else np.moveaxis(loaded.pixels, 0, -1)
    assert planes.flags.c_contiguous and not planes.flags.writeable
    np.testing.assert_array_equal(planes, expected)
    if expected_alpha is not None:
        np.testing.assert_array_equal(loaded.alpha, expected_alpha)
    np.testing.assert_array_equal(np.asarray(loaded.pil.convert("L")), gray)
    strip = pil_image(loaded.pixels[:, 5:9])
    np.testing.assert_array_equal(np.asarray(strip.convert("L")), gray[5:9])


@pytest.mark.parametrize("size", [(23, 31), (1100, 1000)])  # Pillow's memory, then ours
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_an_oriented_jpeg_is_turned_as_pillow_turns_it(tmp_path, size, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    _, path = _saved(tmp_path, "RGB", "jpg", size=size, exif=exif)
    loaded = load_image(path)
    with Image.open(path) as pillow:
        expected = np.asarray(ImageOps.exif_transpose(pillow))
    np.testing.assert_array_equal(np.moveaxis(loaded.pixels, 0, -1), expected)
    assert loaded.size == (size if orientation == 3 else size[::-1])
    np.testing.assert_array_equal(np.asarray(loaded.pil.convert("L")),
                                  np.asarray(Image.fromarray(expected).convert("L")))  # fmt: skip


def test_a_colour_key_and_flattening_see_the_decoded_pixels(tmp_path):
    image, path = _saved(tmp_path, "RGB", "png")
    key = tuple(int(v) for v in np.asarray(image)[0, 0])
    image.save(path, transparency=key)
    loaded = load_image(path, ReadOptions(alpha="flatten"))
    assert tuple(loaded.pixels[:, 0, 0]) == (255, 255, 255)
    np.testing.assert_array_equal(np.asarray(loaded.pil), np.moveaxis(loaded.pixels, 0, -1))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
@pytest.mark.parametrize("keeps_its_mode", [False, True])
def test_a_pillow_that_makes_memory_of_its_own_still_gives_the_pixels(
    tmp_path, monkeypatch, mode, keeps_its_mode
):
    # A Pillow that decodes into memory of its own, in the layout asked for or (one
    # whose mode cannot be set from outside) in the image's own mode.
    image, path = _saved(tmp_path, mode, "png", size=(2100, 2000) if mode == "L" else (1100, 1000))
    real_mode = image.mode

    def load_prepare(self):
        if keeps_its_mode:
            self._mode = real_mode
        self.im = Image.core.new(self.mode, self.size)

    monkeypatch.setattr(ImageFile.ImageFile, "load_prepare", load_prepare)
    loaded = load_image(path, ReadOptions(alpha="keep"))
    expected = np.asarray(image)
    planes = loaded.pixels[0] if mode == "L" else np.moveaxis(loaded.pixels, 0, -1)
    np.testing.assert_array_equal(planes, expected[..., :3] if mode == "RGBA" else expected)
    if mode == "RGBA":
        np.testing.assert_array_equal(loaded.alpha, expected[..., 3])
