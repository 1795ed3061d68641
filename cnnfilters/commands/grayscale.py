"""``grayscale``: the 1x1 convolution of luma weights, checked against the float
formula and, for bt601 on 8-bit input, Pillow's ``convert("L")``."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from .. import ops
from .. import reference as ref
from ..images import LoadedImage, pil_image
from ..kernels import parse_grayscale_weights
from ..levels import Rows, levels_outside
from ..report import Check, Comparison
from ..rounding import luma_exact
from .base import Command, Output, Result, alpha_levels, float32_tolerance
from .strips import Strips, strip_ranges


@dataclass(frozen=True)
class GrayscaleOptions(Command):
    """Luma as a 1x1 convolution: ``bt601``, ``bt709`` or ``R,G,B`` weights (docs/MATHS.md)."""

    name: ClassVar[str] = "grayscale"
    rows_once: ClassVar[bool] = True
    weights: str = "bt601"

    def __post_init__(self) -> None:
        parse_grayscale_weights(self.weights)

    def outputs(self) -> list[str]:
        return ["grayscale"]

    def kernels(self) -> list[tuple[str, np.ndarray]]:
        return [("1x1 weights R, G, B", np.array([parse_grayscale_weights(self.weights)]))]

    def run(self, image: LoadedImage) -> Result:
        """Luma by a 1x1 conv; checked against the float64 formula and Pillow's ``convert("L")``.

        Computed in strips of rows (in cache), each checked as it is made, and
        each row of the image read once, top to bottom (:attr:`rows_once`).
        The output is :class:`Rows`: an 8/16-bit image is computed while it is
        written (see :class:`_LumaStrips`).
        """
        result = Result()
        triple = parse_grayscale_weights(self.weights)
        if image.channels == 1:
            result.notices.append("gray input: used as R = G = B")
        height, width = image.size
        strips = strip_ranges(height, 3 * width * 4)

        def luma_strips() -> Iterator[np.ndarray]:
            for first, stop in strips:
                yield ops.grayscale(_rgb(image.rows(first, stop)), triple)

        luma = Rows((1, height, width), np.float32, luma_strips)
        if image.kind in ("uint8", "uint16"):
            work = _LumaStrips(image, triple, strips, result.notices)
            result.verify, result.strips = work.checks, work
            pixels = work.rows()
        else:  # a stated scale must be one scale for the whole image
            kept = list(luma.strips())
            whole = image.levels(np.concatenate(kept, axis=1))
            pixels = Rows(whole.pixels.shape, whole.pixels.dtype.type, lambda: iter([whole.pixels]))
            result.notices.extend(whole.notes())
            luma = Rows(luma.shape, luma.dtype, lambda: iter(kept))

            def verify() -> list[Check]:
                formula = _luma_comparison(image)
                for (first, stop), part in zip(strips, kept, strict=True):
                    formula.update(part, ref.luma(_rgb(image.rows(first, stop)), triple), top=first)
                formula.add_shape((1, height, width))
                return [formula.check()]

            result.verify = verify
        result.outputs["grayscale"] = Output(
            pixels, luma, f"luma, weights {triple}", alpha=alpha_levels(image), colorimetric=True
        )
        result.info["weights"] = list(triple)
        return result

    def together(self, results: list[Result]) -> None:
        """Small 8-bit images of one size: their rounding to levels, float64 formula and
        Pillow reference are each computed once over all of them side by side
        (:func:`_luma_side_by_side`); the engine still runs image by image."""
        works = [r.strips for r in results if isinstance(r.strips, _LumaStrips)]
        sizes: dict[tuple[int, int, int], list[_LumaStrips]] = {}
        for work in works:
            image = work.image
            if (
                len(work.strips) == 1
                and image.kind == "uint8"
                and isinstance(image.pixels, np.ndarray)
                and image.size[0] * image.size[1] <= _SIDE_BY_SIDE_PIXELS
            ):
                sizes.setdefault((image.channels, *image.size), []).append(work)
        for same in sizes.values():
            if len(same) > 1:
                _luma_side_by_side(same)


# Images up to this many pixels have their grayscale checks computed side by side
# (GrayscaleOptions.together): a numpy call on 1,024 pixels costs its overhead,
# several times its arithmetic; on 16,384 the arithmetic has taken over.
_SIDE_BY_SIDE_PIXELS = 1 << 14


class _Shared(NamedTuple):
    """An image's one strip, computed side by side with others': its engine luma, its
    levels (and how many were clipped), the float64 formula and Pillow's levels."""

    luma: np.ndarray
    levels: np.ndarray
    clipped: int
    formula: np.ndarray
    pillow: np.ndarray | None


def _luma_side_by_side(works: list[_LumaStrips]) -> None:
    """Compute the one strip of each of ``works`` (8-bit images of one shape, with the
    same weights) together.

    Each image's luma comes from the engine, image by image. The images and
    their lumas are then put side by side, as one wide image, and the steps
    that work pixel by pixel run once over it: the exact rounding to levels,
    the float64 formula and Pillow's ``convert("L")``. A pixel's result does
    not depend on its neighbours in any of them, so each image's part is what
    it would get alone (tested), and its comparisons are still its own.
    Nothing is kept if a step warns (each image then warns for itself).
    """
    first = works[0]
    triple, image = first.triple, first.image
    height, width = image.size
    pixels = [work.image.rows(0, height) for work in works]
    rgbs = [_rgb(one) for one in pixels]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lumas = [ops.grayscale(rgb, triple) for rgb in rgbs]
        rgb, luma = np.concatenate(rgbs, axis=2), np.concatenate(lumas, axis=2)
        level = image.levels(luma, exact=luma_exact(rgb, triple, image.peak))
        formula = ref.luma(rgb, triple)
        pillow = None
        if first.pillow is not None:
            pillow = ref.pillow_grayscale(pil_image(np.concatenate(pixels, axis=2)))
    if caught:
        return
    for index, work in enumerate(works):
        part = slice(index * width, (index + 1) * width)
        clipped = levels_outside(lumas[index], image.max_value) if level.clipped else 0
        theirs = None if pillow is None else pillow[:, :, part]
        work.shared = _Shared(
            lumas[index], level.pixels[:, :, part], clipped, formula[:, :, part], theirs
        )


def _rgb(pixels: np.ndarray) -> np.ndarray:
    """Gray ``(1, H, W)`` pixels as R = G = B; RGB as they are."""
    return pixels if pixels.shape[0] == 3 else np.repeat(pixels, 3, axis=0)


def _luma_comparison(image: LoadedImage) -> Comparison:
    peak = image.peak
    return Comparison(
        name="luma",
        reference="float64 formula",
        tolerance=float32_tolerance(peak),
        peak=peak,
        layout=image.size,
    )


class _LumaStrips(Strips):
    """The luma of an 8/16-bit image: each strip's luma rounded (exactly) to levels and
    compared with the float64 formula and, for 8-bit BT.601, the levels with
    Pillow's ``convert("L")`` of the same rows; then the float luma is let go."""

    def __init__(
        self,
        image: LoadedImage,
        triple: tuple[float, float, float],
        strips: list[tuple[int, int]],
        notices: list[str],
    ) -> None:
        shape = (1, *image.size)
        super().__init__(image, shape, strips, strips, notices)
        self.triple = triple
        self.formula = _luma_comparison(image)
        self.comparisons.append(self.formula)
        self.pillow: Comparison | None = None
        if triple == parse_grayscale_weights("bt601") and image.kind == "uint8":
            self.pillow = Comparison(
                name="8-bit output",
                reference="Pillow convert('L')",
                tolerance=1,
                peak=image.peak,
                layout=image.size,
            )
            self.comparisons.append(self.pillow)
        for comparison in self.comparisons:
            comparison.add_shape(shape)
        # The one strip, computed with other images' (_luma_side_by_side), if it was.
        self.shared: _Shared | None = None

    def _strip(self, index: int) -> None:
        shared, self.shared = self.shared, None
        if shared is not None:
            self._place(index, shared.levels, shared.clipped)
            self.formula.update(shared.luma, shared.formula)
            if self.pillow is not None:
                self.pillow.update(shared.levels, shared.pillow)
            return
        image = self.image
        first, stop = self.strips[index]
        pixels = image.rows(first, stop)
        rgb = _rgb(pixels)
        luma = ops.grayscale(rgb, self.triple)
        levels = self._levels(index, luma, luma_exact(rgb, self.triple, image.peak))
        self.formula.update(luma, ref.luma(rgb, self.triple), top=first)
        if self.pillow is not None:
            self.pillow.update(levels, ref.pillow_grayscale(pil_image(pixels)), top=first)
