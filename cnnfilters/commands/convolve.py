"""``convolve``: any kernel through the engine, checked against a direct
correlation in float64."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .. import reference as ref
from ..defaults import CONVOLVE_BASES, PADDING_MODES, PICTURE_MAPS
from ..engine import conv2d
from ..errors import CnnFiltersError, OptionError
from ..images import LoadedImage
from ..kernels import FLOAT32_MAX, as_float32_weights, same_padding
from ..levels import levels_outside, mosaic, quantize, signed_mosaic, unsigned_to_image
from ..report import Comparison
from .base import Command, Output, Result, float32_tolerance, gray_levels, one_of
from .strips import held_rows, rows_per_strip


@dataclass(frozen=True)
class ConvolveOptions(Command):
    """Any kernel through the engine, checked against a direct correlation.

    A 2-D kernel is applied to each channel (``groups = C``); a 4-D
    ``(C_out, C_in, kh, kw)`` tensor must take the input's channels.
    """

    name: ClassVar[str] = "convolve"
    kernel: np.ndarray = field(default_factory=lambda: np.ones((1, 1), dtype=np.float32))
    stride: int = 1
    padding: int | str = "same"
    padding_mode: str = "zeros"
    bias: float = 0.0
    on: str = "auto"
    normalize: bool = False
    map: str = "auto"

    def __post_init__(self) -> None:
        kernel = np.asarray(self.kernel)
        if kernel.dtype.kind not in "biuf" or not np.isfinite(kernel).all():
            raise CnnFiltersError("a kernel's weights must be finite numbers")
        kernel = as_float32_weights(kernel, "the kernel")
        if kernel.ndim not in (2, 4) or kernel.size == 0:
            raise CnnFiltersError(f"a kernel is a 2-D matrix or a 4-D tensor, got {kernel.shape}")
        object.__setattr__(self, "kernel", kernel)
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride <= 0:
            raise CnnFiltersError(f"stride must be a positive int, got {self.stride!r}")
        if self.padding == "same":
            same_padding(kernel.shape)
        elif (
            isinstance(self.padding, bool)
            or not isinstance(self.padding, int)
            or (self.padding < 0)
        ):
            raise OptionError("padding", f"must be 'same' or an int >= 0, got {self.padding!r}")
        one_of(self.padding_mode, PADDING_MODES, "padding mode")
        one_of(self.on, CONVOLVE_BASES, "on")
        one_of(self.map, PICTURE_MAPS, "map")
        if not (math.isfinite(self.bias) and abs(self.bias) <= FLOAT32_MAX):
            raise OptionError(
                "bias",
                f"must be a finite number within float32's range (+-{FLOAT32_MAX:.4g}), "
                f"got {self.bias!r}",
            )
        if self.normalize and abs(float(kernel.sum())) < 1e-12:
            raise OptionError("normalize", "cannot be used: the kernel's weights sum to 0")

    def outputs(self) -> list[str]:
        return ["convolve"]

    def kernels(self) -> list[tuple[str, np.ndarray]]:
        kernel = self.kernel
        if kernel.ndim == 2:
            return [("kernel", kernel)]
        return [
            (f"w[{o}, {c}]", kernel[o, c])
            for o in range(min(kernel.shape[0], 4))
            for c in range(min(kernel.shape[1], 3))
        ]

    def options(self) -> dict[str, Any]:
        return {**super().options(), "kernel": self.kernel.tolist()}

    def run(self, image: LoadedImage) -> Result:
        result = Result()
        base = gray_levels(image) if self.on == "gray" else image.pixels
        if self.on == "rgb" and image.channels == 1:
            base = np.repeat(base, 3, axis=0)
        weight, groups = self._weight(base.shape[0])
        kh, kw = weight.shape[-2:]
        pad = same_padding(weight.shape) if self.padding == "same" else int(self.padding)
        bias = self.bias
        biases = np.full(weight.shape[0], bias, dtype=np.float32) if bias else None
        geometry = {
            "stride": self.stride,
            "padding": pad,
            "padding_mode": self.padding_mode,
            "groups": groups,
        }
        # The largest value the result can take: beyond float32, the engine's result
        # would be infinite where the float64 reference is not (or both infinite, and
        # then equal: a check that passes on a picture of nothing). 1 % is left for
        # float32's rounding on the way.
        scale = float(np.abs(weight).sum(axis=(1, 2, 3), dtype=np.float64).max()) * image.peak
        scale += abs(bias)
        if not scale < FLOAT32_MAX / 1.01:
            raise CnnFiltersError(
                f"{image.path}: this kernel's results can reach {scale:.3g} on this image "
                f"(sum of |weights| x peak {image.peak:g} + |bias|), beyond float32's range "
                f"(+-{FLOAT32_MAX:.4g}), which the engine computes in; scale the kernel down"
            )
        out = conv2d(base, weight, biases, **geometry)
        comparison = Comparison(
            name="convolution",
            reference="direct correlation (float64)",
            tolerance=float32_tolerance(scale),
            peak=image.peak,
            layout=out.shape[-2:],
        )
        comparison.add_shape(out.shape)
        # The reference a strip of output rows at a time, from the input rows under
        # them: a float64 copy of the padded input and of its result would each be a
        # whole image.
        rows, width = out.shape[-2:]
        step = rows_per_strip(8 * width * (base.shape[0] * self.stride + len(out)))
        for first in range(0, rows, step):
            stop = min(rows, first + step)
            expected = ref.direct_correlation(base, weight, biases, rows=(first, stop), **geometry)
            comparison.update(out[:, first:stop], expected, top=first)
        result.checks.append(comparison.check())
        chosen = self.map if self.map != "auto" else _automatic_map(weight)
        pixels, mapping = _drawn(out, image, chosen)
        result.notices.append(f"picture: {mapping}")
        result.outputs["convolve"] = Output(pixels, out, f"convolution with a {kh}x{kw} kernel")
        result.info.update(
            kernel=weight.tolist() if weight.size <= 81 else list(weight.shape),
            weight_shape=list(weight.shape),
            bias=bias,
            on=self.on,
            map=chosen,
            normalized=self.normalize,
            image=mapping,
            **geometry,
        )
        return result

    def check_output_size(self, image: LoadedImage, max_pixels: int) -> None:
        """Padding can make the result far larger than the image (a 64 x 64 image
        padded by 20,000 is 1.6 gigapixels)."""
        kh, kw = self.kernel.shape[-2:]
        pad = same_padding(self.kernel.shape) if self.padding == "same" else int(self.padding)
        height, width = image.size
        rows = max(0, (height + 2 * pad - kh) // self.stride + 1)
        cols = max(0, (width + 2 * pad - kw) // self.stride + 1)
        channels = (
            self.kernel.shape[0]
            if self.kernel.ndim == 4
            else (1 if self.on == "gray" else image.channels)
        )
        if rows * cols > max_pixels or rows * cols * channels > 4 * max_pixels:
            raise CnnFiltersError(
                f"{image.path}: the result would be {rows:,} x {cols:,} pixels x {channels} "
                f"channel(s), over --max-pixels {max_pixels:,} (or 4 channels of it); "
                "use a smaller --padding or kernel tensor"
            )

    def _weight(self, channels: int) -> tuple[np.ndarray, int]:
        """The weight tensor for ``channels`` input channels, and its groups."""
        weight = self.kernel
        if self.normalize:
            weight = weight / np.float32(weight.sum())
        if weight.ndim == 2:
            return np.tile(weight, (channels, 1, 1, 1)), channels
        if weight.shape[1] != channels:
            raise CnnFiltersError(
                f"the kernel tensor {tuple(weight.shape)} takes {weight.shape[1]} input "
                f"channels, the image has {channels} (on {self.on})"
            )
        return weight, 1


def _automatic_map(weight: np.ndarray) -> str:
    """signed for a kernel whose weights sum to 0 (a derivative: its results are signed
    around 0), else clip (a blur, a sharpen: results on the pixels' own scale)."""
    sums = weight.sum(axis=(1, 2, 3), dtype=np.float64)
    sizes = np.abs(weight).sum(axis=(1, 2, 3), dtype=np.float64)
    return "signed" if bool(np.all(np.abs(sums) <= 1e-6 * sizes)) else "clip"


def _drawn(out: np.ndarray, image: LoadedImage, how: str) -> tuple[np.ndarray, str]:
    """A convolution's result as levels, and how: ``clip`` rounds to the output's
    levels and clips what is outside (8/16-bit inputs; float ones are mapped onto
    16 bits, stated), ``signed`` draws 0 at mid-gray on the scale of the largest
    magnitude, ``scale`` maps the range from 0 (or the lowest value) to the largest
    onto the levels."""
    if how == "signed":
        pixels, units = signed_mosaic(held_rows(out), gap=2, bit_depth=image.bit_depth)
        mid = 1 << (image.bit_depth - 1)
        return pixels, f"signed: value = (pixel - {mid}) * {units:.6g}"
    shown = mosaic(out, gap=2)
    if how == "clip" and image.kind in ("uint8", "uint16"):
        outside = levels_outside(shown, image.max_value)
        said = f"; {outside} values outside 0..{image.max_value} clipped" if outside else ""
        return quantize(shown, image.bit_depth), f"clip: pixel = value, rounded{said}"
    if how == "clip":
        levels = image.levels(shown)
        return levels.pixels, f"clip: {levels.mapping}"
    low = min(0.0, float(np.min(shown, initial=0.0, where=np.isfinite(shown))))
    pixels, units = unsigned_to_image(shown - low if low else shown, image.bit_depth)
    start = f"{low:.6g} + " if low else ""
    return pixels, f"scale: value = {start}pixel * {units:.6g}"
