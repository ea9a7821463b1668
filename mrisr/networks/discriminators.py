"""Discriminators for the GAN stage: VGG-style, U-Net, PatchGAN, SN-8 and SRGAN's.

Every discriminator takes (B, 1, h, w) patches of any size with h, w >= 32
(the classifier heads pool adaptively before their linear layers), returns
logits from :meth:`forward` — (B, 1) for the classifiers, (B, 1, h', w') for
the patch and U-Net discriminators — and the intermediate activations from
:meth:`features` for feature-matching losses.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from mrisr.errors import InputError
from mrisr.networks.common import ConfiguredNetwork, sizes_table

__all__ = [
    "MIN_PATCH",
    "PatchGANDiscriminator",
    "SN8Discriminator",
    "SRGANDiscriminator",
    "UNetDiscriminatorSN",
    "VGGStyleDiscriminator",
]

#: Smallest patch side every discriminator accepts.
MIN_PATCH = 32


class _Discriminator(ConfiguredNetwork):
    """Shared input check and the forward/features split.

    Subclasses implement :meth:`_run` returning ``(features, logits)`` and call
    :meth:`configure`. Size ``small`` has 16 channels in the first layer.
    """

    sizes = sizes_table(small=dict(num_feat=16))

    def forward(self, x: Tensor) -> Tensor:
        """Logits: (B, 1, h, w) -> (B, 1) or (B, 1, h', w')."""
        return self._run(x)[1]

    def features(self, x: Tensor) -> list[Tensor]:
        """Intermediate activations, first layer first, logits excluded."""
        return self._run(x)[0]

    def _run(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        raise NotImplementedError

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1 or min(x.shape[-2:]) < MIN_PATCH:
            raise InputError(
                f"{type(self).__name__} got a tensor of shape {tuple(x.shape)}",
                expected=f"shape (batch, 1, h, w) with h, w >= {MIN_PATCH}",
                fix=f"use training patches of at least {MIN_PATCH}x{MIN_PATCH}",
            )


def _maybe_sn(layer: nn.Module, sn: bool) -> nn.Module:
    return spectral_norm(layer) if sn else layer


class _ConvClassifier(_Discriminator):
    """Conv stack (conv -> [BN] -> LeakyReLU 0.2), adaptive average pooling,
    linear -> LeakyReLU -> linear to one logit.

    Args:
        layers: ``(out_channels, kernel_size, stride)`` per conv.
        norm: batch norm after every conv but the first.
        sn: spectral normalisation of every conv and linear layer.
        pool: side of the adaptive pooling before the linear head.
        hidden: units of the first linear layer.
    """

    def __init__(
        self,
        layers: list[tuple[int, int, int]],
        norm: bool,
        sn: bool,
        pool: int,
        hidden: int,
    ) -> None:
        super().__init__()
        blocks = []
        in_ch = 1
        for i, (out_ch, kernel, stride) in enumerate(layers):
            use_norm = norm and i > 0
            conv = nn.Conv2d(
                in_ch,
                out_ch,
                kernel,
                stride,
                padding=(kernel - 1) // 2 if kernel % 2 else 1,
                bias=not use_norm,
            )
            block: list[nn.Module] = [_maybe_sn(conv, sn)]
            if use_norm:
                block.append(nn.BatchNorm2d(out_ch))
            block.append(nn.LeakyReLU(0.2))
            blocks.append(nn.Sequential(*block))
            in_ch = out_ch
        self.convs = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.linear1 = _maybe_sn(nn.Linear(in_ch * pool * pool, hidden), sn)
        self.linear2 = _maybe_sn(nn.Linear(hidden, 1), sn)

    def _run(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        self._check_input(x)
        feats = []
        for block in self.convs:
            x = block(x)
            feats.append(x)
        hidden = F.leaky_relu(self.linear1(self.pool(x).flatten(1)), 0.2)
        feats.append(hidden)
        return feats, self.linear2(hidden)


class VGGStyleDiscriminator(_ConvClassifier):
    """ESRGAN's VGG-style discriminator (Wang et al., ECCV Workshops 2018; BasicSR's
    ``VGGStyleDiscriminator``).

    Five stages of a 3x3 conv and a 4x4 stride-2 conv, channels doubling from
    ``num_feat`` to ``8 * num_feat``, batch norm and LeakyReLU 0.2, then two
    linear layers (100 units, then the logit). Adaptation: adaptive average
    pooling to ``pool x pool`` before the linear layers, so that any patch
    size >= 32 works (ESRGAN fixes 128).

    Args:
        num_feat: channels of the first stage.
        pool: side of the pooled map fed to the linear layers (4 as for 128 inputs).
    """

    def __init__(self, num_feat: int = 64, pool: int = 4) -> None:
        self.configure(locals())
        widths = [num_feat, 2 * num_feat, 4 * num_feat, 8 * num_feat, 8 * num_feat]
        layers = []
        for w in widths:
            layers += [(w, 3, 1), (w, 4, 2)]
        super().__init__(layers, norm=True, sn=False, pool=pool, hidden=100)


class SN8Discriminator(_ConvClassifier):
    """Spectrally normalised 8-conv discriminator, as used by lightweight SR-GANs
    (SRLRGAN's discriminator; spectral normalisation after Miyato et al.,
    ICLR 2018).

    Eight 3x3 convs with spectral normalisation and LeakyReLU 0.2, channels
    ``num_feat, num_feat, 2x, 2x, 4x, 4x, 8x, 8x`` with stride 2 at every second
    conv, adaptive average pooling, then two spectrally normalised linear
    layers (``hidden`` units, then the logit). No batch norm.

    Args:
        num_feat: channels of the first conv.
        pool: side of the pooled map fed to the linear layers.
        hidden: units of the first linear layer.
    """

    sizes = sizes_table(small=dict(num_feat=16, hidden=128))

    def __init__(self, num_feat: int = 64, pool: int = 4, hidden: int = 1024) -> None:
        self.configure(locals())
        layers = []
        for mult in (1, 2, 4, 8):
            layers += [(mult * num_feat, 3, 1), (mult * num_feat, 3, 2)]
        super().__init__(layers, norm=False, sn=True, pool=pool, hidden=hidden)


class SRGANDiscriminator(_ConvClassifier):
    """SRGAN's discriminator (Ledig et al., CVPR 2017).

    A 3x3 conv with LeakyReLU 0.2, then seven 3x3 conv-BN-LeakyReLU layers
    (64, 64/2, 128, 128/2, 256, 256/2, 512, 512/2 channels/stride for
    ``num_feat=64``), a 1024-unit dense layer with LeakyReLU and a dense
    logit (the paper's sigmoid is left to the loss). Adaptation: adaptive
    average pooling to ``pool x pool`` (6 for the paper's 96x96 patches) so
    any patch size >= 32 works.

    Args:
        num_feat: channels of the first conv.
        pool: side of the pooled map fed to the dense layers.
        hidden: units of the first dense layer.
    """

    def __init__(self, num_feat: int = 64, pool: int = 6, hidden: int = 1024) -> None:
        self.configure(locals())
        layers = [(num_feat, 3, 1), (num_feat, 3, 2)]
        for mult in (2, 4, 8):
            layers += [(mult * num_feat, 3, 1), (mult * num_feat, 3, 2)]
        super().__init__(layers, norm=True, sn=False, pool=pool, hidden=hidden)


class UNetDiscriminatorSN(_Discriminator):
    """Real-ESRGAN's U-Net discriminator with spectral normalisation (Wang et al.,
    "Real-ESRGAN", ICCV Workshops 2021).

    Three 4x4 stride-2 downsampling convs, three upsampling stages with skip
    connections, two more convs and a per-pixel logit conv; spectral norm on
    all but the first and last conv; LeakyReLU 0.2. Adaptation: decoder
    stages upsample to the skip's exact size, so patch sides need not be
    multiples of 8.

    Args:
        num_feat: channels of the first conv.
    """

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.configure(locals())
        nf = num_feat

        def sn_conv(i: int, o: int, k: int, s: int) -> nn.Module:
            return spectral_norm(nn.Conv2d(i, o, k, s, padding=1, bias=False))

        self.conv0 = nn.Conv2d(1, nf, 3, 1, 1)
        self.down = nn.ModuleList(
            [
                sn_conv(nf, 2 * nf, 4, 2),
                sn_conv(2 * nf, 4 * nf, 4, 2),
                sn_conv(4 * nf, 8 * nf, 4, 2),
            ]
        )
        self.up = nn.ModuleList(
            [
                sn_conv(8 * nf, 4 * nf, 3, 1),
                sn_conv(4 * nf, 2 * nf, 3, 1),
                sn_conv(2 * nf, nf, 3, 1),
            ]
        )
        self.extra = nn.ModuleList([sn_conv(nf, nf, 3, 1), sn_conv(nf, nf, 3, 1)])
        self.last = nn.Conv2d(nf, 1, 3, 1, 1)

    def _run(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        self._check_input(x)
        feats = [F.leaky_relu(self.conv0(x), 0.2)]
        skips = [feats[0]]
        for conv in self.down:
            feats.append(F.leaky_relu(conv(feats[-1]), 0.2))
            skips.append(feats[-1])
        h = feats[-1]
        for conv, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = F.leaky_relu(conv(h), 0.2) + skip
            feats.append(h)
        for conv in self.extra:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return feats, self.last(h)


class PatchGANDiscriminator(_Discriminator):
    """PatchGAN discriminator (Isola et al., "pix2pix", CVPR 2017; the
    multi-layer form of Wang et al., "pix2pixHD", CVPR 2018), built on
    :class:`monai.networks.nets.PatchDiscriminator` with ``spatial_dims=2``.

    4x4 convs with stride 2 (the last one stride 1), channels doubling from
    ``num_feat``, normalisation and LeakyReLU 0.2, and a per-patch logit conv.

    Args:
        num_feat: channels of the first conv.
        num_layers: strided conv layers after the first (MONAI's ``num_layers_d``).
        norm: MONAI normalisation name, e.g. ``"BATCH"`` or ``"INSTANCE"``.
    """

    def __init__(self, num_feat: int = 64, num_layers: int = 3, norm: str = "BATCH") -> None:
        # MONAI is imported here, not at module level: loading a generator
        # imports this module too, and MONAI takes seconds to import.
        from monai.networks.nets import PatchDiscriminator as MonaiPatchDiscriminator

        super().__init__()
        self.configure(locals())
        self.net = MonaiPatchDiscriminator(
            spatial_dims=2,
            channels=num_feat,
            in_channels=1,
            out_channels=1,
            num_layers_d=num_layers,
            norm=norm,
        )

    def _run(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        self._check_input(x)
        outputs = self.net(x)
        return list(outputs[:-1]), outputs[-1]
