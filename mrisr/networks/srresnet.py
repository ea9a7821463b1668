"""SRResNet, SRGAN's generator, upsampling rows only by any factor."""

from __future__ import annotations

from torch import Tensor, nn

from mrisr.networks.blocks import ResidualBlock
from mrisr.networks.common import RowSRGenerator, UpsampleTail, sizes_table

__all__ = ["SRResNet"]


class SRResNet(RowSRGenerator):
    """SRResNet (Ledig et al., "Photo-Realistic Single Image Super-Resolution
    Using a Generative Adversarial Network", CVPR 2017), SRGAN's generator.

    9x9 conv + PReLU, ``num_block`` residual blocks (conv-BN-PReLU-conv-BN),
    conv-BN and a long skip at low resolution, sub-pixel upsampling with
    PReLU, and a 9x9 output conv. Adaptations: SRGAN's two x2 pixel-shuffle
    stages become one rows-only shuffle by ``upsample`` followed by
    anti-aliased linear resampling to exactly ``out_rows`` (any factor), and a
    global bicubic residual is added.

    Args:
        num_feat: channels (64).
        num_block: residual blocks (16).
        upsample: integer row scale of the sub-pixel shuffle.
    """

    sizes = sizes_table(small=dict(num_feat=32, num_block=4))

    def __init__(self, num_feat: int = 64, num_block: int = 16, upsample: int = 4) -> None:
        super().__init__()
        self.configure(locals())
        self.head = nn.Sequential(nn.Conv2d(1, num_feat, 9, padding=4), nn.PReLU(num_feat))
        self.body = nn.Sequential(
            *(ResidualBlock(num_feat, act="prelu", norm=True) for _ in range(num_block)),
            nn.Conv2d(num_feat, num_feat, 3, padding=1, bias=False),
            nn.BatchNorm2d(num_feat),
        )
        self.tail = UpsampleTail(num_feat, num_feat, upsample, "prelu", hr_convs=0, last_kernel=9)

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """See :meth:`RowSRGenerator.residual`."""
        feat = self.head(x)
        return self.tail(feat + self.body(feat), bicubic.shape[-2])

    def output_layers(self) -> list[nn.Module]:
        """The 9x9 output conv."""
        return [self.tail.last]
