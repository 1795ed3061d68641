"""The convolution engine: ``conv2d``, ``max_pool2d`` and ``avg_pool2d``.

This module holds the only windowing code of cnnfilters. Every construction
(gradients, grayscale, average pooling) is a weight tensor handed to
:func:`conv2d`; max pooling walks the same kernel taps with ``maximum``
instead of multiply-add.

Conventions are those of ``torch.nn.functional``:

- arrays are channels first, one image ``(C, H, W)`` or a batch
  ``(N, C, H, W)``; the result has the same number of dimensions;
- "convolution" is cross-correlation::

      Y[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] * Xpad[n, g*G + c, s*i + d*u, s*j + d*v]

  where ``g`` is the group of output channel ``o`` and ``G = C_in / groups``;
- output size ``floor((H + 2p - d*(k - 1) - 1) / s) + 1``;
- computation in float32, or in float64 when the input is float64.

Cost: one vectorised multiply-add over the whole output per non-zero kernel
tap and input channel of a group, that is ``O(N * C_out * H_out * W_out *
taps)`` arithmetic with no Python loop over pixels; all-zero taps are skipped.
The output is computed in cache-sized blocks of rows, on the calling thread
unless :func:`set_num_threads` spreads them over more.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .defaults import PADDING_MODES
from .errors import CnnFiltersError
from .kernels import avg_pool_weight

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "PADDING_MODES",
    "as_batch",
    "avg_pool2d",
    "conv2d",
    "conv2d_grad",
    "get_num_threads",
    "max_pool2d",
    "pad2d",
    "positive_pair",
    "set_num_threads",
]

PaddingMode = Literal["zeros", "replicate", "reflect", "circular"]

# numpy's name for each torch padding mode.
_NUMPY_PAD_MODE = {
    "zeros": "constant",
    "replicate": "edge",
    "reflect": "reflect",
    "circular": "wrap",
}

# Above this many input channels per group, one matrix product per tap beats
# one broadcast multiply-add per channel. So does it for a 1x1 kernel over two
# channels or more: the product reads each input block once and writes the
# output once, where the multiply-adds make five passes over memory (the
# figures: docs/PERFORMANCE.md, "Why the code is as it is").
_MATMUL_MIN_CHANNELS = 8


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """Return ``value`` as a pair of ints, as torch's ``_pair`` does."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise CnnFiltersError(f"{name} must be an int or a pair of ints, got {value!r}")


def positive_pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """``value`` (an int or a pair) as a pair of positive ints: a kernel size, stride, ..."""
    pair = _pair(value, name)
    if min(pair) <= 0:
        raise CnnFiltersError(f"{name} must be positive, got {value!r}")
    return pair


def _compute_dtype(x: np.ndarray) -> type[np.floating]:
    """float64 stays float64; every other real dtype is computed in float32."""
    if x.dtype.kind not in "biuf":
        raise CnnFiltersError(f"expected a real-valued array, got dtype {x.dtype}")
    return np.float64 if x.dtype == np.float64 else np.float32


def as_batch(x: np.ndarray, what: str = "input") -> tuple[np.ndarray, bool]:
    """Return ``(x as (N, C, H, W), whether a batch axis was added)``."""
    if x.ndim == 3:
        return x[np.newaxis], True
    if x.ndim == 4:
        return x, False
    raise CnnFiltersError(
        f"{what} must have shape (C, H, W) or (N, C, H, W), got {x.ndim} dimensions {x.shape}"
    )


def pad2d(
    x: np.ndarray,
    pads: tuple[int, int, int, int],
    *,
    mode: PaddingMode = "zeros",
    value: float = 0.0,
) -> np.ndarray:
    """Pad the last two axes by ``(top, bottom, left, right)``.

    ``mode`` is one of :data:`PADDING_MODES`, with torch's meanings:
    ``zeros`` (the constant ``value``, 0 unless told), ``replicate`` (repeat
    the edge pixel), ``reflect`` (mirror without repeating the edge; each pad
    must be smaller than the side it extends), ``circular`` (wrap around; each
    pad at most the side).
    """
    _check_mode(mode)
    _check_padding_fits(pads, x.shape[-2:], mode)
    if not any(pads):
        return x
    top, bottom, left, right = pads
    widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    if mode == "zeros":
        return np.pad(x, widths, mode="constant", constant_values=value)
    return np.pad(x, widths, mode=_NUMPY_PAD_MODE[mode])


def _output_size(
    padded: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    input_hw: tuple[int, int],
) -> tuple[int, int]:
    """``floor((H_padded - d*(k-1) - 1) / s) + 1``, after checking the kernel fits."""
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))
    if extent[0] > padded[0] or extent[1] > padded[1]:
        size = f"{extent[0]} x {extent[1]}" if extent[0] != extent[1] else str(extent[0])
        raise CnnFiltersError(
            f"kernel size {size} is larger than the padded input "
            f"({padded[0]} x {padded[1]} pixels, from {input_hw[0]} x {input_hw[1]})"
        )
    return tuple((p - e) // s + 1 for p, e, s in zip(padded, extent, stride, strict=True))


def _tap_views(
    xpad: np.ndarray,
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(u, v, view)`` for every kernel tap, with no copy.

    ``view[..., i, j] == xpad[..., s*i + d*u, s*j + d*v]``: the input pixels
    that tap ``(u, v)`` of every window sees, laid out like the output.
    """
    (out_h, out_w), (sh, sw), (dh, dw) = out_hw, stride, dilation
    for u in range(kernel[0]):
        rows = slice(u * dh, u * dh + sh * (out_h - 1) + 1, sh)
        for v in range(kernel[1]):
            cols = slice(v * dw, v * dw + sw * (out_w - 1) + 1, sw)
            yield u, v, xpad[..., rows, cols]


def _padding_amounts(
    padding: int | tuple[int, int] | str,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` for an int, a pair, ``"valid"`` or ``"same"``."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise CnnFiltersError(f"padding 'same' needs stride 1, got stride {stride}")
            # As torch: the odd pixel of an even total goes to the bottom/right.
            total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            return total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2
        raise CnnFiltersError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise CnnFiltersError(f"padding must be non-negative, got {padding!r}")
    return ph, ph, pw, pw


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """2-D cross-correlation, as in ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array of shape ``(C_in, H, W)`` or ``(N, C_in, H, W)``
    weight : array of shape ``(C_out, C_in / groups, kh, kw)``
    bias : optional array of shape ``(C_out,)``
    stride, padding, dilation : an int or a pair ``(rows, columns)``;
        ``padding`` may also be ``"valid"`` (none) or ``"same"`` (stride 1
        only; an odd total puts the extra pixel at the bottom/right, as torch).
    groups : input and output channels are split into this many groups, each
        convolved with its own slice of ``weight`` (``groups = C_in`` is a
        depthwise convolution).
    padding_mode : ``zeros``, ``replicate``, ``reflect`` or ``circular``, as
        ``torch.nn.Conv2d(padding_mode=...)``.
    rows : ``(first, stop)`` to compute only those output rows, reading only
        the input rows they need (for images processed in strips).

    Returns
    -------
    array of shape ``(C_out, H_out, W_out)`` (or with the batch axis), float32,
    or float64 for a float64 input, where
    ``H_out = floor((H + 2p - d*(kh - 1) - 1) / s) + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    >>> w = np.array([[[[-1, 1]]]], dtype=np.float32)  # x[i, j+1] - x[i, j]
    >>> conv2d(x, w)[0]
    array([[1., 1.],
           [1., 1.],
           [1., 1.]], dtype=float32)
    """
    x = np.asarray(x)
    dtype = _compute_dtype(x)
    batch, added_axis = as_batch(x)
    geo = _Geometry.of(
        batch, weight, bias, stride, padding, dilation, groups, padding_mode, x.shape
    )
    weight, bias = geo.weight, geo.bias
    n, c_in = batch.shape[:2]
    c_out, c_in_group, kh, kw = weight.shape
    pads, padded_hw, (out_h, out_w) = geo.pads, geo.padded_hw, geo.out_hw
    stride_hw, dilation_hw = geo.stride, geo.dilation

    begin, end = (0, out_h) if rows is None else (max(0, rows[0]), min(out_h, rows[1]))
    if end < begin:
        raise CnnFiltersError(f"rows {rows} are outside the output's 0..{out_h}")
    shape = (groups, c_out // groups, c_in_group, kh, kw)
    plan = _plan_for(weight.astype(dtype, copy=False).reshape(shape), dtype)
    out = np.empty((n, groups, c_out // groups, end - begin, out_w), dtype=dtype)
    # Pooling windows side by side keep only the sums of their rows in cache, while
    # the input rows stream past once: a block is sized by those sums.
    row_reads = 1 if plan.sums_rows(kh, stride_hw[0], dilation_hw[0]) else stride_hw[0]
    blocks = list(_row_blocks(begin, end, n * c_in * padded_hw[1], dtype, row_reads))

    def compute(span: _Blocks) -> None:
        for first, stop in span:
            block = _padded_rows(
                batch, first, stop, pads, padding_mode, (kh, kw), stride_hw, dilation_hw, dtype
            )
            grouped = block.reshape(n, groups, c_in_group, *block.shape[-2:])
            target = out[..., first - begin : stop - begin, :]
            plan.run(grouped, target, (kh, kw), stride_hw, dilation_hw)

    _spread(compute, blocks)
    out = out.reshape(n, c_out, end - begin, out_w)
    if bias is not None:
        out += bias.astype(dtype, copy=False)[:, np.newaxis, np.newaxis]
    return out[0] if added_axis else out


# Threads conv2d spreads its row blocks over (set_num_threads), and the pool that
# runs all but the caller's share.
_threads = 1
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (its threads, the pool)
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    """In a forked child, which has none of its parent's threads (and may have its
    lock taken): a pool and a lock of its own, made when first needed."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def set_num_threads(threads: int) -> None:
    """Spread each :func:`conv2d` over up to ``threads`` threads (1, the default: the
    calling thread alone), as ``torch.set_num_threads``.

    The output rows are cut into contiguous runs of the engine's cache-sized
    row blocks, one run a thread; every value is computed as on one thread,
    so the results are the same to the bit. Inputs of a single block stay on
    one thread. numpy releases the interpreter's lock inside its loops, so
    the threads run in parallel. The command line keeps one thread: it runs
    the decode, the computation and the encoder side by side, and a batch
    one process a core.
    """
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise CnnFiltersError(f"threads must be a positive int, got {threads!r}")
    global _threads
    _threads = int(threads)


def get_num_threads() -> int:
    """The threads :func:`conv2d` may use (:func:`set_num_threads`)."""
    return _threads


_Blocks = list[tuple[int, int]]  # (first, stop) output-row ranges


def _spread(compute: Callable[[_Blocks], None], blocks: _Blocks) -> None:
    """``compute`` over ``blocks``, in contiguous runs of blocks on up to
    :func:`get_num_threads` threads (this one takes the first run)."""
    parts = min(_threads, len(blocks))
    if parts <= 1:
        compute(blocks)
        return
    bounds = [len(blocks) * i // parts for i in range(parts + 1)]
    runs = [blocks[a:b] for a, b in itertools.pairwise(bounds)]
    pool = _thread_pool(parts - 1)
    others = [pool.submit(compute, run) for run in runs[1:]]
    try:
        compute(runs[0])
    finally:
        for future in others:
            future.exception()  # every run ends before the output is handed back
    for future in others:
        future.result()


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """The engine's pool, with at least ``workers`` threads."""
    from concurrent.futures import ThreadPoolExecutor  # 3.5 ms: only once threads are asked for

    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] < workers:
            if _pool is not None:
                _pool[1].shutdown(wait=False)  # its threads end once their work is done
            _pool = (workers, ThreadPoolExecutor(workers, thread_name_prefix="cnnfilters-engine"))
        return _pool[1]


def conv2d_grad(
    x: np.ndarray,
    weight: np.ndarray,
    grad_out: np.ndarray,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    bias: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The backward pass of :func:`conv2d`: ``(grad_x, grad_w, grad_b)``.

    ``grad_out`` is the gradient of a loss with respect to ``conv2d(x,
    weight, ...)`` (same geometry arguments); ``grad_b`` is None when
    ``bias`` is False. Shapes and meaning are those of
    ``torch.autograd`` on ``torch.nn.functional.conv2d``.

    Both gradients walk the kernel taps with the forward pass's own
    windowing (:func:`_tap_views`): tap ``(u, v)`` of every window reads the
    strided view ``Xpad[..., s*i + d*u, s*j + d*v]``, so

    - the weight gradient is a correlation of the input with ``grad_out``:
      ``dW[o, c, u, v] = sum_{n, i, j} dY[n, o, i, j] * view_uv[n, c, i, j]``;
    - the input gradient is the transposed correlation: each tap adds
      ``sum_o W[o, c, u, v] * dY[n, o, i, j]`` into the same view of the
      padded gradient, which is then folded back through the padding
      (a replicated, reflected or wrapped pixel gives its gradient to the
      pixel it copies).

    Computed in float32, or float64 when any argument is float64.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    >>> w = np.array([[[[-1, 1]]]], dtype=np.float32)  # y = x[:, 1:] - x[:, :-1]
    >>> dx, dw, db = conv2d_grad(x, w, np.ones((1, 2, 2), dtype=np.float32))
    >>> dx[0]
    array([[-1.,  0.,  1.],
           [-1.,  0.,  1.]], dtype=float32)
    >>> dw[0, 0], db
    (array([[ 8., 12.]], dtype=float32), array([4.], dtype=float32))
    """
    x, grad_out = np.asarray(x), np.asarray(grad_out)
    dtype = np.result_type(
        _compute_dtype(x), _compute_dtype(np.asarray(weight)), _compute_dtype(grad_out)
    ).type
    batch, added_axis = as_batch(x)
    geo = _Geometry.of(
        batch, weight, None, stride, padding, dilation, groups, padding_mode, x.shape
    )
    n, c_in, height, width = batch.shape
    c_out, c_in_group, kh, kw = geo.weight.shape
    expected = (n, c_out, *geo.out_hw)
    grads = grad_out[np.newaxis] if added_axis else grad_out
    if grads.shape != expected:
        shown = expected[1:] if added_axis else expected
        raise CnnFiltersError(f"grad_out must have shape {shown}, got {grad_out.shape}")
    g, rows, cols = geo.groups, geo.out_hw[0], geo.out_hw[1]
    xpad = pad2d(batch.astype(dtype, copy=False), geo.pads, mode=geo.mode)
    xpad = xpad.reshape(n, g, c_in_group, *geo.padded_hw)
    dy = grads.astype(dtype, copy=False).reshape(n, g, c_out // g, rows * cols)
    w = geo.weight.astype(dtype, copy=False).reshape(g, c_out // g, c_in_group, kh, kw)
    grad_w = np.empty_like(w)
    grad_xpad = np.zeros_like(xpad)
    taps = zip(
        _tap_views(xpad, geo.out_hw, (kh, kw), geo.stride, geo.dilation),
        _tap_views(grad_xpad, geo.out_hw, (kh, kw), geo.stride, geo.dilation),
        strict=True,
    )
    few = c_in_group < _MATMUL_MIN_CHANNELS  # as the forward pass: BLAS pays off with many
    dy_image = dy.reshape(n, g, c_out // g, rows, cols)
    for (u, v, seen), (_, _, into) in taps:
        if few:  # einsum reads and writes the strided views in place, with no copy
            grad_w[..., u, v] = np.einsum("ngohw,ngchw->goc", dy_image, seen)
            into += np.einsum("goc,ngohw->ngchw", w[..., u, v], dy_image)
            continue
        columns = seen.reshape(n, g, c_in_group, rows * cols)  # a copy of the strided view
        # (n, g, o, p) @ (n, g, p, c), summed over the batch -> (g, o, c)
        grad_w[..., u, v] = np.matmul(dy, columns.swapaxes(-1, -2)).sum(axis=0)
        # (g, c, o) @ (n, g, o, p) -> (n, g, c, p)
        into += np.matmul(w[..., u, v].swapaxes(-1, -2), dy).reshape(into.shape)
    grad_x = _fold_padding(
        grad_xpad.reshape(n, c_in, *geo.padded_hw), geo.pads, geo.mode, (height, width)
    )
    grad_b = grads.sum(axis=(0, 2, 3), dtype=dtype) if bias else None
    return (grad_x[0] if added_axis else grad_x), grad_w.reshape(geo.weight.shape), grad_b


def _fold_padding(
    grad: np.ndarray, pads: tuple[int, int, int, int], mode: str, size: tuple[int, int]
) -> np.ndarray:
    """The adjoint of padding: the gradient of each padded position goes to the input
    pixel it copies (nowhere for zeros). Rows first, over the padded width; then the
    columns of the result."""
    top, bottom, left, right = pads
    height, width = size
    if mode == "zeros" or not any(pads):
        return grad[..., top : top + height, left : left + width]
    rows = grad[..., top : top + height, :].copy()
    for edge, source in _padded_edges(top, bottom, height, mode):
        rows[..., source, :] += grad[..., edge, :]
    inner = rows[..., left : left + width].copy()
    for edge, source in _padded_edges(left, right, width, mode):
        inner[..., source] += rows[..., edge]
    return inner


def _padded_edges(before: int, after: int, length: int, mode: str) -> Iterator[tuple[int, int]]:
    """``(padded position, input position it copies)`` for each padded row or column."""
    edges = np.r_[np.arange(before), np.arange(before + length, before + length + after)]
    for edge, source in zip(edges, _source_index(edges - before, length, mode), strict=True):
        yield int(edge), int(source)


@dataclass(frozen=True)
class _Geometry:
    """A convolution's shapes, checked once: what :func:`conv2d` and
    :func:`conv2d_grad` both need."""

    weight: np.ndarray
    bias: np.ndarray | None
    groups: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]
    mode: str
    padded_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @classmethod
    def of(
        cls,
        batch: np.ndarray,
        weight: np.ndarray,
        bias: np.ndarray | None,
        stride: int | tuple[int, int],
        padding: int | tuple[int, int] | str,
        dilation: int | tuple[int, int],
        groups: int,
        padding_mode: str,
        shape: tuple[int, ...],
    ) -> _Geometry:
        """Check everything; ``shape`` is the caller's input shape (for messages)."""
        weight = np.asarray(weight)
        _compute_dtype(weight)
        if weight.ndim != 4:
            raise CnnFiltersError(
                f"weight must have shape (C_out, C_in/groups, kh, kw), "
                f"got {weight.ndim} dimensions {weight.shape}"
            )
        if bias is not None:
            bias = np.asarray(bias)
            _compute_dtype(bias)
            c_out = weight.shape[0]
            if bias.shape != (c_out,):
                raise CnnFiltersError(f"bias must have shape ({c_out},), got {bias.shape}")
        args = (
            batch.shape[1:],
            weight.shape,
            stride,
            padding,
            dilation,
            groups,
            padding_mode,
            shape,
        )
        plain = all(map(_plain, (stride, padding, dilation, groups, padding_mode)))
        return cls(weight, bias, *(_cached_layout(*args) if plain else _layout(*args)))


def _plain(value: object) -> bool:
    """Whether ``value`` is an argument :func:`_cached_layout` may be keyed on: an int
    (not a bool), a string, or a tuple of ints. Any other (numpy ints, lists, a
    bool, a wrong type) is worked out afresh, so that it meets its own checks:
    a cache would take ``(True, 1)`` for the ``(1, 1)`` it equals."""
    if type(value) is tuple:
        return all(type(item) is int for item in value)
    return type(value) in (int, str)


def _layout(
    channels_hw: tuple[int, ...],
    weight_shape: tuple[int, ...],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int] | str,
    dilation: int | tuple[int, int],
    groups: int,
    padding_mode: str,
    shape: tuple[int, ...],
) -> tuple[
    int,
    tuple[int, int],
    tuple[int, int],
    tuple[int, int, int, int],
    str,
    tuple[int, int],
    tuple[int, int],
]:
    """The shapes of a convolution of ``(C_in, H, W)`` inputs by a weight of
    ``weight_shape``, checked: ``(groups, stride, dilation, pads, mode, padded_hw,
    out_hw)``. It reads no array, so that a batch of images of one size works
    it out once (:func:`_cached_layout`)."""
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups <= 0:
        raise CnnFiltersError(f"groups must be a positive int, got {groups!r}")
    c_in, height, width = channels_hw
    c_out, c_in_group, kh, kw = weight_shape
    if c_in % groups:
        raise CnnFiltersError(f"input channels ({c_in}) must be divisible by groups ({groups})")
    if c_out % groups:
        raise CnnFiltersError(f"output channels ({c_out}) must be divisible by groups ({groups})")
    if c_in_group != c_in // groups:
        raise CnnFiltersError(
            f"weight of shape {weight_shape} expects {c_in_group * groups} input channels "
            f"with groups={groups}, got {c_in} (input shape {shape})"
        )
    if kh == 0 or kw == 0 or c_out == 0:
        raise CnnFiltersError(f"weight must not be empty, got shape {weight_shape}")
    stride_hw = positive_pair(stride, "stride")
    dilation_hw = positive_pair(dilation, "dilation")
    pads = _padding_amounts(padding, (kh, kw), stride_hw, dilation_hw)
    _check_mode(padding_mode)
    _check_padding_fits(pads, (height, width), padding_mode)
    padded_hw = (height + pads[0] + pads[1], width + pads[2] + pads[3])
    out_hw = _output_size(padded_hw, (kh, kw), stride_hw, dilation_hw, (height, width))
    return int(groups), stride_hw, dilation_hw, pads, padding_mode, padded_hw, out_hw


# A batch convolves thousands of images of one size with the same arguments: their
# checked shapes are worked out once, as working them out is a sizeable part of
# the engine's time on a tiny image. An argument that fails a check raises every
# time.
_cached_layout = functools.lru_cache(maxsize=64)(_layout)


# Rows of input a block of output reads (for pooling, the sums of those rows):
# about this many bytes, so that a block and its temporaries stay in cache (smaller
# blocks pay the loop's overhead, whole images miss the cache).
_BLOCK_BYTES = 1024 * 1024


def _row_blocks(
    begin: int, end: int, row_elements: int, dtype: type, row_reads: int
) -> Iterator[tuple[int, int]]:
    """``(first, stop)`` output-row ranges covering ``begin..end``, each output row
    holding ``row_reads`` input rows of ``row_elements`` values in cache."""
    row_bytes = max(1, row_elements * np.dtype(dtype).itemsize * row_reads)
    rows = max(1, _BLOCK_BYTES // row_bytes)
    for first in range(begin, end, rows):
        yield first, min(first + rows, end)


def _check_mode(mode: str) -> None:
    if mode not in PADDING_MODES:
        raise CnnFiltersError(
            f"padding mode must be one of {', '.join(PADDING_MODES)}, got {mode!r}"
        )


def _check_padding_fits(pads: tuple[int, int, int, int], size: tuple[int, int], mode: str) -> None:
    height, width = size
    if min(pads) < 0:
        raise CnnFiltersError(f"padding must be non-negative, got {pads}")
    top, bottom, left, right = pads
    if mode == "reflect" and (max(top, bottom) >= height or max(left, right) >= width):
        raise CnnFiltersError(
            f"reflect padding of {max(top, bottom)} x {max(left, right)} needs an input larger "
            f"than the padding, got {height} x {width} pixels"
        )
    if mode == "circular" and (max(top, bottom) > height or max(left, right) > width):
        raise CnnFiltersError(
            f"circular padding of {max(top, bottom)} x {max(left, right)} wraps around more "
            f"than once on an input of {height} x {width} pixels"
        )
    if any(pads) and (height == 0 or width == 0):
        # Zeros too: no window of an empty image holds a pixel (torch refuses it as well).
        verb = "zero" if mode == "zeros" else mode
        raise CnnFiltersError(f"cannot {verb}-pad an empty input ({height} x {width} pixels)")


def _padded_rows(
    x: np.ndarray,
    first: int,
    stop: int,
    pads: tuple[int, int, int, int],
    mode: str,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    dtype: type,
) -> np.ndarray:
    """The padded input rows that output rows ``first..stop`` read, in ``dtype``.

    Rows inside the image are a view when no conversion or horizontal padding
    is needed; rows in the top/bottom padding follow ``mode``. The whole
    padded image is never built.
    """
    height = x.shape[-2]
    top, _, left, right = pads
    lo = first * stride[0] - top
    hi = (stop - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1 - top
    if lo >= 0 and hi <= height:
        rows = x[..., lo:hi, :]
    else:
        index = np.arange(lo, hi)
        outside = (index < 0) | (index >= height)
        # Indexing, not np.take: take copies a non-contiguous input whole first
        # (a channels-first view of decoded pixels: 144 MB on 48 MP) to pick a few rows.
        rows = x[..., _source_index(index, height, mode), :]
        if mode == "zeros" and outside.any():
            rows = rows.astype(dtype)  # a copy, safe to write
            rows[..., outside, :] = 0
    if left or right:
        rows = pad2d(rows.astype(dtype, copy=False), (0, 0, left, right), mode=mode)
    # Otherwise rows may stay integers (uint8 pixels): the ufuncs below cast
    # them on the fly, which saves a float copy of every block.
    return rows


def _source_index(index: np.ndarray, size: int, mode: str) -> np.ndarray:
    """The input row (or column) each padded position ``index`` (from ``-pad``)
    copies under ``mode``; ``zeros`` gives an in-range index whose value is
    then overwritten with 0."""
    if mode == "reflect":
        index = np.where(index < 0, -index, np.where(index >= size, 2 * (size - 1) - index, index))
    elif mode == "circular":
        index = index % size
    return np.clip(index, 0, size - 1)  # replicate: the nearest row; zeros: any row


def _plan_for(grouped_w: np.ndarray, dtype: type) -> _Plan:
    """The :class:`_Plan` of these weights: made once per distinct kernel, since a
    batch convolves thousands of images with the same one (working out a kernel's
    taps took about a tenth of the engine's time on a 32 x 32 image)."""
    return _cached_plan(grouped_w.tobytes(), grouped_w.shape, np.dtype(dtype).str)


@functools.lru_cache(maxsize=32)
def _cached_plan(data: bytes, shape: tuple[int, ...], dtype: str) -> _Plan:
    weight = np.frombuffer(data, dtype=dtype).reshape(shape)  # read-only: plans are shared
    return _Plan(weight, np.dtype(dtype).type)


class _Plan:
    """How each output channel is accumulated from its non-zero kernel taps.

    Per output channel of a group (vectorised over the groups): the list of
    ``(c, u, v, weight)`` with a non-zero weight, the weight a scalar when it
    is the same in every group (the depthwise constructions). Weights of +1
    and -1 become additions and subtractions; when every tap of a channel has
    the same weight (average pooling), the taps are summed and scaled once.
    Many input channels per group, or a 1x1 kernel over several, use one
    matrix product per tap instead.
    """

    def __init__(self, grouped_w: np.ndarray, dtype: type) -> None:
        self.weight = grouped_w
        self.dtype = dtype
        groups, c_out_group, c_in_group, kh, kw = grouped_w.shape
        self.matmul = c_in_group >= _MATMUL_MIN_CHANNELS or (kh == kw == 1 and c_in_group > 1)
        self.channels: list[tuple[list[tuple[int, int, int, object]], object]] = []
        self.box = None
        if self.matmul:
            return
        for o in range(c_out_group):
            ops = []
            for c in range(c_in_group):
                for u in range(kh):
                    for v in range(kw):
                        w = grouped_w[:, o, c, u, v]
                        if not w.any():
                            continue  # most taps of F1, F2 and the one-hot filters
                        scalar = w[0] if (w == w[0]).all() else None
                        coef = scalar if scalar is not None else w.reshape(1, groups, 1, 1)
                        ops.append((c, u, v, coef))
            scalars = {float(op[3]) for op in ops if not isinstance(op[3], np.ndarray)}
            common = (
                len(ops) > 1
                and len(scalars) == 1
                and all(not isinstance(op[3], np.ndarray) for op in ops)
                and scalars != {1.0}
                and scalars != {-1.0}
            )
            self.channels.append((ops, scalars.pop() if common else None))
        # A box: one input channel, every tap present with the same weight
        # (average pooling). Its window sums separate into a horizontal pass
        # over the kernel's columns and a vertical pass over its rows.
        ops, common = self.channels[0] if c_out_group == 1 else ([], None)
        self.box = common if (c_in_group == 1 and len(ops) == kh * kw and common) else None

    def sums_rows(self, kernel_rows: int, stride: int, dilation: int) -> bool:
        """Whether a box's windows lie side by side down the image (pooling), so that
        each output row sums its own ``kernel_rows`` adjacent input rows."""
        return self.box is not None and stride == kernel_rows and dilation == 1

    def run(
        self,
        block: np.ndarray,
        out: np.ndarray,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
    ) -> None:
        """Fill ``out`` (N, G, C_out/G, rows, W_out) from the padded ``block`` (N, G, C/G, ...)."""
        rows, width = out.shape[-2:]
        (sh, sw), (dh, dw) = stride, dilation

        def view(u: int, v: int) -> np.ndarray:
            """The input samples tap (u, v) of every output position reads."""
            return block[
                ...,
                u * dh : u * dh + sh * (rows - 1) + 1 : sh,
                v * dw : v * dw + sw * (width - 1) + 1 : sw,
            ]

        if self.matmul:
            self._run_matmul(block, out, kernel, view)
        elif self.box is not None:
            self._run_box(block, out, kernel, stride, dilation)
        else:
            self._run_taps(out, lambda c, u, v: view(u, v)[:, :, c])

    def _run_matmul(
        self,
        block: np.ndarray,
        out: np.ndarray,
        kernel: tuple[int, int],
        view: Callable[[int, int], np.ndarray],
    ) -> None:
        """Many channels: one matrix product per tap (a 1x1 kernel's, straight into
        ``out`` when its rows are one block of memory)."""
        n, groups, c_in_group = block.shape[:3]
        rows, width = out.shape[-2:]
        if kernel == (1, 1) and out.flags.c_contiguous:
            columns = view(0, 0).astype(self.dtype, copy=False)
            columns = columns.reshape(n, groups, c_in_group, rows * width)
            np.matmul(
                self.weight[:, :, :, 0, 0], columns, out=out.reshape(n, groups, -1, rows * width)
            )
            return
        out[...] = 0
        for u in range(kernel[0]):
            for v in range(kernel[1]):
                tap = self.weight[:, :, :, u, v]
                if not tap.any():
                    continue
                columns = view(u, v).reshape(n, groups, c_in_group, rows * width)
                out += np.matmul(tap, columns).reshape(out.shape)

    def _run_box(
        self,
        block: np.ndarray,
        out: np.ndarray,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
    ) -> None:
        """A box of equal weights: sum rows first (contiguous reads), then the strided
        columns of the result, then scale once."""
        acc = out[:, :, 0]
        rows, width = out.shape[-2:]
        (sh, sw), (dh, dw) = stride, dilation
        kh, kw = kernel
        if self.sums_rows(kh, sh, dh):
            # Each window's rows are adjacent: one reduction over them reads the block
            # once, where an addition per kernel row reads it kh times.
            src = block[:, :, 0, : rows * kh, :]
            src = src.reshape(*src.shape[:2], rows, kh, src.shape[-1])
            lines = np.add.reduce(src, axis=3, dtype=self.dtype)
        else:
            lines = None
            for u in range(kh):
                src = block[:, :, 0, u * dh : u * dh + sh * (rows - 1) + 1 : sh, :]
                if lines is None:
                    lines = src.astype(self.dtype, copy=True)
                else:
                    np.add(lines, src, out=lines)
        for v in range(kw):
            src = lines[..., v * dw : v * dw + sw * (width - 1) + 1 : sw]
            if v == 0:
                np.copyto(acc, src)
            else:
                np.add(acc, src, out=acc)
        np.multiply(acc, self.dtype(self.box), out=acc)

    def _run_taps(self, out: np.ndarray, view: Callable[[int, int, int], np.ndarray]) -> None:
        """Few taps: each output channel accumulates its non-zero taps, with +1 and -1
        as additions and subtractions."""
        scratch = None
        for o, (ops, common) in enumerate(self.channels):
            acc = out[:, :, o]
            if not ops:
                acc[...] = 0
                continue
            for index, (c, u, v, coef) in enumerate(ops):
                src = view(c, u, v)
                plain = common is not None or (not isinstance(coef, np.ndarray) and coef == 1)
                negate = not plain and not isinstance(coef, np.ndarray) and coef == -1
                if index == 0:
                    if plain:
                        np.copyto(acc, src)
                    elif negate:
                        np.negative(src, out=acc, dtype=self.dtype)
                    else:
                        np.multiply(src, coef, out=acc, dtype=self.dtype)
                elif plain:
                    np.add(acc, src, out=acc, dtype=self.dtype)
                elif negate:
                    np.subtract(acc, src, out=acc, dtype=self.dtype)
                else:
                    if scratch is None or scratch.shape != acc.shape:
                        scratch = np.empty(acc.shape, dtype=self.dtype)
                    np.multiply(src, coef, out=scratch, dtype=self.dtype)
                    np.add(acc, scratch, out=acc)
            if common is not None:
                np.multiply(acc, self.dtype(common), out=acc)


def _pool_geometry(
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None,
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int] = 1,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    kernel = positive_pair(kernel_size, "kernel_size")
    stride_hw = kernel if stride is None else positive_pair(stride, "stride")
    pad = _pair(padding, "padding")
    dilation_hw = positive_pair(dilation, "dilation")
    if min(pad) < 0:
        raise CnnFiltersError(f"padding must be non-negative, got {padding!r}")
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise CnnFiltersError(
            f"padding {padding!r} must be at most half the kernel size {kernel_size!r}"
        )
    return kernel, stride_hw, pad, dilation_hw


def max_pool2d(
    x: np.ndarray,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    *,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Max pooling, as ``torch.nn.functional.max_pool2d``.

    ``Y[c, i, j] = max_{u, v} Xpad[c, s*i + d*u, s*j + d*v]`` where ``Xpad``
    is padded with ``-inf`` (so padding never wins). ``stride`` defaults to
    ``kernel_size``; ``padding`` is at most half the kernel. With
    ``ceil_mode`` the last, partial window of each axis is kept when it starts
    inside the input or its left padding.
    Cost: one ``maximum`` over the output per kernel tap.
    """
    x = np.asarray(x)
    dtype = _compute_dtype(x)
    batch, added_axis = as_batch(x)
    kernel, stride_hw, pad, dilation_hw = _pool_geometry(kernel_size, stride, padding, dilation)
    height, width = batch.shape[-2:]
    out_hw = []
    for size, k, s, p, d in zip((height, width), kernel, stride_hw, pad, dilation_hw, strict=True):
        span = size + 2 * p - d * (k - 1) - 1
        if span < 0:
            raise CnnFiltersError(
                f"kernel size {kernel_size!r} is larger than the padded input "
                f"({height + 2 * pad[0]} x {width + 2 * pad[1]} pixels, from {height} x {width})"
            )
        out = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1  # a window may not start in the right padding (torch's rule)
        out_hw.append(out)
    # Enough -inf on the bottom/right for the windows ceil_mode adds.
    extra = [
        max(0, (o - 1) * s + d * (k - 1) + 1 - (size + 2 * p))
        for o, s, d, k, size, p in zip(
            out_hw, stride_hw, dilation_hw, kernel, (height, width), pad, strict=True
        )
    ]
    pads = (pad[0], pad[0] + extra[0], pad[1], pad[1] + extra[1])
    xpad = pad2d(batch.astype(dtype, copy=False), pads, mode="zeros", value=-np.inf)
    result = None
    for _, _, view in _tap_views(xpad, tuple(out_hw), kernel, stride_hw, dilation_hw):
        result = view.copy() if result is None else np.maximum(result, view, out=result)
    return result[0] if added_axis else result


def avg_pool2d(
    x: np.ndarray,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
) -> np.ndarray:
    """k x k average pooling, computed as a convolution (docs/MATHS.md).

    Equals ``torch.nn.functional.avg_pool2d`` with its defaults
    (``count_include_pad=True``, ``ceil_mode=False``): a depthwise
    :func:`conv2d` (``groups = C``) with every weight ``1 / (kh * kw)``,
    stride ``kernel_size`` unless told, zero padding. Rows and columns that
    do not fill a whole window are dropped.
    """
    x = np.asarray(x)
    batch, _ = as_batch(x)
    kernel, stride_hw, pad, _ = _pool_geometry(kernel_size, stride, padding)
    return conv2d(
        x,
        avg_pool_weight(batch.shape[1], kernel, dtype=_compute_dtype(x)),
        stride=stride_hw,
        padding=pad,
        groups=batch.shape[1],
    )
