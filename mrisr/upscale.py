"""Upscaling a thick-slice volume with any 2D slice model, both planes, fused.

The pipeline: detect the thick axis -> normalise intensities -> cut slices in
the two planes that contain the thick axis -> let the slice model upsample
their rows -> restack each plane -> fuse -> optional data consistency -> undo
the normalisation, on the field-of-view-aligned grid of :mod:`mrisr.geometry`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mrisr.errors import ConfigError, GeometryError, InputError
from mrisr.fusion import FUSIONS, Fusion, fuse
from mrisr.geometry import (
    MIN_ANISOTROPY,
    detect_thick_axis,
    isotropic_factor,
    output_slice_count,
    resampled_affine,
    voxel_sizes,
)
from mrisr.intensity import fit_normalisation
from mrisr.io.files import READ_FORMATS, check_output, stem, suffix, write_atomic
from mrisr.output_check import check_model_output
from mrisr.simulate import apply_along_axis, slice_profile_matrix
from mrisr.slices import from_slice_stack, slicing_axes, to_slice_stack
from mrisr.volume import Volume

log = logging.getLogger(__name__)

#: Called with (slices done, slices in all) while a model works.
ProgressCallback = Callable[[int, int], None]


class SliceModel(Protocol):
    """What the pipeline needs of a model: upsample the rows of 2D slices.

    Attributes:
        name: short name for logs and provenance.
        factor_range: (lowest, highest) factor the model was trained for, or
            None when any factor is fine (interpolation).
    """

    name: str
    factor_range: tuple[float, float] | None

    def upscale_slices(
        self, stack: np.ndarray, out_rows: int, progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """(N, rows, cols) normalised float32 -> (N, out_rows, cols) float32."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (name, architecture, weights hash...)."""
        ...


@dataclass(frozen=True)
class UpscalePlan:
    """Where the output grid goes, decided before any voxel is computed.

    Attributes:
        axis: the thick axis (0, 1 or 2).
        factor: the requested factor.
        n_in: input slices along ``axis``.
        n_out: output slices along ``axis`` (``round(n_in * factor)``).
        shape_in: input shape (X, Y, Z).
        shape_out: output shape.
        spacing_in: (3,) input voxel sizes in mm.
        spacing_out: (3,) output voxel sizes in mm.
        affine_out: (4, 4) output affine.
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

    @property
    def effective_factor(self) -> float:
        """``n_out / n_in``: the factor the grid really has after rounding."""
        return self.n_out / self.n_in

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "axis": self.axis,
            "factor": self.factor,
            "effective_factor": self.effective_factor,
            "shape_in": list(self.shape_in),
            "shape_out": list(self.shape_out),
            "spacing_in_mm": list(self.spacing_in),
            "spacing_out_mm": list(self.spacing_out),
        }


def plan_upscale(
    volume: Volume,
    *,
    factor: float | None = None,
    axis: int | None = None,
    min_anisotropy: float = MIN_ANISOTROPY,
) -> UpscalePlan:
    """Decide the thick axis, the factor and the output grid.

    Args:
        volume: the thick-slice scan.
        factor: upsampling factor along the thick axis; default the one that
            makes voxels isotropic at the finest in-plane spacing.
        axis: the thick axis; default detected from the spacing.
        min_anisotropy: passed to :func:`mrisr.geometry.detect_thick_axis`.

    Returns:
        The :class:`UpscalePlan`.
    """
    source = str(volume.source) if volume.source is not None else None
    if axis is None:
        zooms = volume.header.get_zooms() if hasattr(volume.header, "get_zooms") else None
        axis = detect_thick_axis(
            volume.affine, header_zooms=zooms, min_anisotropy=min_anisotropy, source=source
        )
    elif axis not in (0, 1, 2):
        raise ConfigError(f"axis must be 0, 1 or 2, got {axis}", fix="pass --axis 0, 1 or 2")
    if factor is None:
        factor = isotropic_factor(volume.affine, axis)
        if factor <= 1.0:
            raise GeometryError(
                f"axis {axis} is not thicker than the in-plane spacing "
                f"({' x '.join(f'{s:.3g}' for s in volume.spacing)} mm)",
                path=source,
                fix="pass --factor explicitly, or the right --axis",
            )
    if not (np.isfinite(factor) and factor > 1.0):
        raise ConfigError(f"factor must be a number > 1, got {factor}", fix="pass --factor > 1")
    n_in = volume.shape[axis]
    n_out = output_slice_count(n_in, factor)
    affine_out = resampled_affine(volume.affine, axis, n_in, n_out)
    shape_out = list(volume.shape)
    shape_out[axis] = n_out
    return UpscalePlan(
        axis=axis,
        factor=float(factor),
        n_in=n_in,
        n_out=n_out,
        shape_in=volume.shape,
        shape_out=tuple(shape_out),  # type: ignore[arg-type]
        spacing_in=tuple(float(s) for s in voxel_sizes(volume.affine)),  # type: ignore[arg-type]
        spacing_out=tuple(float(s) for s in voxel_sizes(affine_out)),  # type: ignore[arg-type]
        affine_out=affine_out,
    )


def check_factor_range(model: SliceModel, factor: float, *, force: bool = False) -> None:
    """Refuse a factor the model was not trained for, unless ``force``."""
    if model.factor_range is None:
        return
    low, high = model.factor_range
    # A little tolerance: a 4.44x scan is fine for a model trained on 2-4.5.
    if not (low * 0.95 <= factor <= high * 1.05):
        if force:
            log.warning("factor %.3g outside model %s's range %g-%g", factor, model.name, low, high)
            return
        raise ConfigError(
            f"factor {factor:.3g} is outside the range {low:g}-{high:g} that model "
            f"{model.name!r} was trained for",
            expected=f"a factor between {low:g} and {high:g}",
            fix="pass --factor in that range, use a model trained for this factor, or --force",
        )


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


#: ``Volume.meta`` keys that describe a grid's slices: not carried over to a new grid.
GRID_FACTS = ("slice_thickness_mm", "slice_spacing_mm", "simulation")

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


def upscale_volume(
    volume: Volume,
    model: SliceModel,
    *,
    factor: float | None = None,
    axis: int | None = None,
    fusion: Fusion = "mean",
    consistency: bool = False,
    thickness_mm: float | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> Volume:
    """Super-resolve a thick-slice volume along its thick axis.

    Args:
        volume: the scan, (X, Y, Z) voxels with its affine.
        model: any :class:`SliceModel` (``CubicSliceModel()``, a trained network).
        factor: upsampling factor; default: isotropic voxels (see :func:`plan_upscale`).
        axis: thick axis; default detected.
        fusion: ``"mean"`` or ``"fba"`` (Fourier burst accumulation).
        consistency: project the result so that its thick slices, simulated
            with a box profile of the slice thickness, equal the input exactly.
        thickness_mm: slice thickness in mm, when it differs from the slice
            spacing (gaps or overlaps); default the header's
            (``volume.meta["slice_thickness_mm"]``, from DICOM or a BIDS
            sidecar), else the spacing. Recorded, and used by ``consistency``.
        force: allow a factor outside the model's trained range.
        progress: called with (slices done, slices in all).

    Returns:
        A new float32 Volume on the upsampled grid, same header; its
        ``meta["upscale"]`` holds the plan, model, normalisation and fusion.
    """
    if fusion not in FUSIONS:
        raise ConfigError(f"unknown fusion {fusion!r}", expected=f"one of {FUSIONS}")
    plan = plan_upscale(volume, factor=factor, axis=axis)
    check_factor_range(model, plan.factor, force=force)
    thickness = slice_thickness(volume, plan, thickness_mm)
    normalisation = fit_normalisation(volume.data)
    thick = normalisation.apply(volume.data)

    planes = slicing_axes(plan.axis)
    total = sum(volume.shape[a] for a in planes)
    done = 0
    restacked = []
    for slice_axis in planes:
        stack = to_slice_stack(thick, plan.axis, slice_axis)

        def report(n: int, _total: int, offset: int = done) -> None:
            if progress is not None:
                progress(offset + n, total)

        upscaled = model.upscale_slices(stack, plan.n_out, report)
        expected_shape = (stack.shape[0], plan.n_out, stack.shape[2])
        if upscaled.shape != expected_shape:
            raise RuntimeError(
                f"slice model {model.name!r} returned shape {upscaled.shape}, "
                f"expected {expected_shape}"
            )
        restacked.append(from_slice_stack(upscaled, plan.axis, slice_axis))
        done += stack.shape[0]
        if progress is not None:
            progress(done, total)
    fused = fuse(restacked, fusion)
    check_model_output(fused, thick, model, volume.source, normalisation.invert)
    if consistency:
        fused = enforce_consistency(
            fused, thick, plan.axis, thickness=consistency_width(thickness, plan)
        )
    data = normalisation.invert(fused)
    # Facts of the input's grid (its slice thickness, how it was simulated) do not
    # hold for the result; they stay recorded under "upscale".
    kept = {k: v for k, v in volume.meta.items() if k not in GRID_FACTS}
    meta = {
        **kept,
        "upscale": {
            **plan.to_dict(),
            **thickness,
            "model": model.describe(),
            "normalisation": normalisation.to_dict(),
            "fusion": fusion,
            "consistency": consistency,
        },
    }
    return volume.with_data(data, plan.affine_out, meta=meta)


def default_output_path(input_path: str | Path) -> Path:
    """``<stem>_sr.nii.gz`` beside the input (a DICOM folder gives ``<folder>_sr.nii.gz``)."""
    path = Path(input_path)
    return path.parent / f"{stem(path)}_sr.nii.gz"


def sidecar_path(output_path: str | Path) -> Path:
    """The JSON provenance file beside an output image (``x.nii.gz`` -> ``x.json``)."""
    path = Path(output_path)
    if suffix(path) in READ_FORMATS:
        return path.parent / (stem(path) + ".json")
    return path.with_suffix(".json")


def write_json_atomic(data: dict[str, Any], path: Path, *, overwrite: bool = False) -> Path:
    """Write ``data`` as indented JSON through a temporary file in the same folder.

    Raises:
        OutputError: ``path`` exists (without ``overwrite``), its folder is
            missing, or it cannot be written.
    """

    def write(temporary: Path) -> None:
        text = json.dumps(data, indent=2, sort_keys=True, default=_json_default)
        temporary.write_text(text + "\n")

    write_atomic(path, write, overwrite=overwrite)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def upscale_file(
    input_path: str | Path,
    output_path: str | Path | None = None,
    *,
    model: SliceModel,
    factor: float | None = None,
    axis: int | None = None,
    fusion: Fusion = "mean",
    consistency: bool = False,
    thickness_mm: float | None = None,
    force: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> tuple[Path, Path]:
    """Load, upscale and save a scan with a JSON provenance sidecar beside it.

    Both outputs are checked before any work starts, and written atomically;
    if the sidecar cannot be written the image is removed again, so a failure
    never leaves half an output. The input is never modified.

    Returns:
        (output image path, sidecar path).
    """
    from mrisr import __version__
    from mrisr.io import file_sha256, load_volume, output_format, save_volume
    from mrisr.io.files import check_sidecar_owner

    input_path = Path(input_path)
    output = Path(output_path) if output_path is not None else default_output_path(input_path)
    output_format(output)  # an unwritable extension fails now, not after the work
    sidecar = sidecar_path(output)
    _check_outputs(input_path, [output, sidecar], overwrite=overwrite)
    check_sidecar_owner(sidecar, output)  # x.nii.gz and x.mgz would share x.json

    volume = load_volume(input_path)
    result = upscale_volume(
        volume,
        model,
        factor=factor,
        axis=axis,
        fusion=fusion,
        consistency=consistency,
        thickness_mm=thickness_mm,
        force=force,
        progress=progress,
    )
    provenance = {
        "mrisr_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": str(input_path.resolve()), "sha256": file_sha256(input_path)},
        "output": str(output.resolve()),
        **result.meta["upscale"],
    }
    save_volume(result, output, overwrite=overwrite)
    try:
        write_json_atomic(provenance, sidecar, overwrite=overwrite)
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    return output, sidecar


def _check_outputs(input_path: Path, outputs: list[Path], *, overwrite: bool) -> None:
    """Refuse outputs that are the input, already exist (without overwrite) or lack a folder."""
    if not input_path.exists():
        raise InputError("does not exist", path=input_path, fix="check the path")
    # A NIfTI's BIDS/dcm2niix sidecar (scan.json) is input too: it may hold the slice thickness.
    for output in outputs:
        check_output(output, overwrite=overwrite, inputs=[input_path, sidecar_path(input_path)])
