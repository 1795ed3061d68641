"""One decoded frame as an array: Pillow's modes and layouts to ``(C, H, W)`` samples.

Each mode becomes gray or RGB on its file scale, with its alpha set aside
(or flattened, or dropped), its orientation applied, and what was done said
in the notices; a large 8-bit frame is decoded straight into a memory map
of ours. TIFF pages that Pillow cannot read are :mod:`cnnfilters.tiff`'s.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import integrity
from .errors import InputError
from .levels import quantize
from .loaded import LoadedImage, ReadOptions
from .pngrows import PngRows, png_exif


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
class Frame:
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
        return LoadedImage(
            self.path,
            self.fmt,
            mode,
            pixels,
            depth,
            kind,  # type: ignore[arg-type]
            icc_profile=icc,
            notices=self.notices,
        )

    def keyed_alpha(self, pixels: np.ndarray, top: int) -> np.ndarray | None:
        if self.key is None:
            return None
        self.notices.append(f"tRNS colour key {self.key}: those pixels are transparent")
        return _colour_key_alpha(pixels, self.key, top)


def decode_frame(
    image: Image.Image, path: Path, options: ReadOptions, stream: integrity.StreamCheck
) -> LoadedImage:
    frame = Frame(path, image.format or "PNG", options, image.info.get("icc_profile") or None)
    deep_colour = ";16" in rawmode(image) and image.mode not in (*_SIXTEEN_BIT_GRAY, "I")
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
        return array_frame(frame, image.mode, decoded, orientation)
    if getattr(image, "n_frames", 1) > 1:
        image = image.copy()  # detach this frame: the file object moves on to the next
    if orientation != 1 and options.auto_orient:
        # By the value read above: a detached frame has lost its EXIF.
        image = image.transpose(TRANSPOSE[orientation]) if orientation in TRANSPOSE else image
    orientation_notice(orientation, options, frame.notices)
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
MAPPED_MEMORY_BYTES = 4 << 20


def _decode_into_array(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Decode a single-frame 8-bit PNG or JPEG of ``MAPPED_MEMORY_BYTES`` or more in
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
        or size < MAPPED_MEMORY_BYTES
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
        for channel in range(3):  # a plane at a time: numpy copies it in one pass
            packed[..., channel] = padded[..., channel]
    if hasattr(mmap, "MADV_DONTNEED"):
        used = -(-colour.nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
        if used < size:
            memory.madvise(mmap.MADV_DONTNEED, used, size - used)
    return colour, alpha


def array_frame(
    frame: Frame,
    mode: str,
    decoded: tuple[np.ndarray, np.ndarray | None],
    orientation: int,
) -> LoadedImage:
    """An 8-bit frame decoded by :func:`_decode_into_array`: ``pixels`` are a
    channels-first view of its colour array."""
    colour, alpha = decoded
    if orientation != 1 and frame.options.auto_orient:
        colour = orient_array(colour, orientation)
        alpha = None if alpha is None else orient_array(alpha, orientation)
    orientation_notice(orientation, frame.options, frame.notices)
    colour.flags.writeable = False  # the references read the same pixels
    pixels = colour[np.newaxis] if colour.ndim == 2 else colour.transpose(2, 0, 1)
    if mode != "RGBA":
        alpha = frame.keyed_alpha(pixels, 255)
    loaded = frame.loaded(mode, pixels, 8, "uint8")
    return apply_alpha_policy(loaded, alpha, frame.options)


def _png16_frame(frame: Frame, mode: str, facts: integrity.PngFacts | None) -> LoadedImage:
    """A 16-bit colour or gray + alpha PNG, decoded by pypng (Pillow keeps 8 bits)."""
    array = _read_png16(frame.path)
    orientation = _orientation(lambda: _png_exif(facts, frame.path), frame.notices)
    array = orient_array(array, orientation if frame.options.auto_orient else 1)
    values = np.moveaxis(array, -1, 0)
    colour_channels = 3 if values.shape[0] >= 3 else 1
    pixels, alpha = values[:colour_channels], None
    if values.shape[0] in (2, 4):
        alpha = values[-1]
    elif facts is not None and facts.trns and len(facts.trns) == 2 * colour_channels:
        frame.key = struct.unpack(f">{colour_channels}H", facts.trns)
        alpha = frame.keyed_alpha(pixels, 65535)
    loaded = frame.loaded(f"{mode} (16-bit)", pixels, 16, "uint16")
    orientation_notice(orientation, frame.options, frame.notices)
    return apply_alpha_policy(loaded, alpha, frame.options)


def _integer_frame(frame: Frame, image: Image.Image) -> LoadedImage:
    """16-bit gray, 32-bit integers and signed 8-bit samples."""
    mode, tiff, notices = image.mode, frame.tiff or _TiffLayout(), frame.notices
    if mode in _SIXTEEN_BIT_GRAY:
        pixels = np.asarray(image).astype(np.uint16)[np.newaxis]
        if tiff.min_is_white:
            pixels = 65535 - pixels
            notices.append("MinIsWhite: inverted, so that 0 is black")
        loaded = frame.loaded(mode, pixels, 16, "uint16")
        return apply_alpha_policy(loaded, frame.keyed_alpha(pixels, 65535), frame.options)
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


def _float_frame(frame: Frame, image: Image.Image) -> LoadedImage:
    """32-bit float samples; float64 where float32 arithmetic would overflow."""
    return float_pixels(frame, np.asarray(image)[np.newaxis])


def float_pixels(frame: Frame, samples: np.ndarray) -> LoadedImage:
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


# 8-bit modes Pillow converts for us, and the notice each conversion gives.
_CONVERSIONS = {
    "PA": ("RGBA", "palette image expanded to RGB"),
    "1": ("L", "1-bit image read as 0 and 255"),
    "La": ("LA", "premultiplied alpha converted to straight alpha"),
    "RGBa": ("RGBA", "premultiplied alpha converted to straight alpha"),
}


def _as_8_bit(frame: Frame, image: Image.Image) -> Image.Image:
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


def _eight_bit_frame(frame: Frame, image: Image.Image) -> LoadedImage:
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
    return apply_alpha_policy(loaded, alpha, frame.options)


TRANSPOSE = {
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
        return cls(
            min_is_white=tags.get(262) == 0 and image.mode in ("I;16", "I;16B", "I", "F"),
            signed=fmt == 2 and bits == 8,
            unsigned32=fmt == 1 and bits == 32,
        )


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


def orientation_notice(orientation: int, options: ReadOptions, notices: list[str]) -> None:
    if orientation != 1 and options.auto_orient:
        notices.append(f"turned upright by its EXIF orientation ({orientation})")
    elif orientation != 1:
        notices.append(f"EXIF orientation {orientation} not applied (--no-auto-orient)")


def apply_alpha_policy(
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


def orient_array(array: np.ndarray, orientation: int) -> np.ndarray:
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


# Decoded 8-bit images up to this size are copied out of Pillow at once; larger
# ones in strips (a whole tobytes() and its pieces would double the peak).
_WHOLE_COPY_BYTES = 64 << 20


_EXIF_ORIENTATION = 0x0112


# Float images with larger magnitudes are computed in float64: float32 holds
# up to 3.4e38, so a square of 1.9e19 or a sum of a few 1e38 overflows.
_FLOAT32_SAFE = 1e18


def rawmode(image: Image.Image) -> str:
    """The decoder's raw mode of the first tile (``RGB;16B`` for a 48-bit PNG)."""
    if not image.tile:
        return ""
    args = image.tile[0][3] if len(image.tile[0]) > 3 else None
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def check_size(
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
