"""Volume: voxels, affine and header travelling together; loading, saving, validation.

This module owns every file format mrisr reads or writes. (Load/save are
filled in below the dataclass.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Volume:
    """A 3D image on a grid.

    Attributes:
        data: (X, Y, Z) voxel array, in the voxel order of the file.
        affine: (4, 4) float64 voxel-to-world (RAS+, mm) matrix, NIfTI convention.
        header: the source file's header (nibabel header for NIfTI/MGH), or None.
        source: the file or folder it was read from, or that the volume it was
            derived from (by simulation or upscaling) was read from; None for
            in-memory data. Saving refuses to write over it.
        meta: extra facts worth recording (e.g. qform/sform codes, slice thickness).
    """

    data: np.ndarray
    affine: np.ndarray
    header: Any = None
    source: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel counts along the three array axes."""
        return tuple(int(n) for n in self.data.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """(3,) voxel sizes in mm along the array axes."""
        from mrisr.geometry import voxel_sizes

        return voxel_sizes(self.affine)

    def with_data(self, data: np.ndarray, affine: np.ndarray | None = None) -> Volume:
        """A new Volume on ``affine`` (default: this one's) with other voxels, same header."""
        return replace(
            self,
            data=data,
            affine=self.affine.copy() if affine is None else np.asarray(affine, np.float64),
        )
