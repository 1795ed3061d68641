"""Fixtures and the Hypothesis profile; helpers to import live in helpers.py."""

from __future__ import annotations

import os

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
