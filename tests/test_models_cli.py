"""`mrisr models`: every recipe with its networks' size and compute, and the bundled models."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import mrisr.models as inference
from mrisr.checkpoint import save_model
from mrisr.cli import app
from mrisr.config import SIZES
from mrisr.errors import ConfigError
from mrisr.networks import build_generator
from mrisr.recipes import RECIPES, describe_recipes, generator_kwargs

torch.set_num_threads(1)
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["models", *map(str, args)])


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty bundled-weights folder in place of mrisr/weights."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(inference, "WEIGHTS_DIR", folder)
    return folder


def fake_bundled_model(folder, name="fake", factor_range=(2, 6)):
    """A tiny real generator saved as a bundled model, as `mrisr train` would describe it."""
    torch.manual_seed(0)
    generator = build_generator("srcnn", num_feat=4, num_feat2=2)
    return save_model(
        folder / f"{name}.safetensors",
        generator,
        name="srcnn",
        description={
            "factor_range": list(factor_range),
            "recipe": "srcnn",
            "size": "small",
            "stage": "psnr",
            "step": 40,
            "validation": {
                "psnr": 31.5,
                "ssim": 0.91,
                "psnr_cubic": 30.25,
                "ssim_cubic": 0.89,
                "psnr_gain": 1.25,
            },
        },
    )


def test_table_lists_every_recipe_and_says_no_model_is_bundled(weights_dir):
    result = invoke()
    assert result.exit_code == 0, result.output
    for name, recipe in RECIPES.items():
        assert name in result.output
        assert recipe.generator in result.output
    assert "params" in result.output and "MACs" in result.output
    assert "No bundled models are installed" in result.output
    assert str(weights_dir) in result.output.replace("\n", "")


def test_json_has_every_recipe_with_positive_counts_for_every_size(weights_dir):
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout holds the JSON alone
    assert report["factor"] == 4.0
    assert report["bundled_models"] == []
    assert report["weights_dir"] == str(weights_dir)
    assert [row["name"] for row in report["recipes"]] == list(RECIPES)
    for row in report["recipes"]:
        recipe = RECIPES[row["name"]]
        assert row["title"] == recipe.title
        assert row["generator"] == recipe.generator
        assert row["discriminator"] == recipe.discriminator
        assert set(row["sizes"]) == set(SIZES)
        for size in SIZES:
            measured = row["sizes"][size]
            assert isinstance(measured["parameters"], int) and measured["parameters"] > 0
            assert measured["macs_per_output_voxel"] > 0
        # "full" is the paper's network, "small" the CPU one.
        assert row["sizes"]["small"]["parameters"] < row["sizes"]["full"]["parameters"]


def test_a_bundled_model_is_listed_with_its_factor_range_and_metrics(weights_dir):
    fake_bundled_model(weights_dir)
    result = invoke()
    assert result.exit_code == 0, result.output
    assert "Bundled models" in result.output and "No bundled models" not in result.output
    assert "fake" in result.output and "2-6x" in result.output
    assert "srcnn (581 params)" in result.output and "psnr, step 40" in result.output
    # Validation metrics (the table may wrap them at spaces).
    assert "31.50" in result.output and "30.25" in result.output and "0.910" in result.output

    report = json.loads(invoke("--json").stdout)
    (model,) = report["bundled_models"]
    assert model["name"] == "fake" and model["recipe"] == "srcnn"
    assert model["factor_range"] == [2.0, 6.0]
    assert model["stage"] == "psnr" and model["validation"]["psnr"] == 31.5
    assert model["path"] == str(weights_dir / "fake.safetensors")


def test_a_damaged_bundled_model_is_reported_without_hiding_the_others(weights_dir):
    fake_bundled_model(weights_dir, name="good", factor_range=(3, 5))
    (weights_dir / "broken.safetensors").write_bytes(b"\x00" * 20)
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["bundled_models"]}
    assert rows["good"]["factor_range"] == [3.0, 5.0]
    assert "truncated or not a safetensors file" in rows["broken"]["error"]
    table = invoke()
    assert table.exit_code == 0 and "unreadable" in table.output and "3-5x" in table.output


def test_bundled_models_can_be_replaced_wholesale(monkeypatch, tmp_path):
    # The command asks inference.bundled_models(), so a patched listing is what it shows.
    path = fake_bundled_model(tmp_path, name="elsewhere", factor_range=(4, 4))
    monkeypatch.setattr(inference, "bundled_models", lambda: {"elsewhere": path})
    report = json.loads(invoke("--json").stdout)
    assert [m["name"] for m in report["bundled_models"]] == ["elsewhere"]
    assert report["bundled_models"][0]["factor_range"] == [4.0, 4.0]


def test_factor_option_changes_the_mac_count_of_post_upsampling_networks(weights_dir):
    at = {f: json.loads(invoke("--factor", f, "--json").stdout) for f in (2, 4)}
    macs = {
        f: {row["name"]: row["sizes"]["small"]["macs_per_output_voxel"] for row in r["recipes"]}
        for f, r in at.items()
    }
    # FSRCNN works at low resolution: per output voxel it costs less at a larger factor.
    assert macs[4]["fsrcnn"] < macs[2]["fsrcnn"]
    # SRCNN runs every layer at the output resolution: the same at any factor.
    assert macs[4]["srcnn"] == macs[2]["srcnn"]


# ------------------------------------------------------------ describe_recipes


def test_describe_recipes_builds_what_training_builds():
    rows = {row["name"]: row for row in describe_recipes(sizes=("small",))}
    assert list(rows) == list(RECIPES)
    for name, row in rows.items():
        assert set(row["sizes"]) == {"small"}
        assert row["sizes"]["small"]["generator_kwargs"] == generator_kwargs(RECIPES[name], "small")
        assert row["gan_stage"] == RECIPES[name].has_gan_stage
    # SRCNN small (32, 16 channels; 9-5-5 kernels) by hand: every conv at output resolution.
    assert rows["srcnn"]["sizes"]["small"]["macs_per_output_voxel"] == 81 * 32 + 25 * 32 * 16 + (
        25 * 16
    )


@pytest.mark.parametrize("factor", [0.5, float("nan"), "4"])
def test_describe_recipes_refuses_a_bad_factor(factor):
    with pytest.raises(ConfigError, match="factor must be a number >= 1"):
        describe_recipes(factor=factor)


def test_describe_recipes_refuses_an_unknown_size():
    with pytest.raises(ConfigError, match=r"--size \(model.size\) must be one of small, full"):
        describe_recipes(sizes=("huge",))


def test_bad_factor_on_the_command_line_exits_2(weights_dir):
    result = invoke("--factor", 0.5)
    assert result.exit_code == 2
    assert "factor must be a number >= 1" in result.output
