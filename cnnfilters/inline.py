"""Results a notebook shows: one call per construction, its pictures, checks and kernels.

:func:`apply` takes a path, a Pillow image or an array, runs one command on it
exactly as the command line does (the same decoding, computation and
checks), and returns a :class:`Run`: the output images as arrays and Pillow
images, the checks and their verdict, the kernels, the report entry as a
dict, and :meth:`Run.save`, which writes what the command line writes (the
same names, the same clobber rule). In Jupyter a :class:`Run` shows itself
as the visual report does, self-contained (data URIs, nothing from the
network)::

    >>> import cnnfilters
    >>> r = cnnfilters.apply("gradient", "photo.png")    # doctest: +SKIP
    >>> r.passed, [c.name for c in r.checks]           # doctest: +SKIP
    (True, ['dy', 'dx'])

``apply("learn", source, what="gradient")`` trains a conv layer back on the
image and shows the learned kernels beside the construction's, with the
loss curve; ``what="pair"`` takes ``(before, after)``. (The name is not
``run``: :mod:`cnnfilters.run` is the package of the batch loop, which would
hide a function of that name once imported.)
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CnnFiltersError
from .report import InputReport

if TYPE_CHECKING:
    from PIL import Image

    from .commands import Command, Learned
    from .loaded import LoadedImage

__all__ = ["Run", "Runs", "apply"]

IMAGE_COMMANDS = ("grayscale", "gradient", "avgpool", "commute", "convolve")


@dataclass
class Run:
    """One command on one image: its pictures, checks, kernels and report entry."""

    command: str
    report: InputReport
    pictures: dict[str, np.ndarray] = field(default_factory=dict)  # (H, W) or (H, W, C)
    kernels: list[tuple[str, np.ndarray]] = field(default_factory=list)
    plot: bytes | None = None  # learn's loss curve, PNG
    source: LoadedImage | None = field(default=None, repr=False)
    _command: Command | None = field(default=None, repr=False)
    _outputs: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def checks(self) -> list:
        """Each check: the engine's result against its reference, with its figures."""
        return self.report.checks

    @property
    def passed(self) -> bool:
        return self.report.passed

    @property
    def notices(self) -> list[str]:
        return self.report.notices

    def image(self, name: str) -> Image.Image:
        """Output ``name`` as a Pillow image: 16-bit gray as ``I;16``, 16-bit colour scaled
        to 8 bits (Pillow has no 16-bit colour mode)."""
        from PIL import Image

        pixels = self.pictures[name]
        if pixels.dtype == np.uint16 and pixels.ndim == 3:  # Pillow has no 16-bit colour
            pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(pixels))

    def to_dict(self) -> dict[str, Any]:
        """The report entry, as ``--report`` writes it for this input."""
        return {"command": self.command, **self.report.to_dict()}

    def save(self, folder: str | os.PathLike, *, force: bool = False) -> list[str]:
        """Write the outputs into ``folder`` under the command line's names and rule (an
        existing file only with ``force``, an input never); the files written."""
        if self._command is None or self.source is None:
            raise CnnFiltersError(f"{self.command}: its files are written by the run itself")
        from .clobber import check_targets
        from .commands import Result
        from .outputs import Destination, make_folder, output_targets, write_result

        folder = Path(folder)
        make_folder(folder)
        destination = Destination(out_dir=folder, force=force)
        targets = output_targets(self.source.path, list(self._outputs), destination, folder=folder)
        check_targets(targets, self.source.path, force=force)
        result = Result(outputs=self._outputs)
        written = write_result(result, self.source, targets, threads=1, replace=force)
        if written.error is not None:
            raise written.error
        return written.files

    def _repr_html_(self) -> str:
        from .html import render_cell

        shown = dict(self.pictures)
        if self.source is not None and self.source.kind == "uint8":
            shown = {"input": _hwc(_whole(self.source.pixels)), **shown}
        return render_cell(self.command, self.report, shown, self.kernels, plot=self.plot)

    def __repr__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        checks = f"{len(self.checks)} checks {verdict}"
        shown = self.report.input
        return f"<cnnfilters {self.command} of {Path(shown).name or shown}: {checks}>"


class Runs(list):
    """One command on several images: a :class:`Run` each, shown one after another."""

    @property
    def passed(self) -> bool:
        return all(run.passed for run in self)

    def save(self, folder: str | os.PathLike, *, force: bool = False) -> list[str]:
        """Every run's files in ``folder`` (see :meth:`Run.save`)."""
        return [name for run in self for name in run.save(folder, force=force)]

    def _repr_html_(self) -> str:
        verdict = sum(run.passed for run in self)
        head = f"<p>{len(self)} images: {verdict} passed, {len(self) - verdict} failed.</p>"
        return head + "".join(run._repr_html_() for run in self)


def apply(command: str, source: Any, **options: Any) -> Run | Runs:
    """Run ``command`` on ``source`` (a path, a Pillow image, or an array ``(H, W)`` or
    ``(H, W, 3)``; a list of them gives :class:`Runs`) with the command's ``options``
    (``kernel_size=3``, ``kernel="sobel-x"``, ``what="gradient"``...); see :class:`Run`."""
    if command == "learn":
        return _learn(source, **options)
    if isinstance(source, list):
        return Runs(apply(command, each, **options) for each in source)
    if command not in IMAGE_COMMANDS:
        choices = ", ".join((*IMAGE_COMMANDS, "learn"))
        raise CnnFiltersError(f"unknown command {command!r}; choose from {choices}")
    from .commands import command_named
    from .kernels import parse_kernel
    from .outputs import verify_result

    if isinstance(options.get("kernel"), str):
        options["kernel"] = parse_kernel(options["kernel"])
    chosen = command_named(command, **options)
    image = _loaded(source)
    result = chosen.run(image)
    checks, warned = verify_result(result)
    item = InputReport(_label(source, image), checks=[*result.checks, *checks])
    item.notices.extend([*image.notices, *result.notices, *warned])
    item.info.update(result.info)
    pictures = {name: _whole(out.pixels) for name, out in result.outputs.items()}
    outputs = {name: _materialized(out, pictures[name]) for name, out in result.outputs.items()}
    return Run(
        command,
        item,
        {n: _hwc(p) for n, p in pictures.items()},
        chosen.kernels(),
        source=image,
        _command=chosen,
        _outputs=outputs,
    )


def _learn(source: Any, *, what: str = "gradient", **options: Any) -> Run:
    """``learn``: a conv layer trained back on the image (or a pair's kernel)."""
    from .commands import LearnOptions
    from .learning import loss_curve_png

    if "kernel_size" in options:  # the command line's -k, --kernel-size
        options["k"] = options.pop("kernel_size")
    if what == "grayscale":
        options.setdefault("on", "rgb")  # the colour weights are learned from colour
    learning = LearnOptions(what=what, **options)
    sources = list(source) if what == "pair" else [source]
    if what == "pair" and len(sources) != 2:
        raise CnnFiltersError(f"learn pair takes (before, after); got {len(sources)}")
    images = [_loaded(s) for s in sources]
    learned: Learned = learning.fit(images[:1], images[1] if what == "pair" else None)
    label = _label(sources[0], images[0])
    item = InputReport(f"{learning.label} on {Path(label).name}")
    item.checks.extend(learned.checks)
    item.notices.extend(learned.notices)
    item.info.update(learned.info)
    other = "construction" if learned.truth is not None else "least squares"
    beside = learned.truth or (learned.lstsq_weight, learned.lstsq_bias)
    kernels = []
    for o in range(learned.weight.shape[0]):
        for c in range(learned.weight.shape[1]):
            kernels += [
                (f"learned w[{o}, {c}]", learned.weight[o, c]),
                (f"{other} w[{o}, {c}]", beside[0][o, c]),
            ]
    plot = loss_curve_png(learned.training.losses, title=learning.label, tol=learning.tol)
    return Run("learn", item, {}, kernels, plot=plot)


def _loaded(source: Any) -> LoadedImage:
    """A path read as the command line reads it; a Pillow image or an array through a
    file of its own, so that it is decoded the same way."""
    from .images import load_image

    if isinstance(source, (str, os.PathLike)):
        return load_image(source)
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="cnnfilters-") as scratch:
        if isinstance(source, Image.Image):
            picture = (
                source
                if source.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")
                else source.convert("RGB")
            )
            path = Path(scratch) / "image.png"
            picture.save(path)
        else:
            array = np.asarray(source)
            if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
                raise CnnFiltersError(
                    f"an image array is (H, W) or (H, W, 3 or 4), got shape {array.shape}"
                )
            if array.dtype in (np.uint8, np.uint16):
                path = Path(scratch) / "image.png"
                Image.fromarray(array).save(path)
            else:
                import tifffile

                path = Path(scratch) / "image.tif"
                tifffile.imwrite(path, np.asarray(array, dtype=np.float32))
        image = load_image(path)
        image.pixels = np.array(image.pixels)  # not a view of a file that goes away
        if image.alpha is not None:
            image.alpha = np.array(image.alpha)
        return image


def _label(source: Any, image: LoadedImage) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    shape = " x ".join(str(n) for n in image.size[::-1])
    return f"an image of {shape} pixels"


def _whole(pixels: Any) -> np.ndarray:
    """An output's pixels as one array, made from its strips if it comes in strips."""
    if isinstance(pixels, np.ndarray):
        return pixels
    return np.concatenate(list(pixels.strips()), axis=1)


def _materialized(output: Any, pixels: np.ndarray) -> Any:
    """The output with its pixels whole (it may be saved after it was shown)."""
    from dataclasses import replace

    values = output.values if isinstance(output.values, np.ndarray) else None
    return replace(output, pixels=pixels, values=values)


def _hwc(pixels: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` levels as a picture's ``(H, W)`` or ``(H, W, C)``."""
    return pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
