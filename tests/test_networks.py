"""Generators and discriminators: shapes at any factor, gradients, config round
trips, the cubic residual, MAC counting and name lookup errors.

Everything runs on tiny models and inputs so that the file takes seconds on
one CPU thread; ``test_cuda_matches_cpu`` runs where a GPU is present.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrisr.errors import ConfigError, InputError
from mrisr.networks import (
    DISCRIMINATORS,
    GENERATOR_SIZES,
    GENERATORS,
    build_discriminator,
    build_generator,
    count_parameters,
    intermediate_rows,
    macs_per_output_voxel,
    zero_last_layer,
)
from mrisr.networks import (
    bicubic_rows as cubic_rows,
)
from mrisr.networks.common import pixel_shuffle, pixel_unshuffle_cols, resample_rows

torch.set_num_threads(1)

#: Tiny settings per case; every generator name appears at least once.
TINY_GENERATORS: dict[str, tuple[str, dict]] = {
    "rrdbnet": ("rrdbnet", dict(num_feat=8, num_block=1, num_grow_ch=4)),
    "rrdbnet-unshuffle": (
        "rrdbnet",
        dict(num_feat=8, num_block=1, num_grow_ch=4, num_hr_feat=4, col_unshuffle=2),
    ),
    "srcnn": ("srcnn", dict(num_feat=8, num_feat2=4)),
    "fsrcnn": ("fsrcnn", dict(d=8, s=4, m=1)),
    "espcn": ("espcn", dict(num_feat=8, num_feat2=4)),
    "vdsr": ("vdsr", dict(num_feat=8, num_layers=3)),
    "drcn": ("drcn", dict(num_feat=8, num_recursions=2)),
    "srresnet": ("srresnet", dict(num_feat=8, num_block=1)),
    "srlrgan": ("srlrgan", dict(num_feat=8, num_block=1, num_hr_feat=4)),
    "rrgan": ("rrgan", dict(num_feat=8, num_block=1, recursions=2)),
    "attn-srgan": ("attn-srgan", dict(num_feat=8, num_block=1, window=4, heads=2)),
}
CASES = sorted(TINY_GENERATORS)

TINY_DISCRIMINATORS: dict[str, dict] = {
    "vgg": dict(num_feat=4),
    "unet": dict(num_feat=4),
    "patch": dict(num_feat=4),
    "sn8": dict(num_feat=4, hidden=8),
    "srgan": dict(num_feat=4, hidden=8),
}
#: Discriminators whose logits are per pixel / per patch rather than one per sample.
DENSE_DISCRIMINATORS = {"unet", "patch"}

BATCH, ROWS, COLS = 2, 16, 12


def make(case: str) -> torch.nn.Module:
    torch.manual_seed(0)
    name, kwargs = TINY_GENERATORS[case]
    return build_generator(name, **kwargs)


def slices(rows: int = ROWS, cols: int = COLS) -> torch.Tensor:
    return torch.rand(BATCH, 1, rows, cols, generator=torch.Generator().manual_seed(1))


def test_every_generator_and_discriminator_is_tested() -> None:
    assert {name for name, _ in TINY_GENERATORS.values()} == set(GENERATORS)
    assert set(TINY_DISCRIMINATORS) == set(DISCRIMINATORS)


# --- generators ---------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1.0, 2.0, 3.3, 4.0, 6.0])
@pytest.mark.parametrize("case", CASES)
def test_generator_output_shape_any_factor(case: str, factor: float) -> None:
    model = make(case).eval()
    out_rows = round(ROWS * factor)
    with torch.no_grad():
        y = model(slices(), out_rows)
    assert y.shape == (BATCH, 1, out_rows, COLS)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("case", CASES)
def test_generator_odd_width(case: str) -> None:
    model = make(case).eval()
    with torch.no_grad():
        y = model(slices(cols=13), 37)
    assert y.shape == (BATCH, 1, 37, 13)


@pytest.mark.parametrize("case", CASES)
def test_generator_gradients_flow(case: str) -> None:
    model = make(case).train()
    x = slices().requires_grad_()
    if case == "rrgan":
        final, intermediate = model.forward_with_intermediate(x, 53)
        loss = final.square().mean() + intermediate.square().mean()
    elif case == "drcn":
        loss = sum(y.square().mean() for y in model.forward_recursions(x, 53))
        loss = loss + model(x, 53).square().mean()
    else:
        loss = model(x, 53).square().mean()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), pname
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("case", CASES)
def test_generator_config_round_trip(case: str) -> None:
    model = make(case).eval()
    name = TINY_GENERATORS[case][0]
    config = json.loads(json.dumps(model.config))
    rebuilt = GENERATORS[name](**config).eval()
    assert rebuilt.config == model.config
    original_shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == original_shapes
    rebuilt.load_state_dict(model.state_dict())
    x = slices()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, 40), model(x, 40))


@pytest.mark.parametrize("case", CASES)
def test_zero_last_layer_gives_cubic_interpolation(case: str) -> None:
    model = zero_last_layer(make(case)).eval()
    x = slices()
    with torch.no_grad():
        torch.testing.assert_close(model(x, 53), cubic_rows(x, 53), atol=1e-6, rtol=0)
        if case == "rrgan":
            _, intermediate = model.forward_with_intermediate(x, 64)
            torch.testing.assert_close(intermediate, cubic_rows(x, 32), atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_generator_channels_last_matches(case: str) -> None:
    model = make(case).eval()
    x = slices()
    with torch.no_grad():
        expected = model(x, 40)
        got = model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last), 40
        )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_generator_runs_under_bfloat16_autocast(case: str) -> None:
    # Inference runs under autocast on GPUs; every op must have a low-precision path.
    model = make(case).eval()
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        y = model(slices(cols=13), 53)
    assert y.shape == (BATCH, 1, 53, 13)
    assert torch.isfinite(y).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES)
def test_cuda_matches_cpu(case: str) -> None:
    model = make(case).eval()
    x = slices()
    with torch.no_grad():
        expected = model(x, 40)
        got = model.cuda()(x.cuda(), 40).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)


def test_generator_rejects_bad_input() -> None:
    model = make("espcn")
    assert model(slices(), np.int64(40)).shape[-2] == 40  # any integer type is fine
    with pytest.raises(InputError, match="out_rows"):
        model(slices(), ROWS - 1)
    with pytest.raises(InputError, match="out_rows"):
        model(slices(), 40.0)
    with pytest.raises(InputError, match=r"\(batch, 1, rows, cols\)"):
        model(torch.rand(BATCH, 2, ROWS, COLS), 40)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("rrdbnet", dict(num_feat=0)),
        ("rrdbnet", dict(upsample=2.5)),
        ("srlrgan", dict(num_feat=6, groups=2)),
        ("attn-srgan", dict(num_feat=10, heads=4)),
    ],
)
def test_invalid_generator_settings_raise_config_error(name: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=name):
        build_generator(name, **kwargs)


def test_rrgan_intermediate_output() -> None:
    model = make("rrgan").eval()
    x = slices()
    assert intermediate_rows(16, 64) == 32
    assert intermediate_rows(16, 16) == 16
    assert 16 <= intermediate_rows(16, 24) <= 24
    with torch.no_grad():
        final, intermediate = model.forward_with_intermediate(x, 53)
        torch.testing.assert_close(final, model(x, 53))
    assert intermediate.shape == (BATCH, 1, intermediate_rows(ROWS, 53), COLS)


def test_drcn_output_is_weighted_mean_of_recursions() -> None:
    model = make("drcn").eval()
    x = slices()
    with torch.no_grad():
        predictions = model.forward_recursions(x, 40)
        weights = torch.softmax(model.ensemble_logits, dim=0)
        expected = sum(w * p for w, p in zip(weights, predictions, strict=True))
        torch.testing.assert_close(model(x, 40), expected)
    assert len(predictions) == 2


# --- shared helpers -----------------------------------------------------------------------


def test_cubic_rows_is_field_of_view_aligned_bicubic() -> None:
    x = slices()
    expected = F.interpolate(x, size=(53, COLS), mode="bicubic", align_corners=False)
    torch.testing.assert_close(cubic_rows(x, 53), expected)
    # Rows of a column-constant image stay constant; columns are never resampled.
    ramp = torch.arange(COLS, dtype=torch.float32).expand(1, 1, ROWS, COLS)
    torch.testing.assert_close(cubic_rows(ramp, 40), ramp[:, :, :1].expand(1, 1, 40, COLS))


def test_pixel_shuffle_rows_only_and_column_round_trip() -> None:
    x = torch.rand(2, 12, 5, 7)
    torch.testing.assert_close(pixel_shuffle(x, 2, 2), F.pixel_shuffle(x, 2))
    rows = pixel_shuffle(x, 4)
    assert rows.shape == (2, 3, 20, 7)
    # Channel c * 4 + k of input row i becomes row i * 4 + k of channel c.
    torch.testing.assert_close(rows[:, 1, 2 * 4 + 3], x[:, 1 * 4 + 3, 2])
    both = pixel_shuffle(pixel_unshuffle_cols(torch.rand(2, 3, 5, 8), 2), 1, 2)
    assert both.shape == (2, 3, 5, 8)
    y = torch.rand(2, 3, 5, 8)
    torch.testing.assert_close(pixel_shuffle(pixel_unshuffle_cols(y, 2), 1, 2), y)


def test_resample_rows_keeps_constants_and_columns() -> None:
    x = torch.full((1, 2, 40, 9), 3.0)
    for rows in (17, 40, 64):
        torch.testing.assert_close(resample_rows(x, rows), torch.full((1, 2, rows, 9), 3.0))


# --- size and compute ---------------------------------------------------------------------


def test_macs_match_hand_count_for_srcnn() -> None:
    model = build_generator("srcnn", num_feat=8, num_feat2=4)
    # Pre-upsampling: every conv runs once per output voxel.
    expected = 81 * 1 * 8 + 25 * 8 * 4 + 25 * 4 * 1
    assert macs_per_output_voxel(model, in_rows=8, cols=8, factor=2.0) == expected
    assert count_parameters(model) == (81 * 8 + 8) + (25 * 8 * 4 + 4) + (25 * 4 + 1)


def test_macs_count_attention_matmuls(monkeypatch: pytest.MonkeyPatch) -> None:
    import mrisr.networks.complexity as complexity

    model = make("attn-srgan")  # 8 channels, 4x4 windows
    with_attention = macs_per_output_voxel(model, in_rows=8, cols=8, factor=2.0)
    counters = tuple(c for c in complexity._COUNTERS if c[0] is not complexity.WindowAttention)
    monkeypatch.setattr(complexity, "_COUNTERS", counters)
    without = macs_per_output_voxel(model, in_rows=8, cols=8, factor=2.0)
    # 8x8 low-resolution features: 4 windows of 16 tokens, q k^T and attn v each
    # 16 * 16 * 8 MACs per window, spread over 16 * 8 output voxels.
    assert with_attention - without == pytest.approx(4 * 2 * 16 * 16 * 8 / (16 * 8))


def test_small_rrdbnet_is_cheap_and_still_rrdb() -> None:
    model = build_generator("rrdbnet", size="small")
    assert model.config["num_block"] >= 1
    assert macs_per_output_voxel(model, in_rows=16, cols=16, factor=4.0) <= 8000
    assert set(GENERATOR_SIZES["rrdbnet"]) == {"full", "small"}


def test_named_size_can_be_overridden() -> None:
    model = build_generator("rrdbnet", size="small", num_feat=8)
    assert model.config["num_feat"] == 8
    assert model.config["col_unshuffle"] == 2


# --- discriminators -----------------------------------------------------------------------


@pytest.mark.parametrize("patch", [(32, 32), (40, 48)])
@pytest.mark.parametrize("name", sorted(TINY_DISCRIMINATORS))
def test_discriminator_any_patch_size(name: str, patch: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_discriminator(name, **TINY_DISCRIMINATORS[name]).train()
    x = torch.rand(BATCH, 1, *patch, requires_grad=True)
    logits = model(x)
    if name in DENSE_DISCRIMINATORS:
        assert logits.dim() == 4 and logits.shape[:2] == (BATCH, 1)
    else:
        assert logits.shape == (BATCH, 1)
    feats = model.features(x)
    assert feats and all(f.shape[0] == BATCH for f in feats)
    (logits.mean() + sum(f.mean() for f in feats)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_unet_discriminator_logits_are_per_pixel() -> None:
    model = build_discriminator("unet", num_feat=4)
    assert model(torch.rand(BATCH, 1, 37, 45)).shape == (BATCH, 1, 37, 45)


@pytest.mark.parametrize("name", sorted(TINY_DISCRIMINATORS))
def test_discriminator_config_round_trip(name: str) -> None:
    model = build_discriminator(name, **TINY_DISCRIMINATORS[name])
    rebuilt = DISCRIMINATORS[name](**json.loads(json.dumps(model.config)))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_discriminator_rejects_small_patches() -> None:
    with pytest.raises(InputError, match="32"):
        build_discriminator("vgg", num_feat=4)(torch.rand(BATCH, 1, 16, 64))


# --- name lookup --------------------------------------------------------------------------


def test_unknown_generator_lists_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_generator("esrgan-xl")
    assert "esrgan-xl" in str(info.value)
    for name in GENERATORS:
        assert name in str(info.value)


def test_unknown_discriminator_lists_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_discriminator("stylegan")
    for name in DISCRIMINATORS:
        assert name in str(info.value)


def test_unknown_setting_or_size_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="num_feat"):
        build_generator("vdsr", num_filters=3)
    with pytest.raises(ConfigError, match="tiny"):
        build_generator("vdsr", size="tiny")
    with pytest.raises(ConfigError, match="hidden"):
        build_discriminator("unet", hidden=3)


@pytest.mark.parametrize("table", ["generators", "discriminators"])
def test_every_network_states_each_size_once_and_rebuilds_from_its_config(table: str) -> None:
    from mrisr.config import SIZES

    networks = GENERATORS if table == "generators" else DISCRIMINATORS
    for name, cls in networks.items():
        assert tuple(cls.sizes) == SIZES, name
        assert dict(cls.sizes["full"]) == {}, name  # the constructor's defaults: the paper's
        build = build_generator if table == "generators" else build_discriminator
        small = build(name, size="small")
        assert type(small)(**small.config).config == small.config
        assert count_parameters(small) < count_parameters(build(name, size="full")), name
