"""Shared fixtures: the real MRI volumes in ../shared/data, skipped cleanly when absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

#: Where the shared real volumes live; override with MRISR_SHARED_DATA.
SHARED_DATA = Path(
    os.environ.get(
        "MRISR_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real MRI volumes (fixtures/, thick/, train/); skips the test when absent."""
    if not (SHARED_DATA / "fixtures").is_dir():
        pytest.skip(f"real MRI volumes not found at {SHARED_DATA} (set MRISR_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator, so failures repeat."""
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def thick(shared_data):
    """A thick-slice volume (4 mm along axis 2) made from a shared 1 mm fixture (cohort tests)."""
    from mrisr import load_volume, simulate_volume

    return simulate_volume(load_volume(shared_data / "fixtures" / "spine_t2_1mm.nii.gz"), 2, 4)
