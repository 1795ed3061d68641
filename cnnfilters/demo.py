"""``cnnfilters demo``: every construction on the bundled sample images."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from .commands import (
    AvgpoolOptions,
    Command,
    CommuteOptions,
    GradientOptions,
    GrayscaleOptions,
    LearnOptions,
)
from .errors import EXIT_OK
from .report import RunReport
from .session import RunOptions, Session

__all__ = ["run_demo", "sample_paths"]


def sample_paths() -> list[Path]:
    """The bundled sample images, in name order."""
    try:
        folder = resources.files("cnnfilters.samples")
    except ModuleNotFoundError:  # an editable install: the checkout's own folder
        folder = Path(__file__).resolve().parent.parent / "samples"
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".png"))


def _is_colour(path: Path) -> bool:
    with Image.open(path) as image:
        return image.mode in ("RGB", "RGBA", "P")


def run_demo(out_dir: Path, *, command_line: str = "cnnfilters demo") -> dict[str, Any]:
    """Run each command on the samples, writing into ``out_dir/<command>/``.

    Returns a summary: per command, the number of inputs and checks, how many
    passed, the largest difference measured and where the JSON report is.
    Also writes ``out_dir/index.html``, the visual report of every run.
    The demo replaces its own earlier outputs in ``out_dir``.
    """
    samples = sample_paths()
    colour = [p for p in samples if _is_colour(p)]
    photos_and_chart = [p for p in samples if p.stem in ("chart", "clock_motion")]
    plan: list[tuple[Command, list[Path]]] = [
        (GrayscaleOptions(weights="bt601"), colour),
        (GradientOptions(padding="zeros", on="gray"), samples),
        (AvgpoolOptions(kernel_size=4, edge="drop"), samples),
        (AvgpoolOptions(kernel_size=3, edge="partial"), colour),
        (CommuteOptions(kernel_size=2, stride=None, on="gradient"), photos_and_chart),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    commands = []
    runs = []
    worst = EXIT_OK
    for command, inputs in plan:
        options = command.options()
        label = command.name if command.name != "avgpool" else f"avgpool-k{options['kernel_size']}"
        report_path = out_dir / f"{label}.json"
        # The demo's own earlier outputs are replaced; its page needs every entry's maps.
        chosen = RunOptions(
            out_dir=out_dir / label, force=True, report=report_path, quiet=True, jobs=1
        )
        with Session(chosen, command_line=command_line, collect=True) as session:
            report = session.run(command, inputs)
            worst = max(worst, session.finish(report))
        runs.append((report, command.kernels()))
        checks = [c for item in report.inputs for c in item.checks]
        finite = [c for c in checks if c.tolerance != float("inf")]
        largest = max(finite, key=lambda c: c.max_abs, default=None)
        described = (
            f"{largest.max_abs:.4g} ({largest.name} vs {largest.reference})" if largest else "-"
        )
        commands.append(
            {
                "command": command.name,
                "options": ", ".join(f"{k}={v}" for k, v in options.items() if k != "activations"),
                "inputs": len(inputs),
                "checks": len(checks),
                "checks_passed": sum(c.passed for c in checks),
                "largest_difference": described,
                "outputs": sum(len(item.outputs) for item in report.inputs),
                "report": os.fsdecode(report_path),
                "errors": [item.error for item in report.inputs if item.error],
            }
        )
    photo = next((p for p in samples if p.stem == "ihc"), colour[0])
    learned = RunOptions(out_dir=out_dir / "learn", force=True, quiet=True)
    for options in (
        LearnOptions(what="grayscale", on="rgb"),
        LearnOptions(what="gradient"),
        LearnOptions(what="avgpool", k=3),
    ):
        with Session(learned, command_line=command_line) as session:
            report = session.learn(options, [photo])
            worst = max(worst, session.finish(report))
        runs.append((report, session.kernels))
        commands.append(_learn_row(options, report))
    with Session(RunOptions(force=True, quiet=True), command_line=command_line) as session:
        backprop = session.backprop((4, 8, 8, 1), "sigmoid", points=8)
        worst = max(worst, session.finish(backprop))
        runs.append((backprop, []))
        index = out_dir / "index.html"
        worst = max(worst, session.write_html(index, runs, title="cnnfilters demo"))
    checks = backprop.inputs[0].checks
    commands.append(
        {
            "command": "backprop",
            "options": "widths=4,8,8,1, activation=sigmoid",
            "inputs": 1,
            "checks": len(checks),
            "checks_passed": sum(c.passed for c in checks),
            "largest_difference": f"{max(c.max_abs for c in checks):.3g} (relative)",
            "outputs": 0,
            "report": os.fsdecode(index),
            "errors": [],
        }
    )
    return {
        "out_dir": os.fsdecode(out_dir),
        "html": os.fsdecode(index),
        "commands": commands,
        "exit_code": worst,
    }


def _learn_row(options: LearnOptions, report: RunReport) -> dict[str, Any]:
    """The demo's row for one ``learn``: steps, seconds and the weights' distance."""
    item = report.inputs[-1]
    checks = item.checks
    first = checks[0] if checks else None
    info = item.info
    described = (
        f"{first.max_abs:.2g} (learned weights vs the construction; "
        f"{info.get('steps')} steps, {info.get('seconds', 0):.1f} s)"
        if first is not None
        else (item.error or "-")
    )
    return {
        "command": "learn",
        "options": options.label,
        "inputs": 1,
        "checks": len(checks),
        "checks_passed": sum(c.passed for c in checks),
        "largest_difference": described,
        "outputs": len(item.outputs),
        "report": "",
        "errors": [item.error] if item.error else [],
    }
