"""Generators and discriminators for slice super-resolution, by name.

Generators upsample the rows (thick axis) of (B, 1, H, W) slices to any
``out_rows >= H``: ``generator(x, out_rows) -> (B, 1, out_rows, W)``, always
as bicubic interpolation plus a learned residual. Discriminators score
(B, 1, h, w) patches (h, w >= 32). Every network describes its own
configuration (:class:`ConfiguredNetwork`): its constructor's signature lists
its settings once, ``cls.sizes`` names its ``small`` and ``full`` sizes, and
``model.config`` (JSON-serialisable) holds what it was built with, so that
``GENERATORS[name](**config)`` rebuilds it from a checkpoint.

Example:
    >>> import torch
    >>> from mrisr.networks import build_generator
    >>> g = build_generator("rrdbnet", size="small")
    >>> y = g(torch.rand(2, 1, 64, 256), out_rows=211)  # (2, 1, 211, 256)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from mrisr.errors import ConfigError
from mrisr.networks.attn_srgan import AttnSRGAN
from mrisr.networks.classic import DRCN, ESPCN, FSRCNN, SRCNN, VDSR
from mrisr.networks.common import (
    ConfiguredNetwork,
    RowSRGenerator,
    bicubic_rows,
    zero_last_layer,
)
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
    "ConfiguredNetwork",
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
DISCRIMINATORS: dict[str, type[ConfiguredNetwork]] = {
    "vgg": VGGStyleDiscriminator,
    "unet": UNetDiscriminatorSN,
    "patch": PatchGANDiscriminator,
    "sn8": SN8Discriminator,
    "srgan": SRGANDiscriminator,
}

#: Named sizes of every generator, as each class states them (``cls.sizes``):
#: a read-only view by name, not a second table.
GENERATOR_SIZES: Mapping[str, Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {name: cls.sizes for name, cls in GENERATORS.items()}
)


def _build(kind: str, table: Mapping[str, type], name: str, size: str | None, kwargs: dict):
    """The network ``table[name]`` at ``size``, ``kwargs`` over the size's settings."""
    if name not in table:
        raise ConfigError(
            f"unknown {kind} {name!r}",
            expected=f"one of {', '.join(sorted(table))}",
            fix=f"choose a {kind} from that list",
        )
    cls = table[name]
    if size is not None:
        kwargs = {**cls.size_settings(size), **kwargs}
    cls.check_settings(kwargs)
    return cls(**kwargs)


def build_generator(name: str, size: str | None = None, **kwargs: Any) -> RowSRGenerator:
    """Build a generator by name.

    Args:
        name: a key of :data:`GENERATORS`.
        size: optional named size of the generator (``"small"`` or ``"full"``,
            see :attr:`ConfiguredNetwork.sizes`); ``kwargs`` override its values.
        **kwargs: constructor arguments.

    Returns:
        The generator, with ``config`` holding all its constructor arguments.

    Raises:
        ConfigError: unknown name or size, or a setting the generator does not accept.
    """
    return _build("generator", GENERATORS, name, size, kwargs)


def build_discriminator(name: str, size: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a discriminator by name.

    Args:
        name: a key of :data:`DISCRIMINATORS`.
        size: optional named size (``"small"`` or ``"full"``); ``kwargs`` override it.
        **kwargs: constructor arguments.

    Returns:
        The discriminator, with ``config`` holding its constructor arguments.

    Raises:
        ConfigError: unknown name or size, or a setting the discriminator does not accept.
    """
    return _build("discriminator", DISCRIMINATORS, name, size, kwargs)
