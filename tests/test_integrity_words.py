"""The damage checks' own words, and the good files they must let through.

A damage line is what a user reads to decide whether a file is lost, so each
is matched whole. The good files are the ones a check could mistake for
damage: CMYK and YCCK JPEGs, a camera's two-picture JPEG, an ancillary
chunk the size of a header, an animation frame smaller than the image or
spread over several chunks.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from decoders import encoded
from helpers import run_bounded, run_cli
from isal import isal_zlib
from PIL import Image
from test_integrity import chunk, chunks, corrupt_jpeg_entropy, photo, rebuild

from cnnfilters import integrity


def _cmyk_jpeg(transform: int) -> bytes:
    """A CMYK JPEG; with Adobe transform 2 its decoder reads it as YCCK."""
    data = bytearray(encoded(photo(32, 24).convert("CMYK"), "JPEG"))
    adobe = data.index(b"Adobe")
    data[adobe + 11] = transform
    return bytes(data)


@pytest.mark.parametrize(("transform", "space"), [(0, "CMYK"), (2, "YCCK")])
def test_cmyk_and_ycck_jpegs_pass_and_their_damage_is_found(transform, space):
    import simplejpeg

    data = _cmyk_jpeg(transform)
    assert simplejpeg.decode_jpeg_header(data)[2] == space
    assert integrity.check_jpeg(data) is None
    damage = integrity.check_jpeg(corrupt_jpeg_entropy(data))
    assert damage is not None and "JPEG data" in damage.reason


def _two_pictures() -> tuple[bytes, int]:
    first, second = photo(96, 80), photo(96, 80).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        start = image._MpoImageFile__mpoffsets[1]
    return buffer.getvalue(), start


def test_each_picture_of_a_camera_jpeg_is_checked_and_named():
    data, start = _two_pictures()
    nowhere = Path("/nonexistent/camera.jpg")  # the bytes given are checked, not a file
    assert integrity.check_file(nowhere, "MPO", (0, start), data) == (None, None)
    first_damaged = corrupt_jpeg_entropy(data[:start]) + data[start:]
    damage, _ = integrity.check_file(nowhere, "MPO", (0, start), first_damaged)
    assert damage is not None and not damage.reason.startswith("image ")
    second_damaged = data[:start] + corrupt_jpeg_entropy(data[start:])
    damage, _ = integrity.check_file(nowhere, "MPO", (0, start), second_damaged)
    assert damage.reason.startswith("image 1: ") and "JPEG data" in damage.reason


def _png(image: Image.Image) -> list[tuple[bytes, bytes]]:
    return [(kind, body) for _, kind, body in chunks(encoded(image, "PNG"))]


def _check(parts: list[tuple[bytes, bytes]]) -> integrity.Damage | None:
    data = b"\x89PNG\r\n\x1a\n" + b"".join(chunk(kind, body) for kind, body in parts)
    return integrity.check_png(io.BytesIO(data))[0]


def test_the_words_of_each_png_damage():
    parts = _png(photo(8, 6))
    assert integrity.check_png(io.BytesIO(b"GIF89a" + b"\0" * 20))[0].reason == (
        "not a PNG signature"
    )
    no_idat = [p for p in parts if p[0] != b"IDAT"]
    assert _check(no_idat).reason == "no IDAT chunk: the image has no pixel data"
    header = parts[0][1]
    smaller = struct.pack(">II", 8, 5) + header[8:]  # one row fewer than the data holds
    assert _check([(b"IHDR", smaller), *parts[1:]]).reason == (
        "IDAT: more pixel data than the image holds"
    )


@pytest.mark.parametrize(
    ("library", "words"),
    [
        # "Error -3 while decompressing data: invalid block type"
        (zlib, "invalid block type"),
        # "Error -1 Invalid deflate block found"
        (isal_zlib, "invalid deflate block found"),
    ],
)
def test_broken_compressed_data_gives_the_library_s_reason_alone(library, words, monkeypatch):
    monkeypatch.setattr(integrity, "_inflating", library)
    parts = _png(photo(8, 6))
    idat = next(body for kind, body in parts if kind == b"IDAT")
    broken = idat[:2] + b"\xff" * 8 + idat[10:]  # a block type that does not exist
    damaged = [(kind, broken if kind == b"IDAT" else body) for kind, body in parts]
    assert _check(damaged).reason == f"IDAT: broken compressed data ({words})"


def test_an_ancillary_chunk_the_size_of_a_header_is_not_a_header():
    parts = _png(photo(8, 6))
    text = (b"tEXt", b"Comment\0abcde")  # 13 bytes, as IHDR's data
    assert len(text[1]) == 13
    assert _check([parts[0], text, *parts[1:]]) is None


def test_the_chunks_a_decoder_needs_are_kept():
    parts = _png(photo(8, 6))
    exif, trns = b"MM\0*\0\0\0\x08\0\0", struct.pack(">3H", 1, 2, 3)
    data = rebuild(encoded(photo(8, 6), "PNG"), [parts[0], (b"eXIf", exif), (b"tRNS", trns),
                                                 *parts[1:]])  # fmt: skip
    damage, facts = integrity.check_png(io.BytesIO(data))
    assert damage is None and (facts.exif, facts.trns) == (exif, trns)


def _apng(frame_size: tuple[int, int], pieces: int) -> list[tuple[bytes, bytes]]:
    """An 8 x 6 image and one animation frame of ``frame_size`` whose compressed data is
    spread over ``pieces`` fdAT chunks."""
    parts = _png(photo(8, 6))
    width, height = frame_size
    rows = b"".join(b"\0" + bytes(3 * width) for _ in range(height))
    stream = zlib.compress(rows)
    step = -(-len(stream) // pieces)
    control = struct.pack(">I", 1) + struct.pack(">IIII", width, height, 0, 0) + bytes(6)
    fdat = [
        (b"fdAT", struct.pack(">I", 2 + n) + stream[i : i + step])
        for n, i in enumerate(range(0, len(stream), step))
    ]
    *head, end = parts
    return [*head, (b"fcTL", control), *fdat, end]


@pytest.mark.parametrize(("frame_size", "pieces"), [((8, 6), 3), ((4, 3), 1), ((5, 2), 2)])
def test_an_animation_frame_of_its_own_size_over_several_chunks_passes(frame_size, pieces):
    parts = _apng(frame_size, pieces)
    assert _check(parts) is None
    width, height = frame_size
    larger = struct.pack(">I", 1) + struct.pack(">IIII", width + 1, height, 0, 0) + bytes(6)
    parts = [(kind, larger if kind == b"fcTL" else body) for kind, body in parts]
    expected = (1 + 3 * (width + 1)) * height
    assert _check(parts).reason == (
        f"APNG frame 1: {(1 + 3 * width) * height} bytes of pixel data, the header needs {expected}"
    )


def _bits(code: int, length: int) -> list[int]:
    """A Huffman code's bits, most significant first, as deflate stores them."""
    return [(code >> (length - 1 - i)) & 1 for i in range(length)]


def zeros_stream(periods: int) -> tuple[bytes, int]:
    """A zlib stream of ``1 + 258 * (16 + 8 * periods)`` zero bytes, made in
    milliseconds, and that length.

    One fixed-Huffman block: a literal 0, then copies of 258 bytes at distance 1
    (13 bits each), then the end of the block. Eight copies are 13 whole bytes,
    so the bytes from the third on repeat every 13: each repeat adds 8 copies.
    """
    copy = _bits(0b11000101, 8) + [0] * 5  # length code 285 (258), distance code 0
    bits = [1, 1, 0, *_bits(0b00110000, 8), *copy * 16, *_bits(0, 7)]
    body = np.packbits(np.array(bits, dtype=np.uint8), bitorder="little").tobytes()
    body = body[:2] + body[2:15] * periods + body[2:]
    total = 1 + 258 * (16 + 8 * periods)
    adler = ((total % 65521) << 16) | 1  # a = 1 + 0 + 0 ..., b = one 1 per byte
    return b"\x78\x01" + body + adler.to_bytes(4, "big"), total


def test_the_zeros_stream_is_what_it_says():
    stream, total = zeros_stream(100)
    assert zlib.decompress(stream) == bytes(total)


def test_pixel_data_that_inflates_to_gigabytes_is_refused_in_bounded_memory(tmp_path):
    # 1.25 GiB of zero rows for an 8 x 8 image: inflated at once, the stream would
    # not fit the bound; inflated a piece at a time, the check stops at the first.
    stream, total = zeros_stream(650_000)
    assert total > 1.2 * 2**30
    header = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    path = tmp_path / "inflates-to-gigabytes.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
    )
    code, _, err = run_bounded("grayscale", path, "-q")
    assert code == 3, err
    assert "IDAT: more pixel data than the image holds" in err


def test_pixel_data_larger_than_a_piece_is_inflated_to_its_end():
    rows, cols = np.mgrid[0:1100, 0:1400]
    pixels = np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels)
    assert integrity._INFLATE_PIECE < 1100 * (1 + 1400 * 3)
    damage, facts = integrity.check_png(io.BytesIO(encoded(image, "PNG")))
    assert damage is None and (facts.width, facts.height) == (1400, 1100)


def test_an_unknown_colour_type_is_left_to_the_decoder_to_refuse(tmp_path, capsys):
    header = struct.pack(">IIBBBBB", 4, 4, 8, 5, 0, 0, 0)  # colour type 5 does not exist
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    data += chunk(b"IDAT", zlib.compress(bytes(4 * 5))) + chunk(b"IEND", b"")
    # The walk counts one sample a pixel and finds the stream whole.
    assert integrity.check_png(io.BytesIO(data))[0] is None
    path = tmp_path / "colour-type-5.png"
    path.write_bytes(data)
    code, _, err = run_cli(capsys, "grayscale", path, "-q")
    assert code == 3 and err == f"cnnfilters: error: {path}: not a recognised image file\n"


@pytest.mark.parametrize("background", [True, False])
def test_the_stream_check_hands_its_own_error_to_the_caller(tmp_path, background):
    check = integrity.StreamCheck(tmp_path / "gone.png", "PNG", background=background)
    with pytest.raises(FileNotFoundError):
        check.result()


@pytest.mark.parametrize("background", [True, False])
def test_the_stream_check_of_a_camera_jpeg_reads_each_picture(tmp_path, background):
    data, start = _two_pictures()
    path = tmp_path / "camera.jpg"
    path.write_bytes(data[:start] + corrupt_jpeg_entropy(data[start:]))
    check = integrity.StreamCheck(path, "MPO", background=background, starts=(0, start))
    damage, _ = check.result()
    assert damage.reason.startswith("image 1: ")
    check = integrity.StreamCheck(path, "JPEG", background=background)
    assert check.result() == (None, None)  # the first picture alone is whole


def test_inflated_data_is_handed_on_a_piece_at_a_time():
    stream, total = zeros_stream(4000)  # 8 MiB of zeros
    pieces: list[int] = []
    inflater = integrity._Inflater("IDAT", total, lambda piece: pieces.append(len(piece)))
    assert inflater.feed(stream) is None and inflater.finish() is None
    assert sum(pieces) == total and max(pieces) <= integrity._INFLATE_PIECE < total


@pytest.mark.parametrize("background", [True, False])
def test_the_stream_check_reads_the_bytes_it_is_given_not_the_file(background):
    nowhere = Path("/nonexistent/photo.png")
    data = encoded(photo(8, 6), "PNG")
    damage, facts = integrity.StreamCheck(nowhere, "PNG", background=background, data=data).result()
    assert damage is None and (facts.width, facts.height) == (8, 6)


def test_a_damaged_exception_says_its_reason():
    damage = integrity.Damage("IDAT: broken compressed data (invalid block type)")
    assert str(integrity.Damaged(damage)) == damage.reason
