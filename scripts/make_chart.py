"""Make the synthetic test chart shipped as ``samples/chart.png``.

Each band shows one construction clearly:

- colour bars (grayscale: the BT.601 weights turn equal-looking colours into
  very different grays);
- a rising and a falling ramp (gradient: a constant difference, positive on
  one side and negative on the other);
- step edges in both directions, a checkerboard and a bright disc on a dark
  ground (gradient and commute: signed differences; avgpool: blocks that
  straddle an edge).

Its size, 322 x 242, is a multiple of neither 3 nor 4, so average pooling
drops (or, with --edge partial, keeps) a remainder.

Usage: python scripts/make_chart.py [OUTPUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 322, 242
BARS = [
    (255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0),
    (255, 0, 255), (255, 0, 0), (0, 0, 255), (0, 0, 0),
]  # fmt: skip


def make_chart() -> np.ndarray:
    chart = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    edges = np.linspace(0, WIDTH, len(BARS) + 1).round().astype(int)
    for colour, left, right in zip(BARS, edges[:-1], edges[1:], strict=True):
        chart[:60, left:right] = colour

    half = WIDTH // 2
    rising = np.linspace(0, 255, half).round()
    chart[60:120, :half] = rising[np.newaxis, :, np.newaxis]
    chart[60:120, half:] = rising[::-1][: WIDTH - half][np.newaxis, :, np.newaxis]

    rows, cols = np.mgrid[120:HEIGHT, 0:WIDTH]
    checker = ((rows - 120) // 16 + cols // 16) % 2 == 0
    lower = np.where(checker, 200, 55).astype(np.uint8)
    right_part = cols >= half
    lower[right_part] = 30
    disc = (rows - 181) ** 2 + (cols - (half + 80)) ** 2 <= 45**2
    lower[disc & right_part] = 230
    square = (abs(rows - 181) <= 12) & (abs(cols - (half + 80)) <= 12)
    lower[square] = 90
    chart[120:] = lower[..., np.newaxis]
    # A warm tint on the disc, so the gray conversion is not trivial there.
    chart[120:][disc & right_part & ~square] = (240, 200, 120)
    return chart


def main() -> None:
    target = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else (Path(__file__).resolve().parent.parent / "samples" / "chart.png")
    )
    Image.fromarray(make_chart()).save(target, optimize=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
