"""What reaches stderr is cnnfilters' own lines: no numpy warning with a source
line, no bare line of Pillow's logger, no decoder message for a format that is
not supported, and an output that cannot be written is named."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import run_cli as run
from PIL import Image

CLI = [sys.executable, "-m", "cnnfilters"]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_learning_rate_that_diverges_is_one_line(tmp_path, optimizer):
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
    done = subprocess.run([*CLI, "learn", "gradient", str(path), "--lr", "1e30", "--optimizer",
                           optimizer, "-q", "--out-dir", str(tmp_path / "o")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "training diverged at step 2" in done.stderr


def test_pillows_log_lines_do_not_reach_stderr():
    script = (
        "import logging, cnnfilters.images\n"
        "logging.getLogger('PIL.TiffImagePlugin').warning('More samples per pixel than can "
        "be decoded: 65535')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stderr == ""


@pytest.mark.parametrize(("fmt", "name"), [("ICO", "x.ico"), ("PCX", "x.pcx"), ("TGA", "x.tga")])
def test_a_format_outside_the_allowlist_is_refused_by_name_unparsed(
    tmp_path, capsys, monkeypatch, fmt, name
):
    path = tmp_path / name
    Image.new("RGB", (16, 16), "red").save(path, format=fmt)
    Image.init()
    _, accept = Image.OPEN[fmt]

    def never(*args, **kwargs):
        raise AssertionError(f"the {fmt} plugin parsed the file")

    monkeypatch.setitem(Image.OPEN, fmt, (never, accept))
    code, _, err = run(capsys, "grayscale", path)
    assert code == 3
    assert err == (f"cnnfilters: error: {path}: {fmt} files are not supported "
                   "(supported: PNG, JPEG, TIFF, GIF, BMP, WEBP)\n")  # fmt: skip


def test_an_output_on_a_full_disk_is_named(tmp_path):
    """The PNG's last bytes are written when its file is closed: that failure too is
    the output's error (it named the input, and on learn standard output)."""
    import resource
    import signal

    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

    done = subprocess.run([*CLI, "grayscale", str(path), "-q"], preexec_fn=small_files,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 3
    assert done.stderr == (f"cnnfilters: error: {path}: {tmp_path / 'a.grayscale.png'}: "
                           "cannot write (File too large)\n")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
