"""Integer outputs that equal the correctly rounded exact value, half up.

The engine computes in float32, and a float32 result is within a known bound
``B`` of the exact value. Rounding it to the nearest level can only go wrong
where a tie ``k + 1/2`` lies within ``B`` of it: there the exact value may be
the tie itself (RGB (4, 40, 16) has luma exactly 26.5, float32 says
26.49999...) or on the tie's other side (16-bit luma 52465.499 read as
52465.5). Those few values are decided again in exact integer arithmetic:
the weights of the 1x1 and pooling convolutions are rationals (0.299 is
299/1000, 1/k^2 is 1/k^2), so each exact value is a fraction ``N / D`` of
integers, and ``floor(N / D + 1/2) = (2N + D) // 2D``. Everywhere else the
float32 rounding is already right.

The rule is round half up, clipped to ``0..2^bits - 1``, as Pillow's
``convert("L")`` and OpenCV mostly do.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["Exact", "as_fractions", "block_mean_exact", "correct_ties", "luma_exact"]

_EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Exact:
    """The exact values behind a float result, for where its rounding is in doubt.

    ``bound`` bounds ``|result - exact|`` everywhere; ``values(index)`` gives,
    for flat indices into the result, the exact values as integer numerators
    and denominators (object arrays of Python ints when int64 could overflow).
    """

    bound: float
    values: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@functools.lru_cache(maxsize=64)
def as_fractions(weights: tuple[float, ...]) -> tuple[tuple[int, ...], int]:
    """Weights as integers over one common denominator, from their shortest decimal:
    the decimal a person wrote, not the binary float nearest to it. Kept for the
    run (Fraction arithmetic was a tenth of the CPU of a small image).

    >>> as_fractions((0.299, 0.587, 0.114))
    ((299, 587, 114), 1000)
    >>> as_fractions((0.25, 0.5, 0.25))
    ((1, 2, 1), 4)
    """
    fractions = [Fraction(repr(float(w))) for w in weights]
    denominator = math.lcm(*(f.denominator for f in fractions))
    return tuple(int(f * denominator) for f in fractions), denominator


def correct_ties(pixels: np.ndarray, values: np.ndarray, exact: Exact, top: int) -> None:
    """Re-round, in place, the ``pixels`` whose float ``values`` lie within ``exact.bound``
    of a tie.

    ``pixels`` is ``floor(values + 1/2)`` clipped to ``0..top`` (same shape).
    """
    flat_values, flat_pixels = values.reshape(-1), pixels.reshape(-1)
    step = 1 << 16  # blocks in cache
    # The distance to the nearest tie, |x - floor(x) - 1/2|, is exact in the
    # values' own float type wherever it is below 1/4 (Sterbenz), and the
    # bound is far below that.
    work = np.empty(min(step, flat_values.size), dtype=np.result_type(flat_values, np.float32))
    for start in range(0, flat_values.size, step):
        block = flat_values[start : start + step]
        distance = work[: block.size]
        np.floor(block, out=distance)
        np.subtract(block, distance, out=distance)
        distance -= 0.5
        np.abs(distance, out=distance)
        index = np.flatnonzero(distance <= exact.bound)
        if not index.size:
            continue
        index += start
        numerators, denominators = exact.values(index)
        rounded = (2 * numerators + denominators) // (2 * denominators)
        rounded = np.clip(rounded.astype(np.float64), 0, top).astype(flat_pixels.dtype)
        flat_pixels[index] = rounded


def _integers(values: np.ndarray, largest: int) -> np.ndarray:
    """int64, or Python ints when ``largest`` (a bound on the results) does not fit in it."""
    return values.astype(np.int64 if largest < 2**62 else object)


def luma_exact(rgb: np.ndarray, weights: tuple[float, float, float], peak: float) -> Exact:
    """The exact luma of integer ``rgb`` ``(3, H, W)`` under decimal ``weights``.

    The float32 1x1 convolution is within a few units in the last place of
    ``sum |w| * peak``; the bound allows 8 of them.
    """
    numerators, denominator = as_fractions(weights)
    scale = sum(abs(w) for w in weights) or 1.0
    largest = sum(abs(n) for n in numerators) * int(peak) + denominator
    plane = rgb.shape[1] * rgb.shape[2]

    def values(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        channels = rgb.reshape(3, plane)[:, index]
        total = sum(_integers(channels[c], largest) * n for c, n in enumerate(numerators))
        return total, np.full(index.size, denominator, dtype=np.int64)

    return Exact(bound=8 * _EPS32 * scale * peak, values=values)


def block_mean_exact(x: np.ndarray, k: int, shape: tuple[int, int, int], peak: float) -> Exact:
    """The exact k x k block means of integer ``x`` ``(C, H, W)``, pooled to ``shape``.

    Partial blocks at the edges (Pillow's ``reduce``) average the pixels they
    hold. The float32 result sums ``k^2`` terms: the bound allows twice that
    many units in the last place of the peak, and 8 more.
    """
    height, width = x.shape[-2:]
    # A window larger than the image is the whole image (one partial block).
    k = min(k, max(height, width))
    du, dv = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")

    def values(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, a, b = np.unravel_index(index, shape)
        rows = a[:, None, None] * k + du
        cols = b[:, None, None] * k + dv
        inside = (rows < height) & (cols < width)
        window = x[c[:, None, None], np.minimum(rows, height - 1), np.minimum(cols, width - 1)]
        sums = np.where(inside, window.astype(np.int64), 0).sum(axis=(1, 2))
        return sums, inside.sum(axis=(1, 2)).astype(np.int64)

    return Exact(bound=(2 * k * k + 8) * _EPS32 * peak, values=values)
