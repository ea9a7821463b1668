"""The scripts in examples/ run on small real inputs and write what they promise.

Each example's ``main(argv)`` is run in this process (``runpy``), so torch is
imported once for all of them; one test also runs a script as a subprocess,
as a user would, to cover its ``__main__`` block and exit codes.
"""

from __future__ import annotations

import json
import math
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
THICK_SCAN = Path("thick") / "spine_t2star_7.5mm.nii.gz"  # 49 x 54 x 9, 0.5 x 0.5 x 7.5 mm
HR_SCAN = Path("fixtures") / "spine_t2_1mm.nii.gz"  # 60 x 55 x 52, 1 mm


def run_example(name: str, *args: object) -> int:
    """Run ``examples/<name>.py``'s ``main`` with these command-line arguments."""
    namespace = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"example_{name}")
    return namespace["main"]([str(a) for a in args])


@pytest.fixture
def cubic_like_model(tmp_path) -> Path:
    """A tiny real generator whose residual is zero (it starts as cubic), as a model file."""
    import torch

    from mrisr.checkpoint import save_model
    from mrisr.networks import build_generator, zero_last_layer

    torch.manual_seed(0)
    generator = zero_last_layer(build_generator("srcnn", num_feat=4, num_feat2=2))
    return save_model(
        tmp_path / "tiny.safetensors",
        generator,
        name="srcnn",
        description={"factor_range": [2, 6], "recipe": "srcnn"},
    )


@pytest.fixture
def no_bundled_models(tmp_path, monkeypatch):
    import mrisr.models as inference

    folder = tmp_path / "no_weights"
    folder.mkdir()
    monkeypatch.setattr(inference, "WEIGHTS_DIR", folder)


def test_readme_lists_every_example():
    readme = (EXAMPLES / "README.md").read_text()
    scripts = sorted(path.name for path in EXAMPLES.glob("*.py"))
    assert len(scripts) >= 3
    assert [name for name in scripts if name not in readme] == []


# ------------------------------------------------------------------ upscale_scan.py


def test_upscale_scan_writes_isotropic_volume_and_sidecar(shared_data, tmp_path, capsys):
    output = tmp_path / "out" / "spine_sr.nii.gz"
    assert run_example("upscale_scan", shared_data / THICK_SCAN, "-o", output) == 0
    image = nib.load(output)
    assert image.shape == (49, 54, 135)  # 7.5 mm -> 0.5 mm: factor 15 along axis 2
    np.testing.assert_allclose(image.header.get_zooms(), (0.5, 0.5, 0.5), atol=1e-4)
    assert image.get_data_dtype() == np.float32
    sidecar = json.loads((tmp_path / "out" / "spine_sr.json").read_text())
    assert sidecar["model"]["name"] == "cubic" and sidecar["axis"] == 2
    printed = capsys.readouterr().out
    assert "sidecar summary" in printed and "[49, 54, 9] -> [49, 54, 135]" in printed

    from mrisr import OutputError

    with pytest.raises(OutputError, match="already exists"):
        run_example("upscale_scan", shared_data / THICK_SCAN, "-o", output)


def test_upscale_scan_with_a_model_file(shared_data, tmp_path, cubic_like_model):
    output = tmp_path / "net_sr.nii.gz"
    args = ["--model", cubic_like_model, "--factor", 4, "--device", "cpu", "-o", output]
    assert run_example("upscale_scan", shared_data / THICK_SCAN, *args) == 0
    assert nib.load(output).shape == (49, 54, 36)
    sidecar = json.loads((tmp_path / "net_sr.json").read_text())
    assert sidecar["model"]["name"] == "tiny" and sidecar["model"]["factor_range"] == [2.0, 6.0]


def test_upscale_scan_as_a_script_reports_errors_with_exit_code_2(shared_data, tmp_path):
    script = str(EXAMPLES / "upscale_scan.py")
    output = tmp_path / "script_sr.nii.gz"
    done = subprocess.run(
        [sys.executable, script, str(shared_data / THICK_SCAN), "--factor", "3", "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert nib.load(output).shape == (49, 54, 27)

    missing = tmp_path / "missing.nii.gz"
    failed = subprocess.run(
        [sys.executable, script, str(missing), "-o", str(tmp_path / "x_sr.nii.gz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 2
    assert failed.stderr.startswith("error:") and "missing.nii.gz" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "x_sr.nii.gz").exists()


# -------------------------------------------------------- evaluate_against_cubic.py


def test_evaluate_compares_a_model_with_cubic(shared_data, tmp_path, capsys, cubic_like_model):
    metrics_file = tmp_path / "metrics.json"
    figure = tmp_path / "figure.png"
    args = ["--model", cubic_like_model, "--device", "cpu", "--json", metrics_file]
    assert (
        run_example("evaluate_against_cubic", shared_data / HR_SCAN, *args, "--figure", figure) == 0
    )
    metrics = json.loads(metrics_file.read_text())
    assert list(metrics) == ["cubic", "tiny"]
    for row in metrics.values():
        assert set(row) == {"psnr", "ssim", "hfen", "nrmse"}
        assert 15 < row["psnr"] < 60 and 0 < row["ssim"] <= 1
    # A generator with a zero residual interpolates (bicubic rows): close to cubic B-splines.
    assert math.isclose(metrics["tiny"]["psnr"], metrics["cubic"]["psnr"], abs_tol=1.5)
    assert figure.read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr().out
    assert "| cubic |" in printed and "| tiny |" in printed and "(60, 55, 13)" in printed


def test_evaluate_without_any_model_compares_cubic_alone(
    shared_data, tmp_path, capsys, no_bundled_models
):
    metrics_file = tmp_path / "metrics.json"
    args = ["--axis", 0, "--factor", 3, "--json", metrics_file]
    assert run_example("evaluate_against_cubic", shared_data / HR_SCAN, *args) == 0
    assert list(json.loads(metrics_file.read_text())) == ["cubic"]
    assert "comparing cubic alone" in capsys.readouterr().err


# ----------------------------------------------------------- train_quick_model.py


def test_train_quick_model_trains_then_upscales(shared_data, tmp_path, capsys):
    from mrisr.checkpoint import read_description

    run = tmp_path / "run"
    args = [
        *("--volumes", shared_data / "fixtures", "--out", run, "--scan", shared_data / THICK_SCAN),
        *("--steps", 3, "--patch-size", 32, "--batch-size", 2, "--val-crop", 16),
        *("--device", "cpu", "--threads", 1),
    ]
    assert run_example("train_quick_model", *args) == 0
    description = read_description(run / "model.safetensors")
    assert description["recipe"] == "esrgan" and description["factor_range"] == [4.0, 4.0]
    assert description["step"] == 3 and description["stage"] == "psnr"
    assert (run / "config.yaml").is_file()
    upscaled = nib.load(run / "spine_t2star_7.5mm_sr.nii.gz")
    assert upscaled.shape == (49, 54, 36)  # 9 slices x 4
    assert np.isfinite(upscaled.get_fdata()).all()
    printed = capsys.readouterr().out
    assert "validation: PSNR" in printed and "trained for x4" in printed


# ---------------------------------------------------------- dicom_to_isotropic.py


def test_dicom_series_becomes_nifti_and_an_upscaled_volume(shared_data, tmp_path, capsys):
    # Six consecutive slices of the shared series: the same tags, a fraction of the time.
    series = tmp_path / "pd_series"
    series.mkdir()
    for number in range(5, 11):
        name = f"brain_{number:03d}.dcm"
        shutil.copyfile(shared_data / "thick" / "brain_pd_axial_7mm_dicom" / name, series / name)
    out = tmp_path / "out"
    assert run_example("dicom_to_isotropic", series, "--factor", 2, "--out", out) == 0

    thick = nib.load(out / "pd_series.nii.gz")
    assert thick.shape == (256, 256, 6) and thick.get_data_dtype() == np.int16
    upscaled = nib.load(out / "pd_series_iso.nii.gz")
    assert upscaled.shape == (256, 256, 12) and upscaled.get_data_dtype() == np.float32
    assert upscaled.header.get_zooms()[2] == pytest.approx(
        thick.header.get_zooms()[2] / 2, abs=1e-3
    )
    record = json.loads((out / "pd_series_iso.json").read_text())
    assert record["input"]["n_files"] == 6 and record["input"]["slice_thickness_mm"] == 5.0
    assert record["model"]["name"] == "cubic" and record["shape_out"] == [256, 256, 12]
    assert "slice thickness (0018,0050): 5 mm" in capsys.readouterr().out
