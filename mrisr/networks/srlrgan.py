"""A lightweight generator of ShuffleNetV2-style units."""

from __future__ import annotations

from torch import Tensor, nn

from mrisr.errors import ConfigError
from mrisr.networks.blocks import ShuffleUnit
from mrisr.networks.common import RowSRGenerator, UpsampleTail, sizes_table

__all__ = ["SRLRGAN"]


class SRLRGAN(RowSRGenerator):
    """Lightweight SRGAN-style generator built from ShuffleNetV2 units (Ma et al.,
    "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
    Design", ECCV 2018), in the spirit of the lightweight ShuffleNet-based
    SRGAN generators; this is mrisr's own layer table, not a reproduction of
    one paper's.

    3x3 head conv, ``num_block`` :class:`~mrisr.networks.blocks.ShuffleUnit`
    (channel split, grouped 1x1 convs, depthwise 3x3, channel shuffle; no
    batch norm), a 3x3 trunk conv and a long skip, all at low resolution.
    Adaptations: rows-only sub-pixel upsampling by ``upsample``, anti-aliased
    linear resampling to exactly ``out_rows`` (any factor), one HR conv with
    ``num_hr_feat`` channels, the output conv, and a global bicubic residual.

    Args:
        num_feat: trunk channels; even, with ``num_feat / 2`` divisible by ``groups``.
        num_block: ShuffleNetV2 units.
        groups: groups of the 1x1 convs.
        num_hr_feat: channels at high resolution.
        upsample: integer row scale of the sub-pixel shuffle.
    """

    sizes = sizes_table(small=dict(num_feat=32, num_block=4, num_hr_feat=16))

    def __init__(
        self,
        num_feat: int = 64,
        num_block: int = 8,
        groups: int = 2,
        num_hr_feat: int = 32,
        upsample: int = 4,
    ) -> None:
        super().__init__()
        self.configure(locals())
        if num_feat % (2 * groups):
            raise ConfigError(
                f"srlrgan: num_feat={num_feat} does not split into two halves of {groups} groups",
                expected=f"num_feat divisible by 2 * groups = {2 * groups}",
                fix="change num_feat or groups",
            )
        self.head = nn.Conv2d(1, num_feat, 3, padding=1)
        self.body = nn.Sequential(
            *(ShuffleUnit(num_feat, groups) for _ in range(num_block)),
            nn.Conv2d(num_feat, num_feat, 3, padding=1),
        )
        self.tail = UpsampleTail(num_feat, num_hr_feat, upsample, "lrelu", hr_convs=1)

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """See :meth:`RowSRGenerator.residual`."""
        feat = self.head(x)
        return self.tail(feat + self.body(feat), bicubic.shape[-2])

    def output_layers(self) -> list[nn.Module]:
        """The output conv."""
        return [self.tail.last]
