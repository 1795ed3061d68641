"""What reading an image gives: :class:`LoadedImage`, and :class:`ReadOptions`, how to read.

The types every room shares (commands compute on a ``LoadedImage``; the
run makes ``ReadOptions`` from the command line's input options). How a
file becomes one is :mod:`cnnfilters.images`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import rounding
from .defaults import ALPHA_POLICIES, DEFAULT_MAX_PIXELS
from .errors import CnnFiltersError
from .levels import Levels, levels_outside, quantize
from .pngrows import PngRows

__all__ = ["LoadedImage", "ReadOptions", "parse_colour", "pil_image"]


@dataclass(frozen=True)
class ReadOptions:
    """How files are read (the command line's input options)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    auto_orient: bool = True
    alpha: str = "keep"
    background: tuple[int, int, int] = (255, 255, 255)
    allow_truncated: bool = False
    all_frames: bool = False

    def __post_init__(self) -> None:
        if self.alpha not in ALPHA_POLICIES:
            raise CnnFiltersError(
                f"alpha policy must be one of {', '.join(ALPHA_POLICIES)}; got {self.alpha!r}"
            )
        if (
            isinstance(self.max_pixels, bool)
            or not isinstance(self.max_pixels, int)
            or (self.max_pixels < 1)
        ):
            raise CnnFiltersError(
                f"the pixel limit must be a positive int, got {self.max_pixels!r}"
            )


@dataclass
class LoadedImage:
    """A decoded image as floats, with what is needed to write results back.

    ``pixels`` is ``(C, H, W)`` with C = 1 (gray) or 3 (RGB), in the file's
    own sample type (uint8 or uint16; float32 for ``F``, float64 for ``I``),
    often a channels-first *view* of the decoded ``(H, W, C)`` array: the
    engine converts it to float one block of rows at a time, so no full-size
    float copy is made. ``bit_depth`` (8 or 16) is the depth outputs are
    written with; ``kind`` says what the samples were (``uint8``, ``uint16``,
    ``int32`` or ``float32``). :attr:`pil` is ``pixels`` as an 8-bit
    ``L``/``RGB`` Pillow image (``None`` for other depths, which Pillow's
    8-bit operations would clip); the Pillow references see the same pixels,
    a strip at a time (:func:`pil_image`). ``alpha`` is ``(H, W)`` on the
    same scale, or ``None``.
    """

    path: Path
    format: str
    mode: str
    pixels: np.ndarray  # or, loaded with rows_once, PngRows: read it with rows()
    bit_depth: int
    kind: str
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    frame: int = 0
    frames: int = 1
    notices: list[str] = field(default_factory=list)
    damage: str | None = None  # what was wrong with data read anyway

    @property
    def pil(self) -> Image.Image | None:
        """The pixels as a Pillow ``L`` or ``RGB`` image (a copy), 8-bit only."""
        return pil_image(self.pixels) if self.kind == "uint8" else None

    def rows(self, first: int, stop: int) -> np.ndarray:
        """Rows ``first..stop`` of the pixels, ``(C, rows, W)``. An image loaded with
        ``rows_once`` may be decoded as it is read (:class:`~cnnfilters.pngrows.PngRows`):
        then each row is given once, top to bottom."""
        if isinstance(self.pixels, PngRows):
            return self.pixels.take(first, stop)
        return self.pixels[:, first:stop]

    def close(self) -> None:
        """Let go of what decodes the rows of a streamed image (nothing for others)."""
        if isinstance(self.pixels, PngRows):
            self.pixels.close()

    @property
    def max_value(self) -> int:
        """The top level of the output depth (255 or 65535)."""
        return (1 << self.bit_depth) - 1

    @property
    def peak(self) -> float:
        """The largest magnitude the samples can have (for tolerances and PSNR)."""
        if self.kind in ("uint8", "uint16"):
            return float(self.max_value)
        return max(1.0, float(np.max(np.abs(self.pixels), initial=0.0)))

    @property
    def channels(self) -> int:
        return self.pixels.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.pixels.shape[1], self.pixels.shape[2]

    @property
    def icc_space(self) -> str | None:
        """The colour space an embedded ICC profile describes (``RGB``, ``GRAY``, ...)."""
        if not self.icc_profile or len(self.icc_profile) < 20:
            return None
        return self.icc_profile[16:20].decode("ascii", "replace").strip()

    def levels(self, values: np.ndarray, exact: rounding.Exact | None = None) -> Levels:
        """Pixels to write for a result on the input's scale (see :class:`Levels`).

        8/16-bit inputs: round half up and clip to the same depth; with
        ``exact``, the values whose float rounding is in doubt are rounded
        from their exact value, so every pixel is the correctly rounded
        result. 32-bit int and float inputs: a linear map of the result's
        range onto 0..65535, stated in the mapping.
        """
        if self.kind in ("uint8", "uint16"):
            top = self.max_value
            outside = levels_outside(values, top)
            pixels = quantize(values, self.bit_depth)
            if exact is not None:
                rounding.correct_ties(pixels, values, exact, top)
            return Levels(pixels, clipped=outside, top=top)
        finite = np.isfinite(values)
        low = float(np.min(values, initial=0.0, where=finite))
        high = float(np.max(values, initial=0.0, where=finite))
        span = high - low if high > low else 1.0
        scaled = (np.asarray(values, dtype=np.float64) - low) * (65535 / span)
        mapping = (
            f"{self.kind} data written as 16-bit: value = {low:.9g} + pixel * {span / 65535:.9g}"
        )
        infinite = values.size - int(np.count_nonzero(finite))
        if infinite:
            mapping += f"; {infinite} values are not finite (drawn at the ends of the scale)"
        return Levels(quantize(scaled, 16), mapping=mapping)


def pil_image(pixels: np.ndarray) -> Image.Image:
    """``(1 or 3, H, W)`` 8-bit pixels as a Pillow ``L`` or ``RGB`` image (a copy)."""
    planes = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(planes, dtype=np.uint8))


_NAMED_COLOURS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
}


def parse_colour(text: str) -> tuple[int, int, int]:
    """``white``, ``black``, ``gray``, ``#rrggbb`` or ``R,G,B`` (0-255) -> an RGB triple."""
    key = text.strip().lower()
    if key in _NAMED_COLOURS:
        return _NAMED_COLOURS[key]
    try:
        if key.startswith("#") and len(key) == 7:
            values = tuple(int(key[i : i + 2], 16) for i in (1, 3, 5))
        else:
            values = tuple(int(v) for v in key.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise CnnFiltersError(
            f"background must be white, black, gray, #rrggbb or R,G,B (0-255), got {text!r}"
        )
    return values  # type: ignore[return-value]
