"""Each of the engine's paths on the inputs it is chosen for, against nested loops.

The engine picks how to accumulate a kernel from its weights: additions and
subtractions for taps of +1 and -1, a sum scaled once for a box of equal
weights, one matrix product per tap for many input channels. The picks are
pinned here, since a kernel sent down a slower path gives the same numbers
and no other test would see it; and each path is checked on the inputs that
reach its corners: pixels left as integers, a first tap of -1, taps of zero
between others, kernels that are not square, 'same' padding with its odd
pixel on one side only.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import naive_conv2d

from cnnfilters import avg_pool2d, conv2d, max_pool2d
from cnnfilters.engine import _MATMUL_MIN_CHANNELS, _plan_for
from cnnfilters.errors import CnnFiltersError

RNG = np.random.default_rng(83)


def _plan(weight: np.ndarray, groups: int = 1):
    c_out, c_in_group, kh, kw = weight.shape
    grouped = weight.reshape(groups, c_out // groups, c_in_group, kh, kw).astype(np.float32)
    return _plan_for(grouped, np.float32)


def _box(k: tuple[int, int], channels: int = 1) -> np.ndarray:
    return np.full((channels, 1, *k), 1 / (k[0] * k[1]), dtype=np.float32)


@pytest.mark.parametrize(
    ("shape", "groups", "matmul"),
    [
        ((2, _MATMUL_MIN_CHANNELS, 3, 3), 1, True),  # many channels
        ((2, _MATMUL_MIN_CHANNELS - 1, 3, 3), 1, False),
        ((1, 2, 1, 1), 1, True),  # a 1x1 kernel over several channels: one product
        ((1, 1, 1, 1), 1, False),  # a 1x1 kernel over one channel: a scaling
        ((1, 2, 1, 2), 1, False),
        ((1, 2, 2, 1), 1, False),
        ((4, 2, 1, 1), 2, True),
    ],
)
def test_many_channels_or_a_1x1_kernel_take_the_matrix_product(shape, groups, matmul):
    plan = _plan(RNG.standard_normal(shape), groups)
    assert plan.matmul is matmul
    if matmul:
        assert plan.box is None and plan.channels == []


@pytest.mark.parametrize(
    ("weight", "groups", "box"),
    [
        (_box((2, 3)), 1, 1 / 6),  # average pooling: a box
        (_box((3, 3), channels=3), 3, 1 / 9),  # depthwise, as avgpool runs it
        (np.array([[[[0.5, 0.5], [0.0, 0.5]]]]), 1, None),  # a tap missing
        (np.full((1, 2, 2, 2), 0.25), 1, None),  # two input channels
        (np.full((2, 1, 2, 2), 0.25), 1, None),  # two output channels
        (np.ones((1, 1, 2, 2)), 1, None),  # weights of 1: additions, no box
        (np.array([[[[0.25, 0.25], [0.25, 0.5]]]]), 1, None),  # unequal weights
    ],
)
def test_a_box_of_equal_weights_is_summed_and_scaled_once(weight, groups, box):
    plan = _plan(np.asarray(weight, dtype=np.float32), groups)
    assert not plan.matmul
    assert plan.box == (None if box is None else pytest.approx(box))
    # Pooling windows side by side down the image sum their rows in one reduction.
    assert plan.sums_rows(2, 2, 1) is (box is not None)
    assert plan.sums_rows(2, 2, 2) is False
    assert plan.sums_rows(2, 1, 1) is False


@pytest.mark.parametrize(
    ("weight", "common"),
    [
        ([[0.5, 0.0], [0.0, 0.5]], 0.5),  # several taps of one weight: summed, then scaled
        ([[0.5, 0.0], [0.0, 0.0]], None),  # one tap: multiplied
        ([[1.0, 0.0], [0.0, 1.0]], None),  # +1: added
        ([[-1.0, 0.0], [0.0, -1.0]], None),  # -1: subtracted
        ([[2.0, 0.0], [0.0, -2.0]], None),  # two weights
    ],
)
def test_a_channel_of_one_weight_is_scaled_once(weight, common):
    plan = _plan(np.array([[weight]], dtype=np.float32))
    ((ops, scale),) = plan.channels
    assert len(ops) == int(np.count_nonzero(weight))
    assert scale == common


def test_taps_of_zero_are_left_out_and_a_weight_that_differs_by_group_is_an_array():
    weight = np.zeros((2, 1, 2, 2), dtype=np.float32)
    weight[:, 0, 1, 1] = 3.0  # the same in both groups: a scalar
    weight[0, 0, 0, 0], weight[1, 0, 0, 0] = 2.0, -2.0  # differs: one weight a group
    ((ops, _),) = _plan(weight, groups=2).channels
    assert [(c, u, v) for c, u, v, _ in ops] == [(0, 0, 0), (0, 1, 1)]
    assert ops[0][3].shape == (1, 2, 1, 1) and ops[0][3].ravel().tolist() == [2.0, -2.0]
    assert ops[1][3] == 3.0


def _pixels(shape: tuple[int, ...]) -> np.ndarray:
    """uint8 pixels with every bit in use, so that any arithmetic left in uint8 wraps."""
    return RNG.integers(1, 256, shape).astype(np.uint8)


@pytest.mark.parametrize(
    "kernel",
    [
        [[0, 0, 0], [0, -1, 0], [0, 1, 0]],  # the first tap -1: a negation
        [[-1, 0], [0, -1]],
        [[0, -2], [3, 0]],  # a multiplication first, then one into scratch
        [[1, 1], [1, 1]],
    ],
)
def test_pixels_left_as_integers_are_computed_in_float(kernel):
    # With no padding, the rows of a block stay uint8 and each ufunc casts them.
    x = _pixels((1, 6, 7))
    weight = np.array([[kernel]], dtype=np.float32)
    got = conv2d(x, weight)
    np.testing.assert_array_equal(got, naive_conv2d(x, weight).astype(np.float32))


@pytest.mark.parametrize("kernel", [(2, 1), (1, 2), (3, 3), (1, 1)])
def test_the_matrix_product_path_on_kernels_that_are_not_square(kernel):
    channels = _MATMUL_MIN_CHANNELS
    x = _pixels((2, channels, 6, 7)).astype(np.float32)
    weight = RNG.standard_normal((3, channels, *kernel)).astype(np.float32)
    weight[:, :, 0, 0] = 0  # a tap of zero before the others
    for padding in (0, 1):
        got = conv2d(x, weight, padding=padding)
        want = naive_conv2d(x, weight, padding=(padding, padding))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    ("kernel", "dilation"),
    [((2, 4), (1, 1)), ((4, 2), (1, 1)), ((3, 2), (2, 3)), ((1, 2), (1, 1)), ((2, 5), (1, 1))],
)
def test_same_padding_puts_the_odd_pixel_at_the_bottom_and_right(kernel, dilation):
    x = _pixels((1, 5, 7)).astype(np.float32)
    weight = RNG.standard_normal((1, 1, *kernel)).astype(np.float32)
    got = conv2d(x, weight, padding="same", dilation=dilation)
    total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    padded = np.pad(x, [(0, 0), (total[0] // 2, total[0] - total[0] // 2), (total[1] // 2, 0)])
    padded = np.pad(padded, [(0, 0), (0, 0), (0, total[1] - total[1] // 2)])
    want = naive_conv2d(padded, weight, dilation=dilation)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_average_pooling_with_its_own_stride_and_padding():
    x = _pixels((2, 7, 9)).astype(np.float32)
    got = avg_pool2d(x, (3, 2), stride=(2, 1), padding=(1, 1))
    weight = np.full((2, 1, 3, 2), 1 / 6)
    want = naive_conv2d(x, weight, stride=(2, 1), padding=(1, 1), groups=2)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("padding", [1, (1, 0), (0, 1)])
def test_an_empty_input_is_refused_whatever_the_padding(padding):
    # Its windows would hold padding only; it used to end in numpy's IndexError.
    x = np.zeros((1, 0, 5), dtype=np.float32)
    with pytest.raises(CnnFiltersError) as raised:
        conv2d(x, np.ones((1, 1, 3, 3), dtype=np.float32), padding=padding)
    assert str(raised.value) == "cannot zero-pad an empty input (0 x 5 pixels)"


def test_max_pooling_names_the_padded_size_on_both_axes():
    with pytest.raises(CnnFiltersError) as raised:
        max_pool2d(np.zeros((1, 5, 7)), (6, 2), padding=(0, 1))
    assert str(raised.value) == (
        "kernel size (6, 2) is larger than the padded input (5 x 9 pixels, from 5 x 7)"
    )


def test_a_layout_is_cached_only_for_plain_arguments():
    from cnnfilters.engine import _cached_layout

    x = _pixels((1, 5, 7)).astype(np.float32)
    weight = np.ones((1, 1, 3, 3), dtype=np.float32)
    _cached_layout.cache_clear()
    plain = conv2d(x, weight, stride=(1, 1), padding=(1, 1))
    conv2d(x, weight, stride=(1, 1), padding=(1, 1))  # a batch: worked out once
    assert (_cached_layout.cache_info().hits, _cached_layout.cache_info().misses) == (1, 1)
    # A list is not a key a cache can hold, and (True, 1) equals (1, 1) as a key.
    np.testing.assert_array_equal(conv2d(x, weight, stride=[1, 1], padding=[1, 1]), plain)
    with pytest.raises(CnnFiltersError) as raised:
        conv2d(x, weight, stride=(True, 1), padding=(1, 1))
    assert str(raised.value) == "stride must be an int or a pair of ints, got (True, 1)"
    assert (_cached_layout.cache_info().hits, _cached_layout.cache_info().misses) == (1, 1)


def test_a_float64_bias_is_rounded_to_float32_before_it_is_added():
    # The input's type decides: 1 + float32(2**-24 + 2**-50) = 1 + 2**-24 is a tie, and
    # rounds to even, 1.0; adding the float64 bias first would round up.
    x = np.ones((1, 1, 1), dtype=np.float32)
    bias = np.array([2.0**-24 + 2.0**-50])
    out = conv2d(x, np.ones((1, 1, 1, 1), dtype=np.float32), bias)
    assert out.dtype == np.float32 and out.item() == 1.0


def test_a_kernel_of_unequal_weights_is_the_float32_sum_of_float32_products_in_tap_order():
    # Bit for bit: every product and every sum is rounded to float32, as the engine
    # promises for float32 input (a float64 scratch would round each sum once).
    x = np.random.default_rng(3).standard_normal((1, 40, 42)).astype(np.float32)
    taps = np.array([0.3, 0.7, 0.11], dtype=np.float32)
    got = conv2d(x, taps.reshape(1, 1, 1, 3))
    want = x[..., :-2] * taps[0]
    want = want + x[..., 1:-1] * taps[1]
    want = want + x[..., 2:] * taps[2]
    assert want.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_a_box_sums_its_rows_then_its_columns_in_float32_then_scales_once():
    x = np.random.default_rng(4).standard_normal((1, 41, 43)).astype(np.float32)
    got = avg_pool2d(x, 3, stride=2)  # windows that overlap: rows summed one by one
    rows = x[..., 0:39:2, :] + x[..., 1:40:2, :]
    rows = rows + x[..., 2:41:2, :]
    want = rows[..., 0:41:2] + rows[..., 1:42:2]
    want = want + rows[..., 2:43:2]
    want = want * np.float32(1 / 9)
    assert want.dtype == np.float32
    np.testing.assert_array_equal(got, want)
