"""The one comparison helper and the JSON report."""

from __future__ import annotations

import json
import math

import numpy as np

from cnnfilters import compare
from cnnfilters.report import InputReport, RunReport


def test_identical_arrays_have_no_psnr_and_pass():
    check = compare(np.ones((2, 3)), np.ones((2, 3)), name="a", reference="b", peak=255)
    assert check.passed and check.identical
    assert (check.max_abs, check.mean_abs, check.rmse, check.psnr_db) == (0, 0, 0, None)
    assert (check.differing, check.total) == (0, 6)


def test_figures_of_a_known_difference():
    actual = np.array([0.0, 1.0, 2.0, 3.0])
    expected = np.array([0.0, 1.0, 2.0, 5.0])
    check = compare(actual, expected, name="a", reference="b", tolerance=1, peak=255)
    assert not check.passed
    assert check.max_abs == 2 and check.mean_abs == 0.5 and check.rmse == 1.0
    assert math.isclose(check.psnr_db, 20 * math.log10(255))
    assert (check.differing, check.exceeding) == (1, 1)
    assert "max abs diff 2 > tolerance 1, 1/4 values differ (FAILED)" in check.summary()


def test_shape_mismatch_fails_before_values():
    check = compare(np.zeros((2, 3)), np.zeros((3, 2)), name="a", reference="b")
    assert not check.passed
    assert check.detail == "shape (2, 3) differs from the reference's (3, 2)"
    assert json.loads(json.dumps(check.to_dict()))["max_abs"] is None


def test_nan_on_one_side_fails_and_on_both_sides_agrees():
    assert compare(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), name="a", reference="b").passed
    check = compare(np.array([np.nan, 1.0]), np.array([0.0, 1.0]), name="a", reference="b")
    assert not check.passed and "NaN on one side only" in check.detail


def test_report_json_has_the_documented_shape():
    run = RunReport("grayscale")
    item = InputReport("in.png", outputs=["in.grayscale.png"])
    item.checks.append(compare(np.zeros(4), np.zeros(4), name="n", reference="r", extra={"k": 2}))
    run.inputs.append(item)
    run.inputs.append(InputReport("bad.png", error="cannot read", exit_code=3))
    data = json.loads(run.to_json())
    assert data["schema"] == 1 and data["command"] == "grayscale" and data["passed"] is False
    first = data["inputs"][0]
    assert first["outputs"] == ["in.grayscale.png"] and first["error"] is None
    check = first["checks"][0]
    for key in ("name", "reference", "max_abs", "mean_abs", "rmse", "psnr_db", "differing",
                "total", "tolerance", "passed"):  # fmt: skip
        assert key in check
    assert check["k"] == 2
    assert data["inputs"][1]["error"] == "cannot read"
