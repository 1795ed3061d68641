"""What a person sees: one-line messages on stderr, the diff table, progress, summaries.

Rich is imported inside the functions that draw, so that a run which prints
no table never loads it. Every line on stderr goes through
:func:`write_stderr`, which keeps a message on one line whatever the file
names in it hold.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from .errors import STANDARD_OUTPUT, ReaderGone

if TYPE_CHECKING:
    pass

__all__ = [
    "Progress",
    "StandardOutput",
    "error",
    "notice",
    "render_demo",
    "render_kernels",
    "write_stderr",
]

# Control characters (newline, ESC, ...) in a file name would split the one
# error line or drive the terminal: they are shown escaped.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def write_stderr(line: str) -> None:
    """One line on stderr that survives any file name (bytes that are not UTF-8 included)."""
    data = (line.rstrip("\n").translate(_CONTROL) + "\n").encode("utf-8", "backslashreplace")
    stream = getattr(sys.stderr, "buffer", None)
    if stream is not None:
        stream.write(data)
        stream.flush()
    else:
        sys.stderr.write(data.decode("utf-8"))


def error(message: str) -> None:
    """``cnnfilters: error: MESSAGE`` on stderr."""
    write_stderr(f"cnnfilters: error: {message}")


def notice(message: str) -> None:
    """``cnnfilters: notice: MESSAGE`` on stderr."""
    write_stderr(f"cnnfilters: notice: {message}")


def _format_number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


PIPED_WIDTH = 100  # the width of a table written to a pipe or a file, without COLUMNS


def table_width() -> int | None:
    """The table's width: None for a terminal (Rich asks it), else ``COLUMNS`` or 100."""
    if sys.stdout.isatty():
        return None
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return PIPED_WIDTH
    return columns if columns >= 40 else PIPED_WIDTH


def _console(**options: Any) -> Any:
    """A Rich console on stdout that leaves a closed pipe (``| head``) to the caller.

    Rich's own answer to a broken pipe is ``SystemExit(1)``, "a check failed"
    for cnnfilters; the command line treats a reader that went away as done.
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise ReaderGone

    return _Console(**options)


class StandardOutput:
    """Standard output for the run: an OSError in writing it names it, so that it is
    told from an error of another file (a pipe whose reader left is not an error of
    the run; any other broken pipe is)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, data: Any) -> int:
        try:
            return self._stream.write(data)
        except BrokenPipeError:
            raise ReaderGone from None
        except OSError as exc:
            exc.filename = exc.filename or STANDARD_OUTPUT
            raise

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise ReaderGone from None
        except OSError as exc:
            exc.filename = exc.filename or STANDARD_OUTPUT
            raise

    @property
    def buffer(self) -> Any:
        return StandardOutput(self._stream.buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _shown(text: str) -> str:
    """Control characters of a file name escaped, so that they cannot drive the terminal."""
    return text.translate(_CONTROL)


class Progress:
    """A Rich progress bar on stderr, only when it is a terminal. The total is known
    once every folder has been read (a large tree is read as the run goes): until
    then the bar counts files without an end."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bar = None
        self._task = None
        self._started = time.perf_counter()

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("cnnfilters"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("files", total=None, rate="")
        return self

    def update(self, done: int, total: int | None) -> None:
        if self._bar is not None:
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            self._bar.update(
                self._task, completed=done, total=total, rate=f"{done / elapsed:.1f} files/s"
            )

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


class LossProgress:
    """A Rich progress bar of training steps with the current loss, on stderr, only
    when it is a terminal (a pipe or a log gets nothing)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None
        self._task = None
        self._shown = 0.0

    def __enter__(self) -> LossProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("learning"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("steps", total=self.total, loss="")
        return self

    def update(self, step: int, loss: float) -> None:
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._shown >= 0.1 or step == self.total:  # Rich redraws 10 times a second
            self._shown = now
            self._bar.update(self._task, completed=step, loss=f"{loss:.3e}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def render_learned(learned: Any, label: str) -> None:
    """The learned layer beside the construction's (or the least-squares one)."""
    from rich.table import Table

    console = _console(highlight=False)
    training = learned.training
    console.print(
        f"[bold]learn {label}[/]: {training.optimizer}, lr {training.lr:.4g}"
        + (f", momentum {training.momentum:.4g}" if training.momentum is not None else "")
        + f"; {training.steps} steps in {training.seconds:.2f} s ({training.stopped}), "
        f"loss {training.loss:.3e}"
    )
    beside = (
        learned.truth if learned.truth is not None else (learned.lstsq_weight, learned.lstsq_bias)
    )
    other = "construction" if learned.truth is not None else "least squares"
    layout = Table.grid(padding=(0, 1))
    layout.add_column()
    layout.add_column()
    for o in range(learned.weight.shape[0]):
        for c in range(learned.weight.shape[1]):
            panels = []
            for title, weight, bias in (
                (f"learned w[{o}, {c}]", learned.weight, learned.bias),
                (f"{other} w[{o}, {c}]", beside[0], beside[1]),
            ):
                subtitle = f"bias {bias[o]:.4g}" if c == 0 else None
                panels.append(_matrix_panel(weight[o, c], title, "{:.6f}", subtitle))
            layout.add_row(*panels)
    console.print(layout)


def render_demo(summary: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console(highlight=False, width=table_width())
    table = Table(
        title="cnnfilters demo: every construction on the bundled samples", title_justify="left"
    )
    for column in ("command", "options", "inputs", "checks passed", "largest difference"):
        table.add_column(column)
    for command in summary["commands"]:
        table.add_row(
            command["command"],
            escape(command["options"]),
            str(command["inputs"]),
            f"{command['checks_passed']} / {command['checks']}",
            escape(command["largest_difference"]),
        )
    console.print(table)
    console.print(
        f"Outputs and JSON reports are in {escape(summary['out_dir'])}; "
        f"the visual report is {escape(summary['html'])}"
    )


def render_kernels(chosen: list[Any]) -> None:
    """Each construction's weight tensor as aligned matrices, one panel per ``w[o, c]``."""
    from rich.columns import Columns

    console = _console(highlight=False)
    for construction in chosen:
        weight = construction.weight
        console.print(
            f"[bold]{construction.name}[/]: {construction.description}\n"
            f"  weight {tuple(weight.shape)} (C_out, C_in/groups, kh, kw), "
            f"stride {construction.stride}, padding {construction.padding}, "
            f"groups {construction.groups}"
        )
        panels = [
            _matrix_panel(weight[o, c], f"w[{o}, {c}]", "{:.6g}")
            for o in range(weight.shape[0])
            for c in range(weight.shape[1])
        ]
        console.print(Columns(panels))
        for note in construction.notes:
            console.print(f"  [dim]{note}[/]")


def _matrix_panel(matrix: Any, title: str, fmt: str, subtitle: str | None = None) -> Any:
    """One kernel as a panel of right-aligned numbers."""
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    for _ in range(matrix.shape[1]):
        grid.add_column(justify="right")
    for row in matrix:
        grid.add_row(*(fmt.format(v) for v in row))
    return Panel(grid, title=title, subtitle=subtitle, expand=False)
