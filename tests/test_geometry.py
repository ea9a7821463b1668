"""The field-of-view convention, tested by its invariants (DESIGN.md, 1e-6 mm).

Affines are drawn as rotation @ signed permutation @ diag(spacing) + origin, so
every one of the 48 axis permutations/flips is combined with oblique rotations.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrisr.errors import GeometryError
from mrisr.geometry import (
    detect_thick_axis,
    isotropic_factor,
    output_slice_count,
    resampled_affine,
    voxel_centre_world,
    voxel_sizes,
)

TOLERANCE_MM = 1e-6

SIGNED_PERMUTATIONS = [
    np.eye(3)[list(order)] * np.array(signs)[:, None]
    for order in itertools.permutations(range(3))
    for signs in itertools.product((1, -1), repeat=3)
]


def rotation(quaternion: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (non-zero) quaternion."""
    w, x, y, z = quaternion / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


@st.composite
def grids(draw):
    """(affine, shape, thick axis, factor) with a random oblique, permuted, flipped affine."""
    quaternion = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
    if np.linalg.norm(quaternion) < 1e-3:
        quaternion = np.array([1.0, 0.0, 0.0, 0.0])
    permutation = SIGNED_PERMUTATIONS[draw(st.integers(0, 47))]
    spacing = np.array(draw(st.lists(st.floats(0.2, 8.0), min_size=3, max_size=3)))
    origin = np.array(draw(st.lists(st.floats(-200, 200), min_size=3, max_size=3)))
    affine = np.eye(4)
    affine[:3, :3] = rotation(quaternion) @ permutation @ np.diag(spacing)
    affine[:3, 3] = origin
    shape = tuple(draw(st.lists(st.integers(1, 300), min_size=3, max_size=3)))
    axis = draw(st.integers(0, 2))
    factor = draw(st.sampled_from([2.0, 3.0, 3.3, 4.0, 4.44, 5.0, 6.0]) | st.floats(1.05, 8.0))
    return affine, shape, axis, factor


def upsample(affine, shape, axis, factor):
    n_in = shape[axis]
    n_out = output_slice_count(n_in, factor)
    shape_out = list(shape)
    shape_out[axis] = n_out
    return resampled_affine(affine, axis, n_in, n_out), tuple(shape_out)


def world(affine, voxel):
    return affine[:3] @ np.append(np.asarray(voxel, float), 1.0)


@settings(max_examples=300, deadline=None)
@given(grids())
def test_volume_centre_is_preserved(grid):
    affine, shape, axis, factor = grid
    affine_out, shape_out = upsample(affine, shape, axis, factor)
    np.testing.assert_allclose(
        voxel_centre_world(affine_out, shape_out),
        voxel_centre_world(affine, shape),
        atol=TOLERANCE_MM,
    )


@settings(max_examples=300, deadline=None)
@given(grids())
def test_outer_edges_along_the_thick_axis_are_preserved(grid):
    affine, shape, axis, factor = grid
    affine_out, shape_out = upsample(affine, shape, axis, factor)
    for edge_in, edge_out in ((-0.5, -0.5), (shape[axis] - 0.5, shape_out[axis] - 0.5)):
        voxel_in = (np.asarray(shape, float) - 1) / 2
        voxel_out = (np.asarray(shape_out, float) - 1) / 2
        voxel_in[axis], voxel_out[axis] = edge_in, edge_out
        np.testing.assert_allclose(
            world(affine_out, voxel_out), world(affine, voxel_in), atol=TOLERANCE_MM
        )


@settings(max_examples=300, deadline=None)
@given(grids())
def test_spacing_directions_and_handedness(grid):
    affine, shape, axis, factor = grid
    affine_out, shape_out = upsample(affine, shape, axis, factor)
    effective = shape_out[axis] / shape[axis]
    spacing_in, spacing_out = voxel_sizes(affine), voxel_sizes(affine_out)
    expected = spacing_in.copy()
    expected[axis] /= effective
    np.testing.assert_allclose(spacing_out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        affine_out[:3, :3] / spacing_out, affine[:3, :3] / spacing_in, atol=1e-12
    )
    assert np.sign(np.linalg.det(affine_out)) == np.sign(np.linalg.det(affine))


@settings(max_examples=200, deadline=None)
@given(grids(), st.sampled_from([3, 5, 7]))
def test_odd_integer_factor_puts_a_voxel_on_every_input_slice(grid, factor):
    affine, shape, axis, _ = grid
    affine_out, _ = upsample(affine, shape, axis, float(factor))
    for k in range(min(shape[axis], 5)):
        voxel_in = np.zeros(3)
        voxel_out = np.zeros(3)
        voxel_in[axis] = k
        voxel_out[axis] = k * factor + (factor - 1) / 2
        np.testing.assert_allclose(
            world(affine_out, voxel_out), world(affine, voxel_in), atol=TOLERANCE_MM
        )


def flipped(affine, shape, flip_axis):
    """Affine of the same volume with its voxel order reversed along ``flip_axis``."""
    flip = np.eye(4)
    flip[flip_axis, flip_axis] = -1
    flip[flip_axis, 3] = shape[flip_axis] - 1
    return affine @ flip


@settings(max_examples=300, deadline=None)
@given(grids(), st.integers(0, 2))
def test_flip_then_upscale_equals_upscale_then_flip(grid, flip_axis):
    affine, shape, axis, factor = grid
    upscaled_then_flipped = flipped(*upsample(affine, shape, axis, factor), flip_axis)
    flipped_then_upscaled, _ = upsample(flipped(affine, shape, flip_axis), shape, axis, factor)
    np.testing.assert_allclose(flipped_then_upscaled, upscaled_then_flipped, atol=TOLERANCE_MM)


@settings(max_examples=200, deadline=None)
@given(grids(), st.integers(1, 60), st.sampled_from([2, 3, 4, 5, 6]))
def test_downsample_then_upsample_by_a_dividing_factor_returns_the_grid(grid, n_thick, factor):
    affine, shape, axis, _ = grid
    n_thin = n_thick * factor
    thick = resampled_affine(affine, axis, n_thin, n_thick)
    back = resampled_affine(thick, axis, n_thick, output_slice_count(n_thick, factor))
    np.testing.assert_allclose(back, affine, atol=TOLERANCE_MM)


def test_non_integer_factor_like_3_3_mm_slices():
    affine = np.diag([1.0, 1.0, 3.3, 1.0])
    assert isotropic_factor(affine, 2) == pytest.approx(3.3)
    affine_out = resampled_affine(affine, 2, 40, output_slice_count(40, 3.3))
    assert output_slice_count(40, 3.3) == 132
    assert voxel_sizes(affine_out)[2] == pytest.approx(3.3 * 40 / 132)


def test_default_factor_makes_voxels_isotropic_at_the_finest_in_plane_spacing():
    affine = np.diag([0.9, 0.95, 4.0, 1.0])
    assert isotropic_factor(affine, 2) == pytest.approx(4.0 / 0.9)


@pytest.mark.parametrize("permutation_index", range(48))
def test_thick_axis_is_found_whatever_the_orientation(permutation_index):
    affine = np.eye(4)
    affine[:3, :3] = rotation(np.array([0.9, 0.1, -0.3, 0.2])) @ (
        SIGNED_PERMUTATIONS[permutation_index] @ np.diag([0.9, 0.9, 5.0])
    )
    # The thick column stays column 2 whatever rotation/permutation acts on the rows.
    assert detect_thick_axis(affine) == 2


@pytest.mark.parametrize(
    ("spacing", "words"),
    [
        ((1.0, 1.0, 1.0), "isotropic"),
        ((1.0, 1.2, 1.1), "isotropic"),
        ((1.0, 5.0, 5.0), "two thick axes"),
    ],
)
def test_detect_thick_axis_refuses_ambiguous_spacing(spacing, words):
    with pytest.raises(GeometryError, match=words) as raised:
        detect_thick_axis(np.diag([*spacing, 1.0]), source="scan.nii.gz")
    message = str(raised.value)
    assert "scan.nii.gz" in message and "Fix:" in message


def test_header_and_affine_disagreeing_is_refused():
    with pytest.raises(GeometryError, match="disagree"):
        detect_thick_axis(np.diag([1.0, 1.0, 5.0, 1.0]), header_zooms=(5.0, 1.0, 1.0))
