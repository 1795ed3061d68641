"""Write docs/COMMANDS.md, the command reference, from the command line itself.

Each command's help, exactly as ``cnnfilters COMMAND --help`` prints it at 80
columns. ``tests/test_help.py`` fails when the file is not what this script
writes, so a changed option cannot leave the reference behind.

Usage, from the checkout's root::

    python scripts/command_reference.py          # writes docs/COMMANDS.md
    python scripts/command_reference.py --check  # exits 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "COMMANDS.md"


def reference() -> str:
    """The Markdown text of the reference."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from cnnfilters.cli import app

    group = get_command(app)
    runner = CliRunner()
    parts = [
        "# Command reference\n",
        "Every command's `--help`, as it prints at 80 columns. Written by",
        "`python scripts/command_reference.py` (a test checks that it is current).\n",
    ]
    for name in ["", *group.commands]:
        args = [name, "--help"] if name else ["--help"]
        done = runner.invoke(
            app, args, prog_name="cnnfilters", terminal_width=80, env={"COLUMNS": "80"}
        )
        if done.exit_code != 0:
            raise RuntimeError(f"cnnfilters {name} --help: exit {done.exit_code}")
        title = f"cnnfilters {name}".strip()
        parts += [f"## {title}\n", "```text", done.stdout.rstrip(), "```\n"]
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 if the file is out of date.")
    args = parser.parse_args()
    text = reference()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run {Path(__file__).name}")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
