"""Slice-profile estimation on simulated thick-slice scans whose profile is known.

Tolerances come from benchmarks/slice_profile_estimation.py: on brain volumes,
with the family given, the FWHM of contiguous or overlapping slices (1-1.5x
the spacing) is found within 20 %; gaps (0.7x) within 30 %. The family itself
is not reliably told apart (a box of width w blurs like a Gaussian of FWHM
about 0.7 w), so it is not asserted; the family-free RMS width is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mrisr.errors import ConfigError, InputError
from mrisr.io import load_volume
from mrisr.simulate import simulate_volume
from mrisr.slice_profile import SliceProfileEstimate, estimate_slice_profile, rms_width
from mrisr.volume import Volume

#: Central crops of held-out brains: big enough to measure, small enough for seconds.
CROPS = {
    "mr_gd_t1": ("train/mr_gd_t1.nii.gz", (slice(38, 138), slice(44, 144), slice(22, 122))),
    "ixi002_t2": ("train/ixi002_t2.nii.gz", (slice(78, 178), slice(78, 178), slice(20, 100))),
}


@pytest.fixture(scope="module")
def brains(shared_data: Path) -> dict[str, Volume]:
    """The cropped brains by name."""
    return {name: load_volume(shared_data / path).crop(box) for name, (path, box) in CROPS.items()}


def thick_scan(volume: Volume, axis: int, factor: float, profile: str, ratio: float) -> Volume:
    """``volume`` simulated thick along ``axis`` with FWHM ``ratio`` times the new spacing."""
    spacing = float(simulate_volume(volume, axis, factor).meta["slice_spacing_mm"])
    return simulate_volume(volume, axis, factor, profile=profile, thickness_mm=ratio * spacing)


@pytest.mark.parametrize(
    ("name", "axis", "factor", "profile", "ratio", "tolerance"),
    [
        ("mr_gd_t1", 2, 4, "mean", 1.0, 0.20),
        ("mr_gd_t1", 1, 3, "gaussian", 1.25, 0.20),
        ("mr_gd_t1", 0, 5, "gaussian", 1.5, 0.20),
        ("mr_gd_t1", 2, 3, "mean", 0.7, 0.30),
        ("ixi002_t2", 0, 4, "gaussian", 1.0, 0.20),
        ("ixi002_t2", 1, 3, "mean", 1.5, 0.20),
        ("ixi002_t2", 1, 4, "gaussian", 0.8, 0.30),
    ],
)
def test_recovers_the_fwhm_when_the_family_is_known(
    brains, name, axis, factor, profile, ratio, tolerance
):
    scan = thick_scan(brains[name], axis, factor, profile, ratio)
    estimate = estimate_slice_profile(scan, axis=axis, profile=profile)
    assert estimate.profile == profile
    assert estimate.spacing_mm == pytest.approx(scan.spacing[axis])
    assert estimate.fwhm_over_spacing == pytest.approx(ratio, rel=tolerance)
    assert estimate.fwhm_mm == pytest.approx(estimate.fwhm_over_spacing * estimate.spacing_mm)


@pytest.mark.parametrize(
    ("axis", "factor", "profile", "ratio"),
    [(2, 4, "mean", 1.25), (1, 5, "gaussian", 1.0), (0, 3, "gaussian", 1.5)],
)
def test_rms_width_is_found_without_the_family(brains, axis, factor, profile, ratio):
    scan = thick_scan(brains["mr_gd_t1"], axis, factor, profile, ratio)
    estimate = estimate_slice_profile(scan, axis=axis)
    truth = rms_width(profile, ratio * float(scan.spacing[axis]))
    assert estimate.rms_width_mm == pytest.approx(truth, rel=0.20)
    assert estimate.profile in ("mean", "gaussian")


def test_wider_profiles_give_wider_estimates(brains):
    ratios = [0.7, 1.0, 1.5]
    found = [
        estimate_slice_profile(
            thick_scan(brains["mr_gd_t1"], 2, 4, "gaussian", r), profile="gaussian"
        ).fwhm_over_spacing
        for r in ratios
    ]
    assert found == sorted(found)
    assert found[-1] > 1.5 * found[0]


def test_thick_axis_is_detected_and_input_untouched(brains):
    scan = thick_scan(brains["mr_gd_t1"], 1, 4, "mean", 1.0)
    before = scan.data.copy()
    detected = estimate_slice_profile(scan, profile="mean")
    given = estimate_slice_profile(scan, axis=1, profile="mean")
    assert detected == given  # deterministic, and axis 1 is the one found
    np.testing.assert_array_equal(scan.data, before)


def test_to_dict_is_json_ready():
    estimate = SliceProfileEstimate("mean", 4.0, 5.0, 0.8, "image", 0.01)
    record = json.loads(json.dumps(estimate.to_dict()))
    assert record["profile"] == "mean"
    assert record["source"] == "image"
    assert record["gap_mm"] == pytest.approx(1.0)
    assert record["rms_width_mm"] == pytest.approx(4.0 / math.sqrt(12))


def test_rms_width_of_each_family():
    assert rms_width("mean", 12**0.5) == pytest.approx(1.0)
    assert rms_width("gaussian", 2 * math.sqrt(2 * math.log(2))) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="unknown slice profile"):
        rms_width("sinc", 1.0)


def synthetic(shape, spacing, *, data=None, seed=0) -> Volume:
    """A textured volume on an axis-aligned grid, read from ``scan.nii.gz``."""
    if data is None:
        rng = np.random.default_rng(seed)
        data = (100 + 20 * rng.standard_normal(shape)).astype(np.float32)
    return Volume(data=data, affine=np.diag([*spacing, 1.0]), source=Path("scan.nii.gz"))


@pytest.mark.parametrize(
    ("volume", "axis", "message"),
    [
        (synthetic((40, 40, 40), (1, 1, 1)), None, "isotropic"),
        (synthetic((40, 40, 40), (1, 1, 4)), 0, "not a thick axis"),
        (synthetic((40, 40, 3), (1, 1, 4)), None, "only 3 slices"),
        (synthetic((20, 20, 10), (1, 1, 4)), None, r"in-plane field of view \(20 x 20 mm\)"),
        (
            synthetic((40, 40, 10), (1, 1, 4), data=np.zeros((40, 40, 10), np.float32)),
            None,
            "too little signal",
        ),
    ],
)
def test_refuses_what_it_cannot_measure(volume, axis, message):
    with pytest.raises(InputError, match=message) as caught:
        estimate_slice_profile(volume, axis=axis)
    text = str(caught.value)
    assert text.startswith("scan.nii.gz: ")
    assert "expected" in text and "Fix:" in text


def test_refuses_non_finite_voxels():
    data = np.ones((40, 40, 10), np.float32)
    data[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        estimate_slice_profile(synthetic((40, 40, 10), (1, 1, 4), data=data))


def test_refuses_an_unknown_family():
    with pytest.raises(ConfigError, match="unknown slice profile"):
        estimate_slice_profile(synthetic((40, 40, 10), (1, 1, 4)), profile="sinc")
