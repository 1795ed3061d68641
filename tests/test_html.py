"""The visual report: structure, escaping, nothing from the network, size, and a browser."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import chromium
from PIL import Image
from typer.testing import CliRunner

from cnnfilters.cli import app
from cnnfilters.html import difference_colours

runner = CliRunner()


class Page(HTMLParser):
    """Collects tags, their attributes and the text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def references(page: Page) -> list[str]:
    return [
        value
        for _, attrs in page.tags
        for key, value in attrs.items()
        if key in ("src", "href") and value
    ]


def test_gradient_page_has_every_part_and_nothing_external(tmp_path):
    image = tmp_path / "steps.png"
    rows = np.mgrid[0:40, 0:50][0]
    Image.fromarray(((rows > 20) * 200).astype(np.uint8)).save(image)
    html = tmp_path / "report.html"
    result = runner.invoke(app, ["gradient", str(image), "--html", str(html), "-q"])
    assert result.exit_code == 0, result.output
    page = parse(html)
    names = [tag for tag, _ in page.tags]
    assert names.count("img") >= 1 + 3 + 2 + 2  # input, outputs, references, difference maps
    assert "table" in names and "pre" in names and "style" in names and "script" not in names
    text = " ".join(page.text)
    assert "slicing differences" in text and "identical everywhere (all 0)" in text
    assert "cnnfilters gradient" in text  # the command line
    assert "F1: dy (vertical)" in text  # the kernels
    for ref in references(page):
        assert ref.startswith(("data:image/", "#")), ref


def test_names_and_text_are_escaped(tmp_path):
    name = "<i>x&y'\".png"
    image = tmp_path / name
    Image.new("RGB", (20, 10), (10, 200, 30)).save(image, format="PNG")
    html = tmp_path / "report.html"
    result = runner.invoke(app, ["grayscale", str(image), "--html", str(html), "-q"])
    assert result.exit_code == 0, result.output
    raw = html.read_text(encoding="utf-8")
    assert "<i>x" not in raw and "&lt;i&gt;x&amp;y" in raw
    assert all(tag != "i" for tag, _ in parse(html).tags)


def test_commute_page_shows_activations_and_counterexample_windows(tmp_path):
    image = tmp_path / "ramp.png"
    Image.fromarray(np.tile(np.arange(60, 0, -1, dtype=np.uint8) * 4, (30, 1))).save(image)
    html = tmp_path / "commute.html"
    result = runner.invoke(
        app, ["commute", str(image), "-a", "relu", "-a", "gelu", "--html", str(html), "-q"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(parse(html).text)
    assert "Activations and max pooling" in text and "commutes" in text
    # The ramp's differences are all equal: gelu commutes there, so the page
    # shows a window of its own where it does not.
    assert "a window of our own" in text and "sigma(max) =" in text
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 40), dtype=np.uint8)).save(noise)
    result = runner.invoke(
        app, ["commute", str(noise), "-a", "gelu", "--html", str(html), "-q", "--force"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(parse(html).text)
    assert "differs, as expected" in text and "rows/cols from" in text


def test_backprop_page_has_the_error_table(tmp_path):
    html = tmp_path / "bp.html"
    result = runner.invoke(app, ["backprop", "--points", "2", "--html", str(html), "-q"])
    assert result.exit_code == 0, result.output
    text = " ".join(parse(html).text)
    assert "layer 1 dy_L/dA_l" in text and "reverse-mode autodiff" in text


def test_an_all_zero_map_is_one_flat_colour_and_differences_stand_out():
    flat = difference_colours(np.zeros((4, 5)), 0.0)
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) == 1
    one = np.zeros((4, 5))
    one[2, 3] = 1e-9
    coloured = difference_colours(one, 0.0)
    assert tuple(coloured[2, 3]) != tuple(coloured[0, 0])
    within = difference_colours(np.array([[0.0, 1e-4, 1e-3, 2e-3]]), 1e-3)
    assert len({tuple(c) for c in within[0]}) == 4


def test_two_hundred_inputs_stay_under_30_mb(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(200):
        path = tmp_path / f"noise{index:03}.png"
        Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(
            path, compress_level=1
        )
        paths.append(str(path))
    html = tmp_path / "many.html"
    result = runner.invoke(
        app, ["gradient", *paths, "--out-dir", str(tmp_path / "out"), "--html", str(html), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert html.stat().st_size < 30 * 2**20


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_the_demo_page_renders_in_a_browser(tmp_path):
    out = tmp_path / "demo"
    assert runner.invoke(app, ["demo", "--out-dir", str(out), "-q"]).exit_code == 0
    shot = tmp_path / "shot.png"
    _, _, said = chromium(tmp_path, f"--screenshot={shot}", (out / "index.html").as_uri())
    assert shot.exists(), said[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 20  # not blank: text, tables and pictures
    assert (pixels < 100).mean() > 0.01 and (pixels > 200).mean() > 0.3


def test_a_large_batch_page_draws_a_bounded_number_of_sections_failures_first(monkeypatch):
    from cnnfilters import html
    from cnnfilters.report import InputReport, RunReport

    monkeypatch.setattr(html, "MAX_SECTIONS", 5)
    monkeypatch.setattr(html, "MAX_ROWS", 8)
    items = [InputReport(f"in{i:02d}.png") for i in range(12)]
    items[9].error = "in09.png: not a recognised image file"
    page = html.render_page([(RunReport("grayscale", items), [])], title="t", command_line="c")
    assert page.count("<h2 id=") == 5
    assert '<h2 id="r0-9">' in page  # the failure is drawn first
    assert "Pictures and checks of 5 of the 12 inputs below, failures first; 7 left out." in page
    assert "4 more inputs are not listed here" in page
    assert 'href="#r0-9"' in page and 'href="#r0-10"' not in page  # links only to drawn ones


def test_headings_are_file_names_captions_wrap_between_words_and_plots_are_read(tmp_path):
    import base64
    import io
    import re

    sample = Path(__file__).resolve().parent.parent / "samples" / "ihc.png"
    page = tmp_path / "page.html"
    result = CliRunner().invoke(
        app,
        [
            "learn",
            "avgpool",
            str(sample),
            "--out-dir",
            str(tmp_path / "o"),
            "--html",
            str(page),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "max-width: 1200px" not in text  # the page takes the window's width
    assert "ihc.<wbr>learn-avgpool.<wbr>loss.<wbr>png" in text  # breaks at dots, not in words
    assert "figcaption { font-size: 11px; color: #555; max-width: 170px; overflow-wrap" in text
    (plot,) = re.findall(
        r'<figure class="plot"><img class="plot" src="data:image/\w+;base64,([^"]+)"', text
    )
    with Image.open(io.BytesIO(base64.b64decode(plot))) as image:
        assert max(image.size) == 640
    result = CliRunner().invoke(
        app,
        [
            "grayscale",
            str(sample),
            "--out-dir",
            str(tmp_path / "g"),
            "--html",
            str(tmp_path / "g.html"),
            "-q",
        ],
    )
    text = (tmp_path / "g.html").read_text()
    assert re.search(r'<h2 id="[^"]+">ihc\.png <span', text)
    assert f'<p class="path">{sample}</p>' in text
