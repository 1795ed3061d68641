"""Help that reads at a glance: a command's own options first, the shared ones in
panels (Output, Report, Batch, Decoding), then examples and the exit codes.

Plain text, as Click writes it (Rich's help would cost every ``--help`` its
import): :class:`GroupedCommand` only sorts the options into sections by
their ``rich_help_panel``.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

__all__ = ["EXAMPLES", "GroupedCommand"]

# The panels of the shared options, in the order they are shown (after the command's own).
PANELS = ("Output", "Report", "Batch", "Decoding")

EXAMPLES = {
    "grayscale": [
        "cnnfilters grayscale photo.jpg",
        "cnnfilters grayscale scans/ -r --out-dir gray -j auto",
        "cnnfilters grayscale photo.jpg --weights bt709 -o luma.tif",
    ],
    "gradient": [
        "cnnfilters gradient photo.png",
        "cnnfilters gradient photo.png --on rgb --padding-mode reflect --html report.html",
    ],
    "avgpool": [
        "cnnfilters avgpool photo.png -k 4",
        "cnnfilters avgpool photo.png -k 3 --edge partial -o small.webp",
    ],
    "commute": [
        "cnnfilters commute photo.png",
        "cnnfilters commute photo.png -a relu -a gelu -k 3 --stride 2",
    ],
    "convolve": [
        'cnnfilters convolve photo.png --kernel "0,-1,0;-1,5,-1;0,-1,0"',
        "cnnfilters convolve photo.png --kernel sobel-x --on gray",
        "cnnfilters convolve photo.png --kernel-file blur.npy --map scale",
    ],
    "backprop": [
        "cnnfilters backprop",
        "cnnfilters backprop --widths 3,16,1 -a tanh --points 32",
    ],
    "learn": [
        "cnnfilters learn gradient photo.png",
        "cnnfilters learn avgpool photo.png -k 3 --html learned.html",
        "cnnfilters learn pair before.png after.png -k 5",
    ],
    "kernels": [
        "cnnfilters kernels",
        "cnnfilters kernels avgpool3 --json",
        "cnnfilters kernels --export weights.npz",
    ],
    "demo": ["cnnfilters demo", "cnnfilters demo --out-dir /tmp/demo --json"],
    "completion": [
        "cnnfilters completion bash > ~/.bash_completion.d/cnnfilters",
        "cnnfilters completion zsh > ~/.zfunc/_cnnfilters",
    ],
}


class GroupedCommand(TyperCommand):
    """A command whose help puts its own options first and the shared ones in panels,
    with its examples before the exit codes."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, sections = [], {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
                continue
            panel = getattr(param, "rich_help_panel", None) or "Options"
            sections.setdefault(panel, []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        order = ["Options", *PANELS]
        for panel in sorted(sections, key=lambda p: order.index(p) if p in order else len(order)):
            if sections[panel]:
                with formatter.section(f"{panel} options" if panel in PANELS else panel):
                    formatter.write_dl(sections[panel])

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """The usage line as a user types it: ``IMAGES...``, not Typer's ``{IMAGES...}``."""
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        examples = EXAMPLES.get(self.name or "", [])
        if examples:
            with formatter.section("Examples"):
                for line in examples:  # as they are typed: never rewrapped
                    formatter.write(f"{'':>{formatter.current_indent}}$ {line}\n")
        super().format_epilog(ctx, formatter)
