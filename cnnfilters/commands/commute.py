"""``commute``: ``sigma(maxpool(x))`` against ``maxpool(sigma(x))`` for each
activation, with the first differing window of one that does not commute."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import ops
from ..activations import ACTIVATIONS, get_activation
from ..defaults import COMMUTE_INPUTS
from ..engine import max_pool2d
from ..errors import CnnFiltersError
from ..images import LoadedImage
from ..levels import Rows, signed_mosaic
from ..report import Check, compare
from .base import Command, Output, Result, gray_levels, one_of
from .strips import held_rows, rows_per_strip

PICTURES = ("auto", "all", "none")


@dataclass(frozen=True)
class CommuteOptions(Command):
    """Both orders of each activation and max pooling (docs/MATHS.md)."""

    name: ClassVar[str] = "commute"
    activations: tuple[str, ...] = tuple(ACTIVATIONS)
    kernel_size: int = 2
    stride: int | None = None
    on: str = "gradient"
    pictures: str = "auto"

    def __post_init__(self) -> None:
        names = tuple(dict.fromkeys(get_activation(n).name for n in self.activations))
        if not names:
            raise CnnFiltersError("commute needs at least one activation")
        object.__setattr__(self, "activations", names)
        for what, value in (("kernel size", self.kernel_size), ("stride", self.stride or 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise CnnFiltersError(f"{what} must be a positive int, got {value!r}")
        one_of(self.on, COMMUTE_INPUTS, "on")
        one_of(self.pictures, PICTURES, "pictures")

    def outputs(self) -> list[str]:
        """The pictures written: with ``pictures="all"`` both orders and their difference
        for every activation; ``auto``, the difference of each activation that need
        not commute (a nondecreasing one does, and its check says so); ``none``."""
        if self.pictures == "all":
            parts = ("act-of-pool", "pool-of-act", "diff")
            return [f"{a}.{part}" for a in self.activations for part in parts]
        if self.pictures == "none":
            return []
        return [
            f"{a}.diff"
            for a in self.activations
            if get_activation(a).monotonicity != "nondecreasing"
        ]

    def options(self) -> dict[str, Any]:
        return {**super().options(), "activations": list(self.activations)}

    def run(self, image: LoadedImage) -> Result:
        """Both orders of activation and max pooling, per activation, with counterexamples."""
        result = Result()
        x = _commute_input(image, self.on)
        units: dict[str, float] = {}
        wanted = set(self.outputs())
        for name in self.activations:
            outcome = ops.commute(x, get_activation(name), self.kernel_size, self.stride)
            result.checks.append(_commute_check(outcome))
            # Only --raw reads the float values: they are made again by strips then,
            # not held until the run ends (two float32 maps and a float64 one for each
            # activation would be held otherwise).
            orders = _CommuteOrders(x, outcome)
            for suffix, values, what in (
                ("act-of-pool", held_rows(outcome.act_of_pool), f"{name}(maxpool(x))"),
                ("pool-of-act", held_rows(outcome.pool_of_act), f"maxpool({name}(x))"),
                (
                    "diff",
                    held_rows(outcome.act_of_pool, outcome.pool_of_act),
                    f"{name}(maxpool(x)) - maxpool({name}(x))",
                ),
            ):
                if f"{name}.{suffix}" not in wanted:
                    continue
                # Drawn a strip at a time: the float64 difference, its mosaic and its
                # absolute values would each be a whole map.
                pixels, scale = signed_mosaic(values, gap=2)
                result.outputs[f"{name}.{suffix}"] = Output(pixels, orders.rows(suffix), what)
                units[f"{name}.{suffix}"] = scale
        result.info.update(
            on=self.on,
            channels=int(x.shape[0]),
            kernel_size=list(outcome.kernel_size),
            stride=list(outcome.stride),
            images="signed maps, 0 at mid-gray 128; value = (pixel - 128) * units_per_level",
            units_per_level=units,
        )
        if self.on == "gradient":
            result.notices.append(
                "input: dy and dx of the grayscale image (side by side in images)"
            )
        if image.alpha is not None:
            result.notices.append("alpha is not carried to the pooled feature maps")
        if self.pictures == "auto" and len(wanted) < 3 * len(self.activations):
            result.notices.append(
                "pictures: the difference of each activation that need not commute "
                "(--pictures all: both orders of every activation)"
            )
        return result


class _CommuteOrders:
    """An activation's two orders and their difference, made again a strip of output
    rows at a time: ``sigma(maxpool(x))`` from the rows of ``maxpool(x)``,
    ``maxpool(sigma(x))`` from the input rows under them. Activations are
    elementwise and a window's maximum is exact, so every value is the one of
    :func:`~cnnfilters.ops.commute` on the whole input."""

    def __init__(self, x: np.ndarray, outcome: ops.CommuteResult) -> None:
        self.x = x
        self.activation = get_activation(outcome.activation)
        self.kernel, self.stride = outcome.kernel_size, outcome.stride
        self.shape = outcome.act_of_pool.shape
        self.dtype = outcome.act_of_pool.dtype

    def rows(self, order: str) -> Rows:
        """``act-of-pool``, ``pool-of-act`` (in ``x``'s float dtype) or ``diff`` (float64)."""
        channels, height, width = self.shape
        dtype = np.float64 if order == "diff" else self.dtype
        step = rows_per_strip(channels * width * np.dtype(dtype).itemsize)

        def strips() -> Iterator[np.ndarray]:
            for first in range(0, height, step):
                stop = min(height, first + step)
                if order == "act-of-pool":
                    yield self._act_of_pool(first, stop)
                elif order == "pool-of-act":
                    yield self._pool_of_act(first, stop)
                else:
                    yield (
                        self._act_of_pool(first, stop).astype(np.float64)
                        - self._pool_of_act(first, stop).astype(np.float64)
                    )

        return Rows(self.shape, dtype, strips)

    def _inputs(self, first: int, stop: int) -> np.ndarray:
        """The input rows that output rows ``first..stop`` pool."""
        return self.x[:, first * self.stride[0] : (stop - 1) * self.stride[0] + self.kernel[0]]

    def _act_of_pool(self, first: int, stop: int) -> np.ndarray:
        return self.activation(max_pool2d(self._inputs(first, stop), self.kernel, self.stride))

    def _pool_of_act(self, first: int, stop: int) -> np.ndarray:
        return max_pool2d(self.activation(self._inputs(first, stop)), self.kernel, self.stride)


def _commute_input(image: LoadedImage, on: str) -> np.ndarray:
    """The float array ``commute`` pools (float32, or float64 as some float images
    are): what ops.commute would compute on, which the --raw maps read again."""
    if on == "gradient":
        dy, dx = ops.gradients(gray_levels(image))
        return np.concatenate([dy, dx])
    if on == "centered":
        if image.kind in ("uint8", "uint16"):
            low, high = 0.0, float(image.max_value)
        else:
            low, high = float(image.pixels.min()), float(image.pixels.max())
        half = (high - low) / 2 or 1.0
        return ((image.pixels - (low + half)) / half).astype(np.float32)
    pixels = image.pixels
    return pixels if pixels.dtype in (np.float32, np.float64) else pixels.astype(np.float32)


def _commute_check(outcome: ops.CommuteResult) -> Check:
    act = get_activation(outcome.activation)
    synthetic = None
    if outcome.counterexample is None and act.monotonicity != "nondecreasing":
        synthetic = ops.find_counterexample(act)
    expected_equal = act.monotonicity == "nondecreasing"
    check = compare(
        outcome.act_of_pool,
        outcome.pool_of_act,
        name=act.name,
        reference="maxpool(sigma(x))",
        tolerance=0.0 if expected_equal else math.inf,
        extra={
            "activation": act.name,
            "monotonicity": act.monotonicity,
            "commutes": outcome.commutes,
            "windows_differing": outcome.differing,
            "windows_overflowed": outcome.overflowed,
            "counterexample": outcome.counterexample,
            "synthetic_counterexample": synthetic,
            "min_identity_holds": outcome.min_identity_holds,
        },
    )
    return dataclasses.replace(check, passed=outcome.passed)
