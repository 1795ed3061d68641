"""Independent decoders for differential tests, and files Pillow cannot write.

PNG is decoded with pypng (pure Python, its own inflate and unfiltering) and
JPEG with libjpeg-turbo through simplejpeg, in strict mode. Both return
``(C, H, W)`` colour planes (alpha left out) in the file's own sample type,
as :class:`cnnfilters.images.LoadedImage` holds them with the default
options, or ``None`` for files they do not cover here.
"""

from __future__ import annotations

import io
import itertools
import struct
from pathlib import Path

import numpy as np


def png_pixels(data: bytes) -> np.ndarray:
    """Colour planes of a PNG by pypng; sub-byte gray scaled to 0..255 as Pillow does."""
    import png

    width, height, rows, info = png.Reader(bytes=data).asDirect()
    planes = info["planes"]
    array = np.vstack([np.asarray(row, dtype=np.uint32) for row in rows])
    array = array.reshape(height, width, planes)
    depth = info["bitdepth"]
    if depth < 8:
        array = array * (255 // ((1 << depth) - 1))
    colour = 3 if planes >= 3 else 1
    dtype = np.uint16 if depth == 16 else np.uint8
    return np.moveaxis(array[..., :colour], -1, 0).astype(dtype)


def jpeg_pixels(data: bytes) -> np.ndarray | None:
    """Colour planes of a gray or YCbCr JPEG by libjpeg-turbo (None for CMYK)."""
    import simplejpeg

    _, _, space, _ = simplejpeg.decode_jpeg_header(data)
    if space in ("CMYK", "YCCK"):
        return None  # Pillow's CMYK -> RGB is a formula of its own, not a decode
    target = "GRAY" if space == "Gray" else "RGB"
    array = simplejpeg.decode_jpeg(data, target, strict=True)
    return np.moveaxis(array, -1, 0)


def independent_pixels(path: Path) -> np.ndarray | None:
    """The file's pixels by a decoder that is not Pillow's, or None where none is at hand."""
    data = Path(path).read_bytes()
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return png_pixels(data)
    if data.startswith(b"\xff\xd8"):
        return jpeg_pixels(data)
    return None


def encoded(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def tiff_bytes(array: np.ndarray, *, photometric: int = 1, sample_format: int = 1,
               orientation: int | None = None, extra_pages=()) -> bytes:  # fmt: skip
    """A little-endian TIFF written by hand: one uncompressed strip per page.

    ``array`` is ``(H, W)`` or ``(H, W, C)`` of any numpy sample type; each
    page of ``extra_pages`` is ``(array, photometric, sample_format,
    orientation)``. Pillow cannot write most of these layouts itself.
    """
    pages = [(array, photometric, sample_format, orientation), *extra_pages]
    out = bytearray(b"II*\0" + struct.pack("<I", 0))
    ifds = []
    for values, photo, fmt, turn in pages:
        values = np.asarray(values)
        data = values.astype(values.dtype.newbyteorder("<")).tobytes()
        data_at = len(out)
        out += data + b"\0" * (len(data) % 2)
        height, width = values.shape[:2]
        channels = 1 if values.ndim == 2 else values.shape[2]
        bits = values.dtype.itemsize * 8
        tags = [(256, 4, 1, width), (257, 4, 1, height)]
        for tag, value in ((258, bits), (339, fmt)):
            if channels == 1:
                tags.append((tag, 3, 1, value))
            else:
                tags.append((tag, 3, channels, len(out)))
                out += struct.pack(f"<{channels}H", *[value] * channels)
        tags += [(259, 3, 1, 1), (262, 3, 1, photo), (273, 4, 1, data_at), (277, 3, 1, channels),
                 (278, 4, 1, height), (279, 4, 1, len(data))]  # fmt: skip
        if turn:
            tags.append((274, 3, 1, turn))
        ifds.append(len(out))
        out += struct.pack("<H", len(tags))
        for tag, kind, count, value in sorted(tags):
            if kind == 3 and count == 1:
                out += struct.pack("<HHIHH", tag, kind, count, value, 0)
            else:
                out += struct.pack("<HHII", tag, kind, count, value)
        out += struct.pack("<I", 0)
    struct.pack_into("<I", out, 4, ifds[0])
    for here, following in itertools.pairwise(ifds):
        count = struct.unpack_from("<H", out, here)[0]
        struct.pack_into("<I", out, here + 2 + 12 * count, following)
    return bytes(out)
