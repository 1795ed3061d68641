"""A large PNG decoded band by band as grayscale reads it (cnnfilters.pngrows).

The streamed pixels must be exactly Pillow's decode of the whole file, the
damage the plain path refuses must be refused the same way (exit 3, one
line, nothing written), and nothing may be left running. Small images are
streamed here by lowering the size from which it is done.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import queue
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from decoders import encoded
from helpers import run_cli as run
from PIL import Image
from test_integrity import DAMAGED, chunk, chunks, photo, rebuild

from cnnfilters import commands, frames, images, ops, pngrows
from cnnfilters.errors import InputError
from cnnfilters.images import ReadOptions, load_frames

RNG = np.random.default_rng(20)


@pytest.fixture
def stream_all(monkeypatch):
    """Every PNG that can be streamed is, in bands of a few rows."""
    monkeypatch.setattr(frames, "MAPPED_MEMORY_BYTES", 0)
    monkeypatch.setattr(pngrows, "_BAND_BYTES", 1)  # the smallest band: 8 rows


def random_filters_png(width: int, height: int, channels: int) -> bytes:
    """A PNG whose scanlines are random bytes behind random filter types (0-4): any
    such data is a valid image, and every filter refers to the row above or the
    pixel to the left, across band boundaries too."""
    row = channels * width
    lines = [bytes([int(RNG.integers(0, 5))]) + RNG.integers(0, 256, row, dtype=np.uint8).tobytes()
             for _ in range(height)]  # fmt: skip
    colour = {1: 0, 3: 2}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(lines))) + chunk(b"IEND", b""))  # fmt: skip


def taken(rows: pngrows.PngRows, step: int) -> np.ndarray:
    height = rows.shape[1]
    return np.concatenate([rows.take(first, min(first + step, height))
                           for first in range(0, height, step)], axis=1)  # fmt: skip


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("step", [1, 7, 8, 50, 101])
def test_streamed_rows_are_pillows_decode_of_the_whole_file(
    channels, background, step, tmp_path, monkeypatch
):
    monkeypatch.setattr(pngrows, "_BAND_BYTES", 1)
    path = tmp_path / "random.png"
    path.write_bytes(random_filters_png(37, 101, channels))
    with Image.open(path) as image:
        assert pngrows.streamable(image, path)
        expected = np.asarray(image)
        mode, size = image.mode, image.size
    rows = pngrows.PngRows(path, mode, size, background=background)
    got = taken(rows, step)
    expected = expected[np.newaxis] if channels == 1 else expected.transpose(2, 0, 1)
    np.testing.assert_array_equal(got, expected)


def test_rows_are_given_once_in_order(tmp_path):
    path = tmp_path / "a.png"
    photo(20, 30).save(path)
    rows = pngrows.PngRows(path, "RGB", (20, 30), background=False)
    rows.take(0, 10)
    with pytest.raises(ValueError, match="the next row is 10"):
        rows.take(0, 10)
    with pytest.raises(ValueError):
        rows.take(10, 31)


@pytest.mark.parametrize(("name", "make"), [
    ("interlaced", lambda: adam7(photo())),
    ("palette", lambda: encoded(photo().convert("P"), "PNG")),
    ("one-bit", lambda: encoded(photo().convert("1"), "PNG")),
    ("rgba", lambda: encoded(photo().convert("RGBA"), "PNG")),
    ("colour-key", lambda: encoded(photo(), "PNG", transparency=(1, 2, 3))),
    ("sixteen-bit", lambda: encoded(Image.fromarray(np.zeros((4, 4), np.uint16)), "PNG")),
    ("apng", lambda: encoded(photo(), "PNG", save_all=True,
                             append_images=[Image.new("RGB", (48, 40))], duration=10)),
])  # fmt: skip
def test_only_what_decodes_exactly_is_streamed(name, make, tmp_path):
    path = tmp_path / f"{name}.png"
    path.write_bytes(make())
    with Image.open(path) as image:
        assert not pngrows.streamable(image, path)


def adam7(image: Image.Image) -> bytes:
    import png  # pypng writes interlaced files; Pillow does not

    buffer = io.BytesIO()
    values = np.asarray(image).reshape(image.height, -1)
    png.Writer(image.width, image.height, greyscale=False, interlace=True).write(
        buffer, values.tolist()
    )
    return buffer.getvalue()


def with_exif_after_idat(orientation: int) -> bytes:
    data = encoded(photo(30, 20), "PNG")
    parts = [(k, b) for _, k, b in chunks(data)]
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()
    parts.insert(-1, (b"eXIf", body[6:] if body.startswith(b"Exif\0\0") else body))
    return rebuild(data, parts)


@pytest.mark.parametrize(("orientation", "streamed"), [(1, True), (6, False)])
def test_an_exif_orientation_after_the_image_data_is_seen_first(orientation, streamed, tmp_path):
    path = tmp_path / "exif.png"
    path.write_bytes(with_exif_after_idat(orientation))
    with Image.open(path) as image:
        assert pngrows.streamable(image, path) is streamed


def test_only_a_command_that_reads_rows_once_gets_them_streamed(tmp_path, stream_all):
    path = tmp_path / "a.png"
    photo().save(path)
    (streamed,) = load_frames(path, rows_once=True)
    (plain,) = load_frames(path)
    assert isinstance(streamed.pixels, pngrows.PngRows)
    assert isinstance(plain.pixels, np.ndarray)
    np.testing.assert_array_equal(streamed.rows(0, 40), plain.pixels)
    (truncated_ok,) = load_frames(path, ReadOptions(allow_truncated=True), rows_once=True)
    assert isinstance(truncated_ok.pixels, np.ndarray)  # damage read anyway: the plain path


COMMANDS = [
    ("grayscale",),
    ("avgpool", "-k", "4"),
    ("avgpool", "-k", "3", "--edge", "partial"),
    ("avgpool", "-k", "7"),
    ("avgpool", "-k", "400", "--edge", "partial"),  # one window holds the whole image
]


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_command_writes_the_same_file_streamed_or_not(mode, command, tmp_path, capsys,
                                                        monkeypatch):  # fmt: skip
    path = tmp_path / "in.png"
    photo(301, 211, mode).save(path)
    results = {}
    # Pillow's decode beside the check; the walk, whole; the walk as the rows are read.
    for name, walk, limit in (("plain", False, 0), ("whole", True, 1 << 40),
                              ("streamed", True, 0)):  # fmt: skip
        monkeypatch.setattr(images, "_WALK_PNG", walk)
        monkeypatch.setattr(frames, "MAPPED_MEMORY_BYTES", limit)
        monkeypatch.setattr(pngrows, "_BAND_BYTES", 1)
        monkeypatch.setattr(commands.strips, "STRIP_BYTES", 1)  # strips of one window's rows
        out = tmp_path / f"{name}.png"
        code, stdout, err = run(capsys, *command, path, "-o", out, "--json")
        assert code == 0, err
        item = json.loads(stdout)["inputs"][0]
        checks = [{k: v for k, v in c.items() if k not in ("rmse", "psnr_db", "mean_abs")}
                  for c in item["checks"]]  # fmt: skip
        results[name] = (np.asarray(Image.open(out)), checks, item["notices"])
    plain = results["plain"]
    for walked in (results["whole"], results["streamed"]):
        np.testing.assert_array_equal(walked[0], plain[0])
        assert walked[1:] == plain[1:]
    assert len(plain[1]) == 2 and all(c["passed"] for c in plain[1])


WHOLE_COMMANDS = [
    ("gradient",),
    ("gradient", "--on", "rgb"),
    ("commute", "--activation", "gelu"),
    ("convolve", "--kernel", "gaussian5", "--on", "rgb", "--raw"),
    ("grayscale", "--raw"),
]


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("command", WHOLE_COMMANDS, ids=" ".join)
def test_a_png_decoded_whole_by_the_walk_is_pillows_decode(mode, command, tmp_path, capsys,
                                                           monkeypatch):  # fmt: skip
    """Commands that need the whole image get it from the walk of the file that is
    the damage check: every output file, check and notice as with Pillow's decode."""
    path = tmp_path / "in.png"
    photo(301, 211, mode).save(path)
    monkeypatch.setattr(pngrows, "_BAND_BYTES", 1)
    results = {}
    for name, walk in (("plain", False), ("walked", True)):
        monkeypatch.setattr(images, "_WALK_PNG", walk)
        out = tmp_path / name
        code, stdout, err = run(capsys, *command, path, "--out-dir", out, "--json")
        assert code == 0, err
        item = json.loads(stdout)["inputs"][0]
        checks = [{k: v for k, v in c.items() if k not in ("rmse", "psnr_db", "mean_abs")}
                  for c in item["checks"]]  # fmt: skip
        # Digests: a failing comparison of the files' bytes would take pytest minutes to show.
        files = {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest()
                 for f in item["outputs"]}  # fmt: skip
        results[name] = (files, checks, item["notices"], item["info"])
    assert results["walked"] == results["plain"]
    assert results["plain"][0] and all(c["passed"] for c in results["plain"][1])


def test_only_what_the_walk_reads_exactly_is_walked(tmp_path):
    """A small RGB PNG is decoded by the walk; an RGBA one by Pillow (same pixels)."""
    rgb, rgba = tmp_path / "rgb.png", tmp_path / "rgba.png"
    photo().save(rgb)
    photo().convert("RGBA").save(rgba)
    made = []
    real = pngrows.PngRows.read_all

    def read_all(self):
        made.append(self.path)
        return real(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pngrows.PngRows, "read_all", read_all)
        walked = load_frames(rgb)[0]
        plain = load_frames(rgba)[0]
    assert made == [rgb]
    np.testing.assert_array_equal(walked.pixels, plain.pixels)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("edge", ["drop", "partial"])
def test_avgpool_strips_are_whole_windows_covering_every_row(k, edge, monkeypatch):
    from cnnfilters.commands.avgpool import _PoolStrips

    monkeypatch.setattr(commands.strips, "STRIP_BYTES", 1)
    for height in range(k, 4 * k + 3):
        image = images.LoadedImage(Path("x.png"), "PNG", "L",
                                   np.zeros((1, height, 9), np.uint8), 8, "uint8")  # fmt: skip
        shape = (1, *ops.avgpool_shape(height, 9, k, edge))
        strips = _PoolStrips(image, k, edge, shape, []).strips
        assert strips[0][0] == 0 and strips[-1][1] == height
        assert all(a[1] == b[0] for a, b in itertools.pairwise(strips))
        assert all(first % k == 0 and stop - first >= k for first, stop in strips)


def test_values_clipped_while_streaming_are_told(tmp_path, capsys, stream_all):
    path = tmp_path / "white.png"
    Image.new("RGB", (40, 30), (255, 255, 255)).save(path)
    code, stdout, err = run(capsys, "grayscale", path, "--weights", "1,1,1", "--json")
    assert code == 0, err
    item = json.loads(stdout)["inputs"][0]
    assert "1200 values outside 0..255 were clipped" in item["notices"]


PNG_DAMAGE = [name for name in DAMAGED if name.endswith(".png")]


@pytest.mark.parametrize("name", PNG_DAMAGE)
@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("command", [("grayscale",), ("avgpool", "-k", "3")], ids=" ".join)
def test_damage_found_while_streaming_is_refused_as_before(name, jobs, command, tmp_path, capsys,
                                                          stream_all):  # fmt: skip
    make, words = DAMAGED[name]
    bad = tmp_path / name
    bad.write_bytes(make())
    good = tmp_path / "good.png"
    photo(64, 50).save(good)
    code, _, err = run(capsys, *command, bad, good, "-q", "-j", jobs)
    assert code == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cnnfilters: error: {bad}: "), err
    assert words in lines[0]
    written = {p.name for p in tmp_path.iterdir()} - {name, "good.png"}
    assert len(written) == 1 and written.pop().startswith("good.")


def test_the_rows_avgpool_drops_are_still_read_to_the_end_of_the_file(tmp_path, capsys, stream_all):
    """--edge drop leaves the last rows out of the result, not out of the damage check."""
    data = encoded(photo(20, 66), "PNG")  # 66 = 16 windows of 4, and 2 rows dropped
    parts = [(k, b) for _, k, b in chunks(data)]
    parts.insert(-1, (b"tEXt", b"Comment\0fine"))
    damaged = bytearray(rebuild(data, parts))
    damaged[-20] ^= 1  # inside the tEXt chunk after the image data
    path = tmp_path / "late.png"
    path.write_bytes(bytes(damaged))
    code, _, err = run(capsys, "avgpool", "-k", "4", path, "-q")
    assert code == 3 and "CRC error in the 'tEXt' chunk" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.png"]


def test_damage_after_the_last_row_keeps_the_last_rows_back(tmp_path, stream_all):
    """A CRC error in a chunk after the image data: every row but the last band is
    given, then the error, and no more rows."""
    data = encoded(photo(20, 64), "PNG")
    parts = [(k, b) for _, k, b in chunks(data)]
    parts.insert(-1, (b"tEXt", b"Comment\0fine"))
    damaged = bytearray(rebuild(data, parts))
    damaged[-20] ^= 1  # inside the tEXt chunk: its CRC no longer matches
    path = tmp_path / "late.png"
    path.write_bytes(bytes(damaged))
    (image,) = load_frames(path, rows_once=True)
    image.rows(0, 48)  # the bands before the last one
    with pytest.raises(InputError, match="CRC error in the 'tEXt' chunk"):
        image.rows(48, 64)
    with pytest.raises(InputError, match="CRC error"):  # and again: the error stays
        image.rows(48, 64)


def test_a_bad_filter_type_fails_as_pillows_decode_does(tmp_path, capsys, monkeypatch):
    lines = b"".join(b"\x07" + bytes(30) for _ in range(20))  # filter type 7 does not exist
    header = struct.pack(">IIBBBBB", 10, 20, 8, 2, 0, 0, 0)
    path = tmp_path / "filter.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(lines)) + chunk(b"IEND", b""))  # fmt: skip
    errors = {}
    for name, walk, limit in (("plain", False, 0), ("whole", True, 1 << 40),
                              ("streamed", True, 0)):  # fmt: skip
        monkeypatch.setattr(images, "_WALK_PNG", walk)
        monkeypatch.setattr(frames, "MAPPED_MEMORY_BYTES", limit)
        for command in (("grayscale",), ("gradient",)):
            code, _, err = run(capsys, *command, path, "-q")
            assert code == 3, err
            errors[name, command] = err
    assert errors["whole", ("grayscale",)] == errors["plain", ("grayscale",)]
    assert errors["streamed", ("grayscale",)] == errors["plain", ("grayscale",)]
    assert errors["whole", ("gradient",)] == errors["plain", ("gradient",)]
    assert not (tmp_path / "filter.grayscale.png").exists()


def test_a_reader_that_stops_early_lets_the_thread_go(tmp_path, monkeypatch):
    monkeypatch.setattr(pngrows, "_BAND_BYTES", 1)
    monkeypatch.setattr(pngrows, "_POLL_SECONDS", 0.01)
    path = tmp_path / "tall.png"
    photo(16, 400).save(path)
    rows = pngrows.PngRows(path, "RGB", (16, 400), background=True)
    rows.take(0, 8)
    waiting, real_put = threading.Event(), rows._queue.put

    def put(item, timeout=None):
        try:
            return real_put(item, timeout=timeout)
        except queue.Full:
            waiting.set()  # the thread filled the queue and waits for room
            raise

    rows._queue.put = put
    assert waiting.wait(timeout=30)
    rows.close()
    rows._thread.join(timeout=5)
    assert not rows._thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "cnnfilters-png-rows"]


def test_an_output_that_exists_starts_no_decoding(tmp_path, capsys, stream_all):
    path = tmp_path / "a.png"
    photo().save(path)
    (tmp_path / "a.grayscale.png").write_bytes(b"mine")
    before = threading.active_count()
    code, _, err = run(capsys, "grayscale", path, "-q")
    assert code != 0 and "exists" in err
    assert (tmp_path / "a.grayscale.png").read_bytes() == b"mine"
    assert threading.active_count() == before


@pytest.mark.parametrize("threads", [1, None])
@pytest.mark.parametrize("size", [(32, 32), (300, 211)])
def test_an_images_work_is_freed_when_it_is_done(size, threads, tmp_path, monkeypatch):
    """No reference cycle per input: what an image holds (its strips, levels and
    comparisons) goes when it is done, not at some later garbage collection."""
    import gc

    from cnnfilters.commands import GrayscaleOptions
    from cnnfilters.inputs import Source
    from cnnfilters.outputs import Destination
    from cnnfilters.run import Settings, process_source

    monkeypatch.setattr(frames, "MAPPED_MEMORY_BYTES", 40_000)  # 300 x 211 RGB is streamed
    sources = []
    for index in range(5):
        path = tmp_path / f"in{index}.png"
        photo(*size).save(path)
        sources.append(Source(path))
    settings = Settings(destination=Destination(out_dir=tmp_path / "out"), keep=False)
    process_source(GrayscaleOptions(), sources[0], settings, threads)  # imports, caches
    gc.collect()
    gc.disable()
    try:
        for source in sources[1:]:
            (item,) = process_source(GrayscaleOptions(), source, settings, threads)
            assert item.error is None, item.error
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_a_step_stopped_by_ctrl_c_stops_the_other_thread_too():
    """The writer and the checks share the strips (commands.strips.InOrder): after Ctrl-C in
    one of them, the other does not go on computing the strips that are left."""
    from cnnfilters.commands.strips import InOrder

    order = InOrder(6)
    done, seen = [], []
    started, waiting = threading.Event(), threading.Event()

    class Watched(threading.Condition):
        def wait(self, timeout=None):
            waiting.set()  # the other thread waits for the step under way
            return super().wait(timeout)

    order._changed = Watched()

    def step(index: int) -> None:
        if index == 2 and not started.is_set():  # the first time only
            started.set()
            waiting.wait()  # raised only once the other thread waits for this step
            raise KeyboardInterrupt
        done.append(index)

    def other() -> None:
        started.wait()
        try:
            order.through(5, step)
        except BaseException as exc:
            seen.append(type(exc))

    thread = threading.Thread(target=other)
    thread.start()
    with pytest.raises(KeyboardInterrupt):
        order.all(step)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert done == [0, 1] and seen == [KeyboardInterrupt]
    with pytest.raises(KeyboardInterrupt):  # and so does any later call
        order.through(3, step)
