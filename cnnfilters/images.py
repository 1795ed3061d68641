"""Reading image files: modes, bit depth, alpha, orientation, damage.

Reading turns a file into an array ``(C, H, W)`` on its file scale (0..255
or 0..65535) and says what it did in ``notices``; nothing is clipped or
dropped silently, and damaged data is refused (:mod:`cnnfilters.integrity`).
:meth:`LoadedImage.levels` turns a float result into the levels that
:mod:`cnnfilters.outputs` writes (with :mod:`cnnfilters.levels`).

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
import os
import stat
import warnings
from pathlib import Path

from PIL import Image, ImageFile

from . import _libtiff, frames, integrity
from .defaults import FORMATS
from .errors import InputError
from .frames import Frame, array_frame, check_size, decode_frame
from .loaded import LoadedImage, ReadOptions, parse_colour, pil_image
from .pngrows import PngRows, streamable
from .tiff import decode_tiff_pages, is_tiff

__all__ = [
    "LoadedImage",
    "ReadOptions",
    "load_frames",
    "load_image",
    "parse_colour",
    "pil_image",
]


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
        if is_tiff(path):
            return decode_tiff_pages(path, options, first_only)
        other = _other_format(path, data)
        if other is not None:
            raise InputError(
                f"{path}: {other} files are not supported (supported: {', '.join(FORMATS)})"
            ) from None
        raise InputError(f"{path}: not a recognised image file") from None
    with image:
        if image.format == "TIFF":
            _libtiff.install()
        check_size(image.size, path, options)
        if _WALK_PNG and not options.allow_truncated and streamable(image, path, data):
            return [_walked_png(image, path, data, options, parallel=parallel, rows_once=rows_once)]
        # Pillow's decoders keep quiet about some damage: the stream is checked on
        # its own, beside the decode, and its verdict is in before any pixel is used.
        starts = _jpeg_starts(image, options, first_only)
        stream = integrity.StreamCheck(
            path, image.format, background=parallel, starts=starts, data=data
        )
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
    large = height * width * (1 if image.mode == "L" else 4) >= frames.MAPPED_MEMORY_BYTES
    frame = Frame(path, "PNG", options, image.info.get("icc_profile") or None)
    streamed = rows_once and large
    rows = PngRows(path, image.mode, image.size, background=parallel and streamed, data=data)
    if streamed:
        return frame.loaded(image.mode, rows, 8, "uint8")
    return array_frame(frame, image.mode, (rows.read_all(), None), 1)


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
            check_size(image.size, path, options, frame=index)
        frame = decode_frame(image, path, options, stream)
        frame.frame, frame.frames = index, count
        frames.append(frame)
    frames[0].notices[:0] = notices
    return frames
