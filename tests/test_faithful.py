"""Faithful pixels and no lost files: each case builds its file at run time and asserts
the exact pixels, the error, or the input that must survive."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
from decoders import tiff_bytes
from helpers import run_cli as run
from PIL import Image

from cnnfilters.cli import main
from cnnfilters.errors import InputError
from cnnfilters.images import ReadOptions, load_frames, load_image
from cnnfilters.outputs import png_to_format

RNG = np.random.default_rng(17)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """``data`` (a PNG) with one more chunk right after IHDR."""
    return data[:33] + chunk(kind, body) + data[33:]


def png16(planes: np.ndarray, *, greyscale: bool) -> bytes:
    height, width = planes.shape[:2]
    buffer = io.BytesIO()
    png.Writer(width, height, greyscale=greyscale, bitdepth=16).write(
        buffer, planes.reshape(height, -1).tolist()
    )
    return buffer.getvalue()


# ------------------------------------------------------------- data lost


def _png(path: Path, value: int) -> Path:
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_an_input_is_never_another_inputs_output(link, tmp_path, capsys):
    x = _png(tmp_path / "x.png", 100)
    if link == "same":
        other = _png(tmp_path / "x.grayscale.png", 7)
        protected = other
    else:
        protected = _png(tmp_path / "keep.png", 7)
        other = tmp_path / "x.grayscale.png"
        (other.symlink_to if link == "symlink" else other.hardlink_to)(protected.name
                                                                       if link == "symlink"
                                                                       else protected)  # fmt: skip
    before = protected.read_bytes()
    inputs = [x, other] if link == "same" else [x, other, protected]
    code, _, err = run(capsys, "grayscale", *inputs, "--force", "-q")
    assert code == 3
    assert protected.read_bytes() == before
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{x}: its output {other} is an input of this run" in lines[0]
    # The other inputs were processed.
    assert (tmp_path / f"{other.stem}.grayscale.png").exists()


def test_workers_die_with_their_parent_and_a_rerun_completes(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(24):
        values = RNG.integers(0, 256, (900, 900, 3), dtype=np.uint8)
        Image.fromarray(values).save(folder / f"p{index:02d}.png", compress_level=1)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cnnfilters", "gradient", os.fsdecode(folder),
               "--out-dir", os.fsdecode(out), "-j", "2", "-q"]  # fmt: skip
    parent = subprocess.Popen(command)
    children: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(children) < 2 or not out.exists()):
        time.sleep(0.05)
        try:
            tasks = Path(f"/proc/{parent.pid}/task").iterdir()
            children = [int(c) for t in tasks for c in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            break
    if len(children) < 2:
        parent.kill()
        pytest.skip("the batch ended before its workers could be seen")
    parent.send_signal(signal.SIGKILL)  # as the OOM killer does
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    alive = children
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [c for c in alive if _running(c)]
    assert not alive, f"workers outlived their parent: {alive}"
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    result = subprocess.run([*command, "--skip-existing"], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 24 * 3 + len(leftovers)
    for name in written:
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                image.load()  # every output whole


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is left


# ------------------------------------------------------- wrong pixels


def test_sbit_is_a_hint_the_stored_samples_are_the_values(tmp_path):
    planes = (RNG.integers(0, 4096, (5, 6, 3)) << 4 | 0x5).astype(np.uint16)
    path = tmp_path / "sbit.png"
    path.write_bytes(with_chunk(png16(planes, greyscale=False), b"sBIT", bytes([12, 12, 12])))
    np.testing.assert_array_equal(load_image(path).pixels, np.moveaxis(planes, -1, 0))


def test_sbit_on_sixteen_bit_gray_is_ignored_too(tmp_path):
    planes = RNG.integers(0, 65536, (5, 6)).astype(np.uint16)
    path = tmp_path / "sbit-gray.png"
    path.write_bytes(with_chunk(png16(planes, greyscale=True), b"sBIT", bytes([10])))
    np.testing.assert_array_equal(load_image(path).pixels[0], planes)


def _turn(array: np.ndarray, orientation: int) -> np.ndarray:
    return {1: array, 6: np.rot90(array, -1), 3: array[::-1, ::-1], 8: np.rot90(array, 1),
            2: array[:, ::-1]}[orientation]  # fmt: skip


@pytest.mark.parametrize("orientation", [2, 3, 6, 8])
def test_a_turned_first_page_of_a_tiff_is_turned_not_scrambled(orientation, tmp_path):
    first = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    second = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    for name, data in {
        "single.tif": tiff_bytes(first, orientation=orientation),
        "two-pages.tif": tiff_bytes(first, orientation=orientation,
                                    extra_pages=[(second, 1, 1, None)]),
    }.items():  # fmt: skip
        path = tmp_path / name
        path.write_bytes(data)
        frames = load_frames(path, ReadOptions(all_frames=True))
        np.testing.assert_array_equal(frames[0].pixels[0], _turn(first, orientation))
        if len(frames) == 2:
            np.testing.assert_array_equal(frames[1].pixels[0], second)
        stored = load_frames(path, ReadOptions(all_frames=True, auto_orient=False))
        np.testing.assert_array_equal(stored[0].pixels[0], first)


def test_a_turned_second_page_and_compressed_pages_are_turned(tmp_path):
    first = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    second = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    path = tmp_path / "second.tif"
    path.write_bytes(tiff_bytes(first, extra_pages=[(second, 1, 1, 6)]))
    frames = load_frames(path, ReadOptions(all_frames=True))
    np.testing.assert_array_equal(frames[0].pixels[0], first)
    np.testing.assert_array_equal(frames[1].pixels[0], np.rot90(second, -1))
    colour = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    image = Image.fromarray(colour)
    exif = image.getexif()
    exif[0x0112] = 6
    for compression in ("tiff_deflate", "tiff_lzw", None):
        target = tmp_path / f"{compression}.tif"
        image.save(target, exif=exif, **({"compression": compression} if compression else {}))
        loaded = load_image(target)
        np.testing.assert_array_equal(np.moveaxis(loaded.pixels, 0, -1), np.rot90(colour, -1))


def test_unsigned_32_bit_tiff_values_above_2_31_do_not_wrap(tmp_path):
    values = np.array([[0, 1, 2**31 + 5, 2**32 - 1]], dtype=np.uint32)
    path = tmp_path / "u32.tif"
    path.write_bytes(tiff_bytes(values))
    loaded = load_image(path)
    assert loaded.pixels[0].tolist() == values.astype(np.float64).tolist()


@pytest.mark.parametrize(("dtype", "top"), [(np.uint8, 255), (np.uint16, 65535)])
def test_min_is_white_is_inverted_at_8_and_16_bits(dtype, top, tmp_path):
    stored = np.array([[0, 1000 % (top + 1), top]], dtype=dtype)
    path = tmp_path / "white.tif"
    path.write_bytes(tiff_bytes(stored, photometric=0))
    loaded = load_image(path)
    assert (
        loaded.pixels[0].astype(np.float64).tolist() == (top - stored.astype(np.float64)).tolist()
    )


def test_signed_8_bit_tiff_samples_keep_their_sign(tmp_path):
    path = tmp_path / "int8.tif"
    path.write_bytes(tiff_bytes(np.array([[-5, 7, -128, 127]], dtype=np.int8), sample_format=2))
    assert load_image(path).pixels[0].tolist() == [[-5, 7, -128, 127]]


def _keyed(values: np.ndarray, key) -> np.ndarray:
    if values.ndim == 2:
        return np.where(values == key, 0, 1)
    return np.where(np.all(values == np.array(key), axis=-1), 0, 1)


def test_a_trns_colour_key_makes_those_rgb_pixels_transparent(tmp_path):
    values = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    values[0, 0] = values[3, 2] = (10, 20, 30)
    path = tmp_path / "key.png"
    Image.fromarray(values).save(path, transparency=(10, 20, 30))
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.alpha, _keyed(values, (10, 20, 30)) * 255)
    flat = load_image(path, ReadOptions(alpha="flatten", background=(0, 0, 0)))
    assert flat.pixels[:, 0, 0].tolist() == [0, 0, 0] and flat.pixels[:, 3, 2].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(flat.pixels[:, 1, 1], values[1, 1])


def test_a_trns_colour_key_on_gray_at_every_depth(tmp_path):
    gray = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    gray[1, 1] = 7
    path = tmp_path / "gray-key.png"
    Image.fromarray(gray).save(path, transparency=7)
    np.testing.assert_array_equal(load_image(path).alpha, _keyed(gray, 7) * 255)
    # 2-bit gray: the key is a raw 2-bit value, the pixels are scaled to 0..255.
    two_bit = RNG.integers(0, 4, (6, 5))
    buffer = io.BytesIO()
    png.Writer(5, 6, greyscale=True, bitdepth=2, transparent=2).write(buffer, two_bit.tolist())
    path.write_bytes(buffer.getvalue())
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.pixels[0], two_bit * 85)
    np.testing.assert_array_equal(loaded.alpha, _keyed(two_bit, 2) * 255)


def test_a_trns_colour_key_on_sixteen_bit_images(tmp_path):
    rgb = RNG.integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    rgb[2, 2] = (1, 2, 3)
    path = tmp_path / "rgb16-key.png"
    path.write_bytes(with_chunk(png16(rgb, greyscale=False), b"tRNS", struct.pack(">3H", 1, 2, 3)))
    np.testing.assert_array_equal(load_image(path).alpha, _keyed(rgb, (1, 2, 3)) * 65535)
    gray = RNG.integers(0, 65536, (4, 5)).astype(np.uint16)
    gray[0, 4] = 4242
    path = tmp_path / "gray16-key.png"
    path.write_bytes(with_chunk(png16(gray, greyscale=True), b"tRNS", struct.pack(">H", 4242)))
    np.testing.assert_array_equal(load_image(path).alpha, _keyed(gray, 4242) * 65535)


def test_a_sixteen_bit_result_is_scaled_for_jpeg_not_clipped(tmp_path, capsysbinary):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(path)
    code = main(["avgpool", os.fsdecode(path), "-k", "1", "-o", "-", "--format", "jpeg"])
    out, err = capsysbinary.readouterr()
    assert code == 0
    with Image.open(io.BytesIO(out)) as image:
        assert image.format == "JPEG"
        assert np.asarray(image).tolist() == np.full((16, 16), 156).tolist()  # 40000 * 255 / 65535
    assert b"scaled to 8 bits" in err


def test_sixteen_bit_gray_stays_sixteen_bit_in_tiff_and_png(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 40000, 65535]], dtype=np.uint16)).save(path)
    data, notes = png_to_format(path, "tiff")
    with Image.open(io.BytesIO(data)) as image:
        assert np.asarray(image).tolist() == [[0, 40000, 65535]] and not notes
    data, notes = png_to_format(path, "webp")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP" and notes


# ------------------------------------------------------------------ limits


def test_max_pixels_is_checked_on_every_frame(tmp_path, capsys):
    small = np.zeros((10, 10), dtype=np.uint8)
    large = np.zeros((200, 200), dtype=np.uint8)
    path = tmp_path / "pages.tif"
    path.write_bytes(tiff_bytes(small, extra_pages=[(large, 1, 1, None)]))
    assert load_image(path, ReadOptions(max_pixels=1000)).size == (10, 10)
    with pytest.raises(InputError, match=r"frame 1: 200 x 200 = 40000 pixels is more than"):
        load_frames(path, ReadOptions(max_pixels=1000, all_frames=True))
    code, _, err = run(capsys, "grayscale", path, "--all-frames", "--max-pixels", "1000", "-q")
    assert code == 3 and "frame 1" in err and not list(tmp_path.glob("*.grayscale.png"))
