"""Results as output levels: the pixels a float result is written as.

An 8- or 16-bit input's result is rounded half up and clipped to its depth
(:func:`quantize`, counting what was clipped); a signed result (a
derivative, a difference) is drawn with 0 at mid-gray on a stated scale
(:func:`signed_to_image`, :func:`signed_mosaic` a strip of rows at a time),
a nonnegative one from black (:func:`unsigned_to_image`). numpy only: what
is read is :mod:`cnnfilters.images`, what is written :mod:`cnnfilters.outputs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Levels",
    "Rows",
    "level_dtype",
    "levels_outside",
    "mosaic",
    "quantize",
    "signed_mosaic",
    "signed_to_image",
    "units_per_level",
    "unsigned_to_image",
]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Levels:
    """A result as output levels: the pixels, and what writing them did to the values.

    ``clipped`` counts values outside ``0..top`` (8/16-bit inputs);
    ``mapping`` states the linear map of 32-bit int and float results.
    """

    pixels: np.ndarray
    clipped: int = 0
    top: int = 0
    mapping: str | None = None

    def notes(self) -> list[str]:
        """The report's notices for these levels."""
        notes = [self.mapping] if self.mapping else []
        if self.clipped:
            notes.append(f"{self.clipped} values outside 0..{self.top} were clipped")
        return notes


def level_dtype(bit_depth: int) -> type:
    """The sample type of output levels of ``bit_depth`` (8 or 16) bits."""
    return np.uint8 if bit_depth == 8 else np.uint16


def levels_outside(values: np.ndarray, top: int) -> int:
    """How many ``values`` round to a level outside ``0..top`` (and are clipped)."""
    return int(np.count_nonzero((values < -0.5) | (values >= top + 0.5)))


def quantize(values: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Round half up (as Pillow) and clip to ``0..2^bits - 1``: uint8 or uint16.

    Infinities are clipped to the ends; NaN becomes 0.

    float32 input is rounded in float32, which is exact here: ``x + 0.5`` is
    representable for every ``|x| < 2^22``. Done in blocks, in cache.
    """
    values = np.asarray(values)
    top = (1 << bit_depth) - 1
    dtype = level_dtype(bit_depth)
    work = np.float32 if values.dtype == np.float32 else np.float64
    out = np.empty(values.shape, dtype=dtype)
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    step = 1 << 18
    for start in range(0, flat_in.size, step):
        block = flat_in[start : start + step].astype(work)
        np.add(block, 0.5, out=block)
        np.floor(block, out=block)
        np.fmax(block, 0, out=block)  # fmax, not clip: NaN becomes 0, never an undefined cast
        np.minimum(block, top, out=block)
        flat_out[start : start + step] = block
    return out


def _finite_peak(values: np.ndarray) -> float:
    """The largest finite value (0 for none): a map's scale ignores overflowed values,
    which are drawn at the end of the scale."""
    peak = float(np.max(values, initial=0.0))
    if math.isfinite(peak):
        return peak
    return float(np.max(values, initial=0.0, where=np.isfinite(values)))


def signed_to_image(
    values: np.ndarray, bit_depth: int = 8, units: float | None = None
) -> tuple[np.ndarray, float]:
    """Show a signed map: 0 at mid-gray, scaled so that no value is clipped.

    Returns ``(pixels, units_per_level)``: a value ``v`` is drawn at
    ``mid + v / units_per_level`` with ``mid = 2^(bits-1)``, and
    ``units_per_level = max|v| / (mid - 1)`` (1 for an all-zero map) unless
    ``units`` is given (a strip of a larger map drawn on the map's scale).
    """
    mid = 1 << (bit_depth - 1)
    if units is None:
        units = units_per_level(_finite_peak(np.abs(values)), mid - 1)
    scaled = _scaled(values, units)
    scaled += scaled.dtype.type(mid)
    return quantize(scaled, bit_depth), units


def unsigned_to_image(
    values: np.ndarray, bit_depth: int = 8, units: float | None = None
) -> tuple[np.ndarray, float]:
    """Show a map of values >= 0 from black (0) to white (its maximum).

    Returns ``(pixels, units_per_level)`` with ``units_per_level = max / top``
    unless ``units`` is given.
    """
    top = (1 << bit_depth) - 1
    if units is None:
        units = units_per_level(_finite_peak(values), top)
    return quantize(_scaled(values, units), bit_depth), units


def units_per_level(peak: float, levels: int) -> float:
    """The value of one level when ``peak`` takes ``levels`` (1 for an all-zero map; the
    smallest float for a map of subnormal values, whose quotient would be 0)."""
    if peak <= 0:
        return 1.0
    return peak / levels or math.ulp(0.0)


def _scaled(values: np.ndarray, units: float) -> np.ndarray:
    """``values`` in levels, for display: by the reciprocal of ``units``, float32 values in
    float32, others in float64. Where that reciprocal does not fit float32 (a map of
    values near the smallest normal float32), in float64; where it does not fit
    float64 either, by division."""
    values = np.asarray(values)
    factor = 1 / units
    if values.dtype == np.float32 and factor <= _FLOAT32_MAX:
        return np.multiply(values, np.float32(factor), dtype=np.float32)
    if math.isfinite(factor):
        return np.multiply(values, factor, dtype=np.float64)
    return np.divide(values, units, dtype=np.float64)


def mosaic(values: np.ndarray, gap: int = 0) -> np.ndarray:
    """Lay the channels of ``(C, H, W)`` side by side when they are not an image's 1 or 3."""
    if values.shape[0] in (1, 3):
        return values
    tiles = []
    for index, channel in enumerate(values):
        if index and gap:
            tiles.append(np.zeros((channel.shape[0], gap), dtype=values.dtype))
        tiles.append(channel)
    return np.concatenate(tiles, axis=1)[np.newaxis]


def signed_mosaic(rows: Rows, gap: int = 0, bit_depth: int = 8) -> tuple[np.ndarray, float]:
    """``signed_to_image(mosaic(rows.whole(), gap), bit_depth)``, a strip at a time.

    Two passes over the strips: the scale from the largest finite ``|v|``, then
    each strip drawn on it into its place (its channels side by side, unless
    they are an image's 1 or 3). The pixels are the same; no float copy of the
    whole map, its mosaic or its absolute values is made.
    """
    mid = 1 << (bit_depth - 1)
    peak = max((_finite_peak(np.abs(strip)) for strip in rows.strips()), default=0.0)
    units = units_per_level(peak, mid - 1)
    channels, height, width = rows.shape
    if channels in (1, 3):
        pixels = np.empty(rows.shape, dtype=level_dtype(bit_depth))
    else:
        # The gaps are value 0: mid-gray.
        pixels = np.full(
            (1, height, channels * width + (channels - 1) * gap), mid, dtype=level_dtype(bit_depth)
        )
    top = 0
    for strip in rows.strips():
        drawn, _ = signed_to_image(strip, bit_depth, units)
        below = top + strip.shape[1]
        if channels in (1, 3):
            pixels[:, top:below] = drawn
        else:
            for index, channel in enumerate(drawn):
                left = index * (width + gap)
                pixels[0, top:below, left : left + width] = channel
        top = below
    return pixels, units


@dataclass(frozen=True)
class Rows:
    """An image too large to hold: its shape, and strips of rows made on demand.

    ``strips()`` yields ``(C, rows, W)`` arrays of ``dtype``, top to bottom.
    """

    shape: tuple[int, int, int]
    dtype: type
    strips: Callable[[], Iterator[np.ndarray]]

    def whole(self) -> np.ndarray:
        """Every strip, as one ``shape`` array (as large as the image)."""
        return np.concatenate(list(self.strips()), axis=1)
