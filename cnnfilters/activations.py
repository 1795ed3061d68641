"""Named activations, each labelled by its monotonicity (see docs/MATHS.md).

Every activation is evaluated in float64 and rounded to the input's dtype.
Rounding to nearest is nondecreasing, so a function that is nondecreasing in
float64 stays nondecreasing in float32. This matters: numpy's float32
``expm1`` is not monotone near x = -12.7, and a float32 ELU computed with it
would break the exact commutation with max pooling by one ulp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import CnnFiltersError

__all__ = ["ACTIVATIONS", "Activation", "Monotonicity", "get_activation"]

Monotonicity = Literal["nondecreasing", "nonincreasing", "neither"]

# Values an activation computes at a time (512 KB of float64): see Activation.__call__.
_BLOCK = 1 << 16
_SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)
_GELU_CUBIC = 0.044715
LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class Activation:
    """An elementwise function, its derivative and its monotonicity."""

    name: str
    formula: str
    monotonicity: Monotonicity
    function: Callable[[np.ndarray], np.ndarray]
    derivative: Callable[[np.ndarray], np.ndarray]
    smooth: bool = True

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``sigma(x)`` in ``x``'s float dtype (float32 for others), computed in float64
        a block of :data:`_BLOCK` values at a time: every function is elementwise,
        so the values are those of one call on the whole array, while the float64
        temporaries stay in cache instead of faulting in a whole image's worth."""
        x = np.asarray(x)
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
        out = np.empty(x.shape, dtype=dtype)
        flat, into = x.reshape(-1), out.reshape(-1)  # a copy of x only if it is strided
        # NaN in, NaN out, quietly; overflow to inf is the caller's to judge.
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            for first in range(0, flat.size, _BLOCK):
                block = flat[first : first + _BLOCK].astype(np.float64)
                into[first : first + _BLOCK] = self.function(block)
        return out

    def grad(self, x: np.ndarray) -> np.ndarray:
        """``sigma'(x)`` in float64; at a kink, the value torch's autograd uses.

        That is a convention, not a one-sided derivative: relu'(0) = 0 (its
        right-hand derivative is 1), hardtanh'(-1) = hardtanh'(1) = 0 (the
        right-hand ones are 1 and 0), leaky_relu'(0) = 0.01, elu'(0) = 1 and
        abs'(0) = 0 (``sign``).
        """
        with np.errstate(over="ignore", under="ignore"):
            return self.derivative(np.asarray(x, dtype=np.float64))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1 / (1 + e^-x) is a chain of monotone, correctly rounded steps; e^-x may
    # overflow to inf for very negative x, which gives the right limit 0.
    return 1.0 / (1.0 + np.exp(-x))


def _with_limits(
    function: Callable[[np.ndarray], np.ndarray], at_minus_inf: float, at_plus_inf: float
) -> Callable[[np.ndarray], np.ndarray]:
    """``function`` with its limits at -inf and +inf, where its formula gives inf * 0 = NaN."""

    def limited(x: np.ndarray) -> np.ndarray:
        infinite = np.isinf(x)
        if not infinite.any():
            return function(x)
        with np.errstate(invalid="ignore"):
            out = np.asarray(function(x), dtype=np.float64)
        out[infinite] = np.where(x[infinite] > 0, at_plus_inf, at_minus_inf)
        return out

    return limited


def _gelu(x: np.ndarray) -> np.ndarray:
    # x * x * x, as PyTorch's tanh GELU: numpy's x**3 calls pow() for each value.
    return 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * (x * x * x))))


def _gelu_grad(x: np.ndarray) -> np.ndarray:
    inner = _SQRT_2_OVER_PI * (x + _GELU_CUBIC * (x * x * x))
    t = np.tanh(inner)
    d_inner = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * x**2)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * d_inner


def _silu(x: np.ndarray) -> np.ndarray:
    return x * _sigmoid(x)


def _silu_grad(x: np.ndarray) -> np.ndarray:
    s = _sigmoid(x)
    return s + x * s * (1.0 - s)


_LIST = [
    Activation(
        "relu",
        "max(0, x)",
        "nondecreasing",
        lambda x: np.maximum(x, 0.0),
        lambda x: (x > 0).astype(np.float64),
        smooth=False,
    ),
    Activation(
        "leaky_relu",
        f"x if x > 0 else {LEAKY_SLOPE} x",
        "nondecreasing",
        lambda x: np.where(x > 0, x, LEAKY_SLOPE * x),
        lambda x: np.where(x > 0, 1.0, LEAKY_SLOPE),
        smooth=False,
    ),
    Activation(
        "elu",
        "x if x > 0 else exp(x) - 1",
        "nondecreasing",
        lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
        lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0))),
        smooth=False,
    ),
    Activation(
        "sigmoid",
        "1 / (1 + exp(-x))",
        "nondecreasing",
        _sigmoid,
        lambda x: _sigmoid(x) * (1.0 - _sigmoid(x)),
    ),
    Activation("tanh", "tanh(x)", "nondecreasing", np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    Activation(
        "softplus", "log(1 + exp(x))", "nondecreasing", lambda x: np.logaddexp(0.0, x), _sigmoid
    ),
    Activation(
        "hardtanh",
        "clip(x, -1, 1)",
        "nondecreasing",
        lambda x: np.clip(x, -1.0, 1.0),
        lambda x: ((x > -1) & (x < 1)).astype(np.float64),
        smooth=False,
    ),
    Activation("identity", "x", "nondecreasing", lambda x: x.copy(), np.ones_like),
    Activation("neg", "-x", "nonincreasing", np.negative, lambda x: -np.ones_like(x)),
    Activation(
        "gelu",
        "x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))",
        "neither",
        _with_limits(_gelu, 0.0, np.inf),
        _with_limits(_gelu_grad, 0.0, 1.0),
    ),
    Activation(
        "silu",
        "x * sigmoid(x)",
        "neither",
        _with_limits(_silu, 0.0, np.inf),
        _with_limits(_silu_grad, 0.0, 1.0),
    ),
    Activation("abs", "|x|", "neither", np.abs, np.sign, smooth=False),
    Activation("square", "x^2", "neither", np.square, lambda x: 2.0 * x),
]

ACTIVATIONS: dict[str, Activation] = {a.name: a for a in _LIST}


def get_activation(name: str) -> Activation:
    """The activation called ``name`` (case-insensitive; ``-`` and ``_`` alike)."""
    key = name.strip().lower().replace("-", "_")
    aliases = {"swish": "silu", "linear": "identity", "leakyrelu": "leaky_relu"}
    key = aliases.get(key, key)
    if key not in ACTIVATIONS:
        raise CnnFiltersError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]
