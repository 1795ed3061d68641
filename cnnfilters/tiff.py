"""TIFF pages that Pillow cannot read (16-bit RGB, planar float, integers of any width),
decoded by tifffile, with libtiff's and tifffile's complaints kept as notices."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .frames import (
    TRANSPOSE,
    Frame,
    apply_alpha_policy,
    check_size,
    float_pixels,
    orient_array,
    orientation_notice,
)
from .levels import quantize
from .loaded import LoadedImage, ReadOptions

if TYPE_CHECKING:
    import tifffile


# The first bytes of a TIFF and of a BigTIFF, in either byte order.
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def is_tiff(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) in _TIFF_MAGIC


def decode_tiff_pages(path: Path, options: ReadOptions, first_only: bool) -> list[LoadedImage]:
    """A TIFF whose layout Pillow does not read (float16/float64 samples, float
    RGB, planar float, ...), decoded by tifffile.

    tifffile raises on data that stops early or does not decompress; what it
    only logs is kept as a notice.
    """

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
    check_size((page.imagewidth, page.imagelength), path, options, frame=number)
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
    frame = Frame(path, "TIFF", options, bytes(icc) if icc else None)
    orientation = int(page.tags.valueof(274) or 1)
    orientation = orientation if orientation in TRANSPOSE else 1
    samples = orient_array(samples, orientation if options.auto_orient else 1)
    orientation_notice(orientation, options, frame.notices)
    values = np.moveaxis(samples, -1, 0)
    pixels, alpha = values[:colour], values[colour] if len(values) > colour else None
    if alpha is not None and extra[:1] == (1,):
        raise InputError(f"{path}: premultiplied (associated) alpha is not supported here")
    return _tifffile_samples(frame, pixels, alpha, photometric == 0)


def _tifffile_samples(
    frame: Frame, pixels: np.ndarray, alpha: np.ndarray | None, min_is_white: bool
) -> LoadedImage:
    """``(C, H, W)`` samples of any numpy type, and alpha, as a :class:`LoadedImage`."""
    path, options, colour = frame.path, frame.options, pixels.shape[0]
    kind = pixels.dtype
    if kind.kind == "f":
        loaded = float_pixels(frame, pixels)
        if kind.itemsize == 8 and loaded.pixels.dtype == np.float32:
            frame.notices.append("float64 samples: computed in float32")
        if alpha is None:
            return loaded
        if options.alpha == "flatten":
            raise InputError(
                f"{path}: --alpha flatten is not defined for floating-point samples "
                "(use --alpha keep or drop)"
            )
        return apply_alpha_policy(loaded, quantize(alpha.astype(np.float64) * 65535, 16), options)
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
        return apply_alpha_policy(frame.loaded(mode, eight, 8, "uint8"), alpha, options)
    if kind == np.uint16:
        loaded = frame.loaded(
            "RGB (16-bit)" if colour == 3 else "I;16", pixels.astype(np.uint16), 16, "uint16"
        )
        return apply_alpha_policy(loaded, alpha, options)
    frame.notices.append(f"{kind} samples")
    if alpha is not None:
        frame.notices.append(f"the {kind} alpha sample is not used")
    return frame.loaded(f"{kind}", pixels.astype(np.float64), 16, "int32")
