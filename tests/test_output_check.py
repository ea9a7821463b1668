"""Nothing wrong is written: sidecars never replace another image's, models that
produce NaN or absurd values are refused, non-finite weights never become a model file."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mrisr.output_check as output_check
from mrisr.checkpoint import save_model
from mrisr.errors import CheckpointError, OutputError
from mrisr.inference import GeneratorSliceModel
from mrisr.interpolation import CubicSliceModel
from mrisr.io.outputs import disagreement_path
from mrisr.output_check import check_model_output
from mrisr.upscale import upscale_file


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    data = np.random.default_rng(0).uniform(0, 1000, size=(10, 12, 5)).astype(np.float32)
    path = tmp_path / "in" / "scan.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(data, np.diag([0.9, 0.9, 4.0, 1.0])), path)
    return path


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- sidecars


@pytest.mark.parametrize(
    ("first", "second"),
    [("x.nii.gz", "x.mgz"), ("x.mgz", "x.nii.gz"), ("x.nii", "x.nii.gz"), ("x.nrrd", "x.mha")],
)
def test_a_sidecar_of_another_image_is_never_replaced(
    tmp_path: Path, scan: Path, first: str, second: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    upscale_file(scan, out / first, model=CubicSliceModel(), factor=2)
    record = (out / "x.json").read_bytes()
    assert json.loads(record)["output"] == str((out / first).resolve())
    with pytest.raises(OutputError) as caught:
        upscale_file(scan, out / second, model=CubicSliceModel(), factor=2, overwrite=True)
    message = str(caught.value)
    assert "x.json" in message and first in message and "-o" in message
    assert (out / "x.json").read_bytes() == record  # the first image's provenance is kept
    # Nothing else was written: the first image, its disagreement map and sidecar.
    assert listing(out) == sorted([first, disagreement_path(out / first).name, "x.json"])


def test_own_sidecar_or_an_orphan_may_be_replaced(tmp_path: Path, scan: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    upscale_file(scan, out / "x.nii.gz", model=CubicSliceModel(), factor=2)
    # The same output again, with --overwrite: its own sidecar is replaced.
    upscale_file(scan, out / "x.nii.gz", model=CubicSliceModel(), factor=3, overwrite=True)
    assert json.loads((out / "x.json").read_text())["factor"] == 3
    # The image it described is gone: the sidecar is an orphan and may be replaced.
    (out / "x.nii.gz").unlink()
    upscale_file(scan, out / "x.mgz", model=CubicSliceModel(), factor=2, overwrite=True)
    assert json.loads((out / "x.json").read_text())["output"] == str((out / "x.mgz").resolve())


def test_a_foreign_json_is_not_replaced(tmp_path: Path, scan: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.json").write_text('{"SliceThickness": 4}')
    with pytest.raises(OutputError, match="not an mrisr provenance record"):
        upscale_file(scan, out / "x.nii.gz", model=CubicSliceModel(), factor=2, overwrite=True)
    assert listing(out) == ["x.json"]


# --------------------------------------------------------------------------- model output


class Doubler(nn.Module):
    """Bilinear rows times a learned scale: its weights decide what it produces."""

    def __init__(self) -> None:
        super().__init__()
        self.config: dict = {}
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, out_rows: int) -> torch.Tensor:
        up = F.interpolate(x, size=(out_rows, x.shape[-1]), mode="bilinear", align_corners=False)
        return up * self.scale


@pytest.fixture
def generators(monkeypatch: pytest.MonkeyPatch) -> dict:
    from mrisr.networks import GENERATORS

    monkeypatch.setitem(GENERATORS, "doubler-test", Doubler)
    return GENERATORS


def model_with_scale(
    path: Path, scale: float, monkeypatch: pytest.MonkeyPatch
) -> GeneratorSliceModel:
    """A model file whose description and hashes are valid, whatever its weights."""
    generator = Doubler()
    with torch.no_grad():
        generator.scale.fill_(scale)
    with monkeypatch.context() as patch:  # as a diverged run would have written it
        patch.setattr(output_check, "check_finite_weights", lambda tensors, path: None)
        save_model(path, generator, name="doubler-test", description={"factor_range": [1, 8]})
    return GeneratorSliceModel.from_file(path, device="cpu")


@pytest.mark.parametrize(
    ("scale", "words"),
    [
        (float("nan"), "non-finite voxels (NaN or Inf)"),
        (float("inf"), "non-finite voxels (NaN or Inf)"),
        (1e30, "absurd values"),
        (-1e30, "absurd values"),
        (40.0, "absurd values"),
    ],
)
def test_a_model_producing_nan_or_absurd_values_is_refused(
    tmp_path: Path,
    scan: Path,
    generators: dict,
    monkeypatch: pytest.MonkeyPatch,
    scale: float,
    words: str,
) -> None:
    model_path = tmp_path / "bad.safetensors"
    model = model_with_scale(model_path, scale, monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointError) as caught:
        upscale_file(scan, out / "x.nii.gz", model=model, factor=2)
    message = str(caught.value)
    assert words in message and "'bad'" in message
    assert str(model_path.resolve()) in message and str(scan) in message
    assert "Fix:" in message
    assert listing(out) == []  # nothing left behind


def test_a_sound_model_passes(
    tmp_path: Path, scan: Path, generators: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = model_with_scale(tmp_path / "good.safetensors", 1.0, monkeypatch)
    output, _ = upscale_file(scan, tmp_path / "x.nii.gz", model=model, factor=2)
    assert np.isfinite(nib.load(output).get_fdata()).all()


@pytest.mark.parametrize(
    ("output", "refused"),
    [
        (np.array([0.0, 0.5, 1.0]), False),
        (np.array([-9.9, 10.9]), False),  # sharpening overshoot, however large, within 10x
        (np.array([-10.5, 0.5]), True),
        (np.array([0.0, 11.5]), True),
        (np.array([0.0, np.nan]), True),
        (np.array([np.inf, 0.5]), True),
    ],
)
def test_output_bounds(output: np.ndarray, refused: bool) -> None:
    reference = np.array([0.0, 1.0])
    if refused:
        with pytest.raises(CheckpointError):
            check_model_output(output, reference, CubicSliceModel(), "scan.nii.gz")
    else:
        check_model_output(output, reference, CubicSliceModel(), "scan.nii.gz")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_never_become_a_model_file(
    tmp_path: Path, generators: dict, bad: float
) -> None:
    generator = Doubler()
    with torch.no_grad():
        generator.scale.fill_(bad)
    path = tmp_path / "model.safetensors"
    with pytest.raises(CheckpointError) as caught:
        save_model(path, generator, name="doubler-test", description={"factor_range": [1, 8]})
    assert "scale" in str(caught.value) and "NaN or Inf" in str(caught.value)
    assert listing(tmp_path) == []
