"""Pure affine maths: voxel sizes, thick-axis detection and the resampled grid.

The one convention (see docs/geometry.md): resampling along axis ``ax`` from
``n_in`` to ``n_out`` voxels keeps the field of view. With ``r = n_out / n_in``
the new affine is ``A_out = A_in @ S`` where ``S`` is the identity except
``S[ax, ax] = 1 / r`` and ``S[ax, 3] = (1 / r - 1) / 2``. Outer voxel edges and
the volume centre stay where they were; direction cosines, obliquity and
handedness are untouched. The same formula serves upsampling (``r > 1``) and
thick-slice simulation (``r < 1``), so simulate-then-upscale by a factor that
divides the slice count returns exactly the original grid.

All functions take and return new arrays; none mutates its input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mrisr.errors import GeometryError, NotThickSliceError

#: Below this ratio of thick to in-plane spacing a scan is treated as isotropic.
MIN_ANISOTROPY = 1.5


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing in mm along each array axis.

    Args:
        affine: (4, 4) voxel-to-world matrix.

    Returns:
        (3,) float64 column norms of ``affine[:3, :3]``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves upwards (Python's round() goes to even)."""
    return int(math.floor(x + 0.5))


def output_slice_count(n_in: int, factor: float) -> int:
    """Number of slices after resampling ``n_in`` slices by ``factor`` (>1 up, <1 down)."""
    return max(1, round_half_up(n_in * factor))


def resampled_affine(affine: np.ndarray, axis: int, n_in: int, n_out: int) -> np.ndarray:
    """Affine of the field-of-view-aligned grid with ``n_out`` voxels along ``axis``.

    Args:
        affine: (4, 4) voxel-to-world matrix of the input grid.
        axis: array axis being resampled (0, 1 or 2).
        n_in: voxels along ``axis`` in the input.
        n_out: voxels along ``axis`` in the output.

    Returns:
        A new (4, 4) float64 affine; the effective factor is ``n_out / n_in``.

    Raises:
        GeometryError: an axis other than 0, 1, 2, or a slice count below 1.
    """
    if axis not in (0, 1, 2):
        raise GeometryError(f"axis must be 0, 1 or 2, got {axis}", fix="pass axis 0, 1 or 2")
    if n_in < 1 or n_out < 1:
        raise GeometryError(
            f"slice counts must be positive, got n_in={n_in}, n_out={n_out}",
            fix="pass the voxels along the axis before (n_in) and after (n_out, e.g. "
            "round(n_in * factor)), both at least 1",
        )
    scale = np.eye(4)
    inverse_factor = n_in / n_out
    scale[axis, axis] = inverse_factor
    # Output voxel centre 0 sits half an output voxel inside the input's outer edge.
    scale[axis, 3] = (inverse_factor - 1.0) / 2.0
    return np.asarray(affine, dtype=np.float64) @ scale


def regridded_affine(
    affine: np.ndarray, shape_in: Sequence[int], shape_out: Sequence[int]
) -> np.ndarray:
    """Affine of the field-of-view-aligned grid with ``shape_out`` voxels, every axis at once.

    :func:`resampled_affine` along each axis in turn; the per-axis changes
    touch different rows of the matrix, so their order does not matter.

    Args:
        affine: (4, 4) voxel-to-world matrix of the input grid.
        shape_in: (3,) voxel counts of the input grid.
        shape_out: (3,) voxel counts of the output grid.

    Returns:
        A new (4, 4) float64 affine (the input's, unchanged, when the shapes agree).

    Raises:
        GeometryError: a voxel count below 1.
    """
    result = np.asarray(affine, dtype=np.float64).copy()
    for axis in range(3):
        if int(shape_out[axis]) != int(shape_in[axis]):
            result = resampled_affine(result, axis, int(shape_in[axis]), int(shape_out[axis]))
    return result


def counts_for_spacing(
    affine: np.ndarray, shape: Sequence[int], spacing_mm: float
) -> tuple[int, int, int]:
    """Voxel counts that keep each axis's field of view at (about) ``spacing_mm`` per voxel.

    Along an axis of ``n`` voxels of ``s`` mm the field of view is ``n * s`` mm;
    it is kept exactly, so the count is ``n * s / spacing_mm`` rounded (halves
    up, as :func:`output_slice_count`) and the voxel size ``n * s / count``
    comes within half a voxel's worth of ``spacing_mm``. The ratio is rounded
    to 1e-6 voxels first, so that float noise in an affine's column norms
    (0.99999994 mm for 1 mm) cannot flip an exact half.

    Args:
        affine: (4, 4) voxel-to-world matrix.
        shape: (3,) voxel counts.
        spacing_mm: the wanted voxel size in mm (> 0).

    Returns:
        (3,) voxel counts.
    """
    sizes = voxel_sizes(affine)
    return tuple(  # type: ignore[return-value]
        max(1, round_half_up(round(int(n) * float(s) / spacing_mm, 6)))
        for n, s in zip(shape[:3], sizes, strict=True)
    )


def voxel_centre_world(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World coordinates (mm) of the centre of a volume of ``shape`` voxels."""
    centre = (np.asarray(shape[:3], dtype=np.float64) - 1.0) / 2.0
    return np.asarray(affine, dtype=np.float64)[:3] @ np.append(centre, 1.0)


def detect_thick_axis(
    affine: np.ndarray,
    *,
    header_zooms: Sequence[float] | None = None,
    min_anisotropy: float = MIN_ANISOTROPY,
    source: str | None = None,
) -> int:
    """Find the one axis whose spacing is much larger than the other two.

    Args:
        affine: (4, 4) voxel-to-world matrix.
        header_zooms: the header's own voxel sizes (mm), cross-checked when given.
        min_anisotropy: smallest accepted ratio of thick to next-largest spacing.
        source: file name for error messages.

    Returns:
        The thick axis, 0, 1 or 2.

    Raises:
        NotThickSliceError: isotropic or nearly so (a GeometryError).
        GeometryError: two thick axes, or header and
            affine naming different thick axes.
    """
    spacing = voxel_sizes(affine)
    text = " x ".join(f"{s:.3g}" for s in spacing)
    order = np.argsort(spacing)
    smallest, middle, largest = spacing[order]
    thick = int(order[2])
    if largest / middle < min_anisotropy:
        if middle / smallest >= min_anisotropy:
            problem = f"has two thick axes (spacing {text} mm)"
            expected = "one axis with slices at least 1.5 times thicker than the other two"
            fix = "resample the scan to a grid with one thick axis, or pass --axis to choose one"
        else:
            problem = f"is already (nearly) isotropic (spacing {text} mm)"
            expected = f"one axis at least {min_anisotropy:g} times coarser than the others"
            fix = "pass --axis and --factor to upscale anyway"
            raise NotThickSliceError(problem, path=source, expected=expected, fix=fix)
        raise GeometryError(problem, path=source, expected=expected, fix=fix)
    if header_zooms is not None:
        zooms = np.asarray(header_zooms[:3], dtype=np.float64)
        if int(np.argmax(zooms)) != thick:
            raise GeometryError(
                f"header voxel sizes {tuple(np.round(zooms, 3))} and affine spacing "
                f"({text} mm) disagree on the thick axis",
                path=source,
                expected="header pixdim and affine describing the same grid",
                fix="repair the header, or pass --axis to choose the thick axis",
            )
    return thick


def isotropic_factor(affine: np.ndarray, axis: int) -> float:
    """Factor that brings the spacing along ``axis`` to the finest in-plane spacing."""
    spacing = voxel_sizes(affine)
    in_plane = [spacing[a] for a in range(3) if a != axis]
    return float(spacing[axis] / min(in_plane))
