"""The docstring examples of every module run, on the package as it is installed.

(pytest's --doctest-modules would collect the checkout's files, which clash
with an installed copy of the same package.)
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import cnnfilters

MODULES = sorted(name for _, name, _ in pkgutil.iter_modules(cnnfilters.__path__)
                 if name != "__main__")  # fmt: skip


@pytest.mark.parametrize("name", ["__init__", *MODULES])
def test_docstring_examples_run(name):
    module = cnnfilters if name == "__init__" else importlib.import_module(f"cnnfilters.{name}")
    outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert outcome.failed == 0


def test_the_examples_are_there():
    examples = sum(
        len(test.examples)
        for name in MODULES
        for test in doctest.DocTestFinder().find(importlib.import_module(f"cnnfilters.{name}"))
    ) + sum(len(test.examples) for test in doctest.DocTestFinder().find(cnnfilters))
    assert examples >= 5
