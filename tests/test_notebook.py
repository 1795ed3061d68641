"""The notebook runs on a real Jupyter kernel, and shows pictures and verdicts.

The cells are those of ``docs/notebook.ipynb`` (``scripts/notebook.py`` writes
both); each result renders as HTML, which a browser then draws.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import chromium
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("notebook", ROOT / "scripts" / "notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    script = _script()
    folder = tmp_path_factory.mktemp("notebook")
    return script.execute(script.notebook(), folder), folder


def test_the_committed_notebook_has_the_script_s_cells_and_their_outputs():
    import nbformat

    committed = nbformat.read(ROOT / "docs" / "notebook.ipynb", as_version=4)
    cells = [(cell.cell_type, cell.source) for cell in committed.cells]
    assert cells == list(_script().CELLS)
    code = [cell for cell in committed.cells if cell.cell_type == "code"]
    assert all(cell.outputs for cell in code), "the committed notebook was not run"


def _html_outputs(book) -> list[str]:
    return [
        output["data"]["text/html"]
        for cell in book.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "text/html" in output.get("data", {})
    ]


def test_every_cell_runs_and_every_result_shows_pictures_and_a_passing_verdict(executed):
    book, _ = executed
    errors = [
        o
        for c in book.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors == []
    shown = _html_outputs(book)
    assert len(shown) == 7  # grayscale, gradient, avgpool, commute, convolve, learn, pair
    for html in shown:
        assert "PASS" in html and "FAIL" not in html
        assert re.search(r'<img [^>]*src="data:image/(png|jpeg);base64,', html)
        assert "http://" not in html and "https://" not in html  # nothing from the network
    assert '<table class="kernel">' in shown[1]  # the gradient's F1 and F2 as matrices
    printed = [
        o.text
        for c in book.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    ]
    assert printed[-1].startswith("True\ndy vs slicing differences: max abs diff 0")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_the_rendered_notebook_draws_in_a_browser(executed, tmp_path):
    book, _ = executed
    page = tmp_path / "notebook.html"
    page.write_text("<!doctype html><html><body>" + "".join(_html_outputs(book)) + "</body></html>")
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", page.as_uri(), size="1100,2400")
    _, dom, _ = chromium(tmp_path, "--dump-dom", page.as_uri(), size="1100,2400")
    assert dom.count(">PASS<") >= 7 + 2  # each result's badge, and its checks'
    assert dom.count("<img ") >= 14  # the inputs, outputs and loss curves
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 20 and (pixels < 100).mean() > 0.01  # pictures and text, not blank


def test_apply_stays_itself_when_the_batch_loop_is_imported(tmp_path):
    """``cnnfilters.run`` is the batch loop's package: the notebook's call is ``apply``,
    which importing that package cannot hide."""
    import cnnfilters
    import cnnfilters.run

    result = cnnfilters.apply("avgpool", ROOT / "samples" / "chart.png", kernel_size=2)
    assert result.passed and result.pictures["avgpool2"].shape == (121, 161, 3)
    files = result.save(tmp_path)
    assert [Path(f).name for f in files] == ["chart.avgpool2.png"]
    with Image.open(tmp_path / "chart.avgpool2.png") as image:
        np.testing.assert_array_equal(np.asarray(image), result.pictures["avgpool2"])


def test_apply_takes_a_pillow_image_or_an_array_and_decodes_them_as_files(tmp_path):
    import cnnfilters

    photo = Image.open(ROOT / "samples" / "ihc.png")
    from_file = cnnfilters.apply("grayscale", ROOT / "samples" / "ihc.png")
    from_pillow = cnnfilters.apply("grayscale", photo)
    from_array = cnnfilters.apply("grayscale", np.asarray(photo))
    for result in (from_pillow, from_array):
        assert result.passed and result.report.input == "an image of 512 x 512 pixels"
        np.testing.assert_array_equal(result.pictures["grayscale"], from_file.pictures["grayscale"])
    deep = cnnfilters.apply("gradient", (np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16))
    assert deep.passed and deep.pictures["dy"].dtype == np.uint16
    assert deep.image("dy").mode == "I;16"
    with pytest.raises(cnnfilters.CnnFiltersError, match=r"is \(H, W\) or \(H, W, 3 or 4\)"):
        cnnfilters.apply("grayscale", np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(cnnfilters.CnnFiltersError, match="unknown command 'blur'"):
        cnnfilters.apply("blur", photo)
    with pytest.raises(cnnfilters.CnnFiltersError, match="its files are written by the run"):
        cnnfilters.apply("learn", photo, what="avgpool", steps=2).save(tmp_path)


def test_a_list_of_images_is_one_result_that_shows_each(tmp_path):
    import cnnfilters

    samples = [ROOT / "samples" / "chart.png", ROOT / "samples" / "brick.png"]
    results = cnnfilters.apply("gradient", samples)
    assert len(results) == 2 and results.passed
    html = results._repr_html_()
    assert html.startswith("<p>2 images: 2 passed, 0 failed.</p>")
    assert html.count('<div class="cnnfilters-cell">') == 2
    assert len(results.save(tmp_path)) == 6
