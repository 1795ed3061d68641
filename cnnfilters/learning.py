"""The ``learn`` command's run: read the inputs, train, write the layer and its loss curve.

Not the loop of :mod:`cnnfilters.run` (which runs an image command on each
input by itself): ``learn`` trains one layer on all its inputs together.
It uses the same parts: :func:`~cnnfilters.images.load_image` to read,
:class:`~cnnfilters.commands.LearnOptions` to fit and check,
:func:`~cnnfilters.atomic.atomic_write` and the clobber rule to write, one
:class:`~cnnfilters.report.RunReport`. An input that cannot be read is that
input's error (exit 3); the others are still used.

Files written (all of them, or none), named from the first input's stem (or
``-o STEM``), beside it or in ``--out-dir``:

- ``{stem}.learn-{what}.npz``: the learned layer in torch layout, as
  ``cnnfilters kernels --export`` writes constructions;
- ``{stem}.learn-{what}.loss.png``: the loss at every step, log scale
  (matplotlib, imported only here);
- for a pair, ``{stem}.learn-pair.txt``: the kernel, for ``cnnfilters
  convolve BEFORE --kernel-file FILE --bias B``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .clobber import check_targets
from .commands import Learned, LearnOptions
from .errors import EXIT_IO, CnnFiltersError, OutputError
from .images import LoadedImage, ReadOptions, load_image
from .kernels import Construction, export_constructions
from .outputs import output_complete
from .report import InputReport, RunReport

__all__ = [
    "MAX_WORKING_BYTES",
    "LearnRun",
    "check_working_set",
    "learn",
    "loss_curve_png",
    "named_targets",
    "targets_for",
    "working_bytes",
]


@dataclass
class LearnRun:
    """A finished ``learn``: the report, and the fit (None when nothing could be fitted)."""

    report: RunReport
    learned: Learned | None
    kernels: list[tuple[str, np.ndarray]]


def targets_for(
    options: LearnOptions, first: Path, *, output: Path | None, out_dir: Path | None
) -> dict[str, Path]:
    """The files ``learn`` writes: ``layer`` (.npz), ``curve`` (.png) and, for a pair,
    ``kernel`` (.txt)."""
    if output is not None:
        stem = output.parent / output.name.removesuffix(".npz").removesuffix(".png")
    else:
        stem = (out_dir if out_dir is not None else first.parent) / first.stem
        stem = stem.parent / f"{stem.name}.learn-{options.what}"
    targets = {"layer": Path(f"{stem}.npz"), "curve": Path(f"{stem}.loss.png")}
    if options.what == "pair":
        targets["kernel"] = Path(f"{stem}.txt")
    return targets


def named_targets(targets: dict[str, Path]) -> dict[str, Path]:
    """``targets`` by the names messages give them ("the learned layer", ...)."""
    names = {"layer": "the learned layer", "curve": "the loss curve", "kernel": "the kernel"}
    return {names[key]: path for key, path in targets.items()}


def learn(
    options: LearnOptions,
    inputs: list[Path],
    *,
    read: ReadOptions,
    targets: dict[str, Path],
    force: bool = False,
    skip_existing: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> LearnRun:
    """Read ``inputs``, fit, check, and write ``targets``; never raises for a bad input
    (a working set over :data:`MAX_WORKING_BYTES` is refused before any is read).

    With ``skip_existing`` nothing is done when every target exists whole, and
    targets that exist are replaced otherwise (as ``force`` replaces them).
    """
    check_working_set(options, len(inputs))
    report = RunReport("learn", options=options.options())
    label = _label(options, inputs)
    item = InputReport(label)
    if skip_existing and all(output_complete(target) for target in targets.values()):
        item.skipped = True
        item.notices.append("skipped: every output exists (--skip-existing)")
        report.inputs = [item]
        return LearnRun(report, None, [])
    force = force or skip_existing
    errors: list[InputReport] = []  # unreadable inputs, listed before the fit's entry
    reader = _Reader(inputs, read, errors, item.notices)
    try:
        for path in inputs:  # never an input overwritten
            check_targets({"learn": list(targets.values())}, path, force=force)
        if options.what == "pair":
            images = list(reader)
            if len(images) < 2:
                report.inputs = errors  # each unreadable input has said why
                return LearnRun(report, None, [])
            learned = options.fit(images[:1], images[1], on_step=on_step)
        else:
            # One image at a time: each is cut into windows and let go.
            learned = options.fit(reader, on_step=on_step)
    except CnnFiltersError as exc:
        report.inputs = errors
        if reader.count or not errors:  # else: no input could be read, and each said why
            item.error = str(exc) if str(exc).startswith(label) else f"{label}: {exc}"
            item.exit_code = exc.exit_code
            report.inputs.append(item)
        return LearnRun(report, None, [])
    report.inputs = [*errors, item]
    item.checks.extend(learned.checks)
    item.notices.extend(learned.notices)
    item.info.update(learned.info, **_layers(learned))
    try:
        item.outputs.extend(_write(options, learned, targets, force=force))
    except OutputError as exc:
        item.error, item.exit_code = str(exc), exc.exit_code
    if options.what == "pair" and "kernel" in targets:
        item.notices.append(
            f"reproduce AFTER with: cnnfilters convolve {os.fsdecode(inputs[0])} --kernel-file "
            f"{os.fsdecode(targets['kernel'])} --bias {float(learned.bias[0]):.9g} "
            f"--on {options.on} --map clip"
        )
    return LearnRun(report, learned, _kernels(learned))


# The most memory a learn may take, estimated from its options before any input
# is read: a fit that would need more is refused at once, not after it has read
# its inputs and begun to allocate.
MAX_WORKING_BYTES = 4 << 30


def working_bytes(options: LearnOptions, inputs: int, *, patches: int | None = None) -> int:
    """About the most memory a fit takes (bytes), from its options alone: each input
    plane's candidate windows (float32), then for every training output the
    least-squares design row and the engine's passes over it, about 24 bytes for
    each parameter of the layer and 128 more: an estimate from above of the peak
    measured on each construction. ``patches``: instead of the options' own."""
    patches = options.patches if patches is None else patches
    layer = options.layer()[0]
    shape = layer.weight_shape
    parameters = math.prod(shape) + shape[0]
    side = max(1, 32 // layer.stride)
    span = layer.stride * (side - 1) + shape[-1]
    planes = inputs * (1 if options.on == "gray" and options.what != "grayscale" else 3)
    candidates = planes * patches * span * span * shape[1] * 4
    return candidates + patches * side * side * (parameters * 24 + 128)


def check_working_set(options: LearnOptions, inputs: int) -> None:
    """Refuse a fit whose working set would pass :data:`MAX_WORKING_BYTES`, naming the
    most patches that fit."""
    need = working_bytes(options, inputs)
    if need <= MAX_WORKING_BYTES:
        return
    most = MAX_WORKING_BYTES // working_bytes(options, inputs, patches=1)
    raise CnnFiltersError(
        f"learn {options.label} with --patches {options.patches:,} would take about "
        f"{need / 2**30:.1f} GiB (at most {MAX_WORKING_BYTES / 2**30:.0f} GiB): "
        f"use --patches {most:,} or fewer"
    )


class _Reader:
    """The inputs decoded one at a time; an unreadable one becomes an error entry."""

    def __init__(
        self, paths: list[Path], options: ReadOptions, errors: list[InputReport], notices: list[str]
    ) -> None:
        self.paths, self.options, self.errors, self.notices = paths, options, errors, notices
        self.count = 0

    def __iter__(self) -> Iterator[LoadedImage]:
        for path in self.paths:
            try:
                image = load_image(path, self.options)
            except CnnFiltersError as exc:
                self.errors.append(
                    InputReport(
                        os.fsdecode(path), error=str(exc), exit_code=max(exc.exit_code, EXIT_IO)
                    )
                )
                continue
            self.count += 1
            self.notices.extend(f"{image.path}: {notice}" for notice in image.notices)
            yield image


def _label(options: LearnOptions, inputs: list[Path]) -> str:
    names = [os.fsdecode(path) for path in inputs]
    if options.what == "pair" and len(names) == 2:
        return f"pair {names[0]} -> {names[1]}"
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{options.label} on {shown}"


def _layers(learned: Learned) -> dict[str, object]:
    """The layers side by side, for the report (nested lists)."""
    layers: dict[str, object] = {
        "learned": {"weight": learned.weight.tolist(), "bias": learned.bias.tolist()},
        "least_squares": {
            "weight": learned.lstsq_weight.tolist(),
            "bias": learned.lstsq_bias.tolist(),
        },
        "stride": learned.stride,
        "padding": learned.padding,
    }
    if learned.truth is not None:
        layers["construction"] = {
            "weight": learned.truth[0].tolist(),
            "bias": learned.truth[1].tolist(),
        }
    return layers


def _kernels(learned: Learned) -> list[tuple[str, np.ndarray]]:
    """Learned kernels beside the true (or least-squares) ones, for the visual report."""
    beside = learned.truth[0] if learned.truth is not None else learned.lstsq_weight
    name = "construction" if learned.truth is not None else "least squares"
    pairs = []
    for o in range(learned.weight.shape[0]):
        for c in range(learned.weight.shape[1]):
            pairs.append((f"learned w[{o}, {c}]", learned.weight[o, c]))
            pairs.append((f"{name} w[{o}, {c}]", beside[o, c]))
    return pairs


def _write(
    options: LearnOptions, learned: Learned, targets: dict[str, Path], *, force: bool
) -> list[str]:
    layer = Construction(
        f"learned-{options.what}",
        f"{options.label}, learned by {learned.training.optimizer} in "
        f"{learned.training.steps} steps",
        learned.weight.astype(np.float32),
        learned.bias.astype(np.float32),
        stride=learned.stride,
        padding=learned.padding,
    )
    files = {
        "layer": export_constructions([layer], "npz"),
        "curve": loss_curve_png(learned.training.losses, title=options.label, tol=options.tol),
    }
    if "kernel" in targets:
        text = io.StringIO()
        np.savetxt(text, learned.weight[0, 0], fmt="%.9g")
        files["kernel"] = text.getvalue().encode()
    # All of them or none: a file that cannot be written (a full disk) takes the
    # ones written before it away, so that a rerun starts from a clean slate.
    written: list[Path] = []
    try:
        for key, data in files.items():
            atomic_write(targets[key], lambda handle, data=data: handle.write(data), replace=force)
            written.append(targets[key])
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return [os.fsdecode(path) for path in written]


def loss_curve_png(losses: list[float], *, title: str, tol: float | None = None) -> bytes:
    """The loss at every step on a log scale, as PNG bytes (matplotlib, Agg, no pyplot)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    steps = np.arange(1, len(losses) + 1)
    values = np.maximum(np.asarray(losses, dtype=np.float64), np.finfo(np.float64).tiny)
    axes.semilogy(steps, values, color="#1f6feb", linewidth=1.4, label="loss")
    if tol:
        axes.axhline(tol, color="#888888", linestyle="--", linewidth=1, label=f"--tol {tol:g}")
        axes.legend(loc="upper right", frameon=False)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (fraction of the targets' variance)")
    axes.set_title(f"cnnfilters learn {title}", fontsize=11)
    axes.grid(True, which="major", alpha=0.35)
    axes.set_xlim(1, max(2, len(losses)))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
