"""Losses: pixel, adversarial (relativistic, least-squares, standard), feature, texture, perceptual."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mrisr.errors import CheckpointError, ConfigError
from mrisr.losses import (
    ADVERSARIAL_LOSSES,
    MonaiPerceptualLoss,
    PerceptualLoss,
    VGGFeatures,
    build_perceptual_loss,
    feature_matching_loss,
    gram_matrix,
    load_vgg_state,
    pixel_loss,
    texture_loss,
)

torch.set_num_threads(1)
SMALL_VGG = (4, 4, 8, 8, 8)  # VGG19's layout with few channels, so tests stay fast


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, 32, 24, generator=g), torch.rand(2, 1, 32, 24, generator=g)


def test_pixel_losses(images):
    a, b = images
    assert pixel_loss(a, b, "l1") == pytest.approx(float((a - b).abs().mean()))
    assert pixel_loss(a, b, "l2") == pytest.approx(float(((a - b) ** 2).mean()))
    with pytest.raises(ConfigError, match="unknown pixel loss"):
        pixel_loss(a, b, "l3")


@pytest.mark.parametrize("name", ["ragan", "lsragan"])
def test_relativistic_losses_mirror_each_other(name):
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(4, 1, generator=g), torch.randn(4, 1, generator=g)
    loss = ADVERSARIAL_LOSSES[name]
    # The generator's loss is the discriminator's with real and fake swapped.
    assert loss.generator(real, fake) == pytest.approx(float(loss.discriminator(fake, real)))
    assert loss.relativistic


def test_ragan_matches_esrgan_formula():
    real, fake = torch.tensor([[2.0], [0.0]]), torch.tensor([[-1.0], [1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected_d = 0.5 * (
        bce(real - fake.mean(), torch.ones_like(real))
        + bce(fake - real.mean(), torch.zeros_like(fake))
    )
    assert ADVERSARIAL_LOSSES["ragan"].discriminator(real, fake) == pytest.approx(float(expected_d))


@pytest.mark.parametrize("name", sorted(ADVERSARIAL_LOSSES))
@pytest.mark.parametrize("shape", [(4, 1), (4, 1, 5, 6)], ids=["classifier", "patch-map"])
def test_generator_loss_falls_as_fakes_look_real(name, shape):
    real = torch.zeros(shape)
    fake = torch.full(shape, -1.0, requires_grad=True)
    loss = ADVERSARIAL_LOSSES[name].generator(real, fake)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert (fake.grad < 0).all()  # raising the fake logits lowers the generator's loss
    d_loss = ADVERSARIAL_LOSSES[name].discriminator(torch.full(shape, 3.0), torch.full(shape, -3.0))
    assert d_loss < ADVERSARIAL_LOSSES[name].discriminator(
        torch.full(shape, -3.0), torch.full(shape, 3.0)
    )


def test_feature_and_texture_losses(images):
    a, b = images
    feats_a = [a.repeat(1, 3, 1, 1), a.mean(dim=(2, 3))]
    feats_b = [b.repeat(1, 3, 1, 1), b.mean(dim=(2, 3))]
    assert feature_matching_loss(feats_a, feats_a) == 0
    assert feature_matching_loss(feats_a, feats_b) > 0
    assert texture_loss(feats_a, feats_a) == 0
    assert texture_loss(feats_a, feats_b) > 0  # the (B, C) layer is skipped, the map is used
    gram = gram_matrix(feats_a[0])
    assert gram.shape == (2, 3, 3) and torch.allclose(gram, gram.transpose(1, 2))
    fake = b.clone().requires_grad_(True)
    feature_matching_loss([a], [fake]).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


class Payload:
    """An arbitrary object: unpickling it would run code, so it must be refused."""


def _save_vgg(path, layers=("conv5_4",), widths=SMALL_VGG, prefix=""):
    net = VGGFeatures(layers, widths)
    state = {prefix + k: v.contiguous() for k, v in net.state_dict().items()}
    if str(path).endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return net


@pytest.mark.parametrize(
    ("name", "prefix"),
    [("vgg.safetensors", ""), ("vgg.pth", ""), ("vgg_features.pt", "features-only")],
)
def test_perceptual_loss_loads_user_weights(tmp_path, images, name, prefix):
    path = tmp_path / name
    net = _save_vgg(path)
    if prefix == "features-only":  # torchvision's `vgg19().features.state_dict()` layout
        torch.save({k.removeprefix("features."): v for k, v in net.state_dict().items()}, path)
    loss = PerceptualLoss(path, {"conv5_4": 1.0, "relu2_2": 0.5}, widths=SMALL_VGG)
    for key, value in loss.vgg.state_dict().items():
        assert torch.equal(value, net.state_dict()[key])
    a, b = images
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    fake = a.clone().requires_grad_(True)
    value = loss(fake, b)
    value.backward()
    assert value > 0 and loss(b, b) == 0
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    assert all(torch.equal(v, before[k]) for k, v in loss.state_dict().items())  # pure forward
    assert len(loss.features(a)) == 2


def test_perceptual_loss_refuses_pickles_and_wrong_weights(tmp_path):
    pickled = tmp_path / "evil.pt"
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3), "x": Payload()}, pickled)
    with pytest.raises(CheckpointError, match="evil.pt: cannot be read as VGG weights"):
        load_vgg_state(pickled)
    small = tmp_path / "small.safetensors"
    _save_vgg(small, layers=("conv2_2",))
    with pytest.raises(CheckpointError, match="does not fit VGG19 up to layer conv5_4: missing"):
        PerceptualLoss(small, widths=SMALL_VGG)
    with pytest.raises(CheckpointError, match="wrong shape.*Fix: pass torchvision's vgg19"):
        PerceptualLoss(small, {"conv2_2": 1.0}, widths=(8, 8, 8, 8, 8))
    with pytest.raises(CheckpointError, match="does not exist"):
        build_perceptual_loss(tmp_path / "missing.safetensors")
    empty = tmp_path / "empty.safetensors"
    save_file({"classifier.0.weight": torch.zeros(2, 2)}, str(empty))
    with pytest.raises(CheckpointError, match="holds no VGG conv weights.*Fix: pass torchvision"):
        load_vgg_state(empty)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict.*Fix: pass"):
        load_vgg_state(listed)


def test_monai_perceptual_needs_a_cache(tmp_path):
    with pytest.raises(CheckpointError, match="not in the torch hub cache"):
        MonaiPerceptualLoss(cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown VGG19 layer"):
        VGGFeatures(("conv6_1",))
