"""``avgpool``: k x k average pooling as a stride-k convolution, checked against a
reshape-mean and Pillow's ``Image.reduce``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image

from .. import ops
from .. import reference as ref
from ..defaults import EDGE_MODES
from ..errors import CnnFiltersError
from ..images import LoadedImage, pil_image
from ..levels import Rows, quantize
from ..report import Check, Comparison
from ..rounding import block_mean_exact, correct_ties
from .base import Command, Output, Result, float32_tolerance, one_of
from .strips import Strips, rows_per_strip, strip_ranges


@dataclass(frozen=True)
class AvgpoolOptions(Command):
    """k x k average pooling as a stride-k convolution (docs/MATHS.md)."""

    name: ClassVar[str] = "avgpool"
    rows_once: ClassVar[bool] = True
    kernel_size: int = 2
    edge: str = "drop"

    def __post_init__(self) -> None:
        k = self.kernel_size
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise CnnFiltersError(f"kernel size must be a positive int, got {k!r}")
        one_of(self.edge, EDGE_MODES, "edge")

    def outputs(self) -> list[str]:
        return [f"avgpool{self.kernel_size}"]

    def kernels(self) -> list[tuple[str, np.ndarray]]:
        k = self.kernel_size
        if k > 64:  # a window this large is no picture; its one value says it all
            return [
                (f"{k}x{k} average, stride {k}: every weight 1/{k * k}", np.full((1, 1), 1 / k**2))
            ]
        return [(f"{k}x{k} average, stride {k}", np.full((k, k), 1.0 / (k * k)))]

    def run(self, image: LoadedImage) -> Result:
        """Stride-k conv; checked against reshape-mean and Pillow's ``Image.reduce``.

        An 8/16-bit image is pooled and checked in strips of whole windows,
        its rows read once, top to bottom (:attr:`rows_once`), while the
        output is written (see :class:`_PoolStrips`).
        """
        result = Result()
        k, edge = self.kernel_size, self.edge
        height, width = image.size
        if edge == "partial" and k > max(height, width):
            # The same single block whatever k: no k x k weights, padding or references.
            k = max(height, width)
            result.notices.append(
                f"the {self.kernel_size}x{self.kernel_size} window holds the whole image: one block"
            )
        shape = (image.channels, *ops.avgpool_shape(height, width, k, edge))
        if edge == "drop" and (height % k or width % k):
            result.notices.append(
                f"dropped the last {height % k} rows and {width % k} columns (not a whole window)"
            )
        size = self.kernel_size  # as asked for (k is the window actually used)
        what = f"{size}x{size} average pooling, edge={edge}"
        if image.kind in ("uint8", "uint16"):
            work = _PoolStrips(image, k, edge, shape, result.notices)
            result.verify = work.checks
            output = Output(work.rows(), work.values(), what, alpha=work.alpha, colorimetric=True)
        else:  # a stated scale must be one scale for the whole image
            output = self._whole(image, k, result)
        result.outputs[f"avgpool{size}"] = output
        result.info.update(kernel_size=size, stride=size, edge=edge)
        return result

    def _whole(self, image: LoadedImage, k: int, result: Result) -> Output:
        """Float and 32-bit images: pooled whole, then mapped onto 16-bit levels."""
        pooled = ops.avgpool(image.pixels, k, self.edge)
        levels = image.levels(pooled)
        result.notices.extend(levels.notes())

        def verify() -> list[Check]:
            mean = Comparison(
                name="block mean",
                reference="reshape-mean (float64)",
                tolerance=float32_tolerance(image.peak),
                peak=image.peak,
                layout=tuple(pooled.shape[-2:]),
            )
            # In strips of whole windows: output rows first..stop read input rows k*first..k*stop.
            out_rows = pooled.shape[1]
            for first, stop in strip_ranges(out_rows, image.channels * image.size[1] * 8 * k):
                rows = image.pixels[:, k * first : k * stop if stop < out_rows else None]
                mean.update(pooled[:, first:stop], ref.block_mean(rows, k, self.edge), top=first)
            mean.add_shape(pooled.shape)
            return [mean.check()]

        result.verify = verify
        size = self.kernel_size
        pixels = Rows(levels.pixels.shape, levels.pixels.dtype.type, lambda: iter([levels.pixels]))
        return Output(
            pixels,
            pooled,
            f"{size}x{size} average pooling, edge={self.edge}",
            alpha=_pooled_alpha(image, k, self.edge),
            colorimetric=True,
        )


def _pooled_alpha(image: LoadedImage, k: int, edge: str) -> np.ndarray | None:
    """Alpha, pooled by the same convolution as the colour channels and rounded exactly."""
    if image.alpha is None:
        return None
    alpha = ops.avgpool(image.alpha[np.newaxis], k, edge)
    levels = quantize(alpha, image.bit_depth)
    exact = block_mean_exact(image.alpha[np.newaxis], k, alpha.shape, image.peak)
    correct_ties(levels, alpha, exact, image.max_value)
    return levels[0]


class _PoolStrips(Strips):
    """k x k average pooling of an 8/16-bit image, a strip of whole windows at a time:
    pooled by the engine, rounded exactly to levels, compared with the
    reshape-mean and (8-bit) with Pillow's ``reduce`` of the same rows. With
    ``--edge drop`` the last rows that make no whole window are read all the
    same (a streamed file is checked to its end) and dropped.
    """

    def __init__(
        self, image: LoadedImage, k: int, edge: str, shape: tuple[int, int, int], notices: list[str]
    ) -> None:
        height, width = image.size
        # Input strips of whole windows (about STRIP_BYTES of float32 each). A last
        # strip of fewer than k rows (a partial window, or rows to drop) joins the
        # one before: every strip then holds a window's height, as the image does.
        windows = rows_per_strip(4 * image.channels * width * k)
        strips = [(a, min(a + k * windows, height)) for a in range(0, height, k * windows)]
        if len(strips) > 1 and strips[-1][1] - strips[-1][0] < k:
            strips[-2:] = [(strips[-2][0], height)]
        whole = edge == "drop"
        out = [(first // k, (stop // k) if whole else -(-stop // k)) for first, stop in strips]
        super().__init__(image, shape, strips, out, notices)
        self.k, self.edge = k, edge
        # An image with alpha is never decoded as it is read: its alpha is whole here.
        self.alpha = _pooled_alpha(image, k, edge)
        peak = image.peak
        self.mean = Comparison(
            name="block mean",
            reference="reshape-mean (float64)",
            tolerance=float32_tolerance(peak),
            peak=peak,
            layout=shape[1:],
        )
        self.mean.add_shape(shape)
        self.comparisons.append(self.mean)
        self.pillow: Comparison | None = None
        if image.kind == "uint8":
            self.pillow = Comparison(
                name="8-bit output",
                reference=f"Pillow reduce({k})",
                tolerance=1,
                peak=peak,
                layout=shape[1:],
            )
            planes = shape[0] + (self.alpha is not None)
            self.pillow.add_shape((planes, *shape[1:]))
            self.comparisons.append(self.pillow)

    def _used(self, first: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The strip's rows (those of whole windows with --edge drop) and its alpha."""
        rows = self.image.rows(first, stop)
        alpha = None if self.image.alpha is None else self.image.alpha[first:stop]
        if self.edge == "drop":
            whole = (stop - first) // self.k * self.k
            width = self.image.size[1] // self.k * self.k
            rows = rows[:, :whole, :width]
            alpha = None if alpha is None else alpha[:whole, :width]
        return rows, alpha

    def _strip(self, index: int) -> None:
        image, k = self.image, self.k
        rows, alpha = self._used(*self.strips[index])
        top, bottom = self.out[index]
        pooled = ops.avgpool(rows, k, self.edge)
        ours = self._levels(index, pooled, block_mean_exact(rows, k, pooled.shape, image.peak))
        self.mean.update(pooled, ref.block_mean(rows, k, self.edge), top=top)
        if self.pillow is None:
            return
        # Pillow's reduce premultiplies RGBA by its alpha; the engine pools every
        # channel alike, so alpha is reduced by Pillow as an image of its own.
        sources = [pil_image(rows)]
        if alpha is not None:
            assert self.alpha is not None
            sources.append(Image.fromarray(quantize(alpha, 8)))
            ours = np.concatenate([ours, self.alpha[np.newaxis, top:bottom]])
        expected = np.concatenate([ref.pillow_reduce(source, k) for source in sources])
        self.pillow.update(ours, expected, top=top)

    def values(self) -> Rows:
        """The pooled float values (--raw), computed again a strip at a time."""

        def strips() -> Iterator[np.ndarray]:
            for first, stop in self.strips:
                yield ops.avgpool(self._used(first, stop)[0], self.k, self.edge)

        return Rows(self.pixels.shape, np.float32, strips)
