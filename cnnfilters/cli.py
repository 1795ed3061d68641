"""The ``cnnfilters`` command line: parses options, calls the library, renders.

Each image command hands its inputs and options to
:func:`cnnfilters.pipeline.process` and renders the :class:`RunReport` it gets
back (a Rich table, or JSON). numpy, Pillow and the library are imported
inside the commands, so that ``--help`` and ``--version`` start fast.
"""

from __future__ import annotations

import copy
import functools
import gc
import inspect
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ._version import __version__
from .errors import (
    EXIT_CHECK_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_OK,
    EXIT_TERMINATED,
    CnnFiltersError,
)

if TYPE_CHECKING:
    from .images import ReadOptions
    from .report import RunReport

EXIT_CODES_HELP = (
    "Exit codes: 0 all done and every check passed; 1 a check failed; 2 usage error; "
    "3 an input could not be read or an output could not be written; 130 interrupted; "
    "143 terminated; 70 an internal error."
)

app = typer.Typer(
    name="cnnfilters",
    help="Classic image filters built as convolution layers, each checked against an "
    "independent reference on every image.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: Rich formatting would cost ~0.2 s of imports on every --help.
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Padding(str, Enum):
    zeros = "zeros"
    replicate = "replicate"
    reflect = "reflect"
    circular = "circular"


class GradientOn(str, Enum):
    gray = "gray"
    rgb = "rgb"


class Edge(str, Enum):
    drop = "drop"
    partial = "partial"


class AlphaPolicy(str, Enum):
    keep = "keep"
    drop = "drop"
    flatten = "flatten"


class ExportFormat(str, Enum):
    npz = "npz"
    json = "json"


class OutFormat(str, Enum):
    png = "png"
    jpeg = "jpeg"
    tiff = "tiff"
    webp = "webp"


class CommuteOn(str, Enum):
    gradient = "gradient"
    centered = "centered"
    raw = "raw"


# Options shared by every image command.
Inputs = Annotated[
    list[Path],
    typer.Argument(help="Image files (PNG, JPEG, TIFF, GIF, BMP, WebP).", show_default=False),
]
OutputOpt = Annotated[
    Optional[Path],  # noqa: UP045 (Typer reads the annotation at run time on Python 3.10)
    typer.Option(
        "-o",
        "--output",
        help="One input only: the output file, or the stem for commands that write several.",
    ),
]
OutDirOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--out-dir", help="Write outputs to this folder (created if missing)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
RawOpt = Annotated[
    bool, typer.Option("--raw", help="Also write each float result as .npy (exact values).")
]
ReportOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--report", help="Write the JSON report to this file."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the JSON report on stdout instead of the table.")
]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
MaxPixelsOpt = Annotated[
    int,
    typer.Option("--max-pixels", min=1, help="Refuse images with more pixels than this."),
]
HtmlOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--html", help="Write a self-contained visual report (HTML) to this file."),
]
RecursiveOpt = Annotated[
    bool, typer.Option("-r", "--recursive", help="Descend into the folders given as inputs.")
]
NameOpt = Annotated[
    str,
    typer.Option("--name", help="Output file names: {stem}, {output}, {ext} (the input's)."),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="List what would be written; do nothing.")
]
SkipExistingOpt = Annotated[
    bool, typer.Option("--skip-existing", help="Skip inputs whose outputs all exist (reruns).")
]
JobsOpt = Annotated[
    int, typer.Option("-j", "--jobs", min=0, help="Worker processes (0: one per core).")
]
FailFastOpt = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failure.")]
SchedulerOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--scheduler", help="Run on a Dask cluster: tcp://HOST:PORT (extra [dask])."),
]
FormatOpt = Annotated[
    OutFormat, typer.Option("--format", help="Image format for -o - (standard output).")
]
JsonlOpt = Annotated[
    bool, typer.Option("--jsonl", help="Print one JSON line per input as it finishes.")
]
AlphaOpt = Annotated[
    AlphaPolicy,
    typer.Option(
        "--alpha",
        help="keep: pass alpha through (pooled by avgpool); drop: ignore it; "
        "flatten: composite on --background first.",
    ),
]
BackgroundOpt = Annotated[
    str,
    typer.Option(
        "--background", help="Colour for --alpha flatten: white, black, #rrggbb or R,G,B."
    ),
]
NoOrientOpt = Annotated[
    bool,
    typer.Option("--no-auto-orient", help="Keep the stored pixels; ignore the EXIF orientation."),
]
AllFramesOpt = Annotated[
    bool,
    typer.Option("--all-frames", help="Every frame of a multi-frame file (default: the first)."),
]
TruncatedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-truncated",
        help="Read truncated or damaged files anyway, filling what is missing (with a notice).",
    ),
]
CompressOpt = Annotated[
    int,
    typer.Option(
        "--compress-level", min=0, max=9, help="PNG compression, 0-9 (1: fast, 9: smallest)."
    ),
]


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C so that temporary files are removed on the way out."""


def _write_stderr(line: str) -> None:
    """One line on stderr that survives any file name (bytes that are not UTF-8 included)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8", "backslashreplace")
    stream = getattr(sys.stderr, "buffer", None)
    if stream is not None:
        stream.write(data)
        stream.flush()
    else:
        sys.stderr.write(data.decode("utf-8"))


def _error(message: str) -> None:
    _write_stderr(f"cnnfilters: error: {message}")


def _reports_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn a library error into one line on stderr and its exit code (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CnnFiltersError as exc:
            _error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            # Outputs are atomic: what was finished stays whole, nothing partial is left.
            _error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Terminated:
            _error("terminated")
            raise typer.Exit(EXIT_TERMINATED) from None

    return wrapper


def _format_number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def _render(report: RunReport, *, written: int) -> None:
    """The diff report as a Rich table on stdout."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    table = Table(
        title=f"cnnfilters {report.command}: engine vs independent references",
        box=box.SIMPLE_HEAVY,
        title_justify="left",
    )
    for column, justify in [
        ("input", "left"), ("check", "left"), ("reference", "left"), ("max abs", "right"),
        ("mean abs", "right"), ("RMSE", "right"), ("PSNR dB", "right"),
        ("differing / total", "right"), ("tol", "right"), ("result", "left"),
    ]:  # fmt: skip
        table.add_column(column, justify=justify, overflow="fold")
    for item in report.inputs:
        name = escape(Path(item.input).name)
        if item.error:
            table.add_row(name, "[red]error[/]", escape(item.error), *[""] * 6, "[red]ERROR[/]")
            continue
        for check in item.checks:
            label = escape(check.name)
            if "monotonicity" in check.extra:
                label += f" [dim]({check.extra['monotonicity']})[/]"
            psnr = "identical" if check.identical else _format_number(check.psnr_db, 5)
            verdict = "[green]pass[/]" if check.passed else "[bold red]FAIL[/]"
            if "commutes" in check.extra:
                if check.extra["commutes"]:
                    verdict += " commutes"
                elif check.extra.get("windows_differing", 1):
                    verdict += " [yellow]differs[/]"
                else:
                    verdict += " [yellow]overflowed[/]"
            table.add_row(
                name, label, escape(check.reference), _format_number(check.max_abs),
                _format_number(check.mean_abs), _format_number(check.rmse), psnr,
                f"{check.differing} / {check.total}",
                _format_number(check.tolerance) if check.tolerance != float("inf") else "-",
                verdict,
            )  # fmt: skip
            name = ""
    console.print(table)
    for item in report.inputs:
        for notice in item.notices:
            console.print(f"[dim]{escape(Path(item.input).name)}: {escape(notice)}[/]")
        for check in item.checks:
            example = check.extra.get("synthetic_counterexample")
            if check.extra.get("min_identity_holds") is not None:
                holds = "holds" if check.extra["min_identity_holds"] else "[red]FAILS[/]"
                console.print(
                    f"[dim]{escape(check.name)}: nonincreasing, so sigma(max) = min(sigma) on "
                    f"every window: {holds}[/]"
                )
            if check.extra.get("counterexample"):
                example = check.extra["counterexample"]
                console.print(
                    f"[dim]{escape(check.name)}: first differing window at channel "
                    f"{example['channel']}, rows/cols from {example['top_left']}: "
                    f"{escape(str(example['values']))} -> sigma(max) = "
                    f"{example['act_of_max']:.6g}, max(sigma) = {example['max_of_act']:.6g}[/]"
                )
            elif example:  # no window of the image breaks it: one of our own does
                console.print(
                    f"[dim]{escape(check.name)}: no window of the image differs; a window that "
                    f"does: {escape(str(example['values']))} -> sigma(max) = "
                    f"{example['act_of_max']:.6g}, max(sigma) = {example['max_of_act']:.6g}[/]"
                )
            if check.extra.get("windows_overflowed"):
                console.print(
                    f"[dim]{escape(check.name)}: {check.extra['windows_overflowed']} window(s) "
                    "overflowed to infinity: neither equal nor a counterexample[/]"
                )
    failed = sum(1 for item in report.inputs if not item.passed)
    console.print(
        f"{len(report.inputs)} input(s), {len(report.inputs) - failed} passed, "
        f"{failed} failed or errored; {written} file(s) written"
    )


def _finish(
    report: RunReport,
    *,
    report_path: Path | None,
    as_json: bool,
    quiet: bool,
    errors_shown: bool = False,
) -> int:
    """Errors to stderr (unless shown as they came), the report to stdout and/or a file.

    Returns the exit code: the worst of the inputs'.
    """
    from .images import _atomic_write

    for item in report.inputs:
        if item.error and not errors_shown:
            _error(item.error)
    text = report.to_json()
    if report_path is not None:
        try:
            _atomic_write(report_path, lambda fh: fh.write(text.encode("utf-8") + b"\n"))
        except CnnFiltersError as exc:
            _error(str(exc))
            return EXIT_IO
    if as_json:
        sys.stdout.write(text + "\n")
    elif not quiet:
        _render(report, written=sum(len(item.outputs) for item in report.inputs))
    return report.exit_code


# The options every image command shares: (name, annotation, default). They
# reach the command as one Shared object (see _with_shared_options).
_SHARED_OPTIONS: list[tuple[str, Any, Any]] = [
    ("output", OutputOpt, None),
    ("out_dir", OutDirOpt, None),
    ("force", ForceOpt, False),
    ("raw", RawOpt, False),
    ("report", ReportOpt, None),
    ("html", HtmlOpt, None),
    ("json_", JsonOpt, False),
    ("quiet", QuietOpt, False),
    ("max_pixels", MaxPixelsOpt, 100_000_000),
    ("alpha", AlphaOpt, AlphaPolicy.keep),
    ("background", BackgroundOpt, "white"),
    ("no_auto_orient", NoOrientOpt, False),
    ("all_frames", AllFramesOpt, False),
    ("allow_truncated", TruncatedOpt, False),
    ("compress_level", CompressOpt, 1),
    ("recursive", RecursiveOpt, False),
    ("name", NameOpt, "{stem}.{output}.png"),
    ("dry_run", DryRunOpt, False),
    ("skip_existing", SkipExistingOpt, False),
    ("jobs", JobsOpt, 0),
    ("fail_fast", FailFastOpt, False),
    ("jsonl", JsonlOpt, False),
    ("scheduler", SchedulerOpt, None),
    ("out_format", FormatOpt, OutFormat.png),
]


@dataclass(frozen=True)
class Shared:
    """The shared options of an image command, as given on the command line."""

    output: Path | None = None
    out_dir: Path | None = None
    force: bool = False
    raw: bool = False
    report: Path | None = None
    html: Path | None = None
    json_: bool = False
    quiet: bool = False
    max_pixels: int = 100_000_000
    alpha: AlphaPolicy = AlphaPolicy.keep
    background: str = "white"
    no_auto_orient: bool = False
    all_frames: bool = False
    allow_truncated: bool = False
    compress_level: int = 1
    recursive: bool = False
    name: str = "{stem}.{output}.png"
    dry_run: bool = False
    skip_existing: bool = False
    jobs: int = 0
    fail_fast: bool = False
    jsonl: bool = False
    scheduler: str | None = None
    out_format: OutFormat = OutFormat.png

    def read_options(self) -> ReadOptions:
        from .images import ReadOptions, parse_colour

        return ReadOptions(
            max_pixels=self.max_pixels,
            auto_orient=not self.no_auto_orient,
            alpha=self.alpha.value,
            background=parse_colour(self.background),
            allow_truncated=self.allow_truncated,
            all_frames=self.all_frames,
        )


SHARED = Shared()


def _with_shared_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` every shared option; it receives them as ``shared``.

    The options are added to the signature Typer reads, so each command
    declares only its own.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "shared"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                          annotation=annotation)
        for name, annotation, default in _SHARED_OPTIONS
    ]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        values = {name: kwargs.pop(name) for name, _, _ in _SHARED_OPTIONS if name in kwargs}
        return command(*args, **kwargs, shared=Shared(**values))

    wrapper.__signature__ = signature.replace(parameters=own + added)
    hints = {p.name: p.annotation for p in own}
    hints.update({name: annotation for name, annotation, _ in _SHARED_OPTIONS})
    wrapper.__annotations__ = {**hints, "return": None}
    del wrapper.__wrapped__  # Typer must read the new signature, not the command's
    return wrapper


def _run_image_command(command: str, inputs: list[Path], options: dict, shared: Shared) -> None:
    """Run an image command over its inputs with the shared options, then exit."""
    import tempfile

    batch = {"recursive": shared.recursive, "template": shared.name, "dry_run": shared.dry_run,
             "skip_existing": shared.skip_existing, "jobs": shared.jobs,
             "fail_fast": shared.fail_fast, "jsonl": shared.jsonl, "scheduler": shared.scheduler,
             "format": shared.out_format.value}  # fmt: skip
    # Standard input and output go through a scratch folder, removed however we leave.
    with tempfile.TemporaryDirectory(prefix="cnnfilters-") as scratch:
        _run_batch_command(
            command, inputs, options, output=shared.output, out_dir=shared.out_dir,
            force=shared.force, raw=shared.raw, report_path=shared.report,
            as_json=shared.json_, quiet=shared.quiet, read=shared.read_options(),
            compress_level=shared.compress_level, html_path=shared.html, batch=batch,
            scratch=Path(scratch),
        )  # fmt: skip


def _run_batch_command(
    command: str,
    inputs: list[Path],
    options: dict,
    *,
    output: Path | None,
    out_dir: Path | None,
    force: bool,
    raw: bool,
    report_path: Path | None,
    as_json: bool,
    quiet: bool,
    read: ReadOptions,
    compress_level: int,
    html_path: Path | None,
    batch: dict,
    scratch: Path,
) -> None:
    from .batch import BatchOptions, expand_inputs, plan, run_batch, stdin_source

    to_stdout = output is not None and os.fsdecode(output) == "-"
    if to_stdout:
        from .pipeline import COMMANDS

        if len(COMMANDS[command].names(options)) != 1:
            raise CnnFiltersError(f"-o - writes one image; {command} writes several (use -o STEM)")
        if as_json or batch.get("jsonl") or raw:
            raise CnnFiltersError("-o - puts the image on standard output: no --json/--jsonl/--raw")
    sources = []
    for spec in inputs:
        if os.fsdecode(spec) == "-":
            if sys.stdin is None or sys.stdin.isatty():
                raise CnnFiltersError("-: no image on standard input (pipe one in)")
            sources.append(stdin_source(sys.stdin.buffer.read(), scratch))
        else:
            sources.extend(expand_inputs([spec], recursive=batch.get("recursive", False)))
    asked_quiet = quiet
    if to_stdout:
        output = scratch / "stdout.png"
        quiet = True
    if not sources:
        raise CnnFiltersError("no input files (the folders given hold no images)")
    if output is not None and len(sources) > 1:
        raise CnnFiltersError(f"-o/--output takes one input, got {len(sources)}; use --out-dir")
    if output is not None and out_dir is not None:
        raise CnnFiltersError("use either -o/--output or --out-dir, not both")
    jobs = batch.get("jobs", 0) or os.cpu_count() or 1
    settings = BatchOptions(
        output=output, out_dir=out_dir, template=batch.get("template", "{stem}.{output}.png"),
        force=force, raw=raw, skip_existing=batch.get("skip_existing", False), read=read,
        compress_level=compress_level, jobs=min(jobs, len(sources)),
        fail_fast=batch.get("fail_fast", False), scheduler=batch.get("scheduler"),
        maps=html_path is not None,
    )  # fmt: skip
    if batch.get("dry_run"):
        for source, targets in plan(command, sources, options, settings).items():
            for target in targets:
                sys.stdout.write(f"{os.fsdecode(source)} -> {os.fsdecode(target)}\n")
        raise typer.Exit(EXIT_OK)
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CnnFiltersError(f"{out_dir}: cannot create the folder ({exc.strerror})") from None
    _tune_malloc()
    jsonl = batch.get("jsonl", False)
    progress = _Progress(len(sources), enabled=not quiet and sys.stderr.isatty())

    def on_input(item) -> None:
        if item.error:
            _error(item.error)
        elif item.info.get("damaged") and not quiet:
            _write_stderr(f"cnnfilters: notice: {item.input}: damaged data read anyway, "
                          f"missing pixels were filled ({item.info['damaged']})")  # fmt: skip
        if jsonl:
            from .report import to_json

            sys.stdout.write(to_json(item.to_dict()) + "\n")
            sys.stdout.flush()

    with progress:
        report, summary = run_batch(command, sources, options, settings, on_input=on_input,
                                    on_progress=progress.update)  # fmt: skip
    code = _finish(report, report_path=report_path, as_json=as_json,
                   quiet=quiet or jsonl, errors_shown=True)  # fmt: skip
    if len(sources) > 1 and not quiet and sys.stderr.isatty():
        _write_stderr(f"cnnfilters: {summary.line()}")
    if html_path is not None:
        from .kernels import kernels_for

        code = max(code, _write_html(html_path, [(report, kernels_for(command, options))],
                                     title=f"cnnfilters {command}"))  # fmt: skip
    if summary.interrupted:
        _error(f"interrupted; {summary.not_done} input(s) not done")
        code = EXIT_INTERRUPTED
    if to_stdout and output.exists():
        _image_to_stdout(output, batch.get("format", "png"), quiet=asked_quiet)
    raise typer.Exit(code)


def _image_to_stdout(path: Path, fmt: str, *, quiet: bool) -> None:
    """The finished image on standard output, converted when another format is asked for."""
    from .images import png_to_format

    data, notes = png_to_format(path, fmt)
    if not quiet:
        for note in notes:
            _write_stderr(f"cnnfilters: notice: {note}")
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class _Progress:
    """A Rich progress bar on stderr, only when it is a terminal."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and total > 1
        self._bar = None
        self._task = None
        self._started = time.perf_counter()

    def __enter__(self) -> _Progress:
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
                TextColumn("cnnfilters"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self._bar.__enter__()
            self._task = self._bar.add_task("files", total=self.total, rate="")
        return self

    def update(self, done: int, total: int) -> None:
        if self._bar is not None:
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            self._bar.update(self._task, completed=done, rate=f"{done / elapsed:.1f} files/s")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _command_line() -> str:
    import shlex

    argv = _ARGV if _ARGV is not None else sys.argv[1:]
    return shlex.join(["cnnfilters", *argv])


def _write_html(path: Path, runs: list, *, title: str) -> int:
    """Write the visual report; an error writing it is exit 3, like any output."""
    from .html import write_page

    try:
        write_page(path, runs, title=title, command_line=_command_line())
    except CnnFiltersError as exc:
        _error(str(exc))
        return exc.exit_code
    return EXIT_OK


@app.command(epilog=EXIT_CODES_HELP)
@_reports_errors
@_with_shared_options
def grayscale(
    inputs: Inputs,
    weights: Annotated[
        str, typer.Option("--weights", help="bt601 (0.299, 0.587, 0.114), bt709, or R,G,B.")
    ] = "bt601",
    shared: Shared = SHARED,
) -> None:
    """Grayscale as a 1x1 convolution. Writes {stem}.grayscale.png.

    Checked against the luma formula in float64 and, for bt601 on 8-bit
    input, Pillow's convert("L") (within 1 level).
    """
    from .kernels import parse_grayscale_weights

    parse_grayscale_weights(weights)
    _run_image_command("grayscale", inputs, {"weights": weights}, shared)


@app.command(epilog=EXIT_CODES_HELP)
@_reports_errors
@_with_shared_options
def gradient(
    inputs: Inputs,
    padding: Annotated[
        Padding, typer.Option("--padding", help="How the border is padded.")
    ] = Padding.zeros,
    on: Annotated[
        GradientOn, typer.Option("--on", help="The grayscale image, or each RGB channel.")
    ] = GradientOn.gray,
    shared: Shared = SHARED,
) -> None:
    """Vertical and horizontal forward differences as two 3x3 conv filters.

    Writes {stem}.dy.png, {stem}.dx.png (0 at mid-gray 128) and
    {stem}.gradient.png (the magnitude). Checked against slicing differences:
    they must agree exactly.
    """
    _run_image_command("gradient", inputs, {"padding": padding.value, "on": on.value}, shared)


@app.command(epilog=EXIT_CODES_HELP)
@_reports_errors
@_with_shared_options
def avgpool(
    inputs: Inputs,
    kernel_size: Annotated[
        int, typer.Option("-k", "--kernel-size", min=1, help="Window size k (stride k).")
    ] = 2,
    edge: Annotated[
        Edge,
        typer.Option(
            "--edge", help="drop: the conv's own rule; partial: average partial blocks (Pillow)."
        ),
    ] = Edge.drop,
    shared: Shared = SHARED,
) -> None:
    """k x k average pooling as a stride-k convolution. Writes {stem}.avgpool{k}.png.

    Checked against reshape-mean (float) and Pillow's Image.reduce(k)
    (within 1 level).
    """
    _run_image_command("avgpool", inputs, {"kernel_size": kernel_size, "edge": edge.value}, shared)


@app.command(epilog=EXIT_CODES_HELP)
@_reports_errors
@_with_shared_options
def commute(
    inputs: Inputs,
    activation: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "-a", "--activation", help="An activation name (repeatable), or 'all' (the default)."
        ),
    ] = None,
    kernel_size: Annotated[
        int, typer.Option("-k", "--kernel-size", min=1, help="Max-pooling window.")
    ] = 2,
    stride: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--stride", min=1, help="Max-pooling stride (default: the window)."),
    ] = None,
    on: Annotated[
        CommuteOn,
        typer.Option(
            "--on",
            help="gradient: dy, dx of the gray image (signed); centered: pixels scaled to "
            "[-1, 1]; raw: pixels.",
        ),
    ] = CommuteOn.gradient,
    shared: Shared = SHARED,
) -> None:
    """Does an activation commute with max pooling? sigma(maxpool(x)) vs maxpool(sigma(x)).

    A nondecreasing activation must commute exactly (else exit 1); for the
    others the first differing window is reported. Writes, per activation,
    {stem}.{act}.act-of-pool.png, {stem}.{act}.pool-of-act.png and
    {stem}.{act}.diff.png (0 at mid-gray 128).
    """
    from .activations import ACTIVATIONS, get_activation

    names = activation or ["all"]
    if "all" in names:
        chosen = list(ACTIVATIONS)
    else:
        chosen = list(dict.fromkeys(get_activation(n).name for n in names))
    options = {"activations": chosen, "kernel_size": kernel_size, "stride": stride, "on": on.value}
    _run_image_command("commute", inputs, options, shared)


@app.command(epilog=EXIT_CODES_HELP)
@_reports_errors
@_with_shared_options
def convolve(
    inputs: Inputs,
    kernel: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--kernel",
            help="Rows by ';', values by ',' or spaces (\"0,0,0;0,-1,0;0,1,0\"), or a name: "
            "f1, f2, sobel-x, sobel-y, scharr-x, scharr-y, laplacian, box3, gaussian5.",
        ),
    ] = None,
    kernel_file: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--kernel-file", help="A .txt matrix, .json list or .npy tensor."),
    ] = None,
    stride: Annotated[int, typer.Option("--stride", min=1, help="Stride.")] = 1,
    padding: Annotated[
        str, typer.Option("--padding", help="Pixels of padding on each side, or 'same'.")
    ] = "same",
    padding_mode: Annotated[
        Padding, typer.Option("--padding-mode", help="How the border is padded.")
    ] = Padding.zeros,
    bias: Annotated[float, typer.Option("--bias", help="Added to every output.")] = 0.0,
    on: Annotated[
        GradientOn, typer.Option("--on", help="The grayscale image, or each RGB channel.")
    ] = GradientOn.gray,
    normalize: Annotated[
        bool, typer.Option("--normalize", help="Divide the kernel by the sum of its weights.")
    ] = False,
    shared: Shared = SHARED,
) -> None:
    """Any kernel through the engine. Writes {stem}.convolve.png.

    Checked against a direct correlation (np.pad, sliding windows, einsum) in
    float64. Signed results are drawn with 0 at mid-gray, as gradient does.
    """
    from .kernels import load_kernel_file, parse_kernel, same_padding

    if (kernel is None) == (kernel_file is None):
        raise CnnFiltersError("give exactly one of --kernel and --kernel-file")
    weights = parse_kernel(kernel) if kernel is not None else load_kernel_file(kernel_file)
    if padding != "same":
        try:
            padding_value: int | str = int(padding)
        except ValueError:
            raise CnnFiltersError(f"--padding must be an int or 'same', got {padding!r}") from None
        if padding_value < 0:
            raise CnnFiltersError(f"--padding must be non-negative, got {padding_value}")
    else:
        padding_value = "same"
        same_padding(weights.shape)  # a usage error (exit 2) before any input is read
    options = {"kernel": weights, "stride": stride, "padding": padding_value,
               "padding_mode": padding_mode.value, "bias": bias, "on": on.value,
               "normalize": normalize}  # fmt: skip
    _run_image_command("convolve", inputs, options, shared)


@app.command(epilog=EXIT_CODES_HELP)
@_reports_errors
def backprop(
    widths: Annotated[
        str, typer.Option("--widths", help="Input width, hidden widths, output width 1.")
    ] = "4,8,8,1",
    activation: Annotated[
        str, typer.Option("-a", "--activation", help="sigmoid, tanh, softplus, relu, ...")
    ] = "sigmoid",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weights and inputs.")] = 0,
    points: Annotated[
        int, typer.Option("--points", min=1, help="How many inputs x are checked.")
    ] = 8,
    from_image: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--from-image", help="Take x from random patches of this image."),
    ] = None,
    report: ReportOpt = None,
    html: HtmlOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check the MLP backpropagation formulas (SPEC section 5) numerically.

    For every layer: dy_L/db_l, dy_L/dA_l and dy_l/dy_(l-1) by the course's
    formulas, against central differences (relative error <= 1e-6) and the
    gradients against reverse-mode autodiff written separately (<= 1e-12).
    """
    from .backprop import check_backprop
    from .report import InputReport, RunReport

    try:
        sizes = tuple(int(w) for w in widths.replace(" ", "").split(",") if w)
    except ValueError:
        raise CnnFiltersError(
            f"--widths must be integers separated by commas, got {widths!r}"
        ) from None
    image = None
    if from_image is not None:
        from .images import load_image
        from .pipeline import _gray_levels

        image = _gray_levels(load_image(from_image))[0]
    outcome = check_backprop(sizes, activation, seed=seed, points=points, image=image)
    label = f"MLP {','.join(map(str, sizes))} {outcome.info['activation']}"
    item = InputReport(label, checks=outcome.checks, info=outcome.info)
    if outcome.resampled:
        item.notices.append(f"{outcome.resampled} points near a kink were resampled")
    run = RunReport("backprop", [item], options=dict(outcome.info))
    code = _finish(run, report_path=report, as_json=json_, quiet=quiet)
    if html is not None:
        code = max(code, _write_html(html, [(run, [])], title="cnnfilters backprop"))
    raise typer.Exit(code)


@app.command()
@_reports_errors
def kernels(
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(help="One construction (default: all).", show_default=False),
    ] = None,
    kernel_size: Annotated[
        int, typer.Option("-k", "--kernel-size", min=1, help="k of the average-pooling weights.")
    ] = 2,
    json_: JsonOpt = False,
    export: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--export", help="Write the tensors and their metadata to this file."),
    ] = None,
    export_format: Annotated[
        ExportFormat,
        typer.Option("--format", help="File format for --export (npz loads with numpy)."),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Print the weight tensors of every construction, in torch layout.

    With --export FILE, write them (and each one's stride, padding and groups)
    for torch.nn.Conv2d: .npz by default, or --format json.
    """
    import json

    from .kernels import constructions, export_constructions

    available = constructions(kernel_size)
    if name is not None and name not in available:
        raise CnnFiltersError(f"unknown construction {name!r}; choose from {', '.join(available)}")
    chosen = [available[name]] if name else list(available.values())
    if export is not None:
        from .errors import OutputError
        from .images import _atomic_write

        fmt = (
            export_format.value
            if export_format
            else ("json" if export.suffix.lower() == ".json" else "npz")
        )
        if export.exists() and not force:
            raise OutputError(f"{export}: exists (use --force to overwrite)")
        data = export_constructions(chosen, fmt)
        _atomic_write(export, lambda fh: fh.write(data))
        sys.stdout.write(f"wrote {len(chosen)} constructions to {export} ({fmt})\n")
        return
    if json_:
        sys.stdout.write(json.dumps([c.to_dict() for c in chosen], indent=2) + "\n")
        return
    from rich.columns import Columns
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = Console(highlight=False)
    for construction in chosen:
        weight = construction.weight
        console.print(
            f"[bold]{construction.name}[/]: {construction.description}\n"
            f"  weight {tuple(weight.shape)} (C_out, C_in/groups, kh, kw), "
            f"stride {construction.stride}, padding {construction.padding}, "
            f"groups {construction.groups}"
        )
        panels = []
        for o in range(weight.shape[0]):
            for c in range(weight.shape[1]):
                grid = Table.grid(padding=(0, 1))
                for _ in range(weight.shape[3]):
                    grid.add_column(justify="right")
                for row in weight[o, c]:
                    grid.add_row(*(f"{v:.6g}" for v in row))
                panels.append(Panel(grid, title=f"w[{o}, {c}]", expand=False))
        console.print(Columns(panels))
        for note in construction.notes:
            console.print(f"  [dim]{note}[/]")


@app.command()
@_reports_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where to write everything.")] = Path(
        "cnnfilters-demo"
    ),
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run every construction on the bundled sample images.

    Writes the images and one JSON report per command to OUT_DIR (its own
    earlier outputs there are replaced), then prints a summary.
    """
    from .demo import run_demo

    summary = run_demo(out_dir, command_line=_command_line())
    if json_:
        import json

        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    elif not quiet:
        _render_demo(summary)
    for command in summary["commands"]:
        for message in command["errors"]:
            _error(message)
    raise typer.Exit(summary["exit_code"])


def _render_demo(summary: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    table = Table(title="cnnfilters demo: every construction on the bundled samples",
                  title_justify="left")  # fmt: skip
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
    console.print(f"Outputs and JSON reports are in {escape(summary['out_dir'])}; "
                  f"the visual report is {escape(summary['html'])}")  # fmt: skip


def _root_callback(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    if version:
        typer.echo(f"cnnfilters {__version__}")
        raise typer.Exit()


app.callback(invoke_without_command=True)(_root_callback)


def _usage_line(exc: Exception) -> str:
    """Click's usage error as one line, with where to look for help."""
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "") or ""
    sub = path.split(" ", 1)[1] + " " if " " in path else ""
    return f"{exc.format_message()} (see 'cnnfilters {sub}--help')"


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def _tune_malloc() -> None:
    """Let glibc reuse freed blocks of strip size instead of mapping fresh pages.

    Every strip-sized temporary (1-8 MB) would otherwise be a new mmap whose
    pages fault in on first touch: that cost about 10 % of a short run.
    Memory is still returned to the system above 64 MB of free space.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 64 << 20)
    libc.mallopt(m_top_pad, 16 << 20)


_ARGV: list[str] | None = None  # the arguments main() ran with, for the HTML report


def _app_for(args: list[str]) -> typer.Typer:
    """The app with only the command that ``args`` names, when they start with one.

    Typer reads every command's signature to build its Click group (about
    25 ms); a run uses one command, so the others are left out. Anything else
    (no command, a top-level option, a misspelt name) gets the whole app.
    """
    name = args[0] if args else ""
    chosen = [c for c in app.registered_commands
              if (c.name or c.callback.__name__.replace("_", "-")) == name]  # fmt: skip
    if len(chosen) != 1:
        return app
    lean = copy.copy(app)
    lean.registered_commands = chosen
    return lean


def main(argv: list[str] | None = None) -> int:
    """Run the command line; usage errors and library errors are one line on stderr."""
    global _ARGV
    _ARGV = list(argv) if argv is not None else sys.argv[1:]
    command = typer.main.get_command(_app_for(sys.argv[1:] if argv is None else argv))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = command.main(args=argv, prog_name="cnnfilters", standalone_mode=False)
    except CnnFiltersError as exc:
        _error(str(exc))
        code = exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        code = EXIT_INTERRUPTED
    except Terminated:
        _error("terminated")
        code = EXIT_TERMINATED
    except BrokenPipeError:
        # A reader such as `head` closed the pipe: not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_OK
    except Exception as exc:
        # Click's exceptions (a usage error, an abort), whichever copy of click Typer uses.
        if type(exc).__name__ == "Abort":
            _error("interrupted")
            code = EXIT_INTERRUPTED
        elif hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            if exc.format_message():  # empty when the help was shown for a bare command
                _error(_usage_line(exc))
            code = exc.exit_code
        elif os.environ.get("CNNFILTERS_DEBUG"):
            raise
        else:
            _error(
                f"internal error: {type(exc).__name__}: {exc} "
                "(this is a bug; set CNNFILTERS_DEBUG=1 to see the traceback)"
            )
            code = EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous)
    code = EXIT_OK if code is None else int(code)
    if argv is None:
        # The process ends here: spare the interpreter's closing garbage
        # collections over every imported module (about 40 ms of a 0.2 s
        # run). Outputs are closed by now; standard streams are still flushed.
        gc.freeze()
        sys.exit(code)
    return code


__all__ = ["EXIT_CHECK_FAILED", "EXIT_IO", "app", "main"]
