"""Help that reads at a glance: grouped options, examples that work, whole sentences,
and a command reference that is current."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from cnnfilters.cli import app
from cnnfilters.cli.help import EXAMPLES, PANELS

ROOT = Path(__file__).resolve().parent.parent
GROUP = get_command(app)
IMAGE_COMMANDS = ["grayscale", "gradient", "avgpool", "commute", "convolve"]


def _help(*args: str) -> str:
    done = CliRunner().invoke(app, [*args, "--help"], prog_name="cnnfilters", terminal_width=80)
    assert done.exit_code == 0, done.output
    return done.stdout


def test_the_command_reference_is_current():
    spec = importlib.util.spec_from_file_location("ref", ROOT / "scripts" / "command_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "COMMANDS.md").read_text() == module.reference(), (
        "docs/COMMANDS.md is out of date: run python scripts/command_reference.py"
    )


def test_the_command_list_gives_whole_sentences():
    listed = _help().split("Commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0] for line in listed] == list(GROUP.commands)
    for line in listed:
        assert line.rstrip().endswith((".", "?")) and not line.rstrip().endswith("..."), line


@pytest.mark.parametrize("name", list(GROUP.commands))
def test_each_command_has_examples_and_a_usage_as_typed(name):
    text = _help(name)
    usage = text.splitlines()[0]
    assert "{" not in usage and "}" not in usage, usage
    examples = text.split("Examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples == [f"  $ {line}" for line in EXAMPLES[name]]


@pytest.mark.parametrize("name", IMAGE_COMMANDS)
def test_an_image_command_shows_its_own_options_first_then_the_shared_in_panels(name):
    text = _help(name)
    sections = [
        line[:-1] for line in text.splitlines() if line.endswith(":") and not line[0].isspace()
    ]
    assert sections == [
        "Arguments",
        "Options",
        *(f"{panel} options" for panel in PANELS),
        "Examples",
    ]
    own = text.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
    assert "--out-dir" not in own and "--jobs" not in own


@pytest.mark.parametrize(("name", "example"), [(n, e) for n in EXAMPLES for e in EXAMPLES[n]])
def test_every_example_uses_options_its_command_has(name, example):
    words = shlex.split(example.split(">")[0])
    assert words[:2] == ["cnnfilters", name]
    command = GROUP.commands[name]
    known = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    for word in words[2:]:
        if word.startswith("-") and word != "-":
            assert word in known, f"{example}: {word} is not an option of {name}"


def _completions(words: str, index: int) -> list[str]:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "_CNNFILTERS_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(index),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cnnfilters"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_shell_completes_commands_options_and_choices():
    assert _completions("cnnfilters con", 1) == ["convolve"]
    assert _completions("cnnfilters convolve --ma", 2) == ["--map", "--max-pixels"]
    assert _completions("cnnfilters gradient --padding-mode ", 3) == [
        "zeros",
        "replicate",
        "reflect",
        "circular",
    ]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_completion_script_asks_cnnfilters(shell):
    script = CliRunner().invoke(app, ["completion", shell], prog_name="cnnfilters").stdout
    assert "_CNNFILTERS_COMPLETE=complete_" + shell in script.replace("'", "").replace('"', "")


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) < 15_000
    first = text.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert first == [
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/cnnfilters demo",
        'python3 -m venv .venv && .venv/bin/pip install ".[test]" && .venv/bin/pytest',
    ]


def test_names_agree_and_old_spellings_say_the_new_one(tmp_path, capsys):
    from helpers import run_cli

    sample = ROOT / "samples" / "chart.png"
    for name in ("avgpool", "commute", "learn", "kernels"):
        params = {opt for p in GROUP.commands[name].params for opt in p.opts}
        assert {"-k", "--kernel-size"} <= params, name
    for name in ("gradient", "convolve"):
        params = {opt for p in GROUP.commands[name].params for opt in p.opts}
        assert "--padding-mode" in params, name
    code, _, err = run_cli(capsys, "gradient", sample, "--padding", "reflect")
    assert (code, err) == (
        2,
        "cnnfilters: error: --padding reflect: gradient's padding is "
        "1 pixel; its mode is --padding-mode\n",
    )
    code, _, err = run_cli(capsys, "kernels", "--export", tmp_path / "k.npz", "--format", "json")
    assert code == 2 and "takes its format from the file's extension (.npz or .json)" in err
    code, _, err = run_cli(capsys, "kernels", "--export", tmp_path / "k.txt")
    assert code == 2 and "name the file .npz or .json" in err
    assert list(tmp_path.iterdir()) == []
    code, out, _ = run_cli(capsys, "kernels", "--export", tmp_path / "k.json")
    assert code == 0 and out.endswith("(json)\n")
