"""The results table every command prints: read at a glance, at any width.

The compact table (the default) has six columns: the input, the check, its
reference, the largest difference, how many values differ of how many, and
the verdict. It never splits a word or a number across lines: each column
is at least as wide as its longest word, numbers do not wrap, and a long
file name is shortened in its middle (the report and ``--wide`` have it
whole). ``--wide`` adds the mean difference, RMSE, PSNR and the tolerance.

The width is the terminal's; written to a pipe or a file, ``COLUMNS`` if it
is set, else 100. A note that several inputs share is printed once, with
their count. Rich is imported only when the table is drawn.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .render import _console, _format_number, _shown, table_width

if TYPE_CHECKING:
    from .report import Check, InputReport, RunReport

__all__ = ["TABLE_ROWS", "render_table", "table_width"]

# The table shows at most this many inputs, failures first: a Rich table's time
# grows with its rows, and a batch's table must not take longer than its work.
# The summary counts them all.
TABLE_ROWS = 100
NAME_WIDTH = 18  # a longer file name is shortened in its middle in the compact table
NAMED_NOTES = 3  # a note shared by more inputs gives their count, not their names


def render_table(report: RunReport, *, written: int, wide: bool = False) -> None:
    """The results on stdout: the table, the notes under it, a summary line.

    Inputs that only errored (said on stderr already) have no rows: a run whose
    every input failed to be read prints its summary line alone."""
    failures_first = sorted(
        range(len(report.inputs)), key=lambda index: (report.inputs[index].passed, index)
    )
    shown = [report.inputs[index] for index in sorted(failures_first[:TABLE_ROWS])]
    width = table_width()
    console = _console(highlight=False, width=width)
    if any(item.checks for item in shown):
        # Two spaces between columns where they fit, else one.
        table, needed = _table(report, shown, wide=wide, gap=2)
        if needed > console.width:
            table, needed = _table(report, shown, wide=wide, gap=1)
        # Narrower than its words, the table takes the width it needs: Rich would drop
        # whole columns rather than split a word. The notes wrap at the width.
        wider = _console(highlight=False, width=needed) if console.width < needed else console
        wider.print(table)
        for line in _notes(shown):
            console.print(f"[dim]{line}[/]")
    failed = sum(1 for item in report.inputs if not item.passed) + report.left_out_failed
    total = len(report.inputs) + report.left_out
    if total > len(shown):
        hidden_failed = failed - sum(1 for item in shown if not item.passed)
        console.print(
            f"[dim]{total - len(shown)} more input(s) not shown here, {hidden_failed} of them "
            "failed or errored (failures are shown first; --report or --jsonl have "
            "every one)[/]"
        )
    console.print(
        f"{total} input(s), {total - failed} passed, "
        f"{failed} failed or errored; {written} file(s) written"
    )


_COMPACT = [
    ("input", "left", False),
    ("check", "left", False),
    ("reference", "left", False),
    ("max diff", "right", True),
    ("differing / total", "right", True),
    ("result", "left", True),
]
_WIDE = [
    ("input", "left", False),
    ("check", "left", False),
    ("reference", "left", False),
    ("max abs", "right", True),
    ("mean abs", "right", True),
    ("RMSE", "right", True),
    ("PSNR dB", "right", True),
    ("differing / total", "right", True),
    ("tol", "right", True),
    ("result", "left", True),
]


def _table(
    report: RunReport, inputs: list[InputReport], *, wide: bool, gap: int
) -> tuple[Any, int]:
    """The table, and the width its longest words need."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    rows = [row for item in inputs for row in _rows(item, wide=wide)]
    columns = _WIDE if wide else _COMPACT
    table = Table(
        title=f"cnnfilters {report.command}: engine vs independent references",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        padding=(0, gap - 1, 0, 0),  # the box puts one space between columns
        pad_edge=False,
    )
    for index, (header, justify, numeric) in enumerate(columns):
        cells = [header, *(_plain(row[index]) for row in rows)]
        if numeric:  # one line, the header too
            longest = max(len(cell) for cell in cells)
        else:
            longest = max(len(word) for cell in cells for word in cell.split() or [""])
        table.add_column(
            header,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=numeric,
            min_width=longest,
            overflow="fold" if not numeric else "ellipsis",
        )
    for row in rows:
        table.add_row(*(escape(text) if plain else text for text, plain in row))
    from rich.measure import Measurement

    wide_console = _console(width=10_000)
    return table, Measurement.get(wide_console, wide_console.options, table).minimum


def _plain(cell: tuple[str, bool]) -> str:
    """A cell's text as shown: markup taken away."""
    text, plain = cell
    return text if plain else re.sub(r"\[/?[a-z ]*\]", "", text)


def _rows(item: InputReport, *, wide: bool) -> list[list[tuple[str, bool]]]:
    """One row a check, as (text, plain) cells: plain text is escaped, markup is not."""
    name = _shown(Path(item.input).name)
    if not wide and len(name) > NAME_WIDTH:
        half = (NAME_WIDTH - 1) // 2
        name = name[:half] + "\u2026" + name[-(NAME_WIDTH - 1 - half) :]
    rows = []
    for check in item.checks:
        cells = [(name, True), (check.name, True), (check.reference, True)]
        cells.append((_format_number(check.max_abs), True))
        if wide:
            psnr = "identical" if check.identical else _format_number(check.psnr_db, 5)
            cells += [(_format_number(check.mean_abs), True), (_format_number(check.rmse), True)]
            cells.append((psnr, True))
        cells.append((_count(check.differing, check.total, exact=wide), True))
        if wide:
            tolerance = check.tolerance
            cells.append((_format_number(tolerance) if tolerance != float("inf") else "-", True))
        cells.append((_verdict(check), False))
        rows.append(cells)
        name = ""
    return rows


def _count(differing: int, total: int, *, exact: bool) -> str:
    """``differing / total``; counts of a million or more in millions in the compact
    table (a nonzero count never shows as 0)."""

    def short(n: int) -> str:
        if exact or n < 1_000_000:
            return str(n)
        return f"{n / 1e6:.3g}M"

    return f"{short(differing)} / {short(total)}"


def _verdict(check: Check) -> str:
    """pass or FAIL; for a commutation: commutes, or differs (allowed when the
    activation is not nondecreasing), or FAIL."""
    extra = check.extra
    if "commutes" not in extra:
        return "[green]pass[/]" if check.passed else "[bold red]FAIL[/]"
    if not check.passed:
        return "[bold red]FAIL[/]"
    if extra["commutes"]:
        return "[green]commutes[/]"
    if extra.get("windows_differing", 1):
        return "[yellow]differs[/]"
    return "[yellow]overflowed[/]"


def _notes(inputs: list[InputReport]) -> list[str]:
    """The lines under the table: each input's notices, then per check what its row
    cannot say. A note several inputs share is one line: with their names, or with
    their count when there are more than three."""
    from rich.markup import escape

    order: list[str] = []
    names: dict[str, list[str]] = {}
    for item in inputs:
        for line in [*item.notices, *(line for check in item.checks for line in _explained(check))]:
            if line not in names:
                order.append(line)
                names[line] = []
            names[line].append(_shown(Path(item.input).name))
    lines = []
    for line in order:
        text = escape(_shown(line))
        shared = list(dict.fromkeys(names[line]))
        if len(shared) <= NAMED_NOTES:
            lines.append(f"{escape(', '.join(shared))}: {text}")
        else:
            lines.append(f"{text} ({len(shared)} inputs)")
    return lines


def _explained(check: Check) -> list[str]:
    """What a commutation row cannot say: how the activation is ordered, the min
    identity of a nonincreasing one, the first differing window, overflows."""
    extra, label = check.extra, check.name
    lines = []
    order = extra.get("monotonicity")
    if order == "neither":
        order = "neither nondecreasing nor nonincreasing"
    if order is not None:
        if extra.get("min_identity_holds") is not None:
            holds = "holds" if extra["min_identity_holds"] else "FAILS"
            lines.append(
                f"{label} is {order}: it need not commute with max pooling, and "
                f"sigma(max) = min(sigma) on every window instead: {holds}"
            )
        elif order != "nondecreasing":
            lines.append(f"{label} is {order}: it need not commute with max pooling")
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
            f"{label}: {where}: {example['values']} -> sigma(max) = "
            f"{example['act_of_max']:.6g}, max(sigma) = {example['max_of_act']:.6g}"
        )
    if extra.get("windows_overflowed"):
        lines.append(
            f"{label}: {extra['windows_overflowed']} window(s) overflowed to "
            "infinity: neither equal nor a counterexample"
        )
    return lines
