"""Never compute on pixels that are not the file's: damaged data is refused by default.

Every damaged file is made here, at run time, from a good one. Each case
checks that the command refuses it (exit 3, one line naming the file and
the damage, nothing written) and that ``--allow-truncated`` reads it with a
notice on stderr and in the report. The differential tests decode every
good file a second time with a decoder that is not Pillow's.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from decoders import encoded, independent_pixels
from helpers import run_cli as run
from PIL import Image

from cnnfilters import integrity
from cnnfilters.errors import InputError
from cnnfilters.images import ReadOptions, load_frames, load_image

RNG = np.random.default_rng(12)


def photo(width: int = 48, height: int = 40, mode: str = "RGB") -> Image.Image:
    """Smooth gradients plus noise: compresses like a photograph, not like noise or flat colour."""
    rows, cols = np.mgrid[0:height, 0:width]
    base = np.stack([rows * 4, cols * 5, (rows + cols) * 2], axis=-1)
    # Its own generator: the same image whichever tests ran before.
    noisy = base + np.random.default_rng((width, height)).integers(0, 24, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).convert(mode)


def chunks(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """A PNG's chunks as ``(offset, type, data)``."""
    found, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        found.append((offset, kind, data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return found


def chunk(kind: bytes, body: bytes, *, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def rebuild(data: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    return data[:8] + b"".join(chunk(kind, body) for kind, body in parts)


def png_split_idat(image: Image.Image, pieces: int) -> bytes:
    """The image as a PNG whose compressed data is spread over ``pieces`` IDAT chunks."""
    data = encoded(image, "PNG")
    parts = [(kind, body) for _, kind, body in chunks(data)]
    stream = b"".join(body for kind, body in parts if kind == b"IDAT")
    step = -(-len(stream) // pieces)
    idats = [(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step)]
    head = [p for p in parts if p[0] not in (b"IDAT", b"IEND")]
    return rebuild(data, [*head, *idats, (b"IEND", b"")])


def corrupt_inside(data: bytes, kind: bytes, index: int = 0, *, fix_crc: bool = True) -> bytes:
    """Bytes in the middle of the ``index``-th ``kind`` chunk overwritten (CRC kept valid)."""
    parts = [(k, bytearray(b)) for _, k, b in chunks(data)]
    body = [b for k, b in parts if k == kind][index]
    middle = len(body) // 2
    body[middle : middle + 6] = b"\xff\x00\xff\x00\xff\x00"
    if fix_crc:
        return rebuild(data, [(k, bytes(b)) for k, b in parts])
    # Keep the CRC that was stored for the undamaged chunk.
    original = {id(b): zlib.crc32(k + bytes(b)) for k, b in parts}
    out = data[:8]
    for (_, k, old), (_, b) in zip(chunks(data), parts, strict=True):
        crc = zlib.crc32(k + old) if b is body else original[id(b)]
        out += chunk(k, bytes(b), crc=crc)
    return out


def flip_literal_keeping_inflate(image: Image.Image) -> bytes:
    """A PNG whose stored (uncompressed) deflate block has one byte changed.

    The stream still inflates to the right length; only the IDAT CRC and the
    zlib Adler-32 (both left as they were) say that a pixel changed.
    """
    rows = b"".join(b"\0" + image.tobytes()[i : i + image.width * 3]
                    for i in range(0, image.width * image.height * 3, image.width * 3))  # fmt: skip
    stream = bytearray(zlib.compress(rows, 0))  # level 0: stored blocks, bytes as they are
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0)
    good = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    crc = zlib.crc32(b"IDAT" + bytes(stream))
    stream[len(stream) // 2] ^= 0x40
    return good + chunk(b"IDAT", bytes(stream), crc=crc) + chunk(b"IEND", b"")


def corrupt_jpeg_entropy(data: bytes) -> bytes:
    """Bytes in the middle of the entropy-coded data overwritten, as on a damaged card."""
    start = data.rindex(b"\xff\xda")  # the (last) start of scan
    middle = (start + len(data)) // 2
    damaged = bytearray(data)
    # A fixed overwrite, whichever tests ran before. JPEG has no checksum: most
    # random overwrites still decode without a warning, so one that libjpeg
    # notices in both the baseline and the progressive file was chosen.
    noise = np.random.default_rng(12).integers(0, 255, 32, dtype=np.uint8)
    damaged[middle : middle + 32] = bytes(noise)
    return bytes(damaged)


def cut_idat_stream(data: bytes) -> bytes:
    """A download cut short after a whole IDAT chunk: the stream and IEND are missing."""
    whole = png_split_idat(Image.open(io.BytesIO(data)), 3)
    last_idat = [off for off, kind, _ in chunks(whole) if kind == b"IDAT"][-1]
    return whole[:last_idat]


def one_row_short(image: Image.Image) -> bytes:
    """A PNG whose pixel data is a whole, valid zlib stream of one row too few: every
    check but the length of what it inflates to passes."""
    row = image.width * 3
    rows = b"".join(b"\0" + image.tobytes()[i : i + row] for i in range(0, row * image.height, row))
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0)
    stream = zlib.compress(rows[: -(row + 1)])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream)
            + chunk(b"IEND", b""))  # fmt: skip


def no_end_of_stream(image: Image.Image) -> bytes:
    """A PNG whose zlib stream inflates to exactly the right length but never ends (no
    final block, no Adler-32): a file cut at a flush point."""
    row = image.width * 3
    rows = b"".join(b"\0" + image.tobytes()[i : i + row] for i in range(0, row * image.height, row))
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0)
    packer = zlib.compressobj()
    stream = packer.compress(rows) + packer.flush(zlib.Z_SYNC_FLUSH)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream)
            + chunk(b"IEND", b""))  # fmt: skip


def cut_inside_a_crc(data: bytes) -> bytes:
    """A file that ends two bytes into the CRC of its last IDAT chunk."""
    offset, _, body = [c for c in chunks(data) if c[1] == b"IDAT"][-1]
    return data[: offset + 8 + len(body) + 2]


DAMAGED = {
    # name: (bytes, words the error line must contain)
    "one-row-short.png": (lambda: one_row_short(photo(16, 12)),
                          "539 bytes of pixel data, the header needs 588"),
    "stream-never-ends.png": (lambda: no_end_of_stream(photo(16, 12)),
                              "the compressed pixel data stops early"),
    "cut-inside-a-crc.png": (lambda: cut_inside_a_crc(encoded(photo(), "PNG")),
                             "the file ends inside the 'IDAT' chunk"),
    "idat-corrupt.png": (lambda: corrupt_inside(encoded(photo(), "PNG"), b"IDAT"),
                         "IDAT: broken compressed data"),
    "one-of-three-idat.png": (lambda: corrupt_inside(png_split_idat(photo(), 3), b"IDAT", 1),
                              "IDAT: broken compressed data"),
    "idat-cut-short.png": (lambda: cut_idat_stream(encoded(photo(), "PNG")), "before IEND"),
    "idat-crc-and-adler-wrong.png": (lambda: flip_literal_keeping_inflate(photo(16, 12)),
                                     "CRC error in the 'IDAT' chunk"),
    "idat-bad-crc.png": (lambda: corrupt_inside(encoded(photo(), "PNG"), b"IDAT", fix_crc=False),
                         "CRC error in the 'IDAT' chunk"),
    "corrupt-entropy.jpg": (lambda: corrupt_jpeg_entropy(encoded(photo(96, 80), "JPEG")),
                            "Corrupt JPEG data"),
    "corrupt-progressive.jpg": (
        lambda: corrupt_jpeg_entropy(encoded(photo(96, 80), "JPEG", progressive=True)),
        "JPEG data"),
    "truncated.jpg": (lambda: encoded(photo(96, 80), "JPEG")[:-200], "cannot decode the image"),
    "truncated-progressive.jpg": (
        lambda: encoded(photo(96, 80), "JPEG", progressive=True)[:-300],
        "cannot decode the image"),
    "truncated.gif": (lambda: encoded(photo(), "GIF")[:-100], "cannot decode the image"),
    "truncated.webp": (lambda: encoded(photo(), "WEBP", lossless=True)[:-50],
                       "cannot decode the image"),
    "truncated.tif": (lambda: encoded(photo(), "TIFF")[:-300], "cannot decode the image"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_data_is_refused_by_default(name, tmp_path, capsys):
    make, words = DAMAGED[name]
    path = tmp_path / name
    path.write_bytes(make())
    for command in ("grayscale", "gradient"):
        code, _, err = run(capsys, command, path, "-q")
        assert code == 3, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"cnnfilters: error: {path}: "), err
        assert words in lines[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written


@pytest.mark.parametrize(
    "name", ["idat-corrupt.png", "idat-cut-short.png", "idat-crc-and-adler-wrong.png",
             "corrupt-entropy.jpg", "truncated.jpg"]
)  # fmt: skip
def test_allow_truncated_reads_damaged_data_and_says_so(name, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(DAMAGED[name][0]())
    code, out, err = run(capsys, "grayscale", path, "--allow-truncated", "--json")
    assert code == 0, err
    item = json.loads(out)["inputs"][0]
    assert item["info"]["damaged"]
    assert any("damaged data read anyway" in notice for notice in item["notices"])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cnnfilters: notice: {path}: damaged data")
    # The rows before the damage are the undamaged file's, at the image's full size.
    made = np.asarray(Image.open(tmp_path / f"{path.stem}.grayscale.png"))
    whole = tmp_path / f"whole{path.suffix}"
    whole.write_bytes(_undamaged(name))
    assert run(capsys, "grayscale", whole, "-q")[0] == 0
    expected = np.asarray(Image.open(tmp_path / "whole.grayscale.png"))
    assert made.shape == expected.shape
    np.testing.assert_array_equal(made[:3], expected[:3])


def _undamaged(name: str) -> bytes:
    """The file each damaged case was made from."""
    if name.endswith(".jpg"):
        return encoded(photo(96, 80), "JPEG")
    if name == "idat-crc-and-adler-wrong.png":
        return encoded(photo(16, 12), "PNG")
    return encoded(photo(), "PNG")


def test_quiet_keeps_the_damage_notice_off_stderr(tmp_path, capsys):
    path = tmp_path / "cut.png"
    path.write_bytes(DAMAGED["idat-cut-short.png"][0]())
    code, _, err = run(capsys, "grayscale", path, "--allow-truncated", "-q")
    assert code == 0 and err == ""


def test_one_damaged_file_does_not_stop_the_batch(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(DAMAGED["idat-corrupt.png"][0]())
    good = tmp_path / "good.png"
    photo().save(good)
    code, _, err = run(capsys, "grayscale", bad, good, "-q")
    assert code == 3
    assert err.count("\n") == 1 and "bad.png" in err
    assert (tmp_path / "good.grayscale.png").exists()
    assert not (tmp_path / "bad.grayscale.png").exists()


def test_a_decoder_error_is_never_swallowed_by_an_earlier_step(tmp_path, monkeypatch):
    """Without the stream check, Pillow's own error must still refuse the file.

    ``getexif()`` of a PNG decodes the image; an error swallowed there once
    left the pixels all zero. The file has an eXIf chunk after IDAT, so that
    reading EXIF needs the decode.
    """
    data = encoded(photo(), "PNG")
    parts = [(k, b) for _, k, b in chunks(data)]
    exif = Image.Exif()
    exif[0x0112] = 6
    parts.insert(-1, (b"eXIf", exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif") else
                      exif.tobytes()))  # fmt: skip
    path = tmp_path / "exif-after-idat.png"
    path.write_bytes(corrupt_inside(rebuild(data, parts), b"IDAT"))
    monkeypatch.setattr(integrity, "check_file", lambda path, fmt, starts=(0,): (None, None))
    with pytest.raises(InputError, match="cannot decode the image"):
        load_image(path)


def test_exif_in_a_good_png_after_idat_still_turns_the_image(tmp_path):
    image = photo(30, 20)
    data = encoded(image, "PNG")
    parts = [(k, b) for _, k, b in chunks(data)]
    exif = Image.Exif()
    exif[0x0112] = 6
    body = exif.tobytes()
    parts.insert(-1, (b"eXIf", body[6:] if body.startswith(b"Exif\0\0") else body))
    path = tmp_path / "turned.png"
    path.write_bytes(rebuild(data, parts))
    loaded = load_image(path)
    assert loaded.size == (30, 20)
    expected = np.rot90(np.asarray(image), -1)
    np.testing.assert_array_equal(np.moveaxis(loaded.pixels, 0, -1), expected)


def test_a_sixteen_bit_png_is_checked_too(tmp_path):
    rows = b"".join(b"\0" + RNG.integers(0, 256, 6 * 5, dtype=np.uint8).tobytes() for _ in range(4))
    header = struct.pack(">IIBBBBB", 5, 4, 16, 2, 0, 0, 0)
    stream = bytearray(zlib.compress(rows))
    stream[len(stream) // 2] ^= 0x10
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(stream))
            + chunk(b"IEND", b""))  # fmt: skip
    path = tmp_path / "deep.png"
    path.write_bytes(data)
    with pytest.raises(InputError, match="damaged data"):
        load_image(path)


def test_apng_frames_are_checked(tmp_path):
    frames = [photo(20, 16), photo(20, 16), photo(20, 16)]
    data = encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert any(kind == b"fdAT" for _, kind, _ in chunks(data))
    assert integrity.check_png(io.BytesIO(data))[0] is None
    path = tmp_path / "anim.png"
    path.write_bytes(corrupt_inside(data, b"fdAT", 1))
    with pytest.raises(InputError, match="APNG frame 2: broken compressed data"):
        load_frames(path, ReadOptions(all_frames=True))


@pytest.mark.parametrize("name", [name for name in DAMAGED if name.endswith(".png")])
def test_zlib_finds_the_same_damage_where_isal_cannot_be_had(name, monkeypatch):
    data = DAMAGED[name][0]()
    found = integrity.check_png(io.BytesIO(data))[0]
    monkeypatch.setattr(integrity, "_inflating", zlib)
    with_zlib = integrity.check_png(io.BytesIO(data))[0]
    assert found is not None and with_zlib is not None
    # The same damage; only the library's own words in brackets may differ.
    assert with_zlib.reason.partition(" (")[0] == found.reason.partition(" (")[0]


def test_the_expected_length_matches_what_pillow_writes():
    for mode, options in (("1", {}), ("L", {}), ("P", {"bits": 2}), ("P", {"bits": 4}),
                          ("RGB", {}), ("RGBA", {}), ("LA", {}), ("I;16", {})):  # fmt: skip
        for width, height in ((1, 1), (3, 7), (9, 8), (17, 5)):
            data = encoded(Image.new(mode, (width, height)), "PNG", **options)
            _, _, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks(data)[0][2])
            raw = zlib.decompress(b"".join(b for _, k, b in chunks(data) if k == b"IDAT"))
            assert len(raw) == integrity.png_raw_size(width, height, depth, colour, False)


def test_the_expected_length_of_an_interlaced_image_sums_the_seven_passes():
    # An 8 x 8 image: passes of 1x1, 1x1, 2x1, 2x2, 4x2, 4x4 and 8x4 pixels.
    passes = [(1, 1), (1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4)]
    assert integrity.png_raw_size(8, 8, 1, 0, True) == sum(h * (1 + (w + 7) // 8)
                                                           for w, h in passes)  # fmt: skip
    assert integrity.png_raw_size(8, 8, 8, 2, True) == sum(h * (1 + 3 * w) for w, h in passes)
    # A 1 x 1 image has pixels in the first pass only.
    assert integrity.png_raw_size(1, 1, 8, 0, True) == 2


def test_an_interlaced_png_passes_and_its_damage_is_found(tmp_path):
    import png

    values = RNG.integers(0, 256, (13, 11 * 3), dtype=np.uint8)
    buffer = io.BytesIO()
    png.Writer(11, 13, greyscale=False, interlace=True).write(buffer, values.tolist())
    data = buffer.getvalue()
    assert integrity.check_png(io.BytesIO(data))[0] is None
    path = tmp_path / "adam7.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_image(path).pixels,
                                  np.moveaxis(values.reshape(13, 11, 3), -1, 0))  # fmt: skip
    path.write_bytes(corrupt_inside(data, b"IDAT"))
    with pytest.raises(InputError, match="damaged data"):
        load_image(path)


# ------------------------------------------------------ differential decoding


def _good_corpus() -> dict[str, bytes]:
    base = photo(37, 23)
    corpus = {}
    for mode in ("RGB", "RGBA", "L", "LA", "P", "1"):
        corpus[f"{mode}.png"] = encoded(base.convert(mode), "PNG")
    corpus["four-idat.png"] = png_split_idat(base, 4)
    corpus["gray16.png"] = encoded(
        Image.fromarray(RNG.integers(0, 65536, (23, 37)).astype(np.uint16)), "PNG"
    )
    for subsampling in (0, 1, 2):
        corpus[f"q90-{subsampling}.jpg"] = encoded(base, "JPEG", quality=90,
                                                   subsampling=subsampling)  # fmt: skip
    corpus["progressive.jpg"] = encoded(base, "JPEG", progressive=True)
    corpus["gray.jpg"] = encoded(base.convert("L"), "JPEG")
    return corpus


GOOD = _good_corpus()


@pytest.mark.parametrize("name", list(GOOD))
def test_pixels_equal_an_independent_decoders(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(GOOD[name])
    loaded = load_image(path, ReadOptions(alpha="keep"))
    expected = independent_pixels(path)
    assert expected is not None
    np.testing.assert_array_equal(loaded.pixels, expected)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_small_file_is_read_once_and_checked_on_the_bytes_decoded(tmp_path, monkeypatch, fmt):
    """A small PNG or JPEG is opened once: the bytes the integrity check walks are
    those decoded (by Pillow, or by the PNG walk that is the check), so a file
    rewritten between the two cannot pass one content's check with another's
    pixels."""
    import builtins
    import os

    from cnnfilters import images

    path = tmp_path / f"small.{fmt.lower()}"
    photo().save(path, fmt)
    opened, checked = [], []
    real_open, real_os_open, real_check = builtins.open, os.open, integrity.check_file

    def counting_open(file, *args, **kwargs):
        if str(file) == str(path):
            opened.append(file)
        return real_open(file, *args, **kwargs)

    def counting_os_open(file, *args, **kwargs):
        if str(file) == str(path):
            opened.append(file)
        return real_os_open(file, *args, **kwargs)

    def spying_check(where, kind, starts=(0,), data=None):
        checked.append(data)
        return real_check(where, kind, starts, data)

    def spying_walk(handle):  # a PNG's decode and check: one walk of the data
        checked.append(handle.getvalue() if isinstance(handle, io.BytesIO) else None)
        return real_walk(handle)

    real_walk = integrity.png_image_data
    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(os, "open", counting_os_open)
    monkeypatch.setattr(integrity, "check_file", spying_check)
    monkeypatch.setattr(integrity, "png_image_data", spying_walk)
    image = load_image(path)
    assert len(opened) == 1
    assert checked == [path.read_bytes()]
    with Image.open(path) as reference:
        assert np.array_equal(
            np.moveaxis(image.pixels, 0, -1), np.asarray(reference.convert("RGB"))
        )
    # A file over the size read whole, or of another format, is read by Pillow from disk.
    monkeypatch.setattr(images, "_READ_WHOLE_BYTES", path.stat().st_size - 1)
    checked.clear()
    load_image(path)
    assert checked == [None]


def test_a_small_damaged_png_read_whole_is_refused(tmp_path):
    """The check of bytes read once still finds damage the decoder lets through."""
    data = encoded(photo(), "PNG")
    found = chunks(data)
    parts = [(kind, body) for _, kind, body in found]
    idat = next(i for i, (kind, _) in enumerate(parts) if kind == b"IDAT")
    parts[idat] = (b"IDAT", parts[idat][1] + b"\x00junk")  # data after the zlib stream's end
    path = tmp_path / "damaged.png"
    path.write_bytes(rebuild(data, parts))
    with pytest.raises(InputError, match="damaged data"):
        load_image(path)


def _mpo_second_image_damaged() -> tuple[bytes, int]:
    """A two-image MPO (a camera's JPEG with a second picture) whose second image's
    entropy-coded data is overwritten in its middle; and where that image starts."""
    first, second = photo(96, 80), photo(96, 80).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        start = image._MpoImageFile__mpoffsets[1]
    return data[:start] + corrupt_jpeg_entropy(data[start:]), start


def test_every_image_of_a_multi_picture_jpeg_is_checked(tmp_path, capsys):
    data, _ = _mpo_second_image_damaged()
    path = tmp_path / "camera.jpg"
    path.write_bytes(data)
    code, _, err = run(capsys, "grayscale", path, "--all-frames", "-q")
    assert code == 3
    assert f"{path}: cannot decode the image (damaged data: image 1: " in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camera.jpg"]
    code, _, err = run(capsys, "grayscale", path, "-q")  # only the first image is read
    assert code == 0, err


def test_a_damaged_chunk_is_named_with_the_byte_it_starts_at():
    data = corrupt_inside(encoded(photo(), "PNG"), b"IDAT", fix_crc=False)
    offset = next(o for o, kind, _ in chunks(data) if kind == b"IDAT")
    damage, _ = integrity.check_png(io.BytesIO(data))
    assert damage.reason == f"CRC error in the 'IDAT' chunk at byte {offset}"


@pytest.mark.parametrize(("declared", "words"), [
    (0x7FFFFFFF, "the file ends inside the 'tEXt' chunk at byte 33"),
    (0x80000000, "the 'tEXt' chunk at byte 33 declares 2147483648 bytes"),
])  # fmt: skip
def test_a_chunk_length_is_at_most_two_to_the_31_minus_one(declared, words):
    good = encoded(photo(8, 8), "PNG")
    data = good[:33] + struct.pack(">I4s", declared, b"tEXt") + b"comment"
    damage, _ = integrity.check_png(io.BytesIO(data))
    assert damage.reason == words


def test_data_after_the_end_of_the_stream_in_a_later_idat_is_damage():
    """The zlib stream ends in the first IDAT; a second one holds more bytes."""
    data = encoded(photo(), "PNG")
    parts = [(k, b) for _, k, b in chunks(data)]
    at = next(i for i, (k, _) in enumerate(parts) if k == b"IDAT")
    parts.insert(at + 1, (b"IDAT", b"\x00\x01\x02"))
    damage, _ = integrity.check_png(io.BytesIO(rebuild(data, parts)))
    assert damage is not None and "data after the end of the compressed pixels" in damage.reason


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("read", [True, False])
def test_the_stream_check_finds_damage_in_a_file_or_in_its_bytes(tmp_path, background, read):
    """In a thread or at once, from the file or from bytes already read: the same."""
    path = tmp_path / "bad.png"
    path.write_bytes(DAMAGED["idat-bad-crc.png"][0]())
    data = path.read_bytes() if read else None
    damage, _ = integrity.StreamCheck(path, "PNG", background=background, data=data).result()
    assert damage is not None and damage.reason.startswith("CRC error in the 'IDAT' chunk")
    good = tmp_path / "good.png"
    photo().save(good)
    data = good.read_bytes() if read else None
    damage, facts = integrity.StreamCheck(good, "PNG", background=background, data=data).result()
    assert damage is None and (facts.width, facts.height) == (48, 40)
