"""Every integer output is the correctly rounded exact value, half up.

The expected values are computed here in integer arithmetic, without the
engine and without :mod:`cnnfilters.rounding`: luma as ``(299 R + 587 G +
114 B + 500) // 1000`` and a block mean as ``(2 S + n) // 2n`` for a block
sum ``S`` of ``n`` pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnfilters.commands import AvgpoolOptions, GradientOptions, GrayscaleOptions
from cnnfilters.images import LoadedImage
from cnnfilters.rounding import as_fractions

RNG = np.random.default_rng(16)


def loaded(pixels: np.ndarray, alpha: np.ndarray | None = None) -> LoadedImage:
    depth = 16 if pixels.dtype == np.uint16 else 8
    mode = "RGB" if pixels.shape[0] == 3 else "L"
    return LoadedImage(Path("x.png"), "PNG", mode, pixels, depth, f"uint{depth}", alpha=alpha)


def exact_luma(rgb: np.ndarray, weights=(299, 587, 114), denominator=1000) -> np.ndarray:
    r, g, b = (channel.astype(np.int64) for channel in rgb)
    total = weights[0] * r + weights[1] * g + weights[2] * b
    return (2 * total + denominator) // (2 * denominator)


def exact_block_means(x: np.ndarray, k: int, edge: str) -> np.ndarray:
    channels, height, width = x.shape
    rows = height // k if edge == "drop" else -(-height // k)
    cols = width // k if edge == "drop" else -(-width // k)
    out = np.empty((channels, rows, cols), dtype=np.int64)
    for c in range(channels):
        for a in range(rows):
            for b in range(cols):
                block = x[c, a * k : (a + 1) * k, b * k : (b + 1) * k].astype(np.int64)
                out[c, a, b] = (2 * int(block.sum()) + block.size) // (2 * block.size)
    return out


def test_every_rgb_colour_gets_its_correctly_rounded_luma():
    """All 2^24 colours, 16,782 of them exact ties (k + 1/2)."""
    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255]).astype(np.uint8)
    rgb = rgb.reshape(3, 4096, 4096)
    pixels = GrayscaleOptions().run(loaded(rgb)).outputs["grayscale"].pixels.whole()
    np.testing.assert_array_equal(pixels[0], exact_luma(rgb))


def test_the_tie_colour_of_the_report_rounds_up():
    rgb = np.array([4, 40, 16], dtype=np.uint8).reshape(3, 1, 1)  # luma exactly 26.5
    assert GrayscaleOptions().run(loaded(rgb)).outputs["grayscale"].pixels.whole().item() == 27


def test_sixteen_bit_luma_is_correctly_rounded():
    rgb = RNG.integers(0, 65536, (3, 300, 1400)).astype(np.uint16)
    rgb[:, 0, 0] = (33808, 63993, 42044)  # luma 52465.499: float32 says 52465.5
    pixels = GrayscaleOptions().run(loaded(rgb)).outputs["grayscale"].pixels.whole()
    assert pixels.dtype == np.uint16
    assert pixels[0, 0, 0] == 52465
    np.testing.assert_array_equal(pixels[0], exact_luma(rgb))


@pytest.mark.parametrize(("weights", "numerators", "denominator"), [
    ("bt709", (2126, 7152, 722), 10000),
    ("0.25,0.5,0.25", (1, 2, 1), 4),
    ("0.3,0.6,0.1", (3, 6, 1), 10),
])  # fmt: skip
def test_other_weights_round_from_their_decimal_value(weights, numerators, denominator):
    rgb = RNG.integers(0, 256, (3, 200, 300)).astype(np.uint8)
    pixels = GrayscaleOptions(weights=weights).run(loaded(rgb)).outputs["grayscale"].pixels.whole()
    np.testing.assert_array_equal(pixels[0], exact_luma(rgb, numerators, denominator))


def test_weights_become_the_decimals_they_were_written_as():
    assert as_fractions((0.299, 0.587, 0.114)) == ((299, 587, 114), 1000)
    assert as_fractions((0.2126, 0.7152, 0.0722)) == ((1063, 3576, 361), 5000)  # reduced
    # 1/3 has no decimal: its shortest repr, 0.3333333333333333, is the value used.
    assert as_fractions((1 / 3, 0.5)) == ((3333333333333333, 5 * 10**15), 10**16)


def test_gradient_works_on_the_same_gray_levels_as_grayscale():
    rgb = np.array([4, 40, 16], dtype=np.uint8).reshape(3, 1, 1).repeat(4, axis=1)
    result = GradientOptions().run(loaded(rgb))
    dy = np.concatenate(list(result.outputs["dy"].values.strips()), axis=1)
    assert dy[0, -1, 0] == -27  # zero padding: -X on the last row, X = 27


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_levels_stay_integers_and_give_the_float_levels_results(dtype):
    """The gray levels are kept in their sample type, not copied to float32; gradient
    and convolve give on them what they give on the float32 copy, and no
    difference wraps around (0 - 255 is -255, not 1)."""
    from cnnfilters import conv2d
    from cnnfilters.commands import ConvolveOptions, gray_levels

    top = np.iinfo(dtype).max
    rgb = RNG.integers(0, top + 1, (3, 9, 11)).astype(dtype)
    rgb[:, ::3] = 0
    rgb[:, 1::3] = top  # steps between the two ends
    image = loaded(rgb)
    levels = gray_levels(image)
    assert levels.dtype == dtype
    floats = levels.astype(np.float32)
    result = GradientOptions().run(image)
    assert all(check.passed for check in result.checks)
    dy = np.concatenate(list(result.outputs["dy"].values.strips()), axis=1)
    np.testing.assert_array_equal(dy[0, :-1], floats[0, 1:] - floats[0, :-1])
    assert dy.min() < -top / 2  # the steps down
    kernel = np.array([[0, -1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
    result = ConvolveOptions(kernel=kernel, on="gray").run(image)
    assert all(check.passed for check in result.checks)
    expected = conv2d(floats, kernel[None, None], padding=1)
    np.testing.assert_array_equal(result.outputs["convolve"].values, expected)


def _tie_rich(shape: tuple[int, ...], top: int) -> np.ndarray:
    """Values from few levels, so that many block sums are exact ties."""
    levels = RNG.choice([top // 2 - 1, top // 2, top // 2 + 1, top // 3], size=shape)
    return levels.astype(np.uint16 if top > 255 else np.uint8)


def _all_ties(height: int, width: int, k: int, top: int) -> np.ndarray:
    """Every block of ``n`` pixels (n even) has mean ``b + 1/2``: its base ``b`` on half
    of its pixels and ``b + 1`` on the other half, with ``b`` random."""
    x = np.zeros((1, height, width), dtype=np.uint16 if top > 255 else np.uint8)
    for top_row in range(0, height, k):
        for left in range(0, width, k):
            block = x[0, top_row : top_row + k, left : left + k]
            base = int(RNG.integers(0, top))
            flat = np.full(block.size, base)
            flat[: block.size // 2] += 1
            block[...] = RNG.permutation(flat).reshape(block.shape)
    return x


@pytest.mark.parametrize("k", range(2, 8))
@pytest.mark.parametrize("edge", ["drop", "partial"])
@pytest.mark.parametrize("top", [255, 65535])
def test_average_pooling_is_correctly_rounded(k, edge, top):
    for x in (_all_ties(40 * k + 3, 30 * k + 2, k, top), _tie_rich((1, 5 * k + 3, 7 * k), top)):
        pixels = (
            AvgpoolOptions(kernel_size=k, edge=edge)
            .run(loaded(x))
            .outputs[f"avgpool{k}"]
            .pixels.whole()
        )
        np.testing.assert_array_equal(pixels, exact_block_means(x, k, edge))


def test_the_partial_block_tie_of_the_report_rounds_up():
    x = np.full((1, 5, 7), 123, dtype=np.uint8)
    x[0, 0, 6] = 128  # the last partial block (5 rows x 2 columns) sums to 1235: mean 123.5
    pixels = (
        AvgpoolOptions(kernel_size=5, edge="partial")
        .run(loaded(x))
        .outputs["avgpool5"]
        .pixels.whole()
    )
    assert pixels.tolist() == [[[123, 124]]]


def test_pooled_alpha_is_correctly_rounded_too():
    x = _tie_rich((3, 12, 12), 255)
    alpha = _tie_rich((12, 12), 255)
    output = AvgpoolOptions(kernel_size=4).run(loaded(x, alpha=alpha)).outputs["avgpool4"]
    np.testing.assert_array_equal(output.alpha, exact_block_means(alpha[None], 4, "drop")[0])
    np.testing.assert_array_equal(output.pixels.whole(), exact_block_means(x, 4, "drop"))


def test_huge_weights_fall_back_to_python_integers():
    from cnnfilters.rounding import luma_exact

    rgb = np.array([255, 255, 255], dtype=np.uint8).reshape(3, 1, 1)
    exact = luma_exact(rgb, (1e15, 2e15, 3e15), 255.0)
    numerators, denominators = exact.values(np.array([0]))
    assert int(numerators[0]) == 6 * 10**15 * 255 and int(denominators[0]) == 1


def test_correct_ties_reaches_every_block_and_writes_only_the_doubtful():
    """Values near a tie only after the first block of 65,536 (and in the last, short
    one): each is re-rounded from its exact value; nothing else is touched. The exact
    values are integers n / 4, so n = 4m + 2 is an exact tie and rounds up."""
    from cnnfilters.rounding import Exact, correct_ties

    size = (1 << 16) * 2 + 1000
    numerators = np.full(size, 4 * 10 + 1, dtype=np.int64)  # 10.25: far from a tie
    ties = np.array([70_000, 131_071, 131_072, size - 1])
    numerators[ties] = 4 * np.array([3, 7, 200, 254]) + 2  # exact ties, x.5
    # The float values miss each tie by a hair, on the side that rounds down.
    values = (numerators / 4).astype(np.float64)
    values[ties] = np.nextafter(values[ties], -np.inf)
    pixels = np.floor(values + 0.5).astype(np.uint8)
    before = pixels.copy()

    def exact(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return numerators[index], np.full(index.size, 4, dtype=np.int64)

    correct_ties(pixels, values, Exact(bound=1e-9, values=exact), 255)
    changed = np.flatnonzero(pixels != before)
    np.testing.assert_array_equal(changed, ties)
    np.testing.assert_array_equal(pixels[ties], [4, 8, 201, 255])
    assert (before[ties] == [3, 7, 200, 254]).all()


def test_only_values_near_a_tie_are_decided_again_and_clipped_half_up():
    from fractions import Fraction

    from cnnfilters.rounding import Exact, correct_ties

    # float value, its exact value (the float rounding of the third one is wrong)
    cases = [(-1.5, Fraction(-3, 2)), (-0.5, Fraction(-1, 2)), (0.5, Fraction(49999, 100000)),
             (255.5, Fraction(511, 2)), (100.25, Fraction(401, 4))]  # fmt: skip
    values = np.array([v for v, _ in cases], dtype=np.float32)
    pixels = np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)
    asked = []

    def exact_values(index):
        asked.extend(index.tolist())
        fractions = [cases[i][1] for i in index]
        return (np.array([f.numerator for f in fractions], dtype=np.int64),
                np.array([f.denominator for f in fractions], dtype=np.int64))  # fmt: skip

    correct_ties(pixels, values, Exact(bound=1e-3, values=exact_values), top=255)
    assert sorted(asked) == [0, 1, 2, 3]  # 100.25 is a quarter from any tie
    assert pixels.tolist() == [0, 0, 0, 255, 100]


@pytest.mark.parametrize(
    ("weights", "rgb"),
    [
        # a numerator of 2**62 to 2**63: 2N + D needs more than int64
        ((0.31000000000001,) * 3, (65535, 65535, 65535)),
        # 0.30000000000000004: a denominator of 10**17, a numerator past int64
        ((0.1 + 0.2, 0.6, 0.1), (65535, 0, 0)),
        # 8.7e-14 below the tie 19660.5: in float64, (2N + D) / 2D would be 19661.0
        ((0.29999999999999993, 4.5e-12, 0.0), (65535, 1, 0)),
        # N + D just past 2**62 and N - D just below it: 2N + D is past int64
        ((0.00070954451819639, 0.0, 0.0), (65535, 0, 0)),
    ],
)
def test_exact_luma_of_16_bit_pixels_with_long_decimal_weights(weights, rgb):
    from fractions import Fraction

    from cnnfilters.rounding import correct_ties, luma_exact

    pixel = np.array(rgb, dtype=np.uint16).reshape(3, 1, 1)
    exact_value = sum(Fraction(repr(w)) * v for w, v in zip(weights, rgb, strict=True))
    exact = luma_exact(pixel, weights, 65535.0)
    numerators, denominators = exact.values(np.array([0]))
    assert Fraction(int(numerators[0]), int(denominators[0])) == exact_value
    value = np.array([float(exact_value)], dtype=np.float32)
    assert abs(float(value[0]) % 1 - 0.5) <= exact.bound  # near a tie: decided again
    pixels = np.array([0], dtype=np.uint16)
    correct_ties(pixels, value, exact, top=65535)
    assert pixels[0] == int(exact_value + Fraction(1, 2))


def test_the_bounds_allow_eight_units_in_the_last_place_and_more_for_large_windows():
    from cnnfilters.rounding import block_mean_exact, luma_exact

    eps = float(np.finfo(np.float32).eps)
    rgb = np.zeros((3, 2, 2), dtype=np.uint8)
    assert luma_exact(rgb, (0.299, 0.587, 0.114), 255.0).bound == pytest.approx(8 * eps * 255)
    assert luma_exact(rgb, (1.0, 1.0, -1.0), 255.0).bound == 8 * eps * 3.0 * 255
    assert luma_exact(rgb, (0.0, 0.0, 0.0), 255.0).bound == 8 * eps * 1.0 * 255
    x = np.zeros((1, 10, 12), dtype=np.uint16)
    assert block_mean_exact(x, 3, (1, 3, 4), 65535.0).bound == (2 * 9 + 8) * eps * 65535
