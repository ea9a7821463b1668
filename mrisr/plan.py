"""The output grid of an upscale, decided before any voxel is computed, and the step onto it.

:func:`plan_upscale` picks the thick axis, the factor and the output grid,
either

* along the thick axis alone (the default, or ``factor``): the in-plane grid
  is kept, the thick axis gets ``round(n * factor)`` slices; or
* isotropic at ``spacing_mm`` (``--spacing MM``): every axis gets
  ``round(n * s / MM)`` voxels of (about) MM mm. The in-plane axes are
  downsampled first, by an area average (:func:`resample_in_plane`), then the
  model super-resolves the thick axis by ``s_thick / MM``.

Every axis follows the one field-of-view convention of :mod:`mrisr.geometry`
(docs/geometry.md): the outer voxel faces and the volume centre stay where they
were.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mrisr.errors import ConfigError, GeometryError, MrisrError
from mrisr.geometry import (
    MIN_ANISOTROPY,
    counts_for_spacing,
    detect_thick_axis,
    isotropic_factor,
    output_slice_count,
    regridded_affine,
    resampled_affine,
    voxel_sizes,
)
from mrisr.simulate import apply_along_axis, slice_profile_matrix
from mrisr.volume import Volume

log = logging.getLogger(__name__)

#: How the in-plane axes reach a coarser ``--spacing``: recorded in the sidecar.
IN_PLANE_METHOD = (
    "area average (box of one output voxel, field-of-view aligned; "
    "mrisr.simulate.slice_profile_matrix, profile 'mean')"
)


@dataclass(frozen=True)
class UpscalePlan:
    """Where the output grid goes, decided before any voxel is computed.

    Attributes:
        axis: the thick axis (0, 1 or 2).
        factor: the requested factor along the thick axis.
        n_in: input slices along ``axis``.
        n_out: output slices along ``axis`` (``round(n_in * factor)``).
        shape_in: input shape (X, Y, Z).
        shape_out: output shape.
        spacing_in: (3,) input voxel sizes in mm.
        spacing_out: (3,) output voxel sizes in mm.
        affine_out: (4, 4) output affine.
        shape_grid: the shape the model works on: the input's, or with
            ``spacing_mm`` the input resampled in-plane (thick axis unchanged).
        affine_grid: (4, 4) affine of ``shape_grid``.
        spacing_mm: the isotropic output spacing asked for (``--spacing``), or None.
    """

    axis: int
    factor: float
    n_in: int
    n_out: int
    shape_in: tuple[int, int, int]
    shape_out: tuple[int, int, int]
    spacing_in: tuple[float, float, float]
    spacing_out: tuple[float, float, float]
    affine_out: np.ndarray = field(repr=False)
    shape_grid: tuple[int, int, int]
    affine_grid: np.ndarray = field(repr=False)
    spacing_mm: float | None = None

    @property
    def effective_factor(self) -> float:
        """``n_out / n_in``: the factor the grid really has after rounding."""
        return self.n_out / self.n_in

    @property
    def resamples_in_plane(self) -> bool:
        """Whether the in-plane axes are resampled (downsampled) before the model runs."""
        return tuple(self.shape_grid) != tuple(self.shape_in)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        record: dict[str, Any] = {
            "axis": self.axis,
            "factor": self.factor,
            "effective_factor": self.effective_factor,
            "shape_in": list(self.shape_in),
            "shape_out": list(self.shape_out),
            "spacing_in_mm": list(self.spacing_in),
            "spacing_out_mm": list(self.spacing_out),
            "spacing_mm": self.spacing_mm,
            "in_plane_resampling": None,
        }
        if self.resamples_in_plane:
            grid = voxel_sizes(self.affine_grid)
            record["in_plane_resampling"] = {
                "shape": list(self.shape_grid),
                "spacing_mm": [float(s) for s in grid],
                "method": IN_PLANE_METHOD,
                "consistency_reference": "the input resampled in-plane to this grid",
            }
        return record


def _number(value: Any, name: str, flag: str, example: str) -> float | None:
    """``value`` as a float; None stays None. A string, bool or other type is refused."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        try:  # "4" read from a text file or a form: show it as the number it spells
            example = f"{float(value):g}" if isinstance(value, str) else example
        except ValueError:
            pass
        raise ConfigError(
            f"{name} must be a number, got {value!r} ({type(value).__name__})",
            fix=f"pass {name}={example} (on the command line {flag} {example})",
        )
    return float(value)


def check_grid_request(
    spacing_mm: float | None, factor: float | None, axis: int | None = None
) -> float | None:
    """Refuse a factor, ``--spacing`` or axis that no scan could use, before any scan is read.

    Args:
        spacing_mm: the isotropic output spacing asked for, or None.
        factor: the factor asked for, or None.
        axis: the thick axis asked for, or None.

    Returns:
        ``spacing_mm`` as a float (None when not given).

    Raises:
        ConfigError: a factor or spacing that is not a number (a string, a
            bool), an axis other than 0, 1 or 2, both a spacing and a factor,
            or a spacing that is not a finite positive number of mm.
    """
    factor = _number(factor, "factor", "--factor", "4")
    spacing = _number(spacing_mm, "spacing_mm", "--spacing", "1")
    if axis is not None and (
        isinstance(axis, (bool, np.bool_))
        or not isinstance(axis, (int, np.integer))
        or axis not in (0, 1, 2)
    ):
        # 2.0 == 2 but cannot index a shape; True == 1 but is no axis.
        raise ConfigError(
            f"axis must be 0, 1 or 2, got {axis!r}", fix="pass axis=0, 1 or 2 (--axis 0, 1 or 2)"
        )
    if spacing is None:
        return None
    if factor is not None:
        raise ConfigError(
            f"--spacing {spacing:g} and --factor {factor:g} both set the output grid",
            expected="one of them",
            fix="pass --spacing MM for an isotropic MM mm output, or --factor for the thick "
            "axis alone (in-plane grid kept), not both (spacing_mm= or factor= in the API)",
        )
    if not (math.isfinite(spacing) and spacing > 0):
        raise ConfigError(
            f"--spacing must be a positive number of mm, got {spacing_mm!r}",
            fix="pass --spacing MM, e.g. --spacing 1 for 1 mm isotropic voxels "
            "(spacing_mm=1 in the API)",
        )
    return spacing


def check_plan(
    plan: UpscalePlan,
    volume: Volume,
    *,
    factor: float | None,
    axis: int | None,
    spacing_mm: float | None,
) -> None:
    """Refuse a plan made for another volume, or one that contradicts ``factor``/``axis``/spacing.

    Raises:
        ConfigError: see :func:`check_grid_request`; a plan of another shape, or
            one whose factor, axis or spacing differs from those given.
    """
    check_grid_request(spacing_mm, factor, axis)
    if tuple(plan.shape_in) != tuple(volume.shape):
        raise ConfigError(
            f"the plan is for a volume of shape {plan.shape_in}, this one is {volume.shape}",
            path=volume.source,
            fix="pass plan=plan_upscale(volume, ...) of this volume, or leave plan out",
        )
    if (
        (factor is not None and factor != plan.factor)
        or (axis is not None and axis != plan.axis)
        or (spacing_mm is not None and spacing_mm != plan.spacing_mm)
    ):
        raise ConfigError(
            f"factor={factor}, axis={axis}, spacing_mm={spacing_mm} disagree with the plan's "
            f"factor {plan.factor:g}, axis {plan.axis}, spacing_mm {plan.spacing_mm}",
            fix="pass either a plan or factor, axis and spacing_mm, not both",
        )


def plan_upscale(
    volume: Volume,
    *,
    factor: float | None = None,
    axis: int | None = None,
    spacing_mm: float | None = None,
    min_anisotropy: float = MIN_ANISOTROPY,
) -> UpscalePlan:
    """Decide the thick axis, the factor and the output grid.

    Args:
        volume: the thick-slice scan.
        factor: upsampling factor along the thick axis; default the one that
            makes voxels isotropic at the finest in-plane spacing.
        axis: the thick axis; default detected from the spacing.
        spacing_mm: an isotropic output spacing in mm, no finer than the
            in-plane spacing and finer than the slice spacing: the in-plane
            axes are downsampled to it, the thick axis upsampled by
            ``thick spacing / spacing_mm``. Not together with ``factor``.
        min_anisotropy: passed to :func:`mrisr.geometry.detect_thick_axis`.

    Returns:
        The :class:`UpscalePlan`.

    Raises:
        ConfigError: an axis other than 0, 1 or 2, a factor that is not a
            finite number > 1 (a string, a bool), or a bad ``spacing_mm`` (see
            :func:`check_grid_request`; finer than the in-plane spacing, or
            not finer than the slice spacing).
        GeometryError: no thick axis (isotropic, or two thick axes), or the
            default factor on an axis no thicker than the in-plane spacing.
    """
    spacing_mm = check_grid_request(spacing_mm, factor, axis)
    factor = float(factor) if factor is not None else None
    source = str(volume.source) if volume.source is not None else None
    zooms = volume.header.get_zooms() if hasattr(volume.header, "get_zooms") else None
    if axis is None:
        axis = detect_thick_axis(
            volume.affine, header_zooms=zooms, min_anisotropy=min_anisotropy, source=source
        )
    else:  # the type and range were checked by check_grid_request
        _warn_if_not_the_thick_axis(volume, int(axis), zooms, min_anisotropy, source)
    axis = int(axis)
    n_in = volume.shape[axis]
    shape_grid, affine_grid = volume.shape, np.asarray(volume.affine, np.float64)
    if spacing_mm is not None:
        counts = _spacing_counts(volume, axis, spacing_mm, source)
        shape_grid = tuple(n_in if a == axis else counts[a] for a in range(3))
        affine_grid = regridded_affine(volume.affine, volume.shape, shape_grid)
        factor = float(voxel_sizes(volume.affine)[axis]) / spacing_mm
    elif factor is None:
        factor = isotropic_factor(volume.affine, axis)
        # Voxel sizes stored as float32 differ in their last digits: 0.5000000005 against
        # 0.4999999981 mm is "not thicker", not a factor of 1.000000005.
        if factor <= 1.0 + SAME_SPACING_TOLERANCE:
            raise GeometryError(
                f"axis {axis} is not thicker than the in-plane spacing "
                f"({' x '.join(f'{s:.3g}' for s in volume.spacing)} mm)",
                path=source,
                fix="pass --factor explicitly, or the right --axis",
            )
    if not (np.isfinite(factor) and factor > 1.0):
        raise ConfigError(f"factor must be a number > 1, got {factor}", fix="pass --factor > 1")
    # With a spacing every axis is counted alike (the thick one too).
    n_out = counts[axis] if spacing_mm is not None else output_slice_count(n_in, factor)
    if n_out <= n_in:  # a factor so close to 1 that rounding adds no slice
        # round_half_up(n_in * factor) >= n_in + 1 from here on; 4 decimals, up.
        smallest = math.ceil((n_in + 0.5) / n_in * 1e4) / 1e4
        raise ConfigError(
            f"factor {factor:g} adds no slice to the {n_in} slices along axis {axis} "
            f"({n_in} x {factor:g} rounds to {n_out}): nothing to super-resolve",
            path=source,
            expected=f"a factor of at least {smallest:g}",
            fix=f"pass --factor {smallest:g} or more",
        )
    affine_out = resampled_affine(affine_grid, axis, n_in, n_out)
    shape_out = list(shape_grid)
    shape_out[axis] = n_out
    check_memory(shape_out, factor, volume.source)
    return UpscalePlan(
        axis=axis,
        factor=float(factor),
        n_in=n_in,
        n_out=n_out,
        shape_in=volume.shape,
        shape_out=tuple(shape_out),  # type: ignore[arg-type]
        spacing_in=_sizes(volume.affine),
        spacing_out=_sizes(affine_out),
        affine_out=affine_out,
        shape_grid=tuple(int(n) for n in shape_grid),  # type: ignore[arg-type]
        affine_grid=affine_grid,
        spacing_mm=spacing_mm,
    )


#: Peak memory of an upscale per output voxel, bytes: about 45-52 measured end to end
#: (docs/end_to_end.md: 1.2 GB for 256 x 256 x 256, 4.1 GB for the FLAIR's 512 x 512 x 320),
#: rounded up.
BYTES_PER_OUTPUT_VOXEL = 64


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the system does not say (Windows)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(shape_out: Sequence[int], factor: float, source: Any = None) -> None:
    """Refuse an output grid that this machine cannot hold while it is computed.

    Raises:
        ConfigError: ``prod(shape_out) * BYTES_PER_OUTPUT_VOXEL`` exceeds the
            machine's physical memory (a factor of hundreds, typed by mistake,
            would otherwise fail after minutes with a bare allocation error).
    """
    memory = physical_memory()
    voxels = math.prod(int(n) for n in shape_out)
    need = voxels * BYTES_PER_OUTPUT_VOXEL
    if memory is not None and need > memory:
        shape = " x ".join(str(int(n)) for n in shape_out)
        raise ConfigError(
            f"factor {factor:g} makes an output of {shape} voxels, which needs about "
            f"{need / 2**30:.1f} GiB of memory to compute; this machine has {memory / 2**30:.1f} GiB",
            path=source,
            expected=f"an output of at most about {memory // BYTES_PER_OUTPUT_VOXEL:,} voxels",
            fix="pass a smaller --factor or a coarser --spacing, or run on a machine with more memory",
        )


#: Relative difference under which two voxel sizes count as the same.
SAME_SPACING_TOLERANCE = 1e-4


def _warn_if_not_the_thick_axis(
    volume: Volume, axis: int, zooms: Any, min_anisotropy: float, source: str | None
) -> None:
    """Warn when ``--axis`` names an axis other than the one the header says is thick.

    The thick axis is found as when no axis is given (same header zooms, same threshold).
    """
    try:
        detected = detect_thick_axis(
            volume.affine, header_zooms=zooms, min_anisotropy=min_anisotropy, source=source
        )
    except MrisrError:
        return  # isotropic or ambiguous: no thick axis to contradict
    if detected != axis:
        sizes = " x ".join(f"{s:.3g}" for s in volume.spacing)
        log.warning(
            "%s: --axis %d is not the thick axis of its voxels (%s mm: axis %d); the model "
            "will upsample an in-plane axis",
            source or "scan",
            axis,
            sizes,
            detected,
        )


def _sizes(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in voxel_sizes(affine))  # type: ignore[return-value]


def _spacing_counts(
    volume: Volume, axis: int, spacing_mm: float, source: str | None
) -> tuple[int, int, int]:
    """Voxel counts of the output grid at ``spacing_mm`` (:func:`counts_for_spacing`).

    Raises:
        ConfigError: ``spacing_mm`` not finer than the slice spacing (nothing
            to super-resolve), or finer than an in-plane spacing (which would
            need in-plane upsampling, which mrisr does not do).
    """
    sizes = voxel_sizes(volume.affine)
    text = " x ".join(f"{s:.3g}" for s in sizes)
    thick = float(sizes[axis])
    counts = counts_for_spacing(volume.affine, volume.shape, spacing_mm)
    # Finer, and by enough to add at least one slice to the field of view.
    n_thick = volume.shape[axis]
    if spacing_mm >= thick or counts[axis] <= n_thick:
        # n * thick / spacing must round (halves up) to n + 1 or more; 4 decimals, down.
        coarsest = math.floor(thick * n_thick / (n_thick + 0.5) * 1e4) / 1e4
        why = (
            f"is not finer than the slice spacing {thick:.3g} mm along the thick axis {axis}"
            if spacing_mm >= thick
            else f"adds no slice along the thick axis {axis} ({n_thick} slices of {thick:.3g} mm)"
        )
        raise ConfigError(
            f"--spacing {spacing_mm:g} mm {why} (spacing {text} mm): nothing to super-resolve",
            path=source,
            expected=f"a spacing of at most {coarsest:g} mm (one slice more)",
            fix=f"pass --spacing of at most {coarsest:g} mm, or omit --spacing",
        )
    in_plane = [a for a in range(3) if a != axis]
    if any(counts[a] > volume.shape[a] for a in in_plane):
        coarsest = max(float(sizes[a]) for a in in_plane)
        finest = min(float(sizes[a]) for a in in_plane)
        raise ConfigError(
            f"--spacing {spacing_mm:g} mm is finer than the in-plane spacing (spacing "
            f"{text} mm); mrisr super-resolves the thick axis only and does not upsample "
            "in-plane",
            path=source,
            expected=f"a spacing of at least {coarsest:.3g} mm",
            fix=f"omit --spacing for an output at the in-plane spacing ({finest:.3g} mm), or "
            f"pass --spacing of at least {coarsest:.3g} mm",
        )
    return counts


def resample_in_plane(volume: Volume, plan: UpscalePlan) -> Volume:
    """The scan on the plan's in-plane grid (``plan.shape_grid``), by an area average.

    Each in-plane axis going from ``n`` to ``m <= n`` voxels is averaged with
    the box profile of :func:`mrisr.simulate.slice_profile_matrix`: output
    voxel ``j`` is the mean of the input over exactly the interval it covers
    (fractional weights at its edges), centred where
    :func:`mrisr.geometry.resampled_affine` puts it. The box suppresses what
    the coarser grid cannot hold (anti-aliasing: "area" resampling), and it is
    the same forward model as a thick slice, so the data-consistency step can
    compare against this volume. The thick axis is untouched.

    Args:
        volume: the scan the plan was made for.
        plan: its :class:`UpscalePlan`.

    Returns:
        A new float32 Volume on ``plan.affine_grid`` (the input itself when
        the plan keeps the in-plane grid). ``meta`` is kept: the slice
        thickness along the thick axis still holds.

    Raises:
        ConfigError: the plan was made for a volume of another shape.
    """
    if tuple(plan.shape_in) != tuple(volume.shape):
        raise ConfigError(
            f"the plan is for a volume of shape {plan.shape_in}, this one is {volume.shape}",
            path=volume.source,
            fix="pass plan=plan_upscale(volume, ...) of this volume",
        )
    if not plan.resamples_in_plane:
        return volume
    data = np.asarray(volume.data)
    for a in range(3):
        if a != plan.axis and plan.shape_grid[a] != volume.shape[a]:
            data = apply_along_axis(
                slice_profile_matrix(volume.shape[a], plan.shape_grid[a]), data, a
            )
    return volume.with_data(np.asarray(data, np.float32), plan.affine_grid)


def working_grid(volume: Volume, plan: UpscalePlan) -> tuple[Volume, UpscalePlan]:
    """The volume the model works on and its plan: the scan resampled in-plane, if planned.

    The returned plan describes the same output grid from the resampled
    volume (its ``shape_in``/``spacing_in`` are the in-plane grid's), so every
    later step (consistency, adaptation, the model) sees one grid.

    Args:
        volume: the scan the plan was made for.
        plan: its :class:`UpscalePlan`.

    Returns:
        (volume, plan): both unchanged when the plan keeps the in-plane grid.

    Raises:
        ConfigError: the plan was made for a volume of another shape.
    """
    resampled = resample_in_plane(volume, plan)
    if resampled is volume:
        return volume, plan
    return resampled, replace(plan, shape_in=resampled.shape, spacing_in=_sizes(resampled.affine))
