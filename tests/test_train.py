"""The training loop: run folder, model files, losses, GAN stage, resume, refusals, DDP."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mrisr.checkpoint import load_model, read_description
from mrisr.cli import app
from mrisr.config import TrainConfig, with_overrides
from mrisr.config_file import load_config, save_config
from mrisr.errors import CheckpointError, ConfigError, InputError, OutputError
from mrisr.interpolation import CubicSliceModel
from mrisr.io import load_volume
from mrisr.models import load_slice_model
from mrisr.networks.common import bicubic_rows as cubic_rows
from mrisr.simulate import simulate_volume
from mrisr.training import TrainEvent, run_training
from mrisr.training.data import find_volumes, load_training_volumes
from mrisr.training.pairs import PairDataset
from mrisr.training.state_file import load_training_state
from mrisr.upscale import plan_upscale, upscale_volume
from mrisr.volume import Volume

runner = CliRunner()


# ------------------------------------------------------------------ helpers


def wave_volume(seed: int, shape: tuple[int, int, int] = (40, 36, 32)) -> np.ndarray:
    """Smooth, positive, structured test volume: a sum of random plane waves.

    Cubic interpolation of its thick slices underestimates the waves, which a
    network learns to correct within a few steps (so the loss visibly falls).
    """
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    data = np.full(shape, 1.0)
    for _ in range(6):
        k = rng.normal(size=3)
        k *= 2 * np.pi / rng.uniform(8, 14) / np.linalg.norm(k)
        phase = sum(ki * g for ki, g in zip(k, grid, strict=True))
        data += 0.3 * np.sin(phase + rng.uniform(0, 2 * np.pi))
    return data.astype(np.float32)


def save_nifti(path: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.5]
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return path


def make_config(volumes: Path, out: Path, **settings: Any) -> TrainConfig:
    """A seconds-long CPU config; ``settings`` use ``__`` for dots (``data__patch_size``)."""
    values = {
        "data.volumes": str(volumes),
        "out": str(out),
        "data.patch_size": 16,
        "data.batch_size": 2,
        "data.val_crop": 16,
        "model.size": "small",
        "schedule.steps": 4,
        "schedule.gan_steps": 0,
        "schedule.log_every": 1,
        "schedule.val_every": 0,
        "schedule.save_every": 0,
        "device": "cpu",
        "tensorboard": False,
    }
    values.update({key.replace("__", "."): value for key, value in settings.items()})
    return with_overrides(TrainConfig(), values)


def read_log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def train_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_log(run) if r["event"] == "train"]


def file_digests(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def invoke(*args: Any):
    return runner.invoke(app, [str(a) for a in args])


def two_volumes(folder: Path) -> Path:
    """Two small training volumes in ``folder``: ``a`` trains, ``b`` is held out."""
    save_nifti(folder / "a.nii.gz", wave_volume(0))
    save_nifti(folder / "b.nii.gz", wave_volume(1, (36, 40, 34)))
    return folder


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    """Two small training volumes (``a`` trains, ``b`` is held out) and one damaged file."""
    folder = two_volumes(tmp_path_factory.mktemp("volumes"))
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b this is not gzip")
    return folder


@pytest.fixture(scope="module")
def quick_run(volumes, tmp_path_factory):
    """A finished 6-step run (read-only for the tests that use it)."""
    config = make_config(volumes, tmp_path_factory.mktemp("quick") / "run", schedule__steps=6)
    events: list[TrainEvent] = []
    result = run_training(config, callback=events.append)
    return config, result, events


@pytest.fixture
def thick_volume() -> Volume:
    """A thick-slice scan: 4 mm along axis 2, 1 mm in plane."""
    hr = Volume(data=wave_volume(5, (30, 28, 32)), affine=np.eye(4))
    return simulate_volume(hr, 2, 4)


# ------------------------------------------------------------- a quick run


def test_a_quick_run_writes_config_model_state_and_a_log_of_increasing_steps(quick_run):
    config, result, events = quick_run
    run = Path(config.out)
    assert {p.name for p in run.iterdir()} == {
        "config.yaml",
        "model.safetensors",
        "state.pt",
        "log.jsonl",
    }
    assert load_config(run / "config.yaml") == config
    log = read_log(run)
    assert log[0]["event"] == "start" and log[0]["step"] == 0 and log[0]["total"] == 6
    assert log[-1]["event"] == "end" and log[-1]["step"] == 6
    assert train_steps(run) == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["pixel"]) and r["stage"] == "psnr" for r in log if "pixel" in r)
    (validation,) = [r for r in log if r["event"] == "validation"]
    assert validation["step"] == 6 and {"psnr", "ssim", "psnr_cubic", "psnr_gain"} <= set(
        validation
    )
    state = load_training_state(run / "state.pt")
    assert state["step"] == 6 and state["stage"] == "psnr" and state["discriminator"] is None
    assert result.step == 6
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("step") == 6
    assert [e.step for e in events if e.kind == "step"] == [1, 2, 3, 4, 5, 6]


def test_unreadable_volumes_are_skipped_and_the_last_readable_one_held_out(quick_run):
    config, _, _ = quick_run
    start = read_log(Path(config.out))[0]
    assert start["training_volumes"] == ["a"] and start["held_out"] == "b"


def test_an_unreadable_held_out_volume_is_skipped_and_the_next_one_held_out(tmp_path, caplog):
    folder = tmp_path / "volumes"
    folder.mkdir()
    save_nifti(folder / "a.nii.gz", wave_volume(0))
    save_nifti(folder / "b.nii.gz", wave_volume(1))
    damaged = save_nifti(folder / "z.nii", wave_volume(2))
    damaged.write_bytes(damaged.read_bytes()[:5000])  # the header reads, the voxels do not
    with caplog.at_level(logging.WARNING, logger="mrisr"):
        run_training(make_config(folder, tmp_path / "run", schedule__steps=1))
    start = read_log(tmp_path / "run")[0]
    assert start["training_volumes"] == ["a"] and start["held_out"] == "b"
    assert str(damaged) in caplog.text and "truncated" in caplog.text
    # Asked for by name, it is an error that names it.
    with pytest.raises(InputError, match="truncated") as caught:
        run_training(make_config(folder, tmp_path / "named", data__val_volume="z"))
    assert str(damaged) in str(caught.value)


def test_the_model_file_holds_the_ema_generator_and_describes_the_run(quick_run):
    config, result, _ = quick_run
    generator, description = load_model(Path(config.out))
    assert same_weights(generator.state_dict(), result.ema.state_dict())
    # The EMA lags the raw weights: the file really holds the EMA.
    assert not same_weights(result.ema.state_dict(), result.generator.state_dict())
    assert description["recipe"] == "esrgan" and description["generator"]["name"] == "rrdbnet"
    assert description["factor_range"] == [4.0, 4.0]
    assert description["stage"] == "psnr" and description["step"] == 6
    data = description["training_data"]
    assert data["volumes"] == ["a"] and data["held_out"] == "b"
    assert len(data["pair_kinds"]) == 6 and data["patch_size"] == 16
    assert set(description["validation"]) >= {"psnr", "ssim"}


def test_the_model_upscales_a_volume_to_the_planned_grid(quick_run, thick_volume):
    config, _, _ = quick_run
    model = load_slice_model(str(config.out), device="cpu")
    plan = plan_upscale(thick_volume)
    assert plan.axis == 2 and plan.factor == pytest.approx(4.0)
    result = upscale_volume(thick_volume, model)
    assert result.shape == plan.shape_out == (30, 28, 32)
    np.testing.assert_allclose(result.affine, plan.affine_out, atol=1e-6)
    assert result.data.dtype == np.float32 and np.isfinite(result.data).all()
    # A 6-step model is still close to its starting point, cubic interpolation.
    cubic = upscale_volume(thick_volume, CubicSliceModel())
    assert np.corrcoef(result.data.ravel(), cubic.data.ravel())[0, 1] > 0.95
    assert result.meta["upscale"]["model"]["recipe"] == "esrgan"


def test_training_on_real_scans_gives_a_model_for_a_real_thick_scan(shared_data, tmp_path):
    folder = tmp_path / "volumes"
    folder.mkdir()
    for name in ("spine_t1w_1mm.nii.gz", "spine_t2_1mm.nii.gz"):
        (folder / name).symlink_to(shared_data / "fixtures" / name)
    config = make_config(folder, tmp_path / "run", data__val_volume="spine_t1w_1mm")
    run_training(config)
    description = read_description(tmp_path / "run")
    assert description["training_data"]["volumes"] == ["spine_t2_1mm"]
    assert description["training_data"]["held_out"] == "spine_t1w_1mm"
    # spine_t2 is 60 x 55 x 52 at 1 mm: 14 slices of 55/14 mm along axis 1, upscaled to
    # isotropic voxels, give back its own grid.
    hr = load_volume(folder / "spine_t2_1mm.nii.gz")
    thick = simulate_volume(hr, 1, 4)
    model = load_slice_model(tmp_path / "run", device="cpu")
    result = upscale_volume(thick, model)
    assert result.shape == plan_upscale(thick).shape_out == hr.shape
    np.testing.assert_allclose(result.affine, hr.affine, atol=1e-5)
    assert np.isfinite(result.data).all()


# ----------------------------------------------------------------- losses


def test_the_stage_1_loss_falls(volumes, tmp_path):
    config = make_config(
        volumes,
        tmp_path / "run",
        schedule__steps=24,
        data__batch_size=4,
        data__val_volume="none",
        optim__lr_pretrain=1e-3,
    )
    result = run_training(config)
    # A fixed set of pairs the run never drew (another seed) measures the generator.
    held = PairDataset(
        load_training_volumes(find_volumes(volumes)),
        patch_size=16,
        factor_bounds=(4.0, 4.0),
        batch_size=48,
        seed=999,
    )

    def l1(forward) -> float:
        with torch.no_grad():
            return float(
                np.mean([(forward(b["lr"]) - b["hr"]).abs().mean() for b in (held[0], held[1])])
            )

    cubic = l1(lambda lr: cubic_rows(lr, 16))
    trained = l1(lambda lr: result.ema(lr, 16))
    assert trained < 0.95 * cubic, (trained, cubic)
    # The run starts as cubic interpolation: its first logged loss is cubic's on its first batch.
    first = PairDataset(
        load_training_volumes(find_volumes(volumes)),
        patch_size=16,
        factor_bounds=(4.0, 4.0),
        batch_size=4,
        seed=config.seed,
    )[0]
    logged = [r["pixel"] for r in read_log(tmp_path / "run") if r["event"] == "train"]
    assert len(logged) == 24
    expected = float((cubic_rows(first["lr"], 16) - first["hr"]).abs().mean())
    assert logged[0] == pytest.approx(expected, rel=1e-5)


# -------------------------------------------------------------- GAN stage


@pytest.fixture(scope="module")
def gan_run(volumes, tmp_path_factory):
    run = tmp_path_factory.mktemp("gan") / "run"
    config = make_config(
        volumes, run, data__patch_size=32, schedule__steps=2, schedule__gan_steps=3
    )
    return config, run_training(config)


def test_the_gan_stage_writes_the_psnr_model_and_logs_adversarial_losses(gan_run):
    config, result = gan_run
    run = Path(config.out)
    psnr_generator, psnr = load_model(run / "model_psnr.safetensors")
    final_generator, final = load_model(run / "model.safetensors")
    assert (psnr["stage"], psnr["step"]) == ("psnr", 2)
    assert (final["stage"], final["step"]) == ("gan", 5)
    assert same_weights(final_generator.state_dict(), result.ema.state_dict())
    assert not same_weights(psnr_generator.state_dict(), final_generator.state_dict())
    log = [r for r in read_log(run) if r["event"] == "train"]
    assert [(r["step"], r["stage"]) for r in log] == [
        (1, "psnr"),
        (2, "psnr"),
        (3, "gan"),
        (4, "gan"),
        (5, "gan"),
    ]
    for record in log:
        gan_keys = {"adversarial", "discriminator", "d_real", "d_fake"}
        if record["stage"] == "gan":
            # esrgan without VGG weights: feature matching and texture replace the VGG loss.
            assert gan_keys | {"feature_matching", "texture"} <= set(record)
            assert all(np.isfinite(record[k]) for k in gan_keys)
            assert 0 < record["d_real"] < 1 and 0 < record["d_fake"] < 1
        else:
            assert not gan_keys & set(record)
    state = load_training_state(run / "state.pt")
    assert state["stage"] == "gan" and state["discriminator"] is not None


def test_gan_patches_below_the_discriminator_minimum_are_refused(volumes, tmp_path):
    config = make_config(volumes, tmp_path / "run", schedule__gan_steps=2)
    with pytest.raises(ConfigError, match="below the discriminators' minimum 32"):
        run_training(config)


# ----------------------------------------------------------------- refusals


def test_an_existing_run_folder_is_refused_without_resume(quick_run, volumes):
    config, _, _ = quick_run
    run = Path(config.out)
    before = file_digests(run)
    result = invoke(
        "train", "--volumes", volumes, "--out", run, "--steps", 2, "--device", "cpu", "--quiet"
    )
    assert result.exit_code == 2
    assert "already holds a training run" in result.output and "--resume" in result.output
    assert str(run) in result.output
    assert file_digests(run) == before
    with pytest.raises(OutputError, match="already holds a training run"):
        run_training(config)


def test_resuming_a_folder_without_state_is_refused(volumes, tmp_path):
    config = make_config(volumes, tmp_path)
    with pytest.raises(CheckpointError, match="has no state.pt to resume from"):
        run_training(config, resume=True)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--patch-size", 24], "cannot resume with changed settings: data.patch_size"),
        (["--lr", 1e-3, "--recipe", "srcnn"], "model.recipe, optim.lr_pretrain"),
        (["--steps", 9], "stage 1 of this run ended at step 6"),
    ],
)
def test_changing_a_non_resumable_setting_is_refused(quick_run, options, words):
    config, _, _ = quick_run
    run = Path(config.out)
    before = file_digests(run)
    result = invoke("train", "--out", run, "--resume", "--quiet", *options)
    assert result.exit_code == 2, result.output
    assert words in result.output and "Fix:" in result.output
    assert file_digests(run) == before


# -------------------------------------------------------------------- resume


def test_resume_continues_the_step_count_into_an_added_gan_stage(volumes, tmp_path):
    run = tmp_path / "run"
    first = make_config(
        volumes, run, data__patch_size=32, schedule__steps=2, schedule__save_every=1
    )
    run_training(first)
    stage_1 = read_description(run)
    more = with_overrides(first, {"schedule.gan_steps": 2})
    result = run_training(more, resume=True)
    assert result.step == 4
    assert train_steps(run) == [1, 2, 3, 4]
    events = [(r["event"], r["step"]) for r in read_log(run) if r["event"] in ("start", "resume")]
    assert events == [("start", 0), ("resume", 2)]
    assert load_training_state(run / "state.pt")["step"] == 4
    assert read_description(run)["stage"] == "gan"
    # The stage-1 model is kept as model_psnr.safetensors, not overwritten by the GAN model.
    psnr = read_description(run / "model_psnr.safetensors")
    assert psnr["weights_sha256"] == stage_1["weights_sha256"]
    assert (psnr["stage"], psnr["step"]) == ("psnr", 2)
    assert load_config(run / "config.yaml") == more


class Crash(Exception):
    """Stands for the process dying."""


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(volumes, tmp_path):
    def config(out: Path) -> TrainConfig:
        return make_config(
            volumes,
            out,
            data__patch_size=32,
            schedule__steps=2,
            schedule__gan_steps=4,
            schedule__save_every=2,
        )

    reference = run_training(config(tmp_path / "whole"))

    def crash_after_logging_step_5(event: TrainEvent) -> None:
        if event.kind == "log" and event.step == 5:
            raise Crash

    with pytest.raises(Crash):
        run_training(config(tmp_path / "cut"), callback=crash_after_logging_step_5)
    assert load_training_state(tmp_path / "cut" / "state.pt")["step"] == 4
    assert train_steps(tmp_path / "cut") == [1, 2, 3, 4, 5]  # step 5 is past the saved state

    resumed = run_training(config(tmp_path / "cut"), resume=True)
    assert resumed.step == 6
    assert train_steps(tmp_path / "cut") == [1, 2, 3, 4, 5, 6]
    for name in ("generator", "ema"):
        a, b = getattr(reference, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=f"{name}.{key}")
    whole = load_training_state(tmp_path / "whole" / "state.pt")
    cut = load_training_state(tmp_path / "cut" / "state.pt")
    for key, value in whole["discriminator"].items():
        torch.testing.assert_close(cut["discriminator"][key], value, rtol=0, atol=1e-6)


def test_a_killed_run_resumes_to_the_full_step_count(volumes, tmp_path):
    run = tmp_path / "run"
    total = 30
    command = [
        sys.executable, "-m", "mrisr", "train",
        "--volumes", volumes, "--out", run,
        "--steps", total, "--gan-steps", 0,
        "--patch-size", 16, "--batch-size", 8, "--val-crop", 16,
        "--save-every", 2, "--log-every", 1, "--val-every", 0,
        "--device", "cpu", "--no-tensorboard", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    deadline = time.monotonic() + 120
    try:
        while not (run / "state.pt").exists():
            if process.poll() is not None:
                pytest.fail(f"training ended before saving:\n{process.stdout.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("no state.pt after 120 s")
            time.sleep(0.005)
    finally:
        process.kill()  # SIGKILL: no clean-up runs
        process.wait()
        process.stdout.close()
    saved = load_training_state(run / "state.pt")["step"]
    assert 2 <= saved < total, "the run should have been killed part-way"
    assert saved % 2 == 0
    assert "end" not in [r["event"] for r in read_log(run)]

    result = invoke("train", "--out", run, "--resume", "--quiet")
    assert result.exit_code == 0, result.output
    assert load_training_state(run / "state.pt")["step"] == total
    assert train_steps(run) == list(range(1, total + 1))
    log = read_log(run)
    assert [(r["event"], r["step"]) for r in log if r["event"] in ("resume", "end")] == [
        ("resume", saved),
        ("end", total),
    ]
    assert read_description(run)["step"] == total


# ------------------------------------------------- unsafe or damaged model files


def test_a_pickled_model_safetensors_is_refused_by_upscale(tmp_path, thick_volume):
    from mrisr.io import save_volume

    scan = save_volume(thick_volume, tmp_path / "scan.nii.gz")
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save({"weight": torch.zeros(2, 2)}, folder / "model.safetensors")
    for model in (folder, folder / "model.safetensors"):
        result = invoke("upscale", scan, "--model", model, "--device", "cpu")
        assert result.exit_code == 2, result.output
        assert "pickled" in result.output and str(folder / "model.safetensors") in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "scan.nii.gz"]


def test_a_truncated_model_safetensors_is_refused_by_upscale(quick_run, tmp_path, thick_volume):
    from mrisr.io import save_volume

    config, _, _ = quick_run
    scan = save_volume(thick_volume, tmp_path / "scan.nii.gz")
    model = tmp_path / "model.safetensors"
    data = (Path(config.out) / "model.safetensors").read_bytes()
    model.write_bytes(data[: len(data) // 2])
    result = invoke("upscale", scan, "--model", model, "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert "truncated" in result.output and str(model) in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "scan.nii.gz"]


# ---------------------------------------------------------------------- DDP

DDP_WORKER = """
import json, os, sys
from pathlib import Path

from mrisr.checkpoint import weights_sha256
from mrisr.config_file import load_config
from mrisr.training import run_training

result = run_training(load_config(sys.argv[1]))
record = {
    "world": int(os.environ["WORLD_SIZE"]),
    "step": result.step,
    "generator": weights_sha256(result.generator.state_dict()),
    "ema": weights_sha256(result.ema.state_dict()),
}
Path(sys.argv[2], "rank" + os.environ["RANK"] + ".json").write_text(json.dumps(record))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_cpu_processes_end_with_identical_generator_weights(volumes, tmp_path):
    run = tmp_path / "run"
    config = make_config(
        volumes, run, data__patch_size=32, schedule__steps=2, schedule__gan_steps=2
    )
    save_config(config, tmp_path / "config.yaml")
    (tmp_path / "worker.py").write_text(DDP_WORKER)
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(tmp_path / "worker.py"), str(tmp_path / "config.yaml"), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["step"] == 4 for r in ranks)
    assert ranks[0]["generator"] == ranks[1]["generator"]
    assert ranks[0]["ema"] == ranks[1]["ema"]
    # Rank 0 alone writes; what it wrote is what rank 1 holds.
    final, psnr = read_description(run), read_description(run / "model_psnr.safetensors")
    assert final["weights_sha256"] == ranks[1]["ema"]
    assert psnr["weights_sha256"] != final["weights_sha256"]  # the GAN steps moved the weights
    assert final["training_data"]["processes"] == 2
    start = read_log(run)[0]
    assert start["processes"] == 2
    assert train_steps(run) == [1, 2, 3, 4]


def test_ranks_draw_different_pairs(volumes):
    """What makes the DDP check meaningful: without averaged gradients the ranks would drift."""
    data = load_training_volumes(find_volumes(volumes)[:1])
    ranks = [
        PairDataset(data, patch_size=32, factor_bounds=(4, 4), batch_size=2, rank=r) for r in (0, 1)
    ]
    assert not np.array_equal(ranks[0].batch_arrays(0)[1], ranks[1].batch_arrays(0)[1])


def test_an_explicit_gpu_index_is_refused_under_torchrun(monkeypatch):
    from mrisr.device import resolve_device as _pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert _pick_device("cuda:1", None) == torch.device("cuda", 1)  # one process: as asked
    assert _pick_device("cuda", 3) == torch.device("cuda", 3)  # torchrun: LOCAL_RANK's GPU
    with pytest.raises(ConfigError, match="every torchrun process on one GPU"):
        _pick_device("cuda:1", 0)


# ------------------------------------------------- the step, on its own


def test_the_training_step_runs_on_its_own_on_cpu():
    from mrisr.config import ModelConfig
    from mrisr.recipes import resolve
    from mrisr.training.step import build_learner, gan_step, pixel_step

    plan = resolve(TrainConfig(model=ModelConfig(size="small")), perceptual_available=False)
    learner = build_learner(plan, device="cpu", gan=True, seed=0)
    lr, hr = torch.rand(2, 1, 8, 32), torch.rand(2, 1, 32, 32)
    ema_before = {k: v.clone() for k, v in learner.ema.state_dict().items()}
    losses = pixel_step(learner, lr, hr)
    assert set(losses) == {"pixel", "generator"} and losses["pixel"].dim() == 0
    assert not same_weights(ema_before, learner.ema.state_dict())
    learner.start_gan_stage()
    learner.set_learning_rates("gan")
    losses = gan_step(learner, lr, hr)
    assert {"adversarial", "discriminator", "d_real", "d_fake", "texture"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("native", [True, False])
def test_amp_on_cpu_is_bfloat16_only_where_the_cpu_has_it(monkeypatch, native):
    import mrisr.device as devices
    from mrisr.config import ModelConfig
    from mrisr.recipes import resolve
    from mrisr.training.step import build_learner, pixel_step

    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: native)
    plan = resolve(TrainConfig(model=ModelConfig(size="small")), perceptual_available=False)
    learner = build_learner(plan, device="cpu", gan=False, seed=0, amp=True)
    assert learner.amp is native and not learner.channels_last  # channels-last: CUDA only
    assert build_learner(plan, device="cpu", gan=False, seed=0, amp=False).amp is False
    seen = []
    learner.g_forward.register_forward_hook(
        lambda module, args, out: seen.append(torch.is_autocast_enabled("cpu"))
    )
    losses = pixel_step(learner, torch.rand(2, 1, 8, 32), torch.rand(2, 1, 32, 32))
    assert seen == [native] and torch.isfinite(losses["pixel"])
    # The master weights stay float32 either way.
    assert all(p.dtype == torch.float32 for p in learner.generator.parameters())


def test_a_gan_step_without_a_gan_stage_is_refused():
    from mrisr.recipes import resolve
    from mrisr.training.step import build_learner, gan_step

    plan = resolve(TrainConfig(), perceptual_available=False)
    learner = build_learner(plan, device="cpu", gan=False)
    with pytest.raises(ConfigError, match="without a GAN stage"):
        gan_step(learner, torch.rand(1, 1, 8, 32), torch.rand(1, 1, 32, 32))


# ------------------------------------- the whole configuration, checked first


def test_a_texture_loss_on_monai_perceptual_features_is_refused_before_any_step(volumes, tmp_path):
    # srlrgan-sn's GAN stage takes its texture loss from the perceptual network's
    # features, which MONAI's network does not expose: once, this ran the whole
    # pixel stage and failed at the first GAN step.
    config = make_config(
        volumes,
        tmp_path / "run",
        model__recipe="srlrgan-sn",
        data__patch_size=32,
        schedule__steps=1000,
        schedule__gan_steps=10,
        loss__perceptual_weights="monai:radimagenet_resnet50",
    )
    events: list[TrainEvent] = []
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="texture loss") as caught:
        run_training(config, callback=events.append)
    assert time.perf_counter() - start < 5
    assert "--perceptual-weights" in str(caught.value) and events == []
    assert not (tmp_path / "run").exists()
    result = invoke(
        "train",
        "--volumes",
        volumes,
        "--out",
        tmp_path / "cli",
        "--recipe",
        "srlrgan-sn",
        "--patch-size",
        32,
        "--perceptual-weights",
        "monai:radimagenet_resnet50",
        "--device",
        "cpu",
        "--quiet",
    )
    assert result.exit_code == 2, result.output
    assert "texture loss" in result.output and not (tmp_path / "cli").exists()


def test_unreadable_perceptual_weights_are_refused_before_the_data_is_read(tmp_path):
    config = make_config(
        tmp_path / "no-such-folder",
        tmp_path / "run",
        data__patch_size=32,
        schedule__gan_steps=2,
        loss__perceptual_weights=str(tmp_path / "vgg19.safetensors"),
    )
    with pytest.raises(CheckpointError, match="vgg19.safetensors"):
        run_training(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"data__val_crop": 8, "data__factor": 5.0}, "too small for factor"),
        ({"model__generator_kwargs": {"no_such_setting": 1}}, "does not accept"),
        ({"model__discriminator": "nope", "schedule__gan_steps": 1}, "unknown discriminator"),
    ],
)
def test_settings_that_cannot_train_are_refused_before_any_step(volumes, tmp_path, settings, words):
    events: list[TrainEvent] = []
    with pytest.raises(ConfigError, match=words):
        run_training(make_config(volumes, tmp_path / "run", **settings), callback=events.append)
    assert events == [] and not (tmp_path / "run").exists()


# ------------------------------------------------------------- --init-from


def test_init_from_starts_the_generator_and_ema_from_a_model_file(quick_run, volumes, tmp_path):
    from mrisr.checkpoint import load_model
    from mrisr.config import ModelConfig
    from mrisr.recipes import resolve
    from mrisr.training.state import initialise_from_model
    from mrisr.training.step import build_learner

    _, result, _ = quick_run
    model_file = result.run_dir / "model.safetensors"
    plan = resolve(TrainConfig(model=ModelConfig(size="small")), perceptual_available=False)
    learner = build_learner(plan, device="cpu", gan=False, seed=1)
    record = initialise_from_model(learner, str(model_file))
    saved = load_model(model_file)[0].state_dict()
    assert same_weights(learner.generator.state_dict(), saved)
    assert same_weights(learner.ema.state_dict(), saved)
    assert record["step"] == 6 and len(record["sha256"]) == 64

    # A run started from it records where it started and trains on from there.
    config = make_config(
        volumes, tmp_path / "tuned", schedule__steps=2, model__init_from=str(model_file)
    )
    tuned = run_training(config)
    description = load_model(tuned.run_dir / "model.safetensors")[1]
    assert description["init_from"] == str(model_file)
    assert not same_weights(tuned.generator.state_dict(), saved)


def test_init_from_a_different_network_or_cubic_is_refused_before_any_step(quick_run, tmp_path):
    from mrisr.config import ModelConfig
    from mrisr.recipes import resolve
    from mrisr.training.state import initialise_from_model
    from mrisr.training.step import build_learner

    _, result, _ = quick_run
    wider = resolve(
        TrainConfig(model=ModelConfig(size="small", generator_kwargs={"num_feat": 24})),
        perceptual_available=False,
    )
    with pytest.raises(ConfigError, match="configuration"):
        initialise_from_model(
            build_learner(wider, device="cpu", gan=False), str(result.run_dir / "model.safetensors")
        )
    small = resolve(TrainConfig(model=ModelConfig(size="small")), perceptual_available=False)
    with pytest.raises(ConfigError, match="not a rrdbnet generator"):
        initialise_from_model(build_learner(small, device="cpu", gan=False), "cubic")


def test_init_from_alone_takes_the_models_network_settings(volumes, tmp_path):
    # The bundled fast-wide has 2 RRDB blocks of 32 channels; the run's own size
    # ("small": 1 block of 16) would not fit it, so the model's settings are taken.
    from mrisr.models import bundled_models
    from mrisr.training.state import adopt_init_network

    if "fast-wide" not in bundled_models():
        pytest.skip("no bundled fast-wide model")
    config = make_config(
        volumes, tmp_path / "mine", schedule__steps=1, model__init_from="fast-wide"
    )
    adopted = adopt_init_network(config)
    assert adopted.model.generator == "rrdbnet"
    assert adopted.model.generator_kwargs["num_block"] == 2
    assert adopted.model.generator_kwargs["num_feat"] == 32
    run_training(config)
    saved = load_config(tmp_path / "mine" / "config.yaml")
    assert saved.model.generator_kwargs["num_feat"] == 32
    # Settings given explicitly are kept (and refused later if they do not fit).
    own = make_config(
        volumes,
        tmp_path / "x",
        model__init_from="fast-wide",
        model__generator_kwargs={"num_feat": 8},
    )
    assert adopt_init_network(own) is own


def _labelled_model(path: Path, size: str) -> Path:
    """A small rrdbnet model file whose description says it is of ``size``."""
    from mrisr.checkpoint import save_model
    from mrisr.networks import build_generator

    generator = build_generator("rrdbnet", size="small", num_feat=8, num_block=1)
    description = {"factor_range": [2.0, 6.0], "recipe": "esrgan", "size": size}
    return save_model(path, generator, name="rrdbnet", description=description)


def test_a_size_given_that_is_not_the_init_model_s_is_refused_before_any_work(volumes, tmp_path):
    from mrisr.training.state import adopt_init_network

    full = _labelled_model(tmp_path / "full.safetensors", "full")
    # A size given that is not the model's is refused, naming both (it trained the
    # model's size, silently).
    run = tmp_path / "run"
    result = invoke(
        "train", "--volumes", volumes, "--out", run, "--init-from", full, "--size", "small",
        "--steps", 1, "--gan-steps", 0, "--patch-size", 16, "--batch-size", 2,
        "--val-crop", 16, "--device", "cpu", "--threads", 1, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "--size small (model.size) does not match --init-from" in message
    assert "full.safetensors: that is a full-size model" in message
    assert "Fix: drop --size to take the model's size, pass --size full" in message
    assert not run.exists()
    # Without --size the model's size is taken (and stated in the run's config);
    quiet = with_overrides(TrainConfig(), {"model.init_from": str(full)})
    assert quiet.model.size is None
    assert adopt_init_network(quiet).model.size == "full"
    # the same size given is fine, and no init model means the default size.
    same = with_overrides(quiet, {"model.size": "full"})
    assert adopt_init_network(same).model.generator_kwargs["num_feat"] == 8
    unsized = TrainConfig()
    assert adopt_init_network(unsized) is unsized and unsized.model.network_size == "small"


def test_an_init_model_that_does_not_fit_leaves_no_run_folder(quick_run, volumes, tmp_path):
    _, result, _ = quick_run
    config = make_config(
        volumes,
        tmp_path / "never",
        model__init_from=str(result.run_dir / "model.safetensors"),
        model__generator_kwargs={"num_feat": 24},
    )
    with pytest.raises(ConfigError, match="configuration"):
        run_training(config)
    assert not (tmp_path / "never").exists()


def test_resuming_on_a_volumes_folder_that_changed_is_refused(volumes, tmp_path):
    import shutil

    folder = tmp_path / "vols"
    shutil.copytree(volumes, folder)
    run = tmp_path / "run"
    first = make_config(folder, run, data__patch_size=32, schedule__steps=2, schedule__save_every=1)
    run_training(first)
    before = file_digests(run)
    # A new file last by name would become the held-out volume, and b.nii.gz trained on.
    save_nifti(folder / "z.nii.gz", wave_volume(2))
    more = with_overrides(first, {"schedule.gan_steps": 1})
    with pytest.raises(ConfigError, match=r"the volumes changed since the run began") as caught:
        run_training(more, resume=True)
    assert "added b" in str(caught.value)  # b now trains; z is held out
    assert "held out was b" in str(caught.value)
    assert file_digests(run) == before
    (folder / "z.nii.gz").unlink()
    assert run_training(more, resume=True).step == 3


def test_a_run_resumes_from_another_working_folder(volumes, tmp_path, monkeypatch):
    monkeypatch.chdir(volumes.parent)
    run = tmp_path / "run"
    relative = os.path.relpath(volumes, volumes.parent)
    result = invoke("train", "--volumes", relative, "--out", run, "--steps", 2, "--quiet",
                    "--patch-size", 32, "--batch-size", 2, "--val-crop", 16, "--size", "small",
                    "--gan-steps", 0, "--device", "cpu", "--save-every", 1)  # fmt: skip
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)
    again = invoke("train", "--out", run, "--resume", "--steps", 2, "--gan-steps", 1, "--quiet")
    assert again.exit_code == 0, again.output  # data.volumes was stored as an absolute path
    assert Path(load_config(run / "config.yaml").data.volumes).is_absolute()


def test_resume_on_a_folder_that_is_not_a_run_says_so(tmp_path):
    (tmp_path / "notrun").mkdir()
    result = invoke("train", "--out", tmp_path / "notrun", "--resume", "--quiet")
    assert result.exit_code == 2, result.output
    assert "has no config.yaml: not a training run to resume" in result.output


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"data: [1,2\n", "is not valid YAML (line 2, column 1)"),
        (b"data:\n\tx: 1\n", "indent with spaces, not tabs"),
        (b"\x1f\x8b\x08\x00binary", "is not a text file"),
        (b"- a\n- b\n", "holds a YAML list, not settings"),
    ],
    ids=["bracket", "tab", "binary", "list"],
)
def test_a_config_that_is_not_yaml_settings_is_named_with_a_fix(tmp_path, content, words):
    config = tmp_path / "c.yaml"
    config.write_bytes(content)
    result = invoke("train", "--config", config, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"{config}:" in message and words in message and "Fix:" in message, message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("below", [False, True], ids=["a file", "under a file"])
def test_a_run_folder_that_is_a_file_is_refused_before_any_work(volumes, tmp_path, below):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker / "run" if below else blocker
    result = invoke("train", "--volumes", volumes, "--out", out, "--quiet", "--steps", 1)
    assert result.exit_code == 2, result.output
    assert "not a folder: it cannot be the run folder" in result.output
    assert blocker.read_text() == "x"


def test_a_held_out_volume_too_thin_to_validate_is_named(tmp_path):
    folder = tmp_path / "vols"
    folder.mkdir()
    save_nifti(folder / "a.nii.gz", wave_volume(0))
    save_nifti(folder / "thin.nii.gz", wave_volume(1, (40, 36, 3)))  # last by name: held out
    with pytest.raises(ConfigError, match=r"thin.nii.gz: is 40 x 36 x 3 voxels: too thin") as e:
        run_training(make_config(folder, tmp_path / "run", data__val_crop=16))
    assert "--val-volume" in str(e.value)
