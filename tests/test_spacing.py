"""``--spacing MM``: an isotropic output at MM mm, in-plane area-averaged, thick axis super-resolved.

The grid is checked axis by axis against the field-of-view convention of
docs/geometry.md (outer voxel faces and the centre stay put), the in-plane
step against its definition (an area average) and against aliasing, the
refusals for what it cannot do, and data consistency against the in-plane
resampled scan.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from mrisr import load_volume, save_volume, simulate_volume
from mrisr.cli import app
from mrisr.cohort import upscale_many
from mrisr.errors import ConfigError
from mrisr.geometry import output_slice_count, resampled_affine, voxel_sizes
from mrisr.interpolation import CubicSliceModel
from mrisr.metrics import psnr
from mrisr.plan import resample_in_plane, working_grid
from mrisr.simulate import apply_along_axis, simulate_thick_slices, slice_profile_matrix
from mrisr.upscale import plan_upscale, upscale_file, upscale_volume
from mrisr.volume import Volume


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def oblique(spacing, seed=0) -> np.ndarray:
    """An oblique, left-handed affine with the given voxel sizes and an offset."""
    rotation = Rotation.random(random_state=seed).as_matrix() @ np.diag([1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = [-91.3, 12.7, 40.1]
    return affine


def scan(rng, shape, spacing, *, seed=0, smooth=1.5) -> Volume:
    data = ndimage.gaussian_filter(rng.random(shape), smooth).astype(np.float32) * 1000
    return Volume(data, oblique(spacing, seed))


def world(affine, index) -> np.ndarray:
    return (np.asarray(affine) @ np.append(np.asarray(index, float), 1.0))[:3]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the grid


@pytest.mark.parametrize(
    ("thick_axis", "spacing", "mm"),
    [
        (2, (0.43, 0.43, 4.4), 1.0),  # the FLAIR case, non-integer everywhere
        (0, (5.0, 0.9, 0.8), 1.3),
        (1, (0.7, 6.0, 0.7), 0.7),  # at the in-plane spacing: no in-plane step
        (2, (1.0, 1.0, 8.0), 2.0),  # integer everywhere
    ],
)
def test_every_axis_keeps_its_field_of_view_at_about_mm(rng, thick_axis, spacing, mm):
    shape = tuple(14 if a == thick_axis else 47 + a for a in range(3))
    volume = scan(rng, shape, spacing, seed=thick_axis)
    plan = plan_upscale(volume, spacing_mm=mm)
    assert plan.axis == thick_axis and plan.spacing_mm == mm
    assert plan.factor == pytest.approx(spacing[thick_axis] / mm)
    expected_shape = tuple(
        output_slice_count(n, s / mm) for n, s in zip(shape, spacing, strict=True)
    )
    assert plan.shape_out == expected_shape
    in_plane = [a for a in range(3) if a != thick_axis]
    assert all(plan.shape_out[a] <= shape[a] for a in in_plane)
    assert plan.shape_grid[thick_axis] == shape[thick_axis]
    assert plan.resamples_in_plane == any(plan.shape_out[a] < shape[a] for a in in_plane)
    centre_in = (np.asarray(shape) - 1) / 2
    centre_out = (np.asarray(plan.shape_out) - 1) / 2
    np.testing.assert_allclose(
        world(plan.affine_out, centre_out), world(volume.affine, centre_in), atol=1e-6
    )
    for a in range(3):
        # The outer faces of the first and last voxel along each axis stay where they were.
        for face_in, face_out in ((-0.5, -0.5), (shape[a] - 0.5, plan.shape_out[a] - 0.5)):
            index_in, index_out = centre_in.copy(), centre_out.copy()
            index_in[a], index_out[a] = face_in, face_out
            np.testing.assert_allclose(
                world(plan.affine_out, index_out), world(volume.affine, index_in), atol=1e-6
            )
        # Voxel size: the field of view over the count, within half a voxel's worth of MM.
        size = shape[a] * spacing[a] / plan.shape_out[a]
        assert plan.spacing_out[a] == pytest.approx(size)
        assert abs(size - mm) <= mm / (2 * plan.shape_out[a]) + 1e-9
        # Direction cosines are untouched.
        np.testing.assert_allclose(
            plan.affine_out[:3, a] / plan.spacing_out[a],
            volume.affine[:3, a] / spacing[a],
            atol=1e-9,
        )
    # The same as the thick-axis convention applied to each axis in turn.
    composed = volume.affine
    for a in range(3):
        composed = resampled_affine(composed, a, shape[a], plan.shape_out[a])
    np.testing.assert_allclose(plan.affine_out, composed, atol=1e-9)
    result = upscale_volume(volume, CubicSliceModel(), plan=plan)
    assert result.shape == plan.shape_out
    np.testing.assert_allclose(result.affine, plan.affine_out, atol=1e-9)
    np.testing.assert_allclose(result.spacing, voxel_sizes(plan.affine_out), rtol=1e-9)
    spread = result.meta["disagreement"]
    assert spread.shape == plan.shape_out
    np.testing.assert_allclose(spread.affine, plan.affine_out, atol=1e-9)


def test_the_in_plane_step_is_an_area_average_that_does_not_alias():
    shape, spacing = (40, 30, 6), (0.5, 0.5, 5.0)
    affine = np.diag([*spacing, 1.0])
    # Integer ratio (0.5 -> 1 mm): exactly the mean of 2 x 2 blocks.
    data = np.random.default_rng(7).random(shape).astype(np.float32)
    plan = plan_upscale(Volume(data, affine), spacing_mm=1.0)
    resampled = resample_in_plane(Volume(data, affine), plan)
    blocks = data.reshape(20, 2, 15, 2, 6).mean(axis=(1, 3))
    np.testing.assert_allclose(resampled.data, blocks, atol=1e-6)
    np.testing.assert_allclose(resampled.affine, plan.affine_grid)
    # Non-integer ratio (0.5 -> 1.25 mm): the finest pattern the input holds,
    # +1/-1 alternating voxels, averages out over each 2.5-voxel box instead
    # of folding back as a coarse pattern (point sampling would keep +-1).
    stripes = np.where(np.indices(shape)[0] % 2 == 0, 1.0, -1.0).astype(np.float32)
    plan = plan_upscale(Volume(stripes, affine), spacing_mm=1.25)
    smooth = resample_in_plane(Volume(stripes, affine), plan).data
    assert smooth.shape == (16, 12, 6)
    assert np.abs(smooth).max() <= 1 / 2.5 + 1e-6
    # The boxes tile the field of view: the mean intensity is kept.
    assert float(smooth.mean()) == pytest.approx(float(stripes.mean()), abs=1e-6)


# --------------------------------------------------------------------------- refusals


def flair_like() -> Volume:
    data = np.random.default_rng(3).random((40, 40, 8)).astype(np.float32) * 100
    return Volume(data, np.diag([0.43, 0.43, 4.4, 1.0]))


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"spacing_mm": float("nan")}, ["positive number of mm"]),
        ({"spacing_mm": float("inf")}, ["positive number of mm"]),
        ({"spacing_mm": 0.0}, ["positive number of mm"]),
        ({"spacing_mm": -1.0}, ["positive number of mm"]),
        ({"spacing_mm": 0.3}, ["does not upsample in-plane", "omit --spacing"]),
        ({"spacing_mm": 4.4}, ["nothing to super-resolve", "at most 4.1411 mm"]),
        # Finer, but 8 x 4.4 / 4.3 = 8.19 rounds to 8 slices: no slice added.
        ({"spacing_mm": 4.3}, ["adds no slice along the thick axis 2", "at most 4.1411 mm"]),
        ({"factor": 1.05}, ["adds no slice to the 8 slices", "--factor 1.0625 or more"]),
        ({"axis": 2.0, "factor": 2.0}, ["axis must be 0, 1 or 2, got 2.0"]),
        ({"axis": True, "factor": 2.0}, ["axis must be 0, 1 or 2, got True"]),
        ({"spacing_mm": 6.0}, ["nothing to super-resolve"]),
        ({"spacing_mm": 1.0, "factor": 4.0}, ["both set the output grid", "not both"]),
        # The wrong type: a ConfigError with both spellings of the fix, not numpy's TypeError.
        ({"factor": "4"}, ["factor must be a number, got '4' (str)", "factor=4 ", "--factor 4"]),
        ({"factor": True}, ["factor must be a number, got True (bool)", "--factor"]),
        ({"spacing_mm": "1"}, ["spacing_mm must be a number, got '1'", "spacing_mm=1 "]),
        ({"spacing_mm": [1.0]}, ["spacing_mm must be a number, got [1.0] (list)"]),
        ({"factor": "2", "spacing_mm": 1.0}, ["factor must be a number, got '2'"]),
        ({"axis": "2"}, ["axis must be 0, 1 or 2, got '2'", "axis=0, 1 or 2 (--axis"]),
    ],
)
def test_a_grid_it_cannot_use_is_refused_before_any_work(settings, words):
    with pytest.raises(ConfigError) as error:
        plan_upscale(flair_like(), **settings)
    for word in words:
        assert word in str(error.value)
    with pytest.raises(ConfigError):
        upscale_volume(flair_like(), CubicSliceModel(), **settings)


def test_a_factor_of_the_wrong_type_is_refused_by_upscale_file_before_the_scan_is_read(tmp_path):
    from mrisr.upscale import upscale_file

    missing = tmp_path / "not_read.nii.gz"  # never read: the factor is refused first
    with pytest.raises(ConfigError, match="factor must be a number, got '4'"):
        upscale_file(missing, model="cubic", factor="4")
    assert list(tmp_path.iterdir()) == []


def test_an_in_plane_axis_coarser_than_mm_is_refused_naming_the_coarsest():
    volume = Volume(np.zeros((40, 30, 8), np.float32), np.diag([0.5, 0.8, 5.0, 1.0]))
    with pytest.raises(ConfigError, match="at least 0.8 mm"):
        plan_upscale(volume, spacing_mm=0.6)
    assert plan_upscale(volume, spacing_mm=0.8).shape_out == (25, 30, 50)


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--spacing", "0.2"], ["does not upsample in-plane", "omit --spacing"]),
        (["--spacing", "5"], ["nothing to super-resolve", "--spacing of at most 4.1411 mm"]),
        (["--spacing", "0"], ["positive number of mm"]),
        (["--spacing", "nan"], ["positive number of mm"]),
        (["--spacing", "1", "--factor", "4"], ["--spacing MM", "--factor", "not both"]),
    ],
)
def test_the_command_exits_2_with_the_fix_and_writes_nothing(tmp_path, arguments, words):
    source = tmp_path / "flair.nii.gz"
    save_volume(flair_like(), source)
    before = digest(source)
    result = invoke("upscale", source, "--model", "cubic", *arguments)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    for word in words:
        assert word in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flair.nii.gz"]
    assert digest(source) == before


def test_several_scans_with_spacing_and_factor_are_refused_before_any_scan(tmp_path):
    for name in ("a", "b"):
        save_volume(flair_like(), tmp_path / f"{name}.nii.gz")
    result = invoke(
        "upscale", tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", "--model", "cubic",
        "--spacing", "1", "--factor", "4",
    )  # fmt: skip
    assert result.exit_code == 2 and "not both" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]


# --------------------------------------------------------------------------- consistency


def test_the_output_resimulates_to_the_in_plane_resampled_input(rng):
    # 1 mm in-plane -> 2 mm (2 x 2 block means), 8 mm slices -> 2 mm (factor 4):
    # checked with plain numpy, independently of the plan's own resampling.
    volume = Volume(
        ndimage.gaussian_filter(rng.random((24, 20, 7)), 1.0).astype(np.float32) * 1000,
        np.diag([1.0, 1.0, 8.0, 1.0]),
    )
    result = upscale_volume(volume, CubicSliceModel(), spacing_mm=2.0)
    assert result.shape == (12, 10, 28)
    record = result.meta["upscale"]
    assert record["consistency"] is True
    reference = volume.data.reshape(12, 2, 10, 2, 7).mean(axis=(1, 3))
    again = simulate_thick_slices(result.data, 2, 4)
    span = float(np.ptp(reference))
    assert np.abs(again - reference).max() / span <= 1e-3
    faithfulness = record["faithfulness"]
    assert faithfulness["residual_after"] <= 1e-3
    assert faithfulness["residual_before"] > faithfulness["residual_after"]
    assert faithfulness["range"] == [float(reference.min()), float(reference.max())]
    assert record["in_plane_resampling"]["shape"] == [12, 10, 7]


def test_consistency_holds_at_non_integer_factors_on_an_oblique_scan(rng):
    volume = scan(rng, (30, 26, 9), (0.8, 0.8, 5.0), smooth=2.0)
    result = upscale_volume(volume, CubicSliceModel(), spacing_mm=1.5)  # in-plane 1.875x, 3.33x
    plan = plan_upscale(volume, spacing_mm=1.5)
    grid, _ = working_grid(volume, plan)
    forward = slice_profile_matrix(plan.n_out, plan.n_in, thickness=5.0 / plan.spacing_out[2])
    again = apply_along_axis(forward, result.data, 2)
    assert np.abs(again - grid.data).max() / float(np.ptp(grid.data)) <= 1e-3
    assert result.meta["upscale"]["faithfulness"]["residual_after"] <= 1e-3


def test_the_result_is_closer_to_the_truth_than_the_thick_scan(rng):
    truth_fine = ndimage.gaussian_filter(rng.random((48, 40, 64)), 3.0).astype(np.float32) * 1000
    hr = Volume(truth_fine, np.diag([0.5, 0.5, 0.5, 1.0]))
    thick = simulate_volume(hr, 2, 8)  # 0.5 x 0.5 x 4 mm
    result = upscale_volume(thick, CubicSliceModel(), spacing_mm=1.0)
    truth = truth_fine
    for a in range(3):
        truth = apply_along_axis(slice_profile_matrix(hr.shape[a], result.shape[a]), truth, a)
    grid, plan = working_grid(thick, plan_upscale(thick, spacing_mm=1.0))
    repeated = np.repeat(grid.data, 4, axis=2)
    assert result.shape == truth.shape == repeated.shape == (24, 20, 32)
    assert psnr(result.data, truth) > psnr(repeated, truth) + 1.5  # measured +2.7 dB


# --------------------------------------------------------------------------- API and files


def test_upscale_file_records_the_spacing_and_the_in_plane_step(tmp_path, rng):
    source = tmp_path / "scan.nii.gz"
    save_volume(scan(rng, (30, 28, 8), (0.6, 0.6, 4.0)), source)
    before = digest(source)
    output, sidecar = upscale_file(source, model="cubic", spacing_mm=1.2)
    assert digest(source) == before
    record = json.loads(sidecar.read_text())
    assert record["spacing_mm"] == 1.2 and record["shape_out"] == [15, 14, 27]
    step = record["in_plane_resampling"]
    assert step["shape"] == [15, 14, 8] and "area average" in step["method"]
    assert step["spacing_mm"][:2] == pytest.approx([1.2, 1.2])
    assert "in-plane" in step["consistency_reference"]
    written = nib.load(output)
    spread = nib.load(tmp_path / "scan_sr_disagreement.nii.gz")
    plan = plan_upscale(load_volume(source), spacing_mm=1.2)
    assert written.shape == spread.shape == plan.shape_out
    np.testing.assert_allclose(written.affine, plan.affine_out, atol=1e-5)
    np.testing.assert_allclose(spread.affine, plan.affine_out, atol=1e-5)
    # Without --spacing nothing of it is recorded.
    _, plain = upscale_file(source, tmp_path / "plain.nii.gz", model="cubic")
    plain_record = json.loads(plain.read_text())
    assert plain_record["spacing_mm"] is None and plain_record["in_plane_resampling"] is None


def test_a_plan_and_a_different_spacing_are_refused(rng):
    volume = scan(rng, (30, 28, 8), (0.6, 0.6, 4.0))
    plan = plan_upscale(volume, spacing_mm=1.2)
    same = upscale_volume(volume, CubicSliceModel(), plan=plan, spacing_mm=1.2)
    direct = upscale_volume(volume, CubicSliceModel(), spacing_mm=1.2)
    np.testing.assert_array_equal(same.data, direct.data)
    with pytest.raises(ConfigError, match="disagree with the plan"):
        upscale_volume(volume, CubicSliceModel(), plan=plan, spacing_mm=1.5)


def test_info_shows_the_planned_grid(tmp_path):
    source = tmp_path / "flair.nii.gz"
    save_volume(flair_like(), source)
    shown = invoke("info", source, "--spacing", "1")
    assert shown.exit_code == 0, shown.output
    assert "area average to 17 x 17 x 8" in shown.output and "17 x 17 x 35" in shown.output
    facts = json.loads(invoke("info", source, "--spacing", "1", "--json").output)
    assert facts["spacing_mm"] == 1.0 and facts["shape_out"] == [17, 17, 35]


def test_a_cohort_resumes_only_scans_done_at_the_same_spacing(tmp_path, rng):
    for name in ("a", "b"):
        save_volume(scan(rng, (20, 18, 6), (0.6, 0.6, 4.0)), tmp_path / f"{name}.nii.gz")
    scans = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    first = list(upscale_many(scans, "cubic", output_dir=tmp_path / "out", spacing_mm=1.2))
    assert [r.status for r in first] == ["done", "done"]
    record = json.loads((tmp_path / "out" / "a_sr.json").read_text())
    assert record["spacing_mm"] == 1.2 and record["shape_out"] == [10, 9, 20]
    again = list(upscale_many(scans, "cubic", output_dir=tmp_path / "out", spacing_mm=1.2))
    assert [r.status for r in again] == ["skipped", "skipped"]
    # Another grid is another result: not taken for done (and not overwritten silently).
    other = list(upscale_many(scans, "cubic", output_dir=tmp_path / "out", spacing_mm=2.0))
    assert [r.status for r in other] == ["failed", "failed"]
    assert "spacing_mm" in other[0].error


def test_bids_passes_the_spacing_on(shared_data, tmp_path):
    pytest.importorskip("bids", reason="pybids (the mrisr[bids] extra) is not installed")
    raw = tmp_path / "raw"
    anat = raw / "sub-01" / "anat"
    anat.mkdir(parents=True)
    hr = load_volume(shared_data / "fixtures" / "spine_t2_1mm.nii.gz")
    save_volume(simulate_volume(hr, 2, 4), anat / "sub-01_T2w.nii.gz")
    (raw / "dataset_description.json").write_text(
        json.dumps({"Name": "toy", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    )
    out = raw / "derivatives" / "mrisr"
    result = invoke("bids", raw, out, "--model", "cubic", "--spacing", "2")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "sub-01" / "anat" / "sub-01_desc-sr_T2w.json").read_text())
    assert record["spacing_mm"] == 2.0 and record["shape_out"] == [30, 28, 26]


# --------------------------------------------------------------------------- the bundled model


def test_the_bundled_default_model_at_a_coarser_spacing_on_a_real_scan(shared_data, tmp_path):
    from mrisr.models import bundled_models

    if "fast" not in bundled_models():
        pytest.skip("no bundled models installed in mrisr/weights")
    hr = load_volume(shared_data / "fixtures" / "spine_t2_1mm.nii.gz")  # 60 x 55 x 52, 1 mm
    source = tmp_path / "thick.nii.gz"
    save_volume(simulate_volume(hr, 0, 6), source)  # 10 slices of 6 mm along axis 0
    # 1.5 mm: in-plane 55 -> 37 and 52 -> 35 voxels, thick axis 4x (10 -> 40 slices).
    result = invoke("upscale", source, "--spacing", "1.5", "--device", "cpu", "--force")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "thick_sr.json").read_text())
    assert record["model"]["name"] != "cubic" and record["factor"] == pytest.approx(4.0)
    assert record["shape_out"] == [40, 37, 35] and record["spacing_mm"] == 1.5
    assert record["faithfulness"]["residual_after"] <= 1e-3
    output = load_volume(tmp_path / "thick_sr.nii.gz")
    truth = np.asarray(hr.data, np.float32)
    for a in range(3):
        truth = apply_along_axis(slice_profile_matrix(hr.shape[a], output.shape[a]), truth, a)
    cubic = upscale_volume(load_volume(source), CubicSliceModel(), spacing_mm=1.5)
    # Measured: 23.1 dB for the default model, 22.7 dB for cubic.
    assert psnr(output.data, truth) > psnr(cubic.data, truth)


@pytest.mark.parametrize(("n", "factor_ok"), [(8, 1.0625), (9, 1.0556), (40, 1.0125)])
def test_the_smallest_factor_offered_adds_a_slice(n, factor_ok):
    volume = Volume(np.ones((6, 6, n), np.float32), np.diag([1.0, 1.0, 4.0, 1.0]))
    with pytest.raises(ConfigError, match=f"--factor {factor_ok:g} or more"):
        plan_upscale(volume, factor=1.0 + 0.4 / n)
    assert plan_upscale(volume, factor=factor_ok).n_out == n + 1
