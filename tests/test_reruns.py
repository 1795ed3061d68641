"""Reruns, races and odd folders: a batch never takes its own outputs, never replaces
what another run just wrote, and finishes what an interrupted run left."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run
from PIL import Image

from cnnfilters import atomic, inputs
from cnnfilters.atomic import atomic_write
from cnnfilters.errors import OutputError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(19)
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / name)
    return root


def test_a_rerun_beside_the_inputs_never_takes_its_own_outputs(folder, capsys):
    for _ in range(3):
        code, _, err = run(capsys, "gradient", folder, "--skip-existing", "-q")
        assert code == 0, err
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        assert names == ["a.dx.png", "a.dy.png", "a.gradient.png", "a.png"]


def test_an_out_dir_inside_the_input_folder_is_not_an_input(folder, capsys):
    out = folder / "out"
    for _ in range(2):
        code, _, err = run(capsys, "grayscale", "-r", folder, "--out-dir", out, "--skip-existing",
                           "-q")  # fmt: skip
        assert code == 0, err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.grayscale.png", "sub/b.grayscale.png"]


def test_skip_existing_finishes_an_input_that_has_some_of_its_outputs(folder, capsys):
    assert run(capsys, "gradient", folder / "a.png", "-q")[0] == 0
    (folder / "a.dx.png").unlink()  # as an interrupted run leaves it
    code, _, err = run(capsys, "gradient", folder / "a.png", "--skip-existing", "-q")
    assert code == 0, err
    for name in ("a.dx.png", "a.dy.png", "a.gradient.png"):
        with Image.open(folder / name) as image:
            image.load()


@pytest.fixture(params=["unnamed", "named"])
def files(request, monkeypatch):
    """atomic_write with unnamed files (O_TMPFILE), and with named temporary files
    as on a file system that has none."""
    assert request.param == "named" or atomic._UNNAMED, "no unnamed files (O_TMPFILE, /proc)"
    monkeypatch.setattr(atomic, "_UNNAMED", atomic._UNNAMED and request.param == "unnamed")
    return request.param


def test_a_file_written_meanwhile_by_another_run_is_never_replaced(tmp_path, files):
    target = tmp_path / "x.png"

    def write(handle):
        handle.write(b"ours")
        target.write_bytes(b"theirs")  # another process, between our check and our rename

    with pytest.raises(OutputError, match="exists"):
        atomic_write(target, write, replace=False)
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left
    atomic_write(target, lambda handle: handle.write(b"forced"))
    assert target.read_bytes() == b"forced"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_a_failed_or_interrupted_write_leaves_the_target_as_it_was(tmp_path, files):
    target = tmp_path / "x.png"
    target.write_bytes(b"before")

    def fail(handle):
        handle.write(b"half")
        raise OutputError("the encoder failed")

    def interrupt(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(OutputError, match="encoder"):
        atomic_write(target, fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupt)
    assert target.read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
    atomic_write(tmp_path / "new.png", lambda handle: handle.write(b"new"))
    mode = (tmp_path / "new.png").stat().st_mode & 0o777
    assert mode == 0o666 & ~atomic._UMASK  # as any new file's


def test_a_missing_folder_is_named(tmp_path, files):
    with pytest.raises(OutputError, match=r"the folder .*gone does not exist"):
        atomic_write(tmp_path / "gone" / "x.png", lambda handle: handle.write(b"x"))


def test_an_unreadable_subfolder_is_an_error_not_a_silent_skip(folder, capsys, monkeypatch):
    real_scandir = os.scandir

    def scandir(path="."):
        if isinstance(path, (str, os.PathLike)) and Path(path) == folder / "sub":
            raise PermissionError(13, "Permission denied", os.fsdecode(path))  # as without x
        return real_scandir(path)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    code, _, err = run(capsys, "grayscale", "-r", folder, "-q")
    assert code == 3
    assert err.strip() == (
        f"cnnfilters: error: {folder / 'sub'}: cannot read this folder (Permission denied)"
    )
    assert (folder / "a.grayscale.png").exists()


def test_output_names_of_255_bytes_can_be_written(tmp_path, capsys):
    stem = "p" * (255 - len(".grayscale.png"))
    source = tmp_path / f"{stem}.png"
    Image.new("RGB", (4, 4)).save(source)
    code, _, err = run(capsys, "grayscale", source, "-q")
    assert code == 0, err
    assert len((tmp_path / f"{stem}.grayscale.png").name.encode()) == 255


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("rerun", [False, True])
def test_an_output_name_too_long_is_that_inputs_error_only(folder, jobs, rerun, capsys):
    long = folder / ("q" * 250 + ".png")
    Image.new("RGB", (4, 4)).save(long)
    out = folder.parent / "out"
    extra = ["--skip-existing"] if rerun else []
    code, table, err = run(capsys, "grayscale", folder / "a.png", long, "--out-dir", out,
                           "-j", jobs, *extra)  # fmt: skip
    assert code == 3
    assert err.count("\n") == 1
    assert err.startswith(f"cnnfilters: error: {long}: {out / ('q' * 250)}.grayscale.png: ")
    assert err.endswith("cannot write this output (File name too long)\n")
    assert (out / "a.grayscale.png").exists()
    assert "2 input(s), 1 passed, 1 failed or errored; 1 file(s) written" in table


def test_an_unreadable_input_is_that_inputs_error_only(folder, capsys, monkeypatch):
    locked = folder / "a.png"
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if Path(path) == locked:  # what the kernel says of a file we may not read
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)  # root reads a chmod 000 file anyway
    code, _, err = run(capsys, "grayscale", locked, folder / "sub" / "b.png", "-q", "-j", "1")
    assert code == 3
    assert err == f"cnnfilters: error: {locked}: permission denied\n"
    assert (folder / "sub" / "b.grayscale.png").exists()


def test_a_batch_syncs_once_and_a_single_file_is_synced_itself(folder, capsys, monkeypatch):
    calls = {"fsync": 0, "sync": 0}
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.__setitem__("fsync", calls["fsync"] + 1),
                                                 real_fsync(fd))[1])  # fmt: skip
    monkeypatch.setattr(os, "sync", lambda: calls.__setitem__("sync", calls["sync"] + 1))
    code, _, err = run(capsys, "grayscale", "-r", folder, "-q", "-j", "1")
    assert code == 0, err
    assert calls == {"fsync": 0, "sync": 1}  # two files, one sync at the end
    code, _, err = run(capsys, "grayscale", folder / "a.png", "-o", folder / "one.png", "-q")
    assert code == 0, err
    assert calls == {"fsync": 1, "sync": 1}


def test_a_rerun_redoes_an_output_a_power_cut_left_short(folder, capsys):
    out = folder.parent / "out"
    assert run(capsys, "gradient", "-r", folder, "--out-dir", out, "-q")[0] == 0
    cut = out / "a.dx.png"
    whole = cut.read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])  # renamed, but its data never reached the disk
    (out / "sub" / "b.dy.png").write_bytes(b"")
    code, _, err = run(capsys, "gradient", "-r", folder, "--out-dir", out, "--skip-existing", "-q")
    assert code == 0, err
    assert cut.read_bytes() == whole
    assert (out / "sub" / "b.dy.png").stat().st_size > 0


def test_output_complete_knows_a_whole_png_from_a_cut_one(tmp_path):
    from cnnfilters.outputs import output_complete

    image = tmp_path / "x.png"
    Image.new("L", (3, 3)).save(image)
    assert output_complete(image)
    image.write_bytes(image.read_bytes()[:-1])
    assert not output_complete(image)
    assert not output_complete(tmp_path / "missing.png")
    (tmp_path / "x.npy").write_bytes(b"")
    assert not output_complete(tmp_path / "x.npy")


def _run_alone(command, path: Path, *, force: bool = False, raw: bool = False):
    """The library's run of one input, without the command line's rerun check: the
    clobber rule of each input, which also guards a file that appears meanwhile."""
    from cnnfilters.outputs import Destination
    from cnnfilters.run import Settings, run

    settings = Settings(destination=Destination(force=force, raw=raw))
    report, _ = run(command, [inputs.Source(path)], settings)
    return report.inputs[0]


def test_one_existing_output_refuses_the_input_before_any_is_written(tmp_path, capsys):
    """The clobber rule is checked for all of an input's outputs before the first is
    written: with only a.dy.png there, a.dx.png and a.gradient.png are not made."""
    from cnnfilters.commands import GradientOptions

    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(34).integers(0, 256, (9, 12), dtype=np.uint8)).save(path)
    (tmp_path / "a.dy.png").write_bytes(b"an earlier result")
    entry = _run_alone(GradientOptions(), path)
    assert entry.exit_code == 3
    assert entry.error == f"{path}: {tmp_path / 'a.dy.png'}: exists (use --force to overwrite)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dy.png", "a.png"]
    assert (tmp_path / "a.dy.png").read_bytes() == b"an earlier result"
    # The command line says it once for the run, before any work.
    code, out, err = run(capsys, "gradient", path)
    assert (code, out) == (3, "")
    assert err == (
        f"cnnfilters: error: 1 output exists ({tmp_path / 'a.dy.png'}): use "
        "--force to replace it or --skip-existing to do the rest\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dy.png", "a.png"]


def test_a_rerun_is_one_line_before_any_work(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(5):
        _image(folder / f"p{index}.png")
    out_dir = tmp_path / "out"
    assert run(capsys, "grayscale", folder, "--out-dir", out_dir, "-q")[0] == 0
    (out_dir / "p3.grayscale.png").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    code, out, err = run(capsys, "grayscale", folder, "--out-dir", out_dir)
    assert (code, out) == (3, "")
    first = out_dir / "p0.grayscale.png"
    assert err == (
        f"cnnfilters: error: 4 outputs exist (first: {first}): use --force to replace them "
        "or --skip-existing to do the rest\n"
    )
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == before
    # --skip-existing does the rest; --force replaces them all.
    code, out, _ = run(capsys, "grayscale", folder, "--out-dir", out_dir, "--skip-existing", "-q")
    assert code == 0 and (out_dir / "p3.grayscale.png").exists()
    assert run(capsys, "grayscale", folder, "--out-dir", out_dir, "--force", "-q")[0] == 0


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_folder_in_an_outputs_place_is_refused_by_name_before_any_is_written(
    tmp_path, capsys, force
):
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(34).integers(0, 256, (9, 12), dtype=np.uint8)).save(path)
    (tmp_path / "a.dx.png").mkdir()
    code, _, err = run(capsys, "gradient", path, "-q", *force)
    assert code == 3
    assert err == f"cnnfilters: error: {path}: {tmp_path / 'a.dx.png'}: is a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dx.png", "a.png"]


def _image(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(35).integers(0, 256, (9, 12), dtype=np.uint8)).save(path)
    return path


def test_with_raw_an_existing_array_refuses_the_input_before_its_picture(tmp_path, capsys):
    """Every file of every output is checked, the .npy beside the PNG too."""
    from cnnfilters.commands import GrayscaleOptions

    path = _image(tmp_path / "a.png")
    (tmp_path / "a.grayscale.npy").write_bytes(b"an earlier array")
    entry = _run_alone(GrayscaleOptions(), path, raw=True)
    assert entry.exit_code == 3
    assert entry.error.endswith(
        f"{tmp_path / 'a.grayscale.npy'}: exists (use --force to overwrite)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.grayscale.npy", "a.png"]
    code, _, err = run(capsys, "grayscale", path, "--raw", "-q")
    assert code == 3 and f"1 output exists ({tmp_path / 'a.grayscale.npy'})" in err
    code, _, err = run(capsys, "grayscale", path, "-q")  # without --raw, no .npy is written
    assert code == 0, err


def test_an_output_that_is_a_hard_link_to_its_input_is_never_replaced(tmp_path, capsys):
    """In a folder, a.grayscale.png linked to a.png is an output of this run (not an
    input), and replacing it with --force would replace the input's bytes."""
    folder = tmp_path / "in"
    folder.mkdir()
    path = _image(folder / "a.png")
    os.link(path, folder / "a.grayscale.png")
    before = path.read_bytes()
    code, _, err = run(capsys, "grayscale", folder, "--force", "-q")
    assert code == 3
    assert f"{folder / 'a.grayscale.png'}: this is the input file; it is never overwritten" in err
    assert path.read_bytes() == before


def test_a_dangling_symlink_in_an_outputs_place_is_replaced_with_force(tmp_path, capsys):
    path = _image(tmp_path / "a.png")
    (tmp_path / "a.grayscale.png").symlink_to(tmp_path / "nowhere.png")
    code, _, err = run(capsys, "grayscale", path, "-q")
    assert code == 3 and "1 output exists" in err and (tmp_path / "a.grayscale.png").is_symlink()
    from cnnfilters.commands import GrayscaleOptions

    entry = _run_alone(GrayscaleOptions(), path)
    assert entry.exit_code == 3 and entry.error.endswith("exists (use --force to overwrite)")
    code, _, err = run(capsys, "grayscale", path, "--force", "-q")
    assert code == 0, err
    assert not (tmp_path / "a.grayscale.png").is_symlink()
    with Image.open(tmp_path / "a.grayscale.png") as image:
        assert image.size == (12, 9)
