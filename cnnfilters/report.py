"""The diff report: one comparison helper for the tests and the command line.

:func:`compare` checks shape first, then values, and returns a frozen
:class:`Check` with the figures (max and mean absolute difference, RMSE,
PSNR, how many values differ). :class:`RunReport` gathers the checks of a
command run and serialises them to the JSON schema of the README.
Rendering (Rich tables) lives in the command line, not here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._version import __version__

__all__ = ["SCHEMA_VERSION", "Check", "InputReport", "RunReport", "compare"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Check:
    """The result of comparing an engine result with a reference.

    ``differing`` counts values that differ at all; ``exceeding`` those whose
    difference is beyond ``tolerance``. ``psnr_db`` is ``None`` when the two
    are identical (infinite PSNR) or when no peak value was given.
    """

    name: str
    reference: str
    passed: bool
    max_abs: float
    mean_abs: float
    rmse: float
    psnr_db: float | None
    differing: int
    exceeding: int
    total: int
    tolerance: float
    shape: tuple[int, ...]
    detail: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return self.total > 0 and self.differing == 0 and not self.detail

    def summary(self) -> str:
        """One line, in the spirit of Pillow's ``assert_image_similar``."""
        if self.detail:
            return f"{self.name}: {self.detail}"
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.name} vs {self.reference}: max abs diff {self.max_abs:.6g} "
            f"{'<=' if self.passed else '>'} tolerance {self.tolerance:g}, "
            f"{self.differing}/{self.total} values differ ({verdict})"
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "reference": self.reference,
            "max_abs": _finite_or_none(self.max_abs),
            "mean_abs": _finite_or_none(self.mean_abs),
            "rmse": _finite_or_none(self.rmse),
            "psnr_db": _finite_or_none(self.psnr_db),
            "differing": self.differing,
            "exceeding": self.exceeding,
            "total": self.total,
            "tolerance": _finite_or_none(self.tolerance),
            "passed": self.passed,
            "shape": list(self.shape),
        }
        if self.detail:
            data["detail"] = self.detail
        data.update(self.extra)
        return data


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no inf or NaN: such a figure is written as null (and ``detail`` says why)."""
    return value if value is not None and math.isfinite(value) else None


def compare(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    name: str,
    reference: str,
    tolerance: float = 0.0,
    peak: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Check:
    """Compare ``actual`` with ``expected``: shape first, then values.

    Differences are taken in float64. The check passes when the shapes agree,
    no value is NaN on one side only, and ``max |actual - expected| <=
    tolerance``. ``peak`` (for example 255 for 8-bit images) enables PSNR.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    extra = dict(extra or {})
    if actual.shape != expected.shape:
        return Check(
            name, reference, False, math.inf, math.inf, math.inf, None, 0, 0,
            int(expected.size), tolerance, tuple(actual.shape),
            detail=f"shape {actual.shape} differs from the reference's {expected.shape}",
            extra=extra,
        )  # fmt: skip
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    both_nan = np.isnan(actual) & np.isnan(expected) if diff.size else diff.astype(bool)
    diff[both_nan] = 0.0
    total = int(diff.size)
    if total == 0:
        return Check(name, reference, True, 0.0, 0.0, 0.0, None, 0, 0, 0, tolerance, diff.shape,
                     extra=extra)  # fmt: skip
    nan_mismatch = int(np.count_nonzero(np.isnan(diff)))
    finite = np.where(np.isnan(diff), 0.0, diff)
    max_abs = math.inf if nan_mismatch else float(finite.max())
    mean_abs = float(finite.mean())
    mse = float(np.mean(np.square(finite)))
    rmse = math.sqrt(mse)
    psnr = None
    if peak is not None and mse > 0:
        psnr = 10.0 * math.log10(peak * peak / mse)
    differing = int(np.count_nonzero(finite)) + nan_mismatch
    exceeding = int(np.count_nonzero(finite > tolerance)) + nan_mismatch
    detail = f"{nan_mismatch} values are NaN on one side only" if nan_mismatch else ""
    return Check(
        name=name,
        reference=reference,
        passed=exceeding == 0,
        max_abs=max_abs,
        mean_abs=mean_abs,
        rmse=rmse,
        psnr_db=psnr,
        differing=differing,
        exceeding=exceeding,
        total=total,
        tolerance=tolerance,
        shape=tuple(diff.shape),
        detail=detail,
        extra=extra,
    )


@dataclass
class InputReport:
    """What one input gave: its outputs, checks, notices, or the error that stopped it."""

    input: str
    outputs: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    exit_code: int = 0

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "outputs": list(self.outputs),
            "error": self.error,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
            "notices": list(self.notices),
            **({"info": self.info} if self.info else {}),
        }


@dataclass
class RunReport:
    """Every input of one command run; serialises to the report's JSON schema."""

    command: str
    inputs: list[InputReport] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "command": self.command,
            "version": __version__,
            "passed": self.passed,
            "options": self.options,
            "inputs": [r.to_dict() for r in self.inputs],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
