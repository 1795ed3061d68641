"""The weight tensors of every construction, as data.

All tensors are in torch layout ``(C_out, C_in / groups, kh, kw)`` so that
they load as they are into ``torch.nn.Conv2d(...).weight``; each
:class:`Construction` also records the stride, padding and groups it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import CnnFiltersError

__all__ = [
    "FORWARD_DIFF_X",
    "FORWARD_DIFF_Y",
    "GRAYSCALE_WEIGHTS",
    "Construction",
    "avg_pool_weight",
    "constructions",
    "gradient_weight",
    "grayscale_weight",
    "one_hot_filters",
    "parse_grayscale_weights",
]

# F1: with the centre on X[i, j], Y[i, j] = X[i+1, j] - X[i, j] (vertical forward difference).
FORWARD_DIFF_Y = np.array([
    [0,  0, 0],
    [0, -1, 0],
    [0,  1, 0],
], dtype=np.float32)  # fmt: skip

# F2: Y[i, j] = X[i, j+1] - X[i, j] (horizontal forward difference).
FORWARD_DIFF_X = np.array([
    [0,  0, 0],
    [0, -1, 1],
    [0,  0, 0],
], dtype=np.float32)  # fmt: skip

# Luma weights (R, G, B). They act on gamma-encoded values: this is luma, not
# the luminance of linear light. bt601 is the homework's choice and Pillow's.
GRAYSCALE_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "bt601": (0.299, 0.587, 0.114),
    "bt709": (0.2126, 0.7152, 0.0722),
}


def gradient_weight(channels: int = 1) -> np.ndarray:
    """F1 and F2 for each of ``channels`` channels: shape ``(2C, 1, 3, 3)``, ``groups = C``.

    Output channel ``2c`` is the vertical difference of input channel ``c``,
    ``2c + 1`` the horizontal one. Use with padding 1.
    """
    if channels <= 0:
        raise CnnFiltersError(f"channels must be positive, got {channels}")
    pair = np.stack([FORWARD_DIFF_Y, FORWARD_DIFF_X])[:, np.newaxis]  # (2, 1, 3, 3)
    return np.tile(pair, (channels, 1, 1, 1))


def parse_grayscale_weights(spec: str | tuple[float, float, float]) -> tuple[float, float, float]:
    """``"bt601"``, ``"bt709"``, ``"R,G,B"`` or three numbers -> three floats."""
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in GRAYSCALE_WEIGHTS:
            return GRAYSCALE_WEIGHTS[key]
        parts = [p for p in key.replace(";", ",").replace(" ", ",").split(",") if p]
        if len(parts) != 3:
            raise CnnFiltersError(
                f"grayscale weights must be bt601, bt709 or three numbers R,G,B, got {spec!r}"
            )
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            raise CnnFiltersError(
                f"grayscale weights must be bt601, bt709 or three numbers R,G,B, got {spec!r}"
            ) from None
    else:
        values = tuple(float(v) for v in spec)
        if len(values) != 3:
            raise CnnFiltersError(f"grayscale weights must be three numbers, got {spec!r}")
    if not all(np.isfinite(values)):
        raise CnnFiltersError(f"grayscale weights must be finite, got {spec!r}")
    return values  # type: ignore[return-value]


def grayscale_weight(
    weights: str | tuple[float, float, float] = "bt601", *, dtype: type = np.float32
) -> np.ndarray:
    """The 1x1 convolution from RGB to one channel: shape ``(1, 3, 1, 1)``."""
    return np.array(parse_grayscale_weights(weights), dtype=dtype).reshape(1, 3, 1, 1)


def avg_pool_weight(
    channels: int,
    kernel_size: int | tuple[int, int],
    *,
    depthwise: bool = True,
    dtype: type = np.float32,
) -> np.ndarray:
    """k x k average-pooling weights for ``channels`` channels.

    ``depthwise=True``: shape ``(C, 1, kh, kw)``, every weight ``1/(kh*kw)``,
    for ``groups = C``. ``depthwise=False``: the equivalent dense tensor
    ``(C, C, kh, kw)`` with ``w[c, c] = 1/(kh*kw)`` and 0 across channels, for
    ``groups = 1``. Use with stride ``kernel_size`` and no padding.
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if channels <= 0 or kh <= 0 or kw <= 0:
        raise CnnFiltersError(
            f"channels and kernel size must be positive, got {channels} and {kernel_size!r}"
        )
    window = np.full((kh, kw), 1.0 / (kh * kw), dtype=dtype)
    if depthwise:
        return np.broadcast_to(window, (channels, 1, kh, kw)).copy()
    dense = np.zeros((channels, channels, kh, kw), dtype=dtype)
    dense[np.arange(channels), np.arange(channels)] = window
    return dense


def one_hot_filters(k: int, *, dtype: type = np.float32) -> np.ndarray:
    """The homework's k^2 filters ``delta_{u,v} / k^2``: shape ``(k*k, 1, k, k)``.

    Filter ``u*k + v`` picks pixel ``(u, v)`` of each window; their sum is the
    all-``1/k^2`` average-pooling filter.
    """
    if k <= 0:
        raise CnnFiltersError(f"kernel size must be positive, got {k}")
    filters = np.zeros((k * k, 1, k, k), dtype=dtype)
    taps = np.arange(k * k)
    filters[taps, 0, taps // k, taps % k] = 1.0 / (k * k)
    return filters


@dataclass(frozen=True)
class Construction:
    """A named conv layer: its weights plus what ``torch.nn.Conv2d`` needs to run it."""

    name: str
    description: str
    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: int = 1
    padding: int = 0
    groups: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def to_dict(self) -> dict:
        """JSON-ready description (weights as nested lists)."""
        return {
            "name": self.name,
            "description": self.description,
            "shape": list(self.weight.shape),
            "weight": self.weight.tolist(),
            "bias": None if self.bias is None else self.bias.tolist(),
            "stride": self.stride,
            "padding": self.padding,
            "groups": self.groups,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "notes": list(self.notes),
        }


def constructions(avg_kernel_size: int = 2) -> dict[str, Construction]:
    """Every construction of the course, by name, in torch layout."""
    k = avg_kernel_size
    return {
        "gradient": Construction(
            "gradient",
            "F1 (vertical) and F2 (horizontal) forward differences of one channel",
            gradient_weight(1),
            padding=1,
            notes=("zero padding: the last row/column gives -X[i, j]",),
        ),
        "grayscale-bt601": Construction(
            "grayscale-bt601",
            "1x1 conv RGB -> luma, ITU-R BT.601 (the homework's weights)",
            grayscale_weight("bt601"),
        ),
        "grayscale-bt709": Construction(
            "grayscale-bt709",
            "1x1 conv RGB -> luma, ITU-R BT.709",
            grayscale_weight("bt709"),
        ),
        f"avgpool{k}": Construction(
            f"avgpool{k}",
            f"{k}x{k} average pooling of 3 channels as a stride-{k} depthwise conv",
            avg_pool_weight(3, k),
            stride=k,
            groups=3,
            notes=("rows/columns that do not fill a window are dropped",),
        ),
        f"avgpool{k}-onehot": Construction(
            f"avgpool{k}-onehot",
            f"the homework's {k * k} one-hot filters delta_uv/{k * k}; they sum to avgpool{k}",
            one_hot_filters(k),
            stride=k,
        ),
    }
