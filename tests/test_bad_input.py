"""Every image a user has, every hostile file, nothing lost.

The corpus is generated here, at run time: no binary test files are committed.
Each case checks the exit code, one error line naming the file, no traceback,
and that no partial, 0-byte or temporary file is left behind.
"""

from __future__ import annotations

import builtins
import io
import os
import signal
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from held import held_batch
from helpers import run_bounded
from helpers import run_cli as run
from PIL import Image

from cnnfilters.cli import main
from cnnfilters.errors import InputError
from cnnfilters.images import load_image

RNG = np.random.default_rng(4)


# ---------------------------------------------------------------- helpers


def assert_one_error(err: str, name: str, *, contains: str = "") -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cnnfilters: error: ") and name in lines[0], lines[0]
    assert contains in lines[0]
    assert "Traceback" not in err


def assert_no_debris(folder: Path) -> None:
    """No temporary file and no 0-byte output anywhere under ``folder``."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert not path.name.endswith(".tmp"), f"temporary file left: {path}"
            if ".grayscale." in path.name or ".avgpool" in path.name or ".dy." in path.name:
                assert path.stat().st_size > 0, f"0-byte output: {path}"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, *, depth=8, colour=2, rows: bytes | None = None,
              extra: bytes = b"") -> bytes:  # fmt: skip
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    if rows is None:
        line = b"\0" + bytes(width * channels * depth // 8)
        rows = line * height
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))  # fmt: skip


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(size=(40, 30), mode="RGB") -> Image.Image:
    array = RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------- files that are not images


def _bad_header_crc(data: bytes) -> bytes:
    """The IHDR chunk's CRC (bytes 29-32) zeroed."""
    return data[:29] + b"\0\0\0\0" + data[33:]


BROKEN = {
    "empty.png": (lambda: b"", "empty file (0 bytes)"),
    "text.png": (lambda: b"hello, I am not a picture\n" * 10, "not a recognised image file"),
    "signature.png": (lambda: b"\x89PNG\r\n\x1a\n", "not a recognised image file"),
    "truncated.png": (lambda: encoded(photo((64, 64)), "PNG")[:400], "cannot decode the image"),
    "truncated.jpg": (lambda: encoded(photo((64, 64)), "JPEG")[:600], "cannot decode the image"),
    "truncated.tif": (lambda: encoded(photo((64, 64)), "TIFF")[:2000], "cannot decode the image"),
    "badcrc.png": (lambda: _bad_header_crc(encoded(photo(), "PNG")), "not a recognised image"),
    # The garbage lands on the IDAT chunk's header: Pillow finds no image in it.
    "zlib.png": (lambda: png_bytes(8, 8)[:-30] + b"garbage!" * 3 + png_bytes(8, 8)[-12:],
                 "not a recognised image file"),
    "zero-width.png": (lambda: png_bytes(0, 10), "not a recognised image file"),
    "ico.ico": (lambda: encoded(photo((16, 16)), "ICO"), "ICO files are not supported"),
    "pcx.pcx": (lambda: encoded(photo((16, 16)), "PCX"), "PCX files are not supported"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_file_is_one_clean_error(name, tmp_path, capsys):
    make, message = BROKEN[name]
    path = write(tmp_path / name, make())
    code, _out, err = run(capsys, "grayscale", path, "-q")
    assert code == 3
    assert_one_error(err, str(path), contains=message)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("compression", ["tiff_deflate", "tiff_lzw"])
def test_libtiffs_own_message_becomes_part_of_the_one_line(compression, tmp_path, capfd):
    """libtiff prints on file descriptor 2 itself; its reason joins our line instead."""
    from cnnfilters import _libtiff

    data = bytearray(encoded(photo((64, 64)), "TIFF", compression=compression))
    data[8] ^= 0xFF  # the first byte of the compressed strip
    path = write(tmp_path / "damaged.tif", bytes(data))
    code = main(["grayscale", os.fsdecode(path), "-q"])
    _, err = capfd.readouterr()
    assert code == 3
    assert _libtiff.install(), "libtiff's messages are not caught on this platform"
    reason = {"tiff_deflate": "ZIPDecode: Decoding error", "tiff_lzw": "code not yet in table"}
    assert_one_error(err, "damaged.tif", contains=reason[compression])
    assert_no_debris(tmp_path)


def test_a_header_bomb_is_refused_before_decoding(tmp_path):
    path = write(tmp_path / "bomb.png", png_bytes(100_000, 100_000, rows=b"\0" * 10))
    code, _, err = run_bounded("gradient", path, "-q")  # 10 gigapixels would not fit
    assert code == 3
    assert_one_error(err, str(path), contains="more than --max-pixels 100000000")


def test_a_bomb_between_pillows_warning_and_error_limits_is_quiet(tmp_path, capsys):
    # 9,500 x 10,000 = 95 MP: over Pillow's warning limit (89 MP), under its error limit.
    image = Image.new("1", (9_500, 10_000))
    path = tmp_path / "large.png"
    image.save(path)
    code, _, err = run(capsys, "avgpool", path, "--max-pixels", "90000000")
    assert code == 3
    assert_one_error(err, str(path), contains="more than --max-pixels 90000000")
    loaded = load_image(path)  # the default limit (100 MP) lets it through, without a warning
    assert loaded.size == (10_000, 9_500)
    assert not any("DecompressionBomb" in n or "warning" in n for n in loaded.notices)


def test_a_huge_text_chunk_is_refused_in_one_line_within_bounded_memory(tmp_path):
    """A comment that inflates to 20 MB (from 20 kB): Pillow refuses to inflate a text
    chunk past 1 MB, and so the file is refused, naming why."""
    text = chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"x" * 20_000_000))
    path = write(tmp_path / "text-bomb.png", png_bytes(8, 8, extra=text))
    code, _, err = run_bounded("grayscale", path, "-q")
    assert code == 3
    assert_one_error(err, str(path), contains="Decompressed data too large")
    assert_no_debris(tmp_path)


def test_a_directory_a_fifo_and_a_missing_file_are_refused_before_opening(
    tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "folder.png"
    folder.mkdir()
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    missing = tmp_path / "missing.png"
    # Opening a FIFO that no process writes to waits for ever, unless it is opened
    # without blocking: it never is otherwise (the batch's workers inherit the watch).
    opened, real_open, real_os_open = [], builtins.open, os.open

    def is_fifo(file) -> bool:
        return isinstance(file, (str, bytes, os.PathLike)) and os.fsdecode(file) == str(fifo)

    def watched_open(file, *args, **kwargs):
        if is_fifo(file):
            opened.append("open")
            raise AssertionError("the FIFO was opened to wait for a writer")
        return real_open(file, *args, **kwargs)

    def watched_os_open(file, flags, *args, **kwargs):
        if is_fifo(file) and not flags & os.O_NONBLOCK:
            opened.append("os.open")
            raise AssertionError("the FIFO was opened to wait for a writer")
        return real_os_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watched_open)
    monkeypatch.setattr(os, "open", watched_os_open)
    code, _, err = run(capsys, "grayscale", folder, fifo, missing, "-q", "-j", "1")
    monkeypatch.undo()
    assert opened == []
    assert code == 3
    lines = err.strip().splitlines()
    assert sorted(lines) == sorted([  # errors come as inputs finish, in any order
        f"cnnfilters: error: {folder}: is a directory with no image files (-r looks in subfolders)",
        f"cnnfilters: error: {fifo}: not a regular file (a FIFO, socket or device)",
        f"cnnfilters: error: {missing}: no such file",
    ])  # fmt: skip


def test_the_loader_refuses_a_fifo_a_folder_and_an_empty_file_on_its_one_open(tmp_path):
    """The library's loader, called directly, refuses by what its one open finds: a
    FIFO with no writer at once (it is opened without waiting for one)."""
    import threading

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    cases = [("pipe.png", "not a regular file (a FIFO, socket or device)"),
             ("folder.png", "is a directory, not an image file"),
             ("empty.png", "empty file (0 bytes)"),
             ("missing.png", "no such file")]  # fmt: skip
    said = {}

    def load_each() -> None:
        for name, _ in cases:
            try:
                load_image(tmp_path / name)
            except InputError as exc:
                said[name] = str(exc)

    loader = threading.Thread(target=load_each, daemon=True)  # a hang must fail, not hang
    loader.start()
    loader.join(10)
    assert not loader.is_alive(), "the loader waited on the FIFO"
    assert said == {name: f"{tmp_path / name}: {message}" for name, message in cases}


def test_a_device_is_refused(capsys):
    code, _, err = run(capsys, "grayscale", "/dev/zero", "-q")
    assert code == 3
    assert_one_error(err, "/dev/zero", contains="not a regular file")


def test_truncated_data_is_read_with_allow_truncated(tmp_path, capsys):
    path = write(tmp_path / "cut.png", encoded(photo((64, 64)), "PNG")[:3000])
    assert run(capsys, "avgpool", path, "-q")[0] == 3
    code, out, _ = run(capsys, "avgpool", path, "--allow-truncated", "--json")
    assert code == 0
    assert "missing pixels were filled" in out


# --------------------------------------------------------- every image mode


def _mode_image(mode: str) -> Image.Image:
    base = photo((20, 12))
    if mode == "P+t":
        image = base.convert("P")
        image.putpixel((0, 0), 3)
        image.info["transparency"] = 3
        return image
    if mode in ("LA", "RGBA"):
        image = base.convert(mode)
        image.putalpha(Image.linear_gradient("L").resize(base.size))
        return image
    if mode == "I;16":
        return Image.fromarray(RNG.integers(0, 65536, (12, 20)).astype(np.uint16))
    if mode == "I;16B":
        return Image.fromarray(RNG.integers(0, 65536, (12, 20)).astype(">u2"))
    if mode == "I":
        return Image.fromarray(RNG.integers(-70000, 70000, (12, 20)).astype(np.int32))
    if mode == "F":
        return Image.fromarray((RNG.random((12, 20)) * 2 - 1).astype(np.float32))
    return base.convert(mode)


MODES = {
    # mode: (format, the mode of the grayscale output, of the avgpool output)
    "1": ("PNG", "L", "L"),
    "L": ("PNG", "L", "L"),
    "LA": ("PNG", "LA", "LA"),
    "P": ("PNG", "L", "RGB"),
    "P+t": ("PNG", "LA", "RGBA"),
    "RGB": ("PNG", "L", "RGB"),
    "RGBA": ("PNG", "LA", "RGBA"),
    "CMYK": ("JPEG", "L", "RGB"),
    "I;16": ("PNG", "I;16", "I;16"),
    "I;16B": ("TIFF", "I;16", "I;16"),
    "I": ("TIFF", "I;16", "I;16"),
    "F": ("TIFF", "I;16", "I;16"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_is_read_and_written_back(mode, tmp_path, capsys):
    fmt, gray_mode, pooled_mode = MODES[mode]
    image = _mode_image(mode)
    path = tmp_path / f"in.{fmt.lower()}"
    options = {"transparency": 3} if mode == "P+t" else {}
    image.save(path, format=fmt, **options)
    for command, expected in (("grayscale", gray_mode), ("avgpool", pooled_mode)):
        code, _out, err = run(capsys, command, path, "--json")
        assert code == 0, err
        with Image.open(
            tmp_path / f"in.{command if command == 'grayscale' else 'avgpool2'}.png"
        ) as result:
            normalised = "I;16" if result.mode in ("I", "I;16") else result.mode
            assert normalised == expected, (command, result.mode)
    assert_no_debris(tmp_path)


def _png16(planes: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand with Paeth-filtered rows (Pillow cannot write one)."""
    height, width, channels = planes.shape
    data = planes.astype(">u2").view(np.uint8).reshape(height, width * channels * 2).astype(int)
    bpp = channels * 2
    left = np.zeros_like(data)
    left[:, bpp:] = data[:, :-bpp]
    up = np.zeros_like(data)
    up[1:] = data[:-1]
    corner = np.zeros_like(data)
    corner[1:, bpp:] = data[:-1, :-bpp]
    p = left + up - corner
    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
    predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, corner))
    filtered = ((data - predictor) % 256).astype(np.uint8)
    rows = b"".join(b"\x04" + row.tobytes() for row in filtered)
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    return png_bytes(width, height, depth=16, colour=colour, rows=rows)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_sixteen_bit_colour_png_keeps_full_precision(channels, tmp_path, capsys):
    planes = RNG.integers(0, 65536, (14, 18, channels)).astype(np.uint16)
    path = write(tmp_path / "deep.png", _png16(planes))
    loaded = load_image(path)
    colour = planes[..., : 3 if channels >= 3 else 1]
    np.testing.assert_array_equal(loaded.pixels, np.moveaxis(colour, -1, 0))
    assert loaded.bit_depth == 16 and loaded.kind == "uint16"
    if channels in (2, 4):
        np.testing.assert_array_equal(loaded.alpha, planes[..., -1])
    code, _, err = run(capsys, "avgpool", path, "--raw", "-q")
    assert code == 0, err
    written = load_image(tmp_path / "deep.avgpool2.png")
    assert written.bit_depth == 16 and written.pixels.max() > 255
    exact = np.load(tmp_path / "deep.avgpool2.npy")
    np.testing.assert_array_equal(written.pixels, np.floor(exact + 0.5))
    if channels in (2, 4):
        assert written.alpha is not None


def test_exif_orientation_is_applied_unless_told(tmp_path, capsys):
    image = photo((40, 30))
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    image.save(path, exif=exif)
    code, out, _ = run(capsys, "grayscale", path, "--json")
    assert code == 0 and "EXIF orientation (6)" in out
    with Image.open(tmp_path / "turned.grayscale.png") as result:
        assert result.size == (30, 40)
    run(capsys, "grayscale", path, "--no-auto-orient", "--force", "-q")
    with Image.open(tmp_path / "turned.grayscale.png") as result:
        assert result.size == (40, 30)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_orientation_matches_pillows(orientation):
    from cnnfilters.frames import orient_array

    array = np.arange(12 * 7, dtype=np.uint8).reshape(12, 7)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=100)
    from PIL import ImageOps

    turned = ImageOps.exif_transpose(Image.open(buffer))
    expected_size = turned.size
    assert orient_array(array, orientation).shape[::-1] == expected_size
    ref = (
        ImageOps.exif_transpose(Image.fromarray(array).copy(), in_place=False)
        if orientation == 1
        else None
    )
    if ref is not None:
        np.testing.assert_array_equal(np.asarray(ref), orient_array(array, 1))
    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(orientation)  # fmt: skip
    if method is not None:
        np.testing.assert_array_equal(
            np.asarray(Image.fromarray(array).transpose(method)), orient_array(array, orientation)
        )


def test_multi_frame_files_use_the_first_frame_or_all(tmp_path, capsys):
    frames = [Image.new("L", (12, 10), v) for v in (0, 100, 200)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    code, out, _ = run(capsys, "avgpool", path, "--json")
    assert code == 0 and "3 frames: only the first is used" in out
    code, out, _ = run(
        capsys, "avgpool", path, "--all-frames", "--json", "--out-dir", tmp_path / "all"
    )
    assert code == 0
    for index in range(3):
        assert (tmp_path / "all" / f"anim.frame{index}.avgpool2.png").exists()
    with Image.open(tmp_path / "all" / "anim.frame2.avgpool2.png") as last:
        assert np.asarray(last.convert("L")).mean() == pytest.approx(200, abs=1)


def test_a_one_pixel_image_and_one_smaller_than_the_pool(tmp_path, capsys):
    one = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(one)
    assert run(capsys, "gradient", one, "-q")[0] == 0
    assert run(capsys, "grayscale", one, "-q")[0] == 0
    code, _, err = run(capsys, "avgpool", one, "-k", "2", "-q")
    assert code == 3
    assert_one_error(err, str(one), contains="kernel size 2 is larger than the padded input")
    assert not (tmp_path / "one.avgpool2.png").exists()


@pytest.mark.parametrize("policy", ["keep", "drop", "flatten"])
def test_alpha_policies(policy, tmp_path, capsys):
    array = np.zeros((10, 12, 4), dtype=np.uint8)
    array[..., 0] = 200  # red, half of it transparent
    array[..., 3] = 255
    array[:, 6:, 3] = 0
    path = tmp_path / "alpha.png"
    Image.fromarray(array).save(path)
    code, _out, _ = run(
        capsys, "grayscale", path, "--alpha", policy, "--background", "black", "--json"
    )
    assert code == 0
    with Image.open(tmp_path / "alpha.grayscale.png") as result:
        values = np.asarray(result)
    if policy == "keep":
        assert result.mode == "LA" and values[0, 11, 1] == 0
    elif policy == "drop":
        assert result.mode == "L" and values[0, 11] == values[0, 0] == 60
    else:
        assert result.mode == "L" and values[0, 0] == 60 and values[0, 11] == 0


def test_icc_profiles_are_copied_only_where_they_fit(tmp_path, capsys):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "tagged.png"
    photo().save(path, icc_profile=profile)
    code, out, _ = run(capsys, "avgpool", path, "--json")
    assert code == 0
    with Image.open(tmp_path / "tagged.avgpool2.png") as pooled:
        assert pooled.info.get("icc_profile") == profile
    code, out, _ = run(capsys, "grayscale", path, "--json")
    assert "does not fit a 1-channel output" in out
    with Image.open(tmp_path / "tagged.grayscale.png") as gray:
        assert "icc_profile" not in gray.info


# ------------------------------------------------------------ nothing lost


@pytest.mark.parametrize("name", ["with space.png", "ünïcødé.png", "<b>x&amp;'.png", "-dash.png"])
def test_odd_names_work_and_errors_survive_them(name, tmp_path, capsys):
    path = tmp_path / name
    photo().save(path, format="PNG")
    code, _out, _ = run(capsys, "grayscale", "--json", "--", path)
    assert code == 0 and path.with_name(path.stem + ".grayscale.png").exists()
    bad = tmp_path / ("bad " + name)
    bad.write_text("nope")
    code, _, err = run(capsys, "grayscale", "-q", "--", bad)
    assert code == 3
    assert_one_error(err, str(bad))


def test_a_name_that_is_not_utf8_is_reported(tmp_path):
    folder = os.fsencode(tmp_path)
    name = folder + b"/caf\xe9.png"
    with open(name, "wb") as handle:
        handle.write(b"not an image")
    done = subprocess.run([sys.executable, "-m", "cnnfilters", "grayscale", name, "--json"],
                          capture_output=True)  # fmt: skip
    assert done.returncode == 3
    assert done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr
    assert b"caf\\udce9.png" in done.stderr or b"caf\\xe9.png" in done.stderr
    assert b"caf\\udce9.png" in done.stdout  # the JSON report escapes it


def test_the_input_is_never_overwritten_through_a_link(tmp_path, capsys):
    source = tmp_path / "in.png"
    photo().save(source)
    original = source.read_bytes()
    link = tmp_path / "in.grayscale.png"
    link.symlink_to(source)
    code, _, err = run(capsys, "grayscale", source, "--force", "-q")
    assert code == 3 and "this is the input file" in err
    link.unlink()
    os.link(source, link)
    code, _, err = run(capsys, "grayscale", source, "--force", "-q")
    assert code == 3 and "this is the input file" in err
    assert source.read_bytes() == original


def test_output_equal_to_input_and_existing_output(tmp_path, capsys):
    source = tmp_path / "in.png"
    photo().save(source)
    original = source.read_bytes()
    code, _, err = run(capsys, "avgpool", source, "-o", source, "--force", "-q")
    assert code == 3 and source.read_bytes() == original
    (tmp_path / "keep.png").write_bytes(b"precious")
    code, _, err = run(capsys, "avgpool", source, "-o", tmp_path / "keep.png", "-q")
    assert code == 3
    assert_one_error(err, "keep.png", contains="1 output exists")
    assert (tmp_path / "keep.png").read_bytes() == b"precious"


def test_a_failed_save_leaves_the_existing_file_whole(tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.png"
    photo().save(source)
    target = tmp_path / "in.grayscale.png"
    target.write_bytes(b"the previous good output")

    def failing_write(self, strip):
        self.handle.write(b"half a PNG")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cnnfilters.outputs.PngWriter.write", failing_write)
    code, _, err = run(capsys, "grayscale", source, "--force", "-q")
    assert code == 3
    assert_one_error(err, str(target), contains="No space left on device")
    assert target.read_bytes() == b"the previous good output"
    assert_no_debris(tmp_path)


def test_an_unwritable_folder_is_one_clear_error(tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.png"
    photo().save(source)
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.geteuid() == 0:  # root ignores permissions: simulate what others see

            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            real_open = os.open

            def refuse_in_locked(path, *args, **kwargs):
                if Path(os.fsdecode(path)) == out:  # an unnamed file in the folder
                    refuse()
                return real_open(path, *args, **kwargs)

            monkeypatch.setattr(os, "open", refuse_in_locked)
            # A named temporary file, where unnamed ones are not to be had.
            monkeypatch.setattr("cnnfilters.atomic.open", refuse, raising=False)
        code, _, err = run(capsys, "grayscale", source, "--out-dir", out, "-q")
    finally:
        out.chmod(stat.S_IRWXU)
    assert code == 3
    assert_one_error(err, "in.grayscale.png", contains="permission denied")
    assert list(out.iterdir()) == []


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "cnnfilters", *map(os.fsdecode, args)]


def test_a_full_disk_is_one_clear_error_and_no_partial_file(tmp_path):
    import resource

    source = tmp_path / "big.png"
    Image.fromarray(RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(source)

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    done = subprocess.run(_cli("gradient", source, "-q"), capture_output=True, text=True,
                          preexec_fn=limit_file_size)  # fmt: skip
    assert done.returncode == 3
    assert_one_error(done.stderr, "big.", contains="cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


SIGNALS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]


@pytest.mark.parametrize(("sig", "code", "word"), SIGNALS)
def test_a_signal_in_the_middle_of_a_batch_loses_nothing(sig, code, word, tmp_path):
    sources = []
    image = Image.linear_gradient("L").resize((120, 100))
    for index in range(40):
        path = tmp_path / f"p{index:02}.png"
        image.save(path, compress_level=1)
        sources.append(path)
    out = tmp_path / "out"
    # As in a terminal's foreground job: SIGINT is not ignored (a background
    # job of a non-interactive shell, as CI may be, inherits it ignored).
    args = ["gradient", *map(os.fsdecode, sources), "--out-dir", os.fsdecode(out), "-q"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    foreground = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    with held_batch(args, preexec_fn=foreground, **pipes) as batch:
        for _ in range(3):  # three outputs written, a fourth under way
            batch.writers(1)
            batch.release(1)
        batch.writers(1)
        batch.process.send_signal(sig)
        _, err = batch.process.communicate()
    process = batch.process
    assert process.returncode == code
    assert err.strip().splitlines()[-1].startswith(f"cnnfilters: error: {word}")
    written = sorted(out.glob("*"))
    assert written and len(written) < 3 * len(sources)
    for path in written:
        assert not path.name.endswith(".tmp")
        with Image.open(path) as image:
            image.load()  # every file left is a whole PNG


def test_wrong_option_values_are_one_line_and_exit_2(tmp_path, capsys):
    source = tmp_path / "in.png"
    photo().save(source)
    for args, text in [
        (["--alpha", "maybe"], "'maybe' is not one of"),
        (["--background", "plaid"], "background must be white, black, gray"),
        (["--max-pixels", "0"], "--max-pixels"),
        (["--compress-level", "12"], "--compress-level"),
    ]:
        code, _, err = run(capsys, "grayscale", source, *args)
        assert code == 2, args
        assert len(err.strip().splitlines()) == 1 and text in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
