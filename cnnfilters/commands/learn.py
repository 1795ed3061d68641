"""``learn``: a conv layer of a construction's geometry trained back by gradient
descent, or the kernel of a BEFORE -> AFTER pair, checked against the
construction and against least squares."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import reference as ref
from ..defaults import GRADIENT_BASES, LEARN_TARGETS, OPTIMIZERS
from ..errors import CnnFiltersError, InputError
from ..images import LoadedImage
from ..kernels import avg_pool_weight, constructions, grayscale_weight
from .base import as_rgb, gray_levels, in_range, one_of
from .learned import Learned, learned_checks, stop_notice, why_undetermined
from .training import WindowPool, pair_targets

if TYPE_CHECKING:  # learn is imported by the learn command alone (1.3 ms a run)
    from ..learn import Layer


@dataclass(frozen=True)
class LearnOptions:
    """Learn a construction back (or a before -> after kernel) by gradient descent.

    Not an image command of :data:`COMMANDS`: it trains one layer on all its
    inputs together. The data are ``patches`` random windows of the inputs
    (about 32 x 32 outputs each, drawn in proportion to each image's area,
    from ``seed``), cut from the image padded as the construction pads it, so
    that every window's target is exactly the construction's output on the
    whole image there. Depthwise constructions (gradient, average pooling,
    a pair's kernel) are one channel's layer: with ``on="rgb"`` each colour
    channel is one more example of it. The loss, optimizers and stopping
    rules are those of :mod:`cnnfilters.learn`.
    """

    name: ClassVar[str] = "learn"
    what: str = "gradient"
    k: int | None = None  # avgpool: the window (2); pair: the kernel's side (3)
    on: str = "gray"
    optimizer: str = "momentum"
    lr: float | None = None  # None: from the measured curvature
    steps: int = 5000
    tol: float = 1e-12
    seed: int = 0
    patches: int = 64
    atol: float = 1e-3

    def __post_init__(self) -> None:
        one_of(self.what, LEARN_TARGETS, "what to learn")
        one_of(self.on, GRADIENT_BASES, "on")
        one_of(self.optimizer, OPTIMIZERS, "optimizer")
        k = self.k if self.k is not None else {"pair": 3, "avgpool": 2}.get(self.what, 1)
        if self.what in ("gradient", "grayscale") and self.k is not None:
            raise CnnFiltersError(f"-k is for avgpool and pair; {self.what}'s kernel is fixed")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= _LEARN_MAX_K:
            raise CnnFiltersError(f"-k must be an int from 1 to {_LEARN_MAX_K}, got {self.k!r}")
        if self.what == "pair" and k % 2 == 0:
            raise CnnFiltersError(f"a pair's kernel side must be odd ('same' padding), got {k}")
        object.__setattr__(self, "k", k)
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise CnnFiltersError(f"--lr must be a positive number or auto, got {self.lr!r}")
        in_range(self.steps, 1, 1_000_000, "--steps")
        in_range(self.patches, 1, 100_000, "--patches")
        in_range(self.seed, 0, 2**63 - 1, "--seed")
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise CnnFiltersError(f"--tol must be a number >= 0, got {self.tol!r}")
        if not (math.isfinite(self.atol) and self.atol > 0):
            raise CnnFiltersError(f"--atol must be a positive number, got {self.atol!r}")

    @property
    def label(self) -> str:
        return f"{self.what} -k {self.k}" if self.what in ("avgpool", "pair") else self.what

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def layer(self) -> tuple[Layer, int, tuple[np.ndarray, np.ndarray] | None]:
        """The layer to train, its padding, and the construction's own weights and bias."""
        from ..learn import Layer

        k = int(self.k)
        if self.what == "gradient":
            truth = constructions()["gradient"].weight.astype(np.float64)
            return Layer(truth.shape), 1, (truth, np.zeros(2))
        if self.what == "grayscale":
            return Layer((1, 3, 1, 1)), 0, (grayscale_weight(dtype=np.float64), np.zeros(1))
        if self.what == "avgpool":
            truth = avg_pool_weight(1, k, dtype=np.float64)
            return Layer(truth.shape, stride=k), 0, (truth, np.zeros(1))
        return Layer((1, 1, k, k)), k // 2, None

    def planes(self, image: LoadedImage, notices: list[str]) -> list[np.ndarray]:
        """The ``(C, H, W)`` planes of one image that the layer takes as examples."""
        if self.what == "grayscale":
            return [as_rgb(image, notices)]
        base = gray_levels(image) if self.on == "gray" else image.pixels
        return [base[c : c + 1] for c in range(base.shape[0])]

    def fit(
        self,
        images: Iterable[LoadedImage],
        after: LoadedImage | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> Learned:
        """Train on ``images`` (for a pair: the one image to ``after``) and check the result.

        ``images`` may be a generator: each image is cut into candidate windows
        and let go before the next is read, so that memory does not grow with
        the images' sizes.
        """
        layer, pad, truth = self.layer()
        notices: list[str] = []
        pool = WindowPool(self, layer, pad)
        peak, kept = 0.0, []
        for image in images:
            peak = max(peak, image.peak)
            planes = self.planes(image, notices)
            targets = None
            if self.what == "pair":
                kept.append(image)
                targets = pair_targets(image, after, self.planes(after, []), len(planes))
            for index, plane in enumerate(planes):
                pool.add(plane, None if targets is None else targets[index])
        inputs, wanted = pool.draw(truth)
        weight, bias, rank, unknowns = ref.least_squares_conv(
            inputs, wanted, layer.weight_shape[-2:], stride=layer.stride
        )
        if rank < unknowns:
            raise InputError(
                f"the training data do not determine the {unknowns - 1} weights and the bias "
                f"(rank {rank} of {unknowns}): {why_undetermined(self.what)}"
            )
        from ..learn import Problem, train

        training = train(
            Problem(inputs, wanted, layer),
            optimizer=self.optimizer,
            lr=self.lr,
            steps=self.steps,
            tol=self.tol,
            seed=self.seed,
            on_step=on_step,
        )
        learned = Learned(
            training,
            training.weight,
            training.bias,
            weight,
            bias,
            truth,
            layer.stride,
            pad,
            notices=notices,
        )
        learned.info.update(
            patches=len(inputs),
            patch=pool.side,
            examples=pool.examples,
            steps=training.steps,
            stopped=training.stopped,
            loss=training.loss,
            seconds=round(training.seconds, 3),
            optimizer=training.optimizer,
            lr=training.lr,
            momentum=training.momentum,
            curvature=list(training.curvature),
        )
        if pool.small:
            learned.notices.append(
                f"{pool.small} image plane(s) smaller than a training window "
                f"({pool.span} x {pool.span} pixels): not used"
            )
        learned.checks.extend(learned_checks(self, learned, peak, kept[0] if kept else None, after))
        if training.stopped in ("plateau", "steps"):
            learned.notices.append(stop_notice(training, self.tol))
        return learned


_LEARN_MAX_K = 15
