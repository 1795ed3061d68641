"""Write docs/notebook.ipynb: every construction on the samples, executed.

The cells are written here, then run on a real Jupyter kernel (nbclient, in
the test extra); the committed notebook's outputs are that run's.
``tests/test_notebook.py`` runs the same cells again and checks what they show.

Usage, from the checkout's root, with the test extra installed::

    python scripts/notebook.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "notebook.ipynb"

CELLS = [
    (
        "markdown",
        """# cnnfilters in a notebook

Each construction of cnnfilters on the bundled samples: one call each, which
runs the command as the command line does and shows its pictures, its checks
against an independent reference, and its kernels. `r.save(folder)` writes the
files the command line would write.""",
    ),
    (
        "code",
        """import cnnfilters
from cnnfilters.demo import sample_paths

samples = {path.stem: path for path in sample_paths()}
sorted(samples)""",
    ),
    ("markdown", "Grayscale is a 1x1 convolution with the BT.601 weights:"),
    ("code", 'cnnfilters.apply("grayscale", samples["ihc"])'),
    ("markdown", "The gradients are two 3x3 forward-difference filters, checked against slicing:"),
    ("code", 'cnnfilters.apply("gradient", samples["chart"])'),
    ("markdown", "k x k average pooling is a stride-k convolution with weights 1/k²:"),
    ("code", 'cnnfilters.apply("avgpool", samples["ihc"], kernel_size=4)'),
    ("markdown", "A nondecreasing activation commutes with max pooling; GELU need not:"),
    ("code", 'cnnfilters.apply("commute", samples["chart"], activations=("relu", "gelu"))'),
    ("markdown", "Any kernel, here Pillow's SHARPEN, on the engine (a colour image stays colour):"),
    ("code", 'cnnfilters.apply("convolve", samples["ihc"], kernel="sharpen")'),
    ("markdown", "A conv layer learns the gradient filters back by gradient descent:"),
    ("code", 'cnnfilters.apply("learn", samples["ihc"], what="gradient")'),
    (
        "markdown",
        """A kernel recovered from a pair another tool made: Pillow's `ImageFilter.Kernel`
(which leaves the border unfiltered; the fit is made inside it):""",
    ),
    (
        "code",
        """from PIL import Image, ImageFilter

before = Image.open(samples["ihc"]).convert("L").crop((0, 0, 256, 192))
after = before.filter(ImageFilter.Kernel((3, 3), [1, 2, 1, 2, 4, 2, 1, 2, 1], scale=16))
pair = cnnfilters.apply("learn", (before, after), what="pair", kernel_size=3)
pair""",
    ),
    ("markdown", "Every result is also data: its checks, its verdict, its report entry."),
    (
        "code",
        """r = cnnfilters.apply("gradient", samples["brick"])
print(r.passed)
for check in r.checks:
    print(check.summary())""",
    ),
]


def notebook():
    """The cells as a notebook, not yet run."""
    import nbformat

    book = nbformat.v4.new_notebook()
    for kind, source in CELLS:
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        book.cells.append(make(source))
    book.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return book


def execute(book, folder: Path):
    """Run every cell on a python3 kernel, in ``folder``."""
    from nbclient import NotebookClient

    NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    return book


def main() -> int:
    import nbformat

    started = time.perf_counter()
    book = execute(notebook(), ROOT)
    nbformat.write(book, TARGET)
    print(f"wrote {TARGET.relative_to(ROOT)} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
