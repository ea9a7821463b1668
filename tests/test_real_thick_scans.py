"""Every real thick-slice scan in ../shared/data/thick/ goes through `mrisr upscale`.

Cubic interpolation (cheap) exercises what the network path shares with it on
real inputs: reading (NIfTI and a DICOM series), the thick axis and default
factor, the output grid, data consistency and writing all three outputs.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.geometry import voxel_sizes
from mrisr.io import load_volume

THICK_SCANS = (
    "brain_flair_axial_4.4mm.nii.gz",
    "brain_pd_axial_7mm.nii.gz",
    "brain_pd_axial_7mm_dicom",
    "spine_t2star_7.5mm.nii.gz",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", THICK_SCANS)
def test_cubic_upscale_of_each_real_thick_scan(shared_data, tmp_path, name):
    scan = shared_data / "thick" / name
    output = tmp_path / "out.nii.gz"

    result = CliRunner().invoke(app, ["upscale", str(scan), "-o", str(output), "--model", "cubic"])

    assert result.exit_code == 0, result.output
    source = load_volume(scan)
    image = nib.load(output)
    spacing_in, spacing_out = voxel_sizes(source.affine), voxel_sizes(image.affine)
    axis = int(np.argmax(spacing_in))
    # Isotropic at the finest in-plane spacing, within the rounding of the slice count.
    assert spacing_out[axis] == pytest.approx(min(spacing_in), rel=0.05)
    assert np.isfinite(np.asarray(image.dataobj)).all()
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["axis"] == axis
    assert (tmp_path / "out_disagreement.nii.gz").exists()
