"""The image commands: one frozen options object each, that runs on one decoded image.

A command object validates itself when it is made (a wrong value is a
:class:`~cnnfilters.errors.CnnFiltersError` naming the value), names the
outputs it writes, gives the kernels it runs with, and :meth:`Command.run`
computes one image: one operation of :mod:`cnnfilters.ops`, checked against
:mod:`cnnfilters.reference` with :func:`~cnnfilters.report.compare`,
returning a :class:`Result`. Nothing here reads or writes a file: the loop
over inputs is :mod:`cnnfilters.run`, the writing :mod:`cnnfilters.outputs`.

Adding a command: a frozen dataclass deriving from :class:`Command` with its
options as fields, ``name``, :meth:`outputs` and :meth:`run`; add it to
:data:`COMMANDS`; then one function in :mod:`cnnfilters.cli` (see
``docs/ARCHITECTURE.md``).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
from PIL import Image

from . import ops
from . import reference as ref
from .activations import ACTIVATIONS, get_activation
from .defaults import (
    COMMUTE_INPUTS,
    EDGE_MODES,
    GRADIENT_BASES,
    LEARN_TARGETS,
    OPTIMIZERS,
    PADDING_MODES,
)
from .engine import conv2d, max_pool2d
from .errors import CnnFiltersError, InputError
from .images import (
    LoadedImage,
    Rows,
    level_dtype,
    levels_outside,
    mosaic,
    pil_image,
    quantize,
    signed_mosaic,
    signed_to_image,
    units_per_level,
    unsigned_to_image,
)
from .kernels import (
    FLOAT32_MAX,
    FORWARD_DIFF_X,
    FORWARD_DIFF_Y,
    as_float32_weights,
    avg_pool_weight,
    constructions,
    grayscale_weight,
    parse_grayscale_weights,
    same_padding,
)
from .report import Check, Comparison, compare
from .rounding import Exact, block_mean_exact, correct_ties, luma_exact

if TYPE_CHECKING:  # learn is imported by the learn command alone (1.3 ms a run)
    from .learn import Layer, Training

__all__ = [
    "COMMANDS",
    "AvgpoolOptions",
    "Command",
    "CommuteOptions",
    "ConvolveOptions",
    "GradientOptions",
    "GrayscaleOptions",
    "LearnOptions",
    "Learned",
    "Output",
    "Result",
    "command_named",
    "gray_levels",
]

_EPS32 = float(np.finfo(np.float32).eps)

# Rows of float32 a strip of a large image holds: a few MB, so that memory
# stays bounded by the decoded image whatever its size.
_STRIP_BYTES = 2 << 20
# Gradient maps up to this size (all three together) are kept from the checking
# pass for writing instead of being computed again: 2.8 MP of gray, or 0.9 MP
# with --on rgb. Larger images compute them again while writing, so that their
# memory stays near the size of the decoded image.
_KEEP_BYTES = 32 << 20


def float32_tolerance(peak: float) -> float:
    """Float32 rounding of a few operations on values up to ``peak``: 8 ulp of the peak."""
    return 8 * _EPS32 * peak


@dataclass
class Output:
    """One image a command writes, with the exact float values behind it.

    ``colorimetric`` outputs (grayscale, average pooling) are images in the
    input's colour space, so a fitting ICC profile is copied to them; maps of
    differences are not.
    """

    pixels: np.ndarray | Rows  # (1 or 3, H, W) uint8/uint16, ready to save
    values: np.ndarray | Rows  # the float result, for --raw
    description: str
    alpha: np.ndarray | None = None  # (H, W), same dtype as pixels
    colorimetric: bool = False


@dataclass
class Result:
    """What a command returns for one image."""

    outputs: dict[str, Output] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    # Checks left to run while the outputs are being written (in other threads).
    verify: Callable[[], list[Check]] | None = None
    # The strips the outputs are made and checked in, for Command.together (grayscale's).
    strips: _Strips | None = None


@dataclass(frozen=True)
class Command:
    """An image command's options; subclasses add their fields and computation."""

    name: ClassVar[str]
    # True when run() reads the image's pixels only through LoadedImage.rows, each
    # row once, top to bottom (and --raw is not asked for, which reads them again):
    # a large PNG can then be decoded while it is read (cnnfilters.pngrows).
    rows_once: ClassVar[bool] = False

    def outputs(self) -> list[str]:
        """The names of the images it writes (``{stem}.{name}.png``)."""
        raise NotImplementedError

    def run(self, image: LoadedImage) -> Result:
        """Compute one decoded image, with its checks."""
        raise NotImplementedError

    def check_output_size(self, image: LoadedImage, max_pixels: int) -> None:
        """Refuse, before the run, an image whose outputs would hold more than
        ``max_pixels`` pixels (``--max-pixels``, which bounds the inputs) or four
        channels of them. By default none can: no output is larger than its input."""

    def together(self, results: list[Result]) -> None:
        """Before the checks of several images' results (a batch's chunk), do at once
        the work they can share; each result's figures stay what it gets alone.
        By default there is none."""

    def options(self) -> dict[str, Any]:
        """The options as the report records them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def kernels(self) -> list[tuple[str, np.ndarray]]:
        """The kernels it runs with, as ``(title, matrix)`` for the visual report."""
        return []


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise CnnFiltersError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def _strips(height: int, row_bytes: int) -> list[tuple[int, int]]:
    step = max(8, _STRIP_BYTES // max(1, row_bytes))
    return [(first, min(first + step, height)) for first in range(0, height, step)]


def _alpha_levels(image: LoadedImage) -> np.ndarray | None:
    """The kept alpha channel as output levels, or None."""
    return None if image.alpha is None else quantize(image.alpha, image.bit_depth)


def _as_rgb(image: LoadedImage, notices: list[str]) -> np.ndarray:
    if image.channels == 3:
        return image.pixels
    notices.append("gray input: used as R = G = B")
    return np.repeat(image.pixels, 3, axis=0)


def gray_levels(image: LoadedImage) -> np.ndarray:
    """The grayscale image as ``grayscale`` writes it: its integer levels, in their own
    sample type (uint8 or uint16; a one-channel image's own pixels).

    The engine and the references take them as they are, and convert a block at
    a time (a float32 copy was 48 MB more at 12 MP, for the same values).
    """
    if image.channels == 1:
        return image.pixels
    triple = parse_grayscale_weights("bt601")
    levels = image.levels(ops.grayscale(image.pixels, triple),
                          exact=luma_exact(image.pixels, triple, image.peak))  # fmt: skip
    return levels.pixels


# ----------------------------------------------------------------- grayscale


@dataclass(frozen=True)
class GrayscaleOptions(Command):
    """Luma as a 1x1 convolution: ``bt601``, ``bt709`` or ``R,G,B`` weights (SPEC section 3)."""

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
        strips = _strips(height, 3 * width * 4)

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
        result.outputs["grayscale"] = Output(pixels, luma, f"luma, weights {triple}",
                                             alpha=_alpha_levels(image),
                                             colorimetric=True)  # fmt: skip
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
            if (len(work.strips) == 1 and image.kind == "uint8"
                    and isinstance(image.pixels, np.ndarray)
                    and image.size[0] * image.size[1] <= _SIDE_BY_SIDE_PIXELS):  # fmt: skip
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
        work.shared = _Shared(lumas[index], level.pixels[:, :, part], clipped,
                              formula[:, :, part], theirs)  # fmt: skip


def _rgb(pixels: np.ndarray) -> np.ndarray:
    """Gray ``(1, H, W)`` pixels as R = G = B; RGB as they are."""
    return pixels if pixels.shape[0] == 3 else np.repeat(pixels, 3, axis=0)


def _luma_comparison(image: LoadedImage) -> Comparison:
    peak = image.peak
    return Comparison(name="luma", reference="float64 formula",
                      tolerance=float32_tolerance(peak), peak=peak, layout=image.size)  # fmt: skip


class _InOrder:
    """Steps ``0..count - 1`` of some work, each done once and in order by whichever
    thread asks for it first; a thread that needs a step another thread is on
    waits for it. Two threads can so share a pipeline without either having to
    know whether the other exists. (The step is passed in, not kept: a bound
    method kept here would make its object a reference cycle, freed only by a
    garbage collection, with its arrays.)"""

    def __init__(self, count: int) -> None:
        self.count = count
        self._done = 0  # steps 0.._done - 1 are done
        self._busy = False  # a thread is on step _done
        self._stopped: type[BaseException] | None = None  # Ctrl-C or SIGTERM in a step
        self._changed = threading.Condition()

    def through(self, index: int, step: Callable[[int], None]) -> None:
        """Make sure steps ``0..index`` are done.

        A step stopped by Ctrl-C or SIGTERM stops the work: the other thread
        raises the same, instead of doing the steps that are left.
        """
        with self._changed:
            while self._done <= index:
                if self._stopped is not None:
                    raise self._stopped
                if self._busy:
                    self._changed.wait()
                    continue
                self._busy = True
                try:
                    self._changed.release()  # inside the try: a signal may come right after
                    step(self._done)
                except BaseException as exc:
                    if not isinstance(exc, Exception):
                        self._stopped = type(exc)
                    raise
                finally:
                    self._changed.acquire()
                    self._busy = False
                    self._changed.notify_all()
                self._done += 1

    def all(self, step: Callable[[int], None]) -> None:
        """Every step, one at a time (another thread can take each as it is done)."""
        for index in range(self.count):
            self.through(index, step)


class _Strips:
    """A command's output levels, made and checked a strip of rows at a time.

    Each strip is done once, in order, by whichever thread asks first
    (:class:`_InOrder`): the writer, for the strip's levels to encode, or
    :meth:`checks`. A subclass's ``_strip`` reads the strip's rows once,
    computes it, rounds it to levels (:meth:`_levels`) and updates its
    comparisons while the rows are in cache. So there is no second pass over
    the image, and the encoder, in its own thread, starts on the first strip
    instead of after the last.
    """

    def __init__(self, image: LoadedImage, shape: tuple[int, int, int],
                 strips: list[tuple[int, int]], out: list[tuple[int, int]],
                 notices: list[str]) -> None:  # fmt: skip
        self.image, self.strips, self.out, self.notices = image, strips, out, notices
        self.pixels = np.empty(shape, dtype=level_dtype(image.bit_depth))
        self.comparisons: list[Comparison] = []
        self.clipped = 0
        self.done = _InOrder(len(strips))

    def _strip(self, index: int) -> None:
        raise NotImplementedError

    def _levels(self, index: int, values: np.ndarray, exact: Exact) -> np.ndarray:
        """Strip ``index``'s values as output levels, put in place; the clipped ones
        counted (and told of after the last strip)."""
        level = self.image.levels(values, exact=exact)
        self._place(index, level.pixels, level.clipped)
        return level.pixels

    def _place(self, index: int, levels: np.ndarray, clipped: int) -> None:
        """Put strip ``index``'s levels in place and count its clipped values."""
        top, bottom = self.out[index]
        self.pixels[:, top:bottom] = levels
        self.clipped += clipped
        if index == len(self.strips) - 1 and self.clipped:
            top_level = self.image.max_value
            self.notices.append(f"{self.clipped} values outside 0..{top_level} were clipped")

    def rows(self) -> Rows:
        """The levels as strips, each handed on as soon as it is done."""

        def strips() -> Iterator[np.ndarray]:
            for index, (top, bottom) in enumerate(self.out):
                self.done.through(index, self._strip)
                yield self.pixels[:, top:bottom]

        return Rows(self.pixels.shape, self.pixels.dtype.type, strips)

    def checks(self) -> list[Check]:
        """Every strip done, then the figures of the comparisons."""
        self.done.all(self._strip)
        return [comparison.check() for comparison in self.comparisons]


class _LumaStrips(_Strips):
    """The luma of an 8/16-bit image: each strip's luma rounded (exactly) to levels and
    compared with the float64 formula and, for 8-bit BT.601, the levels with
    Pillow's ``convert("L")`` of the same rows; then the float luma is let go."""

    def __init__(self, image: LoadedImage, triple: tuple[float, float, float],
                 strips: list[tuple[int, int]], notices: list[str]) -> None:  # fmt: skip
        shape = (1, *image.size)
        super().__init__(image, shape, strips, strips, notices)
        self.triple = triple
        self.formula = _luma_comparison(image)
        self.comparisons.append(self.formula)
        self.pillow: Comparison | None = None
        if triple == parse_grayscale_weights("bt601") and image.kind == "uint8":
            self.pillow = Comparison(name="8-bit output", reference="Pillow convert('L')",
                                     tolerance=1, peak=image.peak,
                                     layout=image.size)  # fmt: skip
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


# ------------------------------------------------------------------ gradient


@dataclass(frozen=True)
class GradientOptions(Command):
    """F1 and F2 of SPEC section 1 on the gray image or each RGB channel."""

    name: ClassVar[str] = "gradient"
    padding: str = "zeros"
    on: str = "gray"

    def __post_init__(self) -> None:
        _one_of(self.padding, PADDING_MODES, "padding")
        _one_of(self.on, GRADIENT_BASES, "on")

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
        alpha = _alpha_levels(image)
        for kind, what in (
            ("dy", "vertical forward difference X[i+1,j] - X[i,j]"),
            ("dx", "horizontal forward difference X[i,j+1] - X[i,j]"),
            ("gradient", "magnitude sqrt(dy^2 + dx^2)"),
        ):
            result.outputs[kind] = Output(maps.rows(kind, bits), maps.rows(kind), what,
                                          alpha=alpha)  # fmt: skip
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
        self.strips = _strips(base.shape[1], base.shape[0] * base.shape[2] * 4)
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
        checks = {name: Comparison(name=name, reference="slicing differences", tolerance=0.0,
                                   peak=self.peak, layout=(height, width))
                  for name in ("dy", "dx")}  # fmt: skip
        for rows in self.strips:
            maps = self._maps(rows)
            ref_dy, ref_dx = ref.forward_differences(self.base, self.padding, rows=rows)
            checks["dy"].update(maps["dy"], ref_dy, top=rows[0])
            checks["dx"].update(maps["dx"], ref_dx, top=rows[0])
            self.largest_difference = max(self.largest_difference, float(np.abs(maps["dy"]).max()),
                                          float(np.abs(maps["dx"]).max()))  # fmt: skip
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


# ------------------------------------------------------------------- avgpool


@dataclass(frozen=True)
class AvgpoolOptions(Command):
    """k x k average pooling as a stride-k convolution (SPEC section 2)."""

    name: ClassVar[str] = "avgpool"
    rows_once: ClassVar[bool] = True
    kernel_size: int = 2
    edge: str = "drop"

    def __post_init__(self) -> None:
        k = self.kernel_size
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise CnnFiltersError(f"kernel size must be a positive int, got {k!r}")
        _one_of(self.edge, EDGE_MODES, "edge")

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
            result.notices.append(f"the {self.kernel_size}x{self.kernel_size} window holds "
                                  "the whole image: one block")  # fmt: skip
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
            mean = Comparison(name="block mean", reference="reshape-mean (float64)",
                              tolerance=float32_tolerance(image.peak), peak=image.peak,
                              layout=tuple(pooled.shape[-2:]))  # fmt: skip
            # In strips of whole windows: output rows first..stop read input rows k*first..k*stop.
            out_rows = pooled.shape[1]
            for first, stop in _strips(out_rows, image.channels * image.size[1] * 8 * k):
                rows = image.pixels[:, k * first : k * stop if stop < out_rows else None]
                mean.update(pooled[:, first:stop], ref.block_mean(rows, k, self.edge), top=first)
            mean.add_shape(pooled.shape)
            return [mean.check()]

        result.verify = verify
        size = self.kernel_size
        pixels = Rows(levels.pixels.shape, levels.pixels.dtype.type, lambda: iter([levels.pixels]))
        return Output(pixels, pooled, f"{size}x{size} average pooling, edge={self.edge}",
                      alpha=_pooled_alpha(image, k, self.edge),
                      colorimetric=True)  # fmt: skip


def _pooled_alpha(image: LoadedImage, k: int, edge: str) -> np.ndarray | None:
    """Alpha, pooled by the same convolution as the colour channels and rounded exactly."""
    if image.alpha is None:
        return None
    alpha = ops.avgpool(image.alpha[np.newaxis], k, edge)
    levels = quantize(alpha, image.bit_depth)
    exact = block_mean_exact(image.alpha[np.newaxis], k, alpha.shape, image.peak)
    correct_ties(levels, alpha, exact, image.max_value)
    return levels[0]


class _PoolStrips(_Strips):
    """k x k average pooling of an 8/16-bit image, a strip of whole windows at a time:
    pooled by the engine, rounded exactly to levels, compared with the
    reshape-mean and (8-bit) with Pillow's ``reduce`` of the same rows. With
    ``--edge drop`` the last rows that make no whole window are read all the
    same (a streamed file is checked to its end) and dropped.
    """

    def __init__(self, image: LoadedImage, k: int, edge: str, shape: tuple[int, int, int],
                 notices: list[str]) -> None:  # fmt: skip
        height, width = image.size
        # Input strips of whole windows (about _STRIP_BYTES of float32 each). A last
        # strip of fewer than k rows (a partial window, or rows to drop) joins the
        # one before: every strip then holds a window's height, as the image does.
        windows = max(1, _STRIP_BYTES // max(1, 4 * image.channels * width * k))
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
        self.mean = Comparison(name="block mean", reference="reshape-mean (float64)",
                               tolerance=float32_tolerance(peak), peak=peak,
                               layout=shape[1:])  # fmt: skip
        self.mean.add_shape(shape)
        self.comparisons.append(self.mean)
        self.pillow: Comparison | None = None
        if image.kind == "uint8":
            self.pillow = Comparison(name="8-bit output", reference=f"Pillow reduce({k})",
                                     tolerance=1, peak=peak, layout=shape[1:])  # fmt: skip
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


# ------------------------------------------------------------------- commute


@dataclass(frozen=True)
class CommuteOptions(Command):
    """Both orders of each activation and max pooling (SPEC section 4)."""

    name: ClassVar[str] = "commute"
    activations: tuple[str, ...] = tuple(ACTIVATIONS)
    kernel_size: int = 2
    stride: int | None = None
    on: str = "gradient"

    def __post_init__(self) -> None:
        names = tuple(dict.fromkeys(get_activation(n).name for n in self.activations))
        if not names:
            raise CnnFiltersError("commute needs at least one activation")
        object.__setattr__(self, "activations", names)
        for what, value in (("kernel size", self.kernel_size), ("stride", self.stride or 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise CnnFiltersError(f"{what} must be a positive int, got {value!r}")
        _one_of(self.on, COMMUTE_INPUTS, "on")

    def outputs(self) -> list[str]:
        parts = ("act-of-pool", "pool-of-act", "diff")
        return [f"{a}.{part}" for a in self.activations for part in parts]

    def options(self) -> dict[str, Any]:
        return {**super().options(), "activations": list(self.activations)}

    def run(self, image: LoadedImage) -> Result:
        """Both orders of activation and max pooling, per activation, with counterexamples."""
        result = Result()
        x = _commute_input(image, self.on)
        units: dict[str, float] = {}
        for name in self.activations:
            outcome = ops.commute(x, get_activation(name), self.kernel_size, self.stride)
            result.checks.append(_commute_check(outcome))
            # Only --raw reads the float values: they are made again by strips then,
            # not held until the run ends (two float32 maps and a float64 one for each
            # activation: 0.9 GB for 12 MP of gradients and the 13 activations).
            orders = _CommuteOrders(x, outcome)
            for suffix, values, what in (
                ("act-of-pool", _held_rows(outcome.act_of_pool), f"{name}(maxpool(x))"),
                ("pool-of-act", _held_rows(outcome.pool_of_act), f"maxpool({name}(x))"),
                ("diff", _held_rows(outcome.act_of_pool, outcome.pool_of_act),
                 f"{name}(maxpool(x)) - maxpool({name}(x))"),
            ):  # fmt: skip
                # Drawn a strip at a time: the float64 difference, its mosaic and its
                # absolute values were each a whole map (48 MB for 12 MP of gradients).
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
        step = max(1, _STRIP_BYTES // max(1, channels * width * np.dtype(dtype).itemsize))

        def strips() -> Iterator[np.ndarray]:
            for first in range(0, height, step):
                stop = min(height, first + step)
                if order == "act-of-pool":
                    yield self._act_of_pool(first, stop)
                elif order == "pool-of-act":
                    yield self._pool_of_act(first, stop)
                else:
                    yield (self._act_of_pool(first, stop).astype(np.float64)
                           - self._pool_of_act(first, stop).astype(np.float64))  # fmt: skip

        return Rows(self.shape, dtype, strips)

    def _inputs(self, first: int, stop: int) -> np.ndarray:
        """The input rows that output rows ``first..stop`` pool."""
        return self.x[:, first * self.stride[0] : (stop - 1) * self.stride[0] + self.kernel[0]]

    def _act_of_pool(self, first: int, stop: int) -> np.ndarray:
        return self.activation(max_pool2d(self._inputs(first, stop), self.kernel, self.stride))

    def _pool_of_act(self, first: int, stop: int) -> np.ndarray:
        return max_pool2d(self.activation(self._inputs(first, stop)), self.kernel, self.stride)


def _held_rows(values: np.ndarray, minus: np.ndarray | None = None) -> Rows:
    """A held ``(C, H, W)`` map as strips of rows; with ``minus``, the difference of the
    two in float64 (as :attr:`~cnnfilters.ops.CommuteResult.difference`)."""
    channels, height, width = values.shape
    dtype = values.dtype if minus is None else np.dtype(np.float64)
    step = max(1, _STRIP_BYTES // max(1, channels * width * dtype.itemsize))

    def strips() -> Iterator[np.ndarray]:
        for first in range(0, height, step):
            strip = values[:, first : first + step]
            if minus is None:
                yield strip
            else:
                yield strip.astype(np.float64) - minus[:, first : first + step].astype(np.float64)

    return Rows(values.shape, dtype.type, strips)


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
        outcome.act_of_pool, outcome.pool_of_act, name=act.name,
        reference="maxpool(sigma(x))", tolerance=0.0 if expected_equal else math.inf,
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
    )  # fmt: skip
    return dataclasses.replace(check, passed=outcome.passed)


# ------------------------------------------------------------------ convolve


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
    on: str = "gray"
    normalize: bool = False

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
            raise CnnFiltersError(f"padding must be 'same' or an int >= 0, got {self.padding!r}")
        _one_of(self.padding_mode, PADDING_MODES, "padding mode")
        _one_of(self.on, GRADIENT_BASES, "on")
        if not (math.isfinite(self.bias) and abs(self.bias) <= FLOAT32_MAX):
            raise CnnFiltersError(
                f"bias must be a finite number within float32's range (+-{FLOAT32_MAX:.4g}), "
                f"got {self.bias!r}"
            )
        if self.normalize and abs(float(kernel.sum())) < 1e-12:
            raise CnnFiltersError("cannot normalize: the kernel's weights sum to 0")

    def outputs(self) -> list[str]:
        return ["convolve"]

    def kernels(self) -> list[tuple[str, np.ndarray]]:
        kernel = self.kernel
        if kernel.ndim == 2:
            return [("kernel", kernel)]
        return [(f"w[{o}, {c}]", kernel[o, c]) for o in range(min(kernel.shape[0], 4))
                for c in range(min(kernel.shape[1], 3))]  # fmt: skip

    def options(self) -> dict[str, Any]:
        return {**super().options(), "kernel": self.kernel.tolist()}

    def run(self, image: LoadedImage) -> Result:
        result = Result()
        base = gray_levels(image) if self.on == "gray" else image.pixels
        weight, groups = self._weight(base.shape[0])
        kh, kw = weight.shape[-2:]
        pad = same_padding(weight.shape) if self.padding == "same" else int(self.padding)
        bias = self.bias
        biases = np.full(weight.shape[0], bias, dtype=np.float32) if bias else None
        geometry = {"stride": self.stride, "padding": pad, "padding_mode": self.padding_mode,
                    "groups": groups}  # fmt: skip
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
        comparison = Comparison(name="convolution", reference="direct correlation (float64)",
                                tolerance=float32_tolerance(scale), peak=image.peak,
                                layout=out.shape[-2:])  # fmt: skip
        comparison.add_shape(out.shape)
        # The reference a strip of output rows at a time, from the input rows under
        # them: its float64 copy of the padded input and its result were each a whole
        # image (12 MP, gray, 3 x 3: 565 MB at the peak of the command).
        rows, width = out.shape[-2:]
        step = max(1, _STRIP_BYTES // max(1, 8 * width * (base.shape[0] * self.stride + len(out))))
        for first in range(0, rows, step):
            stop = min(rows, first + step)
            expected = ref.direct_correlation(base, weight, biases, rows=(first, stop), **geometry)
            comparison.update(out[:, first:stop], expected, top=first)
        result.checks.append(comparison.check())
        pixels, mapping = _drawn(out, image)
        result.outputs["convolve"] = Output(pixels, out, f"convolution with a {kh}x{kw} kernel")
        result.info.update(kernel=weight.tolist() if weight.size <= 81 else list(weight.shape),
                           weight_shape=list(weight.shape), bias=bias, on=self.on,
                           normalized=self.normalize, image=mapping, **geometry)  # fmt: skip
        return result

    def check_output_size(self, image: LoadedImage, max_pixels: int) -> None:
        """Padding can make the result far larger than the image (a 64 x 64 image
        padded by 20,000 is 1.6 gigapixels)."""
        kh, kw = self.kernel.shape[-2:]
        pad = same_padding(self.kernel.shape) if self.padding == "same" else int(self.padding)
        height, width = image.size
        rows = max(0, (height + 2 * pad - kh) // self.stride + 1)
        cols = max(0, (width + 2 * pad - kw) // self.stride + 1)
        channels = self.kernel.shape[0] if self.kernel.ndim == 4 else (
            1 if self.on == "gray" else image.channels)  # fmt: skip
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


def _drawn(out: np.ndarray, image: LoadedImage) -> tuple[np.ndarray, str]:
    """A convolution's result as levels: signed around mid-gray, as it is, or scaled."""
    low, high = float(out.min(initial=0.0)), float(out.max(initial=0.0))
    if low < 0:
        pixels, units = signed_mosaic(_held_rows(out), gap=2, bit_depth=image.bit_depth)
        mid = 1 << (image.bit_depth - 1)
        return pixels, f"signed: value = (pixel - {mid}) * {units:.6g}"
    shown = mosaic(out, gap=2)
    if high <= image.max_value + 0.5 and image.kind in ("uint8", "uint16"):
        return quantize(shown, image.bit_depth), "pixel = value (rounded)"
    pixels, units = unsigned_to_image(shown, image.bit_depth)
    return pixels, f"value = pixel * {units:.6g}"


COMMANDS: tuple[type[Command], ...] = (
    GrayscaleOptions,
    GradientOptions,
    AvgpoolOptions,
    CommuteOptions,
    ConvolveOptions,
)


def command_named(name: str, **options: Any) -> Command:
    """The command called ``name`` with ``options`` (validated)."""
    for command in COMMANDS:
        if command.name == name:
            return command(**options)
    raise CnnFiltersError(f"unknown command {name!r}; choose from "
                          f"{', '.join(c.name for c in COMMANDS)}")  # fmt: skip


# --------------------------------------------------------------------- learn


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
        _one_of(self.what, LEARN_TARGETS, "what to learn")
        _one_of(self.on, GRADIENT_BASES, "on")
        _one_of(self.optimizer, OPTIMIZERS, "optimizer")
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
        _in_range(self.steps, 1, 1_000_000, "--steps")
        _in_range(self.patches, 1, 100_000, "--patches")
        _in_range(self.seed, 0, 2**63 - 1, "--seed")
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
        from .learn import Layer

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
            return [_as_rgb(image, notices)]
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
        pool = _WindowPool(self, layer, pad)
        peak, kept = 0.0, []
        for image in images:
            peak = max(peak, image.peak)
            planes = self.planes(image, notices)
            targets = None
            if self.what == "pair":
                kept.append(image)
                targets = _pair_targets(image, after, self.planes(after, []), len(planes))
            for index, plane in enumerate(planes):
                pool.add(plane, None if targets is None else targets[index])
        inputs, wanted = pool.draw(truth)
        weight, bias, rank, unknowns = ref.least_squares_conv(
            inputs, wanted, layer.weight_shape[-2:], stride=layer.stride
        )
        if rank < unknowns:
            raise InputError(
                f"the training data do not determine the {unknowns - 1} weights and the bias "
                f"(rank {rank} of {unknowns}): {_why_undetermined(self.what)}"
            )
        from .learn import Problem, train

        training = train(
            Problem(inputs, wanted, layer),
            optimizer=self.optimizer,
            lr=self.lr,
            steps=self.steps,
            tol=self.tol,
            seed=self.seed,
            on_step=on_step,
        )
        learned = Learned(training, training.weight, training.bias, weight, bias, truth,
                          layer.stride, pad, notices=notices)  # fmt: skip
        learned.info.update(patches=len(inputs), patch=pool.side, examples=pool.examples,
                            steps=training.steps, stopped=training.stopped,
                            loss=training.loss, seconds=round(training.seconds, 3),
                            optimizer=training.optimizer, lr=training.lr,
                            momentum=training.momentum,
                            curvature=list(training.curvature))  # fmt: skip
        if pool.small:
            learned.notices.append(
                f"{pool.small} image plane(s) smaller than a training window "
                f"({pool.span} x {pool.span} pixels): not used"
            )
        learned.checks.extend(self._checks(learned, peak, kept[0] if kept else None, after))
        if training.stopped in ("plateau", "steps"):
            learned.notices.append(_stop_notice(training, self.tol))
        return learned

    def _checks(
        self,
        learned: Learned,
        peak: float,
        before: LoadedImage | None,
        after: LoadedImage | None,
    ) -> list[Check]:
        checks = []
        if learned.truth is not None:
            weight, bias = learned.truth
            checks += [
                compare(learned.weight, weight, name="learned weights",
                        reference=f"the construction ({self.label})", tolerance=self.atol),
                compare(learned.bias, bias, name="learned bias",
                        reference="the construction (0)", tolerance=self.atol * peak),
                compare(learned.lstsq_weight, weight, name="least-squares weights",
                        reference=f"the construction ({self.label})", tolerance=1e-6),
            ]  # fmt: skip
        scale = max(1.0, float(np.max(np.abs(learned.lstsq_weight))))
        checks.append(compare(learned.weight, learned.lstsq_weight, name="learned weights",
                              reference="least squares (float64 lstsq)",
                              tolerance=self.atol * scale))  # fmt: skip
        if before is not None and after is not None:
            checks.append(self._refit(learned, before, after))
        return checks

    def _refit(self, learned: Learned, before: LoadedImage, after: LoadedImage) -> Check:
        """The learned kernel run on BEFORE as ``convolve`` runs it, against AFTER."""
        base = self.planes(before, [])
        values = np.concatenate([conv2d(plane, learned.weight.astype(np.float32),
                                        learned.bias.astype(np.float32),
                                        padding=learned.padding) for plane in base])  # fmt: skip
        refit = after.levels(values).pixels
        target = np.concatenate(self.planes(after, []))
        return compare(refit, target, name="refit 8-bit levels" if after.bit_depth == 8
                       else "refit levels", reference="AFTER", tolerance=1.0,
                       peak=float(after.max_value))  # fmt: skip


_LEARN_MAX_K = 15


def _in_range(value: int, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CnnFiltersError(f"{what} must be an int from {low} to {high}, got {value!r}")


def _why_undetermined(what: str) -> str:
    if what == "grayscale":
        return "gray inputs (R = G = B) cannot tell the colour weights apart; give colour images"
    return "the inputs are too flat (constant or too few distinct windows); give richer images"


def _stop_notice(training: Training, tol: float) -> str:
    if training.stopped == "plateau":
        return (f"stopped at step {training.steps}: the loss {training.loss:.3g} stopped "
                "decreasing (the data's floor: rounding noise, or float32's), above "
                f"--tol {tol:g}")  # fmt: skip
    return f"stopped at --steps {training.steps} with the loss {training.loss:.3g} > --tol {tol:g}"


def _pair_targets(
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


class _WindowPool:
    """Training windows, cut from each image plane as it comes.

    Each plane gives up to ``patches`` candidate windows (at random places)
    and its number of possible windows; :meth:`draw` then takes ``patches``
    of them, each plane in proportion to its possible windows, so that the
    result is as if drawn from all images at once while only the candidates
    are kept. Windows are cut from the plane padded as the construction pads
    it (zeros: black), so that each target is the construction's output on
    the whole image there.
    """

    def __init__(self, options: LearnOptions, layer: Layer, pad: int) -> None:
        self.stride, self.pad, self.count = layer.stride, pad, options.patches
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
        padded = np.pad(plane, ((0, 0), (pad, pad), (pad, pad)))
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
            self.targets.append(np.stack([target[:, top : top + side, left : left + side]
                                          for top, left in places]))  # fmt: skip
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
            wanted = np.concatenate([w[:n] for w, n in zip(self.targets, taken, strict=True)
                                     if n]).astype(np.float64)  # fmt: skip
        else:
            wanted = conv2d(inputs, truth[0], truth[1], stride=self.stride)
        return inputs, wanted
