"""The backpropagation formulas of an MLP, checked numerically (docs/MATHS.md).

The network: ``y_0 = x``; ``y_l = sigma(A_l y_{l-1} + b_l)`` for
``l = 1 .. L-1``; a scalar output ``y_L = A_L y_{L-1} + b_L``. With
``D_l = diag(sigma'(A_l y_{l-1} + b_l))`` the chain rule gives

- ``dy_L/db_L = 1``, ``dy_L/dy_{L-1} = A_L``, ``dy_L/dA_L = y_{L-1}^T``;
- ``dy_l/db_l = D_l``, ``dy_l/dy_{l-1} = D_l A_l``;
- ``dy_L/dy_l = dy_L/dy_{L-1} dy_{L-1}/dy_{L-2} ... dy_{l+1}/dy_l`` (a row);
- ``dy_L/db_l = (dy_L/dy_l) D_l`` and ``dy_L/dA_l = D_l (dy_L/dy_l)^T y_{l-1}^T``.

:func:`formula_gradients` evaluates exactly these products.
:func:`finite_difference_gradients` perturbs every entry (central
differences in float64); :func:`reverse_mode_gradients` runs a scalar
reverse-mode autodiff written separately (micrograd style). Everything is
float64.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from .activations import Activation, get_activation
from .errors import CnnFiltersError

__all__ = [
    "MLP",
    "finite_difference_gradients",
    "formula_gradients",
    "kink_distance",
    "reverse_mode_gradients",
]

# Where each non-smooth activation has a kink (its derivative jumps).
KINKS: dict[str, tuple[float, ...]] = {
    "relu": (0.0,),
    "leaky_relu": (0.0,),
    "elu": (0.0,),
    "hardtanh": (-1.0, 1.0),
    "abs": (0.0,),
}

# Bounds of a check that finishes in seconds: central differences evaluate the
# network twice per parameter (widths^2 of them) at every point.
MAX_WIDTH = 512
MAX_LAYERS = 16
MAX_POINTS = 1000


@dataclass
class MLP:
    """Weights ``A[l]`` (``n_l x n_(l-1)``), biases ``b[l]``, ``l = 1..L`` (index 0 unused)."""

    widths: tuple[int, ...]
    activation: Activation
    A: list[np.ndarray] = field(default_factory=list)
    b: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def random(cls, widths: tuple[int, ...], activation: str, seed: int = 0) -> MLP:
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise CnnFiltersError(f"widths need an input and an output width >= 1, got {widths}")
        if widths[-1] != 1:
            raise CnnFiltersError(f"the output width must be 1 (a scalar y_L), got {widths[-1]}")
        if max(widths) > MAX_WIDTH or len(widths) > MAX_LAYERS + 1:
            raise CnnFiltersError(
                f"widths up to {MAX_WIDTH} and at most {MAX_LAYERS} layers (the finite "
                f"differences cost grows with the square of a width), got {widths}"
            )
        if seed < 0:
            raise CnnFiltersError(f"the seed must be a non-negative integer, got {seed}")
        rng = np.random.default_rng(seed)
        A = [np.zeros((0, 0))]
        b = [np.zeros(0)]
        for fan_in, fan_out in itertools.pairwise(widths):
            A.append(rng.normal(0.0, 1.0 / math.sqrt(fan_in), size=(fan_out, fan_in)))
            b.append(rng.normal(0.0, 0.5, size=fan_out))
        return cls(widths, get_activation(activation), A, b)

    @property
    def depth(self) -> int:
        """``L``, the number of layers with weights."""
        return len(self.widths) - 1

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(y, z)``: ``y[l]`` the outputs (``y[0] = x``), ``z[l]`` the pre-activations."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.widths[0],):
            raise CnnFiltersError(f"x must have {self.widths[0]} entries, got shape {x.shape}")
        ys, zs = [x], [np.zeros(0)]
        for layer in range(1, self.depth + 1):
            z = self.A[layer] @ ys[-1] + self.b[layer]
            zs.append(z)
            ys.append(z if layer == self.depth else self.activation.function(z))
        return ys, zs

    def output(self, x: np.ndarray) -> float:
        return float(self.forward(x)[0][-1][0])


def kink_distance(mlp: MLP, x: np.ndarray) -> float:
    """How close any hidden pre-activation is to a kink of the activation (inf if smooth)."""
    kinks = KINKS.get(mlp.activation.name)
    if not kinks:
        return math.inf
    _, zs = mlp.forward(x)
    hidden = np.concatenate(zs[1 : mlp.depth]) if mlp.depth > 1 else np.zeros(0)
    if hidden.size == 0:
        return math.inf
    return float(min(np.min(np.abs(hidden - k)) for k in kinks))


def formula_gradients(mlp: MLP, x: np.ndarray) -> dict[str, list[np.ndarray]]:
    """The course's formulas: products of ``D_l`` and ``A_l``, layer by layer.

    Returns ``{"db": [...], "dA": [...], "dy_dy": [...]}`` indexed by layer
    ``l = 1..L`` (index 0 unused): ``dy_L/db_l`` (a row), ``dy_L/dA_l``
    (``n_l x n_{l-1}``) and ``dy_l/dy_{l-1}`` (a matrix).
    """
    ys, zs = mlp.forward(x)
    L = mlp.depth
    D = [np.zeros((0, 0))] + [np.diag(mlp.activation.grad(zs[l])) for l in range(1, L)]
    step = [np.zeros((0, 0))] * (L + 1)  # dy_l/dy_{l-1}
    step[L] = mlp.A[L]  # the output layer has no activation
    for l in range(1, L):
        step[l] = D[l] @ mlp.A[l]
    to_output = [np.zeros(0)] * (L + 1)  # dy_L/dy_l, a row vector
    to_output[L] = np.ones((1, 1))
    to_output[L - 1] = mlp.A[L]
    for l in range(L - 2, -1, -1):
        to_output[l] = to_output[l + 1] @ step[l + 1]
    db = [np.zeros(0)] * (L + 1)
    dA = [np.zeros((0, 0))] * (L + 1)
    db[L] = np.ones((1, 1))
    dA[L] = ys[L - 1][np.newaxis, :]
    for l in range(1, L):
        db[l] = to_output[l] @ D[l]
        dA[l] = D[l] @ to_output[l].T @ ys[l - 1][np.newaxis, :]
    return {"db": db, "dA": dA, "dy_dy": step}


def finite_difference_gradients(mlp: MLP, x: np.ndarray) -> dict[str, list[np.ndarray]]:
    """The same quantities by central differences, one entry at a time (float64).

    The step for an entry of value ``t`` is ``eps^(1/3) * max(1, |t|)``, which
    balances truncation and rounding errors of a central difference.
    """
    base_step = np.finfo(np.float64).eps ** (1 / 3)
    L = mlp.depth

    def central(f, value: float) -> tuple[float, float, float]:
        h = base_step * max(1.0, abs(value))
        return f(value + h), f(value - h), h

    db = [np.zeros(0)] * (L + 1)
    dA = [np.zeros((0, 0))] * (L + 1)
    for l in range(1, L + 1):
        grad_b = np.zeros((1, mlp.widths[l]))
        for i in range(mlp.widths[l]):
            original = mlp.b[l][i]

            def out(v, l=l, i=i):
                mlp.b[l][i] = v
                return mlp.output(x)

            plus, minus, h = central(out, original)
            mlp.b[l][i] = original
            grad_b[0, i] = (plus - minus) / (2 * h)
        grad_A = np.zeros_like(mlp.A[l])
        for i, j in np.ndindex(grad_A.shape):
            original = mlp.A[l][i, j]

            def out(v, l=l, i=i, j=j):
                mlp.A[l][i, j] = v
                return mlp.output(x)

            plus, minus, h = central(out, original)
            mlp.A[l][i, j] = original
            grad_A[i, j] = (plus - minus) / (2 * h)
        db[l], dA[l] = grad_b, grad_A
    ys, _ = mlp.forward(x)
    dy_dy = [np.zeros((0, 0))] * (L + 1)
    for l in range(1, L + 1):

        def layer(inputs: np.ndarray, l: int = l) -> np.ndarray:
            z = mlp.A[l] @ inputs + mlp.b[l]
            return z if l == L else mlp.activation.function(z)

        jac = np.zeros((mlp.widths[l], mlp.widths[l - 1]))
        for j in range(mlp.widths[l - 1]):
            h = base_step * max(1.0, abs(ys[l - 1][j]))
            up, down = ys[l - 1].copy(), ys[l - 1].copy()
            up[j] += h
            down[j] -= h
            jac[:, j] = (layer(up) - layer(down)) / (2 * h)
        dy_dy[l] = jac
    return {"db": db, "dA": dA, "dy_dy": dy_dy}


class _Value:
    """A scalar in a reverse-mode graph (micrograd style): value, gradient, parents."""

    __slots__ = ("grad", "parents", "value")

    def __init__(self, value: float, parents: tuple = ()) -> None:
        self.value = float(value)
        self.grad = 0.0
        self.parents = parents  # ((parent, local derivative), ...)

    def __add__(self, other: _Value) -> _Value:
        return _Value(self.value + other.value, ((self, 1.0), (other, 1.0)))

    def __mul__(self, other: _Value) -> _Value:
        return _Value(self.value * other.value, ((self, other.value), (other, self.value)))

    def apply(self, activation: Activation) -> _Value:
        point = np.array(self.value)
        value = float(activation.function(point))
        return _Value(value, ((self, float(activation.grad(point))),))

    def backward(self) -> None:
        order: list[_Value] = []
        seen: set[int] = set()
        stack = [(self, False)]
        while stack:  # iterative topological sort (no recursion limit)
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((parent, False) for parent, _ in node.parents)
        self.grad = 1.0
        for node in reversed(order):
            for parent, local in node.parents:
                parent.grad += local * node.grad


def reverse_mode_gradients(mlp: MLP, x: np.ndarray) -> dict[str, list[np.ndarray]]:
    """``dy_L/db_l`` and ``dy_L/dA_l`` by reverse-mode accumulation over scalars."""
    L = mlp.depth
    A = [[[_Value(w) for w in row] for row in mlp.A[l]] for l in range(L + 1)]
    b = [[_Value(v) for v in mlp.b[l]] for l in range(L + 1)]
    y = [_Value(v) for v in np.asarray(x, dtype=np.float64)]
    for l in range(1, L + 1):
        z = []
        for i in range(mlp.widths[l]):
            total = b[l][i]
            for j in range(mlp.widths[l - 1]):
                total = total + A[l][i][j] * y[j]
            z.append(total)
        y = z if l == L else [v.apply(mlp.activation) for v in z]
    y[0].backward()
    db = [np.zeros(0)] + [np.array([[v.grad for v in b[l]]]) for l in range(1, L + 1)]
    dA = [np.zeros((0, 0))] + [
        np.array([[w.grad for w in row] for row in A[l]]) for l in range(1, L + 1)
    ]
    return {"db": db, "dA": dA}


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """Normwise relative error: ``max |approx - exact| / max |exact|``.

    One number per quantity and point, as gradient checks usually report it;
    entrywise ratios would divide rounding noise by entries that are nearly 0.
    """
    approx, exact = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
    scale = float(np.max(np.abs(exact), initial=0.0))
    diff = float(np.max(np.abs(approx - exact), initial=0.0))
    return diff / scale if scale > 0 else diff


# A point whose hidden pre-activations come this close to a kink is resampled:
# a finite difference across a kink measures neither one-sided derivative.
KINK_MARGIN = 1e-3
QUANTITIES = {
    "db": "dy_L/db_l",
    "dA": "dy_L/dA_l",
    "dy_dy": "dy_l/dy_(l-1)",
}


@dataclass
class BackpropResult:
    """Per layer and quantity, the largest relative error over all points."""

    checks: list = field(default_factory=list)
    resampled: int = 0
    points: int = 0
    info: dict = field(default_factory=dict)


def sample_inputs(
    n_inputs: int, points: int, rng: np.random.Generator, image: np.ndarray | None = None
) -> list[np.ndarray]:
    """Random inputs: standard normal, or random patches of a gray image scaled to [0, 1]."""
    if image is None:
        return [rng.standard_normal(n_inputs) for _ in range(points)]
    side = math.isqrt(n_inputs)
    if side * side != n_inputs:
        raise CnnFiltersError(
            f"with --from-image the input width must be a square (4, 9, 16, ...), got {n_inputs}"
        )
    height, width = image.shape
    if height < side or width < side:
        raise CnnFiltersError(
            f"the image ({height} x {width} pixels) is smaller than a {side} x {side} patch"
        )
    top = float(image.max()) or 1.0
    patches = []
    for _ in range(points):
        i = int(rng.integers(0, height - side + 1))
        j = int(rng.integers(0, width - side + 1))
        patches.append(image[i : i + side, j : j + side].reshape(-1).astype(np.float64) / top)
    return patches


def check_backprop(
    widths: tuple[int, ...],
    activation: str,
    *,
    seed: int = 0,
    points: int = 8,
    image: np.ndarray | None = None,
    tolerance: float | None = None,
) -> BackpropResult:
    """Check the formulas at ``points`` inputs against finite differences and reverse mode.

    Errors are normwise (:func:`relative_error`), one per layer, quantity and
    point; the checks report the largest. ``tolerance`` for the finite
    differences defaults to 1e-6 (points near a kink are resampled); the
    reverse-mode check must agree to 1e-12.
    """
    from .report import compare

    if not 1 <= points <= MAX_POINTS:
        raise CnnFiltersError(f"points must be from 1 to {MAX_POINTS}, got {points}")
    mlp = MLP.random(widths, activation, seed)
    rng = np.random.default_rng(seed + 1)
    smooth = mlp.activation.name not in KINKS
    tolerance = 1e-6 if tolerance is None else tolerance
    result = BackpropResult(points=points)
    errors: dict[tuple[str, int], list[float]] = {}
    reverse: dict[tuple[str, int], list[float]] = {}
    accepted = 0
    attempts = 0
    while accepted < points:
        attempts += 1
        if attempts > 100 * points:
            raise CnnFiltersError(
                f"could not find {points} inputs away from the kinks of {mlp.activation.name}"
            )
        (x,) = sample_inputs(widths[0], 1, rng, image)
        if kink_distance(mlp, x) < KINK_MARGIN:
            result.resampled += 1
            continue
        accepted += 1
        formulas = formula_gradients(mlp, x)
        numeric = finite_difference_gradients(mlp, x)
        backward = reverse_mode_gradients(mlp, x)
        for quantity in QUANTITIES:
            for layer in range(1, mlp.depth + 1):
                key = (quantity, layer)
                rel = relative_error(numeric[quantity][layer], formulas[quantity][layer])
                errors.setdefault(key, []).append(rel)
                if quantity in backward:
                    diff = relative_error(backward[quantity][layer], formulas[quantity][layer])
                    reverse.setdefault(key, []).append(diff)
    for (quantity, layer), parts in errors.items():
        name = f"layer {layer} {QUANTITIES[quantity]}"
        result.checks.append(
            compare(
                np.array(parts),
                np.zeros(len(parts)),
                name=name,
                reference="central differences",
                tolerance=tolerance,
                extra={
                    "layer": layer,
                    "quantity": QUANTITIES[quantity],
                    "metric": "normwise relative error, one per point",
                },
            )
        )
    for (quantity, layer), parts in reverse.items():
        name = f"layer {layer} {QUANTITIES[quantity]}"
        result.checks.append(
            compare(
                np.array(parts),
                np.zeros(len(parts)),
                name=name,
                reference="reverse-mode autodiff",
                tolerance=1e-12,
                extra={
                    "layer": layer,
                    "quantity": QUANTITIES[quantity],
                    "metric": "normwise relative error, one per point",
                },
            )
        )
    result.info = {
        "widths": list(widths),
        "activation": mlp.activation.name,
        "smooth": smooth,
        "seed": seed,
        "points": points,
        "resampled_near_kinks": result.resampled,
        "input": "image patches" if image is not None else "standard normal",
    }
    return result
