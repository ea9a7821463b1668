"""Training as a new user meets it: anisotropic "truth" refused, interruptions that keep the work."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.errors import InputError
from mrisr.training.data import find_volumes
from tests.test_train import save_nifti, wave_volume

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


# ------------------------------------------------------- 5. anisotropic truth


@pytest.mark.parametrize(
    ("zooms", "refused"),
    [
        ((1.0, 1.0, 1.0), False),
        ((1.2, 0.94, 0.94), False),  # IXI002 T1: 1.28x, mild
        ((1.0, 1.0, 1.35), True),
        ((1.0, 1.0, 4.0), True),
        ((1.0, 0.5, 0.5), True),  # uih_umr770_t1gre_3d
    ],
)
def test_anisotropic_training_volumes_are_refused_by_name(tmp_path, zooms, refused):
    save_nifti(tmp_path / "iso.nii.gz", wave_volume(0))
    save_nifti(tmp_path / "odd.nii.gz", wave_volume(1), zooms=zooms)
    if not refused:
        assert [p.name for p in find_volumes(tmp_path)] == ["iso.nii.gz", "odd.nii.gz"]
        return
    with pytest.raises(InputError) as caught:
        find_volumes(tmp_path)
    message = str(caught.value)
    assert "odd.nii.gz" in message and "iso.nii.gz" not in message
    assert " x ".join(f"{z:.3g}" for z in zooms) + " mm" in message
    assert f"resample to {max(zooms):.3g} mm isotropic" in message
    assert "--allow-anisotropic" in message
    # The explicit option keeps it.
    assert len(find_volumes(tmp_path, allow_anisotropic=True)) == 2


def test_the_command_line_refuses_anisotropic_volumes_and_accepts_them_when_told(tmp_path):
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    save_nifti(volumes / "a.nii.gz", wave_volume(0))
    save_nifti(volumes / "thick.nii.gz", wave_volume(1), zooms=(1.0, 1.0, 4.0))
    common = [
        "train", "--volumes", volumes, "--steps", 1, "--gan-steps", 0, "--patch-size", 16,
        "--batch-size", 2, "--val-crop", 16, "--size", "small", "--device", "cpu",
        "--no-tensorboard", "--quiet",
    ]  # fmt: skip
    result = invoke(*common, "--out", tmp_path / "refused")
    assert result.exit_code == 2, result.output
    assert "thick.nii.gz (1 x 1 x 4 mm" in " ".join(result.output.split())
    assert not (tmp_path / "refused" / "model.safetensors").exists()
    result = invoke(*common, "--out", tmp_path / "allowed", "--allow-anisotropic")
    assert result.exit_code == 0, result.output
    config = (tmp_path / "allowed" / "config.yaml").read_text()
    assert "allow_anisotropic: true" in config


def test_the_shared_uih_volume_is_refused_with_how_to_fix_it(shared_data, tmp_path):
    source = shared_data / "train" / "uih_umr770_t1gre_3d.nii.gz"
    if not source.exists():
        pytest.skip("uih_umr770_t1gre_3d.nii.gz not in the shared data")
    (tmp_path / source.name).symlink_to(source)
    with pytest.raises(InputError, match=r"1 x 0\.5 x 0\.5 mm: resample to 1 mm isotropic"):
        find_volumes(tmp_path)
