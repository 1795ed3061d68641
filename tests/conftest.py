"""Fixtures and the Hypothesis profile; helpers to import live in helpers.py."""

from __future__ import annotations

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a mutation run, the quickest tests first.

    mutmut stops a mutant's tests at the first failure (pytest -x), so a test
    that runs the command line end to end is reached only by the mutants the
    unit tests let through. The durations are the ones mutmut recorded.
    """
    stats = Path("mutmut-stats.json")
    if os.environ.get("HYPOTHESIS_PROFILE") != "mutation" or not stats.exists():
        return
    durations = json.loads(stats.read_text())["duration_by_test"]
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
