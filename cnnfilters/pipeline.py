"""What each command does to one image, and the loop that runs it over files.

A *runner* takes a :class:`~cnnfilters.images.LoadedImage` and options, calls
one operation of :mod:`cnnfilters.ops`, checks it against its references
from :mod:`cnnfilters.reference` with :func:`~cnnfilters.report.compare`,
and returns the images to write. :func:`process` plans the output names,
refuses to clobber anything, writes atomically and gathers the report.
The command line only parses options and renders what comes back.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import ops, rounding
from . import reference as ref
from .activations import ACTIVATIONS, get_activation
from .engine import conv2d
from .errors import EXIT_IO, CnnFiltersError, OutputError
from .images import (
    PNG_COMPRESS_LEVEL,
    LoadedImage,
    ReadOptions,
    Rows,
    load_frames,
    mosaic,
    quantize,
    save_array,
    save_image,
    signed_to_image,
    unsigned_to_image,
)
from .kernels import parse_grayscale_weights, same_padding
from .report import Check, Comparison, InputReport, RunReport, compare
from .rounding import Exact, block_mean_exact, luma_exact

__all__ = ["COMMANDS", "Output", "Result", "plan_outputs", "process"]

_EPS32 = float(np.finfo(np.float32).eps)


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
    """What a runner returns for one input."""

    outputs: dict[str, Output] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    # Checks left to run while the outputs are being written (in other threads).
    verify: Callable[[], list[Check]] | None = None


def _levels(
    image: LoadedImage, values: np.ndarray, result: Result, exact: Exact | None = None
) -> np.ndarray:
    pixels, note = image.levels(values, exact)
    if note:
        result.notices.append(note)
    return pixels


def _alpha_levels(image: LoadedImage, alpha: np.ndarray | None = None) -> np.ndarray | None:
    """The kept alpha channel (or a pooled one) as output levels, or None."""
    alpha = image.alpha if alpha is None else alpha
    return None if alpha is None else quantize(alpha, image.bit_depth)


def _as_rgb(image: LoadedImage, notices: list[str]) -> np.ndarray:
    if image.channels == 3:
        return image.pixels
    notices.append("gray input: used as R = G = B")
    return np.repeat(image.pixels, 3, axis=0)


def _gray_levels(image: LoadedImage) -> np.ndarray:
    """The grayscale image as ``grayscale`` writes it: integer levels, as float32."""
    if image.channels == 1:
        return image.pixels
    triple = parse_grayscale_weights("bt601")
    pixels, _ = image.levels(ops.grayscale(image.pixels, triple),
                             exact=luma_exact(image.pixels, triple, image.peak))  # fmt: skip
    return pixels.astype(np.float32)


def run_grayscale(image: LoadedImage, *, weights: str = "bt601") -> Result:
    """Luma by a 1x1 conv; checked against the float64 formula and Pillow's ``convert("L")``.

    Computed in strips of rows (in cache); the checks run while the output
    is being written.
    """
    result = Result()
    triple = parse_grayscale_weights(weights)
    rgb = _as_rgb(image, result.notices)
    height, width = image.size
    strips = _strips(height, 3 * width * 4)
    luma_parts = [ops.grayscale(rgb, triple, rows=rows) for rows in strips]
    if image.kind in ("uint8", "uint16"):
        levels = [
            image.levels(part, exact=luma_exact(rgb[:, first:stop], triple, image.peak))
            for (first, stop), part in zip(strips, luma_parts, strict=True)
        ]
        pixels = np.concatenate([part for part, _ in levels], axis=1)
        result.notices.extend(_merge_clip_notes([note for _, note in levels]))
    else:  # a stated scale must be one scale for the whole image
        pixels = _levels(image, np.concatenate(luma_parts, axis=1), result)

    def verify() -> list[Check]:
        peak = image.peak
        formula = Comparison(name="luma", reference="float64 formula",
                             tolerance=float32_tolerance(peak), peak=peak,
                             layout=(height, width))  # fmt: skip
        for (first, stop), luma in zip(strips, luma_parts, strict=True):
            formula.update(luma, ref.luma(rgb[:, first:stop], triple), top=first)
        formula.add_shape((1, height, width))
        checks = [formula.check()]
        if triple == parse_grayscale_weights("bt601") and image.kind == "uint8":
            checks.append(
                compare(pixels, ref.pillow_grayscale(image.pil), name="8-bit output",
                        reference="Pillow convert('L')", tolerance=1, peak=peak)
            )  # fmt: skip
        return checks

    result.verify = verify
    luma = Rows((1, height, width), np.float32, lambda: iter(luma_parts))
    result.outputs["grayscale"] = Output(
        pixels, luma, f"luma, weights {triple}", alpha=_alpha_levels(image), colorimetric=True
    )
    result.info["weights"] = list(triple)
    return result


def _merge_clip_notes(notes: list[str | None]) -> list[str]:
    """One notice for the values clipped in every strip."""
    counts = [n for n in notes if n]
    if not counts or "clipped" not in counts[0]:
        return counts[:1]
    total = sum(int(n.split()[0]) for n in counts)
    return [f"{total} values" + counts[0].split(" values", 1)[1]]


# Rows of float32 a strip of a large image holds: a few MB, so that memory
# stays bounded by the decoded image whatever its size.
_STRIP_BYTES = 2 << 20


# Gradient maps up to this size (all three together) are kept from the checking
# pass for writing instead of being computed again: 2.8 MP of gray, or 0.9 MP
# with --on rgb. Larger images compute them again while writing, so that their
# memory stays near the size of the decoded image.
_KEEP_BYTES = 32 << 20


def _strips(height: int, row_bytes: int) -> list[tuple[int, int]]:
    step = max(8, _STRIP_BYTES // max(1, row_bytes))
    return [(first, min(first + step, height)) for first in range(0, height, step)]


def run_gradient(image: LoadedImage, *, padding: str = "zeros", on: str = "gray") -> Result:
    """F1 and F2 as one depthwise conv; checked against slicing differences, exactly.

    Works in strips of rows: a first pass checks every strip against the
    reference and finds the maps' ranges. Images whose maps fit in
    ``_KEEP_BYTES`` keep the first pass's strips for writing; larger ones
    compute each output again, strip by strip, while it is written, so that
    memory stays near the size of the decoded image however large it is.
    """
    result = Result()
    if on == "gray":
        base = _gray_levels(image)
        if image.channels == 3:
            result.notices.append("gradients of the BT.601 grayscale image (integer levels)")
    else:
        base = image.pixels
        if image.channels == 1:
            result.notices.append("gray input: --on rgb has one channel")
    channels, height, width = base.shape
    strips = _strips(height, channels * width * 4)
    peak = image.peak
    checks = {
        name: Comparison(
            name=name,
            reference="slicing differences",
            tolerance=0.0,
            peak=peak,
            layout=(height, width),
        )
        for name in ("dy", "dx")
    }
    # dy, dx and the magnitude: three float32 maps the size of ``base``.
    keep = 3 * 4 * base.size <= _KEEP_BYTES
    kept: list[dict[str, np.ndarray]] = []
    largest_difference = largest_magnitude = 0.0
    for rows in strips:
        dy, dx = ops.gradients(base, padding, rows=rows)
        ref_dy, ref_dx = ref.forward_differences(base, padding, rows=rows)
        checks["dy"].update(dy, ref_dy, top=rows[0])
        checks["dx"].update(dx, ref_dx, top=rows[0])
        magnitude = _magnitude(dy, dx)
        largest_difference = max(largest_difference, float(np.abs(dy).max()),
                                 float(np.abs(dx).max()))  # fmt: skip
        largest_magnitude = max(largest_magnitude, float(magnitude.max()))
        if keep:
            kept.append({"dy": dy, "dx": dx, "gradient": magnitude})
    for comparison in checks.values():
        comparison.add_shape(base.shape)
        result.checks.append(comparison.check())

    bits = image.bit_depth
    mid, top = 1 << (bits - 1), (1 << bits) - 1
    # One scale for both signed maps, so that equal differences look equal.
    units = largest_difference / (mid - 1) if largest_difference else 1.0
    mag_units = largest_magnitude / top if largest_magnitude else 1.0

    def rows_of(kind: str, as_levels: bool) -> Rows:
        def maps() -> Iterator[np.ndarray]:
            if kept:
                yield from (strip[kind] for strip in kept)
                return
            for rows in strips:
                dy, dx = ops.gradients(base, padding, rows=rows)
                yield dy if kind == "dy" else dx if kind == "dx" else _magnitude(dy, dx)

        def strips_of() -> Iterator[np.ndarray]:
            for values in maps():
                if not as_levels:
                    yield values
                elif kind == "gradient":
                    yield unsigned_to_image(values, bits, mag_units)[0]
                else:
                    yield signed_to_image(values, bits, units)[0]

        dtype = (np.uint16 if bits == 16 else np.uint8) if as_levels else np.float32
        return Rows(base.shape, dtype, strips_of)

    alpha = _alpha_levels(image)
    for kind, what in (
        ("dy", "vertical forward difference X[i+1,j] - X[i,j]"),
        ("dx", "horizontal forward difference X[i,j+1] - X[i,j]"),
        ("gradient", "magnitude sqrt(dy^2 + dx^2)"),
    ):
        result.outputs[kind] = Output(rows_of(kind, True), rows_of(kind, False), what, alpha=alpha)
    result.info.update(
        padding=padding,
        on=on,
        signed_maps=f"value = (pixel - {mid}) * {units:.6g}",
        magnitude_map=f"value = pixel * {mag_units:.6g}",
        units_per_level=units,
        magnitude_units_per_level=mag_units,
    )
    return result


def _magnitude(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    return np.sqrt(np.square(dy) + np.square(dx))


def run_avgpool(image: LoadedImage, *, kernel_size: int = 2, edge: str = "drop") -> Result:
    """Stride-k conv; checked against reshape-mean and Pillow's ``Image.reduce``."""
    result = Result()
    k = kernel_size
    pooled = ops.avgpool(image.pixels, k, edge)
    exact = block_mean_exact(image.pixels, k, pooled.shape, image.peak)
    pixels = _levels(image, pooled, result, exact)
    # Alpha is pooled by the same convolution as the colour channels.
    alpha_levels = None
    if image.alpha is not None:
        alpha = ops.avgpool(image.alpha[np.newaxis], k, edge)
        alpha_exact = block_mean_exact(image.alpha[np.newaxis], k, alpha.shape, image.peak)
        alpha_levels = quantize(alpha, image.bit_depth)
        rounding.correct_ties(alpha_levels, alpha, alpha_exact, image.max_value)
        alpha_levels = alpha_levels[0]

    def verify() -> list[Check]:
        peak = image.peak
        mean = Comparison(name="block mean", reference="reshape-mean (float64)",
                          tolerance=float32_tolerance(peak), peak=peak,
                          layout=tuple(pooled.shape[-2:]))  # fmt: skip
        # In strips of whole windows: output rows first..stop read input rows k*first..k*stop.
        out_rows = pooled.shape[1]
        for first, stop in _strips(out_rows, image.channels * image.size[1] * 8 * k):
            rows = image.pixels[:, k * first : k * stop if stop < out_rows else None]
            mean.update(pooled[:, first:stop], ref.block_mean(rows, k, edge), top=first)
        mean.add_shape(pooled.shape)
        checks = [mean.check()]
        if image.kind == "uint8":
            # Pillow's reduce premultiplies RGBA by its alpha; the engine pools every
            # channel alike, so alpha is reduced by Pillow as an image of its own.
            sources = [image.pil]
            ours = pixels
            if alpha_levels is not None:
                sources.append(Image.fromarray(quantize(image.alpha, 8)))
                ours = np.concatenate([pixels, alpha_levels[np.newaxis]])
            height, width = image.size
            box = (0, 0, width - width % k, height - height % k) if edge == "drop" else None
            expected = np.concatenate(
                [ref.pillow_reduce(source.crop(box) if box else source, k) for source in sources]
            )
            checks.append(
                compare(ours, expected, name="8-bit output", reference=f"Pillow reduce({k})",
                        tolerance=1, peak=peak)
            )  # fmt: skip
        return checks

    result.verify = verify
    height, width = image.size
    if edge == "drop" and (height % k or width % k):
        result.notices.append(
            f"dropped the last {height % k} rows and {width % k} columns (not a whole window)"
        )
    result.outputs[f"avgpool{k}"] = Output(
        pixels, pooled, f"{k}x{k} average pooling, edge={edge}", alpha=alpha_levels,
        colorimetric=True,
    )  # fmt: skip
    result.info.update(kernel_size=k, stride=k, edge=edge)
    return result


def run_convolve(
    image: LoadedImage,
    *,
    kernel: np.ndarray,
    stride: int = 1,
    padding: int | str = "same",
    padding_mode: str = "zeros",
    bias: float = 0.0,
    on: str = "gray",
    normalize: bool = False,
) -> Result:
    """Any kernel through the engine; checked against a direct correlation in float64.

    A 2-D kernel is applied to each channel (``groups = C``); a 4-D
    ``(C_out, C_in, kh, kw)`` tensor must take the input's channels.
    """
    result = Result()
    base = _gray_levels(image) if on == "gray" else image.pixels
    channels = base.shape[0]
    weight = np.asarray(kernel, dtype=np.float32)
    if normalize:
        total = float(weight.sum())
        if abs(total) < 1e-12:
            raise CnnFiltersError("--normalize: the kernel's weights sum to 0")
        weight = weight / np.float32(total)
    if weight.ndim == 2:
        weight, groups = np.tile(weight, (channels, 1, 1, 1)), channels
    elif weight.shape[1] != channels:
        raise CnnFiltersError(
            f"the kernel tensor {tuple(weight.shape)} takes {weight.shape[1]} input channels, "
            f"the image has {channels} (--on {on})"
        )
    else:
        groups = 1
    kh, kw = weight.shape[-2:]
    pad = same_padding(weight.shape) if padding == "same" else int(padding)
    biases = np.full(weight.shape[0], bias, dtype=np.float32) if bias else None
    out = conv2d(base, weight, biases, stride=stride, padding=pad, padding_mode=padding_mode,
                 groups=groups)  # fmt: skip
    expected = ref.direct_correlation(base, weight, biases, stride=stride, padding=pad,
                                      padding_mode=padding_mode, groups=groups)  # fmt: skip
    scale = float(np.abs(weight).sum(axis=(1, 2, 3)).max()) * image.peak + abs(bias)
    result.checks.append(
        compare(out, expected, name="convolution", reference="direct correlation (float64)",
                tolerance=float32_tolerance(scale), peak=image.peak)
    )  # fmt: skip
    shown = mosaic(out, gap=2)
    low, high = float(out.min(initial=0.0)), float(out.max(initial=0.0))
    if low < 0:
        pixels, units = signed_to_image(shown, image.bit_depth)
        mid = 1 << (image.bit_depth - 1)
        mapping = f"signed: value = (pixel - {mid}) * {units:.6g}"
    elif high <= image.max_value + 0.5 and image.kind in ("uint8", "uint16"):
        pixels, mapping = quantize(shown, image.bit_depth), "pixel = value (rounded)"
    else:
        pixels, units = unsigned_to_image(shown, image.bit_depth)
        mapping = f"value = pixel * {units:.6g}"
    result.outputs["convolve"] = Output(pixels, out, f"convolution with a {kh}x{kw} kernel")
    result.info.update(kernel=weight.tolist() if weight.size <= 81 else list(weight.shape),
                       weight_shape=list(weight.shape), stride=stride, padding=pad,
                       padding_mode=padding_mode, groups=groups, bias=bias, on=on,
                       normalized=normalize, image=mapping)  # fmt: skip
    return result


def _commute_input(image: LoadedImage, on: str) -> np.ndarray:
    if on == "gradient":
        dy, dx = ops.gradients(_gray_levels(image))
        return np.concatenate([dy, dx])
    if on == "centered":
        if image.kind in ("uint8", "uint16"):
            low, high = 0.0, float(image.max_value)
        else:
            low, high = float(image.pixels.min()), float(image.pixels.max())
        half = (high - low) / 2 or 1.0
        return ((image.pixels - (low + half)) / half).astype(np.float32)
    return image.pixels


def run_commute(
    image: LoadedImage,
    *,
    activations: Sequence[str] = tuple(ACTIVATIONS),
    kernel_size: int = 2,
    stride: int | None = None,
    on: str = "gradient",
) -> Result:
    """Both orders of activation and max pooling, per activation, with counterexamples."""
    result = Result()
    x = _commute_input(image, on)
    units: dict[str, float] = {}
    for name in activations:
        act = get_activation(name)
        outcome = ops.commute(x, act, kernel_size, stride)
        counterexample = outcome.counterexample
        synthetic = None
        if counterexample is None and act.monotonicity != "nondecreasing":
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
                "counterexample": counterexample,
                "synthetic_counterexample": synthetic,
                "min_identity_holds": outcome.min_identity_holds,
            },
        )  # fmt: skip
        result.checks.append(replace(check, passed=outcome.passed))
        for suffix, values, what in (
            ("act-of-pool", outcome.act_of_pool, f"{act.name}(maxpool(x))"),
            ("pool-of-act", outcome.pool_of_act, f"maxpool({act.name}(x))"),
            ("diff", outcome.difference, f"{act.name}(maxpool(x)) - maxpool({act.name}(x))"),
        ):
            pixels, scale = signed_to_image(mosaic(values, gap=2), 8)
            result.outputs[f"{act.name}.{suffix}"] = Output(pixels, values, what)
            units[f"{act.name}.{suffix}"] = scale
    k, s = outcome.kernel_size, outcome.stride
    result.info.update(
        on=on,
        channels=int(x.shape[0]),
        kernel_size=list(k),
        stride=list(s),
        images="signed maps, 0 at mid-gray 128; value = (pixel - 128) * units_per_level",
        units_per_level=units,
    )
    if on == "gradient":
        result.notices.append("input: dy and dx of the grayscale image (side by side in images)")
    if image.alpha is not None:
        result.notices.append("alpha is not carried to the pooled feature maps")
    return result


@dataclass(frozen=True)
class Command:
    """An image command: its runner and the names of what it writes."""

    name: str
    run: Callable[..., Result]
    names: Callable[[dict[str, Any]], list[str]]


def _commute_names(options: dict[str, Any]) -> list[str]:
    chosen = options.get("activations") or list(ACTIVATIONS)
    return [f"{a}.{part}" for a in chosen for part in ("act-of-pool", "pool-of-act", "diff")]


COMMANDS: dict[str, Command] = {
    "grayscale": Command("grayscale", run_grayscale, lambda o: ["grayscale"]),
    "gradient": Command("gradient", run_gradient, lambda o: ["dy", "dx", "gradient"]),
    "avgpool": Command("avgpool", run_avgpool, lambda o: [f"avgpool{o.get('kernel_size', 2)}"]),
    "commute": Command("commute", run_commute, _commute_names),
    "convolve": Command("convolve", run_convolve, lambda o: ["convolve"]),
}


DEFAULT_NAME = "{stem}.{output}.png"


def output_path(
    source: Path,
    name: str,
    *,
    output: Path | None,
    out_dir: Path | None,
    single: bool,
    frame: int | None = None,
    template: str = DEFAULT_NAME,
) -> Path:
    """Where output ``name`` of ``source`` goes.

    Default ``{stem}.{output}.png`` beside the input (``template`` changes
    it: placeholders ``{stem}``, ``{output}`` and ``{ext}``, the input's
    extension); frame ``i`` of --all-frames is output ``frame{i}.{name}``;
    ``out_dir`` changes the folder; ``output`` is the file itself for a
    one-image command, else the stem (a ``.png`` suffix is dropped) that
    ``.{name}.png`` is appended to.
    """
    if frame is not None:
        name = f"frame{frame}.{name}"
        single = False
    if output is not None:
        if single:
            return output
        stem = output.with_suffix("") if output.suffix.lower() == ".png" else output
        return stem.parent / f"{stem.name}.{name}.png"
    folder = out_dir if out_dir is not None else source.parent
    try:
        filename = template.format(stem=source.stem, output=name, ext=source.suffix.lstrip("."))
    except (KeyError, IndexError, ValueError) as exc:
        raise CnnFiltersError(
            f"--name {template!r} is not a valid template ({exc}); use {{stem}}, {{output}}, "
            "{ext}"
        ) from None
    if "/" in filename or not filename:
        raise CnnFiltersError(f"--name {template!r} must give a file name, got {filename!r}")
    return folder / filename


def output_targets(
    source: Path,
    names: Sequence[str],
    *,
    output: Path | None = None,
    out_dir: Path | None = None,
    raw: bool = False,
    frame: int | None = None,
    template: str = DEFAULT_NAME,
) -> dict[str, list[Path]]:
    """Each output name's file(s): its PNG, and with ``raw`` the ``.npy`` beside it."""
    single = len(names) == 1
    targets = {}
    for name in names:
        png = output_path(source, name, output=output, out_dir=out_dir, single=single,
                          frame=frame, template=template)  # fmt: skip
        targets[name] = [png] + ([png.with_suffix(".npy")] if raw else [])
    return targets


def plan_outputs(
    source: Path,
    names: Sequence[str],
    *,
    output: Path | None = None,
    out_dir: Path | None = None,
    raw: bool = False,
    force: bool = False,
    frame: int | None = None,
    template: str = DEFAULT_NAME,
) -> dict[str, list[Path]]:
    """Map each output name to its target file(s), refusing to clobber.

    An input is never a target (even through a symlink or a hard link); an
    existing file is replaced only with ``force``; a directory never.
    """
    planned = output_targets(source, names, output=output, out_dir=out_dir, raw=raw,
                             frame=frame, template=template)  # fmt: skip
    for targets in planned.values():
        for target in targets:
            if not (target.exists() or target.is_symlink()):
                continue
            try:
                same = os.path.samefile(target, source)
            except OSError:
                same = False
            if same:
                raise OutputError(f"{target}: this is the input file; it is never overwritten")
            if target.is_dir():
                raise OutputError(f"{target}: is a directory")
            if not force:
                raise OutputError(f"{target}: exists (use --force to overwrite)")
    return planned


def _icc_for(output: Output, image: LoadedImage) -> tuple[bytes | None, str | None]:
    """The ICC profile to embed in ``output`` and, when one is left out, why."""
    space = image.icc_space
    if not image.icc_profile:
        return None, None
    fits = {1: "GRAY", 3: "RGB"}.get(output.pixels.shape[0]) == space
    if output.colorimetric and fits:
        return image.icc_profile, None
    if output.colorimetric:
        channels = output.pixels.shape[0]
        return None, f"the {space} ICC profile does not fit a {channels}-channel output: not copied"
    return None, "the ICC profile is not copied to maps of differences (they are not colours)"


def process_image(
    runner: Callable[..., Result],
    image: LoadedImage,
    options: dict[str, Any],
    item: InputReport,
    *,
    output: Path | None,
    out_dir: Path | None,
    force: bool,
    raw: bool,
    compress_level: int,
    frame: int | None = None,
    template: str = DEFAULT_NAME,
    threads: int | None = None,
) -> None:
    """Run one command on one decoded image and write its outputs into ``item``.

    ``frame`` (for --all-frames) goes into the output names.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner(image, **options)
    item.notices.extend(result.notices)
    item.info.update(result.info)
    targets = plan_outputs(image.path, list(result.outputs), output=output, out_dir=out_dir,
                           raw=raw, force=force, frame=frame, template=template)  # fmt: skip
    icc_notes = set()
    jobs = []
    for name, out in result.outputs.items():
        icc, note = _icc_for(out, image)
        if note:
            icc_notes.add(note)
        options = {"alpha": out.alpha, "icc_profile": icc, "compress_level": compress_level}
        jobs.append((out.pixels, targets[name][0], options))

    # The images are encoded in worker threads (deflate releases the GIL) while
    # this thread runs the checks that are left.
    def verify() -> None:
        item.checks.extend(result.checks)
        if result.verify is not None:
            with warnings.catch_warnings(record=True) as more:
                warnings.simplefilter("always")
                item.checks.extend(result.verify())
            caught.extend(more)

    if threads == 1:  # a batch worker: the other workers have the other cores
        errors = [_try(save_image, pixels, target, **kw) for pixels, target, kw in jobs]
        verify()
    else:
        workers = max(1, min(len(jobs), threads or os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            saving = [pool.submit(save_image, pixels, target, **kw) for pixels, target, kw in jobs]
            verify()
            errors = [future.exception() for future in saving]
    # The report lists every file written, even when another one failed.
    item.outputs.extend(os.fsdecode(job[1]) for job, e in zip(jobs, errors, strict=True) if not e)
    for error in errors:
        if error is not None:
            raise error
    item.notices.extend(f"warning: {w.message}" for w in caught)
    for name, out in result.outputs.items():
        npy = targets[name][1:]
        if npy:
            save_array(out.values, npy[0])
            item.outputs.append(os.fsdecode(npy[0]))
    item.notices.extend(sorted(icc_notes))


def _try(function: Callable[..., None], *args: Any, **kwargs: Any) -> BaseException | None:
    """Run ``function``; return its exception (a CnnFiltersError or OSError) instead of raising."""
    try:
        function(*args, **kwargs)
    except (CnnFiltersError, OSError) as exc:
        return exc
    return None


def process(
    command: str,
    paths: Sequence[str | os.PathLike],
    options: dict[str, Any],
    *,
    output: Path | None = None,
    out_dir: Path | None = None,
    force: bool = False,
    raw: bool = False,
    read: ReadOptions | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
    on_input: Callable[[InputReport], None] | None = None,
    template: str = DEFAULT_NAME,
    threads: int | None = None,
) -> RunReport:
    """Run ``command`` on every path; one bad input never stops the others.

    Each input (or each frame, with ``read.all_frames``) becomes one entry
    of the report, with its outputs, checks and notices, or its error.
    ``threads`` bounds the threads that encode one input's images (default:
    one per core; batch workers use one each, the processes being parallel).
    """
    runner = COMMANDS[command].run
    read = read or ReadOptions()
    report = RunReport(command, options=jsonable(options))
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{out_dir}: cannot create the folder ({exc.strerror})") from None
    for raw_path in paths:
        source = Path(raw_path)
        name = os.fsdecode(source)
        items: list[InputReport] = []
        try:
            frames = load_frames(source, read, parallel=threads != 1)
            for image in frames:
                label = name if len(frames) == 1 else f"{name}[frame {image.frame}]"
                item = InputReport(label)
                items.append(item)
                item.notices.extend(image.notices)
                item.info.update(
                    mode=image.mode, format=image.format, bit_depth=image.bit_depth,
                    kind=image.kind, height=image.size[0], width=image.size[1],
                )  # fmt: skip
                if image.damage is not None:
                    item.info["damaged"] = image.damage
                process_image(runner, image, options, item, output=output, out_dir=out_dir,
                              force=force, raw=raw, compress_level=compress_level,
                              frame=image.frame if len(frames) > 1 else None,
                              template=template, threads=threads)  # fmt: skip
        except CnnFiltersError as exc:
            _record_error(items, name, str(exc), max(exc.exit_code, EXIT_IO))
        except MemoryError:
            _record_error(items, name, f"{name}: not enough memory to process this image", EXIT_IO)
        for item in items:
            report.inputs.append(item)
            if on_input is not None:
                on_input(item)
    return report


def _record_error(items: list[InputReport], name: str, message: str, code: int) -> None:
    """Put the error on the entry being processed (a new one if none was started)."""
    if not items or items[-1].error is not None:
        items.append(InputReport(name))
    item = items[-1]
    item.error = message if message.startswith(name) else f"{name}: {message}"
    item.exit_code = code


def jsonable(options: dict[str, Any]) -> dict[str, Any]:
    """Command options as the report records them."""
    return {key: _jsonable(value) for key, value in options.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return os.fsdecode(value)
    return value
