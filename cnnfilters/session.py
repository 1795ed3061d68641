"""One run of a command, from its options to its exit code: the library under the CLI.

The command line declares options and makes a command (which checks its own
values); a :class:`Session` does the rest, the same way for every command:

1. it checks where the run's own files go (:mod:`cnnfilters.runfiles`),
2. runs the command: :meth:`Session.run` over image inputs
   (:func:`cnnfilters.run.run`), :meth:`Session.learn`, :meth:`Session.backprop`,
   each returning the :class:`~cnnfilters.report.RunReport`,
3. and :meth:`Session.finish` ends every run alike: errors on stderr, the
   table or the JSON on stdout, the JSON report and the visual report
   written, and the exit code (the worst of the inputs').

A session is a context manager: a run that reads standard input or writes
an image to standard output keeps it in a scratch folder that goes when the
session ends. ``demo`` runs its commands in quiet sessions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import render
from .defaults import DEFAULT_MAX_PIXELS, DEFAULT_NAME, PNG_COMPRESS_LEVEL
from .errors import EXIT_IO, EXIT_OK, CnnFiltersError, stop_outcome

if TYPE_CHECKING:
    from .commands import Command, LearnOptions
    from .inputs import InputStream, Source
    from .report import RunReport
    from .run import Settings

__all__ = ["RunOptions", "Session"]


@dataclass(frozen=True)
class RunOptions:
    """The options every image command shares; the command line's defaults.

    ``json_`` prints the JSON report instead of the table (``wide``: the table
    with every figure), ``jsonl`` a JSON
    line per input as it finishes; ``quiet`` prints nothing but errors;
    ``report`` and ``html`` are files the run writes once. The rest say where
    outputs go (``output``, ``out_dir``, ``name``, ``force``, ``raw``,
    ``compress_level``, ``out_format`` for ``-o -``), how files are read, and
    how the work is shared (``jobs``: 0 is one per core).
    """

    output: Path | None = None
    out_dir: Path | None = None
    force: bool = False
    raw: bool = False
    report: Path | None = None
    html: Path | None = None
    json_: bool = False
    quiet: bool = False
    wide: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    alpha: str = "keep"
    background: str = "white"
    no_auto_orient: bool = False
    all_frames: bool = False
    allow_truncated: bool = False
    compress_level: int = PNG_COMPRESS_LEVEL
    recursive: bool = False
    name: str = DEFAULT_NAME
    dry_run: bool = False
    skip_existing: bool = False
    jobs: int = 0
    fail_fast: bool = False
    jsonl: bool = False
    scheduler: str | None = None
    out_format: str = "png"

    def settings(self, *, output: Path | None) -> Settings:
        """The run's settings: where outputs go, how files are read, how work is shared."""
        from .images import ReadOptions, parse_colour
        from .outputs import Destination
        from .run import Settings

        try:
            destination = Destination(
                output=output,
                out_dir=self.out_dir,
                template=self.name,
                force=self.force,
                raw=self.raw,
                compress_level=self.compress_level,
            )
        except CnnFiltersError as exc:
            raise CnnFiltersError(f"--name/-o/--out-dir: {exc}") from None
        read = ReadOptions(
            max_pixels=self.max_pixels,
            auto_orient=not self.no_auto_orient,
            alpha=self.alpha,
            background=parse_colour(self.background),
            allow_truncated=self.allow_truncated,
            all_frames=self.all_frames,
        )
        return Settings(
            destination=destination,
            read=read,
            jobs=self.jobs or os.cpu_count() or 1,
            skip_existing=self.skip_existing,
            fail_fast=self.fail_fast,
            scheduler=self.scheduler,
            maps=self.html is not None,
        )


@dataclass
class _Pending:
    """What :meth:`Session.finish` still has to do for the run just made."""

    title: str
    errors_shown: bool = False  # said on stderr as each input finished
    stream: Any = None  # the --report written as the inputs finished
    summary: Any = None  # the run's counts, when not every entry was kept
    several: bool = False
    to_stdout: Path | None = None  # the image that goes to standard output
    dry_run: bool = False


class Session:
    """Runs commands with one set of :class:`RunOptions` and ends each run alike."""

    def __init__(
        self,
        options: RunOptions | None = None,
        *,
        command_line: str = "cnnfilters",
        collect: bool = False,
    ):
        """``collect`` keeps every input's entry and its difference maps, for a caller
        that shows them afterwards (the demo's page); otherwise a run keeps what its
        options show."""
        self.options = options or RunOptions()
        self.command_line = command_line
        self.collect = collect
        self.kernels: list = []  # the last run's kernels, as its visual report shows them
        self._scratch: Path | None = None
        self._exit = contextlib.ExitStack()
        self._pending: _Pending | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit.close()

    def _scratch_folder(self) -> Path:
        """A folder for standard input and output, removed when the session ends."""
        if self._scratch is None:
            import tempfile

            folder = self._exit.enter_context(tempfile.TemporaryDirectory(prefix="cnnfilters-"))
            self._scratch = Path(folder)
        return self._scratch

    # -- image commands ---------------------------------------------------------------

    def run(self, command: Command, inputs: list[Path]) -> RunReport:
        """Run ``command`` over ``inputs`` (files, folders, patterns, ``-``)."""
        from .report import RunReport
        from .run import run
        from .runfiles import check_run_files

        options = self.options
        uses_std = any(os.fsdecode(path) == "-" for path in [*inputs, options.output or ""])
        scratch = self._scratch_folder() if uses_std else None
        sources = _sources(inputs, options.recursive, scratch)
        # Several inputs, or a folder: known without reading one (a folder is read when
        # the run gets to it); -o, which takes one input, looks into the folder.
        several = len(sources.named) > 1 or (
            sources.arguments > 0 and (options.output is None or len(sources.peek(2)) > 1)
        )
        to_stdout = _check_outputs(command, options, several)
        output = scratch / "stdout.png" if to_stdout and scratch is not None else options.output
        files = check_run_files(
            {"--report": options.report, "--html": options.html},
            inputs=sources,
            force=options.force,
        )
        settings = options.settings(output=output)
        settings = dataclasses.replace(settings, run_files=tuple(files.items()))
        pending = _Pending(
            f"cnnfilters {command.name}",
            errors_shown=True,
            several=several,
            to_stdout=output if to_stdout else None,
        )
        self._pending, self.kernels = pending, command.kernels()
        if options.dry_run:
            pending.dry_run = True
            return _dry_run(command, sources, settings)
        if not (options.force or options.skip_existing or uses_std):
            # A rerun is one line before any work, not an error for each input.
            _refuse_a_rerun(command, _sources(inputs, options.recursive, None), settings)
        quiet = options.quiet or to_stdout
        # Every input's entry is kept only for what shows them all at the end: the
        # table, --json, --report, --html. A quiet or --jsonl batch keeps counts.
        shows_table = not (quiet or options.jsonl or options.json_)
        # --json prints them all; the table and the page show a large batch's first
        # failures and passes, as many as they list (their memory is bounded).
        keep: bool | int = bool(options.json_)
        if not options.json_ and options.html is not None:
            from .html import MAX_ROWS

            keep = MAX_ROWS // 2
        elif not options.json_ and shows_table:
            from .table import TABLE_ROWS

            keep = TABLE_ROWS // 2
        if self.collect:
            keep = True
        # A batch syncs its files once at the end rather than one by one.
        settings = dataclasses.replace(
            settings, keep=keep, sync_once=several, maps=settings.maps or self.collect
        )
        progress = render.Progress(enabled=several and not quiet and sys.stderr.isatty())
        if options.report is not None and settings.destination.out_dir is not None:
            from .outputs import make_folder

            make_folder(settings.destination.out_dir)  # the report may go there
        pending.stream = _report_stream(options.report, command, replace=options.force)
        rename = _as_typed(scratch)
        with progress, _aborted_on_failure(pending.stream):
            announce = _announcer(options, quiet=quiet, rename=rename)
            report, pending.summary = run(
                command,
                sources,
                settings,
                on_input=announce,
                on_progress=progress.update,
                on_entries=pending.stream.add if pending.stream else None,
            )
        for item in report.inputs:
            rename(item)
        assert isinstance(report, RunReport)
        return report

    # -- learn and backprop -----------------------------------------------------------

    def learn(self, options: LearnOptions, inputs: list[Path]) -> RunReport:
        """Learn a construction (or a pair's kernel) back; its files written all or none."""
        from .images import ReadOptions
        from .learning import learn, named_targets, targets_for
        from .runfiles import check_run_files

        run_options = self.options
        if options.what == "pair" and len(inputs) != 2:
            raise CnnFiltersError(
                f"learn pair takes two inputs, BEFORE and AFTER; got {len(inputs)}"
            )
        targets = targets_for(
            options, inputs[0], output=run_options.output, out_dir=run_options.out_dir
        )
        own = named_targets(targets)
        check_run_files(
            {"--report": run_options.report, "--html": run_options.html, **own},
            inputs=inputs,
            force=run_options.force,
            replaced=own if run_options.skip_existing else (),
        )
        if run_options.out_dir is not None:
            from .outputs import make_folder

            make_folder(run_options.out_dir)
        shown = not (run_options.quiet or run_options.json_)
        with render.LossProgress(options.steps, enabled=shown) as progress:
            outcome = learn(
                options,
                inputs,
                read=ReadOptions(max_pixels=run_options.max_pixels),
                targets=targets,
                force=run_options.force,
                skip_existing=run_options.skip_existing,
                on_step=progress.update,
            )
        if outcome.learned is not None and shown:
            render.render_learned(outcome.learned, options.label)
        self._pending = _Pending(f"cnnfilters learn {options.label}")
        self.kernels = outcome.kernels
        return outcome.report

    def backprop(
        self,
        sizes: tuple[int, ...],
        activation: str,
        *,
        seed: int = 0,
        points: int = 8,
        from_image: Path | None = None,
    ) -> RunReport:
        """Check an MLP's backpropagation formulas; x from patches of ``from_image``."""
        from .backprop import check_backprop
        from .report import InputReport, RunReport
        from .runfiles import check_run_files

        options = self.options
        check_run_files(
            {"--report": options.report, "--html": options.html},
            inputs=[from_image] if from_image is not None else [],
            force=options.force,
        )
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
        self._pending, self.kernels = _Pending("cnnfilters backprop"), []
        return RunReport("backprop", [item], options=dict(outcome.info))

    # -- the end of every run ---------------------------------------------------------

    def finish(self, report: RunReport) -> int:
        """Say and write what the run found; returns its exit code.

        Errors go to stderr (unless said as the inputs finished), the table or
        the JSON to stdout, the report and the visual report to their files (an
        existing one replaced only with ``force``); a stopped run says what was
        not done.
        """
        pending, self._pending = self._pending or _Pending(f"cnnfilters {report.command}"), None
        if pending.dry_run:
            return report.exit_code
        options = self.options
        quiet = options.quiet or pending.to_stdout is not None
        streamed = pending.stream is not None
        code = _said(
            report,
            report_path=None if streamed else options.report,
            as_json=options.json_,
            quiet=quiet or options.jsonl,
            force=options.force,
            errors_shown=pending.errors_shown,
            wide=options.wide,
        )
        if streamed:
            try:
                pending.stream.close(report.stopped)
            except CnnFiltersError as exc:
                render.error(str(exc))
                code = max(code, exc.exit_code)
        summary = pending.summary
        if summary is not None:
            code = max(code, summary.exit_code)  # the counts, when the entries were not kept
            if pending.several and not quiet and sys.stderr.isatty():
                render.write_stderr(f"cnnfilters: {summary.line()}")
        if options.html is not None:
            code = max(
                code,
                self.write_html(options.html, [(report, self.kernels)], title=pending.title),
            )
        if summary is not None and summary.interrupted:
            word, code = stop_outcome(summary.terminated)
            render.error(f"{word}; {summary.not_done_text}")
        if pending.to_stdout is not None and pending.to_stdout.exists():
            _image_to_stdout(pending.to_stdout, options.out_format, quiet=options.quiet)
        return code

    def write_html(self, path: Path, runs: list, *, title: str) -> int:
        """Write the visual report; an error writing it is exit 3, like any output."""
        from .html import write_page

        try:
            write_page(
                path, runs, title=title, command_line=self.command_line, replace=self.options.force
            )
        except CnnFiltersError as exc:
            render.error(str(exc))
            return exc.exit_code
        return EXIT_OK


def _said(
    report: RunReport,
    *,
    report_path: Path | None,
    as_json: bool,
    quiet: bool,
    force: bool,
    errors_shown: bool,
    wide: bool,
) -> int:
    """Errors to stderr (unless shown as they came), the report to stdout and/or a file
    (an existing one replaced only with ``force``); the worst exit code of the inputs'."""
    from .atomic import atomic_write

    for item in report.inputs:
        if item.error and not errors_shown:
            render.error(item.error)
    text = report.to_json() if report_path is not None or as_json else ""
    if report_path is not None:
        try:
            atomic_write(
                report_path, lambda fh: fh.write(text.encode("utf-8") + b"\n"), replace=force
            )
        except CnnFiltersError as exc:
            render.error(str(exc))
            return EXIT_IO
    if as_json:
        sys.stdout.write(text + "\n")
    elif not quiet:
        written = sum(len(item.outputs) for item in report.inputs) + report.left_out_files
        from .table import render_table

        render_table(report, written=written, wide=wide)
    return report.exit_code


def _sources(inputs: list[Path], recursive: bool, scratch: Path | None) -> InputStream:
    """The run's inputs, streamed: a folder is read when the run gets to it."""
    from .inputs import stdin_source, stream_inputs

    def stdin() -> Source:
        if sys.stdin is None or sys.stdin.isatty():
            raise CnnFiltersError("-: no image on standard input (pipe one in)")
        assert scratch is not None  # made for a run that reads "-"
        return stdin_source(sys.stdin.buffer.read(), scratch)

    return stream_inputs(inputs, recursive=recursive, stdin=stdin)


def _check_outputs(command: Command, options: RunOptions, several: bool) -> bool:
    """Refuse -o combinations that cannot work; whether the image goes to stdout."""
    to_stdout = options.output is not None and os.fsdecode(options.output) == "-"
    if to_stdout and len(command.outputs()) != 1:
        raise CnnFiltersError(f"-o - writes one image; {command.name} writes several (use -o STEM)")
    if to_stdout and (options.json_ or options.jsonl or options.raw):
        raise CnnFiltersError("-o - puts the image on standard output: no --json/--jsonl/--raw")
    if options.output is not None and several:
        raise CnnFiltersError("-o/--output takes one input, got several; use --out-dir")
    if options.output is not None and options.out_dir is not None:
        raise CnnFiltersError("use either -o/--output or --out-dir, not both")
    if options.output is not None and not to_stdout and len(command.outputs()) == 1:
        from .formats import image_format

        image_format(options.output)  # -o names the file: its format, or exit 2
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
    options: RunOptions, *, quiet: bool, rename: Callable[[Any], None]
) -> Callable[[Any], None]:
    """What is said of each input as it finishes: its error or damage on stderr, and
    with --jsonl its JSON line on stdout."""

    def on_input(item) -> None:
        rename(item)
        if item.error:
            render.error(item.error)
        elif item.info.get("damaged") and not quiet:
            render.notice(
                f"{item.input}: damaged data read anyway, missing pixels were "
                f"filled ({item.info['damaged']})"
            )
        if options.jsonl:
            from .report import to_json

            sys.stdout.write(to_json(item.to_dict()) + "\n")
            sys.stdout.flush()

    return on_input


def _refuse_a_rerun(command: Command, sources: InputStream, settings: Settings) -> None:
    """One line, before any work, when outputs of the run exist already."""
    from .errors import OutputError
    from .run import existing_outputs

    count, first = existing_outputs(command, sources, settings)
    if count:
        some = "1 output exists" if count == 1 else f"{count} outputs exist"
        raise OutputError(
            f"{some} ({'first: ' if count > 1 else ''}{first}): use --force to replace "
            f"{'it' if count == 1 else 'them'} or --skip-existing to do the rest"
        )


def _dry_run(command: Command, sources: InputStream, settings: Settings) -> RunReport:
    """Each input's outputs, a line each, as they are planned; nothing is written.

    The report holds the refused inputs (said on stderr as they came)."""
    from .report import InputReport, RunReport
    from .run import plan_outputs

    refused: list[InputReport] = []
    for source, targets, refusal in plan_outputs(command, sources, settings):
        if refusal is not None:
            render.error(refusal.error)
            refused.append(refusal)
        for target in targets if refusal is None else []:
            sys.stdout.write(f"{os.fsdecode(source.path)} -> {os.fsdecode(target)}\n")
    return RunReport(command.name, refused)


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
    """``--report`` written as the inputs finish (see ``atomic.ReportStream``), or None;
    an existing file is replaced only with ``replace``."""
    if path is None:
        return None
    from ._version import __version__ as version
    from .atomic import ReportStream
    from .report import SCHEMA_VERSION

    head = {
        "schema": SCHEMA_VERSION,
        "command": command.name,
        "version": version,
        "options": command.options(),
    }
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
