"""Reading image files, and results as output levels: modes, bit depth, alpha, orientation.

Reading turns a file into an array ``(C, H, W)`` on its file scale (0..255
or 0..65535) and says what it did in ``notices``; nothing is clipped or
dropped silently, and damaged data is refused (:mod:`cnnfilters.integrity`).
:meth:`LoadedImage.levels`, :func:`quantize` and the map functions turn
float results into the levels that :mod:`cnnfilters.outputs` writes.

Modes, and what they become:

========================  =============================================
``1``                     gray, 0 and 255
``L``, ``LA``             gray (8-bit), alpha set aside
``P``, ``PA``             RGB (or RGB + alpha when it has transparency)
``RGB``, ``RGBA``         RGB (8-bit), alpha set aside
``CMYK``, ``YCbCr``, ...  RGB by Pillow's conversion (no colour management)
``I;16``, ``I;16B``       gray, 16-bit, full precision
16-bit RGB(A)/LA PNG      RGB or gray, 16-bit, full precision (decoded by pypng,
                          since Pillow would keep only the high byte)
``I`` (32-bit int)        gray as float64, written as 16-bit with a stated scale
``F`` (32-bit float)      gray as float32, written as 16-bit with a stated scale
other TIFF layouts        float16/32/64 gray or RGB, planar or not, integers of
                          any width: decoded by tifffile where Pillow cannot
========================  =============================================
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import mmap
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile

from . import _libtiff, integrity, rounding
from .defaults import ALPHA_POLICIES, DEFAULT_MAX_PIXELS, FORMATS
from .errors import CnnFiltersError, InputError
from .pngrows import PngRows, png_exif, streamable

if TYPE_CHECKING:
    import tifffile

__all__ = [
    "Levels",
    "LoadedImage",
    "ReadOptions",
    "Rows",
    "level_dtype",
    "levels_outside",
    "load_frames",
    "load_image",
    "mosaic",
    "parse_colour",
    "pil_image",
    "quantize",
    "signed_mosaic",
    "signed_to_image",
    "units_per_level",
    "unsigned_to_image",
]


# Decoded 8-bit images up to this size are copied out of Pillow at once; larger
# ones in strips (a whole tobytes() and its pieces would double the peak).
_WHOLE_COPY_BYTES = 64 << 20
_EXIF_ORIENTATION = 0x0112
# Float images with larger magnitudes are computed in float64: float32 holds
# up to 3.4e38, so a square of 1.9e19 or a sum of a few 1e38 overflows.
_FLOAT32_SAFE = 1e18


@dataclass(frozen=True)
class ReadOptions:
    """How files are read (the command line's input options)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    auto_orient: bool = True
    alpha: str = "keep"
    background: tuple[int, int, int] = (255, 255, 255)
    allow_truncated: bool = False
    all_frames: bool = False

    def __post_init__(self) -> None:
        if self.alpha not in ALPHA_POLICIES:
            raise CnnFiltersError(
                f"alpha policy must be one of {', '.join(ALPHA_POLICIES)}; got {self.alpha!r}"
            )
        if (
            isinstance(self.max_pixels, bool)
            or not isinstance(self.max_pixels, int)
            or (self.max_pixels < 1)
        ):
            raise CnnFiltersError(
                f"the pixel limit must be a positive int, got {self.max_pixels!r}"
            )


@dataclass
class LoadedImage:
    """A decoded image as floats, with what is needed to write results back.

    ``pixels`` is ``(C, H, W)`` with C = 1 (gray) or 3 (RGB), in the file's
    own sample type (uint8 or uint16; float32 for ``F``, float64 for ``I``),
    often a channels-first *view* of the decoded ``(H, W, C)`` array: the
    engine converts it to float one block of rows at a time, so no full-size
    float copy is made. ``bit_depth`` (8 or 16) is the depth outputs are
    written with; ``kind`` says what the samples were (``uint8``, ``uint16``,
    ``int32`` or ``float32``). :attr:`pil` is ``pixels`` as an 8-bit
    ``L``/``RGB`` Pillow image (``None`` for other depths, which Pillow's
    8-bit operations would clip); the Pillow references see the same pixels,
    a strip at a time (:func:`pil_image`). ``alpha`` is ``(H, W)`` on the
    same scale, or ``None``.
    """

    path: Path
    format: str
    mode: str
    pixels: np.ndarray  # or, loaded with rows_once, PngRows: read it with rows()
    bit_depth: int
    kind: str
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    frame: int = 0
    frames: int = 1
    notices: list[str] = field(default_factory=list)
    damage: str | None = None  # what was wrong with data read anyway

    @property
    def pil(self) -> Image.Image | None:
        """The pixels as a Pillow ``L`` or ``RGB`` image (a copy), 8-bit only."""
        return pil_image(self.pixels) if self.kind == "uint8" else None

    def rows(self, first: int, stop: int) -> np.ndarray:
        """Rows ``first..stop`` of the pixels, ``(C, rows, W)``. An image loaded with
        ``rows_once`` may be decoded as it is read (:class:`~cnnfilters.pngrows.PngRows`):
        then each row is given once, top to bottom."""
        if isinstance(self.pixels, PngRows):
            return self.pixels.take(first, stop)
        return self.pixels[:, first:stop]

    def close(self) -> None:
        """Let go of what decodes the rows of a streamed image (nothing for others)."""
        if isinstance(self.pixels, PngRows):
            self.pixels.close()

    @property
    def max_value(self) -> int:
        """The top level of the output depth (255 or 65535)."""
        return (1 << self.bit_depth) - 1

    @property
    def peak(self) -> float:
        """The largest magnitude the samples can have (for tolerances and PSNR)."""
        if self.kind in ("uint8", "uint16"):
            return float(self.max_value)
        return max(1.0, float(np.max(np.abs(self.pixels), initial=0.0)))

    @property
    def channels(self) -> int:
        return self.pixels.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.pixels.shape[1], self.pixels.shape[2]

    @property
    def icc_space(self) -> str | None:
        """The colour space an embedded ICC profile describes (``RGB``, ``GRAY``, ...)."""
        if not self.icc_profile or len(self.icc_profile) < 20:
            return None
        return self.icc_profile[16:20].decode("ascii", "replace").strip()

    def levels(self, values: np.ndarray, exact: rounding.Exact | None = None) -> Levels:
        """Pixels to write for a result on the input's scale (see :class:`Levels`).

        8/16-bit inputs: round half up and clip to the same depth; with
        ``exact``, the values whose float rounding is in doubt are rounded
        from their exact value, so every pixel is the correctly rounded
        result. 32-bit int and float inputs: a linear map of the result's
        range onto 0..65535, stated in the mapping.
        """
        if self.kind in ("uint8", "uint16"):
            top = self.max_value
            outside = levels_outside(values, top)
            pixels = quantize(values, self.bit_depth)
            if exact is not None:
                rounding.correct_ties(pixels, values, exact, top)
            return Levels(pixels, clipped=outside, top=top)
        finite = np.isfinite(values)
        low = float(np.min(values, initial=0.0, where=finite))
        high = float(np.max(values, initial=0.0, where=finite))
        span = high - low if high > low else 1.0
        scaled = (np.asarray(values, dtype=np.float64) - low) * (65535 / span)
        mapping = (f"{self.kind} data written as 16-bit: "
                   f"value = {low:.9g} + pixel * {span / 65535:.9g}")  # fmt: skip
        infinite = values.size - int(np.count_nonzero(finite))
        if infinite:
            mapping += f"; {infinite} values are not finite (drawn at the ends of the scale)"
        return Levels(quantize(scaled, 16), mapping=mapping)


def pil_image(pixels: np.ndarray) -> Image.Image:
    """``(1 or 3, H, W)`` 8-bit pixels as a Pillow ``L`` or ``RGB`` image (a copy)."""
    planes = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(planes, dtype=np.uint8))


@dataclass(frozen=True)
class Levels:
    """A result as output levels: the pixels, and what writing them did to the values.

    ``clipped`` counts values outside ``0..top`` (8/16-bit inputs);
    ``mapping`` states the linear map of 32-bit int and float results.
    """

    pixels: np.ndarray
    clipped: int = 0
    top: int = 0
    mapping: str | None = None

    def notes(self) -> list[str]:
        """The report's notices for these levels."""
        notes = [self.mapping] if self.mapping else []
        if self.clipped:
            notes.append(f"{self.clipped} values outside 0..{self.top} were clipped")
        return notes


_NAMED_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128),
                  "grey": (128, 128, 128)}  # fmt: skip


def parse_colour(text: str) -> tuple[int, int, int]:
    """``white``, ``black``, ``gray``, ``#rrggbb`` or ``R,G,B`` (0-255) -> an RGB triple."""
    key = text.strip().lower()
    if key in _NAMED_COLOURS:
        return _NAMED_COLOURS[key]
    try:
        if key.startswith("#") and len(key) == 7:
            values = tuple(int(key[i : i + 2], 16) for i in (1, 3, 5))
        else:
            values = tuple(int(v) for v in key.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise CnnFiltersError(
            f"background must be white, black, gray, #rrggbb or R,G,B (0-255), got {text!r}"
        )
    return values  # type: ignore[return-value]


# A FIFO opened with O_NONBLOCK does not wait for a writer: it is refused by its type.
_OPEN_INPUT = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def _read_input(path: Path) -> bytes | None:
    """Refuse what is not a regular, non-empty, readable file; for a PNG or JPEG of at
    most :data:`_READ_WHOLE_BYTES`, its content (None for any other file, which
    Pillow reads itself).

    One open serves the refusal and the read (a FIFO would hang a plain open,
    so it is opened without waiting): three system calls for a small file,
    where a stat, an access check, an open and the buffered file object's own
    calls took nine.
    """
    try:
        fd = os.open(path, _OPEN_INPUT | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        if os.path.isdir(path):  # where folders cannot be opened as files
            raise InputError(f"{path}: is a directory, not an image file") from None
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{path}: is a directory, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: not a regular file (a FIFO, socket or device)")
        if info.st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
        return _small_file_data(fd, info.st_size)
    except OSError as exc:  # a directory read, an I/O error
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _rawmode(image: Image.Image) -> str:
    """The decoder's raw mode of the first tile (``RGB;16B`` for a 48-bit PNG)."""
    if not image.tile:
        return ""
    args = image.tile[0][3] if len(image.tile[0]) > 3 else None
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def load_image(path: str | os.PathLike, options: ReadOptions | None = None) -> LoadedImage:
    """Read and decode the first frame of an image file (see :func:`load_frames`)."""
    return load_frames(path, options, first_only=True)[0]


def load_frames(
    path: str | os.PathLike,
    options: ReadOptions | None = None,
    *,
    first_only: bool = False,
    parallel: bool = True,
    rows_once: bool = False,
) -> list[LoadedImage]:
    """Read and decode an image file: every frame with ``options.all_frames``, else the first.

    The pixel count is checked against ``options.max_pixels`` from the
    header, before anything is decoded. Any failure of the decoder (corrupt,
    truncated or hostile data) becomes an :class:`InputError` naming the
    file, and so does damage that the decoder lets through (see
    :mod:`cnnfilters.integrity`) unless ``options.allow_truncated``: then the
    frame's ``damage`` says what was wrong. ``parallel`` checks the stream in
    a second thread while Pillow decodes (a batch worker, which has one core,
    checks first).

    ``rows_once``: the caller reads the pixels once, top to bottom, through
    :meth:`LoadedImage.rows`, and closes the images when done. A large PNG
    that :mod:`cnnfilters.pngrows` reads exactly is then decoded as it is read
    (in a thread of its own when ``parallel``), its damage found on the way.
    Other PNGs that it reads exactly are decoded whole by the same walk, one
    inflate for the decode and the damage check (:func:`_walked_png`).
    """
    options = options or ReadOptions()
    path = Path(path)
    data = _read_input(path)
    _libtiff.take()  # forget what an earlier file left
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        previous_limit = Image.MAX_IMAGE_PIXELS
        previous_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
        # Our own limit is checked from the header below; Pillow's must not contradict it.
        Image.MAX_IMAGE_PIXELS = None
        try:
            try:
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                frames = _decode(path, data, options, first_only, parallel, rows_once)
            except InputError:
                raise
            except (OSError, SyntaxError, ValueError, EOFError):
                if not options.allow_truncated:
                    raise
                # Opted in: decode again, letting Pillow fill what is missing.
                ImageFile.LOAD_TRUNCATED_IMAGES = True
                frames = _decode(path, data, options, first_only, parallel, rows_once)
                if frames[0].damage is None:
                    frames[0].damage = "the decoder stopped early"
            if frames[0].damage is not None:
                frames[0].notices.append(
                    f"damaged data read anyway, missing pixels were filled ({frames[0].damage})"
                )
        except InputError:
            raise
        except MemoryError:
            raise InputError(f"{path}: not enough memory to decode this image") from None
        except Exception as exc:  # a decoder's failure on bad data, whatever its type
            # libtiff says what went wrong better than Pillow's "decoder error -2".
            said = [text for kind, text in _libtiff.take() if kind == "error"]
            detail = said[0] if said else str(exc) or type(exc).__name__
            raise InputError(f"{path}: cannot decode the image ({detail})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous_limit
            ImageFile.LOAD_TRUNCATED_IMAGES = previous_truncated
    for warning in caught:
        frames[0].notices.append(f"decoder warning: {warning.message}")
    for _, text in _libtiff.take():
        frames[0].notices.append(f"libtiff: {text}")
    return frames


# PNG and JPEG files up to this size are read once, whole: Pillow decodes the same
# bytes the integrity check walks (a file changed meanwhile cannot give a check of
# one content and pixels of another), and each small file costs one open and one
# read instead of two opens and Pillow's many small reads and seeks.
_READ_WHOLE_BYTES = 1 << 20
_WHOLE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def _small_file_data(fd: int, size: int) -> bytes | None:
    """The content of open file ``fd`` if it is a PNG or JPEG of at most
    :data:`_READ_WHOLE_BYTES`; None for any other (read by Pillow from the file)."""
    if size > _READ_WHOLE_BYTES:
        return None
    parts, left = [], size + 1  # one more: a file grown since its size was read
    while left > 0:
        part = os.read(fd, left)  # not more than asked: a larger buffer costs a page fault a page
        if not part:
            break
        parts.append(part)
        left -= len(part)
    data = b"".join(parts)  # one part: that very object, not a copy
    if len(data) != size or not data.startswith(_WHOLE_SIGNATURES):
        return None  # changed since its size was read, or another format: Pillow reads it
    return data


def _decode(
    path: Path,
    data: bytes | None,
    options: ReadOptions,
    first_only: bool,
    parallel: bool,
    rows_once: bool,
) -> list[LoadedImage]:
    try:
        # Only the plugins of the supported formats parse the file: another format's
        # plugin never runs on it (their parsers are where hostile files do harm).
        image = Image.open(path if data is None else io.BytesIO(data), formats=_OPENED)
    except Image.UnidentifiedImageError:
        if _is_tiff(path):
            return _decode_tiff_pages(path, options, first_only)
        other = _other_format(path, data)
        if other is not None:
            raise InputError(
                f"{path}: {other} files are not supported (supported: {', '.join(FORMATS)})"
            ) from None
        raise InputError(f"{path}: not a recognised image file") from None
    with image:
        if image.format == "TIFF":
            _libtiff.install()
        _check_size(image.size, path, options)
        if _WALK_PNG and not options.allow_truncated and streamable(image, path, data):
            return [_walked_png(image, path, data, options, parallel=parallel,
                                rows_once=rows_once)]  # fmt: skip
        # Pillow's decoders keep quiet about some damage: the stream is checked on
        # its own, beside the decode, and its verdict is in before any pixel is used.
        starts = _jpeg_starts(image, options, first_only)
        stream = integrity.StreamCheck(path, image.format, background=parallel, starts=starts,
                                       data=data)  # fmt: skip
        try:
            frames = _decode_frames(image, path, options, first_only, stream)
        except Exception:
            damage, _ = stream.result()
            if damage is None or options.allow_truncated:
                raise
            raise InputError(
                f"{path}: cannot decode the image (damaged data: {damage.reason})"
            ) from None
        damage, _ = stream.result()
        if damage is not None and not options.allow_truncated:
            raise InputError(f"{path}: cannot decode the image (damaged data: {damage.reason})")
        if damage is not None:
            frames[0].damage = damage.reason
        return frames


# Pillow's plugins log what they skip through the "PIL" logger; without a handler
# Python prints each as a bare line naming no file, before the error that names
# it. A handler that drops them keeps them off stderr; an application that sets
# up logging still receives them (they propagate).
logging.getLogger("PIL").addHandler(logging.NullHandler())

# The plugins that may open a file: the supported formats' (JPEG's opens a
# multi-picture JPEG too, as MPO).
_OPENED = FORMATS


def _other_format(path: Path, data: bytes | None) -> str | None:
    """The unsupported format a file is in, told by its first bytes alone as each of
    Pillow's plugins tells its own (``accept``), without parsing it; the one its
    extension names where that one accepts them too, or has no signature to tell
    (TGA). None if none does."""
    try:
        if data is None:
            with open(path, "rb") as handle:
                data = handle.read(16)
    except OSError:
        return None
    Image.init()
    accepting = []
    for name, (_, accept) in Image.OPEN.items():
        with contextlib.suppress(Exception):
            if name not in _OPENED and accept is not None and accept(data[:16]):
                accepting.append(name)
    named = Image.registered_extensions().get(path.suffix.lower())
    signless = named in Image.OPEN and Image.OPEN[named][1] is None  # TGA has no signature
    if named not in _OPENED and (named in accepting or signless):
        return named
    return accepting[0] if accepting else None


# PNGs that pngrows reads exactly are decoded by its walk of the file (tests turn
# this off to compare with Pillow's own decode beside the damage check).
_WALK_PNG = True


def _walked_png(
    image: Image.Image,
    path: Path,
    data: bytes | None,
    options: ReadOptions,
    *,
    parallel: bool,
    rows_once: bool,
) -> LoadedImage:
    """A PNG that :func:`~cnnfilters.pngrows.streamable` accepts, decoded by one walk of
    the file: the damage check's inflate is the decode's, where Pillow's decode
    beside the check inflated the data twice.

    As large as the images :func:`_decode_into_array` takes, it is given as its
    rows are read (:class:`~cnnfilters.pngrows.PngRows`, decoding in a thread of
    its own when ``parallel``) to a caller that reads them once; otherwise it is
    decoded whole, band by band into one array, in this thread (a second one
    would have nothing to overlap with).
    """
    width, height = image.size
    large = height * width * (1 if image.mode == "L" else 4) >= _MAPPED_MEMORY_BYTES
    frame = _Frame(path, "PNG", options, image.info.get("icc_profile") or None)
    streamed = rows_once and large
    rows = PngRows(path, image.mode, image.size, background=parallel and streamed, data=data)
    if streamed:
        return frame.loaded(image.mode, rows, 8, "uint8")
    return _array_frame(frame, image.mode, (rows.read_all(), None), 1)


def _jpeg_starts(image: Image.Image, options: ReadOptions, first_only: bool) -> tuple[int, ...]:
    """Where the JPEG stream of each image that will be read starts in the file.

    A camera's MPO file is a JPEG followed by more JPEGs (a preview, the
    other eye of a stereo pair): its first image is the photo, read as every
    viewer reads it; the others only with ``--all-frames``. Seeking reads the
    MPF index and headers only, no pixels.
    """
    if image.format != "MPO" or not options.all_frames or first_only:
        return (0,)
    starts = []
    for index in range(image.n_frames):
        image.seek(index)
        starts.append(image.tile[0].offset)
    image.seek(0)
    return tuple(starts)


def _check_size(
    size: tuple[int, int], path: Path, options: ReadOptions, *, frame: int | None = None
) -> None:
    """Refuse an empty frame, or one over the pixel limit, from the ``(width, height)``
    its header gives (before decoding)."""
    width, height = size
    which = "" if frame is None else f"frame {frame}: "
    if width <= 0 or height <= 0:
        raise InputError(f"{path}: {which}the image is empty ({width} x {height} pixels)")
    if width * height > options.max_pixels:
        raise InputError(
            f"{path}: {which}{width} x {height} = {width * height} pixels is more than "
            f"--max-pixels {options.max_pixels}"
        )


def _decode_frames(
    image: Image.Image,
    path: Path,
    options: ReadOptions,
    first_only: bool,
    stream: integrity.StreamCheck,
) -> list[LoadedImage]:
    count = getattr(image, "n_frames", 1) or 1
    wanted = count if options.all_frames and not first_only else 1
    notices = []
    if count > 1 and wanted == 1:
        notices.append(f"{count} frames: only the first is used (--all-frames for all)")
    frames = []
    for index in range(wanted):
        if index:
            image.seek(index)
            _check_size(image.size, path, options, frame=index)
        frame = _decode_frame(image, path, options, stream)
        frame.frame, frame.frames = index, count
        frames.append(frame)
    frames[0].notices[:0] = notices
    return frames


def _orientation(exif: Callable[[], Image.Exif], notices: list[str]) -> int:
    """The EXIF orientation (1-8; 1 when there is none) of pixels already decoded.

    Only ever called after the decode: ``getexif()`` of a PNG decodes the
    image itself, and a decoder error swallowed here would leave the pixels
    zero. EXIF that does not parse is no reason to refuse pixels that did:
    they are used as stored, and a notice says so.
    """
    try:
        value = exif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # any parse failure; the decoded pixels are not affected
        notices.append("EXIF data unreadable: the orientation was not applied")
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _hold_tiff_orientation(image: Image.Image, notices: list[str]) -> int | None:
    """A TIFF frame's orientation, read before the decode, which is then made as stored.

    Pillow turns a TIFF frame itself while loading it, into a size it swapped
    when the frame was opened; on strips its own reader decodes (uncompressed
    data, Pillow 13) the pixels come out scrambled, and a frame of a
    multi-page file is not turned at all. So the tag is set to 1 in Pillow's
    copy, the size put back to the stored one, and cnnfilters turns the
    decoded pixels as it does for every format. A TIFF's EXIF is its IFD:
    reading it decodes no pixel. None for other formats.
    """
    if image.format != "TIFF":
        return None
    orientation = _orientation(image.getexif, notices)
    if orientation != 1:
        image.getexif()[_EXIF_ORIENTATION] = 1
        tags = image.tag_v2
        image._size = (int(tags[256]), int(tags[257]))  # ImageWidth, ImageLength
    return orientation


def _png_exif(facts: integrity.PngFacts | None, path: Path) -> Image.Exif:
    """A PNG's EXIF: its eXIf chunk, kept by the damage check, else what a walk of its
    chunks finds (ImageMagick's text chunk, see :func:`~cnnfilters.pngrows.png_exif`)."""
    exif = Image.Exif()
    if facts is not None and facts.exif:
        exif.load(b"Exif\x00\x00" + facts.exif)
        return exif
    with open(path, "rb") as handle:
        found = png_exif(handle)
    if found is not None:
        exif.load(found)
    return exif


@dataclass
class _Frame:
    """What every step of decoding one frame needs to know and may add to."""

    path: Path
    fmt: str
    options: ReadOptions
    icc: bytes | None
    notices: list[str] = field(default_factory=list)
    key: tuple[int, ...] | None = None  # a tRNS colour key
    tiff: _TiffLayout | None = None

    def loaded(self, mode: str, pixels: np.ndarray | PngRows, depth: int, kind: str) -> LoadedImage:
        icc = self.icc if kind in ("uint8", "uint16") else None
        return LoadedImage(self.path, self.fmt, mode, pixels, depth, kind,  # type: ignore[arg-type]
                           icc_profile=icc, notices=self.notices)  # fmt: skip

    def keyed_alpha(self, pixels: np.ndarray, top: int) -> np.ndarray | None:
        if self.key is None:
            return None
        self.notices.append(f"tRNS colour key {self.key}: those pixels are transparent")
        return _colour_key_alpha(pixels, self.key, top)


def _decode_frame(
    image: Image.Image, path: Path, options: ReadOptions, stream: integrity.StreamCheck
) -> LoadedImage:
    frame = _Frame(path, image.format or "PNG", options, image.info.get("icc_profile") or None)
    deep_colour = ";16" in _rawmode(image) and image.mode not in (*_SIXTEEN_BIT_GRAY, "I")
    if deep_colour and frame.fmt == "PNG":
        return _png16_frame(frame, image.mode, stream.result()[1])
    if deep_colour:
        raise InputError(
            f"{path}: 16-bit colour {frame.fmt} is not supported (it would be clipped to 8 "
            "bits); convert it to a 16-bit PNG"
        )
    frame.tiff = _TiffLayout.of(image)
    held = _hold_tiff_orientation(image, frame.notices)
    # The whole decode, before anything else reads the file: into an array of
    # ours where Pillow allows it, else into Pillow's own memory.
    decoded = _decode_into_array(image)
    orientation = held if held is not None else _orientation(image.getexif, frame.notices)
    frame.key = _colour_key(image, stream)
    if decoded is not None:
        return _array_frame(frame, image.mode, decoded, orientation)
    if getattr(image, "n_frames", 1) > 1:
        image = image.copy()  # detach this frame: the file object moves on to the next
    if orientation != 1 and options.auto_orient:
        # By the value read above: a detached frame has lost its EXIF.
        image = image.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else image
    _orientation_notice(orientation, options, frame.notices)
    if image.mode in (*_SIXTEEN_BIT_GRAY, "I") or (image.mode == "L" and frame.tiff.signed):
        return _integer_frame(frame, image)
    if image.mode == "F":
        return _float_frame(frame, image)
    return _eight_bit_frame(frame, image)


_SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N")
# Pillow modes decoded straight into an array of ours, and the mode of that
# array's layout: Pillow keeps RGB as 4 bytes a pixel (RGBX).
_MAPPED = {"L": "L", "RGB": "RGBX", "RGBA": "RGBA"}
# Images from this size on (in Pillow's layout) are decoded into an anonymous
# memory map of ours, whose unused quarter (RGB's padding byte) goes back to
# the system once compacted; smaller ones the plain way, which costs less.
_MAPPED_MEMORY_BYTES = 4 << 20


def _decode_into_array(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Decode a single-frame 8-bit PNG or JPEG of ``_MAPPED_MEMORY_BYTES`` or more in
    Pillow's layout (1 MP of colour, 4 MP of gray) into arrays of ours: the colour,
    ``(H, W)`` or ``(H, W, 3)`` C-contiguous uint8, and the alpha of ``RGBA`` (else
    None). Other files are decoded by ``image.load()`` into Pillow's memory, and
    None is returned.

    Pillow decodes into the image memory it finds ready when mode and size
    match, so that memory is made a view of ours (``Image.frombuffer``), in
    Pillow's layout: 4 bytes a pixel for RGB. The colour is then moved to 3
    bytes a pixel within that memory, front to back (a pixel never moves
    forward), and the quarter left over is given back to the system: the
    decoded image is held once, not as Pillow's image beside a copy of it.
    """
    mapped = _MAPPED.get(image.mode)
    width, height = image.size
    size = height * width * (1 if mapped == "L" else 4)
    if (
        mapped is None
        or image.format not in ("PNG", "JPEG")
        or getattr(image, "n_frames", 1) > 1
        or size < _MAPPED_MEMORY_BYTES
    ):
        image.load()
        return None
    memory = mmap.mmap(-1, size)
    flat = np.frombuffer(memory, dtype=np.uint8)
    buffer = flat.reshape((height, width) if mapped == "L" else (height, width, 4))
    target = Image.frombuffer(mapped, image.size, buffer, "raw", mapped, 0, 1).im
    mode = image.mode
    image._mode = mapped  # the decoder writes the layout of the memory it is given
    image.im = target
    try:
        image.load()
        if image.im is not target:  # a Pillow that made memory of its own: copy it over
            decoded = np.asarray(image)  # in our layout, or as RGB where it kept its mode
            if buffer.ndim == 3:
                buffer[..., : decoded.shape[-1]] = decoded
            else:
                buffer[...] = decoded
    finally:
        image._mode = mode
    if mapped == "L":
        return buffer, None
    alpha = np.ascontiguousarray(buffer[..., 3]) if mapped == "RGBA" else None
    colour = flat[: height * width * 3].reshape(height, width, 3)
    step = max(1, (1 << 20) // (4 * width))
    for first in range(0, height, step):
        padded, packed = buffer[first : first + step], colour[first : first + step]
        if np.may_share_memory(padded, packed):  # the first blocks overlap their source
            padded = padded.copy()
        for channel in range(3):  # one plane at a time: 4x faster than [..., :3] at once
            packed[..., channel] = padded[..., channel]
    if hasattr(mmap, "MADV_DONTNEED"):
        used = -(-colour.nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
        if used < size:
            memory.madvise(mmap.MADV_DONTNEED, used, size - used)
    return colour, alpha


def _array_frame(
    frame: _Frame,
    mode: str,
    decoded: tuple[np.ndarray, np.ndarray | None],
    orientation: int,
) -> LoadedImage:
    """An 8-bit frame decoded by :func:`_decode_into_array`: ``pixels`` are a
    channels-first view of its colour array."""
    colour, alpha = decoded
    if orientation != 1 and frame.options.auto_orient:
        colour = _orient_array(colour, orientation)
        alpha = None if alpha is None else _orient_array(alpha, orientation)
    _orientation_notice(orientation, frame.options, frame.notices)
    colour.flags.writeable = False  # the references read the same pixels
    pixels = colour[np.newaxis] if colour.ndim == 2 else colour.transpose(2, 0, 1)
    if mode != "RGBA":
        alpha = frame.keyed_alpha(pixels, 255)
    loaded = frame.loaded(mode, pixels, 8, "uint8")
    return _apply_alpha_policy(loaded, alpha, frame.options)


def _png16_frame(frame: _Frame, mode: str, facts: integrity.PngFacts | None) -> LoadedImage:
    """A 16-bit colour or gray + alpha PNG, decoded by pypng (Pillow keeps 8 bits)."""
    array = _read_png16(frame.path)
    orientation = _orientation(lambda: _png_exif(facts, frame.path), frame.notices)
    array = _orient_array(array, orientation if frame.options.auto_orient else 1)
    values = np.moveaxis(array, -1, 0)
    colour_channels = 3 if values.shape[0] >= 3 else 1
    pixels, alpha = values[:colour_channels], None
    if values.shape[0] in (2, 4):
        alpha = values[-1]
    elif facts is not None and facts.trns and len(facts.trns) == 2 * colour_channels:
        frame.key = struct.unpack(f">{colour_channels}H", facts.trns)
        alpha = frame.keyed_alpha(pixels, 65535)
    loaded = frame.loaded(f"{mode} (16-bit)", pixels, 16, "uint16")
    _orientation_notice(orientation, frame.options, frame.notices)
    return _apply_alpha_policy(loaded, alpha, frame.options)


def _integer_frame(frame: _Frame, image: Image.Image) -> LoadedImage:
    """16-bit gray, 32-bit integers and signed 8-bit samples."""
    mode, tiff, notices = image.mode, frame.tiff or _TiffLayout(), frame.notices
    if mode in _SIXTEEN_BIT_GRAY:
        pixels = np.asarray(image).astype(np.uint16)[np.newaxis]
        if tiff.min_is_white:
            pixels = 65535 - pixels
            notices.append("MinIsWhite: inverted, so that 0 is black")
        loaded = frame.loaded(mode, pixels, 16, "uint16")
        return _apply_alpha_policy(loaded, frame.keyed_alpha(pixels, 65535), frame.options)
    if mode == "L":  # signed 8-bit
        pixels = np.asarray(image).view(np.int8).astype(np.float64)[np.newaxis]
        notices.append("signed 8-bit samples")
        return frame.loaded(mode, pixels, 16, "int32")
    pixels = np.asarray(image)
    if tiff.unsigned32:
        pixels = pixels.view(np.uint32)  # Pillow's mode I is signed: undo the wrap
        if tiff.min_is_white:
            pixels = np.uint32(0xFFFFFFFF) - pixels
            notices.append("MinIsWhite: inverted, so that 0 is black")
    pixels = pixels.astype(np.float64)[np.newaxis]
    if pixels.min() >= 0 and pixels.max() <= 65535:
        notices.append("32-bit integer image with values in 0..65535: read as 16-bit")
        return frame.loaded(mode, pixels.astype(np.uint16), 16, "uint16")
    return frame.loaded(mode, pixels, 16, "int32")


def _float_frame(frame: _Frame, image: Image.Image) -> LoadedImage:
    """32-bit float samples; float64 where float32 arithmetic would overflow."""
    return _float_pixels(frame, np.asarray(image)[np.newaxis])


def _float_pixels(frame: _Frame, samples: np.ndarray) -> LoadedImage:
    """``(C, H, W)`` float samples of any width, computed in float32 (float64 if needed)."""
    pixels = samples.astype(np.float32)
    if not np.isfinite(pixels).all():
        raise InputError(f"{frame.path}: the floating-point image holds NaN or infinite values")
    if frame.tiff is not None and frame.tiff.min_is_white:
        frame.notices.append("MinIsWhite float samples: used as stored (no inversion is defined)")
    largest = float(np.max(np.abs(pixels), initial=0.0))
    if largest > _FLOAT32_SAFE:
        # Differences, sums and squares of such values overflow float32 to inf.
        pixels = pixels.astype(np.float64)
        frame.notices.append(
            f"float values up to {largest:.3g}: computed in float64, where float32 overflows"
        )
    return frame.loaded("F" if pixels.shape[0] == 1 else "RGB (float)", pixels, 16, "float32")


# The first bytes of a TIFF and of a BigTIFF, in either byte order.
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) in _TIFF_MAGIC


def _decode_tiff_pages(path: Path, options: ReadOptions, first_only: bool) -> list[LoadedImage]:
    """A TIFF whose layout Pillow does not read (float16/float64 samples, float
    RGB, planar float, ...), decoded by tifffile.

    tifffile raises on data that stops early or does not decompress; what it
    only logs is kept as a notice.
    """
    import logging

    import tifffile

    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    logger.propagate, propagate = False, logger.propagate
    try:
        with tifffile.TiffFile(path) as tiff:
            pages = list(tiff.pages)
            if not pages:
                raise InputError(f"{path}: the TIFF file holds no image")
            wanted = len(pages) if options.all_frames and not first_only else 1
            frames = []
            for index, page in enumerate(pages[:wanted]):
                frame = _tifffile_frame(page, path, options, index if len(pages) > 1 else None)
                frame.frame, frame.frames = index, len(pages)
                frames.append(frame)
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # tifffile's failure on data it cannot read, whatever its type
        raise InputError(f"{path}: cannot decode the image ({exc})") from None
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    if len(pages) > wanted:
        frames[0].notices.insert(
            0, f"{len(pages)} frames: only the first is used (--all-frames for all)"
        )
    frames[0].notices.extend(f"tifffile: {text}" for text in said)
    return frames


# PhotometricInterpretation: MinIsWhite, MinIsBlack, RGB.
_TIFF_PHOTOMETRIC = {0: "MinIsWhite", 1: "MinIsBlack", 2: "RGB"}


def _tifffile_frame(
    page: tifffile.TiffPage, path: Path, options: ReadOptions, number: int | None
) -> LoadedImage:
    """One TIFF page read by tifffile: gray or RGB, with an optional alpha sample."""
    _check_size((page.imagewidth, page.imagelength), path, options, frame=number)
    photometric = int(page.photometric)
    if photometric not in _TIFF_PHOTOMETRIC or page.imagedepth > 1:
        raise InputError(
            f"{path}: TIFF photometric interpretation {photometric} is not supported "
            f"(supported here: {', '.join(_TIFF_PHOTOMETRIC.values())})"
        )
    colour = 3 if photometric == 2 else 1
    extra = tuple(int(v) for v in page.extrasamples)
    if page.samplesperpixel not in (colour, colour + 1):
        raise InputError(f"{path}: {page.samplesperpixel} samples per pixel are not supported")
    samples = page.asarray()
    if page.samplesperpixel > 1 and page.axes.startswith("S"):  # planar: one plane a sample
        samples = np.moveaxis(samples, 0, -1)
    samples = samples.reshape(page.imagelength, page.imagewidth, page.samplesperpixel)
    icc = page.tags.valueof(34675)
    frame = _Frame(path, "TIFF", options, bytes(icc) if icc else None)
    orientation = int(page.tags.valueof(274) or 1)
    orientation = orientation if orientation in _TRANSPOSE else 1
    samples = _orient_array(samples, orientation if options.auto_orient else 1)
    _orientation_notice(orientation, options, frame.notices)
    values = np.moveaxis(samples, -1, 0)
    pixels, alpha = values[:colour], values[colour] if len(values) > colour else None
    if alpha is not None and extra[:1] == (1,):
        raise InputError(f"{path}: premultiplied (associated) alpha is not supported here")
    return _tifffile_samples(frame, pixels, alpha, photometric == 0)


def _tifffile_samples(
    frame: _Frame, pixels: np.ndarray, alpha: np.ndarray | None, min_is_white: bool
) -> LoadedImage:
    """``(C, H, W)`` samples of any numpy type, and alpha, as a :class:`LoadedImage`."""
    path, options, colour = frame.path, frame.options, pixels.shape[0]
    kind = pixels.dtype
    if kind.kind == "f":
        loaded = _float_pixels(frame, pixels)
        if kind.itemsize == 8 and loaded.pixels.dtype == np.float32:
            frame.notices.append("float64 samples: computed in float32")
        if alpha is None:
            return loaded
        if options.alpha == "flatten":
            raise InputError(
                f"{path}: --alpha flatten is not defined for floating-point samples "
                "(use --alpha keep or drop)"
            )
        return _apply_alpha_policy(loaded, quantize(alpha.astype(np.float64) * 65535, 16), options)
    if min_is_white:
        top = np.iinfo(kind).max if kind.kind == "u" else None
        if top is None:
            raise InputError(f"{path}: signed MinIsWhite samples are not supported")
        pixels = top - pixels
        frame.notices.append("MinIsWhite: inverted, so that 0 is black")
    if kind in (np.uint8, np.bool_):
        eight = pixels.astype(np.uint8) * (255 if kind == np.bool_ else 1)
        mode = "RGB" if colour == 3 else "L"
        alpha = None if alpha is None else alpha.astype(np.uint8) * (255 if kind == np.bool_ else 1)
        return _apply_alpha_policy(frame.loaded(mode, eight, 8, "uint8"), alpha, options)
    if kind == np.uint16:
        loaded = frame.loaded(
            "RGB (16-bit)" if colour == 3 else "I;16", pixels.astype(np.uint16), 16, "uint16"
        )
        return _apply_alpha_policy(loaded, alpha, options)
    frame.notices.append(f"{kind} samples")
    if alpha is not None:
        frame.notices.append(f"the {kind} alpha sample is not used")
    return frame.loaded(f"{kind}", pixels.astype(np.float64), 16, "int32")


# 8-bit modes Pillow converts for us, and the notice each conversion gives.
_CONVERSIONS = {
    "PA": ("RGBA", "palette image expanded to RGB"),
    "1": ("L", "1-bit image read as 0 and 255"),
    "La": ("LA", "premultiplied alpha converted to straight alpha"),
    "RGBa": ("RGBA", "premultiplied alpha converted to straight alpha"),
}


def _as_8_bit(frame: _Frame, image: Image.Image) -> Image.Image:
    """``L``, ``LA``, ``RGB`` or ``RGBA``: palettes expanded, other modes converted."""
    mode = image.mode
    if mode == "P":
        has_alpha = "transparency" in image.info or image.palette.mode == "RGBA"
        frame.notices.append("palette image expanded to RGB")
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode in _CONVERSIONS:
        target, notice = _CONVERSIONS[mode]
        frame.notices.append(notice)
        return image.convert(target)
    if mode in ("L", "LA", "RGB", "RGBA"):
        return image
    try:
        converted = image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(f"{frame.path}: cannot convert mode {mode} to RGB ({exc})") from None
    frame.notices.append(f"{mode} converted to RGB by Pillow (no colour management)")
    if frame.icc:
        frame.notices.append(f"the {mode} ICC profile no longer fits and is not copied")
        frame.icc = None
    return converted


def _eight_bit_frame(frame: _Frame, image: Image.Image) -> LoadedImage:
    original_mode = image.mode
    image = _as_8_bit(frame, image)
    alpha = None
    if image.mode in ("LA", "RGBA"):
        alpha = np.asarray(image.getchannel("A"))
        image = image.convert(image.mode[:-1])
    values = _as_array(image)  # (H, W, C) uint8, our own copy
    pixels = values[np.newaxis] if values.ndim == 2 else np.moveaxis(values, -1, 0)
    if alpha is None and original_mode in ("1", "L", "RGB"):
        alpha = frame.keyed_alpha(pixels, 255)
    loaded = frame.loaded(original_mode, pixels, 8, "uint8")
    return _apply_alpha_policy(loaded, alpha, frame.options)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class _TiffLayout:
    """What a TIFF frame's tags say about its samples that Pillow's mode does not."""

    min_is_white: bool = False  # PhotometricInterpretation 0
    signed: bool = False  # SampleFormat 2
    unsigned32: bool = False  # 32-bit unsigned integers (Pillow reads them as signed)

    @classmethod
    def of(cls, image: Image.Image) -> _TiffLayout:
        tags = getattr(image, "tag_v2", None)
        if tags is None:
            return cls()
        bits = tags.get(258, (8,))
        bits = bits[0] if isinstance(bits, tuple) else bits
        fmt = tags.get(339, (1,))
        fmt = fmt[0] if isinstance(fmt, tuple) else fmt
        return cls(min_is_white=tags.get(262) == 0 and image.mode in ("I;16", "I;16B", "I", "F"),
                   signed=fmt == 2 and bits == 8, unsigned32=fmt == 1 and bits == 32)  # fmt: skip


def _colour_key(image: Image.Image, stream: integrity.StreamCheck) -> tuple[int, ...] | None:
    """A PNG's tRNS colour key for a gray or RGB image, on the decoded scale (libpng's
    rule: a pixel equal to it is transparent); None for palettes and other files."""
    key = image.info.get("transparency")
    if image.format != "PNG" or image.mode not in ("1", "L", "RGB", "I;16", "I", "I;16B"):
        return None
    if isinstance(key, int):
        key = (key,)
    if not isinstance(key, tuple) or not all(isinstance(v, int) for v in key):
        return None
    facts = stream.result()[1]
    depth = facts.bit_depth if facts is not None else 8
    if depth < 8:  # Pillow scales 1/2/4-bit gray to 0..255, but not the key
        key = tuple(v * (255 // ((1 << depth) - 1)) for v in key)
    return key


def _colour_key_alpha(pixels: np.ndarray, key: tuple[int, ...], top: int) -> np.ndarray:
    """Alpha of ``(C, H, W)`` pixels: 0 where every channel equals the key, else opaque."""
    dtype = np.uint16 if top > 255 else np.uint8
    keyed = np.all(pixels == np.array(key).reshape(-1, 1, 1), axis=0)
    return np.where(keyed, 0, top).astype(dtype)


def _as_array(image: Image.Image) -> np.ndarray:
    """The pixels of an 8-bit ``L`` or ``RGB`` image as ``(H, W[, C])`` uint8.

    Copied in strips of rows: ``np.asarray(image)`` goes through one
    ``tobytes()`` of the whole image, whose pieces and their join would double
    the peak memory of a large image.
    """
    width, height = image.size
    bands = len(image.getbands())
    if width * height * bands <= _WHOLE_COPY_BYTES:
        return np.asarray(image)
    shape = (height, width) if bands == 1 else (height, width, bands)
    values = np.empty(shape, dtype=np.uint8)
    step = max(1, (8 << 20) // max(1, width * bands))
    for top in range(0, height, step):
        bottom = min(top + step, height)
        values[top:bottom] = np.asarray(image.crop((0, top, width, bottom)))
    return values


def _orientation_notice(orientation: int, options: ReadOptions, notices: list[str]) -> None:
    if orientation != 1 and options.auto_orient:
        notices.append(f"turned upright by its EXIF orientation ({orientation})")
    elif orientation != 1:
        notices.append(f"EXIF orientation {orientation} not applied (--no-auto-orient)")


def _apply_alpha_policy(
    image: LoadedImage, alpha: np.ndarray | None, options: ReadOptions
) -> LoadedImage:
    """keep: set alpha aside for the outputs; drop: forget it; flatten: composite first."""
    if alpha is None:
        return image
    top = float(image.max_value)
    if options.alpha == "drop" or (options.alpha == "keep" and int(alpha.min()) >= top):
        if int(alpha.min()) < top:
            image.notices.append("alpha channel dropped (--alpha drop)")
        return image
    if options.alpha == "keep":
        image.alpha = alpha
        image.notices.append("alpha channel kept beside the results (--alpha keep)")
        return image
    colour = np.array(options.background[: image.channels], dtype=np.float64) * (top / 255)
    if image.channels == 1:
        colour = np.array([np.dot(options.background, (0.299, 0.587, 0.114)) * top / 255])
    weight = alpha.astype(np.float64) / top
    flat = image.pixels * weight + colour[:, np.newaxis, np.newaxis] * (1 - weight)
    # Round to the file's levels, so that the Pillow references see the same pixels.
    image.pixels = quantize(flat, image.bit_depth)
    background = ",".join(str(v) for v in options.background)
    image.notices.append(f"alpha flattened onto the background {background} (--alpha flatten)")
    return image


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit colour or gray+alpha PNG as ``(H, W, C)`` uint16, with pypng."""
    import png  # pypng: correct unfiltering of every PNG row filter, in pure Python

    # read(), not asDirect(): asDirect() shifts the samples down to the sBIT
    # depth, but sBIT is only a hint; the stored samples are the values (libpng).
    with open(path, "rb") as handle:
        width, height, rows, info = png.Reader(file=handle).read()
        array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    return array.reshape(height, width, info["planes"])


def _orient_array(array: np.ndarray, orientation: int) -> np.ndarray:
    """``(H, W, ...)`` turned as ``ImageOps.exif_transpose`` turns an image."""
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(transforms[orientation](array))


def level_dtype(bit_depth: int) -> type:
    """The sample type of output levels of ``bit_depth`` (8 or 16) bits."""
    return np.uint8 if bit_depth == 8 else np.uint16


def levels_outside(values: np.ndarray, top: int) -> int:
    """How many ``values`` round to a level outside ``0..top`` (and are clipped)."""
    return int(np.count_nonzero((values < -0.5) | (values >= top + 0.5)))


def quantize(values: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Round half up (as Pillow) and clip to ``0..2^bits - 1``: uint8 or uint16.

    Infinities are clipped to the ends; NaN becomes 0.

    float32 input is rounded in float32, which is exact here: ``x + 0.5`` is
    representable for every ``|x| < 2^22``. Done in blocks, in cache.
    """
    values = np.asarray(values)
    top = (1 << bit_depth) - 1
    dtype = level_dtype(bit_depth)
    work = np.float32 if values.dtype == np.float32 else np.float64
    out = np.empty(values.shape, dtype=dtype)
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    step = 1 << 18
    for start in range(0, flat_in.size, step):
        block = flat_in[start : start + step].astype(work)
        np.add(block, 0.5, out=block)
        np.floor(block, out=block)
        np.fmax(block, 0, out=block)  # fmax, not clip: NaN becomes 0, never an undefined cast
        np.minimum(block, top, out=block)
        flat_out[start : start + step] = block
    return out


def _finite_peak(values: np.ndarray) -> float:
    """The largest finite value (0 for none): a map's scale ignores overflowed values,
    which are drawn at the end of the scale."""
    peak = float(np.max(values, initial=0.0))
    if math.isfinite(peak):
        return peak
    return float(np.max(values, initial=0.0, where=np.isfinite(values)))


def signed_to_image(
    values: np.ndarray, bit_depth: int = 8, units: float | None = None
) -> tuple[np.ndarray, float]:
    """Show a signed map: 0 at mid-gray, scaled so that no value is clipped.

    Returns ``(pixels, units_per_level)``: a value ``v`` is drawn at
    ``mid + v / units_per_level`` with ``mid = 2^(bits-1)``, and
    ``units_per_level = max|v| / (mid - 1)`` (1 for an all-zero map) unless
    ``units`` is given (a strip of a larger map drawn on the map's scale).
    """
    mid = 1 << (bit_depth - 1)
    if units is None:
        units = units_per_level(_finite_peak(np.abs(values)), mid - 1)
    scaled = _scaled(values, units)
    scaled += scaled.dtype.type(mid)
    return quantize(scaled, bit_depth), units


def unsigned_to_image(
    values: np.ndarray, bit_depth: int = 8, units: float | None = None
) -> tuple[np.ndarray, float]:
    """Show a map of values >= 0 from black (0) to white (its maximum).

    Returns ``(pixels, units_per_level)`` with ``units_per_level = max / top``
    unless ``units`` is given.
    """
    top = (1 << bit_depth) - 1
    if units is None:
        units = units_per_level(_finite_peak(values), top)
    return quantize(_scaled(values, units), bit_depth), units


def units_per_level(peak: float, levels: int) -> float:
    """The value of one level when ``peak`` takes ``levels`` (1 for an all-zero map; the
    smallest float for a map of subnormal values, whose quotient would be 0)."""
    if peak <= 0:
        return 1.0
    return peak / levels or math.ulp(0.0)


def _scaled(values: np.ndarray, units: float) -> np.ndarray:
    """``values`` in levels, for display: by the reciprocal of ``units``, float32 values in
    float32, others in float64. Where that reciprocal does not fit float32 (a map of
    values near the smallest normal float32), in float64; where it does not fit
    float64 either, by division."""
    values = np.asarray(values)
    factor = 1 / units
    if values.dtype == np.float32 and factor <= _FLOAT32_MAX:
        return np.multiply(values, np.float32(factor), dtype=np.float32)
    if math.isfinite(factor):
        return np.multiply(values, factor, dtype=np.float64)
    return np.divide(values, units, dtype=np.float64)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def mosaic(values: np.ndarray, gap: int = 0) -> np.ndarray:
    """Lay the channels of ``(C, H, W)`` side by side when they are not an image's 1 or 3."""
    if values.shape[0] in (1, 3):
        return values
    tiles = []
    for index, channel in enumerate(values):
        if index and gap:
            tiles.append(np.zeros((channel.shape[0], gap), dtype=values.dtype))
        tiles.append(channel)
    return np.concatenate(tiles, axis=1)[np.newaxis]


def signed_mosaic(rows: Rows, gap: int = 0, bit_depth: int = 8) -> tuple[np.ndarray, float]:
    """``signed_to_image(mosaic(rows.whole(), gap), bit_depth)``, a strip at a time.

    Two passes over the strips: the scale from the largest finite ``|v|``, then
    each strip drawn on it into its place (its channels side by side, unless
    they are an image's 1 or 3). The pixels are the same; no float copy of the
    whole map, its mosaic or its absolute values is made (for a float64 map of
    6 M values: 144 MB of them).
    """
    mid = 1 << (bit_depth - 1)
    peak = max((_finite_peak(np.abs(strip)) for strip in rows.strips()), default=0.0)
    units = units_per_level(peak, mid - 1)
    channels, height, width = rows.shape
    if channels in (1, 3):
        pixels = np.empty(rows.shape, dtype=level_dtype(bit_depth))
    else:
        # The gaps are value 0: mid-gray.
        pixels = np.full((1, height, channels * width + (channels - 1) * gap), mid,
                         dtype=level_dtype(bit_depth))  # fmt: skip
    top = 0
    for strip in rows.strips():
        drawn, _ = signed_to_image(strip, bit_depth, units)
        below = top + strip.shape[1]
        if channels in (1, 3):
            pixels[:, top:below] = drawn
        else:
            for index, channel in enumerate(drawn):
                left = index * (width + gap)
                pixels[0, top:below, left : left + width] = channel
        top = below
    return pixels, units


@dataclass(frozen=True)
class Rows:
    """An image too large to hold: its shape, and strips of rows made on demand.

    ``strips()`` yields ``(C, rows, W)`` arrays of ``dtype``, top to bottom.
    """

    shape: tuple[int, int, int]
    dtype: type
    strips: Callable[[], Iterator[np.ndarray]]

    def whole(self) -> np.ndarray:
        """Every strip, as one ``shape`` array (as large as the image)."""
        return np.concatenate(list(self.strips()), axis=1)
