"""The weight tensors of every construction, as data.

All tensors are in torch layout ``(C_out, C_in / groups, kh, kw)`` so that
they load as they are into ``torch.nn.Conv2d(...).weight``; each
:class:`Construction` also records the stride, padding and groups it needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import CnnFiltersError

__all__ = [
    "FLOAT32_MAX",
    "FORWARD_DIFF_X",
    "FORWARD_DIFF_Y",
    "GRAYSCALE_WEIGHTS",
    "NAMED_KERNELS",
    "Construction",
    "as_float32_weights",
    "avg_pool_weight",
    "construction_named",
    "constructions",
    "export_constructions",
    "gradient_weight",
    "grayscale_weight",
    "load_kernel_file",
    "one_hot_filters",
    "parse_grayscale_weights",
    "parse_kernel",
    "same_padding",
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

SOBEL_X = np.array([
    [-1, 0, 1],
    [-2, 0, 2],
    [-1, 0, 1],
], dtype=np.float32)  # fmt: skip

SCHARR_X = np.array([
    [ -3, 0,  3],
    [-10, 0, 10],
    [ -3, 0,  3],
], dtype=np.float32)  # fmt: skip

LAPLACIAN = np.array([
    [0,  1, 0],
    [1, -4, 1],
    [0,  1, 0],
], dtype=np.float32)  # fmt: skip

# Pillow's ImageFilter.SHARPEN: the centre against its eight neighbours, scale 16.
SHARPEN = np.array([
    [-2, -2, -2],
    [-2, 32, -2],
    [-2, -2, -2],
], dtype=np.float32) / np.float32(16)  # fmt: skip

_BINOMIAL5 = np.array([1, 4, 6, 4, 1], dtype=np.float32)

# Kernels by name for ``cnnfilters convolve --kernel NAME``.
NAMED_KERNELS: dict[str, np.ndarray] = {
    "f1": FORWARD_DIFF_Y,
    "f2": FORWARD_DIFF_X,
    "sobel-x": SOBEL_X,
    "sobel-y": np.ascontiguousarray(SOBEL_X.T),
    "scharr-x": SCHARR_X,
    "scharr-y": np.ascontiguousarray(SCHARR_X.T),
    "laplacian": LAPLACIAN,
    "box3": np.full((3, 3), 1 / 9, dtype=np.float32),
    "gaussian5": np.outer(_BINOMIAL5, _BINOMIAL5) / np.float32(256),
    "sharpen": SHARPEN,
}


def parse_kernel(text: str) -> np.ndarray:
    """A kernel by name, or as rows separated by ``;`` of values separated by ``,`` or spaces.

    ``"0,0,0;0,-1,0;0,1,0"`` is F1. Returns a 2-D float32 array.
    """
    key = text.strip().lower()
    if key in NAMED_KERNELS:
        return NAMED_KERNELS[key].copy()
    rows = key.split(";")
    if not key or any(not row.strip() for row in rows):
        raise CnnFiltersError(
            f"kernel {text!r} is empty or has an empty row; write rows as 'a,b,c;d,e,f' "
            f"or use a name: {', '.join(NAMED_KERNELS)}"
        )
    values = []
    for number, row in enumerate(rows, start=1):
        cells = row.replace(",", " ").split()
        try:
            values.append([float(cell) for cell in cells])
        except ValueError:
            bad = next(c for c in cells if not _is_number(c))
            raise CnnFiltersError(
                f"kernel row {number} has {bad!r}, which is not a number "
                f"(known names: {', '.join(NAMED_KERNELS)})"
            ) from None
    lengths = {len(row) for row in values}
    if len(lengths) != 1:
        raise CnnFiltersError(
            f"kernel rows have different lengths {[len(row) for row in values]} in {text!r}"
        )
    kernel = np.array(values, dtype=np.float64)
    if not np.isfinite(kernel).all():
        raise CnnFiltersError(f"kernel {text!r} has values that are not finite")
    return as_float32_weights(kernel, "kernel")


# The largest float32: the engine computes in float32, so a weight, a bias or a
# result beyond it would be infinite.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_float32_weights(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` (finite numbers) as float32, or an error naming the first that does
    not fit float32's range (it would become infinite)."""
    values = np.asarray(values)
    if values.dtype.kind == "f" and values.dtype.itemsize > 4 and values.size:
        big = np.abs(values) > FLOAT32_MAX
        if big.any():
            first = float(values.reshape(-1)[np.flatnonzero(big.reshape(-1))[0]])
            raise CnnFiltersError(
                f"{what} has {first:g}, beyond float32's range (+-{FLOAT32_MAX:.4g}), "
                "which the engine computes in"
            )
    return values.astype(np.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def same_padding(shape: tuple[int, ...]) -> int:
    """The padding that keeps the size for a kernel of ``shape`` (..., kh, kw).

    Only odd, square kernels: an even one would shift the image by half a pixel.
    """
    kh, kw = shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise CnnFiltersError(
            f"--padding same needs an odd kernel size, got {kh} x {kw} "
            "(an even one would shift the image by half a pixel)"
        )
    if kh != kw:
        raise CnnFiltersError(f"--padding same needs a square kernel here, got {kh} x {kw}")
    return (kh - 1) // 2


def load_kernel_file(path: str) -> np.ndarray:
    """A kernel from ``.txt`` (a matrix), ``.json`` (nested lists) or ``.npy``.

    Returns a 2-D kernel, or a full 4-D ``(C_out, C_in, kh, kw)`` tensor.
    """
    import json
    from pathlib import Path

    from .errors import InputError

    source = Path(path)
    suffix = source.suffix.lower()
    if suffix not in (".npy", ".json", ".txt", ".csv", ""):
        raise InputError(f"{source}: a kernel file must be .txt, .json or .npy, not {suffix!r}")
    try:
        if suffix == ".npy":
            kernel = np.load(source, allow_pickle=False)
        elif suffix == ".json":
            kernel = np.array(json.loads(source.read_text()), dtype=np.float64)
        else:
            rows = [line for line in source.read_text().splitlines() if line.strip()]
            kernel = parse_kernel(";".join(rows))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: cannot read the kernel ({exc})") from None
    except RecursionError:  # lists nested thousands deep: no kernel has more than 4 levels
        raise InputError(f"{source}: not a kernel (lists nested too deeply)") from None
    except (ValueError, TypeError) as exc:
        # A ragged JSON list, a pickled or corrupt .npy, text that is not JSON.
        raise InputError(f"{source}: not a kernel ({exc})") from None
    except CnnFiltersError as exc:
        raise InputError(f"{source}: {exc}") from None
    if kernel.ndim not in (2, 4) or kernel.size == 0 or kernel.dtype.kind not in "biuf":
        raise InputError(
            f"{source}: a kernel must be a 2-D matrix or a 4-D (C_out, C_in, kh, kw) tensor "
            f"of numbers, got shape {kernel.shape}"
        )
    if not np.isfinite(kernel).all():
        raise InputError(f"{source}: the kernel has values that are not finite")
    try:
        return as_float32_weights(kernel, "the kernel")
    except CnnFiltersError as exc:
        raise InputError(f"{source}: {exc}") from None


# Luma weights (R, G, B). They act on gamma-encoded values: this is luma, not
# the luminance of linear light. bt601 is Pillow's choice, and the default.
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
    if not all(map(math.isfinite, values)):
        raise CnnFiltersError(f"grayscale weights must be finite, got {spec!r}")
    if max(abs(v) for v in values) > 1e6:  # also keeps the weighted sums far from float32's max
        raise CnnFiltersError(f"grayscale weights must be at most 1e6 in size, got {spec!r}")
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
    """The k^2 one-hot filters ``delta_{u,v} / k^2``: shape ``(k*k, 1, k, k)``.

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


def construction_named(name: str, avg_kernel_size: int = 2) -> Construction:
    """One construction by its name, or by its command's: ``grayscale`` is
    ``grayscale-bt601`` (the command's default weights), ``avgpool`` is
    ``avgpool{k}`` of ``avg_kernel_size``, and ``avgpoolN`` (or
    ``avgpoolN-onehot``) names its own k."""
    import re

    key = name.strip().lower()
    sized = re.fullmatch(r"avgpool(\d+)(-onehot)?", key)
    if sized is not None and 1 <= int(sized[1]) <= 64:
        avg_kernel_size = int(sized[1])
    available = constructions(avg_kernel_size)
    aliases = {"grayscale": "grayscale-bt601", "avgpool": f"avgpool{avg_kernel_size}"}
    key = aliases.get(key, key)
    if key not in available:
        names = ", ".join([*available, *aliases])
        raise CnnFiltersError(f"unknown construction {name!r}; choose from {names}")
    return available[key]


def constructions(avg_kernel_size: int = 2) -> dict[str, Construction]:
    """Every construction, by name, in torch layout."""
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
            "1x1 conv RGB -> luma, ITU-R BT.601 (Pillow's weights)",
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
            f"the {k * k} one-hot filters delta_uv/{k * k}; they sum to avgpool{k}",
            one_hot_filters(k),
            stride=k,
        ),
    }


def export_constructions(chosen: list[Construction], fmt: str = "npz") -> bytes:
    """Every construction's tensors and what ``torch.nn.Conv2d`` needs, as a file's bytes.

    ``npz``: arrays ``{name}.weight`` (and ``{name}.bias`` where there is one)
    and ``metadata``, a JSON string with each construction's stride, padding,
    groups and channels. ``json``: one list of :meth:`Construction.to_dict`.
    """
    import io
    import json

    if fmt == "json":
        return (json.dumps([c.to_dict() for c in chosen], indent=2) + "\n").encode()
    if fmt != "npz":
        raise CnnFiltersError(f"export format must be npz or json, got {fmt!r}")
    arrays: dict[str, np.ndarray] = {}
    metadata = []
    for construction in chosen:
        arrays[f"{construction.name}.weight"] = construction.weight
        if construction.bias is not None:
            arrays[f"{construction.name}.bias"] = construction.bias
        entry = construction.to_dict()
        del entry["weight"], entry["bias"]
        metadata.append(entry)
    arrays["metadata"] = np.array(json.dumps(metadata))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
