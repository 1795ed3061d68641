"""Truncated and mutated image files give documented clean errors, never anything else.

And never wrong pixels: a mutated PNG or JPEG that is accepted must decode to
what an independent decoder (pypng, libjpeg-turbo in strict mode) makes of
it; "exit 0 with other pixels" is a failure.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from decoders import independent_pixels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnfilters.commands import command_named
from cnnfilters.errors import EXIT_IO, InputError
from cnnfilters.images import ReadOptions, load_image
from cnnfilters.inputs import Source
from cnnfilters.outputs import Destination
from cnnfilters.run import Settings, run


def _seed_files() -> dict[str, bytes]:
    rng = np.random.default_rng(9)
    rgb = Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    seeds = {}
    for fmt, options in [("PNG", {}), ("JPEG", {"quality": 80}), ("GIF", {}), ("TIFF", {}),
                         ("BMP", {}), ("WEBP", {"lossless": True}),
                         ("TIFF", {"compression": "tiff_deflate"})]:  # fmt: skip
        buffer = io.BytesIO()
        rgb.save(buffer, format=fmt, **options)
        seeds[f"{fmt}-{len(seeds)}"] = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 65536, (7, 6)).astype(np.uint16)).save(buffer, format="PNG")
    seeds["PNG16"] = buffer.getvalue()
    buffer = io.BytesIO()
    rgb.convert("RGBA").save(buffer, format="PNG")
    seeds["RGBA"] = buffer.getvalue()
    return seeds


SEEDS = _seed_files()

mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("overwrite"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
)


def mutate(data: bytes, mutations) -> bytes:
    buffer = bytearray(data)
    for op, where, *rest in mutations:
        at = min(int(where * len(buffer)), max(len(buffer) - 1, 0))
        if op == "truncate":
            del buffer[at:]
        elif op == "flip" and buffer:
            buffer[at] ^= rest[0]
        elif op == "overwrite":
            buffer[at : at + len(rest[0])] = rest[0]
        elif op == "insert":
            buffer[at:at] = rest[0]
    return bytes(buffer)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example (pytest keeps only its last few runs' folders)."""
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(sorted(SEEDS)), mutations=st.lists(mutation, min_size=1, max_size=3),
       command=st.sampled_from(["grayscale", "avgpool", "gradient"]))  # fmt: skip
def test_mutated_files_give_only_clean_errors(workdir, seed, mutations, command):
    path = workdir / "input.img"
    path.write_bytes(mutate(SEEDS[seed], mutations))
    out = workdir / "out"
    # A mutated header may declare any size up to the limit; a small limit keeps
    # each example small (the header-bomb path has tests of its own).
    settings = Settings(destination=Destination(out_dir=out, force=True),
                        read=ReadOptions(max_pixels=2_000_000))  # fmt: skip
    report, _ = run(command_named(command), [Source(path)], settings)
    for item in report.inputs:
        if item.error is not None:
            assert item.exit_code == EXIT_IO
            assert item.error.startswith(str(path)) and "\n" not in item.error
        else:
            assert item.outputs
    for leftover in out.iterdir():
        assert not leftover.name.endswith(".tmp")
        assert leftover.stat().st_size > 0
    if any(item.error is None for item in report.inputs):
        assert_pixels_are_the_files(path)


def assert_pixels_are_the_files(path: Path) -> None:
    """What was accepted decodes to an independent decoder's pixels (PNG and JPEG)."""
    try:
        loaded = load_image(path, ReadOptions(max_pixels=2_000_000, alpha="keep"))
    except InputError:  # refused on a second read: nothing computed on it
        return
    if loaded.format not in ("PNG", "JPEG") or loaded.mode in ("CMYK", "YCbCr"):
        return
    try:
        expected = independent_pixels(path)
    except Exception as exc:  # the other decoder refuses what was accepted
        pytest.fail(f"accepted, but the independent decoder says: {exc!r}")
    if expected is not None:
        np.testing.assert_array_equal(loaded.pixels, expected)
