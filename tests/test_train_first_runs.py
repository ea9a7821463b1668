"""`mrisr train` as a new user first meets it: paths, patch sizes, finished runs, messages."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.config_file import load_config
from mrisr.training import TrainEvent, TrainingInterrupted, run_training
from mrisr.training.state_file import load_training_state
from tests.test_train import (
    file_digests,
    make_config,
    read_log,
    save_nifti,
    two_volumes,
    wave_volume,
)

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def stop_after_step_2(event: TrainEvent) -> None:
    """A training callback: SIGTERM after step 2 (the run saves its state and stops)."""
    if event.kind == "step" and event.step == 2:
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    return two_volumes(tmp_path_factory.mktemp("volumes"))


# ------------------------------------------------- 1. relative paths, resumed elsewhere


def test_a_run_started_with_relative_paths_resumes_from_another_folder_as_printed(
    volumes, tmp_path, monkeypatch
):
    start = tmp_path / "start"
    shutil.copytree(volumes, start / "vols")
    monkeypatch.chdir(start)

    config = make_config(Path("vols"), Path("runs/int"), schedule__steps=50)
    with pytest.raises(TrainingInterrupted) as caught:
        run_training(config, callback=stop_after_step_2)
    run = start / "runs" / "int"
    command = caught.value.resume_command()
    assert command == f"mrisr train --config {run / 'config.yaml'} --resume"
    saved = load_config(run / "config.yaml")
    assert (saved.out, saved.data.volumes) == (str(run), str(start / "vols"))

    monkeypatch.chdir(tmp_path)  # another working folder, as a batch job's
    result = invoke(*shlex.split(command)[1:], "--steps", 3, "--quiet")
    assert result.exit_code == 0, result.output
    assert load_training_state(run / "state.pt")["step"] == 3


def test_path_settings_are_made_absolute_and_names_are_kept(tmp_path, monkeypatch):
    from mrisr.training.state import absolute_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").mkdir()  # a bundled model's name is the model, as --model reads it
    config = make_config(
        Path("vols"),
        Path("runs/x"),
        model__init_from="models/m.safetensors",
        loss__perceptual_weights="vgg19.safetensors",
    )
    made = absolute_paths(config)
    assert made.out == str(tmp_path / "runs" / "x")
    assert made.data.volumes == str(tmp_path / "vols")
    assert made.model.init_from == str(tmp_path / "models" / "m.safetensors")
    assert made.loss.perceptual_weights == str(tmp_path / "vgg19.safetensors")
    assert absolute_paths(made) == made
    for name in ("cubic", "fast", "no-such-model"):  # an unknown name is refused later, as a name
        named = make_config(Path("v"), Path("o"), model__init_from=name)
        assert absolute_paths(named).model.init_from == name
    monai = make_config(Path("v"), Path("o"), loss__perceptual_weights="monai:radimagenet_resnet50")
    assert absolute_paths(monai).loss.perceptual_weights == "monai:radimagenet_resnet50"


# ------------------------------------------------- 2. patches larger than the volumes

QUICK = ["--steps", 1, "--gan-steps", 0, "--batch-size", 2, "--val-crop", 16, "--size", "small",
         "--device", "cpu", "--threads", 1, "--no-tensorboard", "--quiet"]  # fmt: skip


def test_a_patch_larger_than_the_training_volumes_is_refused_naming_the_smallest(tmp_path):
    import numpy as np

    folder = tmp_path / "vols"
    folder.mkdir()
    # 60^3 voxels in the file, 46^3 around its signal: patches are cut from the 46^3.
    save_nifti(folder / "a.nii.gz", np.pad(wave_volume(0, (30, 30, 30)), 15))
    save_nifti(folder / "big.nii.gz", wave_volume(1, (64, 64, 64)))
    save_nifti(folder / "z.nii.gz", wave_volume(2))  # held out: validated, not cut into patches
    run = tmp_path / "run"
    result = invoke("train", "--volumes", folder, "--out", run, "--patch-size", 50, *QUICK)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"{folder}: --patch-size 50 (data.patch_size) is larger than the training volumes" in (
        message
    )
    assert "the smallest, a (60 x 60 x 60 voxels, 46 x 46 x 46 around its signal" in message
    assert "at most 46 voxels" in message and "Fix: pass --patch-size 46 or less" in message
    assert not run.exists()
    result = invoke("train", "--volumes", folder, "--out", run, "--patch-size", 46, *QUICK)
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------- 3. a finished run


@pytest.fixture(scope="module")
def finished_run(volumes, tmp_path_factory) -> Path:
    """A finished 2-step run without a GAN stage (the tests leave it as it is)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    run_training(make_config(volumes, run, schedule__steps=2))
    return run


def test_lengthening_a_finished_stage_1_names_the_run_and_how_to_train_longer(
    finished_run, tmp_path
):
    run, before = finished_run, file_digests(finished_run)
    result = invoke("train", "--out", run, "--resume", "--steps", 5, "--quiet")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"{run}: stage 1 of this run ended at step 2" in message
    assert "it cannot become 5 steps now" in message
    model = run / "model.safetensors"
    advice = (
        f"mrisr train --config {run / 'config.yaml'} --out NEW_RUN --init-from {model} --steps 5"
    )
    assert advice in message
    assert file_digests(run) == before
    # The advice works as printed.
    command = shlex.split(advice.replace("NEW_RUN", str(tmp_path / "longer")))
    result = invoke(*command[1:], "--quiet")
    assert result.exit_code == 0, result.output
    assert load_training_state(tmp_path / "longer" / "state.pt")["step"] == 5


def test_resuming_a_finished_run_says_so_where_its_model_is_and_changes_nothing(finished_run):
    run, before = finished_run, file_digests(finished_run)
    result = invoke("train", "--out", run, "--resume")
    assert result.exit_code == 0, result.output
    message = " ".join(result.output.split())
    assert f"{run}: the run is already finished (step 2 of 2)" in message
    assert f"its model: {run / 'model.safetensors'}" in message
    assert "training: steps" not in message and "wrote" not in message
    assert file_digests(run) == before
    events: list[TrainEvent] = []
    result = run_training(load_config(run / "config.yaml"), resume=True, callback=events.append)
    assert result.step == 2 and [e.kind for e in events] == ["finished"]
    assert [r["event"] for r in read_log(run)][-1] == "end"
    assert file_digests(run) == before


def test_shortening_stage_1_below_the_steps_done_says_how_far_it_got(volumes, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        run_training(make_config(volumes, run, schedule__steps=50), callback=stop_after_step_2)
    result = invoke("train", "--out", run, "--resume", "--steps", 1, "--quiet")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"{run}: the saved state is at step 2, past the 1 stage-1 steps asked for" in message
    assert "Fix: pass --steps 2 or more" in message


def test_shortening_a_gan_stage_below_its_steps_done_names_the_run_and_the_least(volumes, tmp_path):
    run = tmp_path / "run"
    gan = {"data__patch_size": 32, "schedule__steps": 1, "schedule__gan_steps": 2}
    run_training(make_config(volumes, run, **gan))
    before = file_digests(run)
    result = invoke("train", "--out", run, "--resume", "--gan-steps", 1, "--quiet")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"{run}: the saved state is at step 3, past the 2 steps configured" in message
    assert "Fix: pass --gan-steps 2 or more" in message
    assert file_digests(run) == before


# ---------------------------------------------- 4. a run folder among the volumes


@pytest.mark.parametrize(
    ("out", "words"),
    [
        ("vols/x.nii.gz", "is inside the --volumes folder"),
        ("vols", "is the --volumes folder itself"),
        ("link/sub/run", "is inside the --volumes folder"),  # through a symbolic link
    ],
)
def test_a_run_folder_inside_the_volumes_folder_is_refused_before_any_work(
    volumes, tmp_path, out, words
):
    folder = tmp_path / "vols"
    shutil.copytree(volumes, folder)
    (tmp_path / "link").symlink_to(folder)
    before = sorted(p.name for p in folder.iterdir())
    result = invoke(
        "train", "--volumes", folder, "--out", tmp_path / out, "--patch-size", 16, *QUICK
    )
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"{tmp_path / out}: {words}" in message
    assert f"Fix: choose an --out outside {folder}, e.g. --out {tmp_path / 'runs'}" in message
    assert sorted(p.name for p in folder.iterdir()) == before


# ------------------------------------------- 5. a folder with nothing to train on


def test_a_folder_without_image_files_says_what_it_holds(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("not an image")
    result = invoke("train", "--volumes", folder, "--out", tmp_path / "run", *QUICK)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"{folder}: holds no image file to train on: it holds only a.txt, sub/" in message
    assert "sub-folders are not searched" in message and "warnings above" not in message
    (folder / "a.txt").unlink()
    (folder / "sub").rmdir()
    result = invoke("train", "--volumes", folder, "--out", tmp_path / "run", *QUICK)
    assert "holds no image file to train on: it is empty" in " ".join(result.output.split())


def test_a_folder_whose_image_files_are_all_skipped_lists_each_and_why(tmp_path):
    import numpy as np

    from mrisr.errors import InputError
    from mrisr.training.data import load_training_volumes

    folder = tmp_path / "vols"
    folder.mkdir()
    (folder / "junk.nii.gz").write_bytes(b"not gzip at all")
    save_nifti(folder / "flat.nii", np.ones((10, 12), np.float32))
    (folder / "lost.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    result = invoke("train", "--volumes", folder, "--out", tmp_path / "run", *QUICK)
    assert result.exit_code == 2, result.output
    error = " ".join(result.output.split()).split("error: ")[-1]  # the message, not the warnings
    assert "holds no readable volume (3 candidate file(s), each skipped:" in error
    assert "flat.nii (not a 3D volume: shape (10, 12))" in error
    assert "junk.nii.gz (unreadable:" in error
    assert f"lost.nii.gz (a broken symbolic link (its target {tmp_path / 'gone.nii.gz'}" in error
    assert "warnings above" not in error
    # Headers fine, voxels unusable: the loading step lists them too.
    zeros = save_nifti(tmp_path / "zeros.nii.gz", np.zeros((10, 10, 10), np.float32))
    with pytest.raises(InputError) as caught:
        load_training_volumes([zeros])
    assert "could be loaded: zeros.nii.gz (is all zeros)" in str(caught.value)
    assert "warnings above" not in str(caught.value)


# ------------------------------------------- 6. range errors name the option typed


@pytest.mark.parametrize(
    ("option", "value", "named", "problem"),
    [
        ("--patch-size", 4, "--patch-size (data.patch_size)", "must be in [8, 1024], got 4"),
        ("--lr", 5, "--lr (optim.lr_pretrain)", "must be in (0, 1], got 5.0"),
        ("--ema-decay", 1, "--ema-decay (ema_decay)", "must be in [0, 1), got 1.0"),
        ("--profile", "box", "--profile (data.profile)", "must be one of mean, gaussian, mixed"),
    ],
)
def test_a_train_option_out_of_range_is_named_as_typed_and_as_its_setting(
    volumes, tmp_path, option, value, named, problem
):
    result = invoke("train", "--volumes", volumes, "--out", tmp_path / "run", option, value)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"error: {named} {problem}" in message
    assert f"Fix: set {named} " in message
    assert not (tmp_path / "run").exists()


def test_a_setting_without_an_option_is_named_by_its_key_alone(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  min_foreground: 3\n")
    result = invoke("train", "--config", config, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2, result.output
    assert f"{config}: data.min_foreground must be in [0, 1], got 3.0" in result.output


def test_the_option_of_each_setting_is_the_train_command_s_own():
    """config.CLI_OPTIONS (what messages name) matches `mrisr train`'s options and their [keys]."""
    import re

    import typer.main

    from mrisr.config import CLI_OPTIONS

    command = typer.main.get_command(app).commands["train"]
    options = {}
    for param in command.params:
        found = re.search(r"\[([\w.]+)\]$", param.help or "")
        if found:
            options[found.group(1)] = param.opts[0]
    assert options == CLI_OPTIONS


# ---------------------------------------------- 7. thick-slice scans among the volumes


def test_a_thick_slice_scan_is_not_told_to_be_resampled_into_truth(tmp_path):
    import numpy as np

    from mrisr.errors import InputError
    from mrisr.training.data import find_volumes

    save_nifti(tmp_path / "iso.nii.gz", wave_volume(0))
    save_nifti(tmp_path / "t2_ax.nii.gz", np.ones((40, 36, 8)), zooms=(0.9, 0.9, 7.07))
    with pytest.raises(InputError) as caught:
        find_volumes(tmp_path)
    message = str(caught.value)
    assert "t2_ax.nii.gz (0.9 x 0.9 x 7.07 mm: a thick-slice scan: resampling cannot add" in message
    assert "resample to 7.07" not in message and "voxel_sizes" not in message
    assert "high-resolution volumes with near-isotropic voxels" in message
    assert "move the thick-slice scans out of the folder" in message and "mrisr upscale" in message
