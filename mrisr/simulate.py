"""Thick-slice simulation along any axis, for any factor.

A thick slice is modelled as a weighted average of the thin slices it covers:
its slice profile. Each output slice ``k`` is centred where the field-of-view
convention of :mod:`mrisr.geometry` puts it, at input coordinate
``c_k = (k + 0.5) * n_in / n_out - 0.5`` (in input voxels), and averages the
input through one of two profiles of full width ``thickness``:

* ``mean`` (default, the seed papers' "mean downsampling"): a box; with the
  default thickness equal to the spacing this is block averaging, with
  fractional weights at block edges for non-integer factors;
* ``gaussian``: a Gaussian whose FWHM is the thickness.

A thickness smaller than the slice spacing leaves a gap between slices; a
larger one makes them overlap. Weights are exact integrals of the profile over
each input voxel, renormalised where a profile runs past the volume's edge.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.special import ndtr

from mrisr.errors import ConfigError
from mrisr.geometry import output_slice_count, resampled_affine, voxel_sizes
from mrisr.volume import Volume

Profile = Literal["mean", "gaussian"]
PROFILES: tuple[str, ...] = ("mean", "gaussian")
log = logging.getLogger(__name__)

#: Thick slices a simulated volume must keep: mrisr reads no volume with fewer
#: than 2 voxels along an axis (:func:`mrisr.io.validation.check_shape`).
MIN_SLICES = 2


def check_profile(profile: object) -> None:
    """Refuse a slice profile mrisr does not model; the one place this is decided.

    Raises:
        ConfigError: ``profile`` is not one of :data:`PROFILES` ("mean", the box
            of a contiguous slice, or "gaussian").
    """
    if profile not in PROFILES:
        raise ConfigError(
            f"unknown slice profile {profile!r}",
            expected=f"one of {', '.join(PROFILES)} (mean: a box, the block average)",
            fix="pass mean (a box: the block average) or gaussian",
        )


def slice_profile_matrix(
    n_in: int, n_out: int, *, profile: Profile = "mean", thickness: float | None = None
) -> np.ndarray:
    """Weights that turn ``n_in`` thin slices into ``n_out`` thick ones.

    Args:
        n_in: thin slices along the axis.
        n_out: thick slices (<= n_in).
        profile: ``"mean"`` (box) or ``"gaussian"``.
        thickness: full width of the profile in input voxels (box width, or
            Gaussian FWHM); default the thick slice spacing ``n_in / n_out``.

    Returns:
        (n_out, n_in) float64 matrix whose rows sum to 1.

    Raises:
        ConfigError: an unknown profile, or a thickness that is not a finite
            number > 0 or is too thin to cover any input voxel.
    """
    check_profile(profile)
    spacing = n_in / n_out
    width = spacing if thickness is None else float(thickness)
    if not (math.isfinite(width) and width > 0):
        raise ConfigError(
            f"slice thickness must be positive, got {width:g} voxels",
            expected="a finite profile width > 0 in thin voxels",
            fix="pass a thickness > 0 (in thin voxels), or leave it out for the slice spacing",
        )
    centres = (np.arange(n_out) + 0.5) * spacing - 0.5
    lower_edges = np.arange(n_in) - 0.5
    upper_edges = lower_edges + 1.0
    if profile == "mean":
        start = centres[:, None] - width / 2
        stop = centres[:, None] + width / 2
        weights = np.clip(np.minimum(stop, upper_edges) - np.maximum(start, lower_edges), 0, None)
    else:
        sigma = width / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        weights = ndtr((upper_edges - centres[:, None]) / sigma) - ndtr(
            (lower_edges - centres[:, None]) / sigma
        )
    totals = weights.sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        raise ConfigError(
            f"slice thickness {width:g} voxels is too thin to cover any input voxel",
            fix="use a thickness of at least one input voxel",
        )
    return weights / totals


def apply_along_axis(matrix: np.ndarray, data: np.ndarray, axis: int) -> np.ndarray:
    """Multiply every 1D line of ``data`` along ``axis`` by ``matrix`` ((m, n) @ (n,)).

    Returns a new float32 array whose length along ``axis`` is ``m``.
    """
    moved = np.moveaxis(np.asarray(data, np.float32), axis, 0)
    result = np.tensordot(matrix.astype(np.float32), moved, axes=(1, 0))
    return np.ascontiguousarray(np.moveaxis(result, 0, axis))


def simulate_thick_slices(
    data: np.ndarray,
    axis: int,
    factor: float,
    *,
    profile: Profile = "mean",
    thickness: float | None = None,
) -> np.ndarray:
    """Thick-slice version of ``data`` along ``axis``.

    Args:
        data: (X, Y, Z) thin-slice voxels.
        axis: the axis made thick.
        factor: ratio of thick to thin spacing (> 1; non-integer allowed).
        profile: slice profile, ``"mean"`` or ``"gaussian"``.
        thickness: profile width in thin voxels; default the thick spacing.

    Returns:
        float32 array with ``round(n / factor)`` slices along ``axis``.

    Raises:
        ConfigError: a factor that is not a finite number > 1, or a bad profile
            or thickness (see :func:`slice_profile_matrix`).
    """
    value = _checked_factor(factor)
    n_in = data.shape[axis]
    n_out = output_slice_count(n_in, 1.0 / value)
    matrix = slice_profile_matrix(n_in, n_out, profile=profile, thickness=thickness)
    return apply_along_axis(matrix, data, axis)


def check_simulation_factor(
    n_in: int, axis: int, factor: float, *, source: str | Path | None = None
) -> int:
    """Refuse a factor that is no number > 1, or that leaves too few thick slices.

    Args:
        n_in: thin slices along ``axis``.
        axis: the axis made thick (for the message).
        factor: thick / thin spacing ratio.
        source: the volume's file (for the message).

    Returns:
        The thick slices that remain, ``round(n_in / factor)`` (at least :data:`MIN_SLICES`).

    Raises:
        ConfigError: as above; the message says how many slices would remain
            and the largest factor that keeps :data:`MIN_SLICES`.
    """
    value = _checked_factor(factor, source)
    n_out = output_slice_count(n_in, 1.0 / value)
    effective = n_in / n_out
    if n_out >= MIN_SLICES and abs(effective / value - 1) > 0.05:
        # The slice count is rounded: 48 slices at 31x give 2 slices of 24x. Say so.
        log.warning(
            "factor %g along axis %d gives %d of %d slices: the thick slices are %.3g times "
            "the thin ones, not %g (at most %g keeps %d slices exactly)",
            value, axis, n_out, n_in, effective, value, n_in / MIN_SLICES, MIN_SLICES,
        )  # fmt: skip
    if n_out < MIN_SLICES:
        # n_in / MIN_SLICES always rounds to MIN_SLICES slices or more.
        largest = n_in / MIN_SLICES
        raise ConfigError(
            f"factor {value:g} along axis {axis} would leave {n_out} of {n_in} slices, "
            f"and mrisr reads no volume with fewer than {MIN_SLICES}",
            path=source,
            expected=f"a factor of at most {largest:g} for {n_in} slices along axis {axis}",
            fix=f"pass --factor {largest:g} or less, or make another axis thick",
        )
    return n_out


def _checked_factor(factor: float, source: str | Path | None = None) -> float:
    """``factor`` as a float, refused unless a finite number > 1; the one place this is decided."""
    try:
        value = float(factor)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 1):
        raise ConfigError(
            f"the simulation factor must be a finite number > 1, got {factor}",
            path=source,
            fix="pass --factor > 1 (thick slice spacing / thin spacing, e.g. 4)",
        )
    return value


def simulate_volume(
    volume: Volume,
    axis: int,
    factor: float,
    *,
    profile: Profile = "mean",
    thickness_mm: float | None = None,
    gap_mm: float | None = None,
) -> Volume:
    """Simulate a thick-slice acquisition of ``volume`` along ``axis``.

    Args:
        volume: the thin-slice (high-resolution) volume.
        axis: the axis made thick (0, 1 or 2).
        factor: ratio of thick to thin spacing (> 1).
        profile: ``"mean"`` or ``"gaussian"``.
        thickness_mm: slice thickness in mm; default the new slice spacing
            minus ``gap_mm``.
        gap_mm: gap between slices in mm (negative for overlap); give this or
            ``thickness_mm``, not both.

    Returns:
        A new Volume on the field-of-view-aligned thick grid; ``meta`` records
        ``slice_thickness_mm``, ``slice_spacing_mm`` and the simulation settings.

    Raises:
        ConfigError: an axis other than 0, 1, 2; a factor that is not a finite
            number > 1 or that would leave fewer than :data:`MIN_SLICES` slices
            (mrisr could not read the result); both a thickness and a gap.
    """
    if axis not in (0, 1, 2):
        raise ConfigError(
            f"axis must be 0, 1 or 2, got {axis}", path=volume.source, fix="pass --axis 0, 1 or 2"
        )
    check_simulation_factor(volume.shape[axis], axis, factor, source=volume.source)
    if thickness_mm is not None and gap_mm is not None:
        raise ConfigError(
            "both a slice thickness and a gap were given",
            expected="one of them (thickness = spacing - gap)",
            fix="drop --gap or --thickness",
        )
    n_in = volume.shape[axis]
    n_out = output_slice_count(n_in, 1.0 / factor)
    thin_mm = float(voxel_sizes(volume.affine)[axis])
    spacing_mm = thin_mm * n_in / n_out
    if thickness_mm is None:
        thickness_mm = spacing_mm - (gap_mm or 0.0)
    if not (math.isfinite(thickness_mm) and thickness_mm > 0):
        raise ConfigError(
            f"the simulated slices would be {thickness_mm:g} mm thick "
            f"(slice spacing {spacing_mm:.4g} mm, gap {gap_mm or 0:g} mm)",
            path=volume.source,
            expected="a positive slice thickness in mm",
            fix=f"pass --thickness > 0 or a --gap below {spacing_mm:.4g} mm",
        )
    data = simulate_thick_slices(
        volume.data, axis, factor, profile=profile, thickness=thickness_mm / thin_mm
    )
    affine = resampled_affine(volume.affine, axis, n_in, n_out)
    meta = {
        **volume.meta,
        "slice_thickness_mm": float(thickness_mm),
        "slice_spacing_mm": float(spacing_mm),
        "simulation": {"axis": axis, "factor": float(factor), "profile": profile},
    }
    return volume.with_data(data, affine, meta=meta)
