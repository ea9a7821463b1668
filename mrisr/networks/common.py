"""Pieces every generator shares: the bicubic residual, rows-only sub-pixel upsampling,
resampling to an exact number of rows, and the generator base class.

Every 2D slice is laid out as ``(rows, cols) = (thick axis, in-plane axis)``.
Networks upsample along the rows only (dim -2) and never resample columns.
Sampling is field-of-view aligned (as in :mod:`mrisr.geometry`): output row
``i`` of ``n_out`` sits at input coordinate ``(i + 0.5) * n_in / n_out - 0.5``,
which is what ``align_corners=False`` interpolation and sub-pixel shuffling
both give.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrisr.errors import ConfigError, InputError

__all__ = [
    "RowSRGenerator",
    "RowUpsample",
    "SubPixelOutput",
    "UpsampleTail",
    "ConfiguredNetwork",
    "bicubic_rows",
    "like_memory_format",
    "make_act",
    "network_name",
    "pixel_shuffle",
    "pixel_unshuffle_cols",
    "resample_rows",
    "sizes_table",
    "scaled_init",
    "zero_last_layer",
]


def bicubic_rows(x: Tensor, out_rows: int) -> Tensor:
    """Torch's bicubic interpolation along rows only, field-of-view aligned.

    Bicubic here is Keys' cubic convolution (``a = -0.75``, what
    ``F.interpolate(mode="bicubic")`` computes): cheap and differentiable, the
    base every generator adds its residual to. It is not the prefiltered cubic
    B-spline of :class:`mrisr.interpolation.CubicSliceModel`, the "cubic"
    baseline that models are measured against. Columns keep their size; bicubic interpolation onto the same column grid
    is exactly the identity there, so only rows are resampled.

    Args:
        x: (B, C, H, W) tensor.
        out_rows: number of output rows.

    Returns:
        (B, C, out_rows, W) tensor.
    """
    if out_rows == x.shape[-2]:
        return x
    return _interpolate(x, out_rows, mode="bicubic")


def resample_rows(x: Tensor, out_rows: int) -> Tensor:
    """Linear resampling of features along rows to exactly ``out_rows`` rows.

    Used after integer sub-pixel upsampling to reach a non-integer factor
    (ECLARE's design). Anti-aliased linear interpolation low-passes when it
    shrinks (the usual case: ``H * upsample > out_rows``) and is plain linear
    interpolation when it grows, both field-of-view aligned.

    Args:
        x: (B, C, H, W) tensor.
        out_rows: number of output rows.

    Returns:
        (B, C, out_rows, W) tensor; ``x`` itself when it already has ``out_rows`` rows.
    """
    if out_rows == x.shape[-2]:
        return x
    return _interpolate(x, out_rows, mode="bilinear", antialias=True)


def _interpolate(x: Tensor, out_rows: int, mode: str, antialias: bool = False) -> Tensor:
    # Interpolate in float32: some kernels (anti-aliased ones on CPU) have no
    # half/bfloat16 version, and under autocast features arrive in bfloat16.
    low_precision = x.dtype in (torch.float16, torch.bfloat16)
    y = F.interpolate(
        x.float() if low_precision else x,
        size=(out_rows, x.shape[-1]),
        mode=mode,
        align_corners=False,
        antialias=antialias,
    )
    return y.to(x.dtype) if low_precision else y


def like_memory_format(result: Tensor, like: Tensor) -> Tensor:
    """``result`` in channels-last layout when ``like`` is channels-last, else NCHW-contiguous."""
    # Reshapes return NCHW-contiguous tensors; hand channels-last back to
    # channels-last callers so that following convolutions stay on that path.
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        return result.contiguous(memory_format=torch.channels_last)
    return result.contiguous()


def pixel_shuffle(x: Tensor, rows: int, cols: int = 1) -> Tensor:
    """Sub-pixel shuffle with separate row and column scales.

    Channel ``(c * rows + i) * cols + j`` of input pixel ``(h, w)`` becomes
    output pixel ``(h * rows + i, w * cols + j)`` of channel ``c``; with
    ``rows == cols`` this is :func:`torch.nn.functional.pixel_shuffle`.

    Args:
        x: (B, C * rows * cols, H, W) tensor.
        rows: row scale.
        cols: column scale (1 = columns untouched).

    Returns:
        (B, C, H * rows, W * cols) tensor.
    """
    b, c, h, w = x.shape
    if rows == 1 and cols == 1:
        return x
    out_c = c // (rows * cols)
    y = x.reshape(b, out_c, rows, cols, h, w).permute(0, 1, 4, 2, 5, 3)
    return like_memory_format(y.reshape(b, out_c, h * rows, w * cols), x)


def pixel_unshuffle_cols(x: Tensor, cols: int) -> Tensor:
    """Fold columns into channels (inverse of :func:`pixel_shuffle` with ``rows=1``).

    Lets a network run its trunk at ``W / cols`` columns (Real-ESRGAN's trick
    for small scales); the output shuffle puts the columns back exactly.

    Args:
        x: (B, C, H, W) tensor with ``W`` divisible by ``cols``.
        cols: column scale.

    Returns:
        (B, C * cols, H, W // cols) tensor.
    """
    if cols == 1:
        return x
    b, c, h, w = x.shape
    y = x.reshape(b, c, h, w // cols, cols).permute(0, 1, 4, 2, 3)
    return like_memory_format(y.reshape(b, c * cols, h, w // cols), x)


def make_act(name: str, channels: int = 1) -> nn.Module:
    """Activation by name: ``"relu"``, ``"lrelu"`` (slope 0.2), ``"prelu"``, ``"tanh"``.

    Never in place, so that autograd can always see the pre-activation values.

    Raises:
        ConfigError: an unknown name.
    """
    if name == "relu":
        return nn.ReLU()
    if name == "lrelu":
        return nn.LeakyReLU(0.2)
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "tanh":
        return nn.Tanh()
    raise ConfigError(f"unknown activation {name!r}", expected="one of relu, lrelu, prelu, tanh")


class ConfiguredNetwork(nn.Module):
    """A network that describes its own configuration.

    The constructor's signature is the one list of a network's settings, and
    its defaults are the paper's network (size ``full``). :attr:`sizes` names
    what differs at each size of :data:`mrisr.config.SIZES`; :attr:`config`
    holds what one instance was built with, so that ``type(model)(**model.config)``
    rebuilds it (model files store it). Subclasses call
    ``self.configure(locals())`` first thing in ``__init__`` instead of listing
    their arguments again.

    Attributes:
        sizes: settings per size name, over the constructor's defaults.
        config: the constructor arguments of this instance (JSON-able).
    """

    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = MappingProxyType({})
    config: dict[str, Any]

    def configure(self, arguments: Mapping[str, Any]) -> None:
        """Record the constructor's arguments as ``self.config``, checking the counts.

        Every setting whose default is a whole number (or None, when one is
        given) counts something (channels, blocks, a scale) and must be a whole
        number >= 1.

        Args:
            arguments: the constructor's ``locals()``.

        Raises:
            ConfigError: a count that is not a whole number >= 1.
        """
        parameters = inspect.signature(type(self)).parameters
        config = {name: arguments[name] for name in parameters}
        for name, parameter in parameters.items():
            value, default = config[name], parameter.default
            counts = isinstance(default, int) and not isinstance(default, bool)
            if counts or (default is None and value is not None):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(
                        f"{network_name(type(self))}: {name} must be an integer >= 1, "
                        f"got {value!r}",
                        expected=f"{name} >= 1",
                        fix=f"set {name} to a positive integer",
                    )
        self.config = config

    @classmethod
    def size_settings(cls, size: str) -> dict[str, Any]:
        """The settings of a named size (empty for the defaults).

        Raises:
            ConfigError: a size this network does not name.
        """
        if size not in cls.sizes:
            raise ConfigError(
                f"{network_name(cls)} has no size {size!r}",
                expected=f"one of {', '.join(cls.sizes) or '(no named sizes)'}",
                fix="leave size unset or pick a listed one",
            )
        return dict(cls.sizes[size])

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Refuse settings the constructor does not take.

        Raises:
            ConfigError: an unknown setting, naming the accepted ones.
        """
        signature = inspect.signature(cls)
        try:
            signature.bind(**settings)
        except TypeError as error:
            raise ConfigError(
                f"{network_name(cls)} does not accept these settings: {error}",
                expected=f"settings among: {', '.join(signature.parameters)}",
                fix="remove or rename the setting",
            ) from error


def sizes_table(**sizes: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    """A network's :attr:`ConfiguredNetwork.sizes`, read-only, one entry per size name.

    Args:
        **sizes: settings per size name of :data:`mrisr.config.SIZES`, over the
            constructor's defaults; ``full`` (the paper's network) defaults to them.

    Returns:
        ``{size: {setting: value}}`` for every size name, in :data:`mrisr.config.SIZES` order.

    Raises:
        ConfigError: a size name :data:`mrisr.config.SIZES` does not list.
    """
    from mrisr.config import SIZES

    unknown = set(sizes) - set(SIZES)
    if unknown:
        raise ConfigError(
            f"unknown network size {', '.join(sorted(unknown))}", expected=f"one of {SIZES}"
        )
    return MappingProxyType({size: MappingProxyType(dict(sizes.get(size, {}))) for size in SIZES})


def network_name(cls: type) -> str:
    """The name a network class is built by (its key in the networks' tables), for messages."""
    from mrisr.networks import DISCRIMINATORS, GENERATORS

    for kind, table in (("generator", GENERATORS), ("discriminator", DISCRIMINATORS)):
        for name, registered in table.items():
            if registered is cls:
                return f"{kind} {name!r}"
    return cls.__name__


@torch.no_grad()
def scaled_init(module: nn.Module, scale: float = 1.0) -> None:
    """Kaiming-normal init of every conv/linear weight in ``module``, times ``scale``.

    ESRGAN scales the residual-dense-block weights by 0.1 so that a deep
    trunk starts close to the identity and trains stably.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            m.weight.mul_(scale)
            if m.bias is not None:
                m.bias.zero_()


class SubPixelOutput(nn.Module):
    """Output layer that is itself the sub-pixel convolution (ESPCN, FSRCNN).

    A conv makes ``upsample`` channels per output channel, a rows-only shuffle
    turns them into ``upsample`` times as many rows, and linear resampling
    lands on exactly ``out_rows``.

    Args:
        in_ch: input feature channels.
        upsample: integer row scale of the shuffle.
        kernel_size: conv kernel size.
    """

    def __init__(self, in_ch: int, upsample: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.upsample = upsample
        self.last = nn.Conv2d(in_ch, upsample, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor, out_rows: int) -> Tensor:
        """(B, in_ch, H, W) -> (B, 1, out_rows, W)."""
        return resample_rows(pixel_shuffle(self.last(x), self.upsample), out_rows)


class RowUpsample(nn.Module):
    """Rows-only sub-pixel upsampling of features to exactly ``out_rows`` rows.

    ``3x3 conv to out_ch * upsample * col_scale channels -> sub-pixel shuffle
    (rows by upsample, columns by col_scale) -> act -> anti-aliased linear
    resampling to out_rows`` (ECLARE's recipe for non-integer factors).

    Args:
        in_ch: input feature channels.
        out_ch: output feature channels.
        upsample: integer row scale of the shuffle.
        act: activation name (see :func:`make_act`).
        col_scale: column scale of the shuffle, undoing a
            :func:`pixel_unshuffle_cols` at the input.
    """

    def __init__(
        self, in_ch: int, out_ch: int, upsample: int, act: str = "lrelu", col_scale: int = 1
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.col_scale = col_scale
        self.conv = nn.Conv2d(in_ch, out_ch * upsample * col_scale, 3, padding=1)
        self.act = make_act(act, out_ch)

    def forward(self, x: Tensor, out_rows: int) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, out_rows, W * col_scale)."""
        feat = pixel_shuffle(self.conv(x), self.upsample, self.col_scale)
        return resample_rows(self.act(feat), out_rows)


class UpsampleTail(nn.Module):
    """Post-upsampling tail shared by the low-resolution-trunk generators.

    :class:`RowUpsample` to ``hr_ch`` channels, then ``hr_convs`` 3x3 convs
    with activation at high resolution, then the last conv to one channel.

    Args:
        in_ch: trunk feature channels.
        hr_ch: feature channels at high resolution.
        upsample: integer row scale of the shuffle.
        act: activation name (see :func:`make_act`).
        hr_convs: number of 3x3 convs at high resolution before the last conv.
        last_kernel: kernel size of the last conv (SRResNet uses 9).
        col_scale: column scale of the shuffle (see :class:`RowUpsample`).
    """

    def __init__(
        self,
        in_ch: int,
        hr_ch: int,
        upsample: int,
        act: str = "lrelu",
        hr_convs: int = 1,
        last_kernel: int = 3,
        col_scale: int = 1,
    ) -> None:
        super().__init__()
        self.up = RowUpsample(in_ch, hr_ch, upsample, act, col_scale)
        layers: list[nn.Module] = []
        for _ in range(hr_convs):
            layers += [nn.Conv2d(hr_ch, hr_ch, 3, padding=1), make_act(act, hr_ch)]
        self.hr = nn.Sequential(*layers)
        self.last = nn.Conv2d(hr_ch, 1, last_kernel, padding=last_kernel // 2)

    def forward(self, x: Tensor, out_rows: int) -> Tensor:
        """(B, in_ch, H, W / col_scale) -> (B, 1, out_rows, W)."""
        return self.last(self.hr(self.up(x, out_rows)))


class RowSRGenerator(ConfiguredNetwork):
    """Base class of the generators: input checks plus the global bicubic residual.

    Subclasses implement :meth:`residual` (what the network adds to bicubic
    interpolation) and :meth:`output_layers` (the convs whose zeroing makes
    the generator plain bicubic interpolation), and call :meth:`configure`.
    """

    def forward(self, x: Tensor, out_rows: int) -> Tensor:
        """Upsample rows of each slice.

        Args:
            x: (B, 1, H, W) float intensities, normalised to about [0, 1].
            out_rows: output rows, an integer >= H (the factor may be non-integer).

        Returns:
            (B, 1, out_rows, W) tensor.
        """
        bicubic = bicubic_rows(x, self._check_input(x, out_rows))
        return bicubic + self.residual(x, bicubic)

    def residual(self, x: Tensor, bicubic: Tensor) -> Tensor:
        """The learned correction to bicubic interpolation.

        Args:
            x: (B, 1, H, W) input.
            bicubic: (B, 1, out_rows, W) bicubic interpolation of ``x`` (pre-upsampling
                networks refine it; the others only read its row count).

        Returns:
            (B, 1, out_rows, W) tensor.

        Raises:
            NotImplementedError: in the base class; every generator defines it.
        """
        raise NotImplementedError

    def output_layers(self) -> list[nn.Module]:
        """The output convs: zeroing them makes the generator bicubic interpolation.

        Raises:
            NotImplementedError: in the base class; every generator defines it.
        """
        raise NotImplementedError

    def _check_input(self, x: Tensor, out_rows: int) -> int:
        """Raise :class:`InputError` on a bad input; return ``out_rows`` as a Python int.

        Any integer type (``numpy.int64`` too) is accepted; floats are refused
        rather than rounded, so that the caller decides how to round.
        """
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != 1:
            raise InputError(
                f"{name} got a tensor of shape {tuple(x.shape)}",
                expected="shape (batch, 1, rows, cols)",
                fix="add the batch and channel dimensions, e.g. x[:, None]",
            )
        try:
            rows = operator.index(out_rows) if not isinstance(out_rows, bool) else None
        except TypeError:
            rows = None
        if rows is None or rows < x.shape[-2]:
            raise InputError(
                f"{name} got out_rows={out_rows!r} for {x.shape[-2]} input rows",
                expected=f"an integer out_rows >= {x.shape[-2]}",
                fix="pass out_rows = round(rows * factor) with factor >= 1",
            )
        return rows


@torch.no_grad()
def zero_last_layer(generator: RowSRGenerator) -> RowSRGenerator:
    """Zero the output convs so that the generator starts as bicubic interpolation.

    Training from this state starts at the bicubic baseline; the first step
    moves the output convs off zero, after which the whole network learns.

    Args:
        generator: any generator of :data:`mrisr.networks.GENERATORS`.

    Returns:
        The same generator, changed in place.
    """
    for layer in generator.output_layers():
        for p in layer.parameters():
            p.zero_()
    return generator
