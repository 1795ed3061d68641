"""cnnfilters: classic image filters built as convolution layers, each checked.

The library under the ``cnnfilters`` command. One engine (:func:`conv2d`,
:func:`max_pool2d`, :func:`avg_pool2d`, with the semantics of
``torch.nn.functional``) runs every construction: gradients,
average pooling and grayscale are weight tensors handed to ``conv2d``.

>>> import numpy as np, cnnfilters
>>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
>>> cnnfilters.avgpool(x, 2)[0]
array([[ 2.5,  4.5],
       [10.5, 12.5]], dtype=float32)

Names are imported on first use, so that ``cnnfilters --help`` starts
without loading numpy.
"""

from __future__ import annotations

from . import _early

if _early.is_command_line():
    _early.guard()  # first: a Ctrl-C from here on is one line, not a traceback

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

_EXPORTS = {
    "conv2d": "engine",
    "conv2d_grad": "engine",
    "max_pool2d": "engine",
    "avg_pool2d": "engine",
    "pad2d": "engine",
    "set_num_threads": "engine",
    "get_num_threads": "engine",
    "PADDING_MODES": "engine",
    "grayscale": "ops",
    "gradients": "ops",
    "avgpool": "ops",
    "commute": "ops",
    "find_counterexample": "ops",
    "CommuteResult": "ops",
    "ACTIVATIONS": "activations",
    "Activation": "activations",
    "get_activation": "activations",
    "compare": "report",
    "Check": "report",
    "RunReport": "report",
    "apply": "inline",
    "Run": "inline",
    "CnnFiltersError": "errors",
    "InputError": "errors",
    "OutputError": "errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .activations import ACTIVATIONS, Activation, get_activation
    from .engine import (
        PADDING_MODES,
        avg_pool2d,
        conv2d,
        conv2d_grad,
        get_num_threads,
        max_pool2d,
        pad2d,
        set_num_threads,
    )
    from .errors import CnnFiltersError, InputError, OutputError
    from .inline import Run, apply
    from .ops import CommuteResult, avgpool, commute, find_counterexample, gradients, grayscale
    from .report import Check, RunReport, compare


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnfilters' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
