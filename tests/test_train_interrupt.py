"""Training as a new user meets it: anisotropic "truth" refused, interruptions that keep the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.errors import InputError
from mrisr.training import run_training
from mrisr.training.data import find_volumes
from mrisr.training.state_file import load_training_state
from tests.test_train import (
    make_config,
    read_log,
    save_nifti,
    train_steps,
    two_volumes,
    wave_volume,
)

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


# ------------------------------------------------------- 5. anisotropic truth


@pytest.mark.parametrize(
    ("zooms", "refused", "advice"),
    [
        ((1.0, 1.0, 1.0), False, None),
        ((1.2, 0.94, 0.94), False, None),  # IXI002 T1: 1.28x, mild
        ((1.0, 1.0, 1.35), True, "resample to 1.35 mm isotropic"),
        ((1.0, 1.0, 4.0), True, "a thick-slice scan: resampling cannot add the detail"),
        ((1.0, 0.5, 0.5), True, "resample to 1 mm isotropic"),  # uih_umr770_t1gre_3d
    ],
)
def test_anisotropic_training_volumes_are_refused_by_name(tmp_path, zooms, refused, advice):
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
    assert f"{' x '.join(f'{z:.3g}' for z in zooms)} mm: {advice}" in message
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
        "--val-volume", "none", "--no-tensorboard", "--quiet",
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


# ------------------------------------------------------------ 6. interrupts


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    return two_volumes(tmp_path_factory.mktemp("volumes"))


def start_training(volumes: Path, run: Path, *extra: object) -> subprocess.Popen:
    """``python -m mrisr train`` for very many steps, output piped (not a terminal)."""
    command = [
        sys.executable, "-m", "mrisr", "train",
        "--volumes", volumes, "--out", run,
        "--steps", 1_000_000, "--gan-steps", 0,
        "--patch-size", 16, "--batch-size", 2, "--val-crop", 16, "--size", "small",
        "--log-every", 1, "--val-every", 0, "--save-every", 0,
        "--device", "cpu", "--no-tensorboard", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [str(c) for c in command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )


def wait_for_a_logged_step(process: subprocess.Popen, run: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        log = run / "log.jsonl"
        if log.exists() and '"train"' in log.read_text():
            return
        if process.poll() is not None:
            pytest.fail(f"training ended early:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no logged step after {timeout} s")
        time.sleep(0.02)


@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_resumable_state_says_how_to_resume_and_exits_conventionally(
    volumes, tmp_path, number, code
):
    run = tmp_path / "run"
    process = start_training(volumes, run)
    try:
        wait_for_a_logged_step(process, run)
        process.send_signal(number)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, output
    saved = load_training_state(run / "state.pt")["step"]
    logged = train_steps(run)
    assert saved >= 1 and logged == list(range(1, saved + 1)), "stopped after a whole step"
    events = [r["event"] for r in read_log(run)]
    assert events[-2:] == ["save", "interrupted"] and "end" not in events
    assert read_log(run)[-1]["signal"] == int(number)
    # What the user reads: plain progress lines (piped), where the state is, how to resume.
    assert "step 1/1000000 (psnr): pixel" in output
    assert f"saved the state after step {saved} in {run / 'state.pt'}" in output
    assert f"mrisr train --config {run / 'config.yaml'} --resume" in output
    assert "Traceback" not in output

    # --resume continues from the saved step (here to 2 more steps).
    result = runner.invoke(
        app,
        ["train", "--config", str(run / "config.yaml"), "--resume", "--steps", str(saved + 2)],
    )
    assert result.exit_code == 0, result.output
    assert train_steps(run) == list(range(1, saved + 3))
    assert load_training_state(run / "state.pt")["step"] == saved + 2
    resumed = [r for r in read_log(run) if r["event"] == "resume"]
    assert [r["step"] for r in resumed] == [saved]


def test_a_stop_signal_in_process_raises_training_interrupted_after_saving(volumes, tmp_path):
    from mrisr.training import TrainEvent, TrainingInterrupted

    def send_sigterm_after_step_2(event: TrainEvent) -> None:
        if event.kind == "step" and event.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    config = make_config(volumes, tmp_path / "run", schedule__steps=50)
    with pytest.raises(TrainingInterrupted) as caught:
        run_training(config, callback=send_sigterm_after_step_2)
    assert caught.value.step == 2 and caught.value.exit_code == 143
    assert load_training_state(tmp_path / "run" / "state.pt")["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is before, "the handlers are put back"
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["step"] == 2


def test_a_training_progress_line_per_logged_step_when_piped(volumes, tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--volumes",
            str(volumes),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "3",
            "--gan-steps",
            "0",
            "--patch-size",
            "16",
            "--batch-size",
            "2",
            "--val-crop",
            "16",
            "--size",
            "small",
            "--log-every",
            "1",
            "--val-every",
            "0",
            "--device",
            "cpu",
            "--no-tensorboard",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for step in (1, 2, 3):
        assert any(line.startswith(f"step {step}/3 (psnr): pixel") for line in lines)
    assert "None" not in result.output
    assert "PSNR" in result.output  # the validation line at the end of the stage
