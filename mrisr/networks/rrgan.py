"""Recursive residual generator with a progressive (two-cascade) upsampling path."""

from __future__ import annotations

import math

from torch import Tensor, nn

from mrisr.networks.common import (
    RowSRGenerator,
    RowUpsample,
    bicubic_rows,
    make_act,
    sizes_table,
)

__all__ = ["RRGAN", "RecursiveResidualBlock", "intermediate_rows"]


def intermediate_rows(in_rows: int, out_rows: int) -> int:
    """Rows of :class:`RRGAN`'s intermediate output: halfway on a log scale.

    ``round(sqrt(in_rows * out_rows))``, clipped to ``[in_rows, out_rows]``:
    exactly ``out_rows / 2`` (2x) for a 4x factor, and always between input and
    output for other factors (``out_rows / 2`` would fall below the input for
    factors under 2).
    """
    return min(max(round(math.sqrt(in_rows * out_rows)), in_rows), out_rows)


class RecursiveResidualBlock(nn.Module):
    """DRRN's recursive block (Tai et al., "Image Super-Resolution via Deep
    Recursive Residual Network", CVPR 2017), without batch norm.

    An entry conv gives ``h0``; a pre-activation residual unit
    (act-conv-act-conv) with one set of weights is applied ``recursions``
    times, each time added to ``h0`` (multi-path local residual learning).

    Args:
        channels: feature channels.
        recursions: how often the shared unit is applied.
    """

    def __init__(self, channels: int, recursions: int) -> None:
        super().__init__()
        self.recursions = recursions
        self.entry = nn.Conv2d(channels, channels, 3, padding=1)
        self.unit = nn.Sequential(
            make_act("lrelu"),
            nn.Conv2d(channels, channels, 3, padding=1),
            make_act("lrelu"),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        h0 = self.entry(x)
        h = h0
        for _ in range(self.recursions):
            h = h0 + self.unit(h)
        return h


class RRGAN(RowSRGenerator):
    """Recursive residual generator with multi-cascade progressive upsampling.

    Recursive residual blocks with shared weights and no batch norm (DRRN,
    Tai et al. CVPR 2017) in a cascade that upsamples in two steps, with an
    image output after the first (progressive reconstruction as in LapSRN,
    Lai et al. CVPR 2017, and ProSR, Wang et al. CVPRW 2018):

    1. head conv, ``num_block`` recursive blocks, trunk conv and long skip at
       the input resolution;
    2. rows-only sub-pixel upsampling by ``upsample`` and anti-aliased
       resampling to the intermediate size
       ``mid_rows = intermediate_rows(H, out_rows)`` (2x for a 4x factor);
       an output conv gives the intermediate image (plus bicubic interpolation
       to ``mid_rows``);
    3. ``num_block_mid`` recursive blocks and a skip at ``mid_rows``, a second
       rows-only sub-pixel step to ``out_rows``, an HR conv and the output
       conv (plus bicubic interpolation to ``out_rows``).

    :meth:`forward` returns the final image; :meth:`forward_with_intermediate`
    also returns the intermediate one, to be supervised against the
    high-resolution target resized along rows to ``mid_rows``.

    Args:
        num_feat: channels.
        num_block: recursive blocks at the input resolution.
        num_block_mid: recursive blocks at the intermediate resolution.
        recursions: recursions of each block's shared unit.
        upsample: integer row scale of each of the two sub-pixel steps.
    """

    sizes = sizes_table(small=dict(num_feat=32, num_block=2, recursions=2))

    def __init__(
        self,
        num_feat: int = 64,
        num_block: int = 4,
        num_block_mid: int = 1,
        recursions: int = 3,
        upsample: int = 2,
    ) -> None:
        super().__init__()
        self.configure(locals())
        self.head = nn.Conv2d(1, num_feat, 3, padding=1)
        self.body = nn.Sequential(
            *(RecursiveResidualBlock(num_feat, recursions) for _ in range(num_block)),
            nn.Conv2d(num_feat, num_feat, 3, padding=1),
        )
        self.up_mid = RowUpsample(num_feat, num_feat, upsample, "lrelu")
        self.last_mid = nn.Conv2d(num_feat, 1, 3, padding=1)
        self.body_mid = nn.Sequential(
            *(RecursiveResidualBlock(num_feat, recursions) for _ in range(num_block_mid)),
            nn.Conv2d(num_feat, num_feat, 3, padding=1),
        )
        self.up = RowUpsample(num_feat, num_feat, upsample, "lrelu")
        self.hr = nn.Sequential(nn.Conv2d(num_feat, num_feat, 3, padding=1), make_act("lrelu"))
        self.last = nn.Conv2d(num_feat, 1, 3, padding=1)

    def _cascade(self, x: Tensor, out_rows: int) -> tuple[Tensor, Tensor]:
        """Final residual (B, 1, out_rows, W) and intermediate features (B, C, mid_rows, W)."""
        feat = self.head(x)
        feat = feat + self.body(feat)
        mid = self.up_mid(feat, intermediate_rows(x.shape[-2], out_rows))
        feat = mid + self.body_mid(mid)
        return self.last(self.hr(self.up(feat, out_rows))), mid

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """See :meth:`RowSRGenerator.residual`."""
        return self._cascade(x, bicubic.shape[-2])[0]

    def forward_with_intermediate(self, x: Tensor, out_rows: int) -> tuple[Tensor, Tensor]:
        """The final and the intermediate image.

        Args:
            x: (B, 1, H, W) input.
            out_rows: output rows.

        Returns:
            ``(final, intermediate)``: (B, 1, out_rows, W) — the same as
            :meth:`forward` — and (B, 1, mid_rows, W) with
            ``mid_rows = intermediate_rows(H, out_rows)``.
        """
        out_rows = self._check_input(x, out_rows)
        residual, mid = self._cascade(x, out_rows)
        final = bicubic_rows(x, out_rows) + residual
        intermediate = bicubic_rows(x, mid.shape[-2]) + self.last_mid(mid)
        return final, intermediate

    def output_layers(self) -> list[nn.Module]:
        """The final and the intermediate output convs."""
        return [self.last, self.last_mid]
