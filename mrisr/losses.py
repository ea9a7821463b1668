"""Pixel, perceptual, texture, feature-matching and adversarial losses.

Every loss is a pure function of its inputs (or a module whose forward
changes no state) returning a scalar tensor. Images are (B, 1, H, W) slices
with normalised intensities (background about 0, bright tissue about 1).

Adversarial losses take discriminator logits of any shape: (B, 1) for the
classifiers, (B, 1, h, w) for patch and U-Net discriminators. The
relativistic "average" is taken over the batch, separately at each output
location.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrisr.errors import CheckpointError, ConfigError
from mrisr.io.files import require_existing

log = logging.getLogger(__name__)

__all__ = [
    "ADVERSARIAL_LOSSES",
    "AdversarialLoss",
    "MonaiPerceptualLoss",
    "PerceptualLoss",
    "VGGFeatures",
    "build_perceptual_loss",
    "feature_matching_loss",
    "gram_matrix",
    "load_vgg_state",
    "pixel_loss",
    "texture_loss",
]


# --------------------------------------------------------------------- pixel


def pixel_loss(pred: Tensor, target: Tensor, kind: str = "l1") -> Tensor:
    """Mean absolute (``l1``) or squared (``l2``) error.

    Args:
        pred: (B, C, H, W) prediction.
        target: same shape.
        kind: ``"l1"`` or ``"l2"``.

    Returns:
        Scalar tensor.

    Raises:
        ConfigError: an unknown ``kind``.
    """
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ConfigError(f"unknown pixel loss {kind!r}", expected="l1 or l2")


# --------------------------------------------------------------- adversarial


def _bce(logits: Tensor, real: bool) -> Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _batch_mean(logits: Tensor) -> Tensor:
    return logits.mean(dim=0, keepdim=True)


def ragan_generator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """ESRGAN's relativistic average GAN loss for the generator (BCE with logits).

    ``(BCE(D(real) - E[D(fake)], 0) + BCE(D(fake) - E[D(real)], 1)) / 2``; the
    real logits should be detached (the generator cannot change them).
    """
    return 0.5 * (
        _bce(real_logits - _batch_mean(fake_logits), False)
        + _bce(fake_logits - _batch_mean(real_logits), True)
    )


def ragan_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """ESRGAN's relativistic average GAN loss for the discriminator.

    ``(BCE(D(real) - E[D(fake)], 1) + BCE(D(fake) - E[D(real)], 0)) / 2``, with
    the fake logits computed from detached generator outputs.
    """
    return 0.5 * (
        _bce(real_logits - _batch_mean(fake_logits), True)
        + _bce(fake_logits - _batch_mean(real_logits), False)
    )


def lsragan_generator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Least-squares relativistic average GAN loss for the generator (RaLSGAN).

    ``(E[(D(real) - E[D(fake)] + 1)^2] + E[(D(fake) - E[D(real)] - 1)^2]) / 2``.
    """
    return 0.5 * (
        ((real_logits - _batch_mean(fake_logits) + 1) ** 2).mean()
        + ((fake_logits - _batch_mean(real_logits) - 1) ** 2).mean()
    )


def lsragan_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Least-squares relativistic average GAN loss for the discriminator (RaLSGAN).

    ``(E[(D(real) - E[D(fake)] - 1)^2] + E[(D(fake) - E[D(real)] + 1)^2]) / 2``.
    """
    return 0.5 * (
        ((real_logits - _batch_mean(fake_logits) - 1) ** 2).mean()
        + ((fake_logits - _batch_mean(real_logits) + 1) ** 2).mean()
    )


def gan_generator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Standard (non-saturating) GAN loss for the generator: ``BCE(D(fake), 1)``.

    ``real_logits`` is unused; it is accepted so that every adversarial loss
    has the same signature.
    """
    return _bce(fake_logits, True)


def gan_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Standard GAN loss for the discriminator: ``(BCE(D(real), 1) + BCE(D(fake), 0)) / 2``."""
    return 0.5 * (_bce(real_logits, True) + _bce(fake_logits, False))


@dataclass(frozen=True)
class AdversarialLoss:
    """A generator loss and its discriminator loss, both ``(real_logits, fake_logits) -> scalar``.

    Attributes:
        name: key in :data:`ADVERSARIAL_LOSSES`.
        generator: the generator's loss (real logits detached).
        discriminator: the discriminator's loss (fake logits from detached images).
        relativistic: whether the generator loss needs the real logits.
    """

    name: str
    generator: Callable[[Tensor, Tensor], Tensor]
    discriminator: Callable[[Tensor, Tensor], Tensor]
    relativistic: bool


#: Adversarial losses by name.
ADVERSARIAL_LOSSES: dict[str, AdversarialLoss] = {
    "ragan": AdversarialLoss("ragan", ragan_generator_loss, ragan_discriminator_loss, True),
    "lsragan": AdversarialLoss("lsragan", lsragan_generator_loss, lsragan_discriminator_loss, True),
    "gan": AdversarialLoss("gan", gan_generator_loss, gan_discriminator_loss, False),
}


# ----------------------------------------------------- feature-based losses


def feature_matching_loss(
    real_features: Sequence[Tensor], fake_features: Sequence[Tensor]
) -> Tensor:
    """Mean over layers of the L1 distance between real and generated features.

    Args:
        real_features: per-layer (B, C, h, w) (or (B, C)) features of the real
            patches; detached here, they are the target.
        fake_features: the same layers for the generated patches.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: real and fake features of different layers or shapes.
    """
    _check_same_layers(real_features, fake_features)
    losses = [F.l1_loss(f, r.detach()) for r, f in zip(real_features, fake_features, strict=True)]
    return torch.stack(losses).mean()


def gram_matrix(features: Tensor) -> Tensor:
    """Channel correlations averaged over pixels.

    Args:
        features: (B, C, h, w) feature map.

    Returns:
        (B, C, C) tensor ``F F^T / (h w)``; dividing by the pixel count only
        keeps the entries' scale independent of the patch size and of C.
    """
    b, c = features.shape[:2]
    flat = features.reshape(b, c, -1).float()
    return flat @ flat.transpose(1, 2) / flat.shape[-1]


def texture_loss(real_features: Sequence[Tensor], fake_features: Sequence[Tensor]) -> Tensor:
    """Mean over layers of the L1 distance between Gram matrices (Gatys-style texture).

    Layers that are not (B, C, h, w) maps (e.g. a classifier's dense layer)
    are skipped.

    Args:
        real_features: per-layer features of the real patches (the target; detached).
        fake_features: the same layers for the generated patches.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: real and fake features of different layers or shapes.
        ConfigError: no (B, C, h, w) feature map.
    """
    _check_same_layers(real_features, fake_features)
    losses = [
        F.l1_loss(gram_matrix(f), gram_matrix(r.detach()))
        for r, f in zip(real_features, fake_features, strict=True)
        if f.dim() == 4
    ]
    if not losses:
        raise ConfigError("texture loss needs at least one (B, C, h, w) feature map")
    return torch.stack(losses).mean()


def _check_same_layers(real: Sequence[Tensor], fake: Sequence[Tensor]) -> None:
    if len(real) != len(fake) or not real:
        raise ValueError(
            f"need the same non-zero number of layers, got {len(real)} and {len(fake)}"
        )


# ---------------------------------------------------------------- perceptual

#: VGG19 ``features`` layout (torchvision): conv widths per block, "M" = max pool.
VGG19_BLOCKS: tuple[int, ...] = (2, 2, 4, 4, 4)
VGG19_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)
#: ImageNet statistics the VGG weights expect (RGB, inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg_layer_indices(blocks: Sequence[int]) -> dict[str, int]:
    """Layer name -> index in the ``features`` Sequential (torchvision numbering)."""
    names: dict[str, int] = {}
    index = 0
    for b, convs in enumerate(blocks, start=1):
        for i in range(1, convs + 1):
            names[f"conv{b}_{i}"] = index
            names[f"relu{b}_{i}"] = index + 1
            index += 2
        names[f"pool{b}"] = index
        index += 1
    return names


class VGGFeatures(nn.Module):
    """VGG19's convolutional part in torchvision's layout, truncated after the deepest layer used.

    Parameters keep torchvision's names (``features.<index>.weight``), so a
    state dict of ``torchvision.models.vgg19`` loads as it is. Grey slices are
    repeated to three channels and normalised with ImageNet statistics.

    Args:
        layers: names of the layers whose outputs are returned, e.g.
            ``("conv5_4",)`` (pre-activation, ESRGAN) or ``("relu5_4",)``.
        widths: channels of the five blocks (VGG19: 64, 128, 256, 512, 512;
            smaller in tests).
    """

    def __init__(self, layers: Sequence[str], widths: Sequence[int] = VGG19_WIDTHS) -> None:
        super().__init__()
        indices = _vgg_layer_indices(VGG19_BLOCKS)
        unknown = [name for name in layers if name not in indices]
        if unknown or not layers:
            raise ConfigError(
                f"unknown VGG19 layer(s) {unknown or list(layers)}",
                expected="names like conv1_2, relu2_2, conv5_4",
            )
        if len(widths) != len(VGG19_BLOCKS):
            raise ConfigError(f"VGG widths must give 5 block widths, got {list(widths)}")
        self.layers = tuple(layers)
        self._indices = tuple(indices[name] for name in layers)
        last = max(self._indices)
        modules: list[nn.Module] = []
        in_ch = 3
        for convs, width in zip(VGG19_BLOCKS, widths, strict=True):
            for _ in range(convs):
                modules += [nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU()]
                in_ch = width
            modules.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*modules[: last + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 1 or 3, H, W) images in [0, 1] -> features of ``layers``, in that order."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        outputs: dict[int, Tensor] = {}
        wanted = set(self._indices)
        for index, module in enumerate(self.features):
            h = module(h)
            if index in wanted:
                outputs[index] = h
        return [outputs[i] for i in self._indices]

    def train(self, mode: bool = True) -> VGGFeatures:
        """Always stays in eval mode: it is a fixed feature extractor."""
        return super().train(False)


#: What to do about a file that does not hold torchvision's VGG19 weights.
VGG_FIX = (
    "pass torchvision's vgg19 weights (IMAGENET1K_V1): save vgg19(weights=...).state_dict() "
    "with safetensors.torch.save_file, or leave --perceptual-weights out"
)


def load_vgg_state(path: str | Path) -> dict[str, Tensor]:
    """Read VGG19 weights from a ``.safetensors`` file or a weights-only torch file.

    Accepts torchvision's ``vgg19`` state dict (``features.N.weight``...), its
    ``features`` part alone (``N.weight``), or either inside a ``state_dict``
    entry. Pickled objects other than tensors are refused (``weights_only=True``).

    Args:
        path: the weights file.

    Returns:
        Dict of ``features.N.weight`` / ``features.N.bias`` tensors.

    Raises:
        CheckpointError: missing, unreadable or unsafe file, or no VGG conv weights in it.
    """
    path = require_existing(
        path,
        expected="a VGG19 weights file (.safetensors, or a torch state dict)",
        fix="check the --perceptual-weights path",
        error=CheckpointError,
        kind="file",
    )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors, pickle and zip errors all differ
        raise CheckpointError(
            f"cannot be read as VGG weights ({type(error).__name__}: {str(error)[:200]})",
            path=path,
            expected="a .safetensors file or a state dict loadable with weights_only=True",
            fix="convert the weights to .safetensors with a trusted script",
        ) from None
    if (
        isinstance(state, Mapping)
        and "state_dict" in state
        and isinstance(state["state_dict"], Mapping)
    ):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"holds a {type(state).__name__}, not a state dict",
            path=path,
            expected="a mapping of parameter names to tensors",
            fix=VGG_FIX,
        )
    result: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        name = str(key)
        for prefix in ("module.", "vgg.", "model."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if not name.startswith("features."):
            if name.split(".")[0].isdigit():
                name = "features." + name
            else:
                continue  # classifier weights and the like: not needed
        result[name] = value
    if not result:
        raise CheckpointError(
            "holds no VGG conv weights",
            path=path,
            expected="keys like features.0.weight (torchvision's vgg19)",
            fix=VGG_FIX,
        )
    return result


class PerceptualLoss(nn.Module):
    """Distance of VGG19 features between generated and real slices (ESRGAN/SRGAN).

    The VGG weights come from a user-supplied file (pretrained weights cannot
    be downloaded by mrisr); see :func:`load_vgg_state`.

    Args:
        weights_path: VGG19 weights file.
        layers: layer name -> weight, e.g. ``{"conv5_4": 1.0}``; ``convX_Y``
            layers are taken before their ReLU (ESRGAN), ``reluX_Y`` after (SRGAN).
        criterion: ``"l1"`` or ``"l2"``.
        widths: VGG block widths; the default is VGG19's (smaller only in tests).

    Raises:
        CheckpointError: unreadable file, or weights missing or of the wrong
            shape for the layers used.
    """

    def __init__(
        self,
        weights_path: str | Path,
        layers: Mapping[str, float] | None = None,
        criterion: str = "l1",
        widths: Sequence[int] = VGG19_WIDTHS,
    ) -> None:
        super().__init__()
        layers = dict(layers or {"conv5_4": 1.0})
        if criterion not in ("l1", "l2"):
            raise ConfigError(f"unknown perceptual criterion {criterion!r}", expected="l1 or l2")
        self.criterion = criterion
        self.layer_weights = tuple(float(w) for w in layers.values())
        self.vgg = VGGFeatures(tuple(layers), widths)
        self.weights_path = str(weights_path)
        state = load_vgg_state(weights_path)
        wanted = self.vgg.state_dict()
        missing = [k for k in wanted if k not in state]
        wrong = [k for k in wanted if k in state and state[k].shape != wanted[k].shape]
        if missing or wrong:
            detail = (f"missing {missing[:4]}" if missing else "") + (
                f" wrong shape for {wrong[:4]}" if wrong else ""
            )
            raise CheckpointError(
                f"does not fit VGG19 up to layer {max(layers, key=self.vgg.layers.index)}: "
                f"{detail.strip()}",
                path=weights_path,
                expected="torchvision's vgg19 weights",
                fix=VGG_FIX,
            )
        self.vgg.load_state_dict({k: state[k] for k in wanted})

    def features(self, x: Tensor) -> list[Tensor]:
        """VGG features of the layers in use, for the texture loss."""
        return self.vgg(x)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Weighted sum over layers of the feature distance (target features detached).

        Args:
            pred: (B, 1, H, W) generated slices.
            target: (B, 1, H, W) real slices.

        Returns:
            Scalar tensor.
        """
        distance = F.l1_loss if self.criterion == "l1" else F.mse_loss
        with torch.no_grad():
            target_features = self.vgg(target)
        pred_features = self.vgg(pred)
        return sum(
            (
                w * distance(p, t)
                for w, p, t in zip(self.layer_weights, pred_features, target_features, strict=True)
            ),
            torch.zeros((), device=pred.device),
        )


class MonaiPerceptualLoss(nn.Module):
    """MONAI's 2D PerceptualLoss, used only when its pretrained network is already cached.

    MONAI downloads its networks through ``torch.hub``; mrisr never starts a
    download. The network is taken from the torch hub cache
    (``torch.hub.get_dir()`` or ``cache_dir``) when it is there.

    Args:
        network_type: MONAI's network name; ``radimagenet_resnet50`` (trained
            on radiological images) is the one that works offline from a cache.
        cache_dir: torch hub folder holding the cached network.

    Raises:
        CheckpointError: the network is not in the cache.
    """

    def __init__(
        self, network_type: str = "radimagenet_resnet50", cache_dir: str | None = None
    ) -> None:
        super().__init__()
        hub = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir())
        if not monai_perceptual_cached(network_type, hub):
            raise CheckpointError(
                f"MONAI's {network_type} perceptual network is not in the torch hub cache",
                path=hub,
                expected="the Project-MONAI/perceptual-models repository and its weights there",
                fix="copy a cache made on a connected machine there, or give VGG19 weights "
                "with --perceptual-weights FILE",
            )
        from monai.losses import PerceptualLoss as _MonaiLoss

        self.loss = _MonaiLoss(spatial_dims=2, network_type=network_type, cache_dir=str(hub))
        for p in self.loss.parameters():
            p.requires_grad_(False)
        self.loss.eval()

    def features(self, x: Tensor) -> list[Tensor]:
        """Not available: MONAI's loss hides its features (no texture term with it).

        Raises:
            ConfigError: always (training refuses a texture loss with MONAI before it starts).
        """
        raise ConfigError(
            "the texture loss needs VGG features; MONAI's perceptual loss does not expose them",
            fix="set loss.texture to 0, or use VGG19 weights",
        )

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """MONAI's perceptual distance of (B, 1, H, W) slices; scalar tensor."""
        return self.loss(pred.float(), target.float())


def monai_perceptual_cached(network_type: str, hub: Path) -> bool:
    """Whether MONAI's perceptual ``network_type`` can load from ``hub`` without a download."""
    repository = hub / "Project-MONAI_perceptual-models_main"
    checkpoints = hub / "checkpoints"
    if not repository.is_dir():
        return False
    return checkpoints.is_dir() and any(
        network_type.split("_")[0] in p.name for p in checkpoints.iterdir()
    )


def build_perceptual_loss(
    spec: str | Path,
    layers: Mapping[str, float] | None = None,
    criterion: str = "l1",
) -> nn.Module:
    """The perceptual loss named by a ``loss.perceptual_weights`` setting.

    Args:
        spec: a VGG19 weights file, or ``monai:<network_type>`` for MONAI's
            cached network.
        layers: VGG layer weights (VGG only).
        criterion: ``l1`` or ``l2`` (VGG only).

    Returns:
        A module ``(pred, target) -> scalar``; VGG losses also have ``features``.
    """
    text = str(spec)
    if text.startswith("monai:"):
        return MonaiPerceptualLoss(text.split(":", 1)[1] or "radimagenet_resnet50")
    return PerceptualLoss(text, layers, criterion)
