"""The engine against PyTorch itself, when it is installed (it is not a dependency)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from helpers import random_conv_case  # noqa: E402

from cnnfilters import avg_pool2d, conv2d, conv2d_grad, max_pool2d  # noqa: E402


def _pair(value):
    return value if isinstance(value, tuple) else (value, value)


@pytest.mark.parametrize("seed", range(200))
def test_conv2d_agrees_with_torch(seed):
    rng = np.random.default_rng(seed)
    groups, c_in, c_out, kernel, stride, dilation, mode, (h, w), padding = random_conv_case(rng)
    n = int(rng.integers(1, 3))
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in // groups, *kernel)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32) if seed % 2 else None
    layer = torch.nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation,
                            groups=groups, bias=bias is not None, padding_mode=mode)  # fmt: skip
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        if bias is not None:
            layer.bias.copy_(torch.from_numpy(bias))
        expected = layer(torch.from_numpy(x)).numpy()
    actual = conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation,
                    groups=groups, padding_mode=mode)  # fmt: skip
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def _autograd(layer, x: np.ndarray, weight: np.ndarray, rng: np.random.Generator):
    """torch's backward pass of ``layer`` (weights set to ``weight``) at ``x`` for a random
    upstream gradient: ``(x as a tensor holding its .grad, the upstream gradient)``."""
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
    x_t = torch.from_numpy(x).requires_grad_(True)
    y = layer(x_t)
    grad_out = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(torch.from_numpy(grad_out))
    return x_t, grad_out


@pytest.mark.parametrize("seed", range(200))
def test_conv2d_grad_agrees_with_torch_autograd(seed):
    rng = np.random.default_rng(5000 + seed)
    groups, c_in, c_out, kernel, stride, dilation, mode, (h, w), padding = random_conv_case(rng)
    n = int(rng.integers(1, 3))
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in // groups, *kernel)).astype(np.float32)
    bias = seed % 2 == 1
    layer = torch.nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation,
                            groups=groups, bias=bias, padding_mode=mode)  # fmt: skip
    x_t, grad_out = _autograd(layer, x, weight, rng)
    one = seed % 3 == 0 and n == 1  # one image (C, H, W) too
    dx, dw, db = conv2d_grad(x[0] if one else x, weight, grad_out[0] if one else grad_out,
                             stride=stride, padding=padding, dilation=dilation, groups=groups,
                             padding_mode=mode, bias=bias)  # fmt: skip
    np.testing.assert_allclose(dx, x_t.grad.numpy()[0] if one else x_t.grad.numpy(), rtol=1e-4,
                               atol=1e-4)  # fmt: skip
    np.testing.assert_allclose(dw, layer.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    if bias:
        np.testing.assert_allclose(db, layer.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    else:
        assert db is None


@pytest.mark.parametrize("seed", range(12))
def test_conv2d_grad_with_many_channels_agrees_with_torch_autograd(seed):
    # Eight or more input channels a group take the matrix-product path.
    rng = np.random.default_rng(6000 + seed)
    groups = 1 + seed % 2
    c_in, c_out = 16 * groups, 4 * groups
    stride, padding, mode = 1 + seed % 3, seed % 2, ("zeros", "reflect", "circular")[seed % 3]
    x = rng.standard_normal((2, c_in, 11, 9)).astype(np.float32)
    weight = rng.standard_normal((c_out, c_in // groups, 3, 2)).astype(np.float32)
    layer = torch.nn.Conv2d(c_in, c_out, (3, 2), stride=stride, padding=padding, groups=groups,
                            padding_mode=mode)  # fmt: skip
    x_t, grad_out = _autograd(layer, x, weight, rng)
    dx, dw, db = conv2d_grad(x, weight, grad_out, stride=stride, padding=padding, groups=groups,
                             padding_mode=mode)  # fmt: skip
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, layer.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, layer.bias.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("seed", range(40))
def test_same_padding_agrees_with_torch(seed):
    rng = np.random.default_rng(1000 + seed)
    kernel = tuple(int(v) for v in rng.integers(1, 6, size=2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, size=2))
    x = rng.standard_normal((2, 7 + seed % 5, 9)).astype(np.float32)
    weight = rng.standard_normal((3, 2, *kernel)).astype(np.float32)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding="same",
                        dilation=dilation).numpy()  # fmt: skip
    actual = conv2d(x, weight, padding="same", dilation=dilation)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(100))
def test_max_pool2d_agrees_with_torch(seed):
    rng = np.random.default_rng(2000 + seed)
    kernel = tuple(int(v) for v in rng.integers(1, 5, size=2))
    stride = tuple(int(v) for v in rng.integers(1, 4, size=2)) if seed % 3 else None
    padding = (int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1)))
    dilation = tuple(int(v) for v in rng.integers(1, 3, size=2)) if seed % 4 == 0 else (1, 1)
    ceil_mode = bool(seed % 2)
    h = int(rng.integers(dilation[0] * (kernel[0] - 1) + 1, 15))
    w = int(rng.integers(dilation[1] * (kernel[1] - 1) + 1, 15))
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    expected = F.max_pool2d(torch.from_numpy(x), kernel, stride, padding, dilation,
                            ceil_mode=ceil_mode).numpy()  # fmt: skip
    actual = max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("seed", range(100))
def test_avg_pool2d_agrees_with_torch(seed):
    rng = np.random.default_rng(3000 + seed)
    kernel = (
        tuple(int(v) for v in rng.integers(1, 6, size=2)) if seed % 2 else int(rng.integers(1, 6))
    )
    kh, kw = _pair(kernel)
    stride = None if seed % 3 else tuple(int(v) for v in rng.integers(1, 4, size=2))
    padding = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
    shape = (int(rng.integers(1, 3)), 3, int(rng.integers(kh, 20)), int(rng.integers(kw, 20)))
    x = (rng.random(shape) * 255).astype(np.float32)
    expected = F.avg_pool2d(torch.from_numpy(x), kernel, stride, padding).numpy()
    actual = avg_pool2d(x, kernel, stride, padding)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_float64_agrees_with_torch_float64():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 4, 11, 10))
    weight = rng.standard_normal((6, 2, 3, 3))
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), stride=2, padding=1,
                        groups=2).numpy()  # fmt: skip
    actual = conv2d(x, weight, stride=2, padding=1, groups=2)
    assert actual.dtype == np.float64
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)
