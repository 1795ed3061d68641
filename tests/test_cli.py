"""The command line, through Typer's CliRunner and through the installed executable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cnnfilters.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def rgb_png(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def gray_png(tmp_path: Path) -> Path:
    rows, cols = np.mgrid[0:24, 0:30]
    path = tmp_path / "steps.png"
    Image.fromarray(((rows >= 12) * 150 + (cols >= 15) * 60).astype(np.uint8)).save(path)
    return path


def test_every_command_answers_help():
    group = typer.main.get_command(app)
    assert set(group.commands) >= {"grayscale", "gradient", "avgpool", "commute", "kernels", "demo"}
    for name in group.commands:
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert "Usage" in result.stdout


def test_version():
    from cnnfilters import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"cnnfilters {__version__}"


def test_grayscale_writes_a_gray_image_beside_the_input(rgb_png):
    result = invoke("grayscale", rgb_png)
    assert result.exit_code == 0, result.output
    out = rgb_png.with_name("photo.grayscale.png")
    with Image.open(out) as image:
        assert image.mode == "L" and image.size == (50, 37)
    assert "Pillow convert('L')" in result.stdout and "pass" in result.stdout


def test_grayscale_json_report_has_the_documented_shape(rgb_png, tmp_path):
    report_path = tmp_path / "report.json"
    result = invoke("grayscale", rgb_png, "--json", "--report", report_path)
    assert result.exit_code == 0
    printed = json.loads(result.stdout)
    assert printed == json.loads(report_path.read_text())
    assert printed["schema"] == 1 and printed["command"] == "grayscale" and printed["passed"]
    (entry,) = printed["inputs"]
    assert entry["input"] == str(rgb_png) and entry["error"] is None
    assert entry["outputs"] == [str(rgb_png.with_name("photo.grayscale.png"))]
    names = [c["name"] for c in entry["checks"]]
    assert names == ["luma", "8-bit output"]
    pillow = entry["checks"][1]
    assert pillow["max_abs"] <= 1 and pillow["tolerance"] == 1 and pillow["total"] == 37 * 50


def test_grayscale_bt709_and_custom_weights(rgb_png, tmp_path):
    assert (
        invoke("grayscale", rgb_png, "--weights", "bt709", "--out-dir", tmp_path / "a").exit_code
        == 0
    )
    result = invoke(
        "grayscale", rgb_png, "--weights", "0.5,0.5,0", "--json", "-o", tmp_path / "b.png"
    )
    checks = json.loads(result.stdout)["inputs"][0]["checks"]
    assert [c["name"] for c in checks] == ["luma"]  # Pillow's check is for bt601 only
    assert (tmp_path / "b.png").exists()


def test_gradient_writes_three_maps_and_matches_slicing_exactly(gray_png):
    result = invoke("gradient", gray_png, "--json", "--raw")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["inputs"][0]
    for check in entry["checks"]:
        assert check["max_abs"] == 0 and check["differing"] == 0 and check["psnr_db"] is None
    for name in ("dy", "dx", "gradient"):
        assert gray_png.with_name(f"steps.{name}.png").exists()
    dy = np.load(gray_png.with_name("steps.dy.npy"))
    assert dy[0, 11, 0] == 150 and dy[0, -1, 0] == -150  # the step, then the border: -X
    assert dy[0, -1, 20] == -210
    with Image.open(gray_png.with_name("steps.dy.png")) as image:
        pixels = np.asarray(image)
    assert pixels[0, 0] == 128  # zero is mid-gray


def test_gradient_on_rgb_writes_colour_maps(rgb_png):
    result = invoke("gradient", rgb_png, "--on", "rgb", "--padding-mode", "replicate", "-q")
    assert result.exit_code == 0 and result.stdout == ""
    with Image.open(rgb_png.with_name("photo.dx.png")) as image:
        assert image.mode == "RGB"


@pytest.mark.parametrize(("edge", "size"), [("drop", (16, 12)), ("partial", (17, 13))])
def test_avgpool_edge_rule_decides_the_size(rgb_png, edge, size):
    result = invoke("avgpool", rgb_png, "-k", "3", "--edge", edge, "--json")
    assert result.exit_code == 0, result.output
    with Image.open(rgb_png.with_name("photo.avgpool3.png")) as image:
        assert image.size == size
    checks = json.loads(result.stdout)["inputs"][0]["checks"]
    assert checks[1]["reference"] == "Pillow reduce(3)" and checks[1]["max_abs"] <= 1


def test_commute_reports_counterexamples_and_exact_commutation(gray_png):
    result = invoke("commute", gray_png, "-a", "relu", "-a", "gelu", "-a", "neg", "--json",
                    "--pictures", "all")  # fmt: skip
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["inputs"][0]["checks"]}
    assert checks["relu"]["commutes"] and checks["relu"]["max_abs"] == 0
    assert checks["relu"]["monotonicity"] == "nondecreasing"
    assert checks["neg"]["min_identity_holds"] is True
    gelu = checks["gelu"]
    assert gelu["monotonicity"] == "neither" and gelu["passed"]
    example = gelu["counterexample"] or gelu["synthetic_counterexample"]
    assert example["max_of_act"] > example["act_of_max"]
    for act in ("relu", "gelu", "neg"):
        for part in ("act-of-pool", "pool-of-act", "diff"):
            assert gray_png.with_name(f"steps.{act}.{part}.png").exists()


def test_commute_draws_by_default_the_difference_of_what_need_not_commute(gray_png):
    result = invoke("commute", gray_png, "-a", "relu", "-a", "gelu", "-a", "neg", "--json")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["inputs"][0]
    assert sorted(Path(f).name for f in entry["outputs"]) == ["steps.gelu.diff.png",
                                                            "steps.neg.diff.png"]  # fmt: skip
    assert any(
        n.startswith("pictures: the difference of each activation") for n in entry["notices"]
    )
    result = invoke("commute", gray_png, "-a", "relu", "--pictures", "none", "--json", "--force")
    assert result.exit_code == 0 and json.loads(result.stdout)["inputs"][0]["outputs"] == []


@pytest.mark.parametrize(("on", "window"), [("centered", ()), ("raw", ("-k", "3", "--stride", "2")),
                                           ("gradient", ("-k", "2", "--stride", "1"))])  # fmt: skip
def test_commute_raw_values_are_both_orders_and_their_exact_difference(rgb_png, monkeypatch, on,
                                                                       window):  # fmt: skip
    """--raw writes each map's float values, made again by strips when written: the two
    orders and their float64 difference, as ops.commute gives on the whole input
    (windows side by side and overlapping; a strip per pooled row); the pictures,
    drawn a strip at a time too, are those maps drawn whole."""
    from cnnfilters import commands, ops
    from cnnfilters.images import load_image
    from cnnfilters.levels import mosaic, signed_to_image

    monkeypatch.setattr(commands.strips, "STRIP_BYTES", 1)
    result = invoke("commute", rgb_png, "-a", "gelu", "-a", "square", "--on", on, *window,
                    "--raw", "--json", "--pictures", "all")  # fmt: skip
    assert result.exit_code == 0, result.output
    x = commands.commute._commute_input(load_image(rgb_png), on)
    kernel, stride = (int(window[1]), int(window[3])) if window else (2, None)
    for act in ("gelu", "square"):
        expected = ops.commute(x, act, kernel, stride)
        values = {part: np.load(rgb_png.with_name(f"photo.{act}.{part}.npy"))
                  for part in ("act-of-pool", "pool-of-act", "diff")}  # fmt: skip
        np.testing.assert_array_equal(values["act-of-pool"], expected.act_of_pool)
        np.testing.assert_array_equal(values["pool-of-act"], expected.pool_of_act)
        assert values["diff"].dtype == np.float64
        np.testing.assert_array_equal(values["diff"], expected.difference)
        assert np.count_nonzero(values["diff"]) == expected.differing  # those windows only
        # The pictures, drawn a strip at a time: each map's whole mosaic on its scale.
        units = json.loads(result.stdout)["inputs"][0]["info"]["units_per_level"]
        for part, whole in (
            ("act-of-pool", expected.act_of_pool),
            ("pool-of-act", expected.pool_of_act),
            ("diff", expected.difference),
        ):
            pixels, scale = signed_to_image(mosaic(whole, gap=2), 8)
            with Image.open(rgb_png.with_name(f"photo.{act}.{part}.png")) as picture:
                drawn = np.asarray(picture)
            np.testing.assert_array_equal(drawn, pixels[0] if len(pixels) == 1 else
                                          np.moveaxis(pixels, 0, -1))  # fmt: skip
            assert units[f"{act}.{part}"] == scale


def test_commute_all_is_the_default(gray_png):
    result = invoke(
        "commute", gray_png, "--on", "centered", "--json", "--out-dir", gray_png.parent / "c"
    )
    names = [c["name"] for c in json.loads(result.stdout)["inputs"][0]["checks"]]
    assert len(names) == 13 and names[0] == "relu"


def test_existing_output_is_kept_without_force(rgb_png):
    target = rgb_png.with_name("photo.grayscale.png")
    target.write_bytes(b"precious")
    result = invoke("grayscale", rgb_png)
    assert result.exit_code == 3
    assert f"1 output exists ({target}): use --force to replace it" in result.stderr
    assert target.read_bytes() == b"precious"
    assert invoke("grayscale", rgb_png, "--force").exit_code == 0
    assert target.read_bytes() != b"precious"


def test_the_input_is_never_overwritten(rgb_png):
    before = rgb_png.read_bytes()
    result = invoke("grayscale", rgb_png, "-o", rgb_png, "--force")
    assert result.exit_code == 3 and "this is the input file" in result.stderr
    assert rgb_png.read_bytes() == before


def test_a_bad_input_does_not_stop_the_others(rgb_png, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    missing = tmp_path / "missing.png"
    result = invoke("grayscale", bad, missing, rgb_png, "--json")
    assert result.exit_code == 3
    errors = result.stderr.strip().splitlines()
    assert sorted(errors) == sorted([  # as the inputs finish, in any order
        f"cnnfilters: error: {bad}: not a recognised image file",
        f"cnnfilters: error: {missing}: no such file",
    ])  # fmt: skip
    assert "Traceback" not in result.output
    assert rgb_png.with_name("photo.grayscale.png").exists()
    entries = json.loads(result.stdout)["inputs"]
    assert [e["error"] is None for e in entries] == [False, False, True]
    assert not bad.with_name("notes.grayscale.png").exists()


def test_an_image_smaller_than_the_pool_is_an_input_error(tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.new("L", (2, 3)).save(tiny)
    result = invoke("avgpool", tiny, "-k", "4")
    assert result.exit_code == 3
    assert f"{tiny}: kernel size 4 is larger than the padded input (3 x 2 pixels" in result.stderr
    assert invoke("avgpool", tiny, "-k", "4", "--edge", "partial").exit_code == 0


def test_a_run_builds_only_its_command_and_helps_the_same():
    from cnnfilters import startup

    names = list(typer.main.get_command(app).commands)
    for name in names:
        lean = startup.lean_app(app, [name, "--help"])
        assert list(typer.main.get_command(lean).commands) == [name]
        ours = runner.invoke(lean, [name, "--help"], prog_name="cnnfilters")
        full = runner.invoke(app, [name, "--help"], prog_name="cnnfilters")
        assert ours.exit_code == full.exit_code == 0 and ours.stdout == full.stdout
    for args in ([], ["--version"], ["--help"], ["gradien"]):
        assert startup.lean_app(app, args) is app
    assert len(app.registered_commands) == len(names)  # the app itself is left whole


_NUMPY_SEES = """
import builtins, os, sys
real, seen = builtins.__import__, []
def spy(name, *args, **kwargs):
    if name == "numpy" and not seen:
        seen.append(os.environ.get("OPENBLAS_THREAD_TIMEOUT"))
    return real(name, *args, **kwargs)
builtins.__import__ = spy
sys.argv = ["cnnfilters", "grayscale", sys.argv[1], "-q"]
from cnnfilters.__main__ import main
try:
    main()
except SystemExit:
    pass
print(seen, file=sys.stderr)
"""


@pytest.mark.parametrize("own", [None, "30"])
def test_openblas_threads_sleep_when_idle_from_the_start(own, rgb_png):
    """The command sets OpenBLAS's spin to its shortest before numpy is imported (an
    idle thread spun 0.1 s at each start, a core's time taken from a batch's
    workers); a value the user set is kept."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if own is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = own
    done = subprocess.run([sys.executable, "-c", _NUMPY_SEES, str(rgb_png)], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stderr.strip().splitlines()[-1] == repr([own or "4"])


def test_usage_errors_exit_2(rgb_png, tmp_path):
    assert invoke("grayscale", rgb_png, "--weights", "bt2020").exit_code == 2
    assert invoke("commute", rgb_png, "-a", "mish").exit_code == 2
    assert invoke("gradient", rgb_png, "--padding", "mirror").exit_code == 2
    assert invoke("avgpool", rgb_png, "-k", "0").exit_code == 2
    result = invoke("grayscale", rgb_png, rgb_png, "-o", tmp_path / "x.png")
    assert result.exit_code == 2 and "-o/--output takes one input, got several" in result.stderr


def test_a_failed_check_exits_1(gray_png, monkeypatch):
    from cnnfilters import reference

    def wrong(x, mode, rows=None):  # a reference that disagrees everywhere
        strip = np.asarray(x[..., rows[0] : rows[1], :], dtype=np.float32)
        return strip * 0 + 1, strip * 0

    monkeypatch.setattr(reference, "forward_differences", wrong)
    result = invoke("gradient", gray_png, "--force")
    assert result.exit_code == 1
    assert "FAIL" in result.stdout


@pytest.mark.parametrize("on", ["gray", "rgb"])
def test_gradient_streams_large_images_to_the_same_files(tmp_path, monkeypatch, on):
    """Maps kept from the checking pass and maps computed again while writing
    (the path of images too large to keep) give the same bytes, over many strips."""
    from cnnfilters import commands

    rng = np.random.default_rng(5)
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 256, (203, 64, 3), dtype=np.uint8)).save(path)
    monkeypatch.setattr(commands.strips, "STRIP_BYTES", 64 * 4 * 3 * 8)  # strips of 8 rows
    written = {}
    for keep in (32 << 20, 0):
        monkeypatch.setattr(commands.gradient, "_KEEP_BYTES", keep)
        out = tmp_path / f"keep{keep}"
        result = invoke("gradient", path, "--on", on, "--raw", "--out-dir", out, "-q")
        assert result.exit_code == 0, result.output
        written[keep] = {f.name: f.read_bytes() for f in sorted(out.iterdir())}
    assert len(written[0]) == 6 and written[0] == written[32 << 20]
    base = np.asarray(Image.open(path), dtype=np.float32).transpose(2, 0, 1)
    if on == "gray":
        base = np.floor(base[0] * 0.299 + base[1] * 0.587 + base[2] * 0.114 + 0.5)[None]
    dy = np.load(tmp_path / "keep0" / "wide.dy.npy")
    assert np.array_equal(dy[:, :-1], base[:, 1:] - base[:, :-1])


def test_sixteen_bit_input_gives_sixteen_bit_output(tmp_path):
    path = tmp_path / "deep.png"
    values = (np.arange(20 * 16).reshape(20, 16) * 200).astype(np.uint16)
    Image.fromarray(values).save(path)  # uint16 -> mode I;16
    result = invoke("avgpool", path, "--raw", "--json")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "deep.avgpool2.png") as image:
        assert image.mode in ("I;16", "I") and np.asarray(image).max() > 255
    pooled = np.load(tmp_path / "deep.avgpool2.npy")
    assert pooled[0, 0, 0] == values[:2, :2].mean()


def test_kernels_prints_the_matrices():
    result = invoke("kernels", "gradient")
    assert result.exit_code == 0 and "w[0, 0]" in result.stdout and "-1" in result.stdout
    data = json.loads(invoke("kernels", "--json", "-k", "3").stdout)
    by_name = {c["name"]: c for c in data}
    assert by_name["gradient"]["weight"][0][0] == [[0, 0, 0], [0, -1, 0], [0, 1, 0]]
    assert by_name["avgpool3"]["stride"] == 3 and by_name["avgpool3"]["groups"] == 3
    assert invoke("kernels", "sobel").exit_code == 2


def test_demo_writes_every_construction(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--out-dir", out)
    assert result.exit_code == 0, result.output
    for command in ("grayscale", "gradient", "avgpool-k4", "avgpool-k3", "commute"):
        report = json.loads((out / f"{command}.json").read_text())
        assert report["passed"]
        for entry in report["inputs"]:
            assert all(Path(p).exists() for p in entry["outputs"])
    assert (out / "gradient" / "chart.dy.png").exists()
    assert invoke("demo", "--out-dir", out, "-q").exit_code == 0  # reruns replace its own outputs


def _executable() -> str:
    found = shutil.which("cnnfilters", path=os.path.dirname(sys.executable))
    assert found is not None, "the cnnfilters executable is not installed beside this Python"
    return found


def test_installed_executable_runs_and_reports_usage_errors_in_one_line(rgb_png):
    exe = _executable()
    done = subprocess.run([exe, "grayscale", str(rgb_png), "-q"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == ""
    bad = subprocess.run([exe, "gradient", str(rgb_png), "--padding", "mirror"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2
    (line,) = bad.stderr.splitlines()
    assert line.startswith("cnnfilters: error:") and "mirror" in line
    missing = subprocess.run([exe, "avgpool", "/nonexistent/x.png"], capture_output=True, text=True)
    assert missing.returncode == 3
    assert missing.stderr == "cnnfilters: error: /nonexistent/x.png: no such file\n"


def test_python_dash_m_works():
    done = subprocess.run([sys.executable, "-m", "cnnfilters", "--version"], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("cnnfilters ")


def test_help_and_version_import_neither_numpy_nor_pillow():
    code = (
        "import sys\n"
        "from cnnfilters.cli import main\n"
        "for argv in (['--help'], ['--version'], ['grayscale', '--help']):\n"
        "    main(argv)\n"
        "print(sorted(m for m in ('numpy', 'PIL') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["grayscale", "gradient", "avgpool"])
def test_a_run_of_one_file_imports_no_pool_no_json_and_no_scratch_folder(command, tmp_path):
    """A run of one file, by hand or in a shell loop over thousands, starts no process
    pool, writes no JSON, learns nothing and reads no standard input: multiprocessing,
    the pool, json, the learn module and tempfile (the scratch folder for standard
    input and output) stay unimported, 8 ms of its start. With --json, json is."""
    from PIL import Image

    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    unused = ("multiprocessing", "concurrent.futures.process", "json", "tempfile",
              "cnnfilters.learn")  # fmt: skip
    code = (
        "import sys\n"
        "from cnnfilters.cli import main\n"
        "code = main(sys.argv[1:])\n"
        f"print(code, sorted(m for m in {unused!r} if m in sys.modules))\n"
    )
    args = [command, str(image), "--out-dir", str(tmp_path / "out"), "-q"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 []\n"
    done = subprocess.run([sys.executable, "-c", code, *args[:-1], "--json", "--force"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 ['json']"
