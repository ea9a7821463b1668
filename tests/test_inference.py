"""GeneratorSliceModel and --model resolution: pipeline, batching, tiling, devices."""

from __future__ import annotations

import logging
import re
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mrisr.models as inference
from mrisr.checkpoint import model_sha256, read_description, save_model
from mrisr.device import resolve_device
from mrisr.errors import CheckpointError, ConfigError
from mrisr.geometry import resampled_affine
from mrisr.inference import GeneratorSliceModel
from mrisr.interpolation import CubicSliceModel
from mrisr.models import load_slice_model
from mrisr.upscale import upscale_volume
from mrisr.volume import Volume

torch.set_num_threads(1)
CUDA = torch.cuda.is_available()


class TinyGenerator(nn.Module):
    """Bilinear rows plus a learned residual; ``kernel_cols=1`` keeps columns independent."""

    def __init__(self, width: int = 4, kernel_cols: int = 3) -> None:
        super().__init__()
        self.config = {"width": width, "kernel_cols": kernel_cols}
        pad = (1, kernel_cols // 2)
        self.body = nn.Sequential(
            nn.Conv2d(1, width, (3, kernel_cols), padding=pad),
            nn.ReLU(),
            nn.Conv2d(width, 1, (3, kernel_cols), padding=pad),
        )

    def forward(self, x: torch.Tensor, out_rows: int) -> torch.Tensor:
        up = F.interpolate(x, size=(out_rows, x.shape[-1]), mode="bilinear", align_corners=False)
        return up + self.body(up)


@pytest.fixture
def generators(monkeypatch):
    """mrisr.networks.GENERATORS with ``tiny-test`` added (a stand-in table if absent)."""
    try:
        from mrisr.networks import GENERATORS as table
    except Exception:  # networks not importable yet: a stand-in module
        module = types.ModuleType("mrisr.networks")
        module.GENERATORS = {}
        monkeypatch.setitem(sys.modules, "mrisr.networks", module)
        table = module.GENERATORS
    monkeypatch.setitem(table, "tiny-test", TinyGenerator)
    return table


def write_model(path, factor_range=(2, 6), **config):
    torch.manual_seed(0)
    return save_model(
        path,
        TinyGenerator(**config),
        name="tiny-test",
        description={"factor_range": list(factor_range), "recipe": "test"},
    )


@pytest.fixture
def model_file(tmp_path, generators):
    return write_model(tmp_path / "tiny.safetensors")


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(inference, "WEIGHTS_DIR", folder)
    return folder


def slices(rng, shape=(5, 6, 40)) -> np.ndarray:
    return rng.random(shape, dtype=np.float32)


# -------------------------------------------------------------------- model


def test_generator_model_through_the_pipeline_gives_the_upsampled_grid(model_file, rng):
    affine = np.diag([0.9, 1.1, 4.0, 1.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    volume = Volume(rng.random((12, 10, 5), dtype=np.float32) * 500, affine)
    model = GeneratorSliceModel.from_file(model_file, device="cpu", batch_size=4)
    calls = []
    result = upscale_volume(volume, model, factor=4, progress=lambda d, t: calls.append((d, t)))
    assert result.shape == (12, 10, 20)
    assert result.data.dtype == np.float32 and np.isfinite(result.data).all()
    np.testing.assert_allclose(result.affine, resampled_affine(affine, 2, 5, 20))
    assert calls[-1] == (22, 22) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    described = result.meta["upscale"]["model"]
    assert described["weights_sha256"] == read_description(model_file)["weights_sha256"]
    assert described["file_sha256"] == model_sha256(model_file)
    assert described["name"] == "tiny" and described["device"] == "cpu"
    assert described["generator"]["name"] == "tiny-test"
    assert described["factor_range"] == [2.0, 6.0] and described["recipe"] == "test"


def test_factor_outside_the_trained_range_is_refused_by_the_pipeline(model_file, rng):
    volume = Volume(rng.random((8, 8, 4), dtype=np.float32), np.diag([1, 1, 9.0, 1]))
    with pytest.raises(ConfigError, match="outside the range 2-6"):
        upscale_volume(volume, GeneratorSliceModel.from_file(model_file, device="cpu"), factor=9)


def test_batched_equals_one_by_one_and_progress_counts_batches(model_file, rng):
    stack = slices(rng, (7, 6, 20))
    batched = GeneratorSliceModel.from_file(model_file, device="cpu", batch_size=3)
    single = GeneratorSliceModel.from_file(model_file, device="cpu", batch_size=1)
    calls = []
    out = batched.upscale_slices(stack, 17, lambda done, total: calls.append((done, total)))
    assert out.shape == (7, 17, 20) and out.dtype == np.float32
    np.testing.assert_allclose(out, single.upscale_slices(stack, 17), rtol=0, atol=1e-6)
    assert calls == [(3, 7), (6, 7), (7, 7)]
    assert batched.upscale_slices(stack[:0], 17).shape == (0, 17, 20)


def test_column_tiles_stitch_exactly_for_a_column_local_generator(tmp_path, generators, rng):
    path = write_model(tmp_path / "local.safetensors", kernel_cols=1)
    stack = slices(rng, (3, 11, 150))
    untiled = GeneratorSliceModel.from_file(path, device="cpu", tile_cols=None)
    tiled = GeneratorSliceModel.from_file(path, device="cpu", tile_cols=32, batch_size=2)
    widths = []
    forward = tiled.generator.forward
    tiled.generator.forward = lambda x, rows: widths.append(x.shape[-1]) or forward(x, rows)
    # 11 -> 30 rows: the factor MONAI's 2D zoom bookkeeping gets wrong by a row.
    reference = untiled.upscale_slices(stack, 30)
    np.testing.assert_allclose(tiled.upscale_slices(stack, 30), reference, rtol=0, atol=1e-5)
    assert set(widths) == {32} and len(widths) == 12  # 6 tiles a slice; calls of <= 2 tiles


def test_tiled_is_close_to_untiled_for_a_3x3_generator(model_file, rng):
    smooth = np.cumsum(slices(rng, (2, 6, 200)), axis=2) / 100  # smooth along columns
    untiled = GeneratorSliceModel.from_file(model_file, device="cpu", tile_cols=None)
    tiled = GeneratorSliceModel.from_file(model_file, device="cpu", tile_cols=48)
    reference = untiled.upscale_slices(smooth, 23)
    difference = np.abs(tiled.upscale_slices(smooth, 23) - reference)
    assert difference.max() < 0.02 * np.ptp(reference)
    assert difference.mean() < 1e-3 * np.ptp(reference)


def test_bad_shapes_and_options_are_refused(model_file, rng):
    model = GeneratorSliceModel.from_file(model_file, device="cpu")
    with pytest.raises(ValueError, match="slice stack has shape.*Fix: pass the slices"):
        model.upscale_slices(np.zeros((4, 5), np.float32), 10)
    with pytest.raises(ValueError, match="out_rows.*Fix: pass out_rows"):
        model.upscale_slices(slices(rng), 3)
    for options, option in (
        ({"batch_size": 0}, "--batch-size"),
        ({"threads": 0}, "--threads"),
        ({"tile_cols": 2}, "tile_cols=256"),
        ({"tile_overlap": 1.0}, "0.25 (the default)"),
    ):
        with pytest.raises(ConfigError, match=f"Fix: .*{re.escape(option)}"):
            GeneratorSliceModel.from_file(model_file, device="cpu", **options)


def test_out_of_memory_on_one_slice_names_the_fix(model_file, rng):
    model = GeneratorSliceModel.from_file(model_file, device="cpu")

    def exhausted(x, out_rows):
        raise torch.OutOfMemoryError("simulated")

    model.generator.forward = exhausted
    with pytest.raises(ConfigError, match="ran out of cpu memory.*--device cpu"):
        model.upscale_slices(slices(rng), 12)


def test_threads_sets_torch_threads(model_file):
    try:
        load_slice_model(model_file, device="cpu", threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


# ------------------------------------------------------------------ devices


def test_resolve_device_cpu_and_unknown():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(CUDA, reason="checks the CPU fallback")
def test_auto_falls_back_to_cpu_with_a_message_and_cuda_is_refused(caplog):
    with caplog.at_level(logging.INFO, logger="mrisr.device"):
        assert resolve_device("auto") == torch.device("cpu")
    assert "running on CPU" in caplog.text
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match="no CUDA GPU.*--device cpu"):
            resolve_device(spec)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_bf16_output_is_close_to_cpu_float32(model_file, rng):
    stack = slices(rng, (6, 8, 300))
    on_cpu = GeneratorSliceModel.from_file(
        model_file, device="cpu", precision="float32"
    ).upscale_slices(stack, 31)
    model = GeneratorSliceModel.from_file(model_file, device="cuda")
    assert model.describe()["precision"] == "bfloat16 autocast"
    out = model.upscale_slices(stack, 31)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, on_cpu, rtol=0, atol=0.05)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


# -------------------------------------------------------------- resolution


def test_cubic_paths_and_run_folders_resolve(model_file, tmp_path, weights_dir, generators):
    assert isinstance(load_slice_model("cubic"), CubicSliceModel)
    assert isinstance(load_slice_model("Cubic"), CubicSliceModel)
    by_file = load_slice_model(model_file, device="cpu")
    assert isinstance(by_file, GeneratorSliceModel) and by_file.name == "tiny"
    run = tmp_path / "t2_x4"
    run.mkdir()
    write_model(run / "model.safetensors")
    by_folder = load_slice_model(str(run), device="cpu", batch_size=2)
    assert by_folder.name == "t2_x4" and by_folder.batch_size == 2
    with pytest.raises(CheckpointError, match="does not exist"):
        load_slice_model(str(tmp_path / "gone" / "model.safetensors"), device="cpu")


def test_no_bundled_model_gives_a_clear_error(weights_dir):
    with pytest.raises(ConfigError, match="no bundled model covers factor 4") as caught:
        load_slice_model(None, factor=4.0, device="cpu")
    assert "--model cubic" in str(caught.value) and "ships no bundled models" in str(caught.value)


def test_bundled_models_are_picked_by_factor_range_and_by_name(weights_dir, generators):
    write_model(weights_dir / "narrow.safetensors", factor_range=(2, 4))
    write_model(weights_dir / "wide.safetensors", factor_range=(2, 8))
    assert load_slice_model(None, factor=3, device="cpu").name == "narrow"
    assert load_slice_model(None, factor=4.1, device="cpu").name == "narrow"  # 5% tolerance
    assert load_slice_model(None, factor=6, device="cpu").name == "wide"
    assert load_slice_model(None, device="cpu").name == "wide"
    assert load_slice_model("narrow", factor=7, device="cpu").name == "narrow"
    with pytest.raises(
        ConfigError, match=r"covers factor 12.*narrow \(2-4x\), wide \(2-8x\).*--factor 8"
    ):
        load_slice_model(None, factor=12, device="cpu")


def test_gan_stage_models_are_used_only_by_name(weights_dir, generators):
    write_model(weights_dir / "fast.safetensors", factor_range=(2, 6))
    torch.manual_seed(0)
    save_model(
        weights_dir / "a-gan.safetensors",  # sorts first and is narrower: still not the default
        TinyGenerator(),
        name="tiny-test",
        description={"factor_range": [3, 5], "recipe": "test", "stage": "gan"},
    )
    assert load_slice_model(None, factor=4, device="cpu").name == "fast"
    assert load_slice_model("a-gan", factor=4, device="cpu").name == "a-gan"


def test_unknown_model_name_lists_the_choices(weights_dir, generators):
    write_model(weights_dir / "fast.safetensors")
    with pytest.raises(ConfigError, match="unknown model 'fsat'.*one of cubic, fast"):
        load_slice_model("fsat", device="cpu")


def test_real_generator_tiled_and_untiled_agree_through_load_slice_model(tmp_path, rng):
    from mrisr.networks import build_generator

    torch.manual_seed(0)
    generator = build_generator("rrdbnet", size="small")
    for parameter in generator.parameters():  # a trained-looking, non-zero residual
        parameter.data.normal_(0, 0.05)
    path = save_model(
        tmp_path / "rrdb.safetensors",
        generator,
        name="rrdbnet",
        description={"factor_range": [2, 6]},
    )
    stack = np.cumsum(slices(rng, (2, 7, 130)), axis=2) / 65
    untiled = load_slice_model(path, device="cpu", tile_cols=None).upscale_slices(stack, 25)
    tiled = load_slice_model(path, device="cpu", tile_cols=64).upscale_slices(stack, 25)
    assert tiled.shape == (2, 25, 130)
    assert np.abs(tiled - untiled).max() < 0.02 * np.ptp(untiled)


def test_a_damaged_bundled_file_does_not_hide_the_others(weights_dir, generators, caplog):
    write_model(weights_dir / "fast.safetensors", factor_range=(2, 6))
    (weights_dir / "broken.safetensors").write_bytes(b"not a model")
    assert load_slice_model(None, factor=4, device="cpu").name == "fast"
    assert "skipping bundled model broken" in caplog.text


def test_the_suggested_factor_is_the_nearest_covered_one(weights_dir, generators):
    write_model(weights_dir / "fast.safetensors", factor_range=(2, 6))
    with pytest.raises(ConfigError, match="--factor 2\\b"):
        load_slice_model(None, factor=1.2, device="cpu")
    with pytest.raises(ConfigError, match="--factor 6\\b"):
        load_slice_model(None, factor=9, device="cpu")


def test_only_gan_models_bundled_says_so(weights_dir, generators):
    torch.manual_seed(0)
    save_model(
        weights_dir / "sharp.safetensors",
        TinyGenerator(),
        name="tiny-test",
        description={"factor_range": [2, 6], "recipe": "test", "stage": "gan"},
    )
    with pytest.raises(ConfigError, match="GAN-stage models are used only by name"):
        load_slice_model(None, factor=4, device="cpu")


# -------------------------------------------------------------------- precision


def test_precision_values_are_checked_and_auto_follows_the_cpu(monkeypatch):
    from mrisr import device as devices

    assert devices.check_precision_text(" BFloat16 ") == "bfloat16"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'.*auto, float32 or bfloat16"):
        devices.check_precision_text("fp16")
    with pytest.raises(ConfigError, match="unknown precision"):
        inference.ModelRequest(None, precision="half")  # refused before any scan is read
    cpu = torch.device("cpu")
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda native=native: native)
        assert devices.resolve_precision("auto", cpu) == expected
        # An explicit choice is taken as it is, whatever the CPU.
        assert devices.resolve_precision("float32", cpu) == "float32"
        assert devices.resolve_precision("bfloat16", cpu) == "bfloat16"
    for supported, expected in ((True, "bfloat16"), (False, "float32")):  # Ampere and later
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert devices.resolve_precision("auto", torch.device("cuda")) == expected
    # Checked before any weights are read, and even for cubic, which ignores it.
    with pytest.raises(ConfigError, match="unknown precision"):
        load_slice_model("cubic", precision="half")


def test_bfloat16_on_cpu_is_close_to_float32_and_recorded(model_file, rng):
    stack = slices(rng, (6, 8, 40))
    exact = GeneratorSliceModel.from_file(model_file, device="cpu", precision="float32")
    low = GeneratorSliceModel.from_file(model_file, device="cpu", precision="bfloat16")
    assert exact.describe()["precision"] == "float32"
    assert low.describe()["precision"] == "bfloat16 autocast"
    reference, result = exact.upscale_slices(stack, 31), low.upscale_slices(stack, 31)
    assert result.dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa: close to float32, but not equal to it.
    assert 0 < np.abs(result - reference).max() < 0.05
    # The same slices give the same result, batch after batch.
    np.testing.assert_array_equal(low.upscale_slices(stack, 31), result)
