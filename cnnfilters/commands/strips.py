"""Working on a large image a strip of rows at a time, so that a command's memory
stays near the size of its decoded image whatever that size.

The rule: a command must work by strips when it makes an array the size of
the image (or larger) beside the decoded pixels: a float copy, a result, the
reference's result, a difference. Strips of about :data:`STRIP_BYTES` keep
each such array a few MB, and the output is encoded as its strips are made.
A command whose outputs are a fraction of the image (``avgpool -k 4``: a
sixteenth) may make those whole; one that only reads the pixels needs
nothing. The references work by strips too (``reference.direct_correlation``
takes ``rows=``), so that a check never holds a whole float64 image.

- :func:`strip_ranges` and :func:`rows_per_strip` size the strips;
- :class:`Strips` makes and checks the output levels strip by strip, the
  writer and the checks sharing each strip (:class:`InOrder`);
- :func:`held_rows` gives float values (or a difference) to the writer a
  strip at a time, made when written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np

from ..images import LoadedImage
from ..levels import Rows, level_dtype
from ..report import Check, Comparison
from ..rounding import Exact

# Rows of float32 a strip of a large image holds: a few MB, so that memory
# stays bounded by the decoded image whatever its size.
STRIP_BYTES = 2 << 20


def rows_per_strip(row_bytes: int) -> int:
    """How many rows of ``row_bytes`` make a strip (at least one)."""
    return max(1, STRIP_BYTES // max(1, row_bytes))


def strip_ranges(height: int, row_bytes: int) -> list[tuple[int, int]]:
    """``(first, stop)`` of each strip of an image ``height`` rows high, at least 8 rows
    each."""
    step = max(8, STRIP_BYTES // max(1, row_bytes))
    return [(first, min(first + step, height)) for first in range(0, height, step)]


class InOrder:
    """Steps ``0..count - 1`` of some work, each done once and in order by whichever
    thread asks for it first; a thread that needs a step another thread is on
    waits for it. Two threads can so share a pipeline without either having to
    know whether the other exists. (The step is passed in, not kept: a bound
    method kept here would make its object a reference cycle, freed only by a
    garbage collection, with its arrays.)"""

    def __init__(self, count: int) -> None:
        self.count = count
        self._done = 0  # steps 0.._done - 1 are done
        self._busy = False  # a thread is on step _done
        self._stopped: type[BaseException] | None = None  # Ctrl-C or SIGTERM in a step
        self._changed = threading.Condition()

    def through(self, index: int, step: Callable[[int], None]) -> None:
        """Make sure steps ``0..index`` are done.

        A step stopped by Ctrl-C or SIGTERM stops the work: the other thread
        raises the same, instead of doing the steps that are left.
        """
        with self._changed:
            while self._done <= index:
                if self._stopped is not None:
                    raise self._stopped
                if self._busy:
                    self._changed.wait()
                    continue
                self._busy = True
                try:
                    self._changed.release()  # inside the try: a signal may come right after
                    step(self._done)
                except BaseException as exc:
                    if not isinstance(exc, Exception):
                        self._stopped = type(exc)
                    raise
                finally:
                    self._changed.acquire()
                    self._busy = False
                    self._changed.notify_all()
                self._done += 1

    def all(self, step: Callable[[int], None]) -> None:
        """Every step, one at a time (another thread can take each as it is done)."""
        for index in range(self.count):
            self.through(index, step)


class Strips:
    """A command's output levels, made and checked a strip of rows at a time.

    Each strip is done once, in order, by whichever thread asks first
    (:class:`InOrder`): the writer, for the strip's levels to encode, or
    :meth:`checks`. A subclass's ``_strip`` reads the strip's rows once,
    computes it, rounds it to levels (:meth:`_levels`) and updates its
    comparisons while the rows are in cache. So there is no second pass over
    the image, and the encoder, in its own thread, starts on the first strip
    instead of after the last.
    """

    def __init__(
        self,
        image: LoadedImage,
        shape: tuple[int, int, int],
        strips: list[tuple[int, int]],
        out: list[tuple[int, int]],
        notices: list[str],
    ) -> None:
        self.image, self.strips, self.out, self.notices = image, strips, out, notices
        self.pixels = np.empty(shape, dtype=level_dtype(image.bit_depth))
        self.comparisons: list[Comparison] = []
        self.clipped = 0
        self.done = InOrder(len(strips))

    def _strip(self, index: int) -> None:
        raise NotImplementedError

    def _levels(self, index: int, values: np.ndarray, exact: Exact) -> np.ndarray:
        """Strip ``index``'s values as output levels, put in place; the clipped ones
        counted (and told of after the last strip)."""
        level = self.image.levels(values, exact=exact)
        self._place(index, level.pixels, level.clipped)
        return level.pixels

    def _place(self, index: int, levels: np.ndarray, clipped: int) -> None:
        """Put strip ``index``'s levels in place and count its clipped values."""
        top, bottom = self.out[index]
        self.pixels[:, top:bottom] = levels
        self.clipped += clipped
        if index == len(self.strips) - 1 and self.clipped:
            top_level = self.image.max_value
            self.notices.append(f"{self.clipped} values outside 0..{top_level} were clipped")

    def rows(self) -> Rows:
        """The levels as strips, each handed on as soon as it is done."""

        def strips() -> Iterator[np.ndarray]:
            for index, (top, bottom) in enumerate(self.out):
                self.done.through(index, self._strip)
                yield self.pixels[:, top:bottom]

        return Rows(self.pixels.shape, self.pixels.dtype.type, strips)

    def checks(self) -> list[Check]:
        """Every strip done, then the figures of the comparisons."""
        self.done.all(self._strip)
        return [comparison.check() for comparison in self.comparisons]


def held_rows(values: np.ndarray, minus: np.ndarray | None = None) -> Rows:
    """A held ``(C, H, W)`` map as strips of rows; with ``minus``, the difference of the
    two in float64 (as :attr:`~cnnfilters.ops.CommuteResult.difference`)."""
    channels, height, width = values.shape
    dtype = values.dtype if minus is None else np.dtype(np.float64)
    step = rows_per_strip(channels * width * dtype.itemsize)

    def strips() -> Iterator[np.ndarray]:
        for first in range(0, height, step):
            strip = values[:, first : first + step]
            if minus is None:
                yield strip
            else:
                yield strip.astype(np.float64) - minus[:, first : first + step].astype(np.float64)

    return Rows(values.shape, dtype.type, strips)
