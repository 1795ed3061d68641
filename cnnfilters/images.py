"""Image files in and out: modes, bit depth, orientation, atomic writes.

Reading turns a file into a float32 array ``(C, H, W)`` on its file scale
(0..255 or 0..65535) and says what it did in ``notices``. Writing is atomic:
a temporary file in the target's folder, flushed and fsynced, then renamed
over the target, so a target is either untouched or whole.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .errors import InputError, OutputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "LoadedImage",
    "load_image",
    "mosaic",
    "quantize",
    "save_array",
    "save_image",
    "signed_to_image",
    "to_pil",
    "unsigned_to_image",
]

# Formats read; anything else (PSD, ICO, PCX, ...) is refused by name.
FORMATS = ("PNG", "JPEG", "TIFF", "GIF", "BMP", "WEBP")
DEFAULT_MAX_PIXELS = 100_000_000

# Fast PNG: level 1 with zlib's RLE strategy wrote a slightly *smaller* file
# than Pillow's default level at about 3.6 times the speed on photographs.
PNG_COMPRESS_LEVEL = 1
_EXIF_ORIENTATION = 0x0112
_Z_RLE = 3


@dataclass
class LoadedImage:
    """A decoded image as floats, with what is needed to write results back.

    ``pixels`` is ``(C, H, W)`` float32 with C = 1 (gray) or 3 (RGB);
    ``max_value`` is 255 or 65535; ``pil`` is the 8-bit ``L``/``RGB`` image the
    Pillow references see (``None`` for 16-bit data, which Pillow's 8-bit
    operations would clip).
    """

    path: Path
    format: str
    mode: str
    pixels: np.ndarray
    bit_depth: int
    pil: Image.Image | None
    alpha: np.ndarray | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def max_value(self) -> int:
        return (1 << self.bit_depth) - 1

    @property
    def channels(self) -> int:
        return self.pixels.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.pixels.shape[1], self.pixels.shape[2]


def _check_readable_file(path: Path) -> None:
    """Refuse what is not a regular, non-empty file before opening it (a FIFO would hang)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file (a FIFO, socket or device)")
    if info.st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")


def load_image(
    path: str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    auto_orient: bool = True,
) -> LoadedImage:
    """Read and decode an image file.

    Modes: ``1``, ``L``, ``P`` and ``LA`` become one gray channel or RGB
    (a palette with colours); ``RGB``, ``RGBA``, ``CMYK`` become RGB;
    16-bit gray (``I;16``) stays 16-bit. Alpha is set aside in ``alpha``.
    EXIF orientation is applied unless ``auto_orient`` is false. The pixel
    count is checked against ``max_pixels`` from the header, before decoding.

    Raises :class:`InputError` with the path and the problem.
    """
    path = Path(path)
    _check_readable_file(path)
    notices: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = Image.open(path)
        except Image.UnidentifiedImageError:
            raise InputError(f"{path}: not a recognised image file") from None
        except Image.DecompressionBombError as exc:
            raise InputError(f"{path}: {exc} (see --max-pixels)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{path}: cannot read the image header ({exc})") from None
        with image:
            if image.format not in FORMATS:
                raise InputError(
                    f"{path}: {image.format} files are not supported "
                    f"(supported: {', '.join(FORMATS)})"
                )
            width, height = image.size
            if width == 0 or height == 0:
                raise InputError(f"{path}: the image is empty ({width} x {height} pixels)")
            if width * height > max_pixels:
                raise InputError(
                    f"{path}: {width} x {height} = {width * height} pixels exceeds the limit "
                    f"of {max_pixels} (raise it with --max-pixels)"
                )
            if getattr(image, "n_frames", 1) > 1:
                notices.append(f"{image.n_frames} frames: only the first one is used")
            previous = Image.MAX_IMAGE_PIXELS
            try:
                # Our own limit was checked above; Pillow's must not contradict it.
                Image.MAX_IMAGE_PIXELS = max(max_pixels, previous or 0)
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                image.load()
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise InputError(f"{path}: cannot decode the {image.format} data ({exc})") from None
            finally:
                Image.MAX_IMAGE_PIXELS = previous
            fmt = image.format
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation not in (1, None) and auto_orient:
                image = ImageOps.exif_transpose(image)
                notices.append(f"turned upright by its EXIF orientation ({orientation})")
            elif orientation not in (1, None):
                notices.append(f"EXIF orientation {orientation} ignored (--no-auto-orient)")
            loaded = _to_array(image, path, fmt, notices)
    for warning in caught:
        loaded.notices.append(f"decoder warning: {warning.message}")
    return loaded


def _to_array(image: Image.Image, path: Path, fmt: str, notices: list[str]) -> LoadedImage:
    mode = image.mode
    alpha = None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(image).astype(np.float32)
        return LoadedImage(path, fmt, mode, values[np.newaxis], 16, None, None, notices)
    if mode in ("I", "F"):
        raise InputError(
            f"{path}: {'32-bit integer' if mode == 'I' else 'floating-point'} images "
            f"(mode {mode}) are not supported; convert to 8 or 16 bits first"
        )
    if mode == "P":
        has_alpha = "transparency" in image.info or image.palette.mode == "RGBA"
        image = image.convert("RGBA" if has_alpha else "RGB")
        notices.append("palette image expanded to RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
        notices.append("palette image expanded to RGB")
    elif mode == "1":
        image = image.convert("L")
        notices.append("1-bit image read as 0 and 255")
    elif mode == "CMYK":
        image = image.convert("RGB")
        notices.append("CMYK converted to RGB (Pillow's naive formula, no colour management)")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: cannot convert mode {mode} to RGB ({exc})") from None
        notices.append(f"mode {mode} converted to RGB")
    if image.mode in ("LA", "RGBA"):
        alpha = np.asarray(image.getchannel("A")).astype(np.float32)
        image = image.convert(image.mode[:-1])
        if alpha.min() < 255:
            notices.append("alpha channel set aside: outputs are opaque")
        else:
            alpha = None
    values = np.asarray(image).astype(np.float32)
    pixels = values[np.newaxis] if values.ndim == 2 else np.moveaxis(values, -1, 0)
    return LoadedImage(path, fmt, mode, np.ascontiguousarray(pixels), 8, image, alpha, notices)


def quantize(values: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Round half up (as Pillow) and clip to ``0..2^bits - 1``: uint8 or uint16."""
    top = (1 << bit_depth) - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.clip(np.floor(np.asarray(values, dtype=np.float64) + 0.5), 0, top).astype(dtype)


def signed_to_image(values: np.ndarray, bit_depth: int = 8) -> tuple[np.ndarray, float]:
    """Show a signed map: 0 at mid-gray, scaled so that no value is clipped.

    Returns ``(pixels, units_per_level)``: a value ``v`` is drawn at
    ``mid + v / units_per_level`` with ``mid = 2^(bits-1)``, and
    ``units_per_level = max|v| / (mid - 1)`` (1 for an all-zero map).
    """
    mid = 1 << (bit_depth - 1)
    peak = float(np.max(np.abs(values), initial=0.0))
    units = peak / (mid - 1) if peak > 0 else 1.0
    return quantize(mid + np.asarray(values, dtype=np.float64) / units, bit_depth), units


def unsigned_to_image(values: np.ndarray, bit_depth: int = 8) -> tuple[np.ndarray, float]:
    """Show a map of values >= 0 from black (0) to white (its maximum).

    Returns ``(pixels, units_per_level)`` with ``units_per_level = max / top``.
    """
    top = (1 << bit_depth) - 1
    peak = float(np.max(values, initial=0.0))
    units = peak / top if peak > 0 else 1.0
    return quantize(np.asarray(values, dtype=np.float64) / units, bit_depth), units


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


def to_pil(pixels: np.ndarray) -> Image.Image:
    """``(1 or 3, H, W)`` uint8/uint16 -> a Pillow image (``L``, ``RGB`` or ``I;16``)."""
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    elif pixels.ndim == 3:
        pixels = np.moveaxis(pixels, 0, -1)
    if pixels.dtype == np.uint16:
        if pixels.ndim == 3:
            raise OutputError("16-bit RGB output is not supported by Pillow; use 8 bits")
        return Image.fromarray(np.ascontiguousarray(pixels, dtype="<u2"))  # mode I;16
    return Image.fromarray(np.ascontiguousarray(pixels))


def _atomic_write(target: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in ``target``'s folder, then rename over it."""
    folder = target.parent
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, kept by name)
            dir=folder, prefix=f".{target.name}.", suffix=".tmp", delete=False
        )
    except FileNotFoundError:
        raise OutputError(f"{target}: the folder {folder} does not exist") from None
    except PermissionError:
        raise OutputError(f"{target}: permission denied in {folder}") from None
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    temp = Path(handle.name)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get normal permissions
        os.replace(temp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(exc, OSError):
            raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
        raise


def save_image(
    pixels: np.ndarray,
    target: str | os.PathLike,
    *,
    compress_level: int = PNG_COMPRESS_LEVEL,
) -> None:
    """Write ``(1 or 3, H, W)`` uint8/uint16 pixels as a PNG, atomically."""
    image = to_pil(pixels)
    options = {"compress_level": compress_level}
    if compress_level == PNG_COMPRESS_LEVEL:
        options["compress_type"] = _Z_RLE
    _atomic_write(Path(target), lambda fh: image.save(fh, format="PNG", **options))


def save_array(values: np.ndarray, target: str | os.PathLike) -> None:
    """Write exact float values as a ``.npy`` file, atomically."""
    _atomic_write(Path(target), lambda fh: np.save(fh, values, allow_pickle=False))
