"""ESRGAN's RRDB generator, upsampling rows only by any factor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrisr.networks.common import (
    RowSRGenerator,
    UpsampleTail,
    pixel_unshuffle_cols,
    scaled_init,
    sizes_table,
)

__all__ = ["RDB", "RRDB", "RRDBNet"]


class RDB(nn.Module):
    """Residual dense block: 5 densely connected 3x3 convs, LeakyReLU 0.2,
    output scaled by 0.2 and added to the input.

    Args:
        num_feat: block input/output channels.
        num_grow_ch: channels each of the first four convs adds.
    """

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(num_feat + i * num_grow_ch, num_grow_ch if i < 4 else num_feat, 3, padding=1)
            for i in range(5)
        )
        scaled_init(self, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, num_feat, H, W) -> (B, num_feat, H, W)."""
        # In place on each conv's fresh output: the same values with fewer full-size
        # temporaries (on CPU each new one is paged in afresh).
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(F.leaky_relu_(conv(torch.cat(feats, dim=1)), 0.2))
        return self.convs[-1](torch.cat(feats, dim=1)).mul_(0.2).add_(x)


class RRDB(nn.Module):
    """Residual-in-residual dense block: 3 RDBs, output scaled by 0.2 plus the input.

    Args:
        num_feat: block input/output channels.
        num_grow_ch: growth channels of the RDBs.
    """

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdbs = nn.Sequential(*(RDB(num_feat, num_grow_ch) for _ in range(3)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, num_feat, H, W) -> (B, num_feat, H, W)."""
        return self.rdbs(x).mul_(0.2).add_(x)


class RRDBNet(RowSRGenerator):
    """ESRGAN generator (Wang et al., "ESRGAN: Enhanced Super-Resolution Generative
    Adversarial Networks", ECCV Workshops 2018), adapted to one-axis upsampling.

    Trunk as in the paper: first conv, ``num_block`` RRDBs, trunk conv and a
    long skip, all at low resolution. Adaptations:

    * Upsampling is along rows only and by any factor (ECLARE's design,
      Remedios et al. 2024): a conv makes ``num_hr_feat * upsample`` channels,
      a rows-only sub-pixel shuffle makes ``upsample`` times as many rows,
      anti-aliased linear resampling lands on exactly ``out_rows``, then the
      HR conv and last conv. ESRGAN's nearest-neighbour x2 stages are replaced.
    * A global residual: the output is bicubic interpolation plus the network.
    * Optional ``col_unshuffle`` (Real-ESRGAN's pixel-unshuffle, columns only):
      the trunk runs on ``W / col_unshuffle`` columns with the columns folded
      into channels and the output shuffle unfolds them exactly, cutting the
      trunk's cost by that factor. Odd widths are edge-padded and cropped.

    Args:
        num_feat: trunk channels (64 in ESRGAN).
        num_block: number of RRDBs (23 in ESRGAN).
        num_grow_ch: growth channels of the dense blocks (32 in ESRGAN).
        upsample: integer row scale of the sub-pixel shuffle.
        num_hr_feat: channels at high resolution; ``None`` means ``num_feat``.
        col_unshuffle: column folding factor of the trunk (1 = none).
    """

    #: ``small``: an RRDB net of about 7,700 MACs per output voxel at 4x (one
    #: RRDB of 16 channels, growth 8, trunk on half the columns, 8 channels at
    #: high resolution) for CPU use; ``full`` is ESRGAN's network (the defaults).
    sizes = sizes_table(
        small=dict(num_feat=16, num_block=1, num_grow_ch=8, num_hr_feat=8, col_unshuffle=2)
    )

    def __init__(
        self,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        upsample: int = 4,
        num_hr_feat: int | None = None,
        col_unshuffle: int = 1,
    ) -> None:
        super().__init__()
        self.configure(locals())
        hr_feat = num_feat if num_hr_feat is None else num_hr_feat
        self.col_unshuffle = col_unshuffle
        self.conv_first = nn.Conv2d(col_unshuffle, num_feat, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.tail = UpsampleTail(num_feat, hr_feat, upsample, "lrelu", col_scale=col_unshuffle)

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """(B, 1, H, W) -> (B, 1, out_rows, W); see :meth:`RowSRGenerator.residual`."""
        width = x.shape[-1]
        pad = (-width) % self.col_unshuffle
        if pad:
            x = F.pad(x, (0, pad, 0, 0), mode="replicate")
        feat = self.conv_first(pixel_unshuffle_cols(x, self.col_unshuffle))
        feat = feat + self.conv_body(self.body(feat))
        return self.tail(feat, bicubic.shape[-2])[..., :width]

    def output_layers(self) -> list[nn.Module]:
        """The last conv."""
        return [self.tail.last]
