"""The constructions: each one call of the engine with weights from :mod:`kernels`.

Every function takes a float array ``(C, H, W)`` (or a batch ``(N, C, H, W)``)
with pixel values on their file scale and returns float results.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .activations import Activation, get_activation
from .engine import as_batch, avg_pool2d, conv2d, max_pool2d, pad2d, positive_pair
from .errors import CnnFiltersError
from .kernels import gradient_weight, grayscale_weight

__all__ = [
    "CommuteResult",
    "avgpool",
    "avgpool_shape",
    "commute",
    "find_counterexample",
    "gradients",
    "grayscale",
]

EdgeMode = Literal["drop", "partial"]


def _channels(x: np.ndarray) -> int:
    return as_batch(np.asarray(x))[0].shape[1]


def grayscale(
    x: np.ndarray,
    weights: str | tuple[float, float, float] = "bt601",
    *,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """Luma as a 1x1 convolution: ``Y = wR R + wG G + wB B`` (docs/MATHS.md).

    ``weights`` is ``"bt601"`` (0.299, 0.587, 0.114), ``"bt709"``, ``"R,G,B"``
    or three numbers. Returns one channel: ``(1, H, W)`` (only rows
    ``first..stop`` with ``rows``).
    """
    channels = _channels(x)
    if channels != 3:
        raise CnnFiltersError(f"grayscale needs 3 channels (R, G, B), got {channels}")
    return conv2d(x, grayscale_weight(weights), rows=rows)


def gradients(
    x: np.ndarray, padding_mode: str = "zeros", *, rows: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Vertical and horizontal forward differences, F1 and F2 (docs/MATHS.md).

    One depthwise conv (``groups = C``, padding 1) of every channel with the
    pair F1, F2. Returns ``(dy, dx)``, each shaped like ``x``:
    ``dy[c, i, j] = X[c, i+1, j] - X[c, i, j]`` and
    ``dx[c, i, j] = X[c, i, j+1] - X[c, i, j]``; on the last row (column) the
    padding supplies ``X[i+1, j]``: 0 with ``zeros`` (so ``-X[i, j]``).
    ``rows=(first, stop)`` computes only those rows (strips of a large image).
    """
    channels = _channels(x)
    both = conv2d(
        x,
        gradient_weight(channels),
        padding=1,
        padding_mode=padding_mode,
        groups=channels,
        rows=rows,
    )
    return both[..., 0::2, :, :], both[..., 1::2, :, :]


def avgpool_shape(height: int, width: int, k: int, edge: EdgeMode = "drop") -> tuple[int, int]:
    """The ``(rows, columns)`` :func:`avgpool` makes of a ``height x width`` image; an
    error, as it gives, when ``edge="drop"`` leaves no whole window."""
    if edge == "drop":
        if k > min(height, width):  # k may be huge: say so before any weights exist
            raise CnnFiltersError(
                f"kernel size {k} is larger than the padded input ({height} x {width} pixels, "
                f"from {height} x {width})"
            )
        return height // k, width // k
    k = min(k, max(height, width))
    return -(-height // k), -(-width // k)


def avgpool(x: np.ndarray, k: int, edge: EdgeMode = "drop") -> np.ndarray:
    """k x k average pooling as a stride-k convolution (docs/MATHS.md).

    ``edge="drop"`` is the convolution's own rule: the last ``H mod k`` rows
    and ``W mod k`` columns are dropped. ``edge="partial"`` keeps them, as
    Pillow's ``Image.reduce``: the image is zero-padded to a multiple of k,
    pooled by the same convolution, and each partial block is rescaled from
    ``1/k^2`` to one over the number of real pixels it holds.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise CnnFiltersError(f"kernel size must be a positive int, got {k!r}")
    if edge not in ("drop", "partial"):
        raise CnnFiltersError(f"edge must be 'drop' or 'partial', got {edge!r}")
    x = np.asarray(x)
    height, width = x.shape[-2:]
    if edge == "drop":
        avgpool_shape(height, width, k, edge)  # checked before the k x k weights exist
        return avg_pool2d(x, k)
    # A window larger than the image holds the whole image, whatever its size:
    # the same single partial block, without k x k weights or padding.
    k = min(k, max(height, width))
    extra_rows, extra_cols = -height % k, -width % k
    pooled = avg_pool2d(pad2d(x, (0, extra_rows, 0, extra_cols)), k)
    rows = np.full(pooled.shape[-2], k)
    cols = np.full(pooled.shape[-1], k)
    if extra_rows:
        rows[-1] = k - extra_rows
    if extra_cols:
        cols[-1] = k - extra_cols
    if extra_rows or extra_cols:
        pooled *= (k * k / np.outer(rows, cols)).astype(pooled.dtype)
    return pooled


@dataclass(frozen=True)
class CommuteResult:
    """Both orders of an activation and max pooling on one array, and where they differ.

    ``counterexample`` is ``None`` or a dict describing the first window (in
    C order: channel, row, column) where ``sigma(max)`` and ``max(sigma)``
    differ: its position, its input values and both results. A window
    holding NaN is NaN on both sides and counts as equal. ``overflowed``
    counts windows where the activation of a finite value was infinite
    (float overflow): they are neither equal nor a counterexample.
    For a nonincreasing activation, ``min_identity_holds`` says whether
    ``sigma(max(X)) == min(sigma(X))`` on every window (it must).
    """

    activation: str
    monotonicity: str
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    act_of_pool: np.ndarray
    pool_of_act: np.ndarray
    max_abs: float
    differing: int
    overflowed: int
    total: int
    counterexample: dict | None
    min_identity_holds: bool | None

    @property
    def commutes(self) -> bool:
        """Equal on every window, and no window overflowed (which would prove nothing)."""
        return self.differing == 0 and self.overflowed == 0

    @property
    def difference(self) -> np.ndarray:
        """``sigma(maxpool(x)) - maxpool(sigma(x))`` in float64."""
        return self.act_of_pool.astype(np.float64) - self.pool_of_act.astype(np.float64)

    @property
    def passed(self) -> bool:
        """Nondecreasing must commute exactly; nonincreasing must give the min identity."""
        if self.monotonicity == "nondecreasing":
            return self.commutes
        if self.monotonicity == "nonincreasing":
            return bool(self.min_identity_holds)
        return True


# Values a comparison of the two orders takes at a time (about 1 MB of temporaries).
_GAP_BLOCK = 1 << 16
# Bytes of input a strip of commute's pooled rows reads, at most (one row of windows
# may read more).
_COMMUTE_STRIP_BYTES = 2 << 20


def _pooled_strips(
    x: np.ndarray, rows: int, kernel: tuple[int, int], stride: tuple[int, int]
) -> Iterator[tuple[int, int, np.ndarray]]:
    """The output rows ``first..stop`` of an unpadded max pooling of ``x`` (``rows`` in
    all), a strip at a time, each with the input rows its windows cover."""
    row_bytes = x[..., 0, :].nbytes * stride[0]
    step = max(1, _COMMUTE_STRIP_BYTES // max(1, row_bytes))
    for first in range(0, rows, step):
        stop = min(rows, first + step)
        yield first, stop, x[..., first * stride[0] : (stop - 1) * stride[0] + kernel[0], :]


def _largest_gap(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """``max |a - b|`` in float64 over ``where`` (0 if nowhere; NaN if a gap is NaN), a
    block at a time: a non-monotone activation differs on most windows, and the
    whole-array float64 gaps would take twice the input's memory."""
    flat_a, flat_b, flat_where = a.reshape(-1), b.reshape(-1), where.reshape(-1)
    largest = [0.0]
    for first in range(0, flat_a.size, _GAP_BLOCK):
        block = slice(first, first + _GAP_BLOCK)
        chosen = flat_where[block]
        if chosen.any():
            gaps = flat_a[block][chosen].astype(np.float64) - flat_b[block][chosen]
            largest.append(np.max(np.abs(gaps)))
    return float(np.max(largest))


def _window_details(
    x: np.ndarray,
    activation: Activation,
    index: tuple[int, ...],
    kernel: tuple[int, int],
    stride: tuple[int, int],
) -> dict:
    *channel, i, j = (int(v) for v in index)
    top, left = i * stride[0], j * stride[1]
    window = x[(*channel, slice(top, top + kernel[0]), slice(left, left + kernel[1]))]
    window_act = activation(window)
    return {
        "channel": channel[-1],  # x has a channel axis: max_pool2d refuses one without
        "output_index": [i, j],
        "top_left": [top, left],
        "values": window.tolist(),
        "activated": window_act.tolist(),
        "act_of_max": float(activation(np.array(window.max(), dtype=window.dtype))),
        "max_of_act": float(window_act.max()),
    }


def commute(
    x: np.ndarray,
    activation: str | Activation,
    kernel_size: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
) -> CommuteResult:
    """Compare ``sigma(maxpool(x))`` with ``maxpool(sigma(x))`` (docs/MATHS.md).

    Both are exact float computations: for a nondecreasing ``sigma`` they are
    equal bit for bit, for any window size and stride (overlapping windows
    included). Returns both orders, the number of output values that differ
    and the first differing window.
    """
    act = activation if isinstance(activation, Activation) else get_activation(activation)
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    kernel = positive_pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else positive_pair(stride, "stride")
    pooled = max_pool2d(x, kernel_size, stride)
    act_of_pool = act(pooled)
    pool_of_act = np.empty_like(act_of_pool)
    # A finite input whose activation is infinite overflowed: inf on both sides
    # is no evidence of commutation, and inf on one side none against it.
    overflowed_mask = np.zeros(act_of_pool.shape, dtype=bool)
    # sigma(max) = min(sigma) for a nonincreasing sigma: the min pool is -maxpool(-v).
    min_pool = np.empty_like(act_of_pool) if act.monotonicity == "nonincreasing" else None
    for first, stop, inputs in _pooled_strips(x, act_of_pool.shape[-2], kernel, stride):
        # sigma(x) a strip of output rows at a time, from the input rows they pool:
        # elementwise, and a window's maximum is exact, so these are the values of
        # one call on the whole input, whose sigma(x), a float array the size of
        # the input, would be the largest array of all.
        activated = act(inputs)
        pool_of_act[..., first:stop, :] = max_pool2d(activated, kernel, stride)
        infinite = np.isinf(activated)
        if infinite.any():  # most often none: no mask to pool
            overflow_in = (infinite & np.isfinite(inputs)).astype(np.float32)
            overflowed_mask[..., first:stop, :] = max_pool2d(overflow_in, kernel, stride) > 0
        if min_pool is not None:
            np.negative(activated, out=activated)  # a new array: negated where it lies
            np.negative(max_pool2d(activated, kernel, stride), out=min_pool[..., first:stop, :])
    min_identity = None if min_pool is None else bool(np.array_equal(act_of_pool, min_pool))
    # NaN in a window makes both sides NaN: equal, as np.array_equal(equal_nan=True).
    unequal = (act_of_pool != pool_of_act) & ~(np.isnan(act_of_pool) & np.isnan(pool_of_act))
    overflowed_mask |= np.isinf(act_of_pool) & np.isfinite(pooled)
    overflowed = int(np.count_nonzero(overflowed_mask))
    unequal &= ~overflowed_mask
    differing = int(np.count_nonzero(unequal))
    max_abs = _largest_gap(act_of_pool, pool_of_act, unequal)
    counterexample = None
    if differing:
        # The first in C order (argmax of a mask), without listing every other one.
        first = np.unravel_index(int(np.argmax(unequal)), unequal.shape)
        counterexample = _window_details(x, act, first, kernel, stride)
    return CommuteResult(
        activation=act.name,
        monotonicity=act.monotonicity,
        kernel_size=kernel,
        stride=stride,
        act_of_pool=act_of_pool,
        pool_of_act=pool_of_act,
        max_abs=max_abs,
        differing=differing,
        overflowed=overflowed,
        total=int(act_of_pool.size),
        counterexample=counterexample,
        min_identity_holds=min_identity,
    )


def find_counterexample(
    activation: str | Activation, *, low: float = -8.0, high: float = 8.0, steps: int = 4097
) -> dict | None:
    """A 1 x 2 window ``[a, b]`` with ``a < b`` and ``sigma(a) > sigma(b)``, or None.

    Searches a grid of ``steps`` float32 values in ``[low, high]``: for each
    value, the largest activation among the smaller ones. Where that beats
    the value's own activation, ``sigma(max) < max(sigma)`` on ``[a, b]``.
    Returns the pair with the largest gap, with both orders' results.
    """
    act = activation if isinstance(activation, Activation) else get_activation(activation)
    grid = np.linspace(low, high, steps, dtype=np.float32)
    values = act(grid).astype(np.float64)
    best_before = np.maximum.accumulate(values)
    gap = best_before[:-1] - values[1:]  # max over grid[:i+1] minus sigma(grid[i+1])
    i = int(np.argmax(gap))
    if gap[i] <= 0:
        return None
    b = grid[i + 1]
    a = grid[int(np.argmax(values[: i + 1]))]
    window = np.array([[[a, b]]], dtype=np.float32)
    result = commute(window, act, kernel_size=(1, 2), stride=(1, 2))
    return result.counterexample
