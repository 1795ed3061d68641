"""``gradient``: the two forward-difference filters F1 and F2 as one depthwise
convolution, checked exactly against slicing differences."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import ops
from .. import reference as ref
from ..defaults import GRADIENT_BASES, PADDING_MODES
from ..images import LoadedImage
from ..kernels import FORWARD_DIFF_X, FORWARD_DIFF_Y
from ..levels import Rows, signed_to_image, units_per_level, unsigned_to_image
from ..report import Check, Comparison
from .base import Command, Output, Result, alpha_levels, gray_levels, one_of
from .strips import strip_ranges

# Gradient maps up to this size (all three together) are kept from the checking
# pass for writing instead of being computed again: 2.8 MP of gray, or 0.9 MP
# with --on rgb. Larger images compute them again while writing, so that their
# memory stays near the size of the decoded image.
_KEEP_BYTES = 32 << 20


@dataclass(frozen=True)
class GradientOptions(Command):
    """F1 and F2 (docs/MATHS.md) on the gray image or each RGB channel."""

    name: ClassVar[str] = "gradient"
    padding: str = "zeros"
    on: str = "gray"

    def __post_init__(self) -> None:
        one_of(self.padding, PADDING_MODES, "padding")
        one_of(self.on, GRADIENT_BASES, "on")

    def outputs(self) -> list[str]:
        return ["dy", "dx", "gradient"]

    def kernels(self) -> list[tuple[str, np.ndarray]]:
        return [("F1: dy (vertical)", FORWARD_DIFF_Y), ("F2: dx (horizontal)", FORWARD_DIFF_X)]

    def run(self, image: LoadedImage) -> Result:
        """F1 and F2 as one depthwise conv; checked against slicing differences, exactly.

        Works in strips of rows: a first pass checks every strip against the
        reference and finds the maps' ranges. Images whose maps fit in
        ``_KEEP_BYTES`` keep the first pass's strips for writing; larger ones
        compute each output again, strip by strip, while it is written, so
        that memory stays near the size of the decoded image however large.
        """
        result = Result()
        if self.on == "gray":
            base = gray_levels(image)
            if image.channels == 3:
                result.notices.append("gradients of the BT.601 grayscale image (integer levels)")
        else:
            base = image.pixels
            if image.channels == 1:
                result.notices.append("gray input: --on rgb has one channel")
        maps = _GradientMaps(base, self.padding, image.peak)
        result.checks.extend(maps.check())
        bits = image.bit_depth
        mid = 1 << (bits - 1)
        alpha = alpha_levels(image)
        for kind, what in (
            ("dy", "vertical forward difference X[i+1,j] - X[i,j]"),
            ("dx", "horizontal forward difference X[i,j+1] - X[i,j]"),
            ("gradient", "magnitude sqrt(dy^2 + dx^2)"),
        ):
            result.outputs[kind] = Output(maps.rows(kind, bits), maps.rows(kind), what, alpha=alpha)
        result.info.update(
            padding=self.padding,
            on=self.on,
            signed_maps=f"value = (pixel - {mid}) * {maps.units(bits):.6g}",
            magnitude_map=f"value = pixel * {maps.magnitude_units(bits):.6g}",
            units_per_level=maps.units(bits),
            magnitude_units_per_level=maps.magnitude_units(bits),
        )
        return result


class _GradientMaps:
    """dy, dx and the magnitude of ``base``, strip by strip: checked once, written later."""

    def __init__(self, base: np.ndarray, padding: str, peak: float) -> None:
        self.base, self.padding, self.peak = base, padding, peak
        self.strips = strip_ranges(base.shape[1], base.shape[0] * base.shape[2] * 4)
        # dy, dx and the magnitude: three float32 maps the size of ``base``.
        self.kept: list[dict[str, np.ndarray]] | None = (
            [] if 3 * 4 * base.size <= _KEEP_BYTES else None
        )
        self.largest_difference = self.largest_magnitude = 0.0

    def _maps(self, rows: tuple[int, int]) -> dict[str, np.ndarray]:
        dy, dx = ops.gradients(self.base, self.padding, rows=rows)
        return {"dy": dy, "dx": dx, "gradient": np.sqrt(np.square(dy) + np.square(dx))}

    def check(self) -> list[Check]:
        """The first pass: every strip against slicing differences; the maps' ranges."""
        height, width = self.base.shape[1:]
        checks = {
            name: Comparison(
                name=name,
                reference="slicing differences",
                tolerance=0.0,
                peak=self.peak,
                layout=(height, width),
            )
            for name in ("dy", "dx")
        }
        for rows in self.strips:
            maps = self._maps(rows)
            ref_dy, ref_dx = ref.forward_differences(self.base, self.padding, rows=rows)
            checks["dy"].update(maps["dy"], ref_dy, top=rows[0])
            checks["dx"].update(maps["dx"], ref_dx, top=rows[0])
            self.largest_difference = max(
                self.largest_difference,
                float(np.abs(maps["dy"]).max()),
                float(np.abs(maps["dx"]).max()),
            )
            self.largest_magnitude = max(self.largest_magnitude, float(maps["gradient"].max()))
            if self.kept is not None:
                self.kept.append(maps)
        for comparison in checks.values():
            comparison.add_shape(self.base.shape)
        return [comparison.check() for comparison in checks.values()]

    def units(self, bits: int) -> float:
        """One scale for both signed maps, so that equal differences look equal."""
        mid = 1 << (bits - 1)
        return units_per_level(self.largest_difference, mid - 1)

    def magnitude_units(self, bits: int) -> float:
        top = (1 << bits) - 1
        return units_per_level(self.largest_magnitude, top)

    def rows(self, kind: str, bits: int | None = None) -> Rows:
        """Map ``kind`` as strips of float values, or of output levels with ``bits``."""

        def strips() -> Iterator[np.ndarray]:
            source = self.kept if self.kept is not None else map(self._maps, self.strips)
            for maps in source:
                values = maps[kind]
                if bits is None:
                    yield values
                elif kind == "gradient":
                    yield unsigned_to_image(values, bits, self.magnitude_units(bits))[0]
                else:
                    yield signed_to_image(values, bits, self.units(bits))[0]

        dtype = np.float32 if bits is None else (np.uint16 if bits == 16 else np.uint8)
        return Rows(self.base.shape, dtype, strips)
