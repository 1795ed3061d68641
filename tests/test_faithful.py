"""Faithful pixels and no lost files: each case builds its file at run time and asserts
the exact pixels, the error, or the input that must survive."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
from decoders import tiff_bytes
from held import held_batch, wait_gone
from helpers import run_cli as run
from PIL import Image

from cnnfilters import atomic
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
        values = RNG.integers(0, 256, (60, 60, 3), dtype=np.uint8)
        Image.fromarray(values).save(folder / f"p{index:02d}.png", compress_level=1)
    out = tmp_path / "out"
    args = ["gradient", os.fsdecode(folder), "--out-dir", os.fsdecode(out), "-j", "2", "-q"]
    with held_batch(args) as batch:
        workers = batch.distinct_writers(2)  # both workers in the middle of a write
        batch.process.send_signal(signal.SIGKILL)  # as the OOM killer does
        batch.process.wait()
        alive = [pid for pid in workers if not wait_gone(pid)]
        assert not alive, f"workers outlived their parent: {alive}"
    command = [sys.executable, "-m", "cnnfilters", *args]
    result = subprocess.run([*command, "--skip-existing"], capture_output=True)
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 24 * 3  # and no temporary file left by the killed run
    for name in written:
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                image.load()  # every output whole


@pytest.mark.parametrize("files", ["unnamed", "named"])
def test_a_killed_worker_leaves_no_file_behind(tmp_path, files):
    assert files == "named" or atomic._UNNAMED, "no unnamed files here (O_TMPFILE and /proc)"
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for index in range(4):
        Image.fromarray(RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(
            folder / f"p{index}.png"
        )
    args = ["grayscale", os.fsdecode(folder), "--out-dir", os.fsdecode(out), "-j", "2", "-q"]
    with held_batch(args, named=files == "named", stderr=subprocess.PIPE, text=True) as batch:
        writers = sorted(batch.distinct_writers(2))  # both workers in the middle of a write
        temps = sorted(out.glob(".cnnfilters-*.tmp"))
        assert len(temps) == (2 if files == "named" else 0)
        victim = writers[-1]
        os.kill(victim, signal.SIGKILL)  # as the OOM killer kills a worker
        assert wait_gone(victim)
        batch.release()
        _, err = batch.process.communicate()
    # Its input ran again on a new worker; a named temporary file of the killed
    # worker was removed: only whole outputs.
    assert batch.process.returncode == 0, err
    assert sorted(os.listdir(out)) == [f"p{index}.grayscale.png" for index in range(4)]
    for path in out.iterdir():
        with Image.open(path) as image:
            image.load()


# A batch in which the worker running an input named "kill*" dies by SIGKILL, as by
# the out-of-memory killer: each time ("always"), or once, after writing the
# input's outputs ("once": a file beside argv[1] remembers it).
_KILLING_BATCH = """
import os, signal, sys
from pathlib import Path
from cnnfilters import cli
from cnnfilters.run import steps as run
marker, mode = Path(sys.argv[1]), sys.argv[2]
real = run._steps
def steps(command, source, *args, **kwargs):
    if not source.path.name.startswith("kill"):
        return (yield from real(command, source, *args, **kwargs))
    if mode == "always":
        os.kill(os.getpid(), signal.SIGKILL)
    items = yield from real(command, source, *args, **kwargs)
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return items
run._steps = steps
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("mode", ["always", "once"])
def test_a_worker_killed_in_a_batch_fails_only_its_own_input(tmp_path, mode):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    names = [f"p{index:02}.png" for index in range(40)]
    names[7] = "kill.png"
    for name in names:
        Image.fromarray(RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / name)
    marker = os.fsdecode(tmp_path / "killed")
    report = tmp_path / "run.json"
    command = [sys.executable, "-c", _KILLING_BATCH, marker, mode, "grayscale",
               os.fsdecode(folder), "--out-dir", os.fsdecode(out), "-j", "2",
               "--report", os.fsdecode(report)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    written = sorted(os.listdir(out))
    expected = sorted(name.replace(".png", ".grayscale.png") for name in names)
    if mode == "always":
        # The other inputs in flight with it ran again, each alone; the batch went on.
        assert done.returncode == 3, done.stderr
        assert done.stderr.splitlines() == [
            f"cnnfilters: error: {folder / 'kill.png'}: the worker process running it was "
            "killed by SIGKILL (as the kernel does when memory runs out)"
        ]
        expected.remove("kill.grayscale.png")
    else:
        # Run a second time, it replaced the outputs its dead worker had written.
        assert done.returncode == 0, done.stderr
        entries = {Path(e["input"]).name: e for e in json.loads(report.read_text())["inputs"]}
        again = "run a second time: the worker process running it was killed"
        assert any(notice.startswith(again) for notice in entries["kill.png"]["notices"])
        assert again in " ".join(done.stdout.split())  # under the table, once
    assert written == expected, done.stdout
    for name in written:
        with Image.open(out / name) as image:
            image.load()


def test_a_rerun_removes_only_the_temporary_files_of_dead_writers(tmp_path, capsys):

    source = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(source)
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    host = atomic._HOST
    stale = tmp_path / f".cnnfilters-{host}-{gone.pid}-{'0' * 16}.tmp"
    live = tmp_path / f".cnnfilters-{host}-{os.getpid()}-{'1' * 16}.tmp"
    elsewhere = tmp_path / f".cnnfilters-{'f' * 8 if host != 'f' * 8 else 'e' * 8}-1-{'2' * 16}.tmp"
    for path in (stale, live, elsewhere):
        path.write_bytes(b"partial")
    code, _, err = run(capsys, "grayscale", source, "--skip-existing", "-q")
    assert code == 0, err
    assert not stale.exists()
    assert live.exists() and elsewhere.exists()


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


FLOAT_TIFFS = {
    "float64 gray": lambda values: tiff_bytes(values, sample_format=3),
    "float16 gray": lambda values: tiff_bytes(values.astype(np.float16), sample_format=3),
    "float32 RGB": lambda values: tiff_bytes(
        np.stack([values, values / 2, -values], -1).astype(np.float32),
        photometric=2,
        sample_format=3,
    ),
}


@pytest.mark.parametrize("layout", sorted(FLOAT_TIFFS))
def test_float_tiffs_pillow_cannot_read_are_read_exactly(layout, tmp_path, capsys):
    values = RNG.normal(0, 100, (5, 7))
    path = tmp_path / "float.tif"
    path.write_bytes(FLOAT_TIFFS[layout](values))
    loaded = load_image(path)
    stored = tifffile_values(path)
    expected = stored[np.newaxis] if stored.ndim == 2 else np.moveaxis(stored, -1, 0)
    assert loaded.kind == "float32"
    np.testing.assert_array_equal(loaded.pixels, expected.astype(np.float32))
    code, _, err = run(capsys, "gradient", path, "--out-dir", tmp_path / "out", "--json")
    assert code == 0, err


def tifffile_values(path: Path) -> np.ndarray:
    """The samples as stored, read back by hand from the one strip ``tiff_bytes`` wrote."""
    data = path.read_bytes()
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    tags = {}
    for i in range(count):
        tag, _, number, value = struct.unpack_from("<HHII", data, ifd + 2 + 12 * i)
        tags[tag] = value & 0xFFFF if number == 1 and tag in (258, 262, 277, 339) else value
    channels = tags[277]
    bits = tags[258] if channels == 1 else struct.unpack_from("<H", data, tags[258])[0]
    dtype = np.dtype(f"<f{bits // 8}")
    shape = (tags[257], tags[256]) + ((channels,) if channels > 1 else ())
    return np.frombuffer(data, dtype, int(np.prod(shape)), tags[273]).reshape(shape)


def test_planar_and_compressed_float_rgb_tiffs_are_read(tmp_path):
    import tifffile

    values = RNG.random((3, 6, 9), dtype=np.float32)
    planar, deflated = tmp_path / "planar.tif", tmp_path / "deflate.tif"
    tifffile.imwrite(planar, values, photometric="rgb", planarconfig="separate")
    tifffile.imwrite(deflated, np.moveaxis(values, 0, -1), photometric="rgb", compression="zlib")
    for path in (planar, deflated):
        np.testing.assert_array_equal(load_image(path).pixels, values)


def test_a_turned_float_tiff_is_turned_and_its_alpha_follows_the_policy(tmp_path, capsys):
    import tifffile

    values = RNG.random((4, 6), dtype=np.float32)
    path = tmp_path / "turned.tif"
    path.write_bytes(tiff_bytes(values.astype(np.float64), sample_format=3, orientation=6))
    np.testing.assert_array_equal(load_image(path).pixels[0], np.rot90(values, -1))
    rgba = RNG.random((4, 6, 4), dtype=np.float32)
    with_alpha = tmp_path / "alpha.tif"
    tifffile.imwrite(with_alpha, rgba, photometric="rgb", extrasamples=["unassalpha"])
    loaded = load_image(with_alpha, ReadOptions(alpha="keep"))
    np.testing.assert_array_equal(loaded.pixels, np.moveaxis(rgba[..., :3], -1, 0))
    assert loaded.alpha is not None and loaded.alpha.dtype == np.uint16
    assert abs(int(loaded.alpha[0, 0]) - rgba[0, 0, 3] * 65535) <= 0.5
    code, _, err = run(capsys, "grayscale", with_alpha, "--alpha", "flatten", "-o", "-")
    assert code == 3
    assert "alpha.tif: --alpha flatten is not defined for floating-point samples" in err


def test_a_cut_float_tiff_is_refused_with_one_line(tmp_path, capsys):
    import tifffile

    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, RNG.random((40, 50)))  # header first, data after it
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    code, _, err = run(capsys, "grayscale", path, "-o", tmp_path / "out.png")
    assert code == 3
    assert "cut.tif: cannot decode the image (failed to read" in err
    assert not (tmp_path / "out.png").exists()


def _mpo(images: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    first, *rest = (Image.fromarray(image) for image in images)
    first.save(buffer, "MPO", save_all=True, append_images=rest, quality=95)
    return buffer.getvalue()


def test_a_camera_mpo_file_is_read_as_its_first_jpeg(tmp_path, capsys):
    import simplejpeg

    left, right = RNG.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    path = tmp_path / "camera.jpg"
    path.write_bytes(_mpo([left, right]))
    first = simplejpeg.decode_jpeg(path.read_bytes(), "RGB")
    loaded = load_frames(path, ReadOptions())
    assert len(loaded) == 1 and loaded[0].frames == 2
    np.testing.assert_array_equal(np.moveaxis(loaded[0].pixels, 0, -1), first)
    assert "2 frames: only the first is used (--all-frames for all)" in loaded[0].notices
    both = load_frames(path, ReadOptions(all_frames=True))
    assert [frame.frame for frame in both] == [0, 1]
    code, _, err = run(capsys, "grayscale", path, "--out-dir", tmp_path / "out")
    assert code == 0, err


def test_damage_in_an_mpo_image_that_is_read_is_refused(tmp_path):
    left, right = RNG.integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    data = bytearray(_mpo([left, right]))
    second = data.index(b"\xff\xd8", 4)  # the second image's SOI
    scan = data.index(b"\xff\xda", second) + 200  # inside its entropy-coded data
    data[scan : scan + 40] = bytes(RNG.integers(0, 255, 40, dtype=np.uint8))
    path = tmp_path / "damaged.jpg"
    path.write_bytes(bytes(data))
    assert load_frames(path, ReadOptions())[0].frames == 2  # only the first is read: sound
    with pytest.raises(InputError, match=r"damaged\.jpg: cannot decode the image \(damaged "
                                         r"data: image 1: "):  # fmt: skip
        load_frames(path, ReadOptions(all_frames=True))
