"""Test helpers: inputs that explain themselves and a naive correlation."""

from __future__ import annotations

import numpy as np


def coordinate_grid(height: int, width: int, channels: int = 1) -> np.ndarray:
    """``100*c + 10*i + j``: each value spells its own channel, row and column."""
    c, i, j = np.mgrid[0:channels, 0:height, 0:width]
    return (100 * c + 10 * i + j).astype(np.float32)


def naive_conv2d(
    x,
    weight,
    bias=None,
    stride=(1, 1),
    padding=(0, 0),
    dilation=(1, 1),
    groups=1,
    padding_mode="zeros",
):
    """Cross-correlation by nested loops over every output value, in float64."""
    x = np.asarray(x, dtype=np.float64)
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None]
    n, _, height, width = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    mode = {"zeros": "constant", "replicate": "edge", "reflect": "reflect", "circular": "wrap"}
    xp = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)], mode=mode[padding_mode])
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, c_out, out_h, out_w))
    c_out_g = c_out // groups
    for b in range(n):
        for o in range(c_out):
            g = o // c_out_g
            for i in range(out_h):
                for j in range(out_w):
                    total = 0.0 if bias is None else float(bias[o])
                    for c in range(c_in_g):
                        for u in range(kh):
                            for v in range(kw):
                                total += (
                                    weight[o, c, u, v]
                                    * xp[b, g * c_in_g + c, sh * i + dh * u, sw * j + dw * v]
                                )
                    out[b, o, i, j] = total
    return out[0] if squeeze else out


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """The command line in-process, exactly as the executable runs it: (code, stdout, stderr)."""
    import os
    from pathlib import Path

    from cnnfilters.cli import main

    code = main([os.fsdecode(a) if isinstance(a, (Path, bytes)) else a for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# The address space a bounded run may take: a run of the command line on a small
# image takes under 300 MB; what these tests guard against is gigabytes.
BOUND_BYTES = 1 << 30


def run_bounded(*args, limit: int = BOUND_BYTES) -> tuple[int, str, str]:
    """The command line in a process whose address space is bounded (RLIMIT_AS):
    a run that would allocate more fails its allocation instead (and then says
    "not enough memory", which a test of a refusal does not accept), whether or
    not the memory would ever be touched. (code, stdout, stderr)."""
    import os
    import resource
    import subprocess
    import sys

    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    command = [sys.executable, "-m", "cnnfilters", *(os.fsdecode(a) for a in args)]
    done = subprocess.run(command, preexec_fn=bounded, capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def random_conv_case(rng):
    """A random conv geometry: (groups, c_in, c_out, kernel, stride, dilation, mode, (h, w),
    padding), small, every padding mode, always valid."""
    groups = int(rng.integers(1, 4))
    c_in = groups * int(rng.integers(1, 4))
    c_out = groups * int(rng.integers(1, 3))
    kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
    stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, size=2))
    mode = str(rng.choice(["zeros", "replicate", "reflect", "circular"]))
    h = int(rng.integers(dilation[0] * (kh - 1) + 1, 14))
    w = int(rng.integers(dilation[1] * (kw - 1) + 1, 14))
    limit = {"reflect": (h - 1, w - 1), "circular": (h, w)}.get(mode, (3, 3))
    padding = (
        int(rng.integers(0, min(3, limit[0]) + 1)),
        int(rng.integers(0, min(3, limit[1]) + 1)),
    )
    return groups, c_in, c_out, (kh, kw), stride, dilation, mode, (h, w), padding


def chromium(folder, *args: str, size: str = "1200,1600"):
    """Headless Chromium with a profile of its own in ``folder``: (returncode, stdout)."""
    import os
    import subprocess

    command = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={folder / 'profile'}",
        f"--window-size={size}",
        *args,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(folder)},
    )
    return done.returncode, done.stdout, done.stderr
