"""Generators and discriminators for slice super-resolution, by name.

Generators upsample the rows (thick axis) of (B, 1, H, W) slices to any
``out_rows >= H``: ``generator(x, out_rows) -> (B, 1, out_rows, W)``, always
as bicubic interpolation plus a learned residual. Discriminators score
(B, 1, h, w) patches (h, w >= 32). Every model keeps its constructor
arguments in ``model.config`` (JSON-serialisable), so that
``GENERATORS[name](**config)`` rebuilds it from a checkpoint.

Example:
    >>> import torch
    >>> from mrisr.networks import build_generator
    >>> g = build_generator("rrdbnet", size="small")
    >>> y = g(torch.rand(2, 1, 64, 256), out_rows=211)  # (2, 1, 211, 256)
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from mrisr.errors import ConfigError
from mrisr.networks.attn_srgan import AttnSRGAN
from mrisr.networks.classic import DRCN, ESPCN, FSRCNN, SRCNN, VDSR
from mrisr.networks.common import RowSRGenerator, bicubic_rows, zero_last_layer
from mrisr.networks.complexity import count_parameters, macs_per_output_voxel
from mrisr.networks.discriminators import (
    PatchGANDiscriminator,
    SN8Discriminator,
    SRGANDiscriminator,
    UNetDiscriminatorSN,
    VGGStyleDiscriminator,
)
from mrisr.networks.rrdbnet import RRDBNet
from mrisr.networks.rrgan import RRGAN, intermediate_rows
from mrisr.networks.srlrgan import SRLRGAN
from mrisr.networks.srresnet import SRResNet

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "GENERATOR_SIZES",
    "RowSRGenerator",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "bicubic_rows",
    "intermediate_rows",
    "macs_per_output_voxel",
    "zero_last_layer",
]

#: Generator classes by name; ``GENERATORS[name](**model.config)`` rebuilds a model.
GENERATORS: dict[str, type[RowSRGenerator]] = {
    "rrdbnet": RRDBNet,
    "srcnn": SRCNN,
    "fsrcnn": FSRCNN,
    "espcn": ESPCN,
    "vdsr": VDSR,
    "drcn": DRCN,
    "srresnet": SRResNet,
    "srlrgan": SRLRGAN,
    "rrgan": RRGAN,
    "attn-srgan": AttnSRGAN,
}

#: Discriminator classes by name.
DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "vgg": VGGStyleDiscriminator,
    "unet": UNetDiscriminatorSN,
    "patch": PatchGANDiscriminator,
    "sn8": SN8Discriminator,
    "srgan": SRGANDiscriminator,
}

#: Named sizes: constructor kwargs by generator and size name.
#: ``rrdbnet/full`` is ESRGAN's network; ``rrdbnet/small`` is an RRDB net of
#: about 7,700 MACs per output voxel at 4x (one RRDB of 16 channels, growth 8,
#: trunk on half the columns, 8 channels at high resolution) for CPU use.
GENERATOR_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "rrdbnet": {
        "full": dict(num_feat=64, num_block=23, num_grow_ch=32),
        "small": dict(num_feat=16, num_block=1, num_grow_ch=8, num_hr_feat=8, col_unshuffle=2),
    },
}


def _build(kind: str, table: dict[str, type[nn.Module]], name: str, kwargs: dict) -> nn.Module:
    if name not in table:
        raise ConfigError(
            f"unknown {kind} {name!r}",
            expected=f"one of {', '.join(sorted(table))}",
            fix=f"choose a {kind} from that list",
        )
    cls = table[name]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        accepted = ", ".join(inspect.signature(cls).parameters)
        raise ConfigError(
            f"{kind} {name!r} does not accept these settings: {err}",
            expected=f"settings among: {accepted}",
            fix="remove or rename the setting",
        ) from err
    return cls(**kwargs)


def build_generator(name: str, size: str | None = None, **kwargs: Any) -> RowSRGenerator:
    """Build a generator by name.

    Args:
        name: a key of :data:`GENERATORS`.
        size: optional named size of :data:`GENERATOR_SIZES` (e.g. ``"small"``);
            ``kwargs`` override its values.
        **kwargs: constructor arguments.

    Returns:
        The generator, with ``config`` holding all its constructor arguments.

    Raises:
        ConfigError: unknown name or size, or a setting the generator does not accept.
    """
    if size is not None:
        sizes = GENERATOR_SIZES.get(name, {})
        if size not in sizes:
            raise ConfigError(
                f"generator {name!r} has no size {size!r}",
                expected=f"one of {', '.join(sizes) or '(no named sizes)'}",
                fix="leave size unset or pick a listed one",
            )
        kwargs = {**sizes[size], **kwargs}
    return _build("generator", GENERATORS, name, kwargs)


def build_discriminator(name: str, **kwargs: Any) -> nn.Module:
    """Build a discriminator by name.

    Args:
        name: a key of :data:`DISCRIMINATORS`.
        **kwargs: constructor arguments.

    Returns:
        The discriminator, with ``config`` holding its constructor arguments.

    Raises:
        ConfigError: unknown name, or a setting the discriminator does not accept.
    """
    return _build("discriminator", DISCRIMINATORS, name, kwargs)
