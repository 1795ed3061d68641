"""The references themselves, against arithmetic a reader can do by hand.

Every check of the tool compares the engine with a reference, so a reference
that rounds where it promises float64, or that reads the wrong axis, would
make a wrong answer pass. Each is checked here on the inputs that show it:
float32 values whose float32 sum is not their sum, inputs with no channel
axis and with a batch axis, defaults left out, strips of rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import naive_conv2d

from cnnfilters import reference as ref

# 2**24 + 1 is not a float32: a float32 sum of these loses the ones.
BIG = np.float32(2**24)


def _loop_block_means(x: np.ndarray, k: int) -> np.ndarray:
    """Each whole k x k block's mean, one block at a time, in Python floats."""
    *lead, height, width = x.shape
    out = np.empty((*lead, height // k, width // k))
    for index in np.ndindex(*lead, height // k, width // k):
        *at, i, j = index
        block = x[(*at, slice(i * k, i * k + k), slice(j * k, j * k + k))]
        out[index] = sum(float(v) for v in block.ravel()) / (k * k)
    return out


@pytest.mark.parametrize("shape", [(6, 9), (2, 6, 9), (2, 3, 6, 9)])
def test_block_mean_on_any_number_of_leading_axes(shape):
    x = np.random.default_rng(5).integers(0, 256, shape).astype(np.uint8)
    np.testing.assert_array_equal(ref.block_mean(x, 3), _loop_block_means(x, 3))


def test_block_mean_of_floats_sums_in_float64():
    x = np.array([[BIG, 1, 0.25, 0.5], [1, 1, 0.125, 0.0625]], dtype=np.float32)
    means = ref.block_mean(x, 2)
    assert means.dtype == np.float64
    assert means.tolist() == [[(2**24 + 3) / 4, (0.25 + 0.5 + 0.125 + 0.0625) / 4]]


def test_block_mean_drops_the_edge_unless_told():
    x = np.arange(35, dtype=np.uint8).reshape(5, 7)
    assert ref.block_mean(x, 2).shape == (2, 3)
    np.testing.assert_array_equal(ref.block_mean(x, 2), ref.block_mean(x, 2, edge="drop"))
    partial = ref.block_mean(x, 2, edge="partial")
    assert partial.shape == (3, 4)
    assert partial[2, 3] == 34.0  # the corner block holds one pixel


def test_direct_correlation_defaults_are_stride_1_no_padding_one_group():
    x = np.random.default_rng(6).integers(0, 256, (2, 5, 6)).astype(np.float32)
    weight = np.random.default_rng(7).standard_normal((3, 2, 2, 3))
    np.testing.assert_allclose(ref.direct_correlation(x, weight), naive_conv2d(x, weight))


def test_direct_correlation_and_luma_sum_in_float64():
    x = np.array([[[BIG, 1.0, 1.0]]], dtype=np.float32)
    weight = np.array([[[[1.0, 1.0, 1.0]]]], dtype=np.float32)
    assert ref.direct_correlation(x, weight).item() == 2**24 + 2
    rgb = np.array([BIG + 2, 3, 5], dtype=np.float32).reshape(3, 1, 1)
    weights = (0.299, 0.587, 0.114)
    exact = float(rgb[0, 0, 0]) * 0.299 + 3 * 0.587 + 5 * 0.114  # Python floats: float64
    assert ref.luma(rgb, weights).item() == exact


def test_forward_differences_of_float64_stay_float64():
    x = np.array([[0.0, 1e-12], [1e-12, 3e-12]])
    dy, dx = ref.forward_differences(x)
    assert dy.dtype == dx.dtype == np.float64
    assert dy[0].tolist() == [1e-12, 3e-12 - 1e-12]
    assert dx[:, 0].tolist() == [1e-12, 3e-12 - 1e-12]


@pytest.mark.parametrize("mode", ["zeros", "replicate", "reflect", "circular"])
def test_forward_differences_in_strips_are_the_whole_cut_in_rows(mode):
    x = np.random.default_rng(8).integers(0, 256, (2, 7, 5)).astype(np.uint8)
    whole = ref.forward_differences(x, mode)
    for first, stop in [(0, 2), (2, 5), (5, 7), (3, 4)]:
        strip = ref.forward_differences(x, mode, rows=(first, stop))
        for got, want in zip(strip, whole, strict=True):
            np.testing.assert_array_equal(got, want[..., first:stop, :])


def test_forward_differences_name_an_unknown_padding_mode():
    with pytest.raises(ValueError) as raised:
        ref.forward_differences(np.zeros((2, 2)), "mirror")
    assert str(raised.value) == "unknown padding mode 'mirror'"


@pytest.mark.parametrize(("groups", "stride"), [(1, 1), (2, 2), (3, 1)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_least_squares_recovers_a_grouped_strided_layer_exactly(groups, stride, dtype):
    """Targets made by nested loops from known weights: every group's weights and
    biases come back, in their place, at full rank, solved in float64 whatever the
    data's type; without its data a group's rank falls and says so."""
    rng = np.random.default_rng(groups * 10 + stride)
    c_in, c_out, kh, kw = 2 * groups, 2 * groups, 3, 2
    weight = rng.standard_normal((c_out, c_in // groups, kh, kw))
    bias = rng.standard_normal(c_out)
    x = rng.standard_normal((3, c_in, 11, 9)).astype(dtype)
    targets = naive_conv2d(x, weight, bias, stride=(stride, stride), groups=groups)
    geometry = {"stride": stride} if stride > 1 else {}  # stride 1 and one group by default
    geometry |= {"groups": groups} if groups > 1 else {}
    learned, learned_bias, rank, unknowns = ref.least_squares_conv(
        x, targets.astype(dtype), (kh, kw), **geometry
    )
    tolerance = 1e-9 if dtype == np.float64 else 1e-5  # the targets' own float32 rounding
    np.testing.assert_allclose(learned, weight, atol=tolerance)
    np.testing.assert_allclose(learned_bias, bias, atol=tolerance)
    assert (rank, unknowns) == (c_in // groups * kh * kw + 1,) * 2
    flat = x.astype(np.float64)
    flat[:, 0] = 1.0  # the first group's first channel says nothing its bias does not
    _, _, rank, unknowns = ref.least_squares_conv(
        flat,
        naive_conv2d(flat, weight, bias, stride=(stride, stride), groups=groups),
        (kh, kw),
        **geometry,
    )
    assert rank == unknowns - kh * kw  # the smallest rank of any group
