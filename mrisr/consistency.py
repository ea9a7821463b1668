"""Data consistency: the output must give back the measured slices.

A thick slice is the average of the thin voxels it covers (its slice profile,
:mod:`mrisr.simulate`). This module knows a scan's slice thickness and spacing
along the thick axis (:func:`slice_thickness`), measures how far a model's raw
slices are from the measured ones (:func:`through_plane_residual`, which judges
per-scan adaptation) and projects an upscaled volume
onto the set of volumes whose re-simulated thick slices equal the input exactly,
alternating with the input's intensity range (:func:`constrain_to_input`): the
data-consistency step of model-based
reconstruction (e.g. Schlemper et al., "A deep cascade of convolutional neural
networks for dynamic MR image reconstruction", IEEE TMI 2018).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.errors import ConfigError
from mrisr.simulate import Profile, apply_along_axis, slice_profile_matrix
from mrisr.volume import Volume

if TYPE_CHECKING:
    from mrisr.upscale import SliceModel, UpscalePlan

log = logging.getLogger(__name__)


#: ``--consistency`` with slices this many times thicker than their spacing is
#: refused: the overlapping box profiles make the projection ill-conditioned.
MAX_CONSISTENCY_OVERLAP = 1.5
#: Rounds of consistency and range steps without a 1 % fall of the residual
#: after which the two constraints are taken not to meet (:func:`constrain_to_input`).
STALL_ROUNDS = 10
#: A given slice thickness over this many times the slice spacing is refused: slices
#: overlapping that much are not an MRI acquisition (2x is the usual most, e.g. a 3D
#: scan reconstructed with zero-filling); it is a typo or the wrong unit.
MAX_THICKNESS_OVER_SPACING = 3.0
#: Slices of each plane :func:`through_plane_residual` runs, evenly spread over the scan.
CHECK_SLICES = 48


def consistency_width(thickness: dict[str, Any], plan: UpscalePlan) -> float:
    """The slice profile's width in output voxels for :func:`constrain_to_input`.

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


def consistency_choice(
    thickness: dict[str, Any], plan: UpscalePlan, requested: bool | None
) -> tuple[float, bool, str | None]:
    """Whether to project, and the profile width (output voxels) for the projection and residual.

    Args:
        thickness: :func:`slice_thickness` of the scan.
        plan: its upscale plan.
        requested: True (``--consistency``: refuse what cannot be done), False
            (``--no-consistency``) or None (the default: project wherever the
            slice thickness allows it, else say why not).

    Returns:
        (width in output voxels, project or not, why not or None). Without a
        usable thickness the width is clamped to the usable range, for the
        residual only.

    Raises:
        ConfigError: ``requested`` is True and the thickness is unusable
            (see :func:`consistency_width`).
    """
    if requested:
        return consistency_width(thickness, plan), True, None
    voxel = float(plan.spacing_out[plan.axis])
    clamped = float(
        np.clip(
            thickness["slice_thickness_mm"],
            voxel,
            max(voxel, MAX_CONSISTENCY_OVERLAP * thickness["slice_spacing_mm"]),
        )
        / voxel
    )
    if requested is False:
        return clamped, False, "turned off (--no-consistency)"
    try:
        return consistency_width(thickness, plan), True, None
    except ConfigError as error:
        log.info("data consistency skipped: %s", error)
        return clamped, False, f"skipped: {error.problem}"


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
        Silent: :func:`warn_thickness` says, once per scan, when it differs
        from the spacing.

    Raises:
        ConfigError: a given thickness that is not a positive finite number,
            or over :data:`MAX_THICKNESS_OVER_SPACING` times the slice spacing.
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
        if value > MAX_THICKNESS_OVER_SPACING * spacing:
            most = MAX_THICKNESS_OVER_SPACING * spacing
            raise ConfigError(
                f"slice thickness {value:g} mm is {value / spacing:.3g} times the slice "
                f"spacing {spacing:.3g} mm along axis {plan.axis}",
                path=volume.source,
                expected=f"at most {MAX_THICKNESS_OVER_SPACING:g} times the spacing "
                f"({most:.3g} mm): slices that overlap more are not a thick-slice acquisition",
                fix="pass --thickness in mm, the thickness of one slice (thickness_mm= in the "
                "API), or leave it out to use the header's or the spacing",
            )
    elif header is not None and np.isfinite(header) and header > 0:
        value, source = float(header), "header"
    else:
        value, source = spacing, "spacing"
    return {
        "slice_thickness_mm": value,
        "slice_spacing_mm": spacing,
        "slice_thickness_source": source,
    }


def warn_thickness(thickness: dict[str, Any], source: Any, *, network: bool) -> None:
    """Log, once per scan, a slice thickness that differs from the slice spacing.

    Args:
        thickness: :func:`slice_thickness` of the scan.
        source: the scan's file, named in the message.
        network: whether a trained network upscales it: only then is what the
            models were trained on worth saying.
    """
    value, spacing = thickness["slice_thickness_mm"], thickness["slice_spacing_mm"]
    if abs(value - spacing) <= 0.05 * spacing:
        return
    models = (
        "; models trained on contiguous slices only (the bundled fast, used at 2-6x) gain "
        "less on such scans; fast-wide also saw thicknesses of 0.5-1.5 times the spacing"
    )
    log.warning(
        "%s: slice thickness %.3g mm (%s) differs from the slice spacing %.3g mm (%s)%s",
        source or "scan",
        value,
        thickness["slice_thickness_source"],
        spacing,
        "gaps" if value < spacing else "overlaps",
        models if network else "",
    )


def background_mask(
    thick: np.ndarray, axis: int, n_out: int, thickness: float | None
) -> np.ndarray:
    """Output voxels that lie inside a measured thick voxel whose value is exactly zero.

    With non-negative intensities a thick voxel is zero only when every thin
    voxel under its slice profile is zero, so those output voxels must be zero
    too (zero-filled background, masked scans). Nothing is masked when the
    input has negative values or no zeros.

    Args:
        thick: (X, Y, Z) measured slices.
        axis: the thick axis.
        n_out: output slices along ``axis``.
        thickness: box width in output voxels; default the spacing.

    Returns:
        (X, Y, Z) bool array on the output grid.
    """
    shape = list(thick.shape)
    shape[axis] = n_out
    zero = thick == 0
    if thick.min() < 0 or not zero.any():
        return np.zeros(shape, bool)
    support = slice_profile_matrix(n_out, thick.shape[axis], thickness=thickness) > 1e-6
    return apply_along_axis(support.T.astype(np.float32), zero, axis) > 0


def constrain_to_input(
    upscaled: np.ndarray,
    thick: np.ndarray,
    axis: int,
    *,
    thickness: float | None,
    profile: Profile = "mean",
    project: bool = True,
    clip: bool = True,
    tolerance: float = 1e-5,
    max_iterations: int = 200,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Make a result agree with its input: data consistency, then the input's intensity range.

    Both constraints are convex sets that the true image lies in (for a box
    profile of the right thickness and non-negative data): the volumes whose
    re-simulated slices equal the input, and those within the input's range
    ``[min, max]`` whose voxels under zero thick voxels are zero. Projecting
    onto them in turn (POCS: Youla & Webb, IEEE TMI 1982) converges to a
    volume in both. The loop ends with the range step, so the range and the
    zero background hold exactly; the remaining residual is reported. Working
    in the input's own units is exact: the projection commutes with the
    linear intensity normalisation (the profile's rows sum to 1).

    The two sets need not meet on a real scan: at a non-integer factor two
    neighbouring slices share a fine voxel, and a slice at the top of the
    range beside one at the bottom asks that voxel for both values. POCS then
    stalls short of the tolerance. Once the residual stops falling
    (:data:`STALL_ROUNDS` rounds without a 1 % gain) the loop stops and ends
    with the data-consistency step: agreeing with the measured slices is the
    guarantee, and the report says how many voxels that left outside the
    range and by how much (``range_exceeded_voxels``, ``range_excess``).

    Args:
        upscaled: (X, Y, Z) result on the fine grid, in the input's units.
        thick: (X, Y, Z) measured slices.
        axis: the thick axis.
        thickness: profile width in output voxels (None: the spacing), used by
            the projection, the residual and the background mask.
        profile: the slice profile of the projection and the residual.
        project: apply the data-consistency projection.
        clip: keep values within the input's range and zero background at zero.
        tolerance: stop once the residual (fraction of the input's range) is below.
        max_iterations: most projection/clip rounds (smooth images need a
            few; white noise with gaps about 100).

    Returns:
        (new float32 array, report) where the report holds ``residual_before``
        and ``residual_after`` (max |re-simulated - input| / input range, with
        ``profile`` and ``thickness``), ``iterations``, ``range`` ([min, max]
        or None when not clipped), ``background_voxels`` (voxels set to zero),
        ``range_exceeded_voxels`` and ``range_excess`` (largest excess over the
        range as a fraction of it; 0 where the range holds).
    """
    n_out, n_in = upscaled.shape[axis], thick.shape[axis]
    measured = np.asarray(thick, np.float32)
    forward = slice_profile_matrix(n_out, n_in, profile=profile, thickness=thickness)
    correction = forward.T @ np.linalg.inv(forward @ forward.T)
    low, high = float(measured.min()), float(measured.max())
    span = high - low
    # Each step is one matrix product on the lines along the thick axis, laid out
    # once as contiguous (lines, slices) rows: moving the axis at every step cost
    # more than the products themselves.
    x, shape = _lines(upscaled, axis, copy=True), _moved_shape(upscaled.shape, axis)
    lines_in = _lines(measured, axis)
    forward_t = np.ascontiguousarray(forward.T, np.float32)  # (n_out, n_in)
    correction_t = np.ascontiguousarray(correction.T, np.float32)  # (n_in, n_out)
    zero = _lines(background_mask(measured, axis, n_out, thickness), axis) if clip else None
    background_voxels = int(zero.sum()) if zero is not None else 0

    def misfit(lines: np.ndarray, measured_lines: np.ndarray) -> tuple[np.ndarray, float]:
        """Re-simulated minus measured slices, and its max |.| as a fraction of the range."""
        difference = lines @ forward_t - measured_lines
        return difference, float(np.abs(difference).max() / span) if span > 0 else 0.0

    # The misfit that ends one round is the one the next projection corrects.
    difference, before = misfit(x, lines_in)
    after = before
    rounds, history = 0, []
    everything, moving = x, None
    for rounds in range(1, (max_iterations if project and clip else 1) + 1):  # noqa: B007
        if project:
            x -= difference @ correction_t
        if clip:
            np.clip(x, low, high, out=x)
            np.copyto(x, 0.0, where=zero)
        difference, after = misfit(x, lines_in)
        if not (project and clip) or after <= tolerance:
            break
        history.append(after)
        if len(history) > STALL_ROUNDS and after > 0.99 * history[-1 - STALL_ROUNDS]:
            break
        if moving is None:
            # A line whose misfit is exactly zero never changes again (its correction
            # is zero, clipping is idempotent): later rounds skip such lines, most
            # of a scan with a zero-filled background.
            moving = np.flatnonzero(np.any(difference != 0, axis=1))
            x, difference = x[moving], difference[moving]
            lines_in, zero = lines_in[moving], zero[moving]
    exceeded, excess = 0, 0.0
    if project and clip and after > tolerance:
        # The sets do not meet: keep agreement with the measured slices, report the range.
        x -= difference @ correction_t
        difference, after = misfit(x, lines_in)
        exceeded, excess = _range_excess(x, zero, low, high)
    if moving is not None:
        everything[moving] = x
        x = everything
    x = np.ascontiguousarray(np.moveaxis(x.reshape(shape), -1, axis))
    return x, {
        "residual_before": before,
        "residual_after": after,
        "residual_profile": profile,
        "iterations": rounds,
        "range": [low, high] if clip else None,
        "background_voxels": background_voxels,
        "range_exceeded_voxels": exceeded,
        "range_excess": excess,
    }


def through_plane_residual(
    model: SliceModel, volume: Volume, plan: UpscalePlan, thickness_mm: float | None = None
) -> float:
    """How far the model's raw slices are from the measured ones, re-simulated along the thick axis.

    Up to :data:`CHECK_SLICES` slices of each plane that contains the thick
    axis (evenly spread) are upscaled by ``model`` with no data consistency,
    averaged back into thick slices with a box of the slice thickness (the
    forward model of this module) and compared with the
    normalised input: a model that reproduces the measured slices better
    scores lower.

    Args:
        model: the slice model.
        volume: the thick-slice scan, (X, Y, Z).
        plan: its upscale plan.
        thickness_mm: the slice thickness in mm, when known (else the header's,
            else the spacing).

    Returns:
        Root-mean-square difference in normalised intensities (the input's
        robust range is 1).
    """
    from mrisr.intensity import fit_normalisation
    from mrisr.slices import slicing_axes, to_slice_stack

    width, _, _ = consistency_choice(slice_thickness(volume, plan, thickness_mm), plan, None)
    thick = fit_normalisation(volume.data).apply(volume.data)
    rows = thick.shape[plan.axis]
    weights = slice_profile_matrix(plan.n_out, rows, thickness=width)  # (rows, n_out)
    squares, count = 0.0, 0
    for slice_axis in slicing_axes(plan.axis):
        stack = to_slice_stack(thick, plan.axis, slice_axis)
        chosen = np.unique(
            np.linspace(0, len(stack) - 1, min(CHECK_SLICES, len(stack))).astype(int)
        )
        upscaled = model.upscale_slices(stack[chosen], plan.n_out)
        resimulated = np.einsum("tr,krc->ktc", weights, upscaled.astype(np.float64))
        squares += float(np.sum((resimulated - stack[chosen]) ** 2))
        count += resimulated.size
    return math.sqrt(squares / count)


def _range_excess(x: np.ndarray, zero: np.ndarray, low: float, high: float) -> tuple[int, float]:
    """Voxels outside ``[low, high]`` (or non-zero on the zero background), and the
    largest excess as a fraction of ``high - low``."""
    outside = np.maximum(x - high, low - x)
    outside[zero] = np.abs(x[zero])
    span = high - low
    exceeded = int(np.count_nonzero(outside > 0))
    return exceeded, float(max(outside.max(), 0.0) / span) if span > 0 else 0.0


def _moved_shape(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """``shape`` with ``axis`` moved last."""
    return tuple(n for i, n in enumerate(shape) if i != axis) + (shape[axis],)


def _lines(data: np.ndarray, axis: int, *, copy: bool = False) -> np.ndarray:
    """(X, Y, Z) -> (lines, slices): every line along ``axis`` as one C-contiguous row.

    The float32 result is a new array when ``copy``; bool data stays bool.
    """
    moved = np.moveaxis(np.asarray(data), axis, -1)
    dtype = bool if moved.dtype == bool else np.float32
    rows = np.array(moved, dtype=dtype, order="C", copy=True if copy else None)
    return rows.reshape(-1, moved.shape[-1])
