"""Independent references: each construction computed without the engine.

Nothing here imports :mod:`cnnfilters.engine`, :mod:`cnnfilters.ops` or
:mod:`cnnfilters.kernels`: a bug there cannot hide in its own check. The
references are slicing differences, reshape-mean, a direct max over windows,
the luma formula in float64, and Pillow's own ``convert("L")`` and
``Image.reduce``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "block_mean",
    "direct_correlation",
    "forward_differences",
    "least_squares_conv",
    "luma",
    "pillow_grayscale",
    "pillow_reduce",
    "window_max",
]


def forward_differences(
    x: np.ndarray, padding_mode: str = "zeros", *, rows: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(X[i+1, j] - X[i, j], X[i, j+1] - X[i, j])`` by array slicing.

    The value beyond the last row (column) is 0 for ``zeros``, the last row
    itself for ``replicate``, the row before it for ``reflect`` and the first
    row for ``circular``. Computed in float32 (float64 for float64 input).
    ``rows=(first, stop)`` gives only those rows.
    """
    x = np.asarray(x)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    height, width = x.shape[-2:]
    first, stop = rows if rows is not None else (0, height)
    beyond = {"zeros": None, "replicate": -1, "reflect": -2, "circular": 0}
    if padding_mode not in beyond:
        raise ValueError(f"unknown padding mode {padding_mode!r}")

    def edge(source: np.ndarray, axis: int, size: int) -> np.ndarray:
        """The row (column) the padding puts after the last one."""
        index = beyond[padding_mode]
        at = size - 1 if index is None else index % size
        # A slice, not np.take, which copies a non-contiguous source whole first.
        picked = source[..., at : at + 1, :] if axis == -2 else source[..., at : at + 1]
        return np.zeros_like(picked, dtype=dtype) if index is None else picked.astype(dtype)

    here = x[..., first:stop, :].astype(dtype)
    below = x[..., first + 1 : stop + 1, :].astype(dtype)
    if stop >= height:
        below = np.concatenate([below, edge(x, -2, height)], axis=-2)
    right = np.concatenate([here[..., 1:], edge(here, -1, width)], axis=-1)
    return below - here, right - here


def luma(rgb: np.ndarray, weights: tuple[float, float, float]) -> np.ndarray:
    """``wR R + wG G + wB B`` in float64 on an ``(3, H, W)`` array: shape ``(1, H, W)``."""
    rgb = np.asarray(rgb)
    out = np.multiply(rgb[0], weights[0], dtype=np.float64)
    out += np.multiply(rgb[1], weights[1], dtype=np.float64)
    out += np.multiply(rgb[2], weights[2], dtype=np.float64)
    return out[np.newaxis]


def block_mean(x: np.ndarray, k: int, edge: str = "drop") -> np.ndarray:
    """Mean of each k x k block by reshape-and-sum, in float64.

    ``reshape(H/k, k, W)`` summed over the block's rows, then
    ``reshape(H/k, W/k, k)`` summed over its columns (two single-axis sums
    are several times faster than one over both axes). Integer pixels are
    summed exactly in integers. ``edge="drop"`` crops the last ``H mod k``
    rows and ``W mod k`` columns; ``edge="partial"`` zero-pads them and
    divides each block by the number of real pixels it holds, as Pillow's
    ``reduce`` does.
    """
    x = np.asarray(x)
    *lead, height, width = x.shape
    if x.dtype.kind in "bui":
        total = np.uint32 if k * k * 65535 < 2**32 else np.uint64
    else:
        total = np.float64
    if edge == "drop":
        rows, cols = height // k, width // k
        x = x[..., : rows * k, : cols * k]
    else:
        rows, cols = -(-height // k), -(-width // k)
        pad = [(0, 0)] * len(lead) + [(0, rows * k - height), (0, cols * k - width)]
        x = np.pad(x, pad)
    line_sums = x.reshape(*lead, rows, k, cols * k).sum(axis=-2, dtype=total)
    sums = line_sums.reshape(*lead, rows, cols, k).sum(axis=-1, dtype=total)
    if edge == "drop":
        return sums / float(k * k)
    row_counts = np.minimum(k, height - k * np.arange(rows))
    col_counts = np.minimum(k, width - k * np.arange(cols))
    return sums / np.outer(row_counts, col_counts).astype(np.float64)


def direct_correlation(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride: int = 1,
    padding: int = 0,
    padding_mode: str = "zeros",
    groups: int = 1,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """Cross-correlation of ``(C, H, W)`` by ``np.pad``, ``sliding_window_view`` and ``einsum``.

    In float64; ``weight`` is ``(C_out, C_in/groups, kh, kw)``. ``rows=(first,
    stop)`` computes only those output rows (strips of a large image), from the
    input rows under them: which input row each padded row is comes from
    ``np.pad`` of the row numbers, so every padding mode pads a strip as it
    pads the whole image.
    """
    x = np.asarray(x)
    weight = np.asarray(weight, dtype=np.float64)
    mode = {"zeros": "constant", "replicate": "edge", "reflect": "reflect", "circular": "wrap"}
    kh, kw = weight.shape[-2:]
    height = x.shape[1]
    first, stop = (0, (height + 2 * padding - kh) // stride + 1) if rows is None else rows
    # The input row of each padded row, by np.pad's own rule (-1: a row of zeros).
    fill = {"constant_values": -1} if padding_mode == "zeros" else {}
    numbers = np.pad(np.arange(height), padding, mode=mode[padding_mode], **fill)
    wanted = numbers[first * stride : (stop - 1) * stride + kh]
    strip = x[:, np.maximum(wanted, 0)].astype(np.float64)
    strip[:, wanted < 0] = 0.0
    padded = np.pad(strip, [(0, 0), (0, 0), (padding, padding)], mode=mode[padding_mode])
    windows = sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    c_in_group, c_out_group = x.shape[0] // groups, weight.shape[0] // groups
    parts = []
    for g in range(groups):
        inputs = windows[g * c_in_group : (g + 1) * c_in_group]
        weights = weight[g * c_out_group : (g + 1) * c_out_group]
        parts.append(np.einsum("chwuv,ocuv->ohw", inputs, weights))
    out = np.concatenate(parts)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[:, np.newaxis, np.newaxis]
    return out


def least_squares_conv(
    inputs: np.ndarray,
    targets: np.ndarray,
    kernel: tuple[int, int],
    *,
    stride: int = 1,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The conv layer (weights and bias) that best maps ``inputs`` to ``targets``.

    ``inputs`` ``(N, C, H, W)`` are already padded; ``targets`` ``(N, C_out,
    H_out, W_out)``. Every window is gathered with ``sliding_window_view`` into
    a matrix (one row a window, one column a weight, plus a column of ones for
    the bias) and solved by ``numpy.linalg.lstsq`` in float64, one group at a
    time. Returns ``(weight, bias, rank, unknowns)``: the smallest rank of a
    group's matrix and its number of columns (a rank below it means the data
    do not determine the layer; lstsq then gives the least-norm solution).
    """
    x = np.asarray(inputs, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    n, c_in = x.shape[:2]
    c_out, out_h, out_w = t.shape[1:]
    kh, kw = kernel
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    windows = windows[:, :, :out_h, :out_w]  # (N, C, H_out, W_out, kh, kw)
    c_in_group, c_out_group = c_in // groups, c_out // groups
    weight = np.empty((c_out, c_in_group, kh, kw))
    bias = np.empty(c_out)
    rank = unknowns = 0
    for g in range(groups):
        part = windows[:, g * c_in_group : (g + 1) * c_in_group]
        rows = part.transpose(0, 2, 3, 1, 4, 5).reshape(n * out_h * out_w, c_in_group * kh * kw)
        matrix = np.column_stack([rows, np.ones(len(rows))])
        wanted = t[:, g * c_out_group : (g + 1) * c_out_group]
        wanted = wanted.transpose(0, 2, 3, 1).reshape(-1, c_out_group)
        solution, _, group_rank, _ = np.linalg.lstsq(matrix, wanted, rcond=None)
        weight[g * c_out_group : (g + 1) * c_out_group] = solution[:-1].T.reshape(
            c_out_group, c_in_group, kh, kw
        )
        bias[g * c_out_group : (g + 1) * c_out_group] = solution[-1]
        rank = group_rank if g == 0 else min(rank, group_rank)
        unknowns = matrix.shape[1]
    return weight, bias, int(rank), unknowns


def window_max(
    x: np.ndarray, k: int | tuple[int, int], stride: int | tuple[int, int]
) -> np.ndarray:
    """Max over every window by numpy's ``sliding_window_view`` (no padding)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    windows = sliding_window_view(np.asarray(x), (kh, kw), axis=(-2, -1))
    return windows[..., ::sh, ::sw, :, :].max(axis=(-2, -1))


def pillow_grayscale(image) -> np.ndarray:
    """Pillow's ``convert("L")`` (BT.601 in 16-bit fixed point) as ``(1, H, W)`` uint8."""
    return np.asarray(image.convert("L"))[np.newaxis]


def pillow_reduce(image, k: int) -> np.ndarray:
    """Pillow's ``Image.reduce(k)`` (partial edge blocks averaged, half rounded up).

    Returns ``(C, H', W')`` uint8 for an 8-bit ``L``, ``RGB`` or ``RGBA`` image.
    """
    reduced = np.asarray(image.reduce(k))
    return reduced[np.newaxis] if reduced.ndim == 2 else np.moveaxis(reduced, -1, 0)
