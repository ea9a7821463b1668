"""benchmarks/gpu_recipe.py in its CPU smoke mode: every stage runs and reports sane figures.

The recipe is meant for a GPU that is rarely at hand; running its smoke mode here keeps
each stage (CUDA tests, compile probe, training, upscale timing, evaluation, install)
working in between. About a minute on 2 busy cores, hence ``slow``.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def recipe():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_recipe

        yield gpu_recipe
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow
def test_smoke_mode_runs_every_stage(recipe, shared_data, tmp_path):
    out = tmp_path / "out"
    # A margin of -100 dB makes the barely trained model "win", so the install runs too.
    argv = ["--smoke", "--out", str(out), "--data", str(shared_data / "train")]
    recipe.main([*argv, "--install-margin", "-100"])

    written = json.loads((out / "gpu_recipe.json").read_text())
    stages = written["stages"]
    assert list(stages) == list(recipe.STAGES)
    assert written["mode"] == "smoke"
    assert stages["cuda_tests"] == {
        "status": "skipped",
        "reason": "no CUDA device (smoke mode)",
        "seconds": stages["cuda_tests"]["seconds"],
    }
    failed = {
        n: s.get("error") for n, s in stages.items() if n != "cuda_tests" and s["status"] != "ok"
    }
    assert not failed

    probe = stages["compile"]
    assert probe["use_compile"] is False and probe["compiled"] is None
    assert 0 < probe["eager"]["step_s"] < 60

    train = stages["train"]
    assert train["steps_done"] == train["steps_planned"] == 4
    assert train["size"] == "small" and 0 < train["parameters"] < 1e6
    assert Path(train["model"]).is_file()
    assert sorted(train["volumes"]) == sorted(
        (*recipe.TRAIN_VOLUMES, recipe.VALIDATION_VOLUME)
    )  # the default models' own list, linked by their own code

    rows = {row["method"]: row for row in stages["upscale"]["rows"]}
    assert list(rows) == ["cubic", "fast", "new"]
    for row in rows.values():
        assert row["shape_out"] == [48, 48, 48]
        # Seconds only: their order depends on what else the machine is doing.
        assert row["in_memory_min_s"] > 0 and row["end_to_end_s"] > 0
    assert rows["cubic"]["x_cubic_in_memory"] == 1.0

    evaluation = stages["evaluate"]
    assert evaluation["cases"] == 2 and evaluation["volumes"] == ["spine_t1w_1mm", "spine_t2_1mm"]
    fast = evaluation["summary"]["fast"]["mean_psnr_gain_db"]
    new = evaluation["summary"]["new"]["mean_psnr_gain_db"]
    assert fast > 0.2  # the bundled model beats cubic on the spine fixtures at 4x
    assert math.isclose(evaluation["new_minus_fast_db"], new - fast, abs_tol=2e-3)

    # Installed into the run's own weights folder, never into mrisr/weights; fast stays default.
    assert evaluation["installed"] is True
    installed = Path(evaluation["install_path"])
    assert installed == out / "weights" / "full.safetensors" and installed.is_file()
    assert "full.safetensors" not in evaluation["defaults_after_install"].values()
    assert not (recipe.REPO / "mrisr" / "weights" / "full.safetensors").exists()

    # The parts a device run sends back join into the same bytes.
    joined = tmp_path / "joined.safetensors"
    recipe.main(["--unpack-model", str(out / "model_parts"), str(joined)])
    assert joined.read_bytes() == installed.read_bytes()

    markdown = (out / "gpu_recipe.md").read_text()
    assert "| installed | True:" in markdown and "| spine_t2_1mm | 2 | 4 |" in markdown


def test_install_refused_below_the_margin(recipe, tmp_path):
    args = recipe.parse_args(["--smoke", "--out", str(tmp_path)])
    decision = recipe.install_if_better(args, tmp_path / "absent.safetensors", tmp_path, 0.0)
    assert decision == {
        "installed": False,
        "install_reason": "new - fast = +0.000 dB, not above 0",
    }
    assert not list(tmp_path.iterdir())


def test_pack_and_unpack_model_round_trip(recipe, tmp_path, monkeypatch):
    model = tmp_path / "m.safetensors"
    noise = np.random.default_rng(0).integers(0, 256, 10_001, dtype=np.uint8)
    model.write_bytes(noise.tobytes())  # incompressible, and not a multiple of 4 bytes
    monkeypatch.setattr(recipe, "PART_BYTES", 1000)
    parts = recipe.pack_model(model, tmp_path / "parts")
    assert len(parts) > 1
    assert all((tmp_path / "parts" / p).stat().st_size <= 1000 for p in parts)
    recipe.unpack_model(tmp_path / "parts", tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == model.read_bytes()

    (tmp_path / "parts" / parts[-1]).write_bytes(b"damaged")
    with pytest.raises((zlib.error, SystemExit)):  # refused either way: never a wrong model
        recipe.unpack_model(tmp_path / "parts", tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_cuda_tests_stage_reads_pytest_results(recipe, tmp_path, monkeypatch):
    # The GPU-only stage, on a toy suite: a CUDA test that passes, one module that
    # cannot be imported (as SimpleITK's are on the GPU image) and one test not selected.
    suite = tmp_path / "repo" / "tests"
    suite.mkdir(parents=True)
    (suite / "test_ok.py").write_text(
        "def test_cuda_ok():\n    pass\n\ndef test_other():\n    pass\n"
    )
    (suite / "test_bad.py").write_text("import not_installed_here\n")
    monkeypatch.setattr(recipe, "REPO", tmp_path / "repo")
    args = recipe.parse_args(["--out", str(tmp_path), "--data", str(tmp_path / "data" / "train")])
    record = recipe.stage_cuda_tests(args, "cuda")
    assert (record["passed"], record["failed"], record["errors"]) == (1, 0, 0)
    assert record["cases"] == [{"test": "tests.test_ok::test_cuda_ok", "outcome": "passed"}]
    assert record["uncollected"] == [
        "tests.test_bad: E   ModuleNotFoundError: No module named 'not_installed_here'"
    ]

    (suite / "test_ok.py").write_text("def test_cuda_broken():\n    assert False\n")
    with pytest.raises(RuntimeError, match="'failed': 1"):
        recipe.stage_cuda_tests(args, "cuda")
    assert recipe.stage_cuda_tests(args, "cpu")["status"] == "skipped"
