"""The commands that read no image: ``kernels`` (the weights in torch layout),
``demo`` (every construction on the samples) and ``completion`` (the shell's
completion script); and ``--version``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import render
from .._version import __version__
from ..errors import CnnFiltersError
from .commands import app, command_line
from .exits import reports_errors
from .help import GroupedCommand
from .options import EXIT_CODES_HELP, ForceOpt, JsonOpt, QuietOpt, choices


@app.command(
    cls=GroupedCommand,
    epilog=EXIT_CODES_HELP,
    short_help="Every construction's weights, in torch layout.",
)
@reports_errors
def kernels(
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(
            help="One construction: grayscale, gradient, avgpool (or avgpoolK, avgpoolK-onehot); "
            "default: all.",
            show_default=False,
            metavar="NAME",
        ),
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
    old_format: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--format", hidden=True, help="Renamed: the extension of --export."),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Print the weight tensors of every construction, in torch layout.

    With --export FILE, write them (and each one's stride, padding and groups)
    for torch.nn.Conv2d: FILE.npz (loads with numpy) or FILE.json.
    """
    import json

    from ..kernels import construction_named, constructions, export_constructions

    if old_format is not None:
        raise CnnFiltersError(
            f"--format {old_format}: kernels --export takes its format from the file's "
            "extension (.npz or .json)"
        )
    if name is not None:
        chosen = [construction_named(name, kernel_size)]
    else:
        chosen = list(constructions(kernel_size).values())
    if export is not None:
        from ..atomic import atomic_write
        from ..runfiles import check_run_files

        fmt = export.suffix.lower().lstrip(".")
        if fmt not in ("npz", "json"):
            raise CnnFiltersError(f"--export {export}: name the file .npz or .json")
        check_run_files({"--export": export}, inputs=[], force=force)
        data = export_constructions(chosen, fmt)
        atomic_write(export, lambda fh: fh.write(data), replace=force)
        sys.stdout.write(f"wrote {len(chosen)} constructions to {export} ({fmt})\n")
        return
    if json_:
        sys.stdout.write(json.dumps([c.to_dict() for c in chosen], indent=2) + "\n")
        return
    render.render_kernels(chosen)


@app.command(
    cls=GroupedCommand,
    epilog=EXIT_CODES_HELP,
    short_help="Every construction on the bundled samples.",
)
@reports_errors
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
    from ..demo import run_demo

    summary = run_demo(out_dir, command_line=command_line())
    if json_:
        import json

        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    elif not quiet:
        render.render_demo(summary)
    raise typer.Exit(summary["exit_code"])


Shell = choices("Shell", ("bash", "zsh", "fish"))
COMPLETE_VAR = "_CNNFILTERS_COMPLETE"  # set by the completion script when it asks


@app.command(
    cls=GroupedCommand,
    epilog=EXIT_CODES_HELP,
    short_help="The shell completion script (bash, zsh or fish).",
)
@reports_errors
def completion(
    shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.", metavar="SHELL")],
) -> None:
    """Print the completion script of SHELL for commands, options and their choices.

    Load it from the shell's start-up file (see the examples); files are
    completed by the shell itself.
    """
    # Typer's own scripts: they ask the completions of main() (see cli.main).
    from typer._completion_shared import get_completion_script

    script = get_completion_script(
        prog_name="cnnfilters", complete_var=COMPLETE_VAR, shell=shell.value
    )
    sys.stdout.write(script.rstrip("\n") + "\n")


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
