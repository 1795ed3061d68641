"""The ``cnnfilters`` command line (Typer): parses, calls the library, saves, renders."""

from __future__ import annotations

import typer

from ._version import __version__

app = typer.Typer(
    name="cnnfilters",
    help="Classic image filters built as convolution layers, each checked against a reference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cnnfilters {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Classic image filters built as convolution layers, each checked against a reference."""


def main() -> None:
    app()
