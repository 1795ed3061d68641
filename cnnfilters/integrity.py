"""Is a file's compressed data whole? Checks that do not take the decoder's word.

Pillow's decoders stop as soon as they hold the pixels they need and keep
quiet about what their codecs only warn of, so damaged data can decode to
wrong pixels without an error: a PNG whose IDAT checksums are wrong, a JPEG
whose entropy-coded data is corrupt (libjpeg fills the blocks it cannot
decode and only warns). These checks read the stream themselves, before the
pixels are decoded, and return what they found wrong:

PNG
    Every chunk's CRC-32; the zlib stream of the image (IDAT) and of each
    APNG frame (fdAT) inflated to its end, so that its Adler-32 is checked,
    and its length compared with what the header's geometry needs; an IEND
    chunk at the end. Inflating is most of a PNG's decode (ISA-L's inflate is
    about twice as fast as zlib's). The check runs beside the decode, in a
    thread of its own, or,
    for a PNG decoded as it is read (:mod:`cnnfilters.pngrows`), is that
    decode's only inflate.
JPEG
    libjpeg-turbo (through simplejpeg) decodes the entropy-coded data in
    strict mode, where every warning is an error: "Corrupt JPEG data: ...",
    "Premature end of JPEG file". It decodes at 1/8 scale, which still
    decodes every Huffman code but skips most of the inverse DCT.

Other formats rely on their decoders: libtiff's errors (collected by
:mod:`cnnfilters._libtiff`), libwebp's, and Pillow's GIF and BMP readers
refuse truncated and structurally broken data, but GIF, BMP, uncompressed
TIFF and lossy WebP carry no checksum, so a changed byte that still parses
cannot be told from an intended one.
"""

from __future__ import annotations

import io
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "Damage",
    "Damaged",
    "PngFacts",
    "StreamCheck",
    "check_file",
    "check_jpeg",
    "check_png",
    "png_image_data",
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
# Adam7: (first row, first column, row step, column step) of each pass.
_ADAM7 = (
    (0, 0, 8, 8),
    (0, 4, 8, 8),
    (4, 0, 8, 4),
    (0, 2, 4, 4),
    (2, 0, 4, 2),
    (0, 1, 2, 2),
    (1, 0, 2, 1),
)
# Inflated data is thrown away in pieces of this size: memory stays small.
_INFLATE_PIECE = 1 << 22

try:  # ISA-L inflates twice as fast as zlib, to the same bytes, checking the same Adler-32
    from isal import isal_zlib as _inflating
except ImportError:  # a platform without its wheel: zlib, slower
    _inflating = zlib  # type: ignore[assignment]
_INFLATE_ERRORS = (zlib.error, _inflating.error)


@dataclass(frozen=True)
class Damage:
    """What is wrong with a file's data."""

    reason: str


@dataclass
class PngFacts:
    """What the chunk walk of a PNG learned on the way (header and ancillary chunks)."""

    width: int = 0
    height: int = 0
    bit_depth: int = 0
    colour_type: int = 0
    interlaced: bool = False
    exif: bytes | None = None
    trns: bytes | None = None

    def raw_size(self, width: int, height: int) -> int:
        """Bytes of filtered scanlines an image of this width and height inflates to."""
        return png_raw_size(width, height, self.bit_depth, self.colour_type, self.interlaced)


def png_raw_size(
    width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool
) -> int:
    """Bytes of filtered scanlines a PNG image of this geometry inflates to."""
    bits = _PNG_CHANNELS.get(colour_type, 1) * bit_depth

    def size(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits + 7) // 8)

    if not interlaced:
        return size(width, height)
    total = 0
    for row, col, row_step, col_step in _ADAM7:
        total += size(-(-(width - col) // col_step), -(-(height - row) // row_step))
    return total


class _Inflater:
    """Inflates one zlib stream in pieces, keeping only its length (and handing each
    piece to ``sink``, if given)."""

    def __init__(
        self, what: str, expected: int, sink: Callable[[bytes], None] | None = None
    ) -> None:
        self.what, self.expected, self.sink = what, expected, sink
        self.engine = _inflating.decompressobj()
        self.length = 0
        self.extra = False

    def feed(self, data: bytes) -> Damage | None:
        if self.engine.eof:
            self.extra = self.extra or bool(data)
            return None
        try:
            while data:
                piece = self.engine.decompress(data, _INFLATE_PIECE)
                self.length += len(piece)
                if self.length > self.expected:
                    return Damage(f"{self.what}: more pixel data than the image holds")
                if self.sink is not None and piece:
                    self.sink(piece)
                data = self.engine.unconsumed_tail
                if self.engine.eof:
                    self.extra = self.extra or bool(self.engine.unused_data)
                    break
        except _INFLATE_ERRORS as exc:
            # The library's reason, without its error number.
            detail = re.sub(r"^Error -?\d+ ", "", str(exc).rpartition(": ")[2])
            return Damage(f"{self.what}: broken compressed data ({detail.lower()})")
        return None

    def finish(self) -> Damage | None:
        if not self.engine.eof:
            return Damage(f"{self.what}: the compressed pixel data stops early")
        if self.extra:
            return Damage(f"{self.what}: data after the end of the compressed pixels")
        if self.length != self.expected:
            return Damage(
                f"{self.what}: {self.length} bytes of pixel data, the header needs {self.expected}"
            )
        return None


def _chunks(handle: IO[bytes]) -> Iterator[tuple[int, bytes, bytes] | Damage]:
    """A PNG's chunks after the signature, as ``(offset, type, data)`` with their CRC
    checked, up to IEND; a :class:`Damage` (and the end) where one is not whole."""
    offset = 8
    while True:
        head = handle.read(8)
        if len(head) < 8:
            yield Damage(f"the file ends at byte {offset}, before IEND")
            return
        length, kind = struct.unpack(">I4s", head)
        name = kind.decode("latin-1")
        if length > 0x7FFFFFFF:
            yield Damage(f"the {name!r} chunk at byte {offset} declares {length} bytes")
            return
        data = handle.read(length)
        stored = handle.read(4)
        if len(data) < length or len(stored) < 4:
            yield Damage(f"the file ends inside the {name!r} chunk at byte {offset}")
            return
        if zlib.crc32(data, zlib.crc32(kind)) != struct.unpack(">I", stored)[0]:
            yield Damage(f"CRC error in the {name!r} chunk at byte {offset}")
            return
        yield offset, kind, data
        if kind == b"IEND":
            return
        offset += 12 + length


class _PngWalk:
    """The state of a chunk walk: the facts so far and the image's zlib streams."""

    def __init__(self, sink: Callable[[bytes], None] | None = None) -> None:
        self.facts = PngFacts()
        self.sink = sink  # takes the inflated IDAT data
        self.image: _Inflater | None = None  # the IDAT stream
        self.frames: list[_Inflater] = []  # one stream per APNG frame of fdAT chunks
        self.frame_size: tuple[int, int] | None = None  # the last fcTL's, until its data

    def take(self, kind: bytes, data: bytes) -> Damage | None:
        facts = self.facts
        if kind == b"IHDR" and len(data) == 13:
            (facts.width, facts.height, facts.bit_depth, facts.colour_type, _, _, interlace) = (
                struct.unpack(">IIBBBBB", data)
            )
            facts.interlaced = interlace == 1
        elif kind == b"fcTL" and len(data) >= 12:
            self.frame_size = struct.unpack(">II", data[4:12])
        elif kind == b"IDAT":
            if self.image is None:
                expected = facts.raw_size(facts.width, facts.height)
                self.image = _Inflater("IDAT", expected, self.sink)
            self.frame_size = None  # an fcTL before IDAT describes the image itself
            return self.image.feed(data)
        elif kind == b"fdAT":
            if self.frame_size is not None or not self.frames:
                width, height = self.frame_size or (facts.width, facts.height)
                self.frames.append(
                    _Inflater(f"APNG frame {len(self.frames) + 1}", facts.raw_size(width, height))
                )
                self.frame_size = None
            return self.frames[-1].feed(data[4:])
        elif kind in _KEPT:
            setattr(facts, _KEPT[kind], data)
        return None

    def finish(self) -> Damage | None:
        if self.image is None:
            return Damage("no IDAT chunk: the image has no pixel data")
        for stream in (self.image, *self.frames):
            damage = stream.finish()
            if damage:
                return damage
        return None


# Ancillary chunks whose data the walk keeps, and the PngFacts field for each.
_KEPT = {b"eXIf": "exif", b"tRNS": "trns"}


def _walk(handle: IO[bytes], walk: _PngWalk) -> Iterator[Damage | None]:
    """Take a PNG's chunks into ``walk``, yielding after each (None), and the first
    damage found as the last item."""
    if handle.read(8) != _PNG_SIGNATURE:
        yield Damage("not a PNG signature")
        return
    for chunk in _chunks(handle):
        if isinstance(chunk, Damage):
            yield chunk
            return
        _, kind, data = chunk
        damage = walk.take(kind, data)
        yield damage
        if damage:
            return
    yield walk.finish()


def check_png(handle: IO[bytes]) -> tuple[Damage | None, PngFacts]:
    """Walk a PNG's chunks: CRCs, the inflated length of every image stream, IEND.

    Returns the first damage found (or ``None``) and the facts gathered.
    """
    walk = _PngWalk()
    damage = None
    for damage in _walk(handle, walk):
        if damage:
            break
    return damage, walk.facts


class Damaged(Exception):
    """Raised by :func:`png_image_data` with the :class:`Damage` it found."""

    def __init__(self, damage: Damage) -> None:
        super().__init__(damage.reason)
        self.damage = damage


def png_image_data(handle: IO[bytes]) -> Iterator[bytes]:
    """The inflated image data of a PNG (its filtered scanlines), piece by piece as
    the file is read, with every check of :func:`check_png` made on the way.

    Raises :class:`Damaged` at the first damage; the generator ends only once
    the whole file has been checked, up to IEND, so a reader that holds back
    its last rows until then never uses pixels of a damaged file.
    """
    pieces: list[bytes] = []
    for damage in _walk(handle, _PngWalk(sink=pieces.append)):
        if damage:
            raise Damaged(damage)
        yield from pieces
        pieces.clear()


def check_jpeg(data: bytes) -> Damage | None:
    """Decode a JPEG's entropy-coded data strictly (libjpeg-turbo): any warning is damage."""
    import simplejpeg

    try:
        # To gray, the smallest output: every colour space converts to it (CMYK and
        # YCCK too), and each coefficient is decoded whatever the target.
        simplejpeg.decode_jpeg(data, "GRAY", min_factor=8, strict=True)
    except ValueError as exc:
        return Damage(str(exc).strip() or "broken data")
    return None


def check_file(
    path: Path, fmt: str, starts: tuple[int, ...] = (0,), data: bytes | None = None
) -> tuple[Damage | None, PngFacts | None]:
    """The checks above for a file Pillow identified as ``fmt``; other formats pass.

    An MPO file (a camera's JPEG with more images after the first, as its MPF
    index says) holds one JPEG stream per image: ``starts`` are the byte
    offsets of the ones that are read, and each is checked on its own.
    ``data``, when given, is the file's content, already read (the bytes
    Pillow decodes): the file is not read again.
    """
    if fmt == "PNG":
        if data is not None:
            return check_png(io.BytesIO(data))
        with open(path, "rb") as handle:
            return check_png(handle)
    if fmt in ("JPEG", "MPO"):
        data = path.read_bytes() if data is None else data
        for number, start in enumerate(starts):
            damage = check_jpeg(memoryview(data)[start:] if start else data)
            if damage is not None and number:
                return Damage(f"image {number}: {damage.reason}"), None
            if damage is not None:
                return damage, None
        return None, None
    return None, None


class StreamCheck:
    """:func:`check_file` in a thread of its own, or at once.

    zlib and libjpeg release the GIL, so in the background the check costs
    next to nothing in wall time while Pillow decodes. :meth:`result` waits
    for the verdict; an error of the check itself (an unreadable file) is
    raised there.
    """

    def __init__(
        self,
        path: Path,
        fmt: str | None,
        *,
        background: bool = True,
        starts: tuple[int, ...] = (0,),
        data: bytes | None = None,
    ) -> None:
        self._outcome: tuple[Damage | None, PngFacts | None] = (None, None)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if fmt not in ("PNG", "JPEG", "MPO"):
            return
        if background:
            self._thread = threading.Thread(
                target=self._run, args=(path, fmt, starts, data), daemon=True
            )
            self._thread.start()
        else:
            self._run(path, fmt, starts, data)

    def _run(self, path: Path, fmt: str, starts: tuple[int, ...], data: bytes | None) -> None:
        try:
            self._outcome = check_file(path, fmt, starts, data)
        except BaseException as exc:  # handed to the caller's thread by result()
            self._error = exc

    def result(self) -> tuple[Damage | None, PngFacts | None]:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        return self._outcome
