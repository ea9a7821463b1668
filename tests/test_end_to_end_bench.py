"""benchmarks/end_to_end.py: the commands it times and the table it prints (no timing here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrisr.checkpoint import read_description
from mrisr.models import bundled_models, covers_factor

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "end_to_end.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("end_to_end", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _scan(folder: Path, slice_mm: float) -> Path:
    path = folder / f"scan{slice_mm:g}.nii.gz"
    data = np.random.default_rng(0).random((16, 16, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, slice_mm, 1.0])), path)
    return path


@pytest.mark.parametrize("slice_mm", [4.0, 10.0, 40.0])
def test_force_only_where_no_bundled_model_covers_the_factor(bench, tmp_path, slice_mm):
    case = bench.plan_case("scan", _scan(tmp_path, slice_mm))
    covered = any(
        covers_factor(tuple(read_description(path)["factor_range"]), slice_mm)
        and read_description(path).get("stage") != "gan"
        for path in bundled_models().values()
    )
    assert case.factor == pytest.approx(slice_mm)
    assert case.force is (not covered)
    command = bench.upscale_command(case, tmp_path / "out.nii.gz")
    assert ("--force" in command) is (not covered)
    assert ("--model" in command) is (not covered)
    cubic = bench.upscale_command(case, tmp_path / "out.nii.gz", cubic=True)
    assert cubic[-2:] == ["--model", "cubic"] and "--force" not in cubic


def test_table_gives_ratios_to_cubic(bench, tmp_path):
    case = bench.Case("scan", tmp_path / "scan.nii.gz", 4.0, None, False)
    rows = [
        bench.Row("scan", "end to end", [30.0, 20.0, 40.0], [900.0, 950.0, 910.0]),
        bench.Row("scan", "in memory", [16.0, 15.0, 17.0], [800.0, 800.0, 800.0]),
        bench.Row("scan", "cubic", [10.0, 9.0, 11.0], [400.0, 400.0, 400.0]),
    ]
    text = bench.table(rows, [case], 3)
    assert "| scan | end to end | 30.0 | 20.0 | 3.00 | 950 |" in text
    assert "| scan | cubic | 10.0 | 9.0 | 1.00 | 400 |" in text
