"""Every recipe trains through `mrisr train` and its model works with `mrisr upscale`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.checkpoint import read_description
from mrisr.cli import app
from mrisr.config import ModelConfig, TrainConfig, with_overrides
from mrisr.networks import DISCRIMINATORS, GENERATORS
from mrisr.networks.discriminators import MIN_PATCH
from mrisr.recipes import RECIPES, get_recipe, resolve

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def wave_volume(seed: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth, positive test volume: a sum of random plane waves."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    data = np.full(shape, 1.0)
    for _ in range(5):
        k = rng.normal(size=3)
        k *= 2 * np.pi / rng.uniform(6, 12) / np.linalg.norm(k)
        data += 0.3 * np.sin(sum(ki * g for ki, g in zip(k, grid, strict=True)) + rng.uniform(0, 6))
    return data.astype(np.float32)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    """Two small HR volumes: ``a`` trains, ``b`` is held out."""
    folder = tmp_path_factory.mktemp("volumes")
    for seed, (name, shape) in enumerate((("a", (36, 34, 40)), ("b", (34, 36, 32)))):
        image = nib.Nifti1Image(wave_volume(seed, shape), np.eye(4))
        nib.save(image, folder / f"{name}.nii.gz")
    return folder


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    """A thick-slice scan: 4 mm slices along axis 2, 1 mm in plane."""
    path = tmp_path_factory.mktemp("scan") / "thick.nii.gz"
    nib.save(nib.Nifti1Image(wave_volume(9, (24, 20, 6)), np.diag([1.0, 1.0, 4.0, 1.0])), path)
    return path


def test_every_recipe_names_known_networks_and_losses():
    for name, recipe in RECIPES.items():
        assert recipe.name == name and get_recipe(name) is recipe
        assert recipe.generator in GENERATORS
        assert (recipe.discriminator is None) == (recipe.adversarial_loss is None)
        if recipe.has_gan_stage:
            assert recipe.discriminator in DISCRIMINATORS
            for size in ("small", "full"):
                assert size in recipe.discriminator_sizes
            # Without VGG weights the defaults never ask for the perceptual loss.
            assert recipe.weights_without_perceptual.perceptual == 0


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_resolves_without_perceptual_weights(name):
    plan = resolve(TrainConfig(model=ModelConfig(recipe=name)), perceptual_available=False)
    assert plan.recipe == name and plan.generator == RECIPES[name].generator
    assert plan.weights == RECIPES[name].weights_without_perceptual
    assert (plan.discriminator is None) == (not RECIPES[name].has_gan_stage)


def test_recipe_overrides_apply():
    config = with_overrides(
        TrainConfig(), {"model.recipe": "srgan", "loss.adversarial": 0.5, "optim.lr_g": 3e-5}
    )
    plan = resolve(config, perceptual_available=False)
    assert plan.weights.adversarial == 0.5 and plan.lr_g == 3e-5
    assert plan.lr_d == RECIPES["srgan"].lr_d


def test_stage_one_learning_rate_follows_the_size_unless_set():
    small = TrainConfig(model=ModelConfig(recipe="esrgan", size="small"))
    full = TrainConfig(model=ModelConfig(recipe="esrgan", size="full"))
    assert resolve(small, perceptual_available=False).lr_pretrain == 1e-3
    assert resolve(full, perceptual_available=False).lr_pretrain == 2e-4  # ESRGAN's
    given = with_overrides(small, {"optim.lr_pretrain": 5e-4})
    assert resolve(given, perceptual_available=False).lr_pretrain == 5e-4
    srcnn = TrainConfig(model=ModelConfig(recipe="srcnn", size="small"))
    assert resolve(srcnn, perceptual_available=False).lr_pretrain == RECIPES["srcnn"].lr_pretrain


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_trains_and_its_model_upscales(name, volumes, scan, tmp_path, caplog):
    recipe = RECIPES[name]
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="mrisr"):
        result = invoke(
            "train",
            "--volumes", volumes, "--out", run, "--recipe", name, "--size", "small",
            "--steps", 2, "--gan-steps", 2, "--device", "cpu",
            "--patch-size", MIN_PATCH, "--batch-size", 2, "--val-crop", 16,
            "--log-every", 1, "--no-tensorboard", "--quiet",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    gan = recipe.has_gan_stage
    total = 4 if gan else 2
    files = {p.name for p in run.iterdir()}
    assert {"config.yaml", "model.safetensors", "state.pt", "log.jsonl"} <= files
    assert ("model_psnr.safetensors" in files) == gan
    if not gan:
        assert f"recipe {name} has no GAN stage: ignoring gan_steps=2" in caplog.text
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["event"] == "train"]
    assert [r["step"] for r in train] == list(range(1, total + 1))
    assert [r["stage"] for r in train] == ["psnr"] * 2 + ["gan"] * (total - 2)
    assert all(np.isfinite(r["generator"]) for r in train)
    description = read_description(run)
    assert description["recipe"] == name
    assert description["generator"]["name"] == recipe.generator
    assert description["stage"] == ("gan" if gan else "psnr") and description["step"] == total

    output = tmp_path / "sr.nii.gz"
    result = invoke("upscale", scan, "--model", run, "--device", "cpu", "-o", output)
    assert result.exit_code == 0, result.output
    image = nib.load(output)
    assert image.shape == (24, 20, 24)
    np.testing.assert_allclose(image.header.get_zooms(), (1.0, 1.0, 1.0), atol=1e-6)
    assert np.isfinite(image.get_fdata()).all()
    sidecar = json.loads(output.with_name("sr.json").read_text())
    assert sidecar["model"]["recipe"] == name
