"""The engine's limits and strides on both axes, against direct loops: every
check of a limit is tried with the other axis inside it, every stride with
different steps down and across, and the backward pass with a batch, on both
of its paths (einsum below 8 channels a group, matmul from 8)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnfilters import commute, conv2d_grad, max_pool2d
from cnnfilters.engine import conv2d
from cnnfilters.errors import CnnFiltersError


def direct_grad_weight(x, grad_out, kernel, stride, padding, dilation, groups):
    """d(sum(grad_out * conv2d(x, w))) / dw by loops over every term, in float64."""
    x = np.pad(np.asarray(x, np.float64), [(0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2])
    n, c_in = x.shape[:2]
    c_out, rows, cols = grad_out.shape[1:]
    c_group, (kh, kw) = c_in // groups, kernel
    grad = np.zeros((c_out, c_group, kh, kw))
    for o in range(c_out):
        g = o // (c_out // groups)
        for c, u, v in np.ndindex(c_group, kh, kw):
            total = 0.0
            for b, i, j in np.ndindex(n, rows, cols):
                total += grad_out[b, o, i, j] * x[b, g * c_group + c,
                                                  stride[0] * i + dilation[0] * u,
                                                  stride[1] * j + dilation[1] * v]  # fmt: skip
            grad[o, c, u, v] = total
    return grad


@pytest.mark.parametrize("c_in", [2, 8, 9])  # the einsum path, then the matmul path
@pytest.mark.parametrize("groups", [1, 2])
def test_the_weight_gradient_sums_over_the_batch(c_in, groups):
    rng = np.random.default_rng(c_in * 10 + groups)
    c_in = c_in * groups
    x = rng.standard_normal((3, c_in, 7, 10))
    weight = rng.standard_normal((2 * groups, c_in // groups, 2, 3))
    geometry = {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": groups}
    out = conv2d(x, weight, **geometry)
    grad_out = rng.standard_normal(out.shape)
    _, grad_w, _ = conv2d_grad(x, weight, grad_out, **geometry)
    expected = direct_grad_weight(x, grad_out, (2, 3), (2, 1), (1, 0), (1, 2), groups)
    np.testing.assert_allclose(grad_w, expected, rtol=1e-10, atol=1e-10)
    # A batch of three is the sum of three batches of one.
    one_by_one = sum(conv2d_grad(x[b : b + 1], weight, grad_out[b : b + 1], **geometry)[1]
                     for b in range(3))  # fmt: skip
    np.testing.assert_allclose(grad_w, one_by_one, rtol=1e-12, atol=1e-12)


def direct_max_pool(x, kernel, stride, padding, ceil_mode, dilation=(1, 1)):
    """Max pooling by loops, with torch's rule for ceil_mode: a last window is kept
    only when it starts inside the input or its left padding."""
    height, width = x.shape[-2:]
    sizes = []
    for size, k, s, p, d in zip((height, width), kernel, stride, padding, dilation, strict=True):
        span = size + 2 * p - d * (k - 1) - 1
        out = (math.ceil(span / s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        sizes.append(out)
    result = np.full((x.shape[0], *sizes), -np.inf)
    for c, i, j in np.ndindex(result.shape):
        for u, v in np.ndindex(*kernel):
            r = stride[0] * i + dilation[0] * u - padding[0]
            q = stride[1] * j + dilation[1] * v - padding[1]
            if 0 <= r < height and 0 <= q < width:
                result[c, i, j] = max(result[c, i, j], x[c, r, q])
    return result


@pytest.mark.parametrize("dilation", [(2, 1), (1, 2), (2, 3)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pooling_spreads_its_window_by_the_dilation_of_each_axis(dilation, ceil_mode):
    x = (np.arange(2 * 9 * 11, dtype=np.float64).reshape(2, 9, 11) * 37) % 29
    pooled = max_pool2d(x, (2, 3), (2, 1), (1, 1), dilation, ceil_mode=ceil_mode)
    expected = direct_max_pool(x, (2, 3), (2, 1), (1, 1), ceil_mode, dilation)
    np.testing.assert_array_equal(pooled, expected)


def test_a_pool_window_larger_than_the_padded_input_is_named_with_its_sizes():
    with pytest.raises(CnnFiltersError) as raised:
        max_pool2d(np.ones((1, 3, 4)), (6, 2), 1, (1, 0))
    assert str(raised.value) == (
        "kernel size (6, 2) is larger than the padded input (5 x 4 pixels, from 3 x 4)"
    )


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "padding", "expected"),
    [
        ((1, 3, 3), (2, 2), (2, 2), (1, 1), (1, 2, 2)),  # a third window would start in the pad
        ((1, 3, 5), (2, 2), (2, 2), (1, 1), (1, 2, 3)),
        ((1, 5, 3), (2, 2), (2, 2), (1, 1), (1, 3, 2)),
        ((1, 6, 7), (3, 2), (2, 3), (1, 1), (1, 4, 3)),
        ((1, 7, 6), (2, 3), (3, 2), (1, 1), (1, 3, 4)),
    ],
)
def test_ceil_mode_keeps_no_window_that_starts_in_the_right_padding(
    shape, kernel, stride, padding, expected
):
    x = np.arange(math.prod(shape), dtype=np.float64).reshape(shape) % 7
    pooled = max_pool2d(x, kernel, stride, padding, ceil_mode=True)
    assert pooled.shape == expected
    assert np.isfinite(pooled).all()
    np.testing.assert_array_equal(pooled, direct_max_pool(x, kernel, stride, padding, True))
    floor = max_pool2d(x, kernel, stride, padding)
    np.testing.assert_array_equal(floor, direct_max_pool(x, kernel, stride, padding, False))


@pytest.mark.parametrize("mode", ["reflect", "circular"])
@pytest.mark.parametrize(("shape", "padding"), [((1, 6, 3), (1, 3)), ((1, 3, 6), (3, 1))])
def test_a_padding_limit_is_checked_on_each_axis(mode, shape, padding):
    """Reflect padding must be smaller than the side it pads, circular at most that
    side: each axis on its own, the other one well inside."""
    x, weight = np.ones(shape), np.ones((1, 1, 1, 1))
    too_much = padding if mode == "reflect" else tuple(p + 1 for p in padding)
    with pytest.raises(CnnFiltersError, match=f"{mode} padding of"):
        conv2d(x, weight, padding=too_much, padding_mode=mode)
    fits = tuple(p - 1 for p in too_much)
    padded = conv2d(x, weight, padding=fits, padding_mode=mode)
    assert padded.shape[-2:] == (shape[1] + 2 * fits[0], shape[2] + 2 * fits[1])


@pytest.mark.parametrize(("kernel", "padding"), [((4, 2), (0, 2)), ((2, 4), (2, 0))])
def test_pool_padding_is_at_most_half_the_kernel_on_each_axis(kernel, padding):
    x = np.ones((1, 8, 8))
    with pytest.raises(CnnFiltersError, match="must be at most half the kernel size"):
        max_pool2d(x, kernel, 1, padding)
    allowed = (padding[0] - 1 if padding[0] else 2, padding[1] - 1 if padding[1] else 2)
    assert max_pool2d(x, kernel, 1, allowed).ndim == 3


def test_the_counterexample_window_is_found_with_each_axis_own_stride():
    """Windows of 2 x 3, stride 2 down and 3 across: every window is constant (so
    sigma commutes there) but the one at output (1, 2), rows 2-3, columns 6-8."""
    x = np.ones((1, 6, 9), dtype=np.float32)
    x[0, 2:4, 6:9] = [[1, 2, 3], [4, 5, 6]]
    result = commute(x, "neg", kernel_size=(2, 3), stride=(2, 3))
    assert result.differing == 1
    example = result.counterexample
    assert example["output_index"] == [1, 2]
    assert example["top_left"] == [2, 6]
    assert example["values"] == [[1, 2, 3], [4, 5, 6]]
    assert example["act_of_max"] == -6 and example["max_of_act"] == -1
