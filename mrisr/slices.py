"""Volume <-> stacks of 2D slices that cross the thick axis.

Every 2D slice mrisr hands a network is laid out as (rows, cols) =
(thick axis, the other in-plane axis), so networks only ever upsample rows. A
volume thick along axis ``a`` is cut along each of the two other axes, giving
the two planes that contain the thick axis.
"""

from __future__ import annotations

import numpy as np

from mrisr.errors import ConfigError

#: The six (thick axis, slicing axis) combinations used to make training pairs.
PAIR_KINDS: tuple[tuple[int, int], ...] = tuple(
    (thick, cut) for thick in range(3) for cut in range(3) if cut != thick
)

#: Names of the slicing axes in RAS-ordered scans, for logs and reports.
AXIS_NAMES = ("sagittal", "coronal", "axial")


def slicing_axes(thick_axis: int) -> tuple[int, int]:
    """The two axes along which to cut so that every slice contains ``thick_axis``."""
    return tuple(a for a in range(3) if a != thick_axis)  # type: ignore[return-value]


def _order(thick_axis: int, slice_axis: int) -> tuple[int, int, int]:
    if thick_axis == slice_axis or {thick_axis, slice_axis} - {0, 1, 2}:
        raise ConfigError(
            f"thick_axis and slice_axis must be two different axes of 0, 1, 2; "
            f"got {thick_axis} and {slice_axis}",
            fix="pass the thick axis and one of the two other axes (slicing_axes(thick_axis) "
            "names them)",
        )
    other = 3 - thick_axis - slice_axis
    return slice_axis, thick_axis, other


def to_slice_stack(data: np.ndarray, thick_axis: int, slice_axis: int) -> np.ndarray:
    """Cut a volume into 2D slices along ``slice_axis``.

    Args:
        data: (X, Y, Z) volume.
        thick_axis: the axis that becomes the rows of every slice.
        slice_axis: the axis indexing the slices.

    Returns:
        Contiguous (n_slices, n_thick, n_other) copy.
    """
    return np.ascontiguousarray(np.moveaxis(data, _order(thick_axis, slice_axis), (0, 1, 2)))


def from_slice_stack(stack: np.ndarray, thick_axis: int, slice_axis: int) -> np.ndarray:
    """Exact inverse of :func:`to_slice_stack`: (n_slices, rows, cols) back to (X, Y, Z)."""
    return np.ascontiguousarray(np.moveaxis(stack, (0, 1, 2), _order(thick_axis, slice_axis)))
