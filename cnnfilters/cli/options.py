"""The command line's options, declared once: their Typer annotations and choices.

The choices and defaults come from :mod:`cnnfilters.defaults`, which imports
nothing, so that ``--help`` starts fast. The options every image command
shares are the fields of :class:`cnnfilters.session.RunOptions`;
:func:`with_shared_options` adds them to each command's signature from
:data:`SHARED`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..defaults import (
    ALPHA_POLICIES,
    COMMUTE_INPUTS,
    CONVOLVE_BASES,
    EDGE_MODES,
    GRADIENT_BASES,
    LEARN_TARGETS,
    OPTIMIZERS,
    OUTPUT_FORMATS,
    PADDING_MODES,
    PICTURE_MAPS,
)

EXIT_CODES_HELP = (
    "Exit codes: 0 all done and every check passed; 1 a check failed; 2 usage error; "
    "3 an input could not be read or an output could not be written; 130 interrupted; "
    "143 terminated; 70 an internal error."
)


def choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A string enum of the library's own choices, for Typer to list and check."""
    return Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


Padding = choices("Padding", PADDING_MODES)
GradientOn = choices("GradientOn", GRADIENT_BASES)
Edge = choices("Edge", EDGE_MODES)
AlphaPolicy = choices("AlphaPolicy", ALPHA_POLICIES)
OutFormat = choices("OutFormat", OUTPUT_FORMATS)
CommuteOn = choices("CommuteOn", COMMUTE_INPUTS)
CommutePictures = choices("CommutePictures", ("auto", "all", "none"))
ConvolveOn = choices("ConvolveOn", CONVOLVE_BASES)
PictureMap = choices("PictureMap", PICTURE_MAPS)


# Options shared by every image command.
Inputs = Annotated[
    list[Path],
    # readable=False: an unreadable input is that input's error (exit 3), found when its
    # turn comes, not a usage error that stops the whole batch before any work.
    typer.Argument(
        help="Image files or folders (PNG, JPEG, TIFF, GIF, BMP, WebP); - for standard input.",
        show_default=False,
        readable=False,
        metavar="IMAGES...",
    ),
]
OutputOpt = Annotated[
    Optional[Path],  # noqa: UP045 (Typer reads the annotation at run time on Python 3.10)
    typer.Option(
        "-o",
        "--output",
        help="One input only: the output file, or the stem for commands that write several.",
        readable=False,
        rich_help_panel="Output",
    ),
]
OutDirOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--out-dir",
        help="Write outputs to this folder (created if missing).",
        readable=False,
        rich_help_panel="Output",
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Overwrite existing outputs.", rich_help_panel="Output")
]
RawOpt = Annotated[
    bool,
    typer.Option(
        "--raw",
        help="Also write each float result as .npy (exact values).",
        rich_help_panel="Output",
    ),
]
ReportOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--report",
        help="Write the JSON report to this file.",
        readable=False,
        rich_help_panel="Report",
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the JSON report on stdout instead of the table.",
        rich_help_panel="Report",
    ),
]
WideOpt = Annotated[
    bool,
    typer.Option(
        "--wide",
        help="The table with every figure (mean, RMSE, PSNR, tolerance).",
        rich_help_panel="Report",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("-q", "--quiet", help="Print nothing but errors.", rich_help_panel="Report")
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Refuse images with more pixels than this.",
        rich_help_panel="Decoding",
    ),
]
HtmlOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--html",
        help="Write a self-contained visual report (HTML) to this file.",
        readable=False,
        rich_help_panel="Report",
    ),
]
RecursiveOpt = Annotated[
    bool,
    typer.Option(
        "-r",
        "--recursive",
        help="Descend into the folders given as inputs.",
        rich_help_panel="Batch",
    ),
]
NameOpt = Annotated[
    str,
    typer.Option(
        "--name",
        help="Output file names: {stem}, {output}, {ext} (the input's).",
        rich_help_panel="Output",
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="List what would be written; do nothing.", rich_help_panel="Batch"
    ),
]
SkipExistingOpt = Annotated[
    bool,
    typer.Option(
        "--skip-existing",
        help="Skip inputs whose outputs all exist (reruns).",
        rich_help_panel="Batch",
    ),
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
        rich_help_panel="Batch",
    ),
]
FailFastOpt = Annotated[
    bool, typer.Option("--fail-fast", help="Stop at the first failure.", rich_help_panel="Batch")
]
SchedulerOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--scheduler",
        help="Run on a Dask cluster: tcp://HOST:PORT (extra [dask]).",
        rich_help_panel="Batch",
    ),
]
FormatOpt = Annotated[
    OutFormat,
    typer.Option(
        "--format", help="Image format for -o - (standard output).", rich_help_panel="Output"
    ),
]
JsonlOpt = Annotated[
    bool,
    typer.Option(
        "--jsonl", help="Print one JSON line per input as it finishes.", rich_help_panel="Report"
    ),
]
AlphaOpt = Annotated[
    AlphaPolicy,
    typer.Option(
        "--alpha",
        help="keep: pass alpha through (pooled by avgpool); drop: ignore it; "
        "flatten: composite on --background first.",
        rich_help_panel="Decoding",
    ),
]
BackgroundOpt = Annotated[
    str,
    typer.Option(
        "--background",
        help="Colour for --alpha flatten: white, black, #rrggbb or R,G,B.",
        rich_help_panel="Decoding",
    ),
]
NoOrientOpt = Annotated[
    bool,
    typer.Option(
        "--no-auto-orient",
        help="Keep the stored pixels; ignore the EXIF orientation.",
        rich_help_panel="Decoding",
    ),
]
AllFramesOpt = Annotated[
    bool,
    typer.Option(
        "--all-frames",
        help="Every frame of a multi-frame file (default: the first).",
        rich_help_panel="Decoding",
    ),
]
TruncatedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-truncated",
        help="Read truncated or damaged files anyway, filling what is missing (with a notice).",
        rich_help_panel="Decoding",
    ),
]
CompressOpt = Annotated[
    int,
    typer.Option(
        "--compress-level",
        min=0,
        max=9,
        help="PNG compression, 0-9 (1: fast, 9: smallest).",
        rich_help_panel="Output",
    ),
]

# A spelling that once meant something else: refused with the new one's name.
OldPaddingOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--padding", hidden=True, help="Renamed --padding-mode."),
]
LearnWhat = choices("LearnWhat", LEARN_TARGETS)
Optimizer = choices("Optimizer", OPTIMIZERS)

# The options every image command shares: each field of RunOptions, declared.
SHARED: dict[str, Any] = {
    "output": OutputOpt,
    "out_dir": OutDirOpt,
    "force": ForceOpt,
    "raw": RawOpt,
    "report": ReportOpt,
    "html": HtmlOpt,
    "json_": JsonOpt,
    "quiet": QuietOpt,
    "wide": WideOpt,
    "max_pixels": MaxPixelsOpt,
    "alpha": AlphaOpt,
    "background": BackgroundOpt,
    "no_auto_orient": NoOrientOpt,
    "all_frames": AllFramesOpt,
    "allow_truncated": TruncatedOpt,
    "compress_level": CompressOpt,
    "recursive": RecursiveOpt,
    "name": NameOpt,
    "dry_run": DryRunOpt,
    "skip_existing": SkipExistingOpt,
    "jobs": JobsOpt,
    "fail_fast": FailFastOpt,
    "jsonl": JsonlOpt,
    "scheduler": SchedulerOpt,
    "out_format": FormatOpt,
}
# Their defaults as Typer shows and checks them: a choice is an enum member.
_CHOICES = {"alpha": AlphaPolicy, "out_format": OutFormat}


def with_shared_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` every shared option; it receives them as ``options``, a
    :class:`~cnnfilters.session.RunOptions`.

    The options are added to the signature Typer reads, so each command
    declares only its own.
    """
    from ..session import RunOptions

    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "options"]
    fields = dataclasses.fields(RunOptions)
    added = []
    for f in fields:
        default = _CHOICES[f.name](f.default) if f.name in _CHOICES else f.default
        added.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=SHARED[f.name]
            )
        )

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        values = {f.name: kwargs.pop(f.name) for f in fields if f.name in kwargs}
        values = {k: v.value if isinstance(v, Enum) else v for k, v in values.items()}
        return command(*args, **kwargs, options=RunOptions(**values))

    wrapper.__signature__ = signature.replace(parameters=own + added)
    hints = {p.name: p.annotation for p in own}
    hints.update(SHARED)
    wrapper.__annotations__ = {**hints, "return": None}
    del wrapper.__wrapped__  # Typer must read the new signature, not the command's
    return wrapper
