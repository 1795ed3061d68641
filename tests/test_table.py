"""The results table reads at a glance: it fits the width it is given, never splits
a word or a number across lines, and says a shared note once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PHOTO = SAMPLES / "ihc.png"
CHART = SAMPLES / "chart.png"

COMPACT = ["input", "check", "reference", "max", "diff", "differing", "/", "total", "result"]
RUNS = {
    "grayscale": ["grayscale", PHOTO],
    "gradient": ["gradient", CHART, "--on", "rgb"],
    "avgpool": ["avgpool", PHOTO, "-k", "3", "--edge", "partial"],
    "commute": ["commute", CHART],
    "convolve": ["convolve", PHOTO, "--kernel", "gaussian5", "--on", "rgb"],
    "backprop": ["backprop"],
    "learn": ["learn", "avgpool", PHOTO, "--steps", "50"],
}


def _cells(report: dict) -> list[str]:
    """Every word the compact table shows of a JSON report's checks."""
    words = []
    for item in report["inputs"]:
        for check in item.get("checks", []):
            words += [*check["name"].split(), *check["reference"].split()]
    return words


@pytest.mark.parametrize("command", sorted(RUNS))
@pytest.mark.parametrize("columns", [80, 100])
def test_the_table_fits_its_width_and_splits_no_word(
    command, columns, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", str(columns))
    args = [*RUNS[command], "--report", tmp_path / "run.json"]
    if command != "backprop":
        args += ["--out-dir", tmp_path / "out"]
    code, out, _ = run_cli(capsys, *args)
    assert code in (0, 1), out  # learn's 50 steps may not converge: the table still shows it
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= columns
    report = json.loads((tmp_path / "run.json").read_text())
    table_words = set(" ".join(lines).split())
    for word in _cells(report):
        assert word in table_words, f"{word!r} is split or missing"
    for item in report["inputs"]:
        for check in item.get("checks", []):
            counts = f"{check['differing']} / {check['total']}"
            assert counts in out  # the samples are under a million values a check


def test_wide_adds_every_figure(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = run_cli(capsys, "grayscale", PHOTO, "--out-dir", tmp_path, "--wide")
    assert code == 0
    header = next(line.split() for line in out.splitlines() if line.startswith(" input "))
    assert header == [
        "input",
        "check",
        "reference",
        "max",
        "abs",
        "mean",
        "abs",
        "RMSE",
        "PSNR",
        "dB",
        "differing",
        "/",
        "total",
        "tol",
        "result",
    ]
    code, out, _ = run_cli(capsys, "grayscale", PHOTO, "--out-dir", tmp_path, "--force")
    header = next(line.split() for line in out.splitlines() if line.startswith(" input "))
    assert header == COMPACT


def test_piped_output_honours_columns_and_defaults_to_100(tmp_path, capsys, monkeypatch):
    lines = {}
    for columns in ("40", "80", "", "100", "200"):
        monkeypatch.setenv("COLUMNS", columns)
        folder = tmp_path / (columns or "unset")
        run_cli(capsys, "convolve", PHOTO, "--kernel", "gaussian5", "--out-dir", folder)
        _, out, _ = run_cli(
            capsys, "convolve", PHOTO, "--kernel", "gaussian5", "--out-dir", folder, "--force"
        )
        header = next(line.split() for line in out.splitlines() if line.startswith(" input "))
        assert header == COMPACT
        lines[columns] = out.splitlines()
    # Narrower than its words, the table keeps every column and takes the width it
    # needs; otherwise it fits, and unset is 100 columns.
    assert all(len(line) <= int(c or 100) for c in ("80", "", "100", "200") for line in lines[c])
    assert len(lines["40"]) > len(lines["80"]) > len(lines["100"]) == len(lines[""])


def test_a_long_name_is_shortened_in_its_middle_and_whole_in_wide(tmp_path, capsys):
    long = tmp_path / "a_very_long_name_of_a_scanned_page.png"
    Image.open(PHOTO).save(long)
    code, out, _ = run_cli(capsys, "grayscale", long, "--out-dir", tmp_path / "o")
    assert code == 0
    assert re.search(r"^ a_very_l\u2026_page\.png ", out, flags=re.M)
    code, out, _ = run_cli(
        capsys, "grayscale", long, "--out-dir", tmp_path / "o", "--force", "--wide"
    )
    assert long.name in out


def test_a_note_every_input_shares_is_said_once_with_the_count(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for index in range(5):
        Image.fromarray(rgb).save(folder / f"p{index}.png")
    code, out, _ = run_cli(capsys, "gradient", folder, "--out-dir", tmp_path / "o", "-j", "1")
    assert code == 0
    notes = [line for line in out.splitlines() if "grayscale image" in line]
    assert len(notes) == 1 and notes[0].endswith("(5 inputs)")


def test_an_input_that_only_errored_has_no_table_only_its_line(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    code, out, err = run_cli(capsys, "grayscale", broken, "--out-dir", tmp_path / "o")
    assert code == 3
    assert out == "1 input(s), 0 passed, 1 failed or errored; 0 file(s) written\n"
    assert err.count("\n") == 1 and "broken.png" in err


def test_commute_says_commutes_or_differs_and_why_a_difference_is_allowed(tmp_path, capsys):
    code, out, _ = run_cli(
        capsys, "commute", CHART, "-a", "relu", "-a", "neg", "-a", "gelu", "--out-dir", tmp_path
    )
    assert code == 0
    rows = {
        line.split()[-7]: line.split()[-1]
        for line in out.splitlines()
        if line.strip().endswith(("commutes", "differs"))
    }
    assert rows == {"relu": "commutes", "neg": "differs", "gelu": "differs"}
    said = " ".join(out.split())
    assert (
        "neg is nonincreasing: it need not commute with max pooling, and sigma(max) = "
        "min(sigma) on every window instead: holds"
    ) in said
    assert "gelu is neither nondecreasing nor nonincreasing: it need not commute" in said
    assert "pass differs" not in said
