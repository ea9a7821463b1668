"""Fusing the volumes super-resolved in the two planes that contain the thick axis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from mrisr.errors import ConfigError

Fusion = Literal["mean", "fba"]
FUSIONS: tuple[str, ...] = ("mean", "fba")


def check_fusion(method: object) -> None:
    """Refuse a fusion mrisr does not know; the one place this is decided.

    Raises:
        ConfigError: ``method`` is not one of :data:`FUSIONS`.
    """
    if method not in FUSIONS:
        raise ConfigError(
            f"unknown fusion {method!r}",
            expected=f"one of {', '.join(FUSIONS)}",
            fix="pass --fusion mean (voxel average, the default) or --fusion fba "
            "(Fourier burst accumulation)",
        )


def fuse_mean(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise average of same-shape volumes (the seed papers' fusion), float32."""
    # Summing in place avoids stacking copies of full-size volumes (peak memory).
    total = np.array(volumes[0], dtype=np.float32, copy=True)
    for volume in volumes[1:]:
        total += volume
    total /= len(volumes)
    return total


def fuse_fba(volumes: Sequence[np.ndarray], power: float = 11.0) -> np.ndarray:
    """Fourier burst accumulation (Delbracio & Sapiro 2015), as used by SMORE/ECLARE.

    Each 3D frequency is taken mostly from the volume with the largest
    magnitude there: weights ``|F_i|**power / sum_j |F_j|**power``. Each plane's
    reconstruction is sharp within its plane and softer across it, so this keeps
    the sharp frequencies of each.

    Args:
        volumes: same-shape (X, Y, Z) volumes.
        power: the exponent p; 0 gives the mean, large p picks the maximum.

    Returns:
        float32 volume of the same shape.
    """
    spectra = np.stack([np.fft.rfftn(np.asarray(v, np.float64)) for v in volumes])
    magnitude = np.abs(spectra)
    # Scale by the largest magnitude first so that |F|**p cannot overflow.
    relative = magnitude / np.maximum(magnitude.max(axis=0, keepdims=True), 1e-30)
    weights = relative**power
    weights /= np.maximum(weights.sum(axis=0, keepdims=True), 1e-30)
    shape = np.shape(volumes[0])
    fused = np.fft.irfftn((weights * spectra).sum(axis=0), s=shape, axes=range(len(shape)))
    return fused.astype(np.float32)


def fuse(volumes: Sequence[np.ndarray], method: Fusion = "mean") -> np.ndarray:
    """Fuse same-shape volumes with ``method`` (``"mean"`` or ``"fba"``).

    Args:
        volumes: the restacked planes, each (X, Y, Z) on the same grid.
        method: ``"mean"`` (voxel average) or ``"fba"`` (Fourier burst accumulation).

    Returns:
        The fused (X, Y, Z) float32 volume.

    Raises:
        ConfigError: an unknown method.
    """
    check_fusion(method)
    return fuse_fba(volumes) if method == "fba" else fuse_mean(volumes)
