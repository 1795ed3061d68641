"""``cnnfilters demo``: every construction on the bundled sample images."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from .activations import ACTIVATIONS
from .errors import EXIT_CHECK_FAILED, EXIT_OK
from .images import _atomic_write
from .pipeline import process

__all__ = ["run_demo", "sample_paths"]


def sample_paths() -> list[Path]:
    """The bundled sample images, in name order."""
    folder = resources.files("cnnfilters") / "samples"
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".png"))


def _is_colour(path: Path) -> bool:
    with Image.open(path) as image:
        return image.mode in ("RGB", "RGBA", "P")


def run_demo(out_dir: Path) -> dict[str, Any]:
    """Run each command on the samples, writing into ``out_dir/<command>/``.

    Returns a summary: per command, the number of inputs and checks, how many
    passed, the largest difference measured and where the JSON report is.
    The demo replaces its own earlier outputs in ``out_dir``.
    """
    samples = sample_paths()
    colour = [p for p in samples if _is_colour(p)]
    photos_and_chart = [p for p in samples if p.stem in ("chart", "clock_motion")]
    plan = [
        ("grayscale", colour, {"weights": "bt601"}),
        ("gradient", samples, {"padding": "zeros", "on": "gray"}),
        ("avgpool", samples, {"kernel_size": 4, "edge": "drop"}),
        ("avgpool", colour, {"kernel_size": 3, "edge": "partial"}),
        ("commute", photos_and_chart,
         {"activations": list(ACTIVATIONS), "kernel_size": 2, "stride": None, "on": "gradient"}),
    ]  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    commands = []
    worst = EXIT_OK
    for command, inputs, options in plan:
        label = command if command != "avgpool" else f"avgpool-k{options['kernel_size']}"
        folder = out_dir / label
        report = process(command, inputs, options, out_dir=folder, force=True)
        report_path = out_dir / f"{label}.json"
        text = report.to_json() + "\n"
        _atomic_write(report_path, lambda fh, text=text: fh.write(text.encode("utf-8")))
        checks = [c for item in report.inputs for c in item.checks]
        finite = [c for c in checks if c.tolerance != float("inf")]
        largest = max(finite, key=lambda c: c.max_abs, default=None)
        described = (
            f"{largest.max_abs:.4g} ({largest.name} vs {largest.reference})" if largest else "-"
        )
        codes = [item.exit_code for item in report.inputs if item.error]
        code = max(codes) if codes else (EXIT_OK if report.passed else EXIT_CHECK_FAILED)
        worst = max(worst, code)
        commands.append(
            {
                "command": command,
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
    return {"out_dir": os.fsdecode(out_dir), "commands": commands, "exit_code": worst}
