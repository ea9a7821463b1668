"""Faithful by default: data consistency, the input's intensity range, the disagreement map."""

from __future__ import annotations

import json
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from mrisr.consistency import background_mask, constrain_to_input
from mrisr.disagreement import POOL_SIGMA_VOXELS, TTA_FLIPS, flip_stack, pooled_spread, spread
from mrisr.errors import OutputError
from mrisr.interpolation import CubicSliceModel
from mrisr.simulate import simulate_thick_slices
from mrisr.upscale import upscale_file, upscale_volume
from mrisr.volume import Volume


class BlurColumnsModel(CubicSliceModel):
    """Cubic rows, then a blur along columns: the two planes blur different axes, so they differ."""

    name = "blur-columns"

    def upscale_slices(self, stack: np.ndarray, out_rows: int, progress: Any = None) -> np.ndarray:
        return ndimage.gaussian_filter1d(super().upscale_slices(stack, out_rows), 1.5, axis=2)


class SkewedModel(CubicSliceModel):
    """Cubic rows plus a ramp along columns: not symmetric under flips (for --tta)."""

    name = "skewed"

    def upscale_slices(self, stack: np.ndarray, out_rows: int, progress: Any = None) -> np.ndarray:
        ramp = np.linspace(0.0, 0.1, stack.shape[2], dtype=np.float32)
        return super().upscale_slices(stack, out_rows) + ramp


def thick_scan(rng, shape=(16, 14, 6), background=True) -> Volume:
    data = ndimage.gaussian_filter(rng.random(shape), 1.0).astype(np.float32) * 1000
    if background:
        data[:4] = 0.0  # a zero-filled background band
    return Volume(data, np.diag([1.0, 1.0, 4.0, 1.0]))


# --------------------------------------------------------------------------- consistency


def test_by_default_the_output_resimulates_to_the_input_within_1e_minus_3(rng):
    scan = thick_scan(rng)
    result = upscale_volume(scan, BlurColumnsModel(), factor=4)
    record = result.meta["upscale"]
    assert record["consistency"] is True and record["faithfulness"]["consistency_skipped"] is None
    again = simulate_thick_slices(result.data, 2, 4)
    span = float(np.ptp(scan.data))
    assert np.abs(again - scan.data).max() / span <= 1e-3
    assert record["faithfulness"]["residual_after"] <= 1e-3
    assert record["faithfulness"]["residual_before"] > record["faithfulness"]["residual_after"]


@pytest.mark.parametrize(
    ("settings", "projected", "reason"),
    [
        ({}, True, None),
        ({"consistency": False}, False, "--no-consistency"),
        ({"thickness_mm": 6.5}, False, "1.5 x"),  # overlap too large: skipped, not refused
        ({"thickness_mm": 0.5}, False, "one output voxel"),
    ],
)
def test_default_consistency_is_skipped_with_a_reason_where_it_cannot_apply(
    rng, settings, projected, reason
):
    result = upscale_volume(thick_scan(rng), CubicSliceModel(), factor=4, **settings)
    record = result.meta["upscale"]
    assert record["consistency"] is projected
    skipped = record["faithfulness"]["consistency_skipped"]
    assert (skipped is None) if reason is None else (reason in skipped)


def test_the_gaussian_projection_reproduces_gaussian_slices(rng):
    truth = ndimage.gaussian_filter(rng.random((10, 8, 32)), 1.5).astype(np.float32)
    thick = simulate_thick_slices(truth, 2, 4, profile="gaussian")
    start = np.repeat(thick, 4, axis=2)
    out, report = constrain_to_input(
        start, thick, 2, thickness=4.0, profile="gaussian", project=True, clip=False
    )
    again = simulate_thick_slices(out, 2, 4, profile="gaussian")
    np.testing.assert_allclose(again, thick, atol=1e-4)
    assert report["residual_profile"] == "gaussian" and report["range"] is None


# --------------------------------------------------------------------------- range


def step_scan() -> Volume:
    # A sharp step along the thick axis: cubic interpolation overshoots it.
    data = np.zeros((6, 6, 8), np.float32)
    data[:, :, 4:] = 255.0
    data[:, 3:, :] = 0.0  # zero background
    return Volume(data, np.diag([1.0, 1.0, 4.0, 1.0]))


def test_the_output_stays_in_the_input_range_and_zero_background_stays_zero():
    scan = step_scan()
    plain = upscale_volume(scan, CubicSliceModel(), factor=4, consistency=False, clip_range=False)
    assert plain.data.max() > 255.0 or plain.data.min() < 0.0  # the overshoot to be removed
    result = upscale_volume(scan, CubicSliceModel(), factor=4)
    assert result.data.min() >= 0.0 and result.data.max() <= 255.0
    assert np.all(result.data[:, 3:, :] == 0.0)
    record = result.meta["upscale"]["faithfulness"]
    assert record["range"] == [0.0, 255.0] and record["clip_range"] is True
    assert record["residual_after"] <= 1e-3
    off = upscale_volume(scan, CubicSliceModel(), factor=4, clip_range=False)
    assert off.meta["upscale"]["faithfulness"]["range"] is None


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ([0.0, 5.0, 5.0], [True, True, False, False, False, False]),
        ([-1.0, 0.0, 5.0], [False] * 6),  # negative values: a zero is not background
        ([1.0, 2.0, 3.0], [False] * 6),  # no zeros
    ],
)
def test_background_mask_covers_the_fine_voxels_under_zero_slices(column, expected):
    thick = np.asarray(column, np.float32).reshape(1, 1, 3)
    mask = background_mask(thick, 2, 6, None)
    assert mask.ravel().tolist() == expected


# --------------------------------------------------------------------------- disagreement


@pytest.mark.parametrize("flip", TTA_FLIPS)
def test_flip_stack_is_its_own_inverse(rng, flip):
    stack = rng.random((3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(flip_stack(flip_stack(stack, flip), flip), stack)


def test_spread_of_two_passes_is_half_their_difference(rng):
    a, b = rng.random((4, 5, 6)), rng.random((4, 5, 6))
    np.testing.assert_allclose(spread([a, b]), np.abs(a - b) / 2, rtol=1e-5, atol=1e-6)
    # Two passes take a shortcut; the running sums of more passes agree with it.
    np.testing.assert_allclose(spread([a, b, b, a]), spread([a, b]), rtol=1e-5, atol=1e-6)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    kept = a32.copy(), b32.copy()
    spread([a32, b32])  # float32 passes are used as they are: they must not change
    np.testing.assert_array_equal(a32, kept[0])
    np.testing.assert_array_equal(b32, kept[1])
    with pytest.raises(ValueError, match="at least two passes"):
        spread([a])


def test_the_pooled_spread_is_a_steadier_local_standard_deviation(rng):
    # Two passes that differ by noise of standard deviation 1 on the left, 3 on the right:
    # (a - b) / 2 then has standard deviation s / sqrt(2) where the passes' is s.
    sd = np.ones((40, 40, 40))
    sd[20:] = 3.0
    a, b = rng.normal(0, sd), rng.normal(0, sd)
    plain, pooled = spread([a, b]), pooled_spread([a, b])
    assert pooled.dtype == np.float32 and pooled.shape == a.shape and pooled.min() >= 0
    for region, s in ((np.s_[3:17], 1.0), (np.s_[23:37], 3.0)):
        # The local RMS of the spread estimates s / sqrt(2), and much more steadily.
        assert np.sqrt(np.mean(pooled[region] ** 2)) == pytest.approx(s / np.sqrt(2), rel=0.05)
        steadiness = np.std(pooled[region]) / np.mean(pooled[region])
        assert steadiness < 0.5 * np.std(plain[region]) / np.mean(plain[region])
    # No pooling is the plain spread; a constant spread is kept as it is.
    np.testing.assert_array_equal(pooled_spread([a, b], 0), plain)
    constant = pooled_spread([np.zeros((8, 8, 8)), np.full((8, 8, 8), 4.0)], POOL_SIGMA_VOXELS)
    np.testing.assert_allclose(constant, 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match="sigma_voxels"):
        pooled_spread([a, b], -1)


def test_the_disagreement_map_is_on_the_output_grid_and_in_its_units(rng):
    scan = thick_scan(rng)
    result = upscale_volume(scan, BlurColumnsModel(), factor=4)
    volume = result.meta["disagreement"]
    assert volume.shape == result.shape and volume.data.dtype == np.float32
    np.testing.assert_array_equal(volume.affine, result.affine)
    assert volume.data.max() > 0 and volume.data.min() >= 0
    # Cubic interpolation along the thick axis is the same in both planes: no disagreement.
    cubic = upscale_volume(scan, CubicSliceModel(), factor=4).meta["disagreement"]
    assert cubic.data.max() < 1e-3
    summary = result.meta["upscale"]["disagreement"]
    assert summary["passes"] == 2 and summary["max"] == pytest.approx(float(volume.data.max()))
    assert summary["pool_sigma_voxels"] == POOL_SIGMA_VOXELS
    off = upscale_volume(scan, BlurColumnsModel(), factor=4, disagreement=False)
    assert "disagreement" not in off.meta and "disagreement" not in off.meta["upscale"]


def test_tta_adds_flipped_passes_and_their_spread(rng):
    scan = thick_scan(rng)
    plain = upscale_volume(scan, SkewedModel(), factor=4, clip_range=False, consistency=False)
    tta = upscale_volume(
        scan, SkewedModel(), factor=4, tta=True, clip_range=False, consistency=False
    )
    assert tta.meta["upscale"]["disagreement"]["passes"] == 8 and tta.meta["upscale"]["tta"]
    assert tta.meta["disagreement"].data.mean() > plain.meta["disagreement"].data.mean()
    # Cubic is flip-symmetric: test-time augmentation changes nothing.
    cubic = upscale_volume(scan, CubicSliceModel(), factor=4)
    cubic_tta = upscale_volume(scan, CubicSliceModel(), factor=4, tta=True)
    np.testing.assert_allclose(cubic_tta.data, cubic.data, atol=1e-2)


# --------------------------------------------------------------------------- files


def write_scan(tmp_path, rng) -> Any:
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(thick_scan(rng).data, np.diag([1.0, 1.0, 4.0, 1.0])), path)
    return path


def test_the_map_is_written_beside_the_output_with_its_header_and_listed(tmp_path, rng):
    scan = write_scan(tmp_path, rng)
    output, sidecar = upscale_file(scan, model=BlurColumnsModel(), factor=4)
    spread_file = tmp_path / "scan_sr_disagreement.nii.gz"
    image, spread_image = nib.load(output), nib.load(spread_file)
    np.testing.assert_array_equal(spread_image.affine, image.affine)
    assert spread_image.shape == image.shape
    assert spread_image.header.get_qform(coded=True)[1] == image.header.get_qform(coded=True)[1]
    record = json.loads(sidecar.read_text())
    assert record["disagreement"]["file"] == str(spread_file.resolve())
    assert record["faithfulness"]["residual_after"] <= 1e-3


def test_no_disagreement_skips_the_map_and_an_existing_map_is_refused_first(tmp_path, rng):
    scan = write_scan(tmp_path, rng)
    upscale_file(scan, model=CubicSliceModel(), factor=4, disagreement=False)
    assert not (tmp_path / "scan_sr_disagreement.nii.gz").exists()
    assert "disagreement" not in json.loads((tmp_path / "scan_sr.json").read_text())
    (tmp_path / "other_disagreement.nii.gz").write_bytes(b"keep")

    class Refused(CubicSliceModel):
        def upscale_slices(self, *args: Any) -> np.ndarray:
            raise AssertionError("the existing map must be refused before any work")

    with pytest.raises(OutputError, match="exists"):
        upscale_file(scan, tmp_path / "other.nii.gz", model=Refused(), factor=4)
    assert (tmp_path / "other_disagreement.nii.gz").read_bytes() == b"keep"
    assert not (tmp_path / "other.nii.gz").exists()


def test_a_failed_sidecar_leaves_no_image_and_no_map(tmp_path, rng, monkeypatch):
    import mrisr.io.outputs as outputs

    scan = write_scan(tmp_path, rng)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OutputError("disk full")

    monkeypatch.setattr(outputs, "write_json_atomic", broken)
    with pytest.raises(OutputError, match="disk full"):
        upscale_file(scan, model=CubicSliceModel(), factor=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


@pytest.mark.parametrize(
    ("flags", "consistency", "clip", "written"),
    [
        ([], True, True, True),
        (["--no-consistency", "--no-clip-range", "--no-disagreement"], False, False, False),
        (["--tta"], True, True, True),
    ],
)
def test_command_line_options_reach_the_sidecar(tmp_path, rng, flags, consistency, clip, written):
    from mrisr.cli import app

    scan = write_scan(tmp_path, rng)
    done = CliRunner().invoke(app, ["upscale", str(scan), "--model", "cubic", *flags])
    assert done.exit_code == 0, done.output
    record = json.loads((tmp_path / "scan_sr.json").read_text())
    assert record["consistency"] is consistency
    assert record["faithfulness"]["clip_range"] is clip
    assert record["tta"] is ("--tta" in flags)
    assert (tmp_path / "scan_sr_disagreement.nii.gz").exists() is written


# --------------------------------------------------------------------------- figures


@pytest.mark.parametrize(
    ("order", "flips"),
    [((0, 1, 2), ()), ((2, 0, 1), (0,)), ((1, 2, 0), (1, 2)), ((2, 1, 0), (0, 1, 2))],
)
def test_figures_show_any_storage_order_in_the_same_display_orientation(rng, order, flips):
    from mrisr.figures import DisplayGrid

    ras = rng.random((4, 5, 6))
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    data = np.transpose(ras, order)
    # Voxel (i, j, k) of the stored array is voxel order-permuted of the RAS one.
    stored_affine = affine[:, [*order, 3]]
    for axis in flips:
        data = np.flip(data, axis)
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1.0, data.shape[axis] - 1
        stored_affine = stored_affine @ flip
    grid = DisplayGrid(stored_affine, np.abs(stored_affine[:3, :3]).sum(axis=0))
    np.testing.assert_array_equal(grid.to_ras(data), ras)
    np.testing.assert_allclose(grid.spacing, [1.0, 2.0, 3.0])
    assert grid.aspect(2) == pytest.approx(2.0)  # axial: rows along y (2 mm), columns x (1 mm)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("scan_sr.nii.gz", "scan_sr_disagreement.nii.gz"),
        ("x.mgz", "x_disagreement.mgz"),
        ("sub-01_desc-sr_T2w.nii.gz", "sub-01_desc-srdisagreement_T2w.nii.gz"),
        (
            "sub-01_ses-2_acq-ax_desc-sr_rec-x_FLAIR.nii.gz",
            "sub-01_ses-2_acq-ax_desc-srdisagreement_rec-x_FLAIR.nii.gz",
        ),
        ("sub-01_T2w.nii.gz", "sub-01_T2w_disagreement.nii.gz"),  # no desc: not a derivative
    ],
)
def test_the_disagreement_map_is_named_beside_its_output(tmp_path, output, expected):
    from mrisr.io.outputs import disagreement_path

    assert disagreement_path(tmp_path / output) == tmp_path / expected


def test_where_range_and_measured_slices_cannot_both_hold_the_measured_slices_win():
    # Factor 2.5: thick slices 1 and 2 share a fine voxel; a slice at the top of
    # the range beside one at the bottom asks it for both values, so the range
    # and the consistency sets do not meet. The output must still reproduce its
    # input, and the report must say where the range gave way.
    thick = np.zeros((4, 4, 4), np.float32)
    thick[:, :, 1] = 100.0
    thick[:, :, 2] = 10.0
    thick[:, :, 3] = 50.0
    start = np.repeat(thick, 3, axis=2)[:, :, :10]
    out, report = constrain_to_input(start, thick, 2, thickness=None)
    again = simulate_thick_slices(out, 2, 2.5)
    np.testing.assert_allclose(again, thick, atol=1e-3 * 100)
    assert report["residual_after"] <= 1e-3
    assert report["iterations"] < 200, "a stalled loop stops early"
    assert report["range_exceeded_voxels"] > 0 and 0 < report["range_excess"] < 1


def test_where_the_constraints_meet_the_range_holds_exactly(rng):
    truth = ndimage.gaussian_filter(rng.random((6, 6, 40)), 2.0).astype(np.float32)
    thick = simulate_thick_slices(truth, 2, 2.5)
    start = np.repeat(thick, 3, axis=2)[:, :, :40]
    out, report = constrain_to_input(start, thick, 2, thickness=None)
    assert report["range_exceeded_voxels"] == 0 and report["range_excess"] == 0.0
    assert thick.min() <= out.min() and out.max() <= thick.max()
