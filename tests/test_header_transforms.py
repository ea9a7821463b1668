"""Every transform and grid field of a NIfTI header goes through the grid change.

qform and sform each become ``form_in @ S`` (S the one-axis grid change, or a
crop's shift) with their own codes, read alike by nibabel and SimpleITK; a
sheared sform never becomes a rebuilt qform; slice timing and grid-bound
intents of the input's grid do not survive onto another grid.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from mrisr.geometry import output_slice_count, resampled_affine
from mrisr.interpolation import CubicSliceModel
from mrisr.io import load_volume, save_volume
from mrisr.io.nibabel_formats import form_disagreement
from mrisr.upscale import upscale_volume

T2STAR = "thick/spine_t2star_7.5mm.nii.gz"
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Forms are stored as float32: offsets of ~100 mm keep about 1e-5 mm.
FLOAT32_MM = 2e-5


def rotation_z(degrees: float, shift: tuple[float, float, float]) -> np.ndarray:
    """A world transform: rotation about z, then a shift (mm)."""
    t = np.deg2rad(degrees)
    world = np.eye(4)
    world[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    world[:3, 3] = shift
    return world


def shear(amount: float) -> np.ndarray:
    """A voxel-space shear of the slice axis along the first (gantry tilt)."""
    matrix = np.eye(4)
    matrix[0, 2] = amount
    return matrix


def base_affine() -> np.ndarray:
    """Oblique, left-handed, thick along axis 2."""
    rotation, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))
    if np.linalg.det(rotation) > 0:
        rotation[:, 0] *= -1
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 5.0])
    affine[:3, 3] = [-80.0, 35.0, 62.0]
    return affine


def write_input(
    path: Path, qform: np.ndarray, sform: np.ndarray, codes: tuple[int, int], shape=(10, 12, 6)
) -> Path:
    data = np.random.default_rng(3).uniform(0, 1000, size=shape).astype(np.float32)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_qform(qform, code=codes[0])
    header.set_sform(sform, code=codes[1])
    nib.save(nib.Nifti1Image(data, None, header), path)
    return path


def sitk_affine(path: Path) -> np.ndarray:
    """The RAS voxel-to-world matrix SimpleITK reads from a file."""
    image = sitk.ReadImage(str(path))
    affine = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return LPS @ affine


A = base_affine()
FORMS = {
    # name: (qform, sform, codes)
    "rotated-shifted-sform": (A, rotation_z(6, (12, -7, 4)) @ A, (1, 2)),
    "codes-swapped": (rotation_z(-3, (0, 5, -2)) @ A, A, (2, 1)),
    "both-scanner": (A, rotation_z(10, (1, 2, 3)) @ A, (1, 1)),
    "sheared-sform-valid-qform": (A, A @ shear(0.3), (1, 2)),
    "agreeing": (A, A, (2, 1)),
    "sform-only": (A, A, (0, 2)),
    "qform-only": (A, A, (1, 0)),
}


def grid_change(kind: str, shape: tuple[int, int, int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """(S, new shape): the voxel-space matrix of a grid change and the grid it gives."""
    if kind.startswith("upscale-"):
        factor = float(kind.split("-")[1])
        n_out = output_slice_count(shape[2], factor)
        return resampled_affine(np.eye(4), 2, shape[2], n_out), (*shape[:2], n_out)
    shift = np.eye(4)
    shift[:3, 3] = [2, 1, 1]
    return shift, (shape[0] - 3, shape[1] - 2, shape[2] - 2)


@pytest.mark.parametrize("change", ["upscale-3", "upscale-2.5", "crop"])
@pytest.mark.parametrize("name", list(FORMS))
def test_each_form_goes_through_the_grid_change(tmp_path: Path, name: str, change: str) -> None:
    qform_in, sform_in, codes = FORMS[name]
    source = write_input(tmp_path / "in.nii.gz", qform_in, sform_in, codes)
    stored = nib.load(source).header
    volume = load_volume(source)
    grid, shape = grid_change(change, volume.shape)
    if change == "crop":
        result = volume.crop((slice(2, -1), slice(1, -1), slice(1, -1)))
    else:
        result = volume.with_data(np.zeros(shape, np.float32), volume.affine @ grid)
    assert result.shape == shape
    out = save_volume(result, tmp_path / "out.nii.gz")
    written = nib.load(out).header
    assert (int(written["qform_code"]), int(written["sform_code"])) == codes
    if codes[1] > 0:
        np.testing.assert_allclose(written.get_sform(), stored.get_sform() @ grid, atol=FLOAT32_MM)
    if codes[0] > 0:
        np.testing.assert_allclose(written.get_qform(), stored.get_qform() @ grid, atol=FLOAT32_MM)
    # SimpleITK reads the output where it read the input, moved by the same grid change.
    np.testing.assert_allclose(sitk_affine(out), sitk_affine(source) @ grid, atol=FLOAT32_MM)


@pytest.mark.parametrize("factor", [3, 5])
def test_sheared_sform_without_qform_is_not_squeezed_into_a_qform(
    tmp_path: Path, factor: int
) -> None:
    sheared = A @ shear(0.25)
    source = write_input(tmp_path / "in.nii.gz", A, sheared, (0, 1))
    volume = load_volume(source)
    grid, shape = grid_change(f"upscale-{factor}", volume.shape)
    out = save_volume(
        volume.with_data(np.zeros(shape, np.float32), volume.affine @ grid), tmp_path / "o.nii"
    )
    written = nib.load(out).header
    assert (int(written["qform_code"]), int(written["sform_code"])) == (0, 1)
    np.testing.assert_allclose(written.get_sform(), sheared @ grid, atol=FLOAT32_MM)
    np.testing.assert_allclose(
        written.get_zooms()[:3], np.linalg.norm(sheared[:3, :3] @ grid[:3, :3], axis=0), rtol=1e-6
    )
    # An in-memory sheared volume: its qform gets code 0, never the nearest rotation.
    from mrisr.volume import Volume

    out = save_volume(Volume(np.zeros((4, 5, 6), np.float32), sheared), tmp_path / "m.nii")
    written = nib.load(out).header
    assert int(written["qform_code"]) == 0 and int(written["sform_code"]) > 0
    np.testing.assert_allclose(written.get_sform(), sheared, atol=FLOAT32_MM)


def test_spine_example_from_the_issue(tmp_path: Path, shared_data: Path) -> None:
    """qform = the scan's affine (code 1), sform = 6 degrees about z and (12, -7, 4) mm (code 2)."""
    image = nib.load(shared_data / T2STAR)
    header = image.header.copy()
    qform = image.affine
    header.set_qform(qform, code=1)
    header.set_sform(rotation_z(6, (12, -7, 4)) @ qform, code=2)
    source = tmp_path / "t2s.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), None, header), source)
    stored = nib.load(source).header

    from mrisr.cli import app

    out = tmp_path / "t2s_sr.nii.gz"
    result = CliRunner().invoke(
        app, ["upscale", str(source), "-o", str(out), "--model", "cubic", "--factor", "5"]
    )
    assert result.exit_code == 0, result.output
    written = nib.load(out)
    n_in, n_out = image.shape[2], written.shape[2]
    assert n_out == 45
    grid = resampled_affine(np.eye(4), 2, n_in, n_out)
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == (1, 2)
    np.testing.assert_allclose(written.header.get_qform(), stored.get_qform() @ grid, atol=1e-5)
    np.testing.assert_allclose(written.header.get_sform(), stored.get_sform() @ grid, atol=1e-5)
    np.testing.assert_allclose(sitk_affine(out), sitk_affine(source) @ grid, atol=1e-5)

    # `mrisr info` says they disagree, by how much, and which one mrisr uses.
    gap = form_disagreement(load_volume(source))
    assert gap is not None and gap["used"] == "sform"
    assert gap["rotation_deg"] == pytest.approx(6, abs=1e-4)
    assert gap["max_shift_mm"] > 10
    shown = CliRunner().invoke(app, ["info", str(source)])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "qform and sform disagree" in text and "uses the sform (code 2)" in text
    agreeing = CliRunner().invoke(app, ["info", str(shared_data / T2STAR)])
    assert "disagree" not in agreeing.output


def test_upscale_keeps_the_qform_world_exactly(tmp_path: Path) -> None:
    """Through the real pipeline: both forms moved by the plan's own grid change."""
    qform_in, sform_in, codes = FORMS["sheared-sform-valid-qform"]
    source = write_input(tmp_path / "in.nii.gz", qform_in, sform_in, codes)
    stored = nib.load(source).header
    volume = load_volume(source)
    result = upscale_volume(volume, CubicSliceModel(), factor=5, axis=2)
    out = save_volume(result, tmp_path / "out.nii.gz")
    grid = np.linalg.solve(volume.affine, result.affine)
    written = nib.load(out).header
    np.testing.assert_allclose(written.get_qform(), stored.get_qform() @ grid, atol=FLOAT32_MM)
    np.testing.assert_allclose(written.get_sform(), stored.get_sform() @ grid, atol=FLOAT32_MM)


# --------------------------------------------------------------------------- grid fields

SLICE_TIMING = {"slice_code": 3, "slice_start": 0, "slice_end": 5, "slice_duration": 0.1}


def timed_input(path: Path, slice_dim: int, intent: tuple | None = None) -> Path:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_qform(A, code=1)
    header.set_sform(A, code=1)
    header.set_dim_info(freq=(slice_dim + 1) % 3, phase=(slice_dim + 2) % 3, slice=slice_dim)
    header.set_xyzt_units("mm", "sec")
    for key, value in SLICE_TIMING.items():
        header[key] = value
    if intent is not None:
        header.set_intent(*intent)
    data = np.random.default_rng(0).uniform(0, 10, size=(6, 6, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, None, header), path)
    return path


@pytest.mark.parametrize(
    ("slice_dim", "change", "timing_kept"),
    [
        (2, "upscale", False),  # the issue's case: slice timing of 6 slices on 30
        (0, "upscale", True),  # slices along axis 0 are untouched by an upscale of axis 2
        (2, "crop", False),
        (2, "same-grid", True),
    ],
)
def test_slice_timing_only_where_it_still_counts_the_slices(
    tmp_path: Path, slice_dim: int, change: str, timing_kept: bool
) -> None:
    volume = load_volume(timed_input(tmp_path / "in.nii.gz", slice_dim))
    if change == "upscale":
        result = upscale_volume(volume, CubicSliceModel(), factor=5, axis=2)
    elif change == "crop":
        result = volume.crop((slice(None), slice(None), slice(1, 5)))
    else:
        result = volume.with_data(volume.data * 2)
    written = nib.load(save_volume(result, tmp_path / "out.nii.gz")).header
    assert written.get_dim_info()[2] == slice_dim  # the axes keep their roles
    if timing_kept:
        for key, value in SLICE_TIMING.items():
            assert float(written[key]) == pytest.approx(value)
        assert len(written.get_slice_times()) == result.shape[slice_dim]
    else:
        assert [float(written[key]) for key in SLICE_TIMING] == [0, 0, 0, 0]
        with pytest.raises(nib.spatialimages.HeaderDataError):
            written.get_slice_times()


@pytest.mark.parametrize(
    ("intent", "kept"),
    [
        (("label", (), "aseg"), False),  # upscaled voxels are no labels
        (("vector", (), "flow"), False),
        (("symmetric matrix", (3,), "tensor"), False),
        (("t test", (12.0,), "tstat"), True),  # a statistic stays one, with its dof
        (("estimate", (), "fit"), True),
    ],
)
def test_grid_bound_intents_are_cleared(tmp_path: Path, intent: tuple, kept: bool) -> None:
    volume = load_volume(timed_input(tmp_path / "in.nii.gz", 2, intent))
    result = upscale_volume(volume, CubicSliceModel(), factor=3, axis=2)
    written = nib.load(save_volume(result, tmp_path / "out.nii.gz")).header
    code, params, name = written.get_intent()
    if kept:
        assert (code, name) == (intent[0], intent[2])
        np.testing.assert_allclose(params, intent[1])
    else:
        assert (code, params, name) == ("none", (), "")
