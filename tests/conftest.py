"""Shared fixtures: where the real datasets are, and seeded generators."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def datasets_root() -> Path:
    """``$PHALANX_DATASETS`` when set, else ``../shared/datasets`` beside the project."""
    env = os.environ.get("PHALANX_DATASETS")
    return Path(env) if env else ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The real datasets folder; tests needing it are skipped with a reason when it is absent."""
    root = datasets_root()
    if not (root / "MANIFEST.md").exists():
        pytest.skip(f"real datasets not found at {root}; set PHALANX_DATASETS")
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests are reproducible."""
    return np.random.default_rng(20261129)
