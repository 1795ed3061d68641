"""Image formats of the outputs: the file name's extension chooses it.

``.png`` (or no extension) is PNG, written by cnnfilters' own encoder a strip
at a time; ``.jpg``/``.jpeg``, ``.tif``/``.tiff`` and ``.webp`` are encoded by
Pillow, TIFF by tifffile (8 or 16 bits, gray or colour, deflate). JPEG and
WebP hold 8 bits a sample: a 16-bit result (from a 16-bit input, or a float
one written on a 16-bit scale) cannot be written to them and is refused for
that input before its work. JPEG has no alpha: it is left out, with a
notice. WebP is written lossless, so that its pixels are the ones checked;
JPEG at quality 92 with full colour resolution (4:4:4).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO

import numpy as np

from .errors import CnnFiltersError

__all__ = ["SUFFIXES", "depth_refusal", "encode_with_pillow", "image_format"]

SUFFIXES = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".webp": "webp",
}
_EIGHT_BIT = ("jpeg", "webp")


def image_format(path: str | os.PathLike) -> str:
    """The format an output file is written in, from its extension (none: PNG)."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "png"
    if suffix not in SUFFIXES:
        raise CnnFiltersError(
            f"{os.fsdecode(path)}: cannot write {suffix} images; name the file .png, .jpg, "
            ".tif or .webp"
        )
    return SUFFIXES[suffix]


def depth_refusal(path: str | os.PathLike, *, sixteen_bit: bool) -> str | None:
    """Why an image of this depth cannot be written to ``path`` (None: it can)."""
    fmt = image_format(path)
    if sixteen_bit and fmt in _EIGHT_BIT:
        return (
            f"{os.fsdecode(path)}: a 16-bit result cannot be written as {fmt.upper()} "
            "(8 bits a sample); name it .png or .tif"
        )
    return None


def encode_with_pillow(
    handle: IO[bytes],
    pixels: np.ndarray,
    fmt: str,
    *,
    alpha: np.ndarray | None = None,
    icc_profile: bytes | None = None,
) -> None:
    """``(1 or 3, H, W)`` levels (and alpha) written to ``handle`` as ``fmt``."""
    if fmt == "tiff":
        _write_tiff(handle, pixels, alpha, icc_profile)
        return
    from PIL import Image

    planes = np.moveaxis(pixels, 0, -1)
    if alpha is not None and fmt != "jpeg":
        planes = np.concatenate([planes, alpha[..., np.newaxis]], axis=-1)
    if planes.shape[-1] == 1:
        planes = planes[..., 0]
    picture = Image.fromarray(np.ascontiguousarray(planes))
    options: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "jpeg":
        options.update(quality=92, subsampling=0)
    elif fmt == "webp":
        options.update(lossless=True)
        if picture.mode in ("L", "LA"):  # WebP holds RGB(A) only
            picture = picture.convert("RGBA" if picture.mode == "LA" else "RGB")
    picture.save(handle, format=fmt.upper(), **options)


def _write_tiff(
    handle: IO[bytes], pixels: np.ndarray, alpha: np.ndarray | None, icc: bytes | None
) -> None:
    import tifffile

    planes = np.moveaxis(pixels, 0, -1)
    extra = {}
    if alpha is not None:
        planes = np.concatenate([planes, alpha[..., np.newaxis]], axis=-1)
        extra["extrasamples"] = ("unassalpha",)
    if planes.shape[-1] == 1:
        planes = planes[..., 0]
    photometric = "rgb" if pixels.shape[0] == 3 else "minisblack"
    if icc:
        extra["iccprofile"] = icc
    # Into memory first: tifffile wants a file it can name, the handle is unnamed.
    encoded = io.BytesIO()
    tifffile.imwrite(
        encoded,
        np.ascontiguousarray(planes),
        photometric=photometric,
        compression="zlib",
        metadata=None,
        **extra,
    )
    handle.write(encoded.getbuffer())
