"""The engine's type contract: float32 stays float32; a float64 input (or, in the
backward pass, any float64 operand) gives float64, exact to float64; integers
compute in float32.

On both of the engine's paths (a multiply-add per input channel, and one matrix
product for many channels), forward and backward, with stride, dilation and
groups; the references are nested loops in float64 (tests/helpers.py) and the
chain rule through them.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import naive_conv2d

from cnnfilters import avg_pool2d, conv2d, max_pool2d
from cnnfilters.engine import conv2d_grad, pad2d

RNG = np.random.default_rng(61)
# 1 and 2 input channels a group take the multiply-add path, 9 the matrix product.
CASES = [
    {"c_in": 1, "c_out": 2, "groups": 1, "stride": (1, 2), "dilation": (1, 1), "padding": (1, 0)},
    {"c_in": 4, "c_out": 4, "groups": 2, "stride": (2, 1), "dilation": (2, 1), "padding": (2, 1)},
    {"c_in": 9, "c_out": 3, "groups": 1, "stride": (2, 3), "dilation": (1, 2), "padding": (0, 2)},
]


def _operands(case: dict, dtypes: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = RNG.standard_normal((2, case["c_in"], 6, 7))
    w = RNG.standard_normal((case["c_out"], case["c_in"] // case["groups"], 3, 2))
    b = RNG.standard_normal(case["c_out"])
    return x.astype(dtypes[0]), w.astype(dtypes[1]), b.astype(dtypes[2])


def _geometry(case: dict) -> dict:
    return {k: case[k] for k in ("stride", "padding", "dilation", "groups")}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    ("dtypes", "expected"),
    [
        ((np.float32,) * 3, np.float32),
        ((np.float64, np.float32, np.float32), np.float64),
        ((np.float32, np.float64, np.float64), np.float32),  # the input's type: weights follow
    ],
)
def test_conv2d_keeps_the_type_and_float64_is_exact(case, dtypes, expected):
    x, w, b = _operands(case, dtypes)
    out = conv2d(x, w, b, **_geometry(case))
    assert out.dtype == expected
    reference = naive_conv2d(
        x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **_geometry(case)
    )
    tolerance = 1e-12 if expected == np.float64 else 1e-5
    np.testing.assert_allclose(out, reference, rtol=tolerance, atol=tolerance)


def _backward_reference(x, w, grad_out, case):
    """The gradients by the chain rule through the nested loops: the output is linear
    in x and in w, so each gradient is the sum over the outputs of grad_out times
    the output's derivative, read off the loops with unit inputs."""
    x, w, grad_out = (a.astype(np.float64) for a in (x, w, grad_out))
    geometry = _geometry(case)
    grad_w = np.zeros_like(w)
    for index in np.ndindex(w.shape):
        unit = np.zeros_like(w)
        unit[index] = 1.0
        grad_w[index] = np.sum(naive_conv2d(x, unit, **geometry) * grad_out)
    grad_x = np.zeros_like(x)
    for index in np.ndindex(x.shape[1:]):
        unit = np.zeros_like(x)
        unit[(slice(None), *index)] = 1.0
        per_image = naive_conv2d(unit, w, **geometry) * grad_out
        grad_x[(slice(None), *index)] = per_image.sum(axis=(1, 2, 3))
    return grad_x, grad_w, grad_out.sum(axis=(0, 2, 3))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    ("dtypes", "expected"),
    [
        ((np.float32,) * 3, np.float32),
        ((np.float64, np.float32, np.float32), np.float64),
        ((np.float32, np.float64, np.float32), np.float64),
        ((np.float32, np.float32, np.float64), np.float64),
    ],
)
def test_conv2d_grad_keeps_the_type_and_sums_over_the_batch(case, dtypes, expected):
    x, w, _ = _operands(case, (*dtypes[:2], np.float32))
    shape = conv2d(x, w, **_geometry(case)).shape
    grad_out = RNG.standard_normal(shape).astype(dtypes[2])
    grads = conv2d_grad(x, w, grad_out, bias=True, **_geometry(case))
    assert [g.dtype for g in grads] == [expected] * 3
    tolerance = 1e-11 if expected == np.float64 else 1e-4
    for got, want in zip(grads, _backward_reference(x, w, grad_out, case), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_integers_compute_in_float32(dtype):
    x = RNG.integers(0, 100, (2, 7, 8)).astype(dtype)
    w = np.ones((2, 2, 3, 3), dtype=np.float32)
    assert conv2d(x, w).dtype == np.float32
    assert max_pool2d(x, 2).dtype == np.float32
    assert avg_pool2d(x, 2).dtype == np.float32
    grads = conv2d_grad(x, w, np.ones((2, 5, 6), dtype=np.float32), bias=True)
    assert [g.dtype for g in grads] == [np.float32] * 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_and_padding_keep_the_type(dtype):
    x = RNG.standard_normal((2, 3, 7, 9)).astype(dtype)
    assert max_pool2d(x, (2, 3), stride=(1, 2), padding=(1, 1)).dtype == dtype
    assert avg_pool2d(x, (3, 2), stride=(2, 1), padding=(1, 0)).dtype == dtype
    for mode in ("zeros", "replicate", "reflect", "circular"):
        assert pad2d(x, (1, 2, 0, 1), mode=mode).dtype == dtype
