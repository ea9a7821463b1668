"""A generator with channel/spatial attention blocks and one windowed transformer block."""

from __future__ import annotations

from torch import Tensor, nn

from mrisr.errors import ConfigError
from mrisr.networks.blocks import ResidualBlock, WindowTransformerBlock
from mrisr.networks.common import RowSRGenerator, UpsampleTail, sizes_table

__all__ = ["AttnSRGAN"]


class AttnSRGAN(RowSRGenerator):
    """Attention-augmented SRGAN generator.

    The trunk combines residual blocks gated by squeeze-excite channel
    attention (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018; as in
    RCAN, Zhang et al. ECCV 2018) and CBAM spatial attention (Woo et al.,
    "CBAM: Convolutional Block Attention Module", ECCV 2018), followed by one
    transformer block of multi-head self-attention in non-overlapping
    ``window`` x ``window`` windows with a learned relative position bias
    (Liu et al., "Swin Transformer", ICCV 2021; no shifted windows), then a
    trunk conv and a long skip, at low resolution. Adaptations: rows-only
    sub-pixel upsampling by ``upsample``, anti-aliased linear resampling to
    exactly ``out_rows`` (any factor), an HR conv, the output conv, and a
    global bicubic residual.

    Args:
        num_feat: channels, divisible by ``heads``.
        num_block: attention residual blocks.
        window: side of the attention windows (feature maps are padded to a multiple).
        heads: attention heads.
        upsample: integer row scale of the sub-pixel shuffle.
    """

    sizes = sizes_table(small=dict(num_feat=32, num_block=2))

    def __init__(
        self,
        num_feat: int = 64,
        num_block: int = 8,
        window: int = 8,
        heads: int = 4,
        upsample: int = 4,
    ) -> None:
        super().__init__()
        self.configure(locals())
        if num_feat % heads:
            raise ConfigError(
                f"attn-srgan: num_feat={num_feat} is not divisible by heads={heads}",
                expected="num_feat divisible by heads",
                fix="change num_feat or heads",
            )
        self.head = nn.Conv2d(1, num_feat, 3, padding=1)
        self.body = nn.Sequential(
            *(ResidualBlock(num_feat, act="relu", attention=True) for _ in range(num_block)),
            WindowTransformerBlock(num_feat, window, heads),
            nn.Conv2d(num_feat, num_feat, 3, padding=1),
        )
        self.tail = UpsampleTail(num_feat, num_feat, upsample, "lrelu", hr_convs=1)

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """See :meth:`RowSRGenerator.residual`."""
        feat = self.head(x)
        return self.tail(feat + self.body(feat), bicubic.shape[-2])

    def output_layers(self) -> list[nn.Module]:
        """The output conv."""
        return [self.tail.last]
