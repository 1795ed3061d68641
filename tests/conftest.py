"""Fixtures and the Hypothesis profile; helpers to import live in helpers.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261127)


# CI runs the property tests derandomized, so that a run is reproducible; a
# developer's runs explore new examples each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
