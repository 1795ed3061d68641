"""The ``cnnfilters`` command line: declares options, calls the library, renders.

Each image command makes its :class:`~cnnfilters.commands.Command` (which
validates its options) and hands it, with the inputs and the
:class:`~cnnfilters.run.Settings` the shared options describe, to
:func:`cnnfilters.run.run`; :mod:`cnnfilters.render` draws what comes back.
numpy, Pillow and the library are imported inside the commands, so that
``--help`` and ``--version`` start fast: the choices and defaults come from
:mod:`cnnfilters.defaults`, which imports nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer

from . import render, startup
from ._version import __version__
from .defaults import (
    ALPHA_POLICIES,
    COMMUTE_INPUTS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_NAME,
    EDGE_MODES,
    GRADIENT_BASES,
    LEARN_TARGETS,
    OPTIMIZERS,
    OUTPUT_FORMATS,
    PADDING_MODES,
    PNG_COMPRESS_LEVEL,
)
from .errors import (
    EXIT_CHECK_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_OK,
    EXIT_TERMINATED,
    STANDARD_OUTPUT,
    CnnFiltersError,
    ReaderGone,
    Terminated,
    stop_behind,
    stop_outcome,
)

if TYPE_CHECKING:
    from .commands import Command
    from .inputs import InputStream, Source
    from .report import RunReport
    from .run import Settings

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


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A string enum of the library's own choices, for Typer to list and check."""
    return Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


Padding = _choices("Padding", PADDING_MODES)
GradientOn = _choices("GradientOn", GRADIENT_BASES)
Edge = _choices("Edge", EDGE_MODES)
AlphaPolicy = _choices("AlphaPolicy", ALPHA_POLICIES)
OutFormat = _choices("OutFormat", OUTPUT_FORMATS)
CommuteOn = _choices("CommuteOn", COMMUTE_INPUTS)
ExportFormat = _choices("ExportFormat", ("npz", "json"))


# Options shared by every image command.
Inputs = Annotated[
    list[Path],
    # readable=False: an unreadable input is that input's error (exit 3), found when its
    # turn comes, not a usage error that stops the whole batch before any work.
    typer.Argument(
        help="Image files (PNG, JPEG, TIFF, GIF, BMP, WebP).", show_default=False, readable=False
    ),
]
OutputOpt = Annotated[
    Optional[Path],  # noqa: UP045 (Typer reads the annotation at run time on Python 3.10)
    typer.Option(
        "-o",
        "--output",
        help="One input only: the output file, or the stem for commands that write several.",
        readable=False,
    ),
]
OutDirOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--out-dir", help="Write outputs to this folder (created if missing).", readable=False
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
RawOpt = Annotated[
    bool, typer.Option("--raw", help="Also write each float result as .npy (exact values).")
]
ReportOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--report", help="Write the JSON report to this file.", readable=False),
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
    typer.Option(
        "--html",
        help="Write a self-contained visual report (HTML) to this file.",
        readable=False,
    ),
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


def _jobs(text: str | int) -> int:
    """``-j``: a count of worker processes, ``0`` or ``auto`` for one per core."""
    if isinstance(text, int):  # the default
        return text
    if text.strip().lower() == "auto":
        return 0
    try:
        jobs = int(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number of jobs (N, 0 or auto)") from None
    if jobs < 0:
        raise typer.BadParameter(f"{jobs} is negative (N, 0 or auto)")
    return jobs


JobsOpt = Annotated[
    int,
    typer.Option(
        "-j",
        "--jobs",
        parser=_jobs,
        metavar="N|auto",
        help="Worker processes (0 or auto: one per core).",
    ),
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


def _declared(annotation: Any) -> dict[str, Any]:
    """A shared option's field metadata: the Typer annotation that declares it."""
    return {"annotation": annotation}


@dataclass(frozen=True)
class Shared:
    """The options every image command shares, as given on the command line.

    Declared once: :func:`_with_shared_options` adds each field to the
    commands' signatures from the annotation in its metadata.
    """

    output: Path | None = field(default=None, metadata=_declared(OutputOpt))
    out_dir: Path | None = field(default=None, metadata=_declared(OutDirOpt))
    force: bool = field(default=False, metadata=_declared(ForceOpt))
    raw: bool = field(default=False, metadata=_declared(RawOpt))
    report: Path | None = field(default=None, metadata=_declared(ReportOpt))
    html: Path | None = field(default=None, metadata=_declared(HtmlOpt))
    json_: bool = field(default=False, metadata=_declared(JsonOpt))
    quiet: bool = field(default=False, metadata=_declared(QuietOpt))
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=_declared(MaxPixelsOpt))
    alpha: Enum = field(default=AlphaPolicy("keep"), metadata=_declared(AlphaOpt))
    background: str = field(default="white", metadata=_declared(BackgroundOpt))
    no_auto_orient: bool = field(default=False, metadata=_declared(NoOrientOpt))
    all_frames: bool = field(default=False, metadata=_declared(AllFramesOpt))
    allow_truncated: bool = field(default=False, metadata=_declared(TruncatedOpt))
    compress_level: int = field(default=PNG_COMPRESS_LEVEL, metadata=_declared(CompressOpt))
    recursive: bool = field(default=False, metadata=_declared(RecursiveOpt))
    name: str = field(default=DEFAULT_NAME, metadata=_declared(NameOpt))
    dry_run: bool = field(default=False, metadata=_declared(DryRunOpt))
    skip_existing: bool = field(default=False, metadata=_declared(SkipExistingOpt))
    jobs: int = field(default=0, metadata=_declared(JobsOpt))
    fail_fast: bool = field(default=False, metadata=_declared(FailFastOpt))
    jsonl: bool = field(default=False, metadata=_declared(JsonlOpt))
    scheduler: str | None = field(default=None, metadata=_declared(SchedulerOpt))
    out_format: Enum = field(default=OutFormat("png"), metadata=_declared(FormatOpt))

    def settings(self, *, output: Path | None) -> Settings:
        """The run's settings: where outputs go, how files are read, how work is shared."""
        from .images import ReadOptions, parse_colour
        from .outputs import Destination
        from .run import Settings

        try:
            destination = Destination(output=output, out_dir=self.out_dir, template=self.name,
                                      force=self.force, raw=self.raw,
                                      compress_level=self.compress_level)  # fmt: skip
        except CnnFiltersError as exc:
            raise CnnFiltersError(f"--name/-o/--out-dir: {exc}") from None
        read = ReadOptions(
            max_pixels=self.max_pixels,
            auto_orient=not self.no_auto_orient,
            alpha=self.alpha.value,
            background=parse_colour(self.background),
            allow_truncated=self.allow_truncated,
            all_frames=self.all_frames,
        )
        return Settings(destination=destination, read=read,
                        jobs=self.jobs or os.cpu_count() or 1, skip_existing=self.skip_existing,
                        fail_fast=self.fail_fast, scheduler=self.scheduler,
                        maps=self.html is not None)  # fmt: skip


SHARED = Shared()


def _reports_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn a library error into one line on stderr and its exit code (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CnnFiltersError as exc:
            render.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except (KeyboardInterrupt, Terminated) as exc:
            # Outputs are atomic: what was finished stays whole, nothing partial is left.
            raise typer.Exit(_stopped(exc)) from None

    return wrapper


def _with_shared_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` every shared option; it receives them as ``shared``.

    The options are added to the signature Typer reads, so each command
    declares only its own.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "shared"]
    fields = dataclasses.fields(Shared)
    added = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                          annotation=f.metadata["annotation"])
        for f in fields
    ]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        values = {f.name: kwargs.pop(f.name) for f in fields if f.name in kwargs}
        return command(*args, **kwargs, shared=Shared(**values))

    wrapper.__signature__ = signature.replace(parameters=own + added)
    hints = {p.name: p.annotation for p in own}
    hints.update({f.name: f.metadata["annotation"] for f in fields})
    wrapper.__annotations__ = {**hints, "return": None}
    del wrapper.__wrapped__  # Typer must read the new signature, not the command's
    return wrapper


def _finish(
    report: RunReport,
    *,
    report_path: Path | None,
    as_json: bool,
    quiet: bool,
    force: bool = False,
    errors_shown: bool = False,
) -> int:
    """Errors to stderr (unless shown as they came), the report to stdout and/or a file
    (an existing one replaced only with ``force``).

    Returns the exit code: the worst of the inputs'.
    """
    from .outputs import atomic_write

    for item in report.inputs:
        if item.error and not errors_shown:
            render.error(item.error)
    text = report.to_json() if report_path is not None or as_json else ""
    if report_path is not None:
        try:
            atomic_write(report_path, lambda fh: fh.write(text.encode("utf-8") + b"\n"),
                         replace=force)  # fmt: skip
        except CnnFiltersError as exc:
            render.error(str(exc))
            return EXIT_IO
    if as_json:
        sys.stdout.write(text + "\n")
    elif not quiet:
        written = sum(len(item.outputs) for item in report.inputs) + report.left_out_files
        render.render_table(report, written=written)
    return report.exit_code


def _run_image_command(command: Command, inputs: list[Path], shared: Shared) -> None:
    """Run an image command over its inputs with the shared options, then exit."""
    # Standard input and output go through a scratch folder, removed however we leave.
    # A run that uses neither makes none (the folder and tempfile's import: 2 ms).
    if all(os.fsdecode(path) != "-" for path in [*inputs, shared.output or ""]):
        raise typer.Exit(_run_image_inputs(command, inputs, shared, None))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cnnfilters-") as scratch:
        code = _run_image_inputs(command, inputs, shared, Path(scratch))
    raise typer.Exit(code)


def _sources(inputs: list[Path], shared: Shared, scratch: Path | None) -> InputStream:
    """The run's inputs, streamed: a folder is read when the run gets to it."""
    from .inputs import stdin_source, stream_inputs

    def stdin() -> Source:
        if sys.stdin is None or sys.stdin.isatty():
            raise CnnFiltersError("-: no image on standard input (pipe one in)")
        assert scratch is not None  # made for a run that reads "-"
        return stdin_source(sys.stdin.buffer.read(), scratch)

    return stream_inputs(inputs, recursive=shared.recursive, stdin=stdin)


def _check_outputs(command: Command, shared: Shared, several: bool) -> bool:
    """Refuse -o combinations that cannot work; whether the image goes to stdout."""
    to_stdout = shared.output is not None and os.fsdecode(shared.output) == "-"
    if to_stdout and len(command.outputs()) != 1:
        raise CnnFiltersError(f"-o - writes one image; {command.name} writes several (use -o STEM)")
    if to_stdout and (shared.json_ or shared.jsonl or shared.raw):
        raise CnnFiltersError("-o - puts the image on standard output: no --json/--jsonl/--raw")
    if shared.output is not None and several:
        raise CnnFiltersError("-o/--output takes one input, got several; use --out-dir")
    if shared.output is not None and shared.out_dir is not None:
        raise CnnFiltersError("use either -o/--output or --out-dir, not both")
    return to_stdout


def _as_typed(scratch: Path | None) -> Callable[[Any], None]:
    """Name standard input ``-`` in an entry, as the user typed it, not by the scratch
    file it was kept in (``stdin.<format>`` in the run's scratch folder, if any)."""
    if scratch is None:
        return lambda item: None
    import re

    kept = re.compile(re.escape(os.fsdecode(scratch) + os.sep) + r"stdin\.\w+")

    def rename(item) -> None:
        item.input = kept.sub("-", item.input)
        if item.error:
            item.error = kept.sub("-", item.error)

    return rename


def _announcer(
    shared: Shared, *, quiet: bool, rename: Callable[[Any], None]
) -> Callable[[Any], None]:
    """What is said of each input as it finishes: its error or damage on stderr, and
    with --jsonl its JSON line on stdout."""

    def on_input(item) -> None:
        rename(item)
        if item.error:
            render.error(item.error)
        elif item.info.get("damaged") and not quiet:
            render.notice(f"{item.input}: damaged data read anyway, missing pixels were "
                          f"filled ({item.info['damaged']})")  # fmt: skip
        if shared.jsonl:
            from .report import to_json

            sys.stdout.write(to_json(item.to_dict()) + "\n")
            sys.stdout.flush()

    return on_input


def _run_image_inputs(
    command: Command, inputs: list[Path], shared: Shared, scratch: Path | None
) -> int:
    from .run import run
    from .runfiles import check_run_files

    sources = _sources(inputs, shared, scratch)
    # Several inputs, or a folder: known without reading one (a folder is read when the
    # run gets to it); -o, which takes one input, looks into the folder.
    several = len(sources.named) > 1 or (sources.arguments > 0 and (
        shared.output is None or len(sources.peek(2)) > 1))  # fmt: skip
    to_stdout = _check_outputs(command, shared, several)
    output = scratch / "stdout.png" if to_stdout and scratch is not None else shared.output
    files = check_run_files({"--report": shared.report, "--html": shared.html},
                            inputs=sources, force=shared.force)  # fmt: skip
    settings = dataclasses.replace(shared.settings(output=output), run_files=tuple(files.items()))
    if shared.dry_run:
        return _dry_run(command, sources, settings)
    quiet = shared.quiet or to_stdout
    # Every input's entry is kept only for what shows them all at the end: the
    # table, --json, --report, --html. A quiet or --jsonl batch keeps counts.
    shows_table = not (quiet or shared.jsonl or shared.json_)
    # --json prints them all; the table and the page show a large batch's first
    # failures and passes, as many as they list (their memory is bounded).
    keep: bool | int = bool(shared.json_)
    if not shared.json_ and shared.html is not None:
        from .html import MAX_ROWS

        keep = MAX_ROWS // 2
    elif not shared.json_ and shows_table:
        keep = render.TABLE_ROWS // 2
    # A batch syncs its files once at the end rather than one by one.
    settings = dataclasses.replace(settings, keep=keep, sync_once=several)
    progress = render.Progress(enabled=several and not quiet and sys.stderr.isatty())
    if shared.report is not None and settings.destination.out_dir is not None:
        from .outputs import make_folder

        make_folder(settings.destination.out_dir)  # the report may go there
    stream = _report_stream(shared.report, command, replace=shared.force)
    with progress, _aborted_on_failure(stream):
        announce = _announcer(shared, quiet=quiet, rename=_as_typed(scratch))
        report, summary = run(command, sources, settings, on_input=announce,
                              on_progress=progress.update,
                              on_entries=stream.add if stream else None)  # fmt: skip
    for item in report.inputs:
        _as_typed(scratch)(item)
    code = _finish(report, report_path=None, as_json=shared.json_,
                   quiet=quiet or shared.jsonl, errors_shown=True)  # fmt: skip
    if stream is not None:
        try:
            stream.close(report.stopped)
        except CnnFiltersError as exc:
            render.error(str(exc))
            code = max(code, exc.exit_code)
    code = max(code, summary.exit_code)  # the counts, when the entries were not kept
    if several and not quiet and sys.stderr.isatty():
        render.write_stderr(f"cnnfilters: {summary.line()}")
    if shared.html is not None:
        code = max(code, _write_html(shared.html, [(report, command.kernels())],
                                     title=f"cnnfilters {command.name}",
                                     replace=shared.force))  # fmt: skip
    if summary.interrupted:
        word, code = stop_outcome(summary.terminated)
        render.error(f"{word}; {summary.not_done_text}")
    if to_stdout and output.exists():
        _image_to_stdout(output, shared.out_format.value, quiet=shared.quiet)
    return code


def _dry_run(command: Command, sources: InputStream, settings: Any) -> int:
    """Each input's outputs, a line each, as they are planned; nothing is written."""
    from .run import plan_outputs

    code = EXIT_OK
    for source, targets, refused in plan_outputs(command, sources, settings):
        if refused is not None:
            render.error(refused.error)
            code = max(code, refused.exit_code)
        for target in targets if refused is None else []:
            sys.stdout.write(f"{os.fsdecode(source.path)} -> {os.fsdecode(target)}\n")
    return code


@contextlib.contextmanager
def _aborted_on_failure(stream: Any) -> Iterator[None]:
    """A streamed report that cannot be finished leaves nothing behind."""
    try:
        yield
    except BaseException:
        if stream is not None:
            stream.abort()
        raise


def _report_stream(path: Path | None, command: Command, *, replace: bool) -> Any:
    """``--report`` written as the inputs finish (see ``outputs.ReportStream``), or None;
    an existing file is replaced only with ``replace``."""
    if path is None:
        return None
    from ._version import __version__ as version
    from .outputs import ReportStream
    from .report import SCHEMA_VERSION

    head = {"schema": SCHEMA_VERSION, "command": command.name, "version": version,
            "options": command.options()}  # fmt: skip
    return ReportStream(path, head, replace=replace)


def _image_to_stdout(path: Path, fmt: str, *, quiet: bool) -> None:
    """The finished image on standard output, converted when another format is asked for."""
    from .errors import OutputError
    from .outputs import png_to_format

    if getattr(sys.stdout, "closed_at_start", False):
        raise OutputError("-o -: standard output is closed")
    data, notes = png_to_format(path, fmt)
    if not quiet:
        for note in notes:
            render.notice(note)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _command_line() -> str:
    import shlex

    argv = _ARGV if _ARGV is not None else sys.argv[1:]
    return shlex.join(["cnnfilters", *argv])


def _write_html(path: Path, runs: list, *, title: str, replace: bool) -> int:
    """Write the visual report; an error writing it is exit 3, like any output."""
    from .html import write_page

    try:
        write_page(path, runs, title=title, command_line=_command_line(), replace=replace)
    except CnnFiltersError as exc:
        render.error(str(exc))
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
    from .commands import GrayscaleOptions

    _run_image_command(GrayscaleOptions(weights=weights), inputs, shared)


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
    from .commands import GradientOptions

    _run_image_command(GradientOptions(padding=padding.value, on=on.value), inputs, shared)


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
    from .commands import AvgpoolOptions

    _run_image_command(AvgpoolOptions(kernel_size=kernel_size, edge=edge.value), inputs, shared)


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
    from .activations import ACTIVATIONS
    from .commands import CommuteOptions

    names = activation or ["all"]
    chosen = tuple(ACTIVATIONS) if "all" in names else tuple(names)
    command = CommuteOptions(activations=chosen, kernel_size=kernel_size, stride=stride,
                             on=on.value)  # fmt: skip
    _run_image_command(command, inputs, shared)


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
            "f1, f2, sobel-x, sobel-y, scharr-x, scharr-y, laplacian, box3, gaussian5, sharpen.",
        ),
    ] = None,
    kernel_file: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--kernel-file", help="A .txt matrix, .json list or .npy tensor.", readable=False
        ),
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
    from .kernels import FLOAT32_MAX, load_kernel_file, parse_kernel, same_padding

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
    from .commands import ConvolveOptions

    if not (math.isfinite(bias) and abs(bias) <= FLOAT32_MAX):
        raise CnnFiltersError(
            f"--bias must be a finite number within float32's range (+-{FLOAT32_MAX:.4g}), "
            f"got {bias!r}"
        )
    if normalize and abs(float(weights.sum())) < 1e-12:
        raise CnnFiltersError("--normalize: the kernel's weights sum to 0")
    command = ConvolveOptions(kernel=weights, stride=stride, padding=padding_value,
                              padding_mode=padding_mode.value, bias=bias, on=on.value,
                              normalize=normalize)  # fmt: skip
    _run_image_command(command, inputs, shared)


@app.command(epilog=EXIT_CODES_HELP)
@_reports_errors
def backprop(
    widths: Annotated[
        str, typer.Option("--widths", help="Input width, hidden widths, output width 1.")
    ] = "4,8,8,1",
    activation: Annotated[
        str, typer.Option("-a", "--activation", help="sigmoid, tanh, softplus, relu, ...")
    ] = "sigmoid",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the weights and inputs.")] = 0,
    points: Annotated[
        int, typer.Option("--points", min=1, help="How many inputs x are checked.")
    ] = 8,
    from_image: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--from-image", help="Take x from random patches of this image.", readable=False
        ),
    ] = None,
    report: ReportOpt = None,
    html: HtmlOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
) -> None:
    """Check the backpropagation formulas of an MLP numerically.

    For every layer: dy_L/db_l, dy_L/dA_l and dy_l/dy_(l-1) by the
    formulas, against central differences (relative error <= 1e-6) and the
    gradients against reverse-mode autodiff written separately (<= 1e-12).
    """
    from .backprop import check_backprop
    from .report import InputReport, RunReport
    from .runfiles import check_run_files

    check_run_files({"--report": report, "--html": html},
                    inputs=[from_image] if from_image is not None else [], force=force)  # fmt: skip

    try:
        sizes = tuple(int(w) for w in widths.replace(" ", "").split(",") if w)
    except ValueError:
        raise CnnFiltersError(
            f"--widths must be integers separated by commas, got {widths!r}"
        ) from None
    image = None
    if from_image is not None:
        from .commands import gray_levels
        from .images import load_image

        image = gray_levels(load_image(from_image))[0]
    outcome = check_backprop(sizes, activation, seed=seed, points=points, image=image)
    label = f"MLP {','.join(map(str, sizes))} {outcome.info['activation']}"
    item = InputReport(label, checks=outcome.checks, info=outcome.info)
    if outcome.resampled:
        item.notices.append(f"{outcome.resampled} points near a kink were resampled")
    run = RunReport("backprop", [item], options=dict(outcome.info))
    code = _finish(run, report_path=report, as_json=json_, quiet=quiet, force=force)
    if html is not None:
        code = max(code, _write_html(html, [(run, [])], title="cnnfilters backprop",
                                     replace=force))  # fmt: skip
    raise typer.Exit(code)


LearnWhat = _choices("LearnWhat", LEARN_TARGETS)
Optimizer = _choices("Optimizer", OPTIMIZERS)


@app.command(epilog=EXIT_CODES_HELP)
@_reports_errors
def learn(
    what: Annotated[
        LearnWhat,
        typer.Argument(
            help="gradient, grayscale, avgpool, or pair (BEFORE AFTER).", show_default=False
        ),
    ],
    inputs: Inputs,
    k: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("-k", help="avgpool: the window (2); pair: the kernel's odd side (3)."),
    ] = None,
    on: Annotated[
        GradientOn,
        typer.Option("--on", help="The grayscale image, or each RGB channel as more examples."),
    ] = GradientOn.gray,
    optimizer: Annotated[
        Optimizer, typer.Option("--optimizer", help="sgd, momentum (Nesterov) or adam.")
    ] = Optimizer.momentum,
    lr: Annotated[
        str, typer.Option("--lr", help="Learning rate, or auto (from the loss's curvature).")
    ] = "auto",
    steps: Annotated[int, typer.Option("--steps", min=1, max=1_000_000, help="Most steps.")] = 5000,
    tol: Annotated[
        float, typer.Option("--tol", min=0.0, help="Stop when the loss is at most this.")
    ] = 1e-12,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Seed of the start and of the patches.")
    ] = 0,
    patches: Annotated[
        int, typer.Option("--patches", min=1, max=100_000, help="Training patches (32 x 32).")
    ] = 64,
    atol: Annotated[
        float, typer.Option("--atol", help="Pass: learned weights within this of the truth.")
    ] = 1e-3,
    output: OutputOpt = None,
    out_dir: OutDirOpt = None,
    force: ForceOpt = False,
    skip_existing: SkipExistingOpt = False,
    report: ReportOpt = None,
    html: HtmlOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
) -> None:
    """Learn a construction back by gradient descent, or the kernel of a BEFORE AFTER pair.

    A conv layer of the construction's geometry starts from random weights
    and is trained on patches of the inputs (their targets: the
    construction's own outputs) with the engine's forward and backward
    passes; it should arrive at F1/F2, at (0.299, 0.587, 0.114), at 1/k^2.
    Checked against the construction and against least squares (float64,
    numpy.linalg.lstsq, without the engine). Writes {stem}.learn-{what}.npz
    (torch layout), .loss.png and, for a pair, .txt (for convolve
    --kernel-file).
    """
    from .commands import LearnOptions
    from .images import ReadOptions
    from .learning import learn as run_learn
    from .learning import named_targets, targets_for
    from .runfiles import check_run_files

    if what.value == "pair" and len(inputs) != 2:
        raise CnnFiltersError(f"learn pair takes two inputs, BEFORE and AFTER; got {len(inputs)}")
    if lr.strip().lower() == "auto":
        rate = None
    else:
        try:
            rate = float(lr)
        except ValueError:
            raise CnnFiltersError(f"--lr must be a number or auto, got {lr!r}") from None
    basis = "rgb" if what.value == "grayscale" else on.value
    options = LearnOptions(what=what.value, k=k, on=basis, optimizer=optimizer.value, lr=rate,
                           steps=steps, tol=tol, seed=seed, patches=patches, atol=atol)  # fmt: skip
    targets = targets_for(options, inputs[0], output=output, out_dir=out_dir)
    own = named_targets(targets)
    check_run_files({"--report": report, "--html": html, **own}, inputs=inputs, force=force,
                    replaced=own if skip_existing else ())  # fmt: skip
    if out_dir is not None:
        from .outputs import make_folder

        make_folder(out_dir)
    with render.LossProgress(steps, enabled=not (quiet or json_)) as progress:
        outcome = run_learn(options, inputs, read=ReadOptions(max_pixels=max_pixels),
                            targets=targets, force=force, skip_existing=skip_existing,
                            on_step=progress.update)  # fmt: skip
    if outcome.learned is not None and not (quiet or json_):
        render.render_learned(outcome.learned, options.label)
    code = _finish(outcome.report, report_path=report, as_json=json_, quiet=quiet, force=force)
    if html is not None:
        code = max(code, _write_html(html, [(outcome.report, outcome.kernels)],
                                     title=f"cnnfilters learn {options.label}",
                                     replace=force))  # fmt: skip
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
        typer.Option(
            "--export",
            help="Write the tensors and their metadata to this file.",
            readable=False,
        ),
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

    from .kernels import construction_named, constructions, export_constructions

    if name is not None:
        chosen = [construction_named(name, kernel_size)]
    else:
        chosen = list(constructions(kernel_size).values())
    if export is not None:
        from .outputs import atomic_write
        from .runfiles import check_run_files

        fmt = (
            export_format.value
            if export_format
            else ("json" if export.suffix.lower() == ".json" else "npz")
        )
        check_run_files({"--export": export}, inputs=[], force=force)
        data = export_constructions(chosen, fmt)
        atomic_write(export, lambda fh: fh.write(data), replace=force)
        sys.stdout.write(f"wrote {len(chosen)} constructions to {export} ({fmt})\n")
        return
    if json_:
        sys.stdout.write(json.dumps([c.to_dict() for c in chosen], indent=2) + "\n")
        return
    render.render_kernels(chosen)


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
        render.render_demo(summary)
    for command in summary["commands"]:
        for message in command["errors"]:
            render.error(message)
    raise typer.Exit(summary["exit_code"])


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
    _ignore_signals()  # the run is ending: a second signal must not cut its unwinding short
    raise Terminated


def _on_sigint(signum: int, frame: object) -> None:
    _ignore_signals()  # (a KeyboardInterrupt raised in a finalizer would be swallowed)
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    """From now on Ctrl-C and SIGTERM change nothing: the run is already ending."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


_ARGV: list[str] | None = None  # the arguments main() ran with, for the HTML report


def main(argv: list[str] | None = None) -> int:
    """Run the command line; usage errors and library errors are one line on stderr."""
    global _ARGV
    _ARGV = list(argv) if argv is not None else sys.argv[1:]
    if sys.stdout is None:  # started with standard output closed (>&-)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
        sys.stdout.closed_at_start = True  # type: ignore[attr-defined]
    stdout, sys.stdout = sys.stdout, render.StandardOutput(sys.stdout)
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT),
                signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}  # fmt: skip
    if previous[signal.SIGINT] is signal.default_int_handler:  # not ignored (a background job)
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        lean = startup.lean_app(app, sys.argv[1:] if argv is None else argv)
        command = typer.main.get_command(lean)
        code = command.main(args=argv, prog_name="cnnfilters", standalone_mode=False)
    except (KeyboardInterrupt, Terminated) as exc:
        code = _stopped(exc)
    except Exception as exc:
        stop = stop_behind(exc)
        if stop is not None:
            code = _stopped(stop)
        elif os.environ.get("CNNFILTERS_DEBUG") and _is_internal(exc):
            raise
        else:
            code = _exit_for(exc)
    finally:
        sys.stdout = stdout
        if argv is None:
            _ignore_signals()  # the process ends now, with this code
        else:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    code = EXIT_OK if code is None else int(code)
    if argv is None:
        if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
            _end_at_once(code)
        startup.exit_now(code)
    return code


def _stopped(exc: BaseException) -> int:
    """The goodbye of a run that Ctrl-C or SIGTERM stopped, and its exit code."""
    _ignore_signals()  # a second signal must not cut the goodbye short
    word, code = stop_outcome(isinstance(exc, Terminated))
    render.error(word)
    return code


def _end_at_once(code: int) -> NoReturn:
    """End a stopped run now, without waiting for any thread: one still encoding an
    output leaves nothing (the output is an unnamed file until it is whole; a named
    temporary file is removed here), and the interpreter's exit hooks, which join
    threads and pools, can neither hang nor print on the way out."""
    outputs = sys.modules.get(f"{__package__}.outputs")
    if outputs is not None:
        outputs.remove_temporary_files()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _is_internal(exc: Exception) -> bool:
    """Not a user's mistake, a closed pipe or a full disk: a bug."""
    known = (CnnFiltersError, OSError, ReaderGone)
    return not isinstance(exc, known) and not hasattr(exc, "format_message")


def _exit_for(exc: Exception) -> int:
    """One line on stderr for ``exc`` (none for a reader that went away), and the exit code."""
    if isinstance(exc, CnnFiltersError):
        render.error(str(exc))
        return exc.exit_code
    if isinstance(exc, ReaderGone) or (
        isinstance(exc, OSError) and exc.filename == STANDARD_OUTPUT
    ):
        # Standard output went away (`| head`) or cannot be written (a full disk):
        # later writes go nowhere, so the interpreter's exit cannot fail on them.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        if isinstance(exc, ReaderGone):
            return EXIT_OK  # a reader such as `head` closed the pipe: not an error of ours
    if isinstance(exc, OSError):
        where = os.fsdecode(exc.filename) + ": " if exc.filename else ""
        render.error(f"{where}{exc.strerror or exc}")
        return EXIT_IO
    # Click's exceptions (a usage error, an abort), whichever copy of click Typer uses.
    if type(exc).__name__ == "Abort":
        render.error("interrupted")
        return EXIT_INTERRUPTED
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        if exc.format_message():  # empty when the help was shown for a bare command
            render.error(_usage_line(exc))
        return exc.exit_code
    render.error(
        f"internal error: {type(exc).__name__}: {exc} "
        "(this is a bug; set CNNFILTERS_DEBUG=1 to see the traceback)"
    )
    return EXIT_INTERNAL


__all__ = ["EXIT_CHECK_FAILED", "EXIT_IO", "app", "main"]
