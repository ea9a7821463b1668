"""constrain_to_input works on contiguous lines along the thick axis: same result as the
plain formulation (each step applied along the axis of the 3D array)."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr.consistency import STALL_ROUNDS, background_mask, constrain_to_input
from mrisr.simulate import apply_along_axis, slice_profile_matrix


def _reference(upscaled, thick, axis, thickness, project, clip, tolerance=1e-5, iterations=200):
    """The projection/clip rounds written directly on the 3D arrays."""
    n_out, n_in = upscaled.shape[axis], thick.shape[axis]
    forward = slice_profile_matrix(n_out, n_in, thickness=thickness)
    correction = forward.T @ np.linalg.inv(forward @ forward.T)
    low, high = float(thick.min()), float(thick.max())
    x = np.array(upscaled, np.float32)
    zero = background_mask(thick, axis, n_out, thickness)
    history = []
    for _ in range(iterations if project and clip else 1):
        if project:
            x += apply_along_axis(correction, thick - apply_along_axis(forward, x, axis), axis)
        if clip:
            np.clip(x, low, high, out=x)
            x[zero] = 0.0
        residual = np.abs(apply_along_axis(forward, x, axis) - thick).max() / (high - low)
        if not (project and clip) or residual <= tolerance:
            break
        history.append(residual)
        if len(history) > STALL_ROUNDS and residual > 0.99 * history[-1 - STALL_ROUNDS]:
            break
    if project and clip and residual > tolerance:  # stalled: the measured slices win
        x += apply_along_axis(correction, thick - apply_along_axis(forward, x, axis), axis)
    return x


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize(("project", "clip"), [(True, True), (True, False), (False, True)])
def test_lines_layout_gives_the_plain_result(axis, project, clip):
    rng = np.random.default_rng(axis)
    n_in, n_out = 7, 24  # a non-integer factor: neighbouring boxes share a voxel
    shape_in, shape_out = [9, 10, 11], [9, 10, 11]
    shape_in[axis], shape_out[axis] = n_in, n_out
    thick = rng.uniform(0, 100, shape_in).astype(np.float32)
    thick[:3] = 0.0  # zero background under part of the volume
    upscaled = rng.uniform(-10, 110, shape_out).astype(np.float32)
    before = upscaled.copy()

    result, report = constrain_to_input(
        upscaled, thick, axis, thickness=n_out / n_in, project=project, clip=clip
    )

    expected = _reference(upscaled, thick, axis, n_out / n_in, project, clip)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-4)  # 1e-6 of the range
    assert result.dtype == np.float32 and result.flags.c_contiguous
    assert report["iterations"] >= 1
    np.testing.assert_array_equal(upscaled, before)  # the input is not modified
