"""Training data: paired patches, the six pair kinds, volume discovery, hold-out, seeding."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mrisr.errors import ConfigError, InputError
from mrisr.intensity import fit_normalisation
from mrisr.simulate import simulate_thick_slices
from mrisr.slices import PAIR_KINDS, to_slice_stack
from mrisr.training.data import (
    TrainingVolume,
    find_volumes,
    load_training_volumes,
    split_validation,
)
from mrisr.training.pairs import PairDataset, extract_pair, lr_rows, make_loader, pair_margin


def save_nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4)), str(path))
    return path


def smooth_volume(rng: np.random.Generator, shape=(28, 26, 24)) -> np.ndarray:
    """A positive, non-constant volume that loads and has foreground everywhere."""
    return (1.0 + rng.random(shape)).astype(np.float32)


def training_volume(data: np.ndarray, name: str = "vol") -> TrainingVolume:
    """A TrainingVolume over ``data`` as it is (no normalisation or cropping)."""
    centres = np.argwhere(np.ones(data.shape, bool)).astype(np.int32)
    return TrainingVolume(
        name=name,
        data=data,
        normalisation=fit_normalisation(data),
        spacing=(1.0, 1.0, 1.0),
        centres=centres,
    )


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize(
    ("patch", "factor", "rows_lr", "effective"),
    [(32, 4.0, 8, 4.0), (32, 2.0, 16, 2.0), (32, 3.3, 10, 3.2), (24, 2.5, 10, 2.4)],
)
def test_batches_have_the_lr_rows_of_the_factor_and_report_the_effective_factor(
    rng, patch, factor, rows_lr, effective
):
    volume = training_volume(smooth_volume(rng, (40, 36, 34)))
    dataset = PairDataset(
        [volume], patch_size=patch, factor_bounds=(factor, factor), batch_size=3, seed=1
    )
    batch = dataset[0]
    assert tuple(batch["lr"].shape) == (3, 1, rows_lr, patch)
    assert tuple(batch["hr"].shape) == (3, 1, patch, patch)
    assert batch["lr"].dtype == batch["hr"].dtype == torch.float32
    assert batch["factor"] == pytest.approx(effective)
    assert batch["step"] == 0


@pytest.mark.parametrize(("rows_hr", "rows_lr", "cols"), [(32, 8, 20), (33, 10, 17), (16, 16, 9)])
def test_extract_pair_shapes_for_integer_and_non_integer_factors(rng, rows_hr, rows_lr, cols):
    data = smooth_volume(rng, (40, 36, 34))
    lr, hr = extract_pair(data, 2, 0, 5, 3, 2, rows_hr, cols, rows_lr)
    assert lr.shape == (rows_lr, cols) and hr.shape == (rows_hr, cols)
    assert lr.dtype == hr.dtype == np.float32
    assert lr.flags.c_contiguous and hr.flags.c_contiguous


def test_factor_range_draws_one_factor_per_batch(rng):
    volume = training_volume(smooth_volume(rng, (40, 36, 34)))
    dataset = PairDataset([volume], patch_size=32, factor_bounds=(2.0, 5.0), batch_size=2, seed=3)
    rows = {dataset[step]["lr"].shape[-2] for step in range(12)}
    assert len(rows) > 2  # several factors drawn...
    assert all(lr_rows(32, 5.0) <= r <= lr_rows(32, 2.0) for r in rows)  # ...inside the range


def test_lr_rows_larger_than_hr_rows_are_refused(rng):
    with pytest.raises(ConfigError, match="rows_lr must be in"):
        extract_pair(smooth_volume(rng), 0, 1, 0, 0, 0, 8, 8, 9)


# ----------------------------------------------- LR patch == simulate_thick_slices


@pytest.mark.parametrize("thickness", [1.0, 0.6, 1.4])  # contiguous, gaps, overlap
@pytest.mark.parametrize("profile", ["mean", "gaussian"])
@pytest.mark.parametrize(("thick", "cut"), PAIR_KINDS)
@pytest.mark.parametrize(
    ("n", "rows_hr", "rows_lr", "row0"),
    [
        (64, 32, 8, 16),  # factor 4
        (96, 32, 10, 32),  # factor 3.2: row0 = 10 LR rows of 3.2
        (45, 15, 10, 12),  # factor 1.5: row0 = 8 LR rows of 1.5
    ],
)
def test_lr_patch_equals_the_thick_slice_simulation_of_the_same_rows(
    rng, profile, thickness, thick, cut, n, rows_hr, rows_lr, row0
):
    factor = rows_hr / rows_lr
    # Only the thick axis needs n voxels; the others are small and of unequal sizes.
    shape = [11, 13, 12]
    shape[thick] = n
    data = rng.random(shape).astype(np.float32)
    m_hr, _ = pair_margin(rows_hr, rows_lr, thickness)
    assert 0 <= row0 - m_hr and row0 + rows_hr + m_hr <= n, "window must lie inside the volume"
    assert (row0 / factor).is_integer()
    other = 3 - thick - cut
    index, col0, cols = 4, 2, shape[other] - 4

    lr, hr = extract_pair(
        data, thick, cut, index, row0, col0, rows_hr, cols, rows_lr, profile, thickness
    )

    thick_volume = simulate_thick_slices(
        data, thick, factor, profile=profile, thickness=thickness * factor
    )
    assert thick_volume.shape[thick] == round(n / factor)
    lr0 = round(row0 / factor)
    expected_lr = to_slice_stack(thick_volume, thick, cut)[index, lr0 : lr0 + rows_lr]
    expected_hr = to_slice_stack(data, thick, cut)[index, row0 : row0 + rows_hr]
    np.testing.assert_allclose(lr, expected_lr[:, col0 : col0 + cols], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(hr, expected_hr[:, col0 : col0 + cols])


def test_patches_reaching_outside_the_volume_are_zero_there(rng):
    data = smooth_volume(rng, (20, 18, 16))
    lr, hr = extract_pair(data, 0, 1, 3, -4, 10, 16, 12, 4)
    # Rows -4..-1 and columns 16..21 (the third axis has 16 voxels) are outside.
    assert np.all(hr[:4] == 0) and np.all(hr[:, 6:] == 0)
    np.testing.assert_array_equal(hr[4:, :6], data[:12, 3, 10:16])
    # Factor 4: LR row 0 averages HR rows 0-3 (all outside), row 1 rows 4-7.
    assert np.all(lr[0] == 0)
    np.testing.assert_allclose(lr[1, :6], hr[4:8, :6].mean(axis=0), rtol=1e-6)
    assert np.all(lr[:, 6:] == 0)


# ------------------------------------------------------------- pair kinds


def _kind_of(hr: np.ndarray, slope: dict[int, float]) -> tuple[int, int]:
    """(thick, cut) of a patch of the ramp volume, from its row and column slopes."""

    def axis_of(measured: float) -> int:
        return min(slope, key=lambda axis: abs(abs(measured) - slope[axis]))

    thick = axis_of(float(np.diff(hr, axis=0).mean()))
    other = axis_of(float(np.diff(hr, axis=1).mean()))
    return thick, 3 - thick - other


@pytest.fixture
def ramp() -> tuple[TrainingVolume, dict[int, float]]:
    """A volume whose slope along each axis tells the axis: 0.01, 0.1, 0.001 per voxel."""
    slope = {0: 0.01, 1: 0.1, 2: 0.001}
    x, y, z = np.meshgrid(*(np.arange(n) for n in (24, 22, 20)), indexing="ij")
    data = (0.2 + slope[0] * x + slope[1] * y + slope[2] * z).astype(np.float64)
    return training_volume(data.astype(np.float32)), slope


def test_the_six_pair_kinds_are_every_ordered_pair_of_distinct_axes():
    assert sorted(PAIR_KINDS) == [(t, c) for t in range(3) for c in range(3) if t != c]


def test_pairs_are_drawn_from_all_six_kinds(ramp):
    volume, slope = ramp
    dataset = PairDataset(
        [volume], patch_size=12, factor_bounds=(3, 3), batch_size=16, min_foreground=0, seed=0
    )
    seen = {_kind_of(hr[0], slope) for step in range(4) for hr in dataset[step]["hr"].numpy()}
    assert seen == set(PAIR_KINDS)


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_restricting_the_kinds_draws_only_those(ramp, kind):
    volume, slope = ramp
    dataset = PairDataset(
        [volume],
        patch_size=12,
        factor_bounds=(3, 3),
        batch_size=8,
        kinds=[kind],
        min_foreground=0,
        seed=0,
    )
    batch = dataset[0]
    assert {_kind_of(hr[0], slope) for hr in batch["hr"].numpy()} == {kind}
    # The LR rows are the block means of the HR rows (thick axis in rows, flips or not).
    hr, lr = batch["hr"].numpy()[:, 0], batch["lr"].numpy()[:, 0]
    np.testing.assert_allclose(lr, hr.reshape(8, 4, 3, 12).mean(axis=2), atol=1e-5)


def test_unknown_pair_kinds_are_refused(ramp):
    with pytest.raises(ConfigError, match="kinds must be among"):
        PairDataset([ramp[0]], patch_size=12, factor_bounds=(3, 3), batch_size=1, kinds=[(1, 1)])


# -------------------------------------------------- finding and loading volumes


def test_unreadable_files_are_skipped_with_a_warning_naming_them(tmp_path, rng, caplog):
    good = [save_nifti(tmp_path / f"{n}.nii.gz", smooth_volume(rng)) for n in ("a", "b")]
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image at all" * 20)
    flat = save_nifti(tmp_path / "flat.nii", rng.random((10, 12)))
    (tmp_path / "notes.txt").write_text("ignored: not an image ending")
    with caplog.at_level(logging.WARNING, logger="mrisr"):
        found = find_volumes(tmp_path)
    assert found == good
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(junk) in w and "unreadable" in w for w in warnings)
    assert any(str(flat) in w and "not a 3D volume" in w for w in warnings)
    assert not any("notes.txt" in w for w in warnings)


def test_a_broken_symbolic_link_is_skipped_with_a_warning_naming_it_and_its_target(
    tmp_path, rng, caplog
):
    good = [save_nifti(tmp_path / f"{n}.nii.gz", smooth_volume(rng)) for n in ("a", "b")]
    lost = tmp_path / "lost.nii.gz"
    lost.symlink_to(tmp_path / "elsewhere" / "gone.nii.gz")
    relative = tmp_path / "moved.mgz"
    relative.symlink_to("old_name.mgz")
    with caplog.at_level(logging.WARNING, logger="mrisr"):
        found = find_volumes(tmp_path)
    assert found == good
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (said,) = [w for w in warnings if str(lost) in w]
    assert "broken symbolic link" in said and str(tmp_path / "elsewhere" / "gone.nii.gz") in said
    assert "fix: restore the target" in said
    (said,) = [w for w in warnings if str(relative) in w]
    assert str(tmp_path / "old_name.mgz") in said  # a relative target, from the link's folder
    # Links alone: the folder holds no readable volume, and says how many it tried.
    for path in good:
        path.unlink()
    with pytest.raises(InputError, match="holds no readable volume .2 candidate"):
        find_volumes(tmp_path)
    # The folder itself a broken link: named as one, with its target.
    folder = tmp_path / "volumes"
    folder.symlink_to(tmp_path / "unmounted")
    with pytest.raises(InputError, match="is a broken symbolic link: its target .*unmounted"):
        find_volumes(folder)


def test_volumes_whose_voxels_cannot_be_read_are_skipped_when_loading(tmp_path, rng, caplog):
    good = save_nifti(tmp_path / "good.nii.gz", smooth_volume(rng))
    truncated = save_nifti(tmp_path / "truncated.nii", smooth_volume(rng))
    truncated.write_bytes(truncated.read_bytes()[:1000])  # the header reads, the voxels do not
    constant = save_nifti(tmp_path / "constant.nii.gz", np.ones((12, 12, 12)))
    paths = find_volumes(tmp_path)
    assert truncated in paths  # its header is fine
    with caplog.at_level(logging.WARNING, logger="mrisr"):
        volumes = load_training_volumes(paths)
    assert [v.name for v in volumes] == ["good"]
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(truncated) in warnings and "truncated" in warnings
    assert str(constant) in warnings
    assert str(good) not in warnings


def test_a_folder_without_a_readable_volume_is_a_clear_error(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"\x00" * 100)
    (tmp_path / "junk.mgz").write_bytes(b"")
    with pytest.raises(InputError, match="holds no readable volume") as caught:
        find_volumes(tmp_path)
    assert str(tmp_path) in str(caught.value) and "2 candidate" in str(caught.value)
    with pytest.raises(InputError, match="is not a folder"):
        find_volumes(tmp_path / "missing")


def test_loading_nothing_usable_is_a_clear_error(tmp_path):
    path = save_nifti(tmp_path / "zeros.nii.gz", np.zeros((10, 10, 10)))
    with pytest.raises(InputError, match="none of the 1 training volume") as caught:
        load_training_volumes([path])
    assert str(tmp_path) in str(caught.value)


def test_prepared_volumes_are_normalised_cropped_and_the_input_is_untouched(tmp_path, rng):
    data = np.zeros((40, 40, 40), np.float32)
    data[10:20, 12:30, 5:15] = 100 + 50 * rng.random((10, 18, 10))
    path = save_nifti(tmp_path / "box.nii.gz", data)
    (volume,) = load_training_volumes([path])
    # Foreground box plus the 8-voxel margin (clipped at the volume's edges).
    assert volume.data.shape == (26, 34, 23)
    assert volume.data.min() == 0.0 and 0.5 < np.median(volume.data[volume.data > 0]) < 1.0
    assert len(volume.centres) == 10 * 18 * 10
    assert np.all(volume.data[tuple(volume.centres.T)] > 0.05)


# ------------------------------------------------------------------ hold-out


def test_validation_volume_held_out_by_name_or_auto():
    paths = [Path("/d/c.nii.gz"), Path("/d/a.mgz"), Path("/d/b.nii")]
    assert split_validation(paths, "auto") == ([Path("/d/a.mgz"), Path("/d/b.nii")], paths[0])
    for name in ("a", "a.mgz"):
        assert split_validation(paths, name) == ([Path("/d/b.nii"), paths[0]], Path("/d/a.mgz"))
    assert split_validation(paths, "none") == (sorted(paths), None)


def test_unknown_validation_volume_lists_the_names():
    with pytest.raises(ConfigError, match="'d' is not among") as caught:
        split_validation([Path("/d/a.nii"), Path("/d/b.nii")], "d")
    assert "a, b" in str(caught.value)


def test_holding_out_the_only_volume(caplog):
    only = [Path("/d/a.nii")]
    with pytest.raises(ConfigError, match="leaves no volume to train on"):
        split_validation(only, "a")
    with caplog.at_level(logging.WARNING, logger="mrisr"):
        assert split_validation(only, "auto") == (only, only[0])
    assert "also trained on" in caplog.text


# ---------------------------------------------------------------- seeding


@pytest.fixture
def two_volumes(rng) -> list[TrainingVolume]:
    return [training_volume(smooth_volume(rng, (30, 28, 26)), n) for n in ("a", "b")]


def dataset(volumes, *, seed=7, rank=0) -> PairDataset:
    return PairDataset(
        volumes, patch_size=16, factor_bounds=(2.0, 4.0), batch_size=4, seed=seed, rank=rank
    )


def test_same_seed_gives_the_same_batches_in_any_order(two_volumes):
    first, second = dataset(two_volumes), dataset(two_volumes)
    forward = [first.batch_arrays(step) for step in range(4)]
    backward = [second.batch_arrays(step) for step in reversed(range(4))][::-1]
    for (lr_a, hr_a, f_a), (lr_b, hr_b, f_b) in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(lr_a, lr_b)
        np.testing.assert_array_equal(hr_a, hr_b)
        assert f_a == f_b
    # Steps differ from one another.
    assert not np.array_equal(forward[0][1], forward[1][1])


@pytest.mark.parametrize("change", [{"seed": 8}, {"rank": 1}])
def test_another_seed_or_rank_gives_other_batches(two_volumes, change):
    _, hr_a, _ = dataset(two_volumes).batch_arrays(0)
    _, hr_b, _ = dataset(two_volumes, **change).batch_arrays(0)
    assert not np.array_equal(hr_a, hr_b)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_loader_yields_the_steps_batches_whatever_the_workers(two_volumes, workers):
    data = dataset(two_volumes)
    batches = list(make_loader(data, 3, 6, workers=workers))
    assert [b["step"] for b in batches] == [3, 4, 5]
    for batch in batches:
        lr, hr, factor = data.batch_arrays(batch["step"])
        np.testing.assert_array_equal(batch["lr"].numpy(), lr)
        np.testing.assert_array_equal(batch["hr"].numpy(), hr)
        assert batch["factor"] == factor
