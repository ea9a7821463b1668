"""Thick-slice simulation: slice profiles, factors, gaps and the simulated grid."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr.errors import ConfigError
from mrisr.geometry import resampled_affine
from mrisr.simulate import simulate_thick_slices, simulate_volume, slice_profile_matrix
from mrisr.volume import Volume


@pytest.mark.parametrize("profile", ["mean", "gaussian"])
@pytest.mark.parametrize(("n_in", "n_out"), [(60, 30), (60, 15), (64, 19), (7, 2)])
def test_profile_rows_sum_to_one(profile, n_in, n_out):
    matrix = slice_profile_matrix(n_in, n_out, profile=profile)
    assert matrix.shape == (n_out, n_in)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    assert (matrix >= 0).all()


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_integer_factor_mean_is_block_averaging(rng, axis, factor):
    data = rng.random((12, 24, 36)).astype(np.float32)
    thick = simulate_thick_slices(data, axis, factor)
    moved = np.moveaxis(data, axis, 0)
    blocks = moved.reshape(moved.shape[0] // factor, factor, *moved.shape[1:]).mean(axis=1)
    np.testing.assert_allclose(thick, np.moveaxis(blocks, 0, axis), atol=1e-6)


def test_non_integer_factor_weights_straddling_voxels_by_overlap():
    matrix = slice_profile_matrix(10, 3)  # spacing 10/3 voxels
    np.testing.assert_allclose(matrix[0, :4], np.array([1, 1, 1, 1 / 3]) / (10 / 3))
    np.testing.assert_allclose(matrix[1, 3:7], np.array([2 / 3, 1, 1, 2 / 3]) / (10 / 3))


def test_constant_image_stays_constant_for_any_profile_and_factor():
    data = np.full((20, 21, 33), 7.5, np.float32)
    for profile in ("mean", "gaussian"):
        for factor in (2, 3.3, 4.7):
            np.testing.assert_allclose(
                simulate_thick_slices(data, 2, factor, profile=profile), 7.5, rtol=1e-6
            )


def test_gaussian_profile_has_the_requested_fwhm():
    # One bright thin slice; the thick slice centred on it sees the profile peak.
    matrix = slice_profile_matrix(401, 1, profile="gaussian", thickness=40.0)
    row = matrix[0]
    half = row.max() / 2
    above = np.flatnonzero(row >= half)
    assert above[-1] - above[0] + 1 == pytest.approx(40, abs=2)


def test_a_gap_makes_slices_thinner_than_their_spacing():
    matrix = slice_profile_matrix(40, 10, thickness=2.0)  # spacing 4, thickness 2
    # Slice 3 is centred at input coordinate 3.5 * 4 - 0.5 = 13.5: the box [12.5, 14.5]
    # covers voxels 13 and 14 and leaves a 2-voxel gap to each neighbour.
    assert np.flatnonzero(matrix[3]).tolist() == [13, 14]
    np.testing.assert_allclose(matrix[3, 13:15], [0.5, 0.5])


def test_simulated_volume_geometry_and_metadata(rng):
    affine = np.diag([0.9, 0.9, 1.0, 1.0])
    affine[:3, 3] = [-10, 20, 30]
    volume = Volume(rng.random((8, 9, 40)).astype(np.float32), affine)
    thick = simulate_volume(volume, 2, 4, gap_mm=1.0)
    assert thick.shape == (8, 9, 10)
    np.testing.assert_array_equal(thick.affine, resampled_affine(affine, 2, 40, 10))
    assert thick.meta["slice_spacing_mm"] == pytest.approx(4.0)
    assert thick.meta["slice_thickness_mm"] == pytest.approx(3.0)
    # The input is untouched.
    assert volume.shape == (8, 9, 40)


def test_simulation_does_not_modify_its_input(rng):
    data = rng.random((10, 10, 20)).astype(np.float32)
    before = data.copy()
    simulate_thick_slices(data, 2, 4, profile="gaussian")
    np.testing.assert_array_equal(data, before)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"factor": 1.0}, "factor must be a finite number > 1.*Fix: pass --factor > 1"),
        ({"factor": float("inf")}, "factor must be a finite number > 1.*Fix:"),
        ({"factor": 4, "profile": "sinc"}, "unknown slice profile.*Fix:"),
        ({"factor": 4, "thickness": 0.0}, "thickness must be positive.*Fix: pass a thickness > 0"),
        ({"factor": 4, "thickness": float("nan")}, "thickness must be positive.*Fix:"),
    ],
)
def test_bad_simulation_settings_are_refused_with_the_fix(rng, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        simulate_thick_slices(rng.random((4, 4, 16)), 2, **kwargs)


def test_thickness_and_gap_together_are_refused(rng):
    volume = Volume(rng.random((4, 4, 16)).astype(np.float32), np.eye(4))
    with pytest.raises(ConfigError, match="thickness and a gap"):
        simulate_volume(volume, 2, 4, thickness_mm=3, gap_mm=1)


def test_a_factor_the_slice_count_cannot_hold_is_said(caplog):
    from mrisr.simulate import simulate_volume
    from mrisr.volume import Volume

    volume = Volume(np.ones((4, 4, 48), np.float32), np.eye(4))
    thick = simulate_volume(volume, 2, 31)  # 48 / 31 rounds to 2 slices: 24x, not 31x
    assert thick.shape[2] == 2
    assert "thick slices are 24 times the thin ones, not 31" in caplog.text
    caplog.clear()
    simulate_volume(volume, 2, 4)
    assert caplog.text == ""
