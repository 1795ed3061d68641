"""Independent decoders for differential tests: the pixels a file holds, not as Pillow says.

PNG is decoded with pypng (pure Python, its own inflate and unfiltering) and
JPEG with libjpeg-turbo through simplejpeg, in strict mode. Both return
``(C, H, W)`` colour planes (alpha left out) in the file's own sample type,
as :class:`cnnfilters.images.LoadedImage` holds them with the default
options, or ``None`` for files they do not cover here.
"""

from __future__ import annotations

import io
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
