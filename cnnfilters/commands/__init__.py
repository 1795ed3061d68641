"""The image commands: one frozen options object each, that runs on one decoded image.

A command object validates itself when it is made (a wrong value is a
:class:`~cnnfilters.errors.CnnFiltersError` naming the value), names the
outputs it writes, gives the kernels it runs with, and :meth:`Command.run`
computes one image: one operation of :mod:`cnnfilters.ops`, checked against
:mod:`cnnfilters.reference` with :func:`~cnnfilters.report.compare`,
returning a :class:`Result`. Nothing here reads or writes a file: the loop
over inputs is :mod:`cnnfilters.run`, the writing :mod:`cnnfilters.outputs`.

One file a command (:mod:`.grayscale`, :mod:`.gradient`, :mod:`.avgpool`,
:mod:`.commute`, :mod:`.convolve`; ``learn``, which trains on all its inputs
at once, in :mod:`.learn`, :mod:`.learned` and :mod:`.training`), on :mod:`.base` (the
protocol) and :mod:`.strips` (working a strip of rows at a time, and when a
command must).

Adding a command: a frozen dataclass deriving from :class:`Command` in a file
of its own, with its options as fields, ``name``, :meth:`~Command.outputs`
and :meth:`~Command.run`; add it to :data:`COMMANDS`; then one function in
:mod:`cnnfilters.cli` (see ``docs/ARCHITECTURE.md``). A new filter that is
only a kernel needs none of this: it is a named kernel of ``convolve``.
"""

from __future__ import annotations

from typing import Any

from ..errors import CnnFiltersError
from .avgpool import AvgpoolOptions
from .base import Command, Output, Result, float32_tolerance, gray_levels
from .commute import CommuteOptions
from .convolve import ConvolveOptions
from .gradient import GradientOptions
from .grayscale import GrayscaleOptions
from .learn import LearnOptions
from .learned import Learned

__all__ = [
    "COMMANDS",
    "AvgpoolOptions",
    "Command",
    "CommuteOptions",
    "ConvolveOptions",
    "GradientOptions",
    "GrayscaleOptions",
    "LearnOptions",
    "Learned",
    "Output",
    "Result",
    "command_named",
    "float32_tolerance",
    "gray_levels",
]

COMMANDS: tuple[type[Command], ...] = (
    GrayscaleOptions,
    GradientOptions,
    AvgpoolOptions,
    CommuteOptions,
    ConvolveOptions,
)


def command_named(name: str, **options: Any) -> Command:
    """The command called ``name`` with ``options`` (validated)."""
    for command in COMMANDS:
        if command.name == name:
            return command(**options)
    choices = ", ".join(c.name for c in COMMANDS)
    raise CnnFiltersError(f"unknown command {name!r}; choose from {choices}")
