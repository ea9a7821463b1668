"""Volume: voxels, affine and header travelling together, and its grid operations.

Reading, writing and validating volumes is :mod:`mrisr.io`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import ConfigError
from mrisr.geometry import voxel_sizes

#: What to pass to :meth:`Volume.crop` instead of a box it refuses.
_CROP_FIX = (
    "pass three slices with step 1 that keep voxels, e.g. (slice(0, 10), slice(None), slice(None))"
)


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
        return voxel_sizes(self.affine)

    def with_data(
        self,
        data: np.ndarray,
        affine: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Volume:
        """A new Volume with other voxels, on ``affine`` (default: this one's).

        On a new grid the header is a copy whose voxel sizes are the new
        affine's, so that header and affine keep describing the same grid
        (thick-axis detection cross-checks them).

        Args:
            data: (X, Y, Z) voxels on the new grid.
            affine: (4, 4) voxel-to-world matrix of the new grid (mm).
            meta: replaces ``meta`` (default: kept).
        """
        header = self.header
        if affine is None:
            affine = self.affine.copy()
        else:
            affine = np.asarray(affine, np.float64)
            if hasattr(header, "set_zooms") and hasattr(header, "get_zooms"):
                header = header.copy()
                zooms = list(header.get_zooms())
                zooms[:3] = voxel_sizes(affine)
                header.set_zooms(zooms)
        return replace(
            self,
            data=data,
            affine=affine,
            header=header,
            meta=dict(self.meta) if meta is None else meta,
        )

    def crop(self, box: tuple[slice, slice, slice]) -> Volume:
        """The voxels inside ``box``, on an affine that keeps them where they were in mm.

        Args:
            box: one ``slice(start, stop)`` per array axis (step 1; ``None``
                bounds allowed; negative indices count from the end, as numpy's).

        Returns:
            A new Volume holding a contiguous copy of the voxels; its affine is
            this one's shifted by ``start`` voxels along each axis, so every kept
            voxel maps to the same world position (mm) as before.

        Raises:
            ConfigError: (a ValueError) ``box`` does not have three slices, has a
                step other than 1, or selects no voxel along an axis.
        """
        if len(box) != 3 or any(not isinstance(b, slice) for b in box):
            raise ConfigError(f"box must be three slices, got {box!r}", fix=_CROP_FIX)
        starts = []
        for axis, (part, n) in enumerate(zip(box, self.shape, strict=True)):
            start, stop, step = part.indices(n)
            if step != 1 or stop <= start:
                raise ConfigError(
                    f"box selects no voxel (or steps) along axis {axis} ({n} voxels): {part!r}",
                    fix=_CROP_FIX,
                )
            starts.append(start)
        shift = np.eye(4)
        shift[:3, 3] = starts
        return self.with_data(np.ascontiguousarray(self.data[box]), self.affine @ shift)
