"""Training config: YAML round trip, overrides, and validation messages."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from mrisr.config import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    from_dict,
    to_dict,
    with_overrides,
)
from mrisr.config_file import load_config, save_config
from mrisr.errors import ConfigError
from mrisr.training.state import config_differences


def custom_config() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(
            volumes="/data",
            factor=3.0,
            factor_range=(2.0, 6.0),
            axes=(0, 2),
            profile="gaussian",
            patch_size=48,
            batch_size=4,
            val_volume="ixi002_t2",
        ),
        model=ModelConfig(
            recipe="srgan",
            size="full",
            generator_kwargs={"num_block": 2},
            discriminator="patch",
            discriminator_kwargs={"num_feat": 8},
        ),
        loss=LossConfig(pixel=0.5, pixel_kind="l2", perceptual_weights="vgg.safetensors"),
        optim=OptimConfig(lr_pretrain=1e-3, betas=(0.5, 0.9), milestones=(0.3,)),
        schedule=ScheduleConfig(steps=10, gan_steps=5, val_every=3, log_every=2, save_every=4),
        out="runs/x",
        ema_decay=0.99,
        seed=7,
        device="cuda:1",
        amp=False,
        compile=True,
        threads=2,
        tensorboard=False,
    )


@pytest.mark.parametrize("config", [TrainConfig(), custom_config()], ids=["default", "custom"])
def test_yaml_round_trip(config, tmp_path):
    path = save_config(config, tmp_path / "config.yaml")
    assert load_config(path) == config
    assert from_dict(TrainConfig, to_dict(config)) == config


def test_missing_keys_take_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  factor: 3\nseed: 5\n")
    config = load_config(path)
    assert config.data.factor == 3.0 and isinstance(config.data.factor, float)
    assert config.seed == 5 and config.model == ModelConfig()
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == TrainConfig()


def test_configs_are_frozen_all_the_way_down():
    config = custom_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only; build a new config instead, e.g. with"):
        config.model.generator_kwargs["num_block"] = 5  # type: ignore[index]
    assert pickle.loads(pickle.dumps(config)) == config


def test_overrides_make_a_new_config():
    config = TrainConfig()
    changed = with_overrides(config, {"data.factor_range": (2, 6), "seed": 3, "data.factor": None})
    assert changed.data.factor_range == (2.0, 6.0) and changed.seed == 3
    assert config == TrainConfig()  # untouched
    assert config_differences(config, changed) == ["data.factor_range", "seed"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"data": {"factr": 3}},
            "unknown setting data.factr; expected settings of data: allow_anisotropic, axes,",
        ),
        ({"lr": 1}, "unknown setting lr; expected top-level settings: amp, compile, data,"),
        ({"data": {"factor": 1.0}}, "--factor (data.factor) must be in (1, 32]"),
        ({"data": {"factor_range": [6, 2]}}, "low <= high"),
        (
            {"data": {"factor_range": [2, 3]}},
            "--factor (data.factor) 4 (the validation factor) is outside",
        ),
        ({"data": {"factor_range": [2, 3, 4]}}, "must be a list of 2 values"),
        ({"data": {"axes": [0, 0]}}, "--axes (data.axes) must be distinct thick axes"),
        ({"data": {"profile": "box"}}, "--profile (data.profile) must be one of mean, gaussian"),
        ({"data": {"patch_size": 10, "factor": 8}}, "fewer than 2 low-resolution rows"),
        ({"data": {"batch_size": 0}}, "--batch-size (data.batch_size) must be in [1,"),
        ({"data": {"min_foreground": 1.5}}, "data.min_foreground must be in [0, 1]"),
        ({"model": {"size": "huge"}}, "--size (model.size) must be one of small, full"),
        ({"loss": {"adversarial": -1}}, "loss.adversarial must be in [0,"),
        ({"loss": {"pixel_kind": "l3"}}, "loss.pixel_kind must be one of l1, l2"),
        ({"optim": {"betas": [0.9, 1.0]}}, "optim.betas[1] must be in [0, 1)"),
        ({"optim": {"milestones": [0.7, 0.2]}}, "optim.milestones must increase"),
        ({"optim": {"lr_g": 0}}, "--lr-g (optim.lr_g) must be in (0, 1]"),
        ({"schedule": {"steps": 0}}, "--steps (schedule.steps) must be in [1,"),
        ({"schedule": {"steps": "many"}}, "schedule.steps must be an integer, got 'many'"),
        ({"schedule": {"steps": 2.5}}, "schedule.steps must be an integer"),
        ({"ema_decay": 1.0}, "--ema-decay (ema_decay) must be in [0, 1)"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"amp": "yes"}, "amp must be true or false"),
        ({"data": 3}, "data must be a mapping"),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(values, message):
    with pytest.raises(ConfigError) as error:
        from_dict(TrainConfig, values)
    assert message in str(error.value) and "Fix:" in str(error.value), str(error.value)


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: DataConfig(factor_range=(2.0, 3.0, 4.0)), "Fix: set data.factor_range to two"),
        (lambda: TrainConfig(device="gpu"), "Fix: pass --device auto"),
        (lambda: with_overrides(TrainConfig(), {"dta.factor": 3}), "Fix: name a setting as"),
    ],
)
def test_settings_refused_through_the_python_api_name_the_fix(build, words):
    with pytest.raises(ConfigError, match=words):
        build()


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: is not valid YAML"):
        load_config(path)
    path.write_text("schedule:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown setting schedule.stepz"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        ("schedule:\n  steps: 100\n  gan_steps: 0\n  steps: 5\n", "schedule.steps", 4, 2),
        ("model:\n  size: small\nseed: 1\nmodel:\n  size: full\n", "model", 4, 1),
        ("seed: 1\nseed: 2\n", "seed", 2, 1),
        (
            "model:\n  generator_kwargs: {num_feat: 8, num_feat: 16}\n",
            "model.generator_kwargs.num_feat",
            2,
            2,
        ),
    ],
)
def test_a_key_given_twice_is_refused_with_the_file_the_line_and_the_key(
    tmp_path, text, key, line, first
):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(
        f"{path}: sets {key} twice (line {line}; first on line {first})"
    )
    assert caught.value.fix and key.rsplit(".", 1)[-1] in caught.value.fix
    # A YAML merge key ("<<") may be overridden by the section's own setting.
    merged = tmp_path / "merged.yaml"
    merged.write_text("x: &m {steps: 3, gan_steps: 0}\nschedule:\n  <<: *m\n  steps: 9\n")
    with pytest.raises(ConfigError, match="unknown setting x"):  # not "twice"
        load_config(merged)


def test_construction_in_python_is_validated_too():
    with pytest.raises(ConfigError, match="data.patch_size"):
        DataConfig(patch_size=4)
    assert DataConfig(factor=3, factor_range=(2, 4)).factor_bounds == (2.0, 4.0)
    assert DataConfig(factor=3).factor_bounds == (3.0, 3.0)


@pytest.mark.parametrize(
    "text",
    [
        "seed: 1.5\n",
        "seed: -1\n",
        "data:\n  patch_size: big\n",
        "data:\n  allow_anisotropic: maybe\n",
        "optim:\n  betas: [0.9]\n",
        "optim:\n  milestones: [0.75, 0.5]\n",
        "schedule:\n  steps: 1.5\n",
    ],
)
def test_every_bad_setting_says_how_to_fix_it(tmp_path, text):
    from mrisr.config_file import load_config
    from mrisr.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and "Fix:" in str(caught.value), str(caught.value)
