"""Writing outputs: names, PNG encoding, ICC, formats for standard output.

Output names come from one rule (:func:`output_targets`), and
:func:`~cnnfilters.clobber.check_targets` refuses to clobber an input or,
without ``force``, an existing file. :func:`write_result` writes one
:class:`~cnnfilters.commands.Result` while its checks run. Every file is
written whole or not at all, by :func:`cnnfilters.atomic.atomic_write`.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .atomic import atomic_write
from .clobber import target_exists
from .defaults import DEFAULT_NAME, OUTPUT_FORMATS, PNG_COMPRESS_LEVEL
from .errors import CnnFiltersError, OutputError
from .formats import SUFFIXES, depth_refusal, encode_with_pillow, image_format
from .images import LoadedImage, ReadOptions, load_image
from .levels import Rows

if TYPE_CHECKING:
    from .commands import Output, Result
    from .report import Check

__all__ = [
    "Destination",
    "PngWriter",
    "make_folder",
    "output_complete",
    "output_filenames",
    "output_namer",
    "output_targets",
    "png_to_format",
    "save_array",
    "save_image",
    "write_result",
]


@dataclass(frozen=True)
class Destination:
    """Where a run's outputs go and how they are written; one for the whole run.

    ``output`` is the file itself for a one-image command on one input, else
    the stem that ``.{name}.png`` is appended to; ``out_dir`` replaces the
    input's folder; ``template`` names the files (``{stem}``, ``{output}``,
    ``{ext}``); ``force`` replaces existing files (never an input); ``raw``
    adds each float result as ``.npy``.
    """

    output: Path | None = None
    out_dir: Path | None = None
    template: str = DEFAULT_NAME
    force: bool = False
    raw: bool = False
    compress_level: int = PNG_COMPRESS_LEVEL

    def __post_init__(self) -> None:
        check_template(self.template)
        if not 0 <= self.compress_level <= 9:
            raise CnnFiltersError(f"compress level must be 0-9, got {self.compress_level}")
        if self.output is not None and self.out_dir is not None:
            raise CnnFiltersError("give either an output file or an output folder, not both")
        suffix = Path(self.template.format(stem="stem", output="output", ext="png")).suffix
        if suffix and suffix.lower() not in SUFFIXES:  # the template's own extension
            raise CnnFiltersError(
                f"name template {self.template!r}: cannot write {suffix} images; end it "
                ".png, .jpg, .tif or .webp"
            )


_TEMPLATE_FIELDS = ("stem", "output", "ext")


def check_template(template: str) -> None:
    """Refuse a name template with other fields than ``{stem}``, ``{output}``, ``{ext}``.

    >>> check_template("{stem}.{output}.png")
    >>> check_template("{stem.__class__}")
    Traceback (most recent call last):
    cnnfilters.errors.CnnFiltersError: name template '{stem.__class__}': ... is not one of ...
    """
    import string

    try:
        fields = [part[1:] for part in string.Formatter().parse(template) if part[1] is not None]
    except ValueError as exc:
        raise CnnFiltersError(f"name template {template!r} is not valid ({exc})") from None
    for name, spec, conversion in fields:
        if name not in _TEMPLATE_FIELDS or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise CnnFiltersError(
                f"name template {template!r}: {{{shown}}} is not one of {{stem}}, {{output}}, "
                "{ext} (no attributes, conversions or formats)"
            )


def _named_file(output: Path, name: str, *, single: bool) -> Path:
    """Where output ``name`` goes with ``-o``: the file itself for a one-image
    command, else the stem that ``.{name}`` and the extension (``-o``'s own, if it
    has an image format's, else ``.png``) are appended to."""
    if single:
        return output
    suffix = output.suffix if output.suffix.lower() in SUFFIXES else ""
    stem = output.with_suffix("") if suffix else output
    return stem.parent / f"{stem.name}.{name}{suffix or '.png'}"


def output_filenames(source: str, names: Sequence[str], destination: Destination) -> list[str]:
    """The file names (no folder) of each output of an input named ``source``, in
    order: its PNG from the name template, and with ``raw`` the ``.npy`` beside it.
    Made from strings alone, since planning a large folder asks for each of its
    files. The rule of :func:`output_targets` without ``destination.output``.

    >>> output_filenames("cat.jpg", ["dx", "dy"], Destination(raw=True))
    ['cat.dx.png', 'cat.dx.npy', 'cat.dy.png', 'cat.dy.npy']
    """
    return output_namer(names, destination)(source)


def output_namer(names: Sequence[str], destination: Destination) -> Callable[[str], list[str]]:
    """:func:`output_filenames` as a function of the input's name alone, for a planner
    that asks for every file of a large folder."""
    return _namer(destination.template, tuple(names), destination.raw)


@functools.lru_cache(maxsize=16)
def _namer(template: str, names: tuple[str, ...], raw: bool) -> Callable[[str], list[str]]:
    """The template (checked by :class:`Destination`) filled with each output's name,
    leaving the stem and the extension as positional fields: a folder of 200,000
    files then pays for one short ``format`` a file name."""
    # NUL cannot be in a file name: it marks the stem and the extension while the
    # braces of what is left are escaped again.
    filled = [template.format(stem="\0s", output=name, ext="\0e") for name in names]
    escaped = (text.replace("{", "{{").replace("}", "}}") for text in filled)
    fills = [text.replace("\0s", "{0}").replace("\0e", "{1}").format for text in escaped]

    def filenames(source: str) -> list[str]:
        # PurePath(source).stem and .suffix, without making a path (a file name has
        # no separator): a dot that begins or ends the name starts no suffix.
        dot = source.rfind(".")
        stem, ext = (source[:dot], source[dot + 1 :]) if 0 < dot < len(source) - 1 else (source, "")
        files = []
        for fill in fills:
            png = fill(stem, ext)
            if "/" in png or not png:
                raise CnnFiltersError(
                    f"name template {template!r} must give a file name, got {png!r}"
                )
            files.append(png)
            if raw:  # PurePath(png).with_suffix(".npy")
                dot = png.rfind(".")
                files.append((png[:dot] if 0 < dot < len(png) - 1 else png) + ".npy")
        return files

    return filenames


def output_targets(
    source: Path,
    names: Sequence[str],
    destination: Destination,
    *,
    folder: Path | None,
    frame: int | None = None,
) -> dict[str, list[Path]]:
    """Each output name's file(s): its PNG, and with ``raw`` the ``.npy`` beside it.

    Default ``{stem}.{output}.png`` in ``folder`` (the input's own when None);
    frame ``i`` of a multi-frame input is output ``frame{i}.{name}``; with
    ``destination.output`` (``-o``), see :func:`_named_file`.
    """
    labels = [name if frame is None else f"frame{frame}.{name}" for name in names]
    output = destination.output
    if output is not None:
        single = len(names) == 1 and frame is None
        pngs = [_named_file(output, label, single=single) for label in labels]
        return {
            name: [png] + ([png.with_suffix(".npy")] if destination.raw else [])
            for name, png in zip(names, pngs, strict=True)
        }
    base = folder if folder is not None else source.parent
    files = [base / file for file in output_filenames(source.name, labels, destination)]
    each = 2 if destination.raw else 1
    return {name: files[each * index : each * (index + 1)] for index, name in enumerate(names)}


def make_folder(folder: Path) -> None:
    """Create the output folder (and its parents); a file in its place is an error."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder for the outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None


def icc_for(output: Output, image: LoadedImage) -> tuple[bytes | None, str | None]:
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


@dataclass
class Written:
    """What :func:`write_result` did: the files written, the checks run, notices, and
    the first error (the files that were written are listed all the same)."""

    files: list[str]
    checks: list[Check]
    notices: list[str]
    error: CnnFiltersError | OSError | None = None


def write_result(
    result: Result,
    image: LoadedImage,
    targets: dict[str, list[Path]],
    *,
    compress_level: int = PNG_COMPRESS_LEVEL,
    threads: int | None = None,
    replace: bool = True,
) -> Written:
    """Write a command's outputs while its remaining checks run.

    The images are encoded in worker threads (deflate releases the GIL) while
    this thread runs ``result.verify``; ``threads=1`` (a batch worker, whose
    siblings have the other cores) encodes them one after the other first.
    ``replace=False`` never replaces a file, even one another process wrote
    since the targets were checked.
    Every file written is listed even when another one failed.
    """
    icc_notes = set()
    jobs = []
    for name, out in result.outputs.items():
        icc, note = icc_for(out, image)
        if note:
            icc_notes.add(note)
        if out.alpha is not None and image_format(targets[name][0]) == "jpeg":
            icc_notes.add("JPEG has no alpha: the alpha channel is left out")
        options = {
            "alpha": out.alpha,
            "icc_profile": icc,
            "compress_level": compress_level,
            "replace": replace,
        }
        jobs.append((out.pixels, targets[name][0], options))
    checks = list(result.checks)
    notices: list[str] = []

    def verify() -> None:
        more, warned = verify_result(result)
        checks.extend(more)
        notices.extend(warned)

    if threads == 1:
        errors = [_try(save_image, pixels, target, **kw) for pixels, target, kw in jobs]
        verify()
    else:
        workers = max(1, min(len(jobs), threads or os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            saving = [pool.submit(save_image, pixels, target, **kw) for pixels, target, kw in jobs]
            verify()
            errors = [future.exception() for future in saving]
    files = [os.fsdecode(job[1]) for job, e in zip(jobs, errors, strict=True) if not e]
    written = Written(files, checks, notices)
    written.error = next((e for e in errors if e is not None), None)  # type: ignore[assignment]
    if written.error is not None:
        return written
    for name, out in result.outputs.items():
        npy = targets[name][1:]
        if npy:
            save_array(out.values, npy[0], replace=replace)
            files.append(os.fsdecode(npy[0]))
    notices.extend(sorted(icc_notes))
    return written


def verify_result(result: Result) -> tuple[list[Check], list[str]]:
    """Run the checks a command left for later (``result.verify``), once: their
    figures, and the warnings they raised as notices."""
    if result.verify is None:
        return [], []
    verify, result.verify = result.verify, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks = verify()
    return checks, [f"warning: {w.message}" for w in caught]


def _try(function: Callable[..., None], *args: Any, **kwargs: Any) -> BaseException | None:
    """Run ``function``; return its exception (a CnnFiltersError or OSError) instead of raising."""
    try:
        function(*args, **kwargs)
    except (CnnFiltersError, OSError) as exc:
        return exc
    return None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # gray, gray+alpha, RGB, RGBA


class PngWriter:
    """Write a PNG from strips of rows: 8 or 16 bits, 1 to 4 channels.

    Every row uses PNG's "Sub" filter (each byte minus the one a pixel to its
    left), computed with numpy; the rows are deflated as they come. With
    level 1 and zlib's RLE strategy (the default) this wrote files as small
    as Pillow's default level 6 on photographs, about 10x faster (Pillow's
    level 1 with RLE: 3x faster). zlib releases the GIL, so several writers
    run in parallel threads.
    """

    def __init__(
        self,
        handle: IO[bytes],
        width: int,
        height: int,
        channels: int,
        bit_depth: int,
        *,
        compress_level: int = PNG_COMPRESS_LEVEL,
        icc_profile: bytes | None = None,
    ) -> None:
        self.handle, self.channels, self.bit_depth = handle, channels, bit_depth
        self.rows_left = height
        header = struct.pack(
            ">IIBBBBB", width, height, bit_depth, _PNG_COLOUR_TYPES[channels], 0, 0, 0
        )
        handle.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header))
        if icc_profile:
            handle.write(_png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(icc_profile)))
        strategy = zlib.Z_RLE if compress_level == 1 else zlib.Z_DEFAULT_STRATEGY
        self.deflate = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, strategy)
        self.pending: list[bytes] = []
        self.pending_size = 0

    def write(self, strip: np.ndarray) -> None:
        """Append rows: ``(rows, W, C)`` uint8/uint16, C as given to the constructor."""
        rows = strip.shape[0]
        sample = ">u2" if self.bit_depth == 16 else np.uint8
        data = np.ascontiguousarray(strip, dtype=sample).view(np.uint8).reshape(rows, -1)
        bpp = self.channels * self.bit_depth // 8
        line = np.empty((rows, data.shape[1] + 1), dtype=np.uint8)
        line[:, 0] = 1  # filter type Sub
        line[:, 1 : 1 + bpp] = data[:, :bpp]
        np.subtract(data[:, bpp:], data[:, :-bpp], out=line[:, 1 + bpp :])
        self._emit(self.deflate.compress(line))
        self.rows_left -= rows

    def _emit(self, data: bytes) -> None:
        if data:
            self.pending.append(data)
            self.pending_size += len(data)
        if self.pending_size >= 1 << 20:
            self._flush_chunk()

    def _flush_chunk(self) -> None:
        if self.pending:
            self.handle.write(_png_chunk(b"IDAT", b"".join(self.pending)))
            self.pending, self.pending_size = [], 0

    def close(self) -> None:
        if self.rows_left:
            raise OutputError(f"PNG writer closed with {self.rows_left} rows missing")
        self._emit(self.deflate.flush())
        self._flush_chunk()
        self.handle.write(_png_chunk(b"IEND", b""))


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def output_complete(target: Path) -> bool:
    """Whether ``target`` exists whole (what a power cut can leave of an unsynced
    write): a PNG ends with its IEND chunk, a JPEG with its end marker, a WebP is
    as long as its header says; another file is not empty."""
    if not target_exists(target):
        return False
    suffix = target.suffix.lower()
    ending = {".png": _PNG_END, ".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9"}.get(suffix)
    try:
        with open(target, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if suffix == ".webp":
                handle.seek(0)
                head = handle.read(8)
                return head[:4] == b"RIFF" and struct.unpack("<I", head[4:8])[0] + 8 == size
            if ending is None:
                return size > 0
            if size < len(ending):
                return False
            handle.seek(size - len(ending))
            return handle.read() == ending
    except (OSError, struct.error):
        return False


def save_image(
    pixels: np.ndarray | Rows,
    target: str | os.PathLike,
    *,
    alpha: np.ndarray | None = None,
    icc_profile: bytes | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
    replace: bool = True,
) -> None:
    """Write ``(1 or 3, H, W)`` uint8/uint16 pixels (and alpha) atomically, in the
    format of ``target``'s extension (:mod:`cnnfilters.formats`; PNG by default).

    ``pixels`` may be :class:`Rows`: a PNG is written strip by strip without
    ever holding the whole image (the other formats' encoders take it whole).
    """
    channels, height, width = pixels.shape
    bit_depth = 16 if np.dtype(pixels.dtype) == np.uint16 else 8
    strips = pixels.strips() if isinstance(pixels, Rows) else iter([pixels])
    planes = channels + (alpha is not None)
    fmt = image_format(target)
    if fmt != "png":
        refused = depth_refusal(target, sixteen_bit=bit_depth == 16)
        if refused:
            raise CnnFiltersError(refused)
        whole = np.concatenate(list(strips), axis=1) if isinstance(pixels, Rows) else pixels
        atomic_write(
            Path(target),
            lambda handle: encode_with_pillow(
                handle, whole, fmt, alpha=alpha, icc_profile=icc_profile
            ),
            replace=replace,
        )
        return

    def write(handle: IO[bytes]) -> None:
        writer = PngWriter(
            handle,
            width,
            height,
            planes,
            bit_depth,
            compress_level=compress_level,
            icc_profile=icc_profile,
        )
        top = 0
        for strip in strips:
            rows = strip.shape[1]
            if alpha is not None:
                strip = np.concatenate([strip, alpha[np.newaxis, top : top + rows]])
            # Strips of a few MB keep the filter's temporaries small.
            step = max(1, (4 << 20) // max(1, width * planes * bit_depth // 8))
            for first in range(0, rows, step):
                writer.write(np.moveaxis(strip[:, first : first + step], 0, -1))
            top += rows
        writer.close()

    atomic_write(Path(target), write, replace=replace)


def save_array(
    values: np.ndarray | Rows, target: str | os.PathLike, *, replace: bool = True
) -> None:
    """Write exact float values as a ``.npy`` file, atomically (:class:`Rows` one channel
    at a time, since ``.npy`` stores each channel whole)."""
    if not isinstance(values, Rows):
        atomic_write(
            Path(target), lambda fh: np.save(fh, values, allow_pickle=False), replace=replace
        )
        return

    def write(handle: IO[bytes]) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(values.dtype)),
            "fortran_order": False,
            "shape": tuple(values.shape),
        }
        np.lib.format.write_array_header_1_0(handle, header)
        for channel in range(values.shape[0]):
            for strip in values.strips():
                handle.write(np.ascontiguousarray(strip[channel], dtype=values.dtype).tobytes())

    atomic_write(Path(target), write, replace=replace)


def png_to_format(path: str | os.PathLike, fmt: str) -> tuple[bytes, list[str]]:
    """A PNG that cnnfilters wrote, encoded as ``fmt`` (png, jpeg, tiff, webp), and notes.

    Where the format cannot hold 16-bit samples (JPEG and WebP; colour TIFF
    as Pillow writes it) they are scaled to 8 bits, correctly rounded:
    ``floor(v * 255 / 65535 + 1/2)``, never clipped. JPEG drops alpha.
    """
    if fmt not in OUTPUT_FORMATS:
        raise CnnFiltersError(f"format must be one of {', '.join(OUTPUT_FORMATS)}; got {fmt!r}")
    data = Path(path).read_bytes()
    if fmt == "png":
        return data, []
    image = load_image(path, ReadOptions(auto_orient=False))
    notes = []
    pixels, alpha = image.pixels, image.alpha
    keep16 = fmt == "tiff" and image.channels == 1 and alpha is None
    if image.bit_depth == 16 and not keep16:
        scale = lambda v: ((2 * v.astype(np.uint32) + 257) // 514).astype(np.uint8)  # noqa: E731
        pixels = scale(pixels)
        alpha = None if alpha is None else scale(alpha)
        notes.append(f"16-bit result scaled to 8 bits for {fmt.upper()} (v * 255 / 65535, rounded)")
    if fmt == "jpeg" and alpha is not None:
        alpha = None
        notes.append("JPEG has no alpha: the alpha channel is left out")
    planes = np.moveaxis(pixels, 0, -1)
    if alpha is not None:
        planes = np.concatenate([planes, alpha[..., np.newaxis]], axis=-1)
    if planes.shape[-1] == 1:
        planes = planes[..., 0]
    picture = Image.fromarray(np.ascontiguousarray(planes))
    if fmt == "webp" and picture.mode in ("L", "LA"):
        picture = picture.convert("RGBA" if picture.mode == "LA" else "RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt.upper())
    return buffer.getvalue(), notes
