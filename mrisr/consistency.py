"""Data consistency: the output must give back the measured slices.

A thick slice is the average of the thin voxels it covers (its slice profile,
:mod:`mrisr.simulate`). This module knows a scan's slice thickness and spacing
along the thick axis (:func:`slice_thickness`) and projects an upscaled volume
onto the set of volumes whose re-simulated thick slices equal the input exactly
(:func:`enforce_consistency`), the data-consistency step of model-based
reconstruction (e.g. Schlemper et al., "A deep cascade of convolutional neural
networks for dynamic MR image reconstruction", IEEE TMI 2018).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.errors import ConfigError
from mrisr.simulate import apply_along_axis, slice_profile_matrix
from mrisr.volume import Volume

if TYPE_CHECKING:
    from mrisr.upscale import UpscalePlan

log = logging.getLogger(__name__)


#: ``--consistency`` with slices this many times thicker than their spacing is
#: refused: the overlapping box profiles make the projection ill-conditioned.
MAX_CONSISTENCY_OVERLAP = 1.5


def consistency_width(thickness: dict[str, Any], plan: UpscalePlan) -> float:
    """The slice profile's width in output voxels for :func:`enforce_consistency`.

    Raises:
        ConfigError: a thickness under one output voxel (nothing to average),
            or over 1.5 times the spacing (an ill-posed projection).
    """
    value, spacing = thickness["slice_thickness_mm"], thickness["slice_spacing_mm"]
    voxel = float(plan.spacing_out[plan.axis])
    if value < voxel or value > MAX_CONSISTENCY_OVERLAP * spacing:
        raise ConfigError(
            f"--consistency needs a slice thickness between one output voxel ({voxel:.3g} mm) "
            f"and {MAX_CONSISTENCY_OVERLAP:g} x the slice spacing ({spacing:.3g} mm), "
            f"got {value:.3g} mm ({thickness['slice_thickness_source']})",
            fix="check --thickness, use a larger --factor, or drop --consistency",
        )
    return value / voxel


def slice_thickness(
    volume: Volume, plan: UpscalePlan, thickness_mm: float | None = None
) -> dict[str, Any]:
    """The scan's slice thickness and spacing along the thick axis, and where the thickness came from.

    Args:
        volume: the thick-slice scan.
        plan: its upscale plan (the thick axis and spacing).
        thickness_mm: a thickness given by the user, in mm.

    Returns:
        ``{"slice_thickness_mm", "slice_spacing_mm", "slice_thickness_source"}``,
        the source being ``"given"``, ``"header"`` or ``"spacing"`` (assumed).

    Raises:
        ConfigError: a given thickness that is not a positive finite number.
    """
    spacing = float(plan.spacing_in[plan.axis])
    header = volume.meta.get("slice_thickness_mm")
    if thickness_mm is not None:
        value, source = float(thickness_mm), "given"
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(
                f"slice thickness must be a positive number of mm, got {value:g}",
                path=volume.source,
                fix="pass --thickness in mm (the scan's slice thickness), or leave it out",
            )
    elif header is not None and np.isfinite(header) and header > 0:
        value, source = float(header), "header"
    else:
        value, source = spacing, "spacing"
    if abs(value - spacing) > 0.05 * spacing:
        log.warning(
            "%s: slice thickness %.3g mm differs from the slice spacing %.3g mm (%s); "
            "models are trained on contiguous slices, so expect less gain",
            volume.source or "scan",
            value,
            spacing,
            "gaps" if value < spacing else "overlaps",
        )
    return {
        "slice_thickness_mm": value,
        "slice_spacing_mm": spacing,
        "slice_thickness_source": source,
    }


def enforce_consistency(
    upscaled: np.ndarray, thick: np.ndarray, axis: int, thickness: float | None = None
) -> np.ndarray:
    """Project ``upscaled`` so that re-simulating its thick slices gives ``thick`` exactly.

    Uses the block-mean slice model ``W`` (n_in x n_out) and the smallest
    correction that satisfies ``W @ x == thick`` along ``axis``:
    ``x + W.T @ inv(W @ W.T) @ (thick - W @ x)``.
    """
    n_out, n_in = upscaled.shape[axis], thick.shape[axis]
    forward = slice_profile_matrix(n_out, n_in, thickness=thickness)
    correction = forward.T @ np.linalg.inv(forward @ forward.T)
    residual = thick - apply_along_axis(forward, upscaled, axis)
    return upscaled + apply_along_axis(correction, residual, axis)
