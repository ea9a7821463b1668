"""Building blocks shared by several generators: residual blocks (with optional
batch norm and attention), squeeze-excite and CBAM attention, ShuffleNetV2
units and a windowed self-attention transformer block.

All blocks map (B, C, H, W) to (B, C, H, W) and work for any H, W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrisr.networks.common import like_memory_format, make_act

__all__ = [
    "ChannelAttention",
    "ResidualBlock",
    "ShuffleUnit",
    "SpatialAttention",
    "WindowAttention",
    "WindowTransformerBlock",
    "channel_shuffle",
]


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): per-channel gates from global pooling.

    Args:
        channels: feature channels.
        reduction: bottleneck ratio of the two 1x1 convs.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        w = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(w))))


class SpatialAttention(nn.Module):
    """CBAM spatial attention (Woo et al. 2018): a per-pixel gate from the
    channel-wise mean and max maps.

    Args:
        kernel_size: conv kernel over the two pooled maps (7 in CBAM).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class ResidualBlock(nn.Module):
    """``x + res_scale * attn(conv -> [BN] -> act -> conv -> [BN])``.

    With ``norm=True, act="prelu"`` it is SRResNet's block (Ledig et al. 2017);
    with ``norm=False`` EDSR's; with ``attention=True`` squeeze-excite channel
    attention and CBAM spatial attention gate the branch (RCAN / CBAM style).

    Args:
        channels: feature channels.
        act: activation name (see :func:`mrisr.networks.common.make_act`).
        norm: batch norm after each conv.
        attention: channel then spatial attention on the branch.
        res_scale: scale of the branch before the skip (EDSR/ESRGAN use < 1 for deep nets).
    """

    def __init__(
        self,
        channels: int,
        act: str = "relu",
        norm: bool = False,
        attention: bool = False,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, padding=1, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(channels))
        layers += [
            make_act(act, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=not norm),
        ]
        if norm:
            layers.append(nn.BatchNorm2d(channels))
        if attention:
            layers += [ChannelAttention(channels), SpatialAttention()]
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x + self.res_scale * self.body(x)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: interleave the channels of ``groups`` groups.

    Args:
        x: (B, C, H, W) tensor, C divisible by ``groups``.
        groups: number of groups.

    Returns:
        (B, C, H, W) tensor with channel ``g * (C / groups) + k`` moved to ``k * groups + g``.
    """
    b, c, h, w = x.shape
    y = x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)
    return like_memory_format(y, x)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Ma et al. 2018), stride 1, adapted for super-resolution.

    Channel split in two halves; one half goes through grouped 1x1 conv ->
    act -> depthwise 3x3 -> grouped 1x1 conv -> act; the halves are
    concatenated and channel-shuffled. Batch norm is dropped (it hurts
    super-resolution, as in EDSR), and the 1x1 convs are grouped
    (ShuffleNetV1 style), each followed by a shuffle so the groups mix.

    Args:
        channels: feature channels, even and with ``channels / 2`` divisible by ``groups``.
        groups: groups of the 1x1 convs.
        act: activation name.
    """

    def __init__(self, channels: int, groups: int = 2, act: str = "lrelu") -> None:
        super().__init__()
        half = channels // 2
        self.groups = groups
        self.pw1 = nn.Conv2d(half, half, 1, groups=groups)
        self.act1 = make_act(act, half)
        self.dw = nn.Conv2d(half, half, 3, padding=1, groups=half)
        self.pw2 = nn.Conv2d(half, half, 1, groups=groups)
        self.act2 = make_act(act, half)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        keep, branch = x.chunk(2, dim=1)
        branch = self.act1(self.pw1(branch))
        if self.groups > 1:
            branch = channel_shuffle(branch, self.groups)
        branch = self.act2(self.pw2(self.dw(branch)))
        return channel_shuffle(torch.cat([keep, branch], dim=1), 2)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, with a learned
    relative position bias (Swin Transformer, Liu et al. 2021).

    Args:
        channels: token channels, divisible by ``heads``.
        window: window side (tokens per window = window ** 2).
        heads: attention heads.
    """

    def __init__(self, channels: int, window: int = 8, heads: int = 4) -> None:
        super().__init__()
        self.window = window
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        # One learned bias per head and relative offset (dy, dx) in [-(w-1), w-1]^2.
        self.relative_bias = nn.Parameter(torch.zeros(heads, (2 * window - 1) ** 2))
        nn.init.trunc_normal_(self.relative_bias, std=0.02)
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ).flatten(1)
        rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
        self.register_buffer("relative_index", rel[0] * (2 * window - 1) + rel[1], persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B * windows, N, C) -> (B * windows, N, C), with N = window ** 2."""
        bw, n, c = tokens.shape
        qkv = self.qkv(tokens).reshape(bw, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_bias[:, self.relative_index].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class WindowTransformerBlock(nn.Module):
    """Pre-norm transformer block over non-overlapping windows (no shift).

    ``x + attn(LN(x))`` then ``x + MLP(LN(x))``. Feature maps whose sides are
    not multiples of ``window`` are zero-padded (after the norm, as Swin does)
    and cropped back.

    Args:
        channels: feature channels, divisible by ``heads``.
        window: window side.
        heads: attention heads.
        mlp_ratio: hidden width of the MLP relative to ``channels``.
    """

    def __init__(
        self, channels: int, window: int = 8, heads: int = 4, mlp_ratio: float = 2.0
    ) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(channels)
        self.attn = WindowAttention(channels, window, heads)
        self.norm2 = nn.LayerNorm(channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        s = self.window
        tokens = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.norm1(tokens)
        pad_h, pad_w = (-h) % s, (-w) % s
        y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        windows = y.reshape(b, hp // s, s, wp // s, s, c).permute(0, 1, 3, 2, 4, 5)
        windows = self.attn(windows.reshape(-1, s * s, c))
        y = windows.reshape(b, hp // s, wp // s, s, s, c).permute(0, 1, 3, 2, 4, 5)
        tokens = tokens + y.reshape(b, hp, wp, c)[:, :h, :w]
        tokens = tokens + self.mlp(self.norm2(tokens))
        return like_memory_format(tokens.permute(0, 3, 1, 2), x)
