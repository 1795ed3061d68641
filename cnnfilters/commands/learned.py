"""What ``learn`` found (:class:`Learned`) and how it is checked: against the
construction, against float64 least squares, and for a pair the learned kernel
run on BEFORE against AFTER."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import conv2d
from ..images import LoadedImage
from ..report import Check, compare

if TYPE_CHECKING:  # learn is imported by the learn command alone (1.3 ms a run)
    from ..learn import Training
    from .learn import LearnOptions


@dataclass
class Learned:
    """What ``learn`` found: the training, the layers side by side, and the checks."""

    training: Training
    weight: np.ndarray  # the learned layer, in pixel units
    bias: np.ndarray
    lstsq_weight: np.ndarray  # the independent reference: float64 least squares
    lstsq_bias: np.ndarray
    truth: tuple[np.ndarray, np.ndarray] | None  # the construction's layer (None for a pair)
    stride: int
    padding: int
    checks: list[Check] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def learned_checks(
    options: LearnOptions,
    learned: Learned,
    peak: float,
    before: LoadedImage | None,
    after: LoadedImage | None,
) -> list[Check]:
    """The checks of what was learned: against the construction (if any), against
    least squares, and for a pair the learned kernel run on BEFORE against AFTER."""
    checks = []
    if learned.truth is not None:
        weight, bias = learned.truth
        checks += [
            compare(
                learned.weight,
                weight,
                name="learned weights",
                reference=f"the construction ({options.label})",
                tolerance=options.atol,
            ),
            compare(
                learned.bias,
                bias,
                name="learned bias",
                reference="the construction (0)",
                tolerance=options.atol * peak,
            ),
            compare(
                learned.lstsq_weight,
                weight,
                name="least-squares weights",
                reference=f"the construction ({options.label})",
                tolerance=1e-6,
            ),
        ]
    scale = max(1.0, float(np.max(np.abs(learned.lstsq_weight))))
    checks.append(
        compare(
            learned.weight,
            learned.lstsq_weight,
            name="learned weights",
            reference="least squares (float64 lstsq)",
            tolerance=options.atol * scale,
        )
    )
    if before is not None and after is not None:
        checks.append(_refit(options, learned, before, after))
    return checks


def _refit(
    options: LearnOptions, learned: Learned, before: LoadedImage, after: LoadedImage
) -> Check:
    """The learned kernel run on BEFORE as ``convolve`` runs it, against AFTER, where
    its window lies inside the image; the border, which tools pad each in their own
    way (Pillow's ``ImageFilter.Kernel`` leaves it unfiltered), is a notice."""
    base = options.planes(before, [])
    values = np.concatenate(
        [
            conv2d(
                plane,
                learned.weight.astype(np.float32),
                learned.bias.astype(np.float32),
                padding=learned.padding,
            )
            for plane in base
        ]
    )
    refit = after.levels(values).pixels
    target = np.concatenate(options.planes(after, []))
    edge = learned.padding
    height, width = refit.shape[-2:]
    inner = (slice(None), slice(edge, height - edge), slice(edge, width - edge))
    check = compare(
        refit[inner] if 2 * edge < min(height, width) else refit,
        target[inner] if 2 * edge < min(height, width) else target,
        name="refit 8-bit levels" if after.bit_depth == 8 else "refit levels",
        reference=f"AFTER, inside its {edge}-pixel border" if edge else "AFTER",
        tolerance=1.0,
        peak=float(after.max_value),
    )
    if edge and 2 * edge < min(height, width):
        off = np.abs(refit.astype(np.int64) - target.astype(np.int64)) > 1
        off[inner] = False
        border = refit.size - refit[inner].size
        learned.notices.append(
            f"the {edge}-pixel border, where the kernel's window leaves the image: "
            f"{int(off.sum())} of {border} values differ from AFTER by more than 1 level "
            "(the tool that made AFTER padded it its own way, or left it unfiltered)"
        )
    return check


def why_undetermined(what: str) -> str:
    """Why least squares could not pin the weights down, and what to give instead."""
    if what == "grayscale":
        return "gray inputs (R = G = B) cannot tell the colour weights apart; give colour images"
    return "the inputs are too flat (constant or too few distinct windows); give richer images"


def stop_notice(training: Training, tol: float) -> str:
    """Why training stopped before the loss reached ``tol``."""
    if training.stopped == "plateau":
        return (
            f"stopped at step {training.steps}: the loss {training.loss:.3g} stopped "
            "decreasing (the data's floor: rounding noise, or float32's), above "
            f"--tol {tol:g}"
        )
    return f"stopped at --steps {training.steps} with the loss {training.loss:.3g} > --tol {tol:g}"
