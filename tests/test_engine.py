"""The engine against a naive nested-loop correlation, and its error messages."""

from __future__ import annotations

import multiprocessing
import threading
from unittest.mock import patch

import numpy as np
import pytest
from helpers import coordinate_grid, naive_conv2d, random_conv_case
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cnnfilters
from cnnfilters import CnnFiltersError, avg_pool2d, conv2d, conv2d_grad, engine, max_pool2d


def test_identity_kernel_returns_the_input():
    x = coordinate_grid(4, 5, channels=2)
    weight = np.zeros((2, 1, 1, 1), dtype=np.float32)
    weight[:, 0, 0, 0] = 1
    np.testing.assert_array_equal(conv2d(x, weight, groups=2), x)


def test_cross_correlation_does_not_flip_the_kernel():
    x = coordinate_grid(3, 3)
    weight = np.array([[[[0, 0, 0], [0, 0, 1], [0, 0, 0]]]], dtype=np.float32)
    # A true convolution would read the left neighbour; cross-correlation reads the right one.
    assert conv2d(x, weight, padding=1)[0, 1, 1] == x[0, 1, 2]


def test_output_size_follows_the_floor_formula():
    x = np.zeros((1, 7, 9), dtype=np.float32)
    weight = np.ones((1, 1, 3, 2), dtype=np.float32)
    out = conv2d(x, weight, stride=(2, 3), padding=(1, 2), dilation=(1, 2))
    assert out.shape == (1, (7 + 2 - 3) // 2 + 1, (9 + 4 - 2 * 1 - 1) // 3 + 1)


def test_batch_and_single_image_agree(rng):
    x = rng.standard_normal((3, 2, 6, 5)).astype(np.float32)
    weight = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    batch = conv2d(x, weight, padding=1)
    singles = np.stack([conv2d(image, weight, padding=1) for image in x])
    np.testing.assert_array_equal(batch, singles)


def test_float64_in_gives_float64_out_and_integers_give_float32():
    weight = np.ones((1, 1, 2, 2))
    assert conv2d(np.ones((1, 3, 3)), weight).dtype == np.float64
    assert conv2d(np.ones((1, 3, 3), dtype=np.uint8), weight).dtype == np.float32
    assert conv2d(np.ones((1, 3, 3), dtype=np.float16), weight).dtype == np.float32


CASES = [
    # (N, C_in, H, W, C_out, groups, kh, kw, stride, padding, dilation, padding_mode, bias)
    (1, 1, 5, 5, 1, 1, 3, 3, 1, 0, 1, "zeros", False),
    (2, 3, 7, 6, 4, 1, 3, 2, (2, 1), (1, 2), 1, "zeros", True),
    (1, 4, 8, 8, 4, 4, 3, 3, 1, 1, 1, "replicate", False),
    (1, 6, 9, 7, 9, 3, 2, 3, (1, 2), 1, (2, 1), "reflect", True),
    (2, 2, 5, 6, 2, 2, 3, 3, 2, (2, 1), 1, "circular", True),
    (1, 16, 6, 6, 5, 1, 3, 3, 1, 1, 1, "zeros", True),
    (1, 3, 4, 4, 6, 3, 4, 4, 4, 0, 1, "zeros", False),
    (1, 2, 3, 3, 2, 1, 5, 5, 1, 2, 1, "zeros", False),
]


@pytest.mark.parametrize("case", CASES)
def test_conv2d_matches_the_naive_correlation(case, rng):
    n, c_in, h, w, c_out, groups, kh, kw, stride, padding, dilation, mode, use_bias = case
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in // groups, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32) if use_bias else None
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    expected = naive_conv2d(x, weight, bias, pair(stride), pair(padding), pair(dilation), groups,
                            mode)  # fmt: skip
    actual = conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation,
                    groups=groups, padding_mode=mode)  # fmt: skip
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_conv2d_matches_the_naive_correlation_on_random_geometry(data):
    groups = data.draw(st.integers(1, 3), label="groups")
    c_in = groups * data.draw(st.integers(1, 3))
    c_out = groups * data.draw(st.integers(1, 2))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    mode = data.draw(st.sampled_from(["zeros", "replicate", "reflect", "circular"]))
    h = data.draw(st.integers(dilation[0] * (kh - 1) + 1, 9))
    w = data.draw(st.integers(dilation[1] * (kw - 1) + 1, 9))
    max_pad = {"reflect": (h - 1, w - 1), "circular": (h, w)}.get(mode, (3, 3))
    padding = (data.draw(st.integers(0, min(3, max_pad[0]))),
               data.draw(st.integers(0, min(3, max_pad[1]))))  # fmt: skip
    floats = st.floats(-100, 100, width=32)
    x = data.draw(hnp.arrays(np.float32, (1, c_in, h, w), elements=floats))
    weight = data.draw(hnp.arrays(np.float32, (c_out, c_in // groups, kh, kw), elements=floats))
    bias = data.draw(st.none() | hnp.arrays(np.float32, (c_out,), elements=floats))
    expected = naive_conv2d(x, weight, bias, stride, padding, dilation, groups, mode)
    actual = conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation,
                    groups=groups, padding_mode=mode)  # fmt: skip
    scale = 1 + np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale * kh * kw * c_in)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_a_box_of_equal_weights_matches_the_naive_correlation(data):
    """Depthwise boxes (every weight equal) take their own path: windows side by side
    (pooling: one reduction over each window's rows) or overlapping, dilated, padded;
    on float32 and on uint8 seen channels first, as decoded pixels are; all rows or
    a range of them, in row blocks of one or several rows."""
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    side_by_side = data.draw(st.booleans(), label="side_by_side")
    stride = (kh, kw) if side_by_side else (data.draw(st.integers(1, 3)),
                                            data.draw(st.integers(1, 3)))  # fmt: skip
    dilation = (1, 1) if side_by_side else (data.draw(st.integers(1, 2)), 1)
    padding = data.draw(st.integers(0, 1))
    n, channels = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    h = data.draw(st.integers(dilation[0] * (kh - 1) + 1, 13))
    w = data.draw(st.integers(kw, 13))
    pixels = data.draw(hnp.arrays(np.uint8, (n, h, w, channels)))
    x = np.moveaxis(pixels, -1, 1)  # a strided view, as the commands see pixels
    if data.draw(st.booleans(), label="float32"):
        x = np.ascontiguousarray(x, dtype=np.float32)
    value = data.draw(st.sampled_from([1.0, 0.25, 1 / 9, -0.5]))
    weight = np.full((channels, 1, kh, kw), value, dtype=np.float32)
    out_h = (h + 2 * padding - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    first = data.draw(st.integers(0, out_h - 1))
    rows = (first, data.draw(st.integers(first, out_h)))
    block = data.draw(st.sampled_from([1, 64, 1 << 20]), label="block_bytes")
    expected = naive_conv2d(x.astype(np.float64), weight, None, stride, (padding, padding),
                            dilation, channels, "zeros")[:, :, rows[0] : rows[1]]  # fmt: skip
    with patch.object(engine, "_BLOCK_BYTES", block):
        actual = conv2d(x, weight, stride=stride, padding=padding, dilation=dilation,
                        groups=channels, rows=rows)  # fmt: skip
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize(
    ("n", "c_in", "c_out", "groups"), [(1, 3, 1, 1), (2, 4, 2, 1), (1, 6, 4, 2)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_a_1x1_conv_over_several_channels_matches_the_naive_one_block_by_block(
    n, c_in, c_out, groups, dtype, rng, monkeypatch
):
    """A 1x1 kernel over two channels or more is one matrix product per block of rows:
    written straight into the output (one image, one output channel) or added up
    (a batch or several outputs, whose rows are not one block of memory)."""
    from cnnfilters import engine

    monkeypatch.setattr(engine, "_BLOCK_BYTES", 2048)  # blocks of a few rows each
    x = (rng.random((n, c_in, 23, 17)) * 255).astype(dtype)
    weight = rng.standard_normal((c_out, c_in // groups, 1, 1))
    actual = conv2d(x, weight, groups=groups, stride=(1, 2))
    expected = naive_conv2d(x.astype(np.float64), weight, None, (1, 2), (0, 0), (1, 1), groups,
                            "zeros")  # fmt: skip
    assert actual.dtype == (np.float64 if dtype == np.float64 else np.float32)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-3)


@settings(max_examples=50, deadline=None)
@given(
    x=hnp.arrays(np.float64, (2, 6, 7), elements=st.floats(-1e3, 1e3)),
    y=hnp.arrays(np.float64, (2, 6, 7), elements=st.floats(-1e3, 1e3)),
    a=st.floats(-10, 10),
    b=st.floats(-10, 10),
)
def test_conv2d_is_linear(x, y, a, b):
    weight = np.arange(2 * 2 * 3 * 3, dtype=np.float64).reshape(2, 2, 3, 3) / 10 - 1.5
    left = conv2d(a * x + b * y, weight, padding=1)
    right = a * conv2d(x, weight, padding=1) + b * conv2d(y, weight, padding=1)
    np.testing.assert_allclose(left, right, rtol=1e-9, atol=1e-7 * (1 + np.abs(right).max()))


def test_same_padding_keeps_the_size_and_puts_the_odd_pixel_last():
    x = coordinate_grid(5, 6)
    weight = np.zeros((1, 1, 2, 2), dtype=np.float32)
    weight[0, 0, 0, 0] = 1  # picks the top-left pixel of each window
    out = conv2d(x, weight, padding="same")
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, x)  # total pad 1 goes to the bottom/right
    assert conv2d(x, weight, padding="valid").shape == (1, 4, 5)


def test_max_pool_takes_the_window_maximum():
    x = coordinate_grid(4, 6)
    np.testing.assert_array_equal(max_pool2d(x, 2)[0], [[11, 13, 15], [31, 33, 35]])


def test_max_pool_padding_never_wins():
    x = -coordinate_grid(3, 3) - 1  # all negative: zero padding would win
    out = max_pool2d(x, 3, stride=1, padding=1)
    assert out.max() < 0
    np.testing.assert_array_equal(out[0, 0, 0], -1)


def test_max_pool_ceil_mode_keeps_the_partial_window():
    x = coordinate_grid(5, 5)
    assert max_pool2d(x, 2).shape == (1, 2, 2)
    out = max_pool2d(x, 2, ceil_mode=True)
    assert out.shape == (1, 3, 3)
    assert out[0, 2, 2] == 44


@pytest.mark.parametrize(
    ("k", "stride", "padding"), [(2, None, 0), (3, 1, 1), ((2, 3), (1, 2), (1, 1))]
)
def test_max_pool_matches_a_direct_maximum(k, stride, padding, rng):
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (
        (kh, kw) if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    )
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    xp = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)], constant_values=-np.inf)
    out_h, out_w = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    expected = np.array([[[[xp[b, c, i * sh:i * sh + kh, j * sw:j * sw + kw].max()
                            for j in range(out_w)] for i in range(out_h)]
                          for c in range(3)] for b in range(2)])  # fmt: skip
    np.testing.assert_array_equal(max_pool2d(x, k, stride, padding), expected)


def test_avg_pool_is_the_mean_of_each_block():
    x = coordinate_grid(4, 6, channels=2)
    out = avg_pool2d(x, 2)
    np.testing.assert_array_equal(out[1], [[105.5, 107.5, 109.5], [125.5, 127.5, 129.5]])


def test_avg_pool_drops_the_remainder():
    assert avg_pool2d(np.ones((3, 7, 5), dtype=np.float32), 3).shape == (3, 2, 1)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_avg_pool_conv_equals_reshape_mean(data):
    k = data.draw(st.integers(1, 4))
    rows, cols = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    extra = data.draw(st.integers(0, k - 1)), data.draw(st.integers(0, k - 1))
    x = data.draw(hnp.arrays(np.float32, (2, rows * k + extra[0], cols * k + extra[1]),
                             elements=st.floats(0, 65535, width=32)))  # fmt: skip
    cropped = x[:, : rows * k, : cols * k].astype(np.float64)
    expected = cropped.reshape(2, rows, k, cols, k).mean(axis=(2, 4))
    np.testing.assert_allclose(avg_pool2d(x, k), expected, rtol=1e-5, atol=1e-3)


ERRORS = [
    (lambda: conv2d(np.zeros((1, 3, 2)), np.ones((1, 1, 4, 4))),
     r"kernel size 4 is larger than the padded input \(3 x 2 pixels"),
    (lambda: conv2d(np.zeros((3, 4, 4)), np.ones((2, 1, 3, 3)), groups=2),
     r"input channels \(3\) must be divisible by groups \(2\)"),
    (lambda: conv2d(np.zeros((4, 4, 4)), np.ones((3, 2, 3, 3)), groups=2),
     r"output channels \(3\) must be divisible by groups \(2\)"),
    (lambda: conv2d(np.zeros((4, 4, 4)), np.ones((2, 3, 3, 3)), groups=2),
     r"expects 6 input channels with groups=2, got 4"),
    (lambda: conv2d(np.zeros((1, 4, 4)), np.ones((1, 1, 3, 3)), stride=0),
     r"stride must be positive, got 0"),
    (lambda: conv2d(np.zeros((1, 4, 4)), np.ones((1, 1, 3, 3)), stride=(1, -2)),
     r"stride must be positive, got \(1, -2\)"),
    (lambda: conv2d(np.zeros((1, 3, 3)), np.ones((1, 1, 3, 3)), padding=3, padding_mode="reflect"),
     r"reflect padding of 3 x 3 needs an input larger than the padding, got 3 x 3"),
    (lambda: conv2d(np.zeros((1, 2, 2)), np.ones((1, 1, 3, 3)), padding=3, padding_mode="circular"),
     r"circular padding of 3 x 3 wraps around more than once"),
    (lambda: conv2d(np.zeros((4, 4)), np.ones((1, 1, 3, 3))),
     r"input must have shape \(C, H, W\) or \(N, C, H, W\), got 2 dimensions \(4, 4\)"),
    (lambda: conv2d(np.zeros((1, 4, 4)), np.ones((1, 3, 3))),
     r"weight must have shape .* got 3 dimensions"),
    (lambda: conv2d(np.zeros((1, 4, 4)), np.ones((2, 1, 3, 3)), np.ones(3)),
     r"bias must have shape \(2,\), got \(3,\)"),
    (lambda: conv2d(np.zeros((1, 4, 4)), np.ones((1, 1, 3, 3)), padding_mode="mirror"),
     r"padding mode must be one of zeros, replicate, reflect, circular, got 'mirror'"),
    (lambda: conv2d(np.zeros((1, 4, 4)), np.ones((1, 1, 3, 3)), padding=-1),
     r"padding must be non-negative, got -1"),
    (lambda: conv2d(np.zeros((1, 4, 4)), np.ones((1, 1, 2, 2)), stride=2, padding="same"),
     r"padding 'same' needs stride 1"),
    (lambda: conv2d(np.zeros((1, 4, 4)), np.ones((1, 1, 3, 3)), groups=0),
     r"groups must be a positive int, got 0"),
    (lambda: conv2d(np.zeros((1, 4, 4), dtype=complex), np.ones((1, 1, 3, 3))),
     r"expected a real-valued array, got dtype complex128"),
    (lambda: max_pool2d(np.zeros((1, 2, 2)), 3),
     r"kernel size 3 is larger than the padded input \(2 x 2 pixels"),
    (lambda: max_pool2d(np.zeros((1, 4, 4)), 2, padding=2),
     r"padding 2 must be at most half the kernel size 2"),
    (lambda: max_pool2d(np.zeros((1, 4, 4)), 0), r"kernel_size must be positive, got 0"),
    (lambda: avg_pool2d(np.zeros((1, 4, 4)), 2.5), r"kernel_size must be an int or a pair"),
    (lambda: avg_pool2d(np.zeros((1, 1, 5)), 2), r"kernel size 2 is larger than the padded input"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "message"), ERRORS)
def test_errors_quote_what_they_got(call, message):
    with pytest.raises(CnnFiltersError, match=message):
        call()


@pytest.mark.parametrize(("bad", "message"), [
    ({"stride": (True, 1)}, r"stride must be an int or a pair of ints, got \(True, 1\)"),
    ({"groups": True}, r"groups must be a positive int, got True"),
    ({"padding": [1, True]}, r"padding must be an int or a pair of ints, got \[1, True\]"),
    ({"dilation": (1, 1.0)}, r"dilation must be an int or a pair of ints, got \(1, 1.0\)"),
])  # fmt: skip
def test_the_layout_cache_lets_no_wrong_argument_through(bad, message, rng):
    """A batch works each convolution's shapes out once; an argument equal to a cached
    good one (True == 1, 1.0 == 1) still meets its own check, every time."""
    x, weight = rng.standard_normal((2, 8, 8)), rng.standard_normal((2, 2, 3, 3))
    good = {"stride": (1, 1), "groups": 1, "padding": (1, 1), "dilation": (1, 1)}
    expected = conv2d(x, weight, **good)
    for _ in range(2):
        np.testing.assert_array_equal(conv2d(x, weight, **good), expected)
        with pytest.raises(CnnFiltersError, match=message):
            conv2d(x, weight, **{**good, **bad})
    # numpy ints are taken as the ints they hold (worked out afresh, as lists are).
    numpy_ints = {"stride": np.int64(1), "groups": np.int32(1), "padding": [1, 1]}
    np.testing.assert_array_equal(conv2d(x, weight, **numpy_ints), expected)
    # An input of another size gets its own shapes, not the cached ones.
    assert conv2d(rng.standard_normal((2, 5, 7)), weight, **good).shape == (2, 5, 7)
    with pytest.raises(CnnFiltersError, match="kernel size 3 is larger than the padded input"):
        conv2d(rng.standard_normal((2, 2, 2)), weight)


# ------------------------------------------------------------ backward pass


def _central_differences(loss, values: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """d loss / d values, one element at a time, in float64."""
    grad = np.empty_like(values)
    for index in np.ndindex(values.shape):
        keep = values[index]
        values[index] = keep + step
        up = loss()
        values[index] = keep - step
        down = loss()
        values[index] = keep
        grad[index] = (up - down) / (2 * step)
    return grad


@pytest.mark.parametrize("seed", range(40))
def test_conv2d_grad_equals_central_differences_in_float64(seed):
    rng = np.random.default_rng(7000 + seed)
    groups, c_in, c_out, kernel, stride, dilation, mode, (h, w), padding = random_conv_case(rng)
    n = int(rng.integers(1, 3))
    x = rng.standard_normal((n, c_in, h, w))
    weight = rng.standard_normal((c_out, c_in // groups, *kernel))
    bias = rng.standard_normal(c_out)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                    padding_mode=mode)  # fmt: skip
    upstream = rng.standard_normal(conv2d(x, weight, bias, **geometry).shape)

    def loss() -> float:  # <upstream, conv2d(x, w, b)>: its gradient is conv2d_grad's
        return float(np.sum(upstream * conv2d(x, weight, bias, **geometry)))

    dx, dw, db = conv2d_grad(x, weight, upstream, **geometry)
    assert dx.dtype == dw.dtype == db.dtype == np.float64
    np.testing.assert_allclose(dx, _central_differences(loss, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dw, _central_differences(loss, weight), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(db, _central_differences(loss, bias), rtol=1e-6, atol=1e-6)


def test_conv2d_grad_of_the_gradient_filters_is_a_difference_of_the_upstream():
    # y[i] = x[i+1] - x[i] (no padding): dL/dx[i] = g[i-1] - g[i], with g = 0 outside.
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5)
    weight = np.array([[[[-1.0], [1.0]]]]).reshape(1, 1, 2, 1).transpose(0, 1, 3, 2)
    upstream = np.array([[[1.0, 2.0, 4.0, 8.0]]])
    dx, dw, db = conv2d_grad(x, weight, upstream, bias=False)
    assert dx.tolist() == [[[-1.0, -1.0, -2.0, -4.0, 8.0]]]
    assert dw.ravel().tolist() == [0 * 1 + 1 * 2 + 2 * 4 + 3 * 8, 1 * 1 + 2 * 2 + 3 * 4 + 4 * 8]
    assert db is None


def test_conv2d_grad_refuses_a_gradient_of_the_wrong_shape():
    with pytest.raises(
        CnnFiltersError, match=r"grad_out must have shape \(1, 3, 3\), got \(1, 4, 4\)"
    ):
        conv2d_grad(np.zeros((1, 4, 4)), np.zeros((1, 1, 2, 2)), np.zeros((1, 4, 4)))


def test_conv2d_grad_with_many_channels_equals_central_differences():
    # Eight or more input channels a group take the matrix-product path.
    rng = np.random.default_rng(71)
    x = rng.standard_normal((1, 8, 5, 4))
    weight = rng.standard_normal((3, 8, 2, 2))
    upstream = rng.standard_normal(conv2d(x, weight, stride=2, padding=1).shape)

    def loss() -> float:
        return float(np.sum(upstream * conv2d(x, weight, stride=2, padding=1)))

    dx, dw, _ = conv2d_grad(x, weight, upstream, stride=2, padding=1)
    np.testing.assert_allclose(dx, _central_differences(loss, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dw, _central_differences(loss, weight), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["zeros", "replicate", "reflect", "circular"])
def test_a_padded_strip_reads_only_its_rows_of_a_channels_first_view(mode):
    """Decoded pixels are a channels-first view of (H, W, C) memory. Padding the last
    strip must not copy that view whole (np.take did: 144 MB on 48 MP)."""
    import tracemalloc

    from cnnfilters import ops
    from cnnfilters import reference as ref

    hwc = np.arange(1200 * 800 * 3, dtype=np.uint32).astype(np.uint8).reshape(1200, 800, 3)
    x = hwc.transpose(2, 0, 1)
    rows = (1190, 1200)  # the last rows: padded below
    tracemalloc.start()
    try:
        ours = ops.gradients(x, mode, rows=rows)
        theirs = ref.forward_differences(x, mode, rows=rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 4, f"{peak} bytes traced for a {x.nbytes}-byte input"
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def engine_threads():
    """Set the engine's threads for one test; one thread again after it."""
    yield engine.set_num_threads
    engine.set_num_threads(1)


THREADED_CASES = [
    # (name, x shape, weight, conv2d keywords): every path of the engine
    ("taps", (2, 1, 37, 29), np.array([[[[0, -1, 0], [0, 1, 0], [0, 0, 0]]]], np.float32),
     {"padding": 1}),
    ("pooling", (1, 3, 41, 32), np.full((3, 1, 4, 4), 1 / 16, np.float32),
     {"stride": 4, "groups": 3}),
    ("overlapping box", (1, 2, 40, 33), np.full((2, 1, 3, 3), 1 / 9, np.float32),
     {"stride": 2, "padding": 1, "groups": 2}),
    ("1x1", (1, 3, 45, 31), np.float32([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1), {}),
    ("many channels", (2, 9, 23, 19), None, {"padding": (1, 0), "dilation": 2}),
]  # fmt: skip


@pytest.mark.parametrize("case", THREADED_CASES, ids=[case[0] for case in THREADED_CASES])
@pytest.mark.parametrize("threads", [2, 3, 64])
def test_threads_give_the_same_bits_as_one(case, threads, engine_threads, rng):
    _, shape, weight, keywords = case
    x = rng.standard_normal(shape).astype(np.float32)
    if weight is None:
        weight = rng.standard_normal((4, shape[1], 3, 3)).astype(np.float32)
    bias = rng.standard_normal(weight.shape[0]).astype(np.float32)
    out_h = conv2d(x, weight, bias, **keywords).shape[-2]
    with patch.object(engine, "_BLOCK_BYTES", 1):  # a block per output row
        alone = conv2d(x, weight, bias, **keywords)
        some = conv2d(x, weight, bias, rows=(1, out_h - 1), **keywords)
        engine_threads(threads)
        spread = conv2d(x, weight, bias, **keywords)
        spread_some = conv2d(x, weight, bias, rows=(1, out_h - 1), **keywords)
    np.testing.assert_array_equal(spread, alone)
    np.testing.assert_array_equal(spread_some, some)
    np.testing.assert_allclose(alone, naive_conv2d(x, weight, bias, **_pairs(keywords)),
                               rtol=1e-5, atol=1e-4)  # fmt: skip


def _pairs(keywords: dict) -> dict:
    """conv2d's keywords as naive_conv2d takes them."""
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    named = {"stride": 1, "padding": 0, "dilation": 1, **keywords}
    groups = named.pop("groups", 1)
    return {key: pair(value) for key, value in named.items()} | {"groups": groups}


def test_threads_run_every_block_and_an_error_in_one_reaches_the_caller(engine_threads):
    """32 blocks in 4 runs of 8; the second run fails at once (output row 8), while
    the last two go on only once it has failed. conv2d raises that error only once
    they have ended: none is left writing into an array after conv2d returns."""
    x = np.ones((1, 1, 64, 8), np.float32)
    weight = np.full((1, 1, 2, 2), 0.25, np.float32)
    engine_threads(4)
    seen, running, real_rows = [], [], engine._padded_rows
    failed = threading.Event()

    def padded_rows(x, first, stop, *args):
        running.append(first)
        try:
            seen.append(threading.get_ident())
            if first == 8:
                failed.set()
                raise MemoryError("row 8")
            if first >= 16:
                failed.wait()  # in flight when the error is raised
            return real_rows(x, first, stop, *args)
        finally:
            running.remove(first)

    with (patch.object(engine, "_BLOCK_BYTES", 1),
          patch.object(engine, "_padded_rows", padded_rows),
          pytest.raises(MemoryError, match="row 8")):  # fmt: skip
        conv2d(x, weight, stride=2)
    assert not running
    assert len(seen) == 8 + 1 + 8 + 8
    assert len(set(seen)) > 1  # spread over threads
    with patch.object(engine, "_BLOCK_BYTES", 1):
        np.testing.assert_array_equal(conv2d(x, weight, stride=2), np.ones((1, 1, 32, 4)))


def test_a_forked_child_makes_its_own_engine_threads(engine_threads):
    x = np.arange(64 * 16, dtype=np.float32).reshape(1, 1, 64, 16)
    weight = np.full((1, 1, 2, 2), 0.25, np.float32)
    engine_threads(2)
    with patch.object(engine, "_BLOCK_BYTES", 1):
        expected = conv2d(x, weight, stride=2)  # the parent's pool exists now
        context = multiprocessing.get_context("fork")
        with context.Pool(1) as pool:
            result = pool.apply_async(conv2d, (x, weight), {"stride": 2}).get(timeout=20)
    np.testing.assert_array_equal(result, expected)


def test_the_engine_takes_one_thread_unless_told(engine_threads):
    assert engine.get_num_threads() == 1
    engine_threads(3)
    assert cnnfilters.get_num_threads() == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(CnnFiltersError, match="threads must be a positive int"):
            cnnfilters.set_num_threads(bad)
    assert engine.get_num_threads() == 3
