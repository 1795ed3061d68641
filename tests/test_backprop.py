"""The backpropagation formulas of an MLP against two independent checks (docs/MATHS.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnfilters import ACTIVATIONS, CnnFiltersError
from cnnfilters.backprop import (
    MLP,
    check_backprop,
    finite_difference_gradients,
    formula_gradients,
    kink_distance,
    reverse_mode_gradients,
)
from cnnfilters.cli import app


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_formula_agrees_with_finite_differences_and_reverse_mode(activation):
    result = check_backprop((4, 6, 5, 1), activation, seed=3, points=4)
    assert all(check.passed for check in result.checks), [c.summary() for c in result.checks]
    finite = [c for c in result.checks if c.reference == "central differences"]
    reverse = [c for c in result.checks if c.reference == "reverse-mode autodiff"]
    assert len(finite) == 3 * 3 and len(reverse) == 2 * 3
    assert max(c.max_abs for c in finite) < 1e-6
    assert max(c.max_abs for c in reverse) < 1e-12


def test_the_output_layer_formulas_are_the_plain_ones():
    mlp = MLP.random((3, 4, 1), "tanh", seed=1)
    x = np.array([0.3, -1.2, 0.8])
    ys, _ = mlp.forward(x)
    grads = formula_gradients(mlp, x)
    np.testing.assert_array_equal(grads["db"][2], [[1.0]])  # dy_L/db_L = 1
    np.testing.assert_array_equal(grads["dA"][2], ys[1][np.newaxis])  # dy_L/dA_L = y_{L-1}^T
    np.testing.assert_array_equal(grads["dy_dy"][2], mlp.A[2])  # dy_L/dy_{L-1} = A_L


def test_dA_is_the_outer_product_of_db_and_the_layer_input():
    mlp = MLP.random((5, 3, 3, 1), "sigmoid", seed=2)
    x = np.linspace(-1, 1, 5)
    ys, _ = mlp.forward(x)
    grads = formula_gradients(mlp, x)
    for layer in (1, 2):
        np.testing.assert_allclose(grads["dA"][layer], grads["db"][layer].T @ ys[layer - 1][None])


def test_reverse_mode_and_finite_differences_see_the_same_network():
    mlp = MLP.random((2, 3, 1), "softplus", seed=4)
    x = np.array([0.5, -0.25])
    numeric, backward = finite_difference_gradients(mlp, x), reverse_mode_gradients(mlp, x)
    np.testing.assert_allclose(numeric["dA"][1], backward["dA"][1], rtol=1e-6, atol=1e-9)


def test_points_near_a_relu_kink_are_resampled():
    mlp = MLP.random((2, 2, 1), "relu", seed=0)
    mlp.b[1][:] = 0.0
    assert kink_distance(mlp, np.zeros(2)) == 0.0
    assert kink_distance(MLP.random((2, 2, 1), "tanh"), np.zeros(2)) == float("inf")


def test_inputs_from_image_patches(tmp_path):
    gray = (np.arange(30 * 40) % 256).reshape(30, 40).astype(np.uint8)
    result = check_backprop((9, 4, 1), "tanh", points=3, image=gray)
    assert result.info["input"] == "image patches" and all(c.passed for c in result.checks)
    with pytest.raises(CnnFiltersError, match="must be a square"):
        check_backprop((8, 4, 1), "tanh", points=1, image=gray)


@pytest.mark.parametrize(
    ("widths", "message"),
    [((4,), "an input and an output width"), ((4, 3), "output width must be 1"),
     ((4, 0, 1), "an input and an output width")],
)  # fmt: skip
def test_bad_widths(widths, message):
    with pytest.raises(CnnFiltersError, match=message):
        check_backprop(widths, "tanh", points=1)


def test_backprop_command(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["backprop", "--widths", "3,5,1", "-a", "tanh", "--points", "2",
                                 "--json", "--report", str(tmp_path / "r.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["command"] == "backprop" and data["passed"]
    assert data["inputs"][0]["info"]["activation"] == "tanh"
    path = tmp_path / "g.png"
    Image.fromarray((np.arange(400) % 256).reshape(20, 20).astype(np.uint8)).save(path)
    result = runner.invoke(app, ["backprop", "--widths", "4,3,1", "--from-image", str(path), "-q"])
    assert result.exit_code == 0 and result.stdout == ""
    assert runner.invoke(app, ["backprop", "--widths", "4,x,1"]).exit_code == 2
    assert runner.invoke(app, ["backprop", "-a", "mish"]).exit_code == 2
