"""The diff report: one comparison helper for the tests and the command line.

:func:`compare` checks shape first, then values, and returns a frozen
:class:`Check` with the figures (max and mean absolute difference, RMSE,
PSNR, how many values differ). :class:`RunReport` gathers the checks of a
command run and serialises them to the JSON schema of the README.
Rendering (Rich tables) lives in the command line, not here.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._version import __version__
from .errors import EXIT_CHECK_FAILED, EXIT_OK

__all__ = [
    "SCHEMA_VERSION",
    "Check",
    "CheckMaps",
    "Comparison",
    "InputReport",
    "RunReport",
    "compare",
    "difference_maps",
    "to_json",
]

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
    # Thumbnails for the visual report (``with difference_maps():``); never in JSON.
    maps: CheckMaps | None = field(default=None, repr=False, compare=False)

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


@dataclass(frozen=True)
class CheckMaps:
    """Thumbnail maps of a comparison for the visual report.

    ``difference`` ``(rows, cols)``: the largest absolute difference in each
    tile; ``reference`` ``(C, rows, cols)``: the reference's first pixel of
    each tile (None when no row of the image started a tile).
    """

    difference: np.ndarray
    reference: np.ndarray | None = None


# Difference maps cost a few passes over each image: they are made only for
# the visual report (inside ``with difference_maps():``).
_MAPS_WANTED: contextvars.ContextVar[bool] = contextvars.ContextVar("maps", default=False)


@contextlib.contextmanager
def difference_maps(enabled: bool = True) -> Iterator[None]:
    """Within this block, comparisons keep thumbnail maps for the HTML report."""
    token = _MAPS_WANTED.set(enabled)
    try:
        yield
    finally:
        _MAPS_WANTED.reset(token)


class _Maps:
    """Thumbnail-sized pictures of a comparison: where it differs, and the reference.

    The image is cut into square tiles (at most 160 across); ``difference``
    keeps the *largest* absolute difference in each tile, so that a single
    differing pixel still shows; ``reference`` keeps the reference's first
    pixel of each tile. Both go to the HTML report, never to JSON.
    """

    SIDE = 160

    def __init__(self, layout: tuple[int, int]) -> None:
        height, width = layout
        self.tile = max(1, -(-max(height, width) // self.SIDE))
        self.grid = (-(-height // self.tile), -(-width // self.tile))
        self.difference = np.zeros(self.grid, dtype=np.float64)
        self.reference: np.ndarray | None = None

    def update(self, actual: np.ndarray, expected: np.ndarray, top: int) -> None:
        t = self.tile
        rows, width = actual.shape[-2:]
        a = actual.reshape(-1, rows, width)
        e = expected.reshape(-1, rows, width)
        diff = np.zeros((rows, width), dtype=np.float64)
        for channel in range(a.shape[0]):
            d = np.abs(np.subtract(a[channel], e[channel], dtype=np.float64))
            np.maximum(diff, np.nan_to_num(d, nan=np.inf), out=diff)
        columns = -(-width // t)
        padded = np.zeros((rows, columns * t))
        padded[:, :width] = diff
        by_column = padded.reshape(rows, columns, t).max(axis=2)
        tile_rows = (top + np.arange(rows)) // t
        starts = np.flatnonzero(np.r_[True, tile_rows[1:] != tile_rows[:-1]])
        reduced = np.maximum.reduceat(by_column, starts, axis=0)
        for index, start in enumerate(starts):
            row = tile_rows[start]
            if row < self.grid[0]:
                np.maximum(
                    self.difference[row], reduced[index, : self.grid[1]], out=self.difference[row]
                )
        picked = (top + np.arange(rows)) % t == 0
        if picked.any():
            sample = e[:, picked][:, :, ::t].astype(np.float32)
            if self.reference is None:
                self.reference = np.zeros((e.shape[0], *self.grid), dtype=np.float32)
            first = (top + int(np.flatnonzero(picked)[0])) // t
            self.reference[:, first : first + sample.shape[1], : sample.shape[2]] = sample

    def freeze(self) -> CheckMaps:
        return CheckMaps(self.difference, self.reference)


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no inf or NaN: such a figure is written as null (and ``detail`` says why)."""
    return value if value is not None and math.isfinite(value) else None


class Comparison:
    """Figures of ``actual - expected`` accumulated block by block.

    Feed it matching pieces of the two arrays with :meth:`update` (for
    example the rows of an image processed in strips), then call
    :meth:`check`. Differences are taken in float64 one block at a time, so
    that no full-size float64 temporary is ever made.
    """

    # Elements per block: about 1 MB of float64, so that temporaries stay in cache.
    BLOCK = 1 << 17

    def __init__(
        self,
        *,
        name: str,
        reference: str,
        tolerance: float = 0.0,
        peak: float | None = None,
        extra: Mapping[str, Any] | None = None,
        layout: tuple[int, int] | None = None,
    ) -> None:
        self.name, self.reference = name, reference
        self.tolerance, self.peak = tolerance, peak
        self.extra = dict(extra or {})
        self.total = self.differing = self.exceeding = self.nan_mismatch = 0
        self.max_abs = 0.0
        self.sum_abs = self.sum_sq = 0.0
        self.shape: tuple[int, ...] | None = None
        self.detail = ""
        self.maps = _Maps(layout) if layout is not None and _MAPS_WANTED.get() else None

    def update(self, actual: np.ndarray, expected: np.ndarray, *, top: int = 0) -> None:
        """Add matching pieces; ``top`` is the first row of an image strip (for the maps)."""
        actual, expected = np.asarray(actual), np.asarray(expected)
        if actual.shape != expected.shape:
            self.detail = f"shape {actual.shape} differs from the reference's {expected.shape}"
            return
        if self.maps is not None and actual.ndim >= 2:
            self.maps.update(actual, expected, top)
        flat_a, flat_e = actual.reshape(-1), expected.reshape(-1)
        # Integers are compared exactly in int64, floats in float64.
        integers = flat_a.dtype.kind in "bui" and flat_e.dtype.kind in "bui"
        work = np.int64 if integers else np.float64
        for start in range(0, flat_a.size, self.BLOCK):
            a, e = flat_a[start : start + self.BLOCK], flat_e[start : start + self.BLOCK]
            diff = np.subtract(a, e, dtype=work)
            np.abs(diff, out=diff)
            self.total += diff.size
            if not diff.size:
                continue
            largest = diff.max()
            if largest != largest:  # NaN: on both sides it agrees, on one side it does not
                nan = np.isnan(diff)
                lone = nan & ~(np.isnan(a) & np.isnan(e)) & (a != e)  # inf == inf agrees
                self.nan_mismatch += int(np.count_nonzero(lone))
                diff[nan] = 0
                largest = diff.max()
            if largest == 0:
                continue  # the common case of an exact check: nothing more to count
            self.max_abs = max(self.max_abs, float(largest))
            self.sum_abs += float(diff.sum())
            # Not np.dot: OpenBLAS would split it over threads that then spin,
            # taking a core from the decoder and the encoder for a while.
            self.sum_sq += float(np.einsum("i,i->", diff, diff))
            self.differing += int(np.count_nonzero(diff))
            if largest > self.tolerance:
                self.exceeding += int(np.count_nonzero(diff > self.tolerance))

    def add_shape(self, shape: tuple[int, ...]) -> None:
        """Record the shape of the whole arrays (when they were fed in pieces)."""
        self.shape = tuple(shape)

    def check(self) -> Check:
        extra = self.extra
        maps = None if self.maps is None else self.maps.freeze()
        if self.detail and not self.nan_mismatch:
            return Check(
                self.name,
                self.reference,
                False,
                math.inf,
                math.inf,
                math.inf,
                None,
                0,
                0,
                self.total,
                self.tolerance,
                self.shape or (),
                detail=self.detail,
                extra=extra,
                maps=maps,
            )
        total = self.total
        if total == 0:
            return Check(
                self.name,
                self.reference,
                True,
                0.0,
                0.0,
                0.0,
                None,
                0,
                0,
                0,
                self.tolerance,
                self.shape or (0,),
                extra=extra,
                maps=maps,
            )
        mse = self.sum_sq / total
        psnr = None
        if self.peak is not None and mse > 0:
            # An infinite difference (an overflow on one side) has no finite PSNR.
            ratio = self.peak * self.peak / mse
            psnr = 10.0 * math.log10(ratio) if ratio > 0 else -math.inf
        lone = self.nan_mismatch
        exceeding = self.exceeding + lone
        return Check(
            name=self.name,
            reference=self.reference,
            passed=exceeding == 0,
            max_abs=math.inf if lone else self.max_abs,
            mean_abs=self.sum_abs / total,
            rmse=math.sqrt(mse),
            psnr_db=psnr,
            differing=self.differing + lone,
            exceeding=exceeding,
            total=total,
            tolerance=self.tolerance,
            shape=self.shape or (total,),
            detail=f"{lone} values are NaN on one side only" if lone else "",
            extra=extra,
            maps=maps,
        )


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
    actual, expected = np.asarray(actual), np.asarray(expected)
    layout = (
        tuple(actual.shape[-2:]) if actual.ndim >= 2 and actual.shape == expected.shape else None
    )
    comparison = Comparison(
        name=name, reference=reference, tolerance=tolerance, peak=peak, extra=extra, layout=layout
    )
    comparison.add_shape(actual.shape)
    comparison.update(actual, expected)
    return comparison.check()


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
    skipped: bool = False

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "outputs": list(self.outputs),
            "error": self.error,
            "passed": self.passed,
            "skipped": self.skipped,
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
    # Entries a large run counted but did not keep (see run.Settings.keep); not in
    # the JSON, which a run keeps whole.
    left_out: int = 0
    left_out_failed: int = 0
    left_out_files: int = 0  # the files those inputs wrote
    # A run stopped before its end (Ctrl-C, SIGTERM): by what, and the inputs not
    # done ({"by": "Ctrl-C", "not_done": 12, "at_least": false}); None: it ran to its end.
    stopped: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """Every input ran and passed: a stopped run has not passed, whatever it did."""
        if self.stopped is not None:
            return False
        return not self.left_out_failed and all(r.passed for r in self.inputs)

    @property
    def exit_code(self) -> int:
        """The worst kept input's: its error's code, else 1 if a check failed, else 0
        (a run that left entries out has its counts for the rest)."""
        codes = [item.exit_code for item in self.inputs if item.error]
        if codes:
            return max(codes)
        return EXIT_OK if self.passed else EXIT_CHECK_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "command": self.command,
            "version": __version__,
            "passed": self.passed,
            "stopped": self.stopped,
            "options": self.options,
            "inputs": [r.to_dict() for r in self.inputs],
        }

    def to_json(self) -> str:
        return to_json(self.to_dict(), indent=2)


def to_json(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON of a report's data: numpy values as numbers and lists, and the
    non-finite floats JSON cannot hold as the strings ``"inf"``, ``"-inf"``
    and ``"nan"`` (a counterexample window whose values overflowed, ...)."""
    import json  # 1.2 ms: only a run that writes JSON pays it

    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
