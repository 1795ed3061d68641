"""What every image command is: the :class:`Command` protocol, its :class:`Result`
and :class:`Output`, and the small helpers the commands share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .. import ops
from ..errors import CnnFiltersError
from ..images import LoadedImage
from ..kernels import parse_grayscale_weights
from ..levels import Rows, quantize
from ..report import Check
from ..rounding import luma_exact
from .strips import Strips

_EPS32 = float(np.finfo(np.float32).eps)


def float32_tolerance(peak: float) -> float:
    """Float32 rounding of a few operations on values up to ``peak``: 8 ulp of the peak."""
    return 8 * _EPS32 * peak


@dataclass
class Output:
    """One image a command writes, with the exact float values behind it.

    ``colorimetric`` outputs (grayscale, average pooling) are images in the
    input's colour space, so a fitting ICC profile is copied to them; maps of
    differences are not.
    """

    pixels: np.ndarray | Rows  # (1 or 3, H, W) uint8/uint16, ready to save
    values: np.ndarray | Rows  # the float result, for --raw
    description: str
    alpha: np.ndarray | None = None  # (H, W), same dtype as pixels
    colorimetric: bool = False


@dataclass
class Result:
    """What a command returns for one image."""

    outputs: dict[str, Output] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    # Checks left to run while the outputs are being written (in other threads).
    verify: Callable[[], list[Check]] | None = None
    # The strips the outputs are made and checked in, for Command.together (grayscale's).
    strips: Strips | None = None


@dataclass(frozen=True)
class Command:
    """An image command's options; subclasses add their fields and computation."""

    name: ClassVar[str]
    # True when run() reads the image's pixels only through LoadedImage.rows, each
    # row once, top to bottom (and --raw is not asked for, which reads them again):
    # a large PNG can then be decoded while it is read (cnnfilters.pngrows).
    rows_once: ClassVar[bool] = False

    def outputs(self) -> list[str]:
        """The names of the images it writes (``{stem}.{name}.png``)."""
        raise NotImplementedError

    def run(self, image: LoadedImage) -> Result:
        """Compute one decoded image, with its checks."""
        raise NotImplementedError

    def check_output_size(self, image: LoadedImage, max_pixels: int) -> None:
        """Refuse, before the run, an image whose outputs would hold more than
        ``max_pixels`` pixels (``--max-pixels``, which bounds the inputs) or four
        channels of them. By default none can: no output is larger than its input."""

    def together(self, results: list[Result]) -> None:
        """Before the checks of several images' results (a batch's chunk), do at once
        the work they can share; each result's figures stay what it gets alone.
        By default there is none."""

    def options(self) -> dict[str, Any]:
        """The options as the report records them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def kernels(self) -> list[tuple[str, np.ndarray]]:
        """The kernels it runs with, as ``(title, matrix)`` for the visual report."""
        return []


def one_of(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise CnnFiltersError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def alpha_levels(image: LoadedImage) -> np.ndarray | None:
    """The kept alpha channel as output levels, or None."""
    return None if image.alpha is None else quantize(image.alpha, image.bit_depth)


def as_rgb(image: LoadedImage, notices: list[str]) -> np.ndarray:
    if image.channels == 3:
        return image.pixels
    notices.append("gray input: used as R = G = B")
    return np.repeat(image.pixels, 3, axis=0)


def gray_levels(image: LoadedImage) -> np.ndarray:
    """The grayscale image as ``grayscale`` writes it: its integer levels, in their own
    sample type (uint8 or uint16; a one-channel image's own pixels).

    The engine and the references take them as they are, and convert a block at
    a time: a whole float32 copy would hold the same values in more memory.
    """
    if image.channels == 1:
        return image.pixels
    triple = parse_grayscale_weights("bt601")
    levels = image.levels(
        ops.grayscale(image.pixels, triple), exact=luma_exact(image.pixels, triple, image.peak)
    )
    return levels.pixels


def in_range(value: int, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CnnFiltersError(f"{what} must be an int from {low} to {high}, got {value!r}")
