"""What a person sees: one-line messages on stderr, the diff table, progress, summaries.

Rich is imported inside the functions that draw, so that a run which prints
no table never loads it. Every line on stderr goes through
:func:`write_stderr`, which keeps a message on one line whatever the file
names in it hold.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import STANDARD_OUTPUT, ReaderGone

if TYPE_CHECKING:
    from .report import RunReport

__all__ = [
    "Progress",
    "StandardOutput",
    "error",
    "notice",
    "render_demo",
    "render_kernels",
    "render_table",
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


# The table shows at most this many inputs, failures first: a Rich table's time
# grows with its rows, and a batch's table must not take longer than its work.
# The summary counts them all.
TABLE_ROWS = 100


def render_table(report: RunReport, *, written: int) -> None:
    """The diff report as a Rich table on stdout, the notices and windows below it."""
    console = _console(highlight=False, width=None if sys.stdout.isatty() else 140)
    failures_first = sorted(
        range(len(report.inputs)), key=lambda index: (report.inputs[index].passed, index)
    )
    shown = [report.inputs[index] for index in sorted(failures_first[:TABLE_ROWS])]
    console.print(_table(report, shown))
    for item in shown:
        for line in _footnotes(item):
            console.print(f"[dim]{line}[/]")
    failed = sum(1 for item in report.inputs if not item.passed) + report.left_out_failed
    total = len(report.inputs) + report.left_out
    if total > len(shown):
        hidden_failed = failed - sum(1 for item in shown if not item.passed)
        note = (
            f"{total - len(shown)} more input(s) not shown here, {hidden_failed} of them "
            "failed or errored (failures are shown first; --report or --jsonl have "
            "every one)"
        )
        console.print(f"[dim]{note}[/]")
    console.print(
        f"{total} input(s), {total - failed} passed, "
        f"{failed} failed or errored; {written} file(s) written"
    )


def _table(report: RunReport, inputs: list[Any]) -> Any:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"cnnfilters {report.command}: engine vs independent references",
        box=box.SIMPLE_HEAVY,
        title_justify="left",
    )
    for column, justify in [
        ("input", "left"),
        ("check", "left"),
        ("reference", "left"),
        ("max abs", "right"),
        ("mean abs", "right"),
        ("RMSE", "right"),
        ("PSNR dB", "right"),
        ("differing / total", "right"),
        ("tol", "right"),
        ("result", "left"),
    ]:
        table.add_column(column, justify=justify, overflow="fold")
    for item in inputs:
        name = escape(_shown(Path(item.input).name))
        if item.error:
            table.add_row(
                name, "[red]error[/]", escape(_shown(item.error)), *[""] * 6, "[red]ERROR[/]"
            )
            continue
        for check in item.checks:
            label = escape(check.name)
            if "monotonicity" in check.extra:
                label += f" [dim]({check.extra['monotonicity']})[/]"
            psnr = "identical" if check.identical else _format_number(check.psnr_db, 5)
            table.add_row(
                name,
                label,
                escape(check.reference),
                _format_number(check.max_abs),
                _format_number(check.mean_abs),
                _format_number(check.rmse),
                psnr,
                f"{check.differing} / {check.total}",
                _format_number(check.tolerance) if check.tolerance != float("inf") else "-",
                _verdict(check),
            )
            name = ""
    return table


def _verdict(check: Any) -> str:
    verdict = "[green]pass[/]" if check.passed else "[bold red]FAIL[/]"
    if "commutes" not in check.extra:
        return verdict
    if check.extra["commutes"]:
        return verdict + " commutes"
    if check.extra.get("windows_differing", 1):
        return verdict + " [yellow]differs[/]"
    return verdict + " [yellow]overflowed[/]"


def _footnotes(item: Any) -> list[str]:
    """The lines under the table for one input: its notices, then per check the min
    identity, the window where an activation fails, and overflowed windows."""
    from rich.markup import escape

    name = escape(_shown(Path(item.input).name))
    lines = [f"{name}: {escape(_shown(notice))}" for notice in item.notices]
    for check in item.checks:
        extra, label = check.extra, escape(check.name)
        if extra.get("min_identity_holds") is not None:
            holds = "holds" if extra["min_identity_holds"] else "[red]FAILS[/]"
            lines.append(
                f"{label}: nonincreasing, so sigma(max) = min(sigma) on every window: {holds}"
            )
        lines.extend(_window_lines(label, extra))
    return lines


def _window_lines(label: str, extra: dict) -> list[str]:
    """The window where an activation fails (the image's, or one of our own), and the
    windows that overflowed."""
    from rich.markup import escape

    lines = []
    example = extra.get("counterexample")
    where = ""
    if example:
        where = (
            f"first differing window at channel {example['channel']}, rows/cols from "
            f"{example['top_left']}"
        )
    elif extra.get("synthetic_counterexample"):  # no window of the image breaks it
        example = extra["synthetic_counterexample"]
        where = "no window of the image differs; a window that does"
    if example:
        lines.append(
            f"{label}: {where}: {escape(str(example['values']))} -> sigma(max) = "
            f"{example['act_of_max']:.6g}, max(sigma) = "
            f"{example['max_of_act']:.6g}"
        )
    if extra.get("windows_overflowed"):
        lines.append(
            f"{label}: {extra['windows_overflowed']} window(s) overflowed to "
            "infinity: neither equal nor a counterexample"
        )
    return lines


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

    console = _console(highlight=False, width=None if sys.stdout.isatty() else 120)
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
