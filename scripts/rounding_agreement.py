"""How often cnnfilters, Pillow and OpenCV differ from the exactly rounded result.

For grayscale (every 24-bit colour, and a random 16-bit image) and average
pooling (k = 2..7, both edge modes, random and tie-only 8- and 16-bit
images), counts the output values that differ from the exact value rounded
half up, computed here in integers. Pillow's ``convert("L")`` and
``reduce(k)`` and OpenCV's ``cvtColor`` and ``resize(INTER_AREA)`` are
counted where they apply (8-bit; OpenCV when installed).

    python scripts/rounding_agreement.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnfilters.commands import AvgpoolOptions, GrayscaleOptions
from cnnfilters.images import LoadedImage

try:
    import cv2
except ImportError:  # OpenCV is optional (pip install ".[bench]")
    cv2 = None

RNG = np.random.default_rng(2026)


def loaded(pixels: np.ndarray) -> LoadedImage:
    depth = 16 if pixels.dtype == np.uint16 else 8
    mode = "RGB" if pixels.shape[0] == 3 else "L"
    return LoadedImage(Path("x.png"), "PNG", mode, pixels, depth, f"uint{depth}")


def exact_luma(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (channel.astype(np.int64) for channel in rgb)
    return (299 * r + 587 * g + 114 * b + 500) // 1000


def exact_means(x: np.ndarray, k: int, edge: str) -> np.ndarray:
    """Block sums by reshape in integers, then ``(2S + n) // 2n``."""
    _, height, width = x.shape
    rows, cols = (height // k, width // k) if edge == "drop" else (-(-height // k), -(-width // k))
    padded = np.zeros((x.shape[0], rows * k, cols * k), dtype=np.int64)
    h, w = min(height, rows * k), min(width, cols * k)
    padded[:, :h, :w] = x[:, :h, :w]
    sums = padded.reshape(x.shape[0], rows, k, cols, k).sum(axis=(2, 4))
    counts = np.outer(
        np.minimum(k, h - k * np.arange(rows)), np.minimum(k, w - k * np.arange(cols))
    )
    return (2 * sums + counts) // (2 * counts)


def ties_image(height: int, width: int, k: int, top: int) -> np.ndarray:
    """Blocks whose means are all exact ties where their pixel count is even."""
    x = np.zeros((1, height, width), dtype=np.uint16 if top > 255 else np.uint8)
    for row in range(0, height, k):
        for col in range(0, width, k):
            block = x[0, row : row + k, col : col + k]
            flat = np.full(block.size, int(RNG.integers(0, top)))
            flat[: block.size // 2] += 1
            block[...] = RNG.permutation(flat).reshape(block.shape)
    return x


def count(a: np.ndarray, b: np.ndarray) -> str:
    return f"{int(np.count_nonzero(a.astype(np.int64) != b))} of {b.size}"


def grayscale_rows() -> None:
    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255]).astype(np.uint8)
    rgb = rgb.reshape(3, 4096, 4096)
    exact = exact_luma(rgb)
    ours = GrayscaleOptions().run(loaded(rgb)).outputs["grayscale"].pixels[0]
    hwc = np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
    pillow = np.asarray(Image.fromarray(hwc).convert("L"))
    r, g, b = (channel.astype(np.int64) for channel in rgb)
    ties = int(np.count_nonzero((299 * r + 587 * g + 114 * b) % 1000 == 500))
    print(f"grayscale, every 24-bit colour ({ties} exact ties), differing from exact:")
    print(f"  cnnfilters {count(ours, exact)}; Pillow convert('L') {count(pillow, exact)}", end="")
    if cv2 is not None:
        print(f"; OpenCV cvtColor {count(cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY), exact)}")
    else:
        print()
    deep = RNG.integers(0, 65536, (3, 700, 600)).astype(np.uint16)
    ours = GrayscaleOptions().run(loaded(deep)).outputs["grayscale"].pixels[0]
    print(f"grayscale, random 16-bit RGB: cnnfilters {count(ours, exact_luma(deep))}")


def avgpool_rows() -> None:
    for top in (255, 65535):
        for edge in ("drop", "partial"):
            for k in range(2, 8):
                images = {
                    "random": RNG.integers(0, top + 1, (3, 60 * k + 3, 50 * k + 2)).astype(
                        np.uint16 if top > 255 else np.uint8
                    ),
                    "ties": ties_image(60 * k + 3, 50 * k + 2, k, top),
                }
                cells = []
                for name, x in images.items():
                    exact = exact_means(x, k, edge)
                    ours = AvgpoolOptions(kernel_size=k, edge=edge).run(loaded(x)).outputs
                    cell = f"{name}: ours {count(ours[f'avgpool{k}'].pixels, exact)}"
                    if top == 255:
                        planes = [Image.fromarray(np.ascontiguousarray(p)) for p in x]
                        if edge == "drop":
                            box = (0, 0, x.shape[2] // k * k, x.shape[1] // k * k)
                            planes = [p.crop(box) for p in planes]
                        pillow = np.stack([np.asarray(p.reduce(k)) for p in planes])
                        cell += f", Pillow {count(pillow, exact)}"
                        if cv2 is not None and edge == "drop":
                            h, w = x.shape[1] // k, x.shape[2] // k
                            area = np.stack([cv2.resize(np.ascontiguousarray(p[: h * k, : w * k]),
                                                        (w, h), interpolation=cv2.INTER_AREA)
                                             for p in x])  # fmt: skip
                            cell += f", OpenCV {count(area, exact)}"
                    cells.append(cell)
                print(f"avgpool {8 if top == 255 else 16}-bit {edge:7} k={k}: "
                      + "; ".join(cells))  # fmt: skip


if __name__ == "__main__":
    grayscale_rows()
    avgpool_rows()
