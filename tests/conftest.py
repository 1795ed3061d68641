"""Fixtures and the Hypothesis profile; helpers to import live in helpers.py."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261127)


# The property tests run derandomized, so that every run (a developer's and CI's)
# tries the same examples and a failure is one anybody can reproduce; the cases
# that matter most are pinned with @example. HYPOTHESIS_PROFILE=explore draws new
# examples each run, to look for more.
settings.register_profile("derandomized", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
# Mutation testing runs each property test once for every mutant that reaches it:
# a few derandomized examples find a wrong mutant, the pinned @examples first.
settings.register_profile("mutation", derandomize=True, max_examples=10)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "derandomized"))


# In a mutation run, the arithmetic modules' mutants are judged by the tests of
# the arithmetic; the tests that run whole commands (which reach the engine too)
# are for the damage checks and the clobber rule.
_ARITHMETIC = (
    "cnnfilters.engine.",
    "cnnfilters.reference.",
    "cnnfilters.ops.",
    "cnnfilters.rounding.",
)
_WHOLE_COMMANDS = ("test_pngrows.py", "test_reruns.py", "test_run_files.py", "test_integrity.py")


def pytest_configure(config: pytest.Config) -> None:
    """In a mutation run, each mutant's tests run in a fork of mutmut's process: the
    objects inherited are frozen, so that a garbage collection walks only new ones."""
    if os.environ.get("HYPOTHESIS_PROFILE") == "mutation" and os.environ.get("MUTANT_UNDER_TEST"):
        gc.freeze()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a mutation run, only the tests that judge the mutant's module, quickest first.

    mutmut stops a mutant's tests at the first failure (pytest -x), so a slow test
    is reached only by the mutants the quick ones let through. The durations are
    the ones mutmut recorded.
    """
    stats = Path("mutmut-stats.json")
    if os.environ.get("HYPOTHESIS_PROFILE") != "mutation" or not stats.exists():
        return
    if os.environ.get("MUTANT_UNDER_TEST", "").startswith(_ARITHMETIC):
        whole = [item for item in items if item.path.name in _WHOLE_COMMANDS]
        if whole and len(whole) < len(items):  # never none: pytest would exit 5, "killed"
            config.hook.pytest_deselected(items=whole)
            items[:] = [item for item in items if item.path.name not in _WHOLE_COMMANDS]
    durations = json.loads(stats.read_text())["duration_by_test"]
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
