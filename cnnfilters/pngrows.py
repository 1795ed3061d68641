"""A PNG decoded by one walk of its file, which is also its damage check.

A command that reads an image's rows once, top to bottom (``grayscale``,
``avgpool``), need not hold the whole decoded image: :class:`PngRows` reads
the file as the rows are asked for (:meth:`PngRows.take`); any other caller
gets the whole image, band by band into one array (:meth:`PngRows.read_all`).
Its zlib stream is inflated here, with every check of :mod:`cnnfilters.integrity`
made on the way (:func:`~cnnfilters.integrity.png_image_data`),
and each band of filtered scanlines is given to Pillow's own PNG decoder to
undo the filters (``Image.frombytes(..., "zip")``, as a stored zlib stream),
after the previous band's last row as a row with no filter: so the pixels
are exactly those of Pillow's decode of the whole file, and the integrity
check no longer inflates the file a second time.

The last band is held back until the walk has reached IEND whole, so no
pixel of a file found damaged at its end gets written: the command's output,
written atomically, is then dropped and the input fails as it would have
before any work.

In the background a thread of its own decodes a few bands ahead of the
reader: decoding overlaps the command's work. A batch worker, which has one
core, and :meth:`~PngRows.read_all` decode each band when it is asked for.

Only what this decodes exactly as the plain path does is read so (see
:func:`streamable`): a single-frame, non-interlaced, 8-bit gray or RGB PNG
with no transparency and no EXIF orientation to apply.
"""

from __future__ import annotations

import io
import queue
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from . import integrity
from .errors import InputError

__all__ = ["PngRows", "png_exif", "streamable"]

# Rows of a band: about 1 MB of decoded pixels.
_BAND_BYTES = 1 << 20
# Bands decoded ahead of the reader by the background thread.
_AHEAD = 3
# How often a background thread waiting for room checks that its reader is still there.
_POLL_SECONDS = 0.1
_CHANNELS = {"L": 1, "RGB": 3}
_EXIF_ORIENTATION = 0x0112


class _Closed(Exception):
    """The reader went away: the background thread stops."""


def streamable(image: Image.Image, path: Path, data: bytes | None = None) -> bool:
    """Whether ``image`` (opened, not loaded) is a PNG that :class:`PngRows` reads exactly
    as the plain path does: one frame, 8-bit gray or RGB, not interlaced, no tRNS
    colour key, and no EXIF orientation (other than 1) to apply or to tell of
    (an eXIf chunk may come after the image data: the file's chunks are walked
    to find one). ``data``: the file's bytes, when they were read already."""
    if (
        image.format != "PNG"
        or image.mode not in _CHANNELS
        or getattr(image, "n_frames", 1) != 1
        or image.info.get("interlace")
        or "transparency" in image.info
        or len(image.tile) != 1
        or _raw_mode(image.tile[0].args) != image.mode  # 8 bits a sample
    ):
        return False
    return _orientation(path, data) == 1


def _opened(path: Path, data: bytes | None) -> IO[bytes]:
    """The file to read: its bytes when they were read already, else the file itself."""
    return io.BytesIO(data) if data is not None else open(path, "rb")


def _raw_mode(args: object) -> object:
    """The raw mode of a Pillow tile's arguments (the mode alone, or first)."""
    if isinstance(args, tuple) and args:
        return args[0]
    return args


def _orientation(path: Path, data: bytes | None) -> int:
    """The EXIF orientation of a PNG (1 when it has none; see :func:`png_exif`); 0 when
    it cannot be told."""
    try:
        with _opened(path, data) as handle:
            found = png_exif(handle)
        if found is None:
            return 1
        exif = Image.Exif()
        exif.load(found)
        value = exif.get(_EXIF_ORIENTATION, 1)
        return value if isinstance(value, int) else 0
    except Exception:  # unreadable EXIF: the plain path says what it makes of it
        return 0


# ImageMagick keeps EXIF in a text chunk of this keyword (as hex digits); Pillow
# reads it there when the file has no eXIf chunk.
_RAW_EXIF = b"Raw profile type exif"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
# The largest text Pillow inflates from one chunk (PngImagePlugin.MAX_TEXT_CHUNK).
_MAX_TEXT = 1 << 20


def png_exif(handle: IO[bytes]) -> bytes | None:
    """A PNG's EXIF as Pillow finds it: its eXIf chunk, else ImageMagick's "Raw profile
    type exif" text chunk (tEXt, zTXt or iTXt, before or after the image data);
    None when it has neither.

    A walk of the chunks' headers from the file's start, which reads no pixel
    data; the bytes start with ``Exif\0\0`` (what ``Image.Exif.load`` takes).
    Raises ValueError (or OSError) on a file it cannot walk.
    """
    handle.seek(8)
    raw = None
    while True:
        head = handle.read(8)
        if len(head) < 8:
            return raw
        length, kind = struct.unpack(">I4s", head)
        if kind == b"eXIf":
            return b"Exif\x00\x00" + handle.read(length)
        if kind == b"IEND":
            return raw
        if kind in _TEXT_CHUNKS and raw is None and length > len(_RAW_EXIF):
            body = handle.read(length)
            handle.seek(4, 1)
            keyword, _, rest = body.partition(b"\x00")
            if keyword == _RAW_EXIF:
                raw = _raw_profile(kind, rest)
            continue
        handle.seek(length + 4, 1)


def _raw_profile(kind: bytes, rest: bytes) -> bytes:
    """The EXIF bytes of an ImageMagick raw profile: after three lines (an empty one,
    the profile's name, its length), hex digits over many lines."""
    if kind == b"zTXt":
        rest = _inflate(rest[1:])
    elif kind == b"iTXt":
        compressed = rest[:1] == b"\x01"
        rest = rest[2:].split(b"\x00", 2)[-1]  # after the language and translated keyword
        rest = _inflate(rest) if compressed else rest
    lines = rest.decode("latin-1").split("\n")
    return bytes.fromhex("".join(lines[3:]))


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, _MAX_TEXT)
    if inflater.unconsumed_tail:
        raise ValueError("the text chunk inflates past 1 MB")
    return text


class PngRows:
    """The ``(C, H, W)`` uint8 pixels of a PNG that :func:`streamable` accepted, given
    as strips of rows, once each, top to bottom (:meth:`take`), or all at once
    (:meth:`read_all`).

    Damage, or a failure of the decoder, is raised by :meth:`take` as an
    :class:`InputError` naming the file, and again by every later call.
    :meth:`close` lets the background thread go (any time; idempotent).
    """

    def __init__(
        self,
        path: Path,
        mode: str,
        size: tuple[int, int],
        *,
        background: bool,
        data: bytes | None = None,
    ) -> None:
        """``data``: the file's bytes when they were read already (a small file), read
        instead of the file."""
        width, height = size
        self.path, self.mode, self._data = path, mode, data
        self.shape = (_CHANNELS[mode], height, width)
        self.dtype = np.dtype(np.uint8)
        self._background = background
        self._bands: Iterator[np.ndarray] | None = None
        self._queue: queue.Queue[np.ndarray | BaseException] | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._held: list[np.ndarray] = []  # decoded rows not yet taken, (rows, W[, 3])
        self._next = 0  # the first row not yet taken
        self._error: BaseException | None = None

    # ------------------------------------------------------------- reading

    def take(self, first: int, stop: int) -> np.ndarray:
        """Rows ``first..stop`` as ``(C, rows, W)``: ``first`` must be the first row not
        yet taken."""
        if self._error is not None:
            raise self._error
        if first != self._next or not first <= stop <= self.shape[1]:
            raise ValueError(f"rows {first}..{stop} asked for; the next row is {self._next}")
        try:
            rows = self._rows(stop - first)
        except BaseException as exc:
            self._error = exc
            self.close()
            raise
        self._next = stop
        return rows[np.newaxis] if rows.ndim == 2 else rows.transpose(2, 0, 1)

    def read_all(self) -> np.ndarray:
        """Every row at once, ``(H, W)`` or ``(H, W, 3)`` C-contiguous uint8 (the layout
        of the plain decode), each band copied into place as it is decoded; then
        :meth:`close`. Errors as :meth:`take`'s."""
        channels, height, width = self.shape
        if self._next:
            raise ValueError(f"rows from 0 asked for; the next row is {self._next}")
        pixels = np.empty(
            (height, width) if channels == 1 else (height, width, channels), dtype=np.uint8
        )
        try:
            while self._next < height:
                band = self._band()
                pixels[self._next : self._next + len(band)] = band
                self._next += len(band)
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self.close()
        return pixels

    def _rows(self, count: int) -> np.ndarray:
        held = sum(len(band) for band in self._held)
        while held < count:
            band = self._band()
            self._held.append(band)
            held += len(band)
        joined = self._held[0] if len(self._held) == 1 else np.concatenate(self._held)
        rows, rest = joined[:count], joined[count:]
        self._held = [rest] if len(rest) else []
        return rows

    def _band(self) -> np.ndarray:
        if not self._background:
            if self._bands is None:
                self._bands = self._decode()
            return next(self._bands)
        if self._thread is None:
            self._queue = queue.Queue(maxsize=_AHEAD)
            self._thread = threading.Thread(
                target=self._produce, daemon=True, name="cnnfilters-png-rows"
            )
            self._thread.start()
        assert self._queue is not None
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop decoding: the background thread ends at its next band; the file is closed."""
        self._closed.set()
        self._held = []
        if self._bands is not None:  # decoded on demand: in this thread, not running now
            self._bands.close()

    # ------------------------------------------------------------ decoding

    def _produce(self) -> None:
        """The background thread: bands into the queue, or the error that stopped them."""
        try:
            for band in self._decode():
                self._put(band)
        except _Closed:
            return
        except BaseException as exc:  # handed to the reader's thread by take()
            try:
                self._put(exc)
            except _Closed:
                return

    def _put(self, item: np.ndarray | BaseException) -> None:
        assert self._queue is not None
        while True:
            if self._closed.is_set():
                raise _Closed
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _decode(self) -> Iterator[np.ndarray]:
        """Decoded bands, ``(rows, W)`` or ``(rows, W, 3)``, top to bottom; the last one
        only after the whole file was found whole."""
        channels, height, width = self.shape
        row_bytes = 1 + channels * width  # the filter type byte, then the samples
        band_rows = max(8, _BAND_BYTES // (channels * width))
        pending = bytearray()
        previous: bytes | None = None  # the last decoded row, as stored (no filter byte)
        done = 0
        with _opened(self.path, self._data) as handle:
            data = integrity.png_image_data(handle)
            try:
                for piece in data:
                    if self._closed.is_set():
                        raise _Closed
                    pending += piece
                    # Every whole band but the one with the last row.
                    while len(pending) >= band_rows * row_bytes and done + band_rows < height:
                        band, previous = self._unfilter(pending, band_rows, previous, data)
                        del pending[: band_rows * row_bytes]
                        done += band_rows
                        yield band
            except integrity.Damaged as exc:
                raise self._damaged(exc) from None
            # The walk reached IEND whole: the inflated length was the header's.
            band, _ = self._unfilter(pending, height - done, previous, data)
        yield band

    def _damaged(self, exc: integrity.Damaged) -> InputError:
        return InputError(
            f"{self.path}: cannot decode the image (damaged data: {exc.damage.reason})"
        )

    def _unfilter(
        self, data: bytearray, rows: int, previous: bytes | None, rest: Iterator[bytes]
    ) -> tuple[np.ndarray, bytes]:
        """``rows`` filtered scanlines from the start of ``data``, decoded by Pillow's
        PNG decoder. The row before them (already decoded) goes first, with no
        filter, since a scanline's filter may refer to the one above.

        Where the decoder fails (a filter type that does not exist, say), the
        error is the one the plain path gives for the file: the damage the
        rest of the file shows, else the error of Pillow's decode of the whole
        file.
        """
        channels, _, width = self.shape
        stored = zlib.compressobj(0)  # level 0: a copy, framed as zlib data
        head = b"" if previous is None else stored.compress(b"\x00" + previous)
        with memoryview(data) as view:
            body = stored.compress(view[: rows * (1 + channels * width)])
        count = rows + (previous is not None)
        try:
            decoded = Image.frombytes(
                self.mode, (width, count), b"".join((head, body, stored.flush())), "zip", self.mode
            )
        except (OSError, ValueError, SyntaxError) as exc:
            raise self._decode_error(exc, rest) from None
        pixels = np.asarray(decoded)
        if previous is not None:
            pixels = pixels[1:]
        return pixels, pixels[-1].tobytes()

    def _decode_error(self, error: Exception, rest: Iterator[bytes]) -> InputError:
        try:
            for _ in rest:
                pass
        except integrity.Damaged as exc:
            return self._damaged(exc)
        try:
            with _opened(self.path, self._data) as file, Image.open(file) as image:
                image.load()
        except Exception as exc:  # the plain path's words for this file
            error = exc
        detail = str(error) or type(error).__name__
        return InputError(f"{self.path}: cannot decode the image ({detail})")
