"""Volume.crop: the kept voxels stay where they were in millimetres."""

import numpy as np
import pytest

from mrisr.volume import Volume


def _oblique_volume() -> Volume:
    rng = np.random.default_rng(0)
    angle = np.deg2rad(17)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, -1.1, 4.0])
    affine[:3, 3] = [-12.5, 40.0, 7.25]
    return Volume(data=rng.random((9, 8, 7)).astype(np.float32), affine=affine)


@pytest.mark.parametrize(
    "box",
    [
        (slice(2, 7), slice(None), slice(1, 3)),
        (slice(None), slice(-3, None), slice(0, 1)),
        (slice(8, 9), slice(0, 8), slice(None, -2)),
    ],
)
def test_every_kept_voxel_keeps_its_world_position(box):
    volume = _oblique_volume()
    cropped = volume.crop(box)
    np.testing.assert_array_equal(cropped.data, volume.data[box])
    starts = [part.indices(n)[0] for part, n in zip(box, volume.shape, strict=True)]
    for index in np.ndindex(*cropped.shape):
        before = volume.affine @ np.array([*(np.add(index, starts)), 1.0])
        after = cropped.affine @ np.array([*index, 1.0])
        np.testing.assert_allclose(after, before, atol=1e-9)
    assert cropped.data.flags.c_contiguous
    assert volume.shape == (9, 8, 7)  # the input is not changed


@pytest.mark.parametrize(
    "box",
    [(slice(0, 2), slice(None)), (slice(3, 3), slice(None), slice(None)), (slice(0, 9, 2),) * 3],
)
def test_a_box_that_selects_nothing_or_steps_is_refused(box):
    with pytest.raises(ValueError, match="box"):
        _oblique_volume().crop(box)
