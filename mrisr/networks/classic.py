"""The classic CNN super-resolution recipes: SRCNN, FSRCNN, ESPCN, VDSR, DRCN.

SRCNN, VDSR and DRCN are pre-upsampling networks, as in their papers: the
input is bicubic-interpolated to ``out_rows`` first and the network refines it
at full resolution. FSRCNN and ESPCN work at low resolution and upsample at
the end with a rows-only sub-pixel convolution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrisr.errors import ConfigError
from mrisr.networks.common import RowSRGenerator, SubPixelOutput, bicubic_rows, sizes_table

__all__ = ["DRCN", "ESPCN", "FSRCNN", "SRCNN", "VDSR"]


def _conv(in_ch: int, out_ch: int, kernel_size: int) -> nn.Conv2d:
    # "Same" padding everywhere: the papers' unpadded SRCNN crops borders,
    # which slices cannot afford.
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)


class SRCNN(RowSRGenerator):
    """SRCNN (Dong et al., "Learning a Deep Convolutional Network for Image
    Super-Resolution", ECCV 2014), the 9-5-5 variant.

    Pre-upsampling as in the paper: the input is bicubic-interpolated along rows
    to ``out_rows`` (any factor, columns untouched), then three convs (9x9,
    5x5, 5x5 with ReLU) refine it. Adaptations: the convs are zero-padded so
    the output keeps its size, and the network predicts the residual to the
    bicubic interpolation instead of the image.

    Args:
        num_feat: channels of the first layer (64).
        num_feat2: channels of the second layer (32).
    """

    sizes = sizes_table(small=dict(num_feat=32, num_feat2=16))

    def __init__(self, num_feat: int = 64, num_feat2: int = 32) -> None:
        super().__init__()
        self.configure(locals())
        self.body = nn.Sequential(
            _conv(1, num_feat, 9), nn.ReLU(), _conv(num_feat, num_feat2, 5), nn.ReLU()
        )
        self.last = _conv(num_feat2, 1, 5)

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """Refine the bicubic interpolation; see :meth:`RowSRGenerator.residual`."""
        return self.last(self.body(bicubic))

    def output_layers(self) -> list[nn.Module]:
        """The last conv."""
        return [self.last]


class FSRCNN(RowSRGenerator):
    """FSRCNN (Dong et al., "Accelerating the Super-Resolution Convolutional
    Neural Network", ECCV 2016) with d=56, s=12, m=4.

    Feature extraction (5x5, d), shrinking (1x1, s), m mapping layers (3x3, s),
    expanding (1x1, d), PReLU after each, all at low resolution. Adaptation:
    the 9x9 stride-r deconvolution is replaced by a rows-only sub-pixel conv
    (3x3 conv to ``upsample`` channels, row shuffle), then anti-aliased linear
    resampling to exactly ``out_rows`` rows, so one model serves any factor;
    a global bicubic residual is added.

    Args:
        d: feature-extraction / expanding channels.
        s: shrunk channels of the mapping layers.
        m: number of mapping layers.
        upsample: integer row scale of the sub-pixel shuffle.
    """

    sizes = sizes_table(small=dict(d=32, s=8, m=2))

    def __init__(self, d: int = 56, s: int = 12, m: int = 4, upsample: int = 4) -> None:
        super().__init__()
        self.configure(locals())
        layers: list[nn.Module] = [_conv(1, d, 5), nn.PReLU(d), _conv(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [_conv(s, s, 3), nn.PReLU(s)]
        layers += [_conv(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.output = SubPixelOutput(d, upsample, kernel_size=3)

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """See :meth:`RowSRGenerator.residual`."""
        return self.output(self.body(x), bicubic.shape[-2])

    def output_layers(self) -> list[nn.Module]:
        """The sub-pixel conv."""
        return [self.output.last]


class ESPCN(RowSRGenerator):
    """ESPCN (Shi et al., "Real-Time Single Image and Video Super-Resolution
    Using an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016).

    Two tanh convs (5x5 64, 3x3 32) at low resolution, then the sub-pixel
    conv (3x3 to ``upsample`` channels). Adaptations: the periodic shuffle is
    along rows only, followed by anti-aliased linear resampling to exactly
    ``out_rows`` for non-integer factors, plus a global bicubic residual.

    Args:
        num_feat: channels of the first layer (64).
        num_feat2: channels of the second layer (32).
        upsample: integer row scale of the sub-pixel shuffle.
    """

    sizes = sizes_table(small=dict(num_feat=32, num_feat2=16))

    def __init__(self, num_feat: int = 64, num_feat2: int = 32, upsample: int = 4) -> None:
        super().__init__()
        self.configure(locals())
        self.body = nn.Sequential(
            _conv(1, num_feat, 5), nn.Tanh(), _conv(num_feat, num_feat2, 3), nn.Tanh()
        )
        self.output = SubPixelOutput(num_feat2, upsample, kernel_size=3)

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """See :meth:`RowSRGenerator.residual`."""
        return self.output(self.body(x), bicubic.shape[-2])

    def output_layers(self) -> list[nn.Module]:
        """The sub-pixel conv."""
        return [self.output.last]


class VDSR(RowSRGenerator):
    """VDSR (Kim et al., "Accurate Image Super-Resolution Using Very Deep
    Convolutional Networks", CVPR 2016).

    Pre-upsampling and residual learning as in the paper: ``num_layers`` 3x3
    convs (ReLU, 64 channels) predict the residual to the interpolated input.
    Adaptation: the interpolation is bicubic along rows only, to ``out_rows``
    (any factor).

    Args:
        num_feat: channels of the hidden layers (64).
        num_layers: total conv layers including the first and last (20, at least 2).
    """

    sizes = sizes_table(small=dict(num_feat=32, num_layers=8))

    def __init__(self, num_feat: int = 64, num_layers: int = 20) -> None:
        super().__init__()
        self.configure(locals())
        if num_layers < 2:
            raise ConfigError(
                f"generator 'vdsr': num_layers must be >= 2 (a first and a last conv), "
                f"got {num_layers}",
                fix="set num_layers to 2 or more",
            )
        layers: list[nn.Module] = [_conv(1, num_feat, 3), nn.ReLU()]
        for _ in range(num_layers - 2):
            layers += [_conv(num_feat, num_feat, 3), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.last = _conv(num_feat, 1, 3)

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """Refine the bicubic interpolation; see :meth:`RowSRGenerator.residual`."""
        return self.last(self.body(bicubic))

    def output_layers(self) -> list[nn.Module]:
        """The last conv."""
        return [self.last]


class DRCN(RowSRGenerator):
    """DRCN (Kim et al., "Deeply-Recursive Convolutional Network for Image
    Super-Resolution", CVPR 2016), a simple version.

    Pre-upsampling as in the paper. Embedding net (two 3x3 convs, ReLU), one
    3x3 conv applied ``num_recursions`` times with shared weights, and a
    shared reconstruction net (3x3 conv, ReLU, 3x3 conv to one channel)
    applied to every recursion's features. Each recursion's prediction is
    the bicubic input plus its reconstruction (the skip connection); the output
    is their weighted average with learned weights (softmax of learned
    logits, starting uniform). :meth:`forward_recursions` returns the
    per-recursion predictions for recursive supervision. Adaptation: the
    interpolation is bicubic along rows only, to ``out_rows`` (any factor).

    Args:
        num_feat: channels (256 in the paper).
        num_recursions: recursions of the shared conv (16 in the paper).
    """

    sizes = sizes_table(small=dict(num_feat=32, num_recursions=4))

    def __init__(self, num_feat: int = 256, num_recursions: int = 16) -> None:
        super().__init__()
        self.configure(locals())
        self.embed = nn.Sequential(
            _conv(1, num_feat, 3), nn.ReLU(), _conv(num_feat, num_feat, 3), nn.ReLU()
        )
        self.recursive = _conv(num_feat, num_feat, 3)
        self.reconstruct = nn.Sequential(_conv(num_feat, num_feat, 3), nn.ReLU())
        self.last = _conv(num_feat, 1, 3)
        self.ensemble_logits = nn.Parameter(torch.zeros(num_recursions))

    def _recursion_residuals(self, bicubic: Tensor) -> list[Tensor]:
        h = self.embed(bicubic)
        residuals = []
        for _ in range(self.config["num_recursions"]):
            h = torch.relu(self.recursive(h))
            residuals.append(self.last(self.reconstruct(h)))
        return residuals

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """Weighted average of the recursions' residuals; see :meth:`RowSRGenerator.residual`."""
        weights = torch.softmax(self.ensemble_logits, dim=0)
        residuals = self._recursion_residuals(bicubic)
        return sum(
            (w * r for w, r in zip(weights, residuals, strict=True)), torch.zeros_like(bicubic)
        )

    def forward_recursions(self, x: Tensor, out_rows: int) -> list[Tensor]:
        """Every recursion's own prediction, for DRCN's recursive supervision loss.

        Args:
            x: (B, 1, H, W) input.
            out_rows: output rows.

        Returns:
            ``num_recursions`` tensors of shape (B, 1, out_rows, W); the
            softmax-weighted mean of them is :meth:`forward`'s output.
        """
        out_rows = self._check_input(x, out_rows)
        bicubic = bicubic_rows(x, out_rows)
        return [bicubic + r for r in self._recursion_residuals(bicubic)]

    def output_layers(self) -> list[nn.Module]:
        """The shared reconstruction net's output conv."""
        return [self.last]
