"""The values every layer shares, declared once: choices, defaults and limits.

This module imports nothing, so that the command line can build its options
from it without loading numpy or Pillow (``--help`` stays fast).
"""

from __future__ import annotations

__all__ = [
    "ALPHA_POLICIES",
    "COMMUTE_INPUTS",
    "CONVOLVE_BASES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_NAME",
    "EDGE_MODES",
    "FORMATS",
    "GRADIENT_BASES",
    "LEARN_TARGETS",
    "OPTIMIZERS",
    "OUTPUT_FORMATS",
    "PADDING_MODES",
    "PICTURE_MAPS",
    "PNG_COMPRESS_LEVEL",
]

# Padding modes of the engine, with torch's meanings.
PADDING_MODES: tuple[str, ...] = ("zeros", "replicate", "reflect", "circular")
# How average pooling treats rows and columns that do not fill a window.
EDGE_MODES: tuple[str, ...] = ("drop", "partial")
# What gradient and convolve run on: the grayscale image or each RGB channel.
GRADIENT_BASES: tuple[str, ...] = ("gray", "rgb")
# convolve: auto follows the input (its colour channels, or its gray).
CONVOLVE_BASES: tuple[str, ...] = ("auto", "gray", "rgb")
# How convolve's results become pixels: auto is signed for a kernel whose weights
# sum to 0 (a derivative), else clip.
PICTURE_MAPS: tuple[str, ...] = ("auto", "clip", "signed", "scale")
# What commute pools: the gradient maps, pixels scaled to [-1, 1], or pixels.
COMMUTE_INPUTS: tuple[str, ...] = ("gradient", "centered", "raw")
# What learn fits: a construction's weights, or a kernel from a before/after pair.
LEARN_TARGETS: tuple[str, ...] = ("gradient", "grayscale", "avgpool", "pair")
# The optimizers learn trains with.
OPTIMIZERS: tuple[str, ...] = ("sgd", "momentum", "adam")
# Alpha: passed through, ignored, or composited on a background first.
ALPHA_POLICIES: tuple[str, ...] = ("keep", "drop", "flatten")
# Formats read; anything else (PSD, ICO, PCX, ...) is refused by name.
FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF", "GIF", "BMP", "WEBP")
# Formats an image can be written to standard output in.
OUTPUT_FORMATS: tuple[str, ...] = ("png", "jpeg", "tiff", "webp")
# Images with more pixels are refused from their header, before decoding.
DEFAULT_MAX_PIXELS = 100_000_000
# Output file names: the input's stem, the output's name, the input's extension.
DEFAULT_NAME = "{stem}.{output}.png"
# PNG compression: level 1 with zlib's RLE strategy (fast, about as small as level 6).
PNG_COMPRESS_LEVEL = 1
