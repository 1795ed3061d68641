"""Learning a filter back: a conv layer trained by gradient descent on the engine.

The course's claim is that classic filters *are* convolution layers. Here a
layer of a construction's geometry starts from random weights and is trained
on examples (inputs and the construction's outputs on them) with the
engine's forward pass (:func:`~cnnfilters.engine.conv2d`) and backward pass
(:func:`~cnnfilters.engine.conv2d_grad`); it should arrive at the
construction's weights. The same fit answers "which linear filter turns
this image into that one?".

The problem, as a network sees it:

- **Data**: ``Problem.inputs`` are ``(N, C, H, W)`` patches in pixel units,
  already padded as the layer pads (in pixel units: zero padding means a
  black border, whatever the normalization below); ``Problem.targets`` the
  outputs to match, ``(N, C_out, H_out, W_out)``.
- **Normalization**, as a network's input layer does: each input channel is
  standardized (zero mean, unit variance over the data) and each target
  channel centred and divided by the targets' standard deviation. The loss is
  the mean squared error in those units, so it reads as a fraction of the
  targets' variance (1 for a layer that outputs their mean). The learned
  layer is folded back to pixel units at the end.
- **Initialization**: torch's default for ``Conv2d``: every weight and bias
  uniform in ``+-1/sqrt(fan_in)``, from ``seed``.
- **Optimizers**: ``sgd`` (``p -= lr g``), ``momentum`` (Nesterov's, as
  ``torch.optim.SGD(nesterov=True)``: ``v = beta v + g; p -= lr (g + beta
  v)``) and ``adam`` (Kingma and Ba, with torch's defaults).
- **Curvature**: the loss is quadratic in the parameters, so its Hessian is
  measured first, one forward and backward pass per parameter, with its
  largest and smallest eigenvalues ``L`` and ``mu``. ``lr=None`` (auto)
  then means ``1/L`` for sgd and momentum, with ``beta = (sqrt(L/mu) -
  1)/(sqrt(L/mu) + 1)`` for momentum (Nesterov's choice for a strongly
  convex quadratic: the error shrinks by about ``1 - sqrt(mu/L)`` a step,
  without overshoot), and 0.01 for adam.
- **Stopping**: when the loss is at most ``tol`` (``"tol"``); when the
  parameters are provably within :data:`CONVERGED` of the best ones for the
  data, ``|gradient| / mu`` (``"converged"``: the data may hold noise, such
  as 8-bit rounding, that no layer fits); when the loss has not improved by
  a millionth for :data:`PLATEAU_STEPS` steps (``"plateau"``: the floor of
  float32 arithmetic); or after ``steps``. A loss that is not finite, or
  grows :data:`DIVERGED_FACTOR` times above its start, is :class:`Diverged`:
  no weights come out of it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .defaults import OPTIMIZERS
from .engine import conv2d, conv2d_grad
from .errors import EXIT_CHECK_FAILED, CnnFiltersError

__all__ = [
    "CONVERGED",
    "DIVERGED_FACTOR",
    "PLATEAU_STEPS",
    "Diverged",
    "Layer",
    "Problem",
    "Training",
    "curvature",
    "train",
]

# A loss this many times its start (or not finite) is divergence.
DIVERGED_FACTOR = 1e4
# No new best loss (by a millionth) for this many steps: the arithmetic's floor.
PLATEAU_STEPS = 300
# |gradient| / mu below this (normalized units): within it of the data's best layer.
CONVERGED = 1e-6
_ADAM_LR = 0.01


class Diverged(CnnFiltersError):
    """The loss ran away (a learning rate too large): no weights are a result."""

    exit_code = EXIT_CHECK_FAILED


@dataclass(frozen=True)
class Layer:
    """A conv layer's geometry: ``(C_out, C_in / groups, kh, kw)`` weights, a bias,
    ``stride``, ``groups``. Its padding is in the data (see :class:`Problem`)."""

    weight_shape: tuple[int, int, int, int]
    stride: int = 1
    groups: int = 1


@dataclass
class Problem:
    """What to fit: ``inputs`` ``(N, C, H, W)`` (padded, pixel units) to ``targets``."""

    inputs: np.ndarray
    targets: np.ndarray
    layer: Layer

    def __post_init__(self) -> None:
        expected = conv2d(
            self.inputs[:1, :, :, :],
            np.zeros(self.layer.weight_shape),
            stride=self.layer.stride,
            groups=self.layer.groups,
        ).shape[1:]
        if self.targets.shape != (self.inputs.shape[0], *expected):
            raise CnnFiltersError(
                f"targets of shape {self.targets.shape} do not fit the layer's outputs "
                f"{(self.inputs.shape[0], *expected)}"
            )


@dataclass
class Training:
    """What training gave: the layer in pixel units, and how it got there."""

    weight: np.ndarray  # (C_out, C_in / groups, kh, kw), float64
    bias: np.ndarray  # (C_out,)
    losses: list[float]  # the loss before each step
    steps: int
    seconds: float
    stopped: str  # "tol", "converged", "plateau" or "steps"
    optimizer: str
    lr: float
    momentum: float | None  # None: not momentum
    curvature: tuple[float, float]  # (L, mu), the Hessian's extreme eigenvalues
    notes: list[str] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return self.losses[-1]


class _Normalized:
    """The problem in normalized units (float32), its loss and gradients."""

    def __init__(self, problem: Problem) -> None:
        x = np.asarray(problem.inputs, dtype=np.float64)
        t = np.asarray(problem.targets, dtype=np.float64)
        self.layer = problem.layer
        self.mean = x.mean(axis=(0, 2, 3))
        self.std = x.std(axis=(0, 2, 3))
        if not (self.std > 0).all():
            flat = int(np.argmin(self.std))
            raise CnnFiltersError(
                f"input channel {flat} is constant over the training data: it determines no weight"
            )
        self.target_mean = t.mean(axis=(0, 2, 3))
        self.target_std = float(t.std()) or 1.0
        self.x = ((x - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32)
        self.t = ((t - self.target_mean[:, None, None]) / self.target_std).astype(np.float32)
        self.scale = np.float32(2.0 / self.t.size)

    def loss_and_grads(self, w: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        geometry = {"stride": self.layer.stride, "groups": self.layer.groups}
        residual = conv2d(self.x, w, b, **geometry)
        residual -= self.t
        loss = float(np.mean(np.square(residual, dtype=np.float64)))
        residual *= self.scale  # d loss / d output
        _, grad_w, grad_b = conv2d_grad(self.x, w, residual, **geometry)
        return loss, grad_w, grad_b

    def to_pixels(self, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same layer acting on pixel values: undo both normalizations."""
        w = w.astype(np.float64)
        c_out, c_in_group = w.shape[:2]
        groups = self.layer.groups
        inputs = np.arange(c_out)[:, None] // (c_out // groups) * c_in_group + np.arange(c_in_group)
        std = self.std[inputs][:, :, None, None]  # the input channel each weight reads
        mean = self.mean[inputs][:, :, None, None]
        weight = w / std * self.target_std
        bias = (b.astype(np.float64) - (w * mean / std).sum(axis=(1, 2, 3))) * self.target_std
        return weight, bias + self.target_mean


def curvature(problem: _Normalized) -> tuple[float, float]:
    """``(L, mu)``: the largest and smallest eigenvalues of the loss's Hessian.

    The loss is quadratic in the parameters, so column ``i`` of the Hessian
    is ``grad(e_i) - grad(0)``: one forward and backward pass of the engine
    per parameter (a layer has at most a few hundred), then ``eigvalsh``.
    """
    shape = problem.layer.weight_shape
    count = math.prod(shape) + shape[0]
    zero_w, zero_b = np.zeros(shape, np.float32), np.zeros(shape[0], np.float32)
    _, base_w, base_b = problem.loss_and_grads(zero_w, zero_b)
    base = np.concatenate([base_w.ravel(), base_b]).astype(np.float64)
    hessian = np.empty((count, count))
    for i in range(count):
        unit = np.zeros(count, np.float32)
        unit[i] = 1
        _, grad_w, grad_b = problem.loss_and_grads(
            unit[: -shape[0]].reshape(shape), unit[-shape[0] :]
        )
        hessian[:, i] = np.concatenate([grad_w.ravel(), grad_b]) - base
    values = np.linalg.eigvalsh((hessian + hessian.T) / 2)
    top = float(values[-1])
    return top, min(max(float(values[0]), top * 1e-9), top)


def train(
    problem: Problem,
    *,
    optimizer: str = "momentum",
    lr: float | None = None,
    steps: int = 5000,
    tol: float = 1e-12,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> Training:
    """Fit the layer of ``problem`` from a random start; see the module's text."""
    if optimizer not in OPTIMIZERS:
        raise CnnFiltersError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}"
        )
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise CnnFiltersError(f"the learning rate must be a positive number, got {lr!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CnnFiltersError(f"steps must be a positive int, got {steps!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise CnnFiltersError(f"tol must be a number >= 0, got {tol!r}")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    normalized = _Normalized(problem)
    shape = problem.layer.weight_shape
    bound = 1 / math.sqrt(shape[1] * shape[2] * shape[3])
    w = rng.uniform(-bound, bound, shape).astype(np.float32)
    b = rng.uniform(-bound, bound, shape[0]).astype(np.float32)
    measured = curvature(normalized)
    step_rule, rate, beta = _optimizer(optimizer, lr, measured)
    losses: list[float] = []
    best, best_step, stopped = math.inf, 0, None
    # A rate too large overflows float32 on the way (inf - inf in the backward pass):
    # the loss that follows is not finite, which is the divergence said below, so
    # numpy's warnings would only repeat it with a source line.
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(1, steps + 1):
            loss, grad_w, grad_b = normalized.loss_and_grads(w, b)
            losses.append(loss)
            if on_step is not None:
                on_step(step, loss)
            if not math.isfinite(loss) or loss > DIVERGED_FACTOR * max(losses[0], 1.0):
                raise Diverged(
                    f"training diverged at step {step} (loss {loss:.3g}, from {losses[0]:.3g}): "
                    f"the learning rate {rate:.3g} is too large for these data; try a smaller "
                    "--lr, or --lr auto"
                )
            stopped = _stop_reason(loss, tol, (grad_w, grad_b), measured[1])
            if stopped is None and loss < (1 - 1e-6) * best:
                best, best_step = loss, step
            elif stopped is None and step - best_step >= PLATEAU_STEPS:
                stopped = "plateau"
            if stopped is not None:
                break
            step_rule(step, (w, b), (grad_w, grad_b))
    weight, bias = normalized.to_pixels(w, b)
    return Training(
        weight,
        bias,
        losses,
        len(losses),
        time.perf_counter() - started,
        stopped or "steps",
        optimizer,
        rate,
        beta,
        measured,
    )


def _stop_reason(loss: float, tol: float, grads: tuple[np.ndarray, ...], mu: float) -> str | None:
    if loss <= tol:
        return "tol"
    norm = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
    return "converged" if norm / mu <= CONVERGED else None


def _optimizer(
    name: str, lr: float | None, measured: tuple[float, float]
) -> tuple[Callable[[int, tuple, tuple], None], float, float | None]:
    """``(update(step, params, grads), lr, momentum)`` for ``name``."""
    if name == "sgd":
        rate = lr if lr is not None else 1.0 / measured[0]

        def sgd(step: int, params: tuple, grads: tuple) -> None:
            for p, g in zip(params, grads, strict=True):
                p -= np.float32(rate) * g

        return sgd, rate, None
    if name == "momentum":
        if lr is None:
            root = math.sqrt(measured[0] / measured[1])  # sqrt of the condition number
            rate, beta = 1 / measured[0], (root - 1) / (root + 1)
        else:
            rate, beta = lr, 0.9
        buffers: list[np.ndarray] = []

        def nesterov(step: int, params: tuple, grads: tuple) -> None:
            if not buffers:
                buffers.extend(np.zeros_like(p) for p in params)
            for buffer, p, g in zip(buffers, params, grads, strict=True):
                buffer *= np.float32(beta)
                buffer += g
                p -= np.float32(rate) * (g + np.float32(beta) * buffer)

        return nesterov, rate, beta
    rate = lr if lr is not None else _ADAM_LR
    moments: list[list[np.ndarray]] = []

    def adam(step: int, params: tuple, grads: tuple) -> None:
        if not moments:
            moments.extend([np.zeros_like(p), np.zeros_like(p)] for p in params)
        for (m, v), p, g in zip(moments, params, grads, strict=True):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * np.square(g)
            m_hat = m / (1 - 0.9**step)
            v_hat = v / (1 - 0.999**step)
            p -= (rate * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)

    return adam, rate, None
