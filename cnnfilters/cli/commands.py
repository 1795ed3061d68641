"""The ``cnnfilters`` commands: each declares its own options, makes its command
object (which checks its values) and hands it to a
:class:`~cnnfilters.session.Session`, which runs it and ends the run.

numpy, Pillow and the library are imported inside the commands, so that
``--help`` and ``--version`` start fast.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..defaults import DEFAULT_MAX_PIXELS
from ..errors import CnnFiltersError, OptionError
from ..session import RunOptions, Session
from .exits import reports_errors
from .help import GroupedCommand
from .options import (
    EXIT_CODES_HELP,
    CommuteOn,
    CommutePictures,
    ConvolveOn,
    Edge,
    ForceOpt,
    GradientOn,
    HtmlOpt,
    Inputs,
    JsonOpt,
    LearnWhat,
    MaxPixelsOpt,
    OldPaddingOpt,
    Optimizer,
    OutDirOpt,
    OutputOpt,
    Padding,
    PictureMap,
    QuietOpt,
    ReportOpt,
    SkipExistingOpt,
    WideOpt,
    with_shared_options,
)

if TYPE_CHECKING:
    from ..commands import Command

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


DEFAULTS = RunOptions()  # what a command receives when its shared options are not given
ARGV: list[str] | None = None  # the arguments main() ran with, for the visual report


def command_line() -> str:
    """The command line as typed, for the visual report."""
    return shlex.join(["cnnfilters", *(ARGV if ARGV is not None else sys.argv[1:])])


def _made(make: Callable[..., Command], **values: Any) -> Command:
    """The command object; a value it refuses is named as the command line spells it."""
    try:
        return make(**values)
    except OptionError as exc:
        raise CnnFiltersError(f"--{exc.option.replace('_', '-')} {exc.reason}") from None


def _run(command: Command, inputs: list[Path], options: RunOptions) -> None:
    """Run an image command over its inputs, end the run, exit with its code."""
    with Session(options, command_line=command_line()) as session:
        code = session.finish(session.run(command, inputs))
    raise typer.Exit(code)


@app.command(
    cls=GroupedCommand, epilog=EXIT_CODES_HELP, short_help="Grayscale as a 1x1 convolution."
)
@reports_errors
@with_shared_options
def grayscale(
    inputs: Inputs,
    weights: Annotated[
        str, typer.Option("--weights", help="bt601 (0.299, 0.587, 0.114), bt709, or R,G,B.")
    ] = "bt601",
    options: RunOptions = DEFAULTS,
) -> None:
    """Grayscale as a 1x1 convolution. Writes {stem}.grayscale.png.

    Checked against the luma formula in float64 and, for bt601 on 8-bit
    input, Pillow's convert("L") (within 1 level).
    """
    from ..commands import GrayscaleOptions

    _run(GrayscaleOptions(weights=weights), inputs, options)


@app.command(
    cls=GroupedCommand,
    epilog=EXIT_CODES_HELP,
    short_help="Forward differences dy, dx as two 3x3 filters.",
)
@reports_errors
@with_shared_options
def gradient(
    inputs: Inputs,
    padding_mode: Annotated[
        Padding, typer.Option("--padding-mode", help="How the border is padded (1 pixel).")
    ] = Padding.zeros,
    on: Annotated[
        GradientOn, typer.Option("--on", help="The grayscale image, or each RGB channel.")
    ] = GradientOn.gray,
    old_padding: OldPaddingOpt = None,
    options: RunOptions = DEFAULTS,
) -> None:
    """Vertical and horizontal forward differences as two 3x3 conv filters.

    Writes {stem}.dy.png, {stem}.dx.png (0 at mid-gray 128) and
    {stem}.gradient.png (the magnitude). Checked against slicing differences:
    they must agree exactly.
    """
    from ..commands import GradientOptions

    if old_padding is not None:
        raise CnnFiltersError(
            f"--padding {old_padding}: gradient's padding is 1 pixel; its mode is --padding-mode"
        )
    _run(GradientOptions(padding=padding_mode.value, on=on.value), inputs, options)


@app.command(
    cls=GroupedCommand,
    epilog=EXIT_CODES_HELP,
    short_help="k x k average pooling as a stride-k convolution.",
)
@reports_errors
@with_shared_options
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
    options: RunOptions = DEFAULTS,
) -> None:
    """k x k average pooling as a stride-k convolution. Writes {stem}.avgpool{k}.png.

    Checked against reshape-mean (float) and Pillow's Image.reduce(k)
    (within 1 level).
    """
    from ..commands import AvgpoolOptions

    _run(AvgpoolOptions(kernel_size=kernel_size, edge=edge.value), inputs, options)


@app.command(
    cls=GroupedCommand,
    epilog=EXIT_CODES_HELP,
    short_help="Does an activation commute with max pooling?",
)
@reports_errors
@with_shared_options
def commute(
    inputs: Inputs,
    activation: Annotated[
        list[str] | None,
        typer.Option(
            "-a", "--activation", help="An activation name (repeatable), or 'all' (the default)."
        ),
    ] = None,
    kernel_size: Annotated[
        int, typer.Option("-k", "--kernel-size", min=1, help="Max-pooling window.")
    ] = 2,
    stride: Annotated[
        int | None,
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
    pictures: Annotated[
        CommutePictures,
        typer.Option(
            "--pictures",
            help="auto: the difference of each activation that need not commute; all: both "
            "orders and their difference for every activation; none.",
        ),
    ] = CommutePictures.auto,
    options: RunOptions = DEFAULTS,
) -> None:
    """Does an activation commute with max pooling? sigma(maxpool(x)) vs maxpool(sigma(x)).

    A nondecreasing activation must commute exactly (else exit 1); for the
    others the first differing window is reported. Writes {stem}.{act}.diff.png
    (0 at mid-gray 128) for each activation that need not commute; with
    --pictures all also {stem}.{act}.act-of-pool.png and .pool-of-act.png.
    """
    from ..activations import ACTIVATIONS
    from ..commands import CommuteOptions

    names = activation or ["all"]
    chosen = tuple(ACTIVATIONS) if "all" in names else tuple(names)
    command = CommuteOptions(
        activations=chosen,
        kernel_size=kernel_size,
        stride=stride,
        on=on.value,
        pictures=pictures.value,
    )
    _run(command, inputs, options)


@app.command(
    cls=GroupedCommand, epilog=EXIT_CODES_HELP, short_help="Any kernel through the engine."
)
@reports_errors
@with_shared_options
def convolve(
    inputs: Inputs,
    kernel: Annotated[
        str | None,
        typer.Option(
            "--kernel",
            help="Rows by ';', values by ',' or spaces (\"0,0,0;0,-1,0;0,1,0\"), or a name: "
            "f1, f2, sobel-x, sobel-y, scharr-x, scharr-y, laplacian, box3, gaussian5, sharpen.",
        ),
    ] = None,
    kernel_file: Annotated[
        Path | None,
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
        ConvolveOn,
        typer.Option(
            "--on", help="auto: the input's own channels (colour stays colour); gray; rgb."
        ),
    ] = ConvolveOn.auto,
    normalize: Annotated[
        bool, typer.Option("--normalize", help="Divide the kernel by the sum of its weights.")
    ] = False,
    picture: Annotated[
        PictureMap,
        typer.Option(
            "--map",
            help="How results become pixels: clip (rounded, clipped to the levels), signed "
            "(0 at mid-gray), scale (the range onto the levels); auto: signed for weights "
            "that sum to 0, else clip.",
        ),
    ] = PictureMap.auto,
    options: RunOptions = DEFAULTS,
) -> None:
    """Any kernel through the engine. Writes {stem}.convolve.png.

    Checked against a direct correlation (np.pad, sliding windows, einsum) in
    float64. A colour input stays colour. Results are clipped to the levels,
    or for a kernel whose weights sum to 0 drawn with 0 at mid-gray (--map);
    the notes under the table say which.
    """
    from ..commands import ConvolveOptions
    from ..kernels import load_kernel_file, parse_kernel

    if (kernel is None) == (kernel_file is None):
        raise CnnFiltersError("give exactly one of --kernel and --kernel-file")
    weights = parse_kernel(kernel) if kernel is not None else load_kernel_file(kernel_file)
    try:
        padding_value = padding if padding == "same" else int(padding)
    except ValueError:
        raise CnnFiltersError(f"--padding must be an int or 'same', got {padding!r}") from None
    command = _made(
        ConvolveOptions,
        kernel=weights,
        stride=stride,
        padding=padding_value,
        padding_mode=padding_mode.value,
        bias=bias,
        on=on.value,
        normalize=normalize,
        map=picture.value,
    )
    _run(command, inputs, options)


@app.command(
    cls=GroupedCommand,
    epilog=EXIT_CODES_HELP,
    short_help="Check an MLP's backpropagation formulas.",
)
@reports_errors
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
        Path | None,
        typer.Option(
            "--from-image", help="Take x from random patches of this image.", readable=False
        ),
    ] = None,
    report: ReportOpt = None,
    html: HtmlOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    wide: WideOpt = False,
    force: ForceOpt = False,
) -> None:
    """Check the backpropagation formulas of an MLP numerically.

    For every layer: dy_L/db_l, dy_L/dA_l and dy_l/dy_(l-1) by the
    formulas, against central differences (relative error <= 1e-6) and the
    gradients against reverse-mode autodiff written separately (<= 1e-12).
    """
    try:
        sizes = tuple(int(w) for w in widths.replace(" ", "").split(",") if w)
    except ValueError:
        raise CnnFiltersError(
            f"--widths must be integers separated by commas, got {widths!r}"
        ) from None
    shared = RunOptions(report=report, html=html, json_=json_, quiet=quiet, wide=wide, force=force)
    with Session(shared, command_line=command_line()) as session:
        run = session.backprop(sizes, activation, seed=seed, points=points, from_image=from_image)
        code = session.finish(run)
    raise typer.Exit(code)


@app.command(
    cls=GroupedCommand,
    epilog=EXIT_CODES_HELP,
    short_help="Learn a construction's weights back, or a pair's kernel.",
)
@reports_errors
def learn(
    what: Annotated[
        LearnWhat,
        typer.Argument(
            help="gradient, grayscale, avgpool, or pair (then IMAGES is BEFORE AFTER).",
            show_default=False,
            metavar="WHAT",
        ),
    ],
    inputs: Inputs,
    k: Annotated[
        int | None,
        typer.Option(
            "-k",
            "--kernel-size",
            help="avgpool: the window (2); pair: the kernel's odd side (3).",
        ),
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
    wide: WideOpt = False,
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
    from ..commands import LearnOptions

    if lr.strip().lower() == "auto":
        rate = None
    else:
        try:
            rate = float(lr)
        except ValueError:
            raise CnnFiltersError(f"--lr must be a number or auto, got {lr!r}") from None
    basis = "rgb" if what.value == "grayscale" else on.value
    learning = LearnOptions(
        what=what.value,
        k=k,
        on=basis,
        optimizer=optimizer.value,
        lr=rate,
        steps=steps,
        tol=tol,
        seed=seed,
        patches=patches,
        atol=atol,
    )
    shared = RunOptions(
        output=output,
        out_dir=out_dir,
        force=force,
        skip_existing=skip_existing,
        report=report,
        html=html,
        json_=json_,
        quiet=quiet,
        wide=wide,
        max_pixels=max_pixels,
    )
    with Session(shared, command_line=command_line()) as session:
        code = session.finish(session.learn(learning, inputs))
    raise typer.Exit(code)
