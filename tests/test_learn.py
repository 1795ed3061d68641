"""learn: a conv layer trained on the engine's backward pass arrives at each construction."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from cnnfilters.commands import LearnOptions
from cnnfilters.errors import CnnFiltersError
from cnnfilters.images import load_image
from cnnfilters.learn import Diverged, Layer, Problem, train
from cnnfilters.reference import least_squares_conv

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PHOTO = SAMPLES / "ihc.png"  # a real microscope photograph, in colour

F1 = [[0, 0, 0], [0, -1, 0], [0, 1, 0]]
F2 = [[0, 0, 0], [0, -1, 1], [0, 0, 0]]


@pytest.mark.parametrize(
    ("what", "k", "seed", "truth"),
    [
        ("gradient", None, 3, np.array([[F1], [F2]], dtype=np.float64)),
        ("grayscale", None, 0, np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)),
        ("grayscale", None, 11, np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)),
        ("avgpool", 3, 0, np.full((1, 1, 3, 3), 1 / 9)),
        ("avgpool", 3, 5, np.full((1, 1, 3, 3), 1 / 9)),
    ],
)
def test_each_construction_is_learned_back_from_a_random_start(what, k, seed, truth):
    learned = LearnOptions(what=what, k=k, seed=seed).fit([load_image(PHOTO)])
    assert np.abs(learned.weight - truth).max() <= 1e-3
    assert np.abs(learned.bias).max() <= 1e-3 * 255
    assert np.abs(learned.lstsq_weight - truth).max() <= 1e-9  # the reference is exact
    assert all(check.passed for check in learned.checks), [c.to_dict() for c in learned.checks]
    assert learned.training.stopped in ("tol", "converged")
    assert learned.training.losses[-1] < 1e-9 * learned.training.losses[0]


def _correlate(image: np.ndarray, kernel: np.ndarray, bias: float) -> np.ndarray:
    """'same' zero-padded correlation, written here (not the engine, not the reference)."""
    pad = kernel.shape[0] // 2
    windows = sliding_window_view(np.pad(image, pad), kernel.shape)
    return np.einsum("ijuv,uv->ij", windows, kernel) + bias


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, np.ndarray, float]:
    folder = tmp_path_factory.mktemp("pair")
    rng = np.random.default_rng(21)
    kernel = rng.uniform(0.0, 0.04, (5, 5))
    kernel[2, 2] += 0.3
    bias = 4.5
    before = np.asarray(Image.open(PHOTO).convert("L"), dtype=np.float64)
    exact = _correlate(before, kernel, bias)
    assert exact.min() >= 0 and exact.max() < 255  # a linear map: nothing clipped
    after = np.floor(exact + 0.5).astype(np.uint8)
    Image.fromarray(before.astype(np.uint8)).save(folder / "before.png")
    Image.fromarray(after).save(folder / "after.png")
    return folder / "before.png", folder / "after.png", kernel, bias


def test_a_pair_gives_back_the_kernel_that_was_applied_and_rounded(pair, tmp_path, capsys):
    before, after, kernel, bias = pair
    code, out, err = run(
        capsys, "learn", "pair", before, after, "-k", "5", "--out-dir", tmp_path, "--json"
    )
    assert code == 0, err
    assert err == ""  # no progress bar when stderr is not a terminal
    item = json.loads(out)["inputs"][0]
    learned = np.array(item["info"]["learned"]["weight"])[0, 0]
    assert np.abs(learned - kernel).max() <= 1e-2
    assert abs(item["info"]["learned"]["bias"][0] - bias) <= 0.5
    refit = next(c for c in item["checks"] if c["name"].startswith("refit"))
    assert refit["passed"] and refit["max_abs"] <= 1 and refit["psnr_db"] > 50
    # The written kernel file through convolve gives AFTER back, within the rounding.
    kernel_file = tmp_path / "before.learn-pair.txt"
    np.testing.assert_allclose(np.loadtxt(kernel_file), learned, rtol=1e-8)
    bias_text = f"{item['info']['learned']['bias'][0]:.9g}"
    code, _, err = run(
        capsys,
        "convolve",
        before,
        "--kernel-file",
        kernel_file,
        "--bias",
        bias_text,
        "-o",
        tmp_path / "refit.png",
        "-q",
    )
    assert code == 0, err
    refit_pixels = np.asarray(Image.open(tmp_path / "refit.png"), dtype=np.int16)
    wanted = np.asarray(Image.open(after), dtype=np.int16)
    assert np.abs(refit_pixels - wanted).max() <= 1


def test_the_layer_file_is_in_torch_layout_and_the_curve_is_a_picture(tmp_path, capsys):
    code, _, err = run(capsys, "learn", "avgpool", PHOTO, "-k", "2", "--out-dir", tmp_path, "-q")
    assert code == 0, err
    with np.load(tmp_path / "ihc.learn-avgpool.npz") as layer:  # closes the archive
        metadata = json.loads(str(layer["metadata"]))[0]
        weight = layer["learned-avgpool.weight"]
    assert weight.shape == (1, 1, 2, 2)
    assert metadata["stride"] == 2 and metadata["padding"] == 0
    np.testing.assert_allclose(weight, 0.25, atol=1e-3)
    with Image.open(tmp_path / "ihc.learn-avgpool.loss.png") as curve:
        assert curve.size == (640, 360)
        assert len(np.unique(np.asarray(curve.convert("L")))) > 20  # a drawing, not a blank


def test_a_diverging_training_is_exit_1_and_writes_nothing(tmp_path, capsys):
    code, _, err = run(
        capsys, "learn", "gradient", PHOTO, "--lr", "10", "--out-dir", tmp_path, "-q"
    )
    assert code == 1
    assert "training diverged at step" in err and "--lr" in err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_train_raises_on_divergence_and_never_returns_nan_weights():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 10, 10))
    problem = Problem(x, x[:, :, 1:-1, 1:-1] * 2.0, Layer((1, 1, 3, 3)))
    with pytest.raises(Diverged, match="training diverged"):
        train(problem, optimizer="sgd", lr=100.0, steps=50)


def test_gray_inputs_cannot_teach_colour_weights(tmp_path, capsys):
    gray = tmp_path / "gray.png"
    Image.open(PHOTO).convert("L").convert("RGB").save(gray)
    code, _, err = run(capsys, "learn", "grayscale", gray, "-q")
    assert code == 3
    assert "do not determine the 3 weights and the bias (rank 2 of 4)" in err
    assert "gray inputs (R = G = B) cannot tell the colour weights apart" in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["pair", PHOTO], 2, "learn pair takes two inputs, BEFORE and AFTER; got 1"),
        (["pair", PHOTO, SAMPLES / "chart.png"], 3, "the pair must match"),
        (["pair", PHOTO, PHOTO, "-k", "4"], 2, "a pair's kernel side must be odd"),
        (["gradient", PHOTO, "-k", "3"], 2, "-k is for avgpool and pair"),
        (["avgpool", PHOTO, "-k", "16"], 2, "-k must be an int from 1 to 15, got 16"),
        (["gradient", PHOTO, "--lr", "fast"], 2, "--lr must be a number or auto, got 'fast'"),
        (["gradient", PHOTO, "--lr", "-1"], 2, "--lr must be a positive number or auto"),
        (["gradient", "missing.png"], 3, "missing.png: no such file"),
    ],
)
def test_wrong_learn_requests_are_one_clear_line(args, code, message, tmp_path, capsys):
    got, _, err = run(capsys, "learn", *args, "--out-dir", tmp_path, "-q")
    assert got == code
    assert message in err
    assert err.count("\n") == len(err.splitlines()) and "Traceback" not in err


def test_an_unreadable_input_is_reported_and_the_others_still_teach(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    code, out, err = run(
        capsys, "learn", "grayscale", broken, PHOTO, "--out-dir", tmp_path, "--json"
    )
    assert code == 3
    assert err.startswith(f"cnnfilters: error: {broken}: ")
    report = json.loads(out)
    assert [bool(item["error"]) for item in report["inputs"]] == [True, False]
    assert all(check["passed"] for check in report["inputs"][1]["checks"])


def test_outputs_are_never_clobbered_without_force(tmp_path, capsys):
    args = ["learn", "avgpool", PHOTO, "--out-dir", tmp_path, "-q"]
    assert run(capsys, *args)[0] == 0
    before = (tmp_path / "ihc.learn-avgpool.npz").read_bytes()
    code, _, err = run(capsys, *args, "--seed", "4")
    assert code == 3 and "exists (use --force to overwrite)" in err
    assert (tmp_path / "ihc.learn-avgpool.npz").read_bytes() == before
    assert run(capsys, *args, "--seed", "4", "--force")[0] == 0


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_every_optimizer_lowers_the_loss_and_reports_honestly(optimizer):
    options = LearnOptions(what="avgpool", k=2, optimizer=optimizer, steps=300, seed=1)
    learned = options.fit([load_image(PHOTO)])
    losses = learned.training.losses
    assert losses[-1] < 1e-2 * losses[0]
    assert learned.info["optimizer"] == optimizer and len(losses) == learned.info["steps"]
    verdict = np.abs(learned.weight - 0.25).max() <= 1e-3
    assert learned.checks[0].passed == verdict  # the check says what the weights are


def test_the_layer_is_folded_back_to_pixel_units():
    # Targets from a known layer with a bias, on inputs far from zero mean and unit scale.
    rng = np.random.default_rng(2)
    x = rng.uniform(100, 4000, (6, 2, 12, 12))
    weight = rng.standard_normal((3, 2, 3, 3))
    bias = np.array([7.0, -2.0, 1000.0])
    windows = sliding_window_view(x, (3, 3), axis=(2, 3))
    y = np.einsum("ncijuv,ocuv->noij", windows, weight) + bias[:, None, None]
    training = train(Problem(x, y, Layer(weight.shape)), seed=3)
    np.testing.assert_allclose(training.weight, weight, atol=1e-4)
    np.testing.assert_allclose(training.bias, bias, atol=1e-4 * 4000)
    lstsq_w, lstsq_b, rank, unknowns = least_squares_conv(x, y, (3, 3))
    assert rank == unknowns == 19
    np.testing.assert_allclose(lstsq_w, weight, atol=1e-9)
    np.testing.assert_allclose(lstsq_b, bias, atol=1e-7)


def test_learn_options_check_their_values():
    with pytest.raises(CnnFiltersError, match="what to learn must be one of"):
        LearnOptions(what="sobel")
    with pytest.raises(CnnFiltersError, match="--patches must be an int from 1 to 100000"):
        LearnOptions(patches=0)
    with pytest.raises(CnnFiltersError, match="--tol must be a number >= 0"):
        LearnOptions(tol=float("nan"))


def test_the_visual_report_shows_learned_kernels_beside_the_true_ones(tmp_path, capsys):
    page = tmp_path / "learn.html"
    code, _, err = run(
        capsys,
        "learn",
        "gradient",
        PHOTO,
        "--out-dir",
        tmp_path,
        "--html",
        page,
        "-q",
        "--steps",
        "2000",
    )
    assert code == 0, err
    text = page.read_text()
    assert "learned w[0, 0]" in text and "construction w[0, 0]" in text
    assert "learned weights" in text


def test_the_table_prints_the_learned_layer(capsys):
    learned = LearnOptions(what="avgpool", k=2).fit([load_image(PHOTO)])
    from cnnfilters import render

    render.render_learned(learned, "avgpool -k 2")
    out = capsys.readouterr().out
    assert "learned w[0, 0]" in out and "construction w[0, 0]" in out and "0.250000" in out


def test_loss_curve_png_is_deterministic():
    from cnnfilters.learning import loss_curve_png

    losses = list(np.geomspace(1, 1e-10, 200))
    first = loss_curve_png(losses, title="t", tol=1e-10)
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(first)) as image:
        assert image.size == (640, 360)


def test_a_colour_pair_learns_one_kernel_from_every_channel(tmp_path, capsys):
    rng = np.random.default_rng(8)
    kernel = rng.uniform(0, 0.05, (3, 3))
    kernel[1, 1] += 0.5
    rgb = np.asarray(Image.open(PHOTO).convert("RGB"), dtype=np.float64)
    after = np.stack([_correlate(rgb[..., c], kernel, 2.0) for c in range(3)], axis=-1)
    Image.fromarray(np.floor(after + 0.5).astype(np.uint8)).save(tmp_path / "after.png")
    code, out, err = run(
        capsys,
        "learn",
        "pair",
        PHOTO,
        tmp_path / "after.png",
        "--on",
        "rgb",
        "--out-dir",
        tmp_path,
        "--json",
    )
    assert code == 0, err
    item = json.loads(out)["inputs"][0]
    assert item["info"]["examples"] == 3
    assert np.abs(np.array(item["info"]["learned"]["weight"])[0, 0] - kernel).max() <= 1e-2
    assert "--on rgb" in item["notices"][-1]


def test_a_pair_with_a_missing_input_is_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "learn", "pair", PHOTO, tmp_path / "gone.png", "-q")
    assert code == 3
    assert err == f"cnnfilters: error: {tmp_path / 'gone.png'}: no such file\n"


def test_inputs_are_taken_one_at_a_time_and_a_too_small_one_is_said(tmp_path):
    small = tmp_path / "small.png"
    Image.new("RGB", (10, 10), (40, 80, 120)).save(small)
    seen = []

    def images():  # a generator: fit never holds more than the image it cuts
        for path in (small, PHOTO):
            seen.append(path)
            yield load_image(path)

    learned = LearnOptions(what="avgpool", k=2).fit(images())
    assert seen == [small, PHOTO]
    assert "1 image plane(s) smaller than a training window (32 x 32 pixels): not used" in (
        learned.notices
    )
    assert all(check.passed for check in learned.checks)


def test_a_pair_made_by_pillow_recovers_its_kernel_and_reports_the_border_apart(tmp_path, capsys):
    """Pillow's ImageFilter.Kernel leaves the 1-pixel border unfiltered: the refit is
    checked inside it, and the border is a notice with its count."""
    import shlex

    from PIL import ImageFilter

    before = tmp_path / "before.png"
    after = tmp_path / "after.png"
    gray = Image.open(PHOTO).convert("L").crop((0, 0, 160, 120))
    gray.save(before)
    gray.filter(ImageFilter.Kernel((3, 3), [1, 2, 1, 2, 4, 2, 1, 2, 1], scale=16)).save(after)
    code, out, err = run(
        capsys, "learn", "pair", before, after, "--out-dir", tmp_path / "o", "--json"
    )
    assert code == 0, err
    entry = json.loads(out)["inputs"][-1]
    refit = next(c for c in entry["checks"] if c["name"] == "refit 8-bit levels")
    assert refit["reference"] == "AFTER, inside its 1-pixel border" and refit["passed"]
    assert refit["total"] == 158 * 118
    (border,) = [n for n in entry["notices"] if n.startswith("the 1-pixel border")]
    assert f" of {160 * 120 - 158 * 118} values differ from AFTER by more than 1 level" in border
    learned = np.loadtxt(tmp_path / "o" / "before.learn-pair.txt")
    np.testing.assert_allclose(learned, np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16, atol=2e-3)
    # The command it gives reproduces AFTER inside the border, within a level.
    (again,) = [n for n in entry["notices"] if n.startswith("reproduce AFTER with: ")]
    words = shlex.split(again.removeprefix("reproduce AFTER with: "))
    assert words[:2] == ["cnnfilters", "convolve"] and words[-4:] == [
        "--on",
        "gray",
        "--map",
        "clip",
    ]
    made = tmp_path / "made.png"
    code, _, err = run(capsys, *words[1:], "-o", made, "-q")
    assert code == 0, err
    ours = np.asarray(Image.open(made), dtype=np.int64)[1:-1, 1:-1]
    theirs = np.asarray(Image.open(after), dtype=np.int64)[1:-1, 1:-1]
    assert np.abs(ours - theirs).max() <= 1
