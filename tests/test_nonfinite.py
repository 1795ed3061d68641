"""NaN, infinities and float overflow: named, never mistaken for commutation, never exit 70."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from cnnfilters import commute
from cnnfilters.activations import ACTIVATIONS, get_activation
from cnnfilters.cli import main
from cnnfilters.report import to_json

NONDECREASING = [name for name, a in ACTIVATIONS.items() if a.monotonicity == "nondecreasing"]


@pytest.mark.parametrize("name", NONDECREASING)
def test_a_nan_window_is_nan_on_both_sides_and_equal(name):
    result = commute(np.array([[[np.nan, 1], [2, 3]]], dtype=np.float32), name)
    assert np.isnan(result.act_of_pool).all() and np.isnan(result.pool_of_act).all()
    assert result.differing == 0 and result.counterexample is None and result.commutes


@pytest.mark.parametrize(("name", "at_minus", "at_plus"), [
    ("gelu", 0.0, np.inf), ("silu", 0.0, np.inf), ("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0),
    ("elu", -1.0, np.inf), ("softplus", 0.0, np.inf), ("relu", 0.0, np.inf),
])  # fmt: skip
def test_activations_take_their_limits_at_infinity(name, at_minus, at_plus):
    act = get_activation(name)
    with np.errstate(all="raise"):
        values = act(np.array([-np.inf, np.inf], dtype=np.float32))
    assert values.tolist() == [at_minus, at_plus]


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_derivatives_take_their_limits_at_infinity(name):
    assert get_activation(name).grad(np.array([-np.inf, np.inf])).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_a_window_with_minus_infinity_commutes_for_gelu_and_silu(name):
    # gelu(-inf) is 0, not NaN: the window [-inf, 1] has max 1 on both sides.
    result = commute(np.array([[[-np.inf, 1.0]]], dtype=np.float32), name, kernel_size=(1, 2))
    assert result.differing == 0 and result.commutes


def test_float32_overflow_is_flagged_not_called_commutation():
    # (-1.9e19)^2 and (1.85e19)^2 both overflow float32: inf on both sides.
    result = commute(np.array([[[-1.9e19, 1.85e19]]], dtype=np.float32), "square",
                     kernel_size=(1, 2))  # fmt: skip
    assert result.overflowed == 1 and result.differing == 0
    assert not result.commutes and result.counterexample is None


def test_overflow_on_one_side_only_is_not_a_counterexample():
    # max = 1e10 squares to 1e20 (finite); -1e20 squares to inf: no evidence either way.
    result = commute(np.array([[[-1e20, 1e10]]], dtype=np.float32), "square", kernel_size=(1, 2))
    assert result.overflowed == 1 and result.differing == 0 and result.counterexample is None


def test_the_report_writes_non_finite_values_as_strings():
    text = to_json({"values": [np.float32(np.inf), -np.inf, np.nan, 1.5], "n": np.int64(3)})
    assert json.loads(text) == {"values": ["inf", "-inf", "nan", 1.5], "n": 3}


def test_commute_on_a_float_image_that_overflows_float32(tmp_path, capsys):
    values = np.zeros((8, 8), dtype=np.float32)
    values[::2], values[1::2] = 3e38, -3e38  # differences of 6e38 overflow float32
    path = tmp_path / "huge.tif"
    Image.fromarray(values).save(path)
    code = main(["commute", os.fsdecode(path), "-a", "relu", "-a", "square", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    item = json.loads(out)["inputs"][0]
    assert any("computed in float64" in notice for notice in item["notices"])
    checks = {check["name"]: check for check in item["checks"]}
    assert checks["relu"]["passed"] and checks["relu"]["commutes"]
    # In float64 the squares are finite and the non-monotone square really differs.
    assert checks["square"]["windows_differing"] > 0
    assert checks["square"]["windows_overflowed"] == 0
    for line in out.splitlines():
        assert "Infinity" not in line and "NaN" not in line


def test_jsonl_lines_are_strict_json(tmp_path, capsys):
    values = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    path = tmp_path / "small.tif"
    Image.fromarray(values).save(path)
    code = main(["commute", os.fsdecode(path), "-a", "gelu", "--jsonl", "--out-dir",
                 os.fsdecode(tmp_path / "out")])  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    for line in out.splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"non-strict JSON: {name}"))
