"""The clobber rule, called directly (the command-line tests run it in batch workers,
where a mutation tool's tracing does not follow)."""

from __future__ import annotations

import os

import pytest

from cnnfilters.clobber import check_targets
from cnnfilters.errors import OutputError


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"the input")
    return path


def _refusal(targets, source, force):
    with pytest.raises(OutputError) as raised:
        check_targets({"grayscale": targets}, source, force=force)
    return str(raised.value)


@pytest.mark.parametrize("force", [False, True])
def test_an_output_linked_to_the_input_is_never_replaced(source, force):
    linked = source.parent / "a.grayscale.png"
    os.link(source, linked)
    words = f"{linked}: this is the input file; it is never overwritten"
    assert _refusal([linked], source, force) == words
    symlinked = source.parent / "b.grayscale.png"
    symlinked.symlink_to(source)
    assert _refusal([symlinked], source, force) == words.replace(str(linked), str(symlinked))


def test_an_existing_file_is_replaced_only_with_force_and_a_folder_never(source):
    existing = source.parent / "a.dy.png"
    existing.write_bytes(b"an earlier output")
    missing = source.parent / "a.dx.png"
    assert _refusal([missing, existing], source, False) == (
        f"{existing}: exists (use --force to overwrite)"
    )
    check_targets({"gradient": [missing, existing]}, source, force=True)
    folder = source.parent / "a.gradient.png"
    folder.mkdir()
    assert _refusal([folder], source, True) == f"{folder}: is a directory"


def test_a_dangling_symlink_is_an_existing_file(source):
    dangling = source.parent / "a.grayscale.png"
    dangling.symlink_to(source.parent / "nowhere.png")
    assert _refusal([dangling], source, False) == f"{dangling}: exists (use --force to overwrite)"
    check_targets({"grayscale": [dangling]}, source, force=True)
