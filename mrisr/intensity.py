"""Robust intensity normalisation and its exact inverse.

Networks see intensities mapped linearly so that the background sits near 0 and
bright tissue near 1. The map is linear and never clips, so undoing it returns
the original values exactly (up to float32 rounding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mrisr.errors import InputError


@dataclass(frozen=True)
class Normalisation:
    """Linear map ``(x - low) / (high - low)``.

    Attributes:
        low: intensity sent to 0 (the 0.5th percentile of all voxels).
        high: intensity sent to 1 (the 99.5th percentile of the foreground).
    """

    low: float
    high: float

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of ``data`` (any shape)."""
        return ((np.asarray(data, np.float32) - self.low) / (self.high - self.low)).astype(
            np.float32
        )

    def invert(self, data: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`: float32 copy back on the original intensity scale."""
        return (np.asarray(data, np.float32) * (self.high - self.low) + self.low).astype(np.float32)

    def to_dict(self) -> dict[str, float]:
        """JSON-ready description, for provenance sidecars and checkpoints."""
        return {"method": "percentile", **asdict(self)}


def fit_normalisation(
    data: np.ndarray, *, low_percentile: float = 0.5, high_percentile: float = 99.5
) -> Normalisation:
    """Pick a robust intensity range from the voxels.

    The upper bound is taken over the foreground (voxels above the lower bound)
    so that a large zero background, as in skull-stripped scans, does not pull
    it down.

    Args:
        data: voxel array of any shape.
        low_percentile: percentile of all voxels mapped to 0.
        high_percentile: percentile of the foreground mapped to 1.

    Returns:
        The fitted :class:`Normalisation`.

    Raises:
        InputError: no voxel is brighter than the background level (a constant
            or all-zero image).
    """
    values = np.asarray(data, dtype=np.float32).ravel()
    low = float(np.percentile(values, low_percentile))
    foreground = values[values > low]
    if foreground.size == 0:
        raise InputError(
            "has no voxel brighter than its background level",
            expected="an image with some contrast",
            fix="check that the right file or frame was given",
        )
    high = float(np.percentile(foreground, high_percentile))
    if not high > low:
        high = float(foreground.max())
    return Normalisation(low=low, high=high)
