"""The data ``learn`` trains on: windows cut from the images (padded as the
construction pads them), and for a pair AFTER's pixels under them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..engine import conv2d
from ..errors import CnnFiltersError, InputError
from ..images import LoadedImage

if TYPE_CHECKING:  # learn is imported by the learn command alone (1.3 ms a run)
    from ..learn import Layer
    from .learn import LearnOptions


def pair_targets(
    before: LoadedImage, after: LoadedImage | None, planes: list[np.ndarray], count: int
) -> list[np.ndarray]:
    """AFTER's planes, which must match BEFORE's in size and number."""
    if after is None:
        raise CnnFiltersError("a pair needs BEFORE and AFTER")
    if after.size != before.size:
        raise InputError(
            f"{after.path}: {after.size[1]} x {after.size[0]} pixels, but BEFORE "
            f"({before.path}) is {before.size[1]} x {before.size[0]}: the pair must match"
        )
    if len(planes) != count:
        raise InputError(
            f"{after.path}: {len(planes)} channel(s), but BEFORE ({before.path}) has {count} "
            "with this --on: the pair must match (or use --on gray)"
        )
    return planes


class WindowPool:
    """Training windows, cut from each image plane as it comes.

    Each plane gives up to ``patches`` candidate windows (at random places)
    and its number of possible windows; :meth:`draw` then takes ``patches``
    of them, each plane in proportion to its possible windows, so that the
    result is as if drawn from all images at once while only the candidates
    are kept. Windows are cut from the plane padded as the construction pads
    it (zeros: black), so that each target is the construction's output on
    the whole image there. A pair's windows lie inside BEFORE, their targets
    inside AFTER's border: how the other tool filtered its border (padded its
    own way, or not at all) is not the kernel's to learn.
    """

    def __init__(self, options: LearnOptions, layer: Layer, pad: int) -> None:
        self.stride, self.pad, self.count = layer.stride, pad, options.patches
        # A pair is fitted inside AFTER's border: BEFORE is not padded, AFTER is cut.
        self.inside = options.what == "pair"
        self.kernel = layer.weight_shape[-2:]
        self.side = max(1, 32 // self.stride)  # output pixels a side
        self.span = self.stride * (self.side - 1) + self.kernel[0]
        self.rng = np.random.default_rng(options.seed)
        self.inputs: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.places: list[int] = []
        self.small = self.examples = 0

    def add(self, plane: np.ndarray, target: np.ndarray | None = None) -> None:
        """One ``(C, H, W)`` plane (and, for a pair, AFTER's plane there)."""
        self.examples += 1
        (kh, kw), stride, side, pad = self.kernel, self.stride, self.side, self.pad
        if self.inside:
            padded, shift = plane, pad
        else:
            padded, shift = np.pad(plane, ((0, 0), (pad, pad), (pad, pad))), 0
        rows = (padded.shape[1] - kh) // stride + 1 - side + 1
        cols = (padded.shape[2] - kw) // stride + 1 - side + 1
        if rows <= 0 or cols <= 0:
            self.small += 1
            return
        tops = self.rng.integers(0, rows, self.count)
        lefts = self.rng.integers(0, cols, self.count)
        span_h, span_w = stride * (side - 1) + kh, stride * (side - 1) + kw
        dtype = np.result_type(plane.dtype, np.float32)  # pixel values stay exact
        places = list(zip(tops.tolist(), lefts.tolist(), strict=True))
        windows = [
            padded[:, stride * top : stride * top + span_h, stride * left : stride * left + span_w]
            for top, left in places
        ]
        self.inputs.append(np.stack(windows).astype(dtype))
        if target is not None:
            self.targets.append(
                np.stack(
                    [
                        target[
                            :, shift + top : shift + top + side, shift + left : shift + left + side
                        ]
                        for top, left in places
                    ]
                )
            )
        self.places.append(rows * cols)

    def draw(self, truth: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, targets)`` in float64: the windows, and the construction's outputs
        on them (or AFTER's windows)."""
        if not self.places:
            raise InputError(
                f"every input is smaller than a training window ({self.span} x {self.span} pixels)"
            )
        share = np.array(self.places, dtype=np.float64)
        picks = self.rng.choice(len(self.places), size=self.count, p=share / share.sum())
        taken = np.bincount(picks, minlength=len(self.places))
        inputs = np.concatenate([w[:n] for w, n in zip(self.inputs, taken, strict=True) if n])
        inputs = inputs.astype(np.float64)
        if self.targets:
            wanted = np.concatenate(
                [w[:n] for w, n in zip(self.targets, taken, strict=True) if n]
            ).astype(np.float64)
        else:
            wanted = conv2d(inputs, truth[0], truth[1], stride=self.stride)
        return inputs, wanted
