"""The disagreement map is stored compactly (int16 with a NIfTI scale factor) and faithfully."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mrisr.io import load_volume
from mrisr.io.outputs import disagreement_path, sidecar_path
from mrisr.models import load_slice_model
from mrisr.upscale import upscale_file, upscale_volume

#: The bundled network: its two plane passes differ (cubic interpolation's do not).
MODEL = "fast"


@pytest.fixture()
def noisy_scan(tmp_path):
    """A 48x40x12 scan, 1x1x4 mm, with noise: the planes disagree everywhere."""
    rng = np.random.default_rng(3)
    data = (rng.gamma(2.0, 30.0, (48, 40, 12)) + 5.0).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 4.0, 1.0])), path)
    return path


def test_stored_map_equals_the_computed_one_and_is_smaller(noisy_scan, tmp_path):
    output, sidecar = upscale_file(noisy_scan, tmp_path / "out.nii.gz", model=MODEL)
    computed = upscale_volume(load_volume(noisy_scan), load_slice_model(MODEL)).meta["disagreement"]
    path = disagreement_path(output)

    image = nib.load(path)
    stored = np.asarray(image.dataobj, np.float64)  # scaled by scl_slope/scl_inter
    top = float(computed.data.max())
    assert image.get_data_dtype() == np.int16
    np.testing.assert_allclose(stored, computed.data, rtol=0, atol=1e-3 * top)
    # Half a step, plus what rounding scl_slope to float32 in the header adds over
    # up to 32767 steps (at most 32767 * 2**-24 of a step: under 0.4 % of half a step).
    slope = float(image.dataobj.slope)
    bound = top / 65534 + 32767 * abs(slope - top / 32767)
    assert np.abs(stored - computed.data).max() <= bound * (1 + 1e-6)
    np.testing.assert_allclose(image.affine, computed.affine, atol=1e-6)

    listing = json.loads(sidecar.read_text())["disagreement"]
    assert listing["file"] == str(path.resolve())
    assert listing["storage"]["dtype"] == "int16"
    assert listing["storage"]["scl_slope"] == pytest.approx(top / 32767, rel=1e-6)

    as_float = tmp_path / "float32.nii.gz"
    nib.save(nib.Nifti1Image(computed.data.astype(np.float32), computed.affine), as_float)
    assert path.stat().st_size < 0.6 * as_float.stat().st_size


def test_map_of_a_format_without_scale_factor_stays_float32(noisy_scan, tmp_path):
    output, _ = upscale_file(noisy_scan, tmp_path / "out.mgz", model=MODEL)
    computed = upscale_volume(load_volume(noisy_scan), load_slice_model(MODEL)).meta["disagreement"]
    stored = load_volume(disagreement_path(output))
    assert stored.data.dtype == np.float32
    np.testing.assert_array_equal(stored.data, computed.data)
    assert "storage" in json.loads(sidecar_path(output).read_text())["disagreement"]
