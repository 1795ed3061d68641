"""The visual report: one self-contained HTML page per run.

Images are embedded as ``data:`` URIs, styles are inline, there is no
script and no font or image from the network: the page renders offline and
prints. For each input: the input, each output, each check's reference and a
map of where it differs, the kernels, the figures and a pass/fail badge.
Every text, file names included, is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
from collections.abc import Sequence
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

from .report import Check, InputReport, RunReport

__all__ = ["difference_colours", "render_page", "write_page"]

THUMBNAIL = 160  # pixels on the longer side: 200 inputs stay well under 30 MB
PLOT = 640  # a loss curve is read, not glanced at
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
MAX_OUTPUTS_SHOWN = 12

# Difference map colours: exactly zero, within tolerance (light to dark
# blue as the difference grows towards the tolerance), beyond it.
ZERO = (236, 236, 236)
WITHIN_LOW, WITHIN_HIGH = (198, 219, 239), (33, 102, 172)
BEYOND = (215, 25, 28)
ALLOWED = (253, 174, 97)  # differs where differing is allowed (a non-monotone activation)
NOT_A_NUMBER = (197, 27, 125)

STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em;
       color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.2em; margin: 1.6em 0 .4em; border-top: 1px solid #ccc; padding-top: .8em; }
h3 { font-size: 1em; margin: 1em 0 .3em; }
code, pre, .num { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
.num { white-space: nowrap; }
pre { background: #f6f6f6; padding: .5em; white-space: pre-wrap; word-break: break-all; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 9px; color: #fff;
         font-weight: 600; font-size: 12px; }
.pass { background: #1a7f37; } .fail { background: #cf222e; } .error { background: #6e7781; }
.info { background: #0969da; }
.figures { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure { margin: 0; text-align: center; }
figure img { display: block; border: 1px solid #ccc; max-width: 160px; max-height: 160px; }
img.map { image-rendering: pixelated; width: 160px; height: auto; }
figcaption { font-size: 11px; color: #555; max-width: 170px; overflow-wrap: break-word; }
figure img.plot { max-width: 480px; max-height: 360px; }
figure.plot figcaption { max-width: 480px; }
.path { color: #666; font-size: 12px; margin: 0 0 .4em; overflow-wrap: anywhere; }
.legend { text-align: left; margin-top: 2px; }
.legend span { display: inline-block; width: 14px; height: 10px; border: 1px solid #999;
               vertical-align: middle; margin: 0 3px 0 0; }
.kernel td { min-width: 2.5em; }
.notice { color: #555; font-size: 12px; margin: .1em 0; }
.summary td, .summary th { text-align: left; }
@media print { figure img { max-width: 120px; } h2 { page-break-before: auto; } }
"""


def _data_uri(image: Image.Image) -> str:
    """PNG, or JPEG when that is much smaller (photographs)."""
    png = io.BytesIO()
    image.save(png, format="PNG", optimize=True)
    data, kind = png.getvalue(), "png"
    if len(data) > 24_000 and image.mode in ("L", "RGB"):
        jpeg = io.BytesIO()
        image.save(jpeg, format="JPEG", quality=82)
        if len(jpeg.getvalue()) < len(data):
            data, kind = jpeg.getvalue(), "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _thumbnail_of_file(path: str, side: int = THUMBNAIL) -> str | None:
    try:
        with Image.open(path) as image:
            image.draft("RGB", (side, side))
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            image.thumbnail((side, side))
            return _data_uri(image)
    except Exception:  # an unreadable input is already reported as an error
        return None


def _thumbnail_of_array(values: np.ndarray) -> str:
    """A reference map (C, h, w) drawn as an image: signed values around mid-gray."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    if values.shape[0] not in (1, 3):
        values = values[:1]
    low, high = float(values.min(initial=0)), float(values.max(initial=0))
    if low < 0:
        scale = max(abs(low), abs(high)) or 1.0
        levels = 127.5 + values * (127.0 / scale)
    else:
        levels = values * (255.0 / (high or 1.0))
    pixels = np.clip(np.rint(levels), 0, 255).astype(np.uint8)
    array = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    image = Image.fromarray(np.ascontiguousarray(array))
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return _data_uri(image)


def difference_colours(diff: np.ndarray, tolerance: float, *, allowed: bool = False) -> np.ndarray:
    """Colour a map of absolute differences: (h, w) -> (h, w, 3) uint8.

    Exactly 0 is light gray; within the tolerance a blue that darkens on a
    log scale from a millionth of the tolerance to the tolerance itself; beyond
    it red (orange where differing is allowed). An all-zero map is one flat
    gray: nothing is stretched to full contrast.
    """
    diff = np.asarray(diff, dtype=np.float64)
    out = np.empty((*diff.shape, 3), dtype=np.uint8)
    out[...] = ZERO
    finite_tolerance = math.isfinite(tolerance) and tolerance > 0
    within = (diff > 0) & (diff <= tolerance) if finite_tolerance else np.zeros_like(diff, bool)
    if within.any():
        low = tolerance * 1e-6
        t = np.clip(np.log10(np.maximum(diff[within], low) / low) / 6.0, 0, 1)[:, None]
        out[within] = (np.array(WITHIN_LOW) * (1 - t) + np.array(WITHIN_HIGH) * t).astype(np.uint8)
    beyond = (diff > tolerance) if not allowed else (diff > 0)
    out[beyond & ~within] = ALLOWED if allowed else BEYOND
    out[~np.isfinite(diff)] = NOT_A_NUMBER
    return out


def _heatmap(check: Check) -> str | None:
    diff = None if check.maps is None else check.maps.difference
    if diff is None:
        return None
    allowed = check.extra.get("monotonicity") not in (None, "nondecreasing")
    colours = difference_colours(diff, check.tolerance, allowed=allowed)
    return _data_uri(Image.fromarray(colours))


def _legend(check: Check) -> str:
    allowed = check.extra.get("monotonicity") not in (None, "nondecreasing")
    parts = [f'<span style="background:rgb{ZERO}"></span>0 (identical)<br>']
    if math.isfinite(check.tolerance) and check.tolerance > 0:
        parts.append(
            f'<span style="background:linear-gradient(90deg, rgb{WITHIN_LOW}, '
            f'rgb{WITHIN_HIGH})"></span>0 &lt; d &le; {check.tolerance:.3g}<br>'
        )
    if allowed:
        parts.append(f'<span style="background:rgb{ALLOWED}"></span>differs (allowed)')
    else:
        parts.append(f'<span style="background:rgb{BEYOND}"></span>d &gt; {check.tolerance:.3g}')
    return f'<div class="legend">{"".join(parts)}</div>'


def _badge(passed: bool | None, text: str | None = None) -> str:
    if passed is None:
        return f'<span class="badge error">{escape(text or "ERROR")}</span>'
    kind = "pass" if passed else "fail"
    return f'<span class="badge {kind}">{escape(text or kind.upper())}</span>'


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    if isinstance(value, float) and math.isinf(value):
        return "&infin;"
    return escape(f"{value:.{digits}g}")


def _figure(uri: str | None, caption: str, css: str = "", extra: str = "") -> str:
    """An image with its (escaped) caption; ``extra`` is trusted HTML added below it."""
    if uri is None:
        return ""
    return (
        f'<figure class="{css}"><img class="{css}" src="{uri}" alt="{escape(caption)}">'
        f"<figcaption>{_breakable(caption)}{extra}</figcaption></figure>"
    )


def _breakable(text: str) -> str:
    """Escaped text that may wrap after a dot, a slash or an underscore (a file name's
    parts), never inside a word."""
    return re.sub(r"([./_])", r"\1<wbr>", escape(text))


def _kernel_table(title: str, matrix: np.ndarray) -> str:
    rows = "".join(
        "<tr>" + "".join(f'<td class="num">{escape(f"{v:.4g}")}</td>' for v in row) + "</tr>"
        for row in np.asarray(matrix, dtype=np.float64)
    )
    caption = f"<figcaption>{escape(title)}</figcaption>"
    return f'<figure><table class="kernel">{rows}</table>{caption}</figure>'


def _checks_table(item: InputReport) -> str:
    head = (
        "<tr><th class=text>check</th><th class=text>reference</th><th>max abs</th>"
        "<th>mean abs</th><th>RMSE</th><th>PSNR dB</th><th>differing / total</th>"
        "<th>tolerance</th><th class=text>result</th></tr>"
    )
    rows = []
    for check in item.checks:
        psnr = "identical" if check.identical else _number(check.psnr_db, 5)
        label = escape(check.name)
        if "monotonicity" in check.extra:
            label += f" <small>({escape(check.extra['monotonicity'])})</small>"
        rows.append(
            f"<tr><td class=text>{label}</td><td class=text>{escape(check.reference)}</td>"
            f"<td class=num>{_number(check.max_abs)}</td>"
            f"<td class=num>{_number(check.mean_abs)}</td>"
            f"<td class=num>{_number(check.rmse)}</td><td class=num>{psnr}</td>"
            f"<td class=num>{check.differing} / {check.total}</td>"
            f"<td class=num>{_number(check.tolerance)}</td>"
            f"<td class=text>{_badge(check.passed)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _commute_section(item: InputReport) -> str:
    checks = [c for c in item.checks if "monotonicity" in c.extra]
    if not checks:
        return ""
    rows = []
    windows = []
    for check in checks:
        commutes = check.extra.get("commutes")
        if commutes:
            verdict = _badge(True, "commutes")
        elif check.extra["monotonicity"] == "nondecreasing":
            verdict = _badge(False, "differs")  # a failure: it must commute
        else:
            verdict = '<span class="badge info">differs, as expected</span>'
        rows.append(
            f"<tr><td class=text>{escape(check.name)}</td>"
            f"<td class=text>{escape(check.extra['monotonicity'])}</td>"
            f"<td class=text>{verdict}</td>"
            f"<td class=num>{_number(check.max_abs)}</td>"
            f"<td class=num>{check.extra.get('windows_differing', 0)}</td></tr>"
        )
        example = check.extra.get("counterexample") or check.extra.get("synthetic_counterexample")
        synthetic = not check.extra.get("counterexample")
        if example and (not commutes or synthetic):
            windows.append(_window(check.name, example, synthetic=synthetic))
    table = (
        "<table><tr><th class=text>activation</th><th class=text>monotonicity</th>"
        "<th class=text>sigma(max) vs max(sigma)</th><th>max difference</th>"
        f"<th>windows differing</th></tr>{''.join(rows)}</table>"
    )
    return f"<h3>Activations and max pooling</h3>{table}<div class=figures>{''.join(windows)}</div>"


def _window(name: str, example: dict, *, synthetic: bool) -> str:
    values = np.asarray(example["values"], dtype=np.float64)
    peak = float(np.max(values))
    cells = "".join(
        "<tr>"
        + "".join(
            f'<td class="num"{" style=background:#ffe9a8" if v == peak else ""}>'
            f"{escape(f'{v:.4g}')}</td>"
            for v in row
        )
        + "</tr>"
        for row in values
    )
    where = f"channel {example['channel']}, rows/cols from {example['top_left']}"
    if synthetic:
        where = "a window of our own (no window of the image differs)"
    act_of_max = escape(f"{example['act_of_max']:.6g}")
    max_of_act = escape(f"{example['max_of_act']:.6g}")
    return (
        f'<figure><table class="kernel">{cells}</table><figcaption>{escape(name)}: '
        f"{escape(where)}<br>sigma(max) = {act_of_max}, max(sigma) = {max_of_act}"
        "</figcaption></figure>"
    )


def _pictures(item: InputReport) -> list[str]:
    """The input and its output pictures as thumbnails; a loss curve as a plot."""
    figures = []
    if Path(item.input).is_file():
        figures.append(_figure(_thumbnail_of_file(item.input), f"input: {Path(item.input).name}"))
    pictures = [p for p in item.outputs if p.lower().endswith(IMAGE_SUFFIXES)]
    for path in pictures[:MAX_OUTPUTS_SHOWN]:
        if path.lower().endswith(".loss.png"):  # a plot to read, not a thumbnail
            figures.append(_figure(_thumbnail_of_file(path, PLOT), Path(path).name, css="plot"))
        else:
            figures.append(_figure(_thumbnail_of_file(path), Path(path).name))
    if len(pictures) > MAX_OUTPUTS_SHOWN:
        figures.append(f"<p class=notice>and {len(pictures) - MAX_OUTPUTS_SHOWN} more outputs</p>")
    return figures


def _input_section(
    item: InputReport, anchor: str, kernels: Sequence[tuple[str, np.ndarray]]
) -> str:
    badge = _badge(None) if item.error else _badge(item.passed)
    name = Path(item.input).name if Path(item.input).is_file() else item.input
    parts = [f'<h2 id="{anchor}">{escape(name)} {badge}</h2>']
    if name != item.input:  # the folder it came from, small: the heading is the file
        parts.append(f'<p class="path">{escape(item.input)}</p>')
    if item.error:
        parts.append(f"<p>{escape(item.error)}</p>")
        return "".join(parts)
    parts.append(f'<div class="figures">{"".join(_pictures(item))}</div>')
    parts.append(_checks_table(item))
    maps = []
    for check in item.checks:
        reference = None if check.maps is None else check.maps.reference
        if reference is not None and "monotonicity" not in check.extra:
            maps.append(_figure(_thumbnail_of_array(reference), f"{check.name}: {check.reference}"))
        heat = _heatmap(check)
        if heat is not None:
            where = (
                f"{check.name}: identical everywhere (all 0)"
                if check.identical
                else f"{check.name}: where it differs (largest per tile)"
            )
            maps.append(_figure(heat, where, "map", _legend(check)))
    if maps:
        parts.append(
            f'<h3>References and differences</h3><div class="figures">{"".join(maps)}</div>'
        )
    parts.append(_commute_section(item))
    if kernels:
        tables = "".join(_kernel_table(title, matrix) for title, matrix in kernels)
        parts.append(f'<h3>Kernels</h3><div class="figures">{tables}</div>')
    for notice in item.notices:
        parts.append(f"<p class=notice>{escape(notice)}</p>")
    return "".join(parts)


# A page of a large batch draws the sections of this many inputs (failures
# first) and lists this many in its table; the JSON report has them all.
MAX_SECTIONS = 200
MAX_ROWS = 2000


def _run_section(run: RunReport, kernels: Sequence[tuple[str, np.ndarray]], prefix: str) -> str:
    failures_first = sorted(enumerate(run.inputs), key=lambda pair: (pair[1].passed, pair[0]))
    drawn = {index for index, _ in failures_first[:MAX_SECTIONS]}
    rows = []
    for index, item in failures_first[:MAX_ROWS]:
        badge = _badge(None) if item.error else _badge(item.passed)
        # The largest difference among checks that have a tolerance to meet.
        bounded = [c.max_abs for c in item.checks if math.isfinite(c.tolerance)]
        worst = max((v for v in bounded if math.isfinite(v)), default=None)
        name = escape(item.input)
        link = f'<a href="#{prefix}{index}">{name}</a>' if index in drawn else name
        rows.append(
            f"<tr><td class=text>{link}</td>"
            f"<td class=text>{badge}</td><td class=num>{len(item.checks)}</td>"
            f"<td class=num>{_number(worst)}</td></tr>"
        )
    failed = sum(1 for item in run.inputs if not item.passed) + run.left_out_failed
    total = len(run.inputs) + run.left_out
    verdict = _badge(run.passed)
    if run.stopped is not None:
        stopped = run.stopped
        count = ("at least " if stopped["at_least"] else "") + str(stopped["not_done"])
        verdict = (
            f"{_badge(False, 'STOPPED')}</p><p>The run was stopped by "
            f"{escape(stopped['by'])} before its end: {count} input(s) "
            "not done."
        )
    summary = (
        f"<p>{total} input(s): {total - failed} passed, {failed} failed "
        f"or errored. {verdict}</p><table class=summary><tr><th>input</th>"
        f"<th>result</th><th>checks</th><th>largest difference</th></tr>{''.join(rows)}</table>"
    )
    if total > min(MAX_ROWS, len(run.inputs)):
        summary += (
            f"<p>{total - min(MAX_ROWS, len(run.inputs))} more inputs are not listed here "
            "(the JSON report, --report, has every one).</p>"
        )
    if total > len(drawn):
        summary += (
            f"<p>Pictures and checks of {len(drawn)} of the {total} inputs below, "
            f"failures first; {total - len(drawn)} left out.</p>"
        )
    sections = "".join(
        _input_section(item, f"{prefix}{index}", kernels)
        for index, item in enumerate(run.inputs)
        if index in drawn
    )
    return summary + sections


def render_page(
    runs: Sequence[tuple[RunReport, Sequence[tuple[str, np.ndarray]]]],
    *,
    title: str,
    command_line: str,
) -> str:
    """The HTML page for one or more runs (each with the kernels it used)."""
    from ._version import __version__

    body = []
    for number, (run, kernels) in enumerate(runs):
        if len(runs) > 1:
            body.append(f'<h1 style="margin-top:1.5em">{escape(run.command)}</h1>')
        body.append(_run_section(run, kernels, prefix=f"r{number}-"))
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><meta name=viewport content='width=device-width'>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
        f"<p>cnnfilters {escape(__version__)}: every output computed by one convolution engine "
        "and compared with an independent reference.</p>"
        f"<pre>{escape(command_line)}</pre>{''.join(body)}</body></html>\n"
    )


def write_page(
    target: str | os.PathLike,
    runs: Sequence[tuple[RunReport, Sequence[tuple[str, np.ndarray]]]],
    *,
    title: str,
    command_line: str,
    replace: bool = True,
) -> None:
    """Render and write the page atomically; an existing file is replaced only with
    ``replace``."""
    from .atomic import atomic_write

    text = render_page(runs, title=title, command_line=command_line)
    atomic_write(Path(target), lambda handle: handle.write(text.encode("utf-8")), replace=replace)


CELL = 200  # pixels on the longer side of a picture in a notebook cell


def render_cell(
    command: str,
    item: InputReport,
    pictures: dict[str, np.ndarray],
    kernels: Sequence[tuple[str, np.ndarray]],
    *,
    plot: bytes | None = None,
) -> str:
    """One result as a notebook cell shows it: the pictures, the checks with their
    verdicts, the kernels as matrices, the notices; self-contained, the page's style
    scoped to the cell."""
    # The page's rules, each under the cell's class; the print rules (a nested block,
    # last in STYLE) and the body's are the page's own.
    rules = STYLE.split("@media")[0].split("}")
    style = "".join(
        f".cnnfilters-cell {rule.strip()}}}"
        for rule in rules
        if rule.strip() and not rule.strip().startswith("body")
    )
    figures = []
    for name, pixels in pictures.items():
        image = Image.fromarray(_eight_bit(pixels))
        image.thumbnail((CELL, CELL))
        figures.append(_figure(_data_uri(image), name))
    if plot is not None:
        with Image.open(io.BytesIO(plot)) as curve:
            curve.thumbnail((PLOT, PLOT))
            figures.append(_figure(_data_uri(curve.convert("RGB")), "loss", css="plot"))
    matrices = "".join(_kernel_table(name, matrix) for name, matrix in kernels[:8])
    notices = "".join(f"<p class=notice>{escape(n)}</p>" for n in item.notices)
    return (
        f'<div class="cnnfilters-cell"><style>.cnnfilters-cell {{ font: 14px/1.4 system-ui, '
        f"sans-serif; color: #222; }}{style}</style>"
        f"<h3>cnnfilters {escape(command)}: {escape(_shown_name(item.input))} "
        f"{_badge(item.passed)}</h3>"
        f'<div class="figures">{"".join(figures)}</div>{_checks_table(item)}'
        f'<div class="figures">{matrices}</div>{notices}</div>'
    )


def _shown_name(label: str) -> str:
    """A file's name (its folder says little in a notebook), or the label as it is."""
    return Path(label).name if Path(label).is_file() else label


def _eight_bit(pixels: np.ndarray) -> np.ndarray:
    """A picture's levels for a thumbnail: 16-bit ones scaled to 8 bits."""
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
