"""Upscaling a thick-slice volume with any 2D slice model, both planes, fused.

The pipeline: detect the thick axis -> normalise intensities -> cut slices in
the two planes that contain the thick axis -> let the slice model upsample
their rows -> restack each plane -> fuse -> optional data consistency -> undo
the normalisation, on the field-of-view-aligned grid of :mod:`mrisr.geometry`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mrisr.consistency import consistency_width, enforce_consistency, slice_thickness
from mrisr.errors import ConfigError, GeometryError
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
from mrisr.io.outputs import (
    check_outputs,
    default_output_path,
    sidecar_path,
    write_image_and_sidecar,
)
from mrisr.models import ModelRequest, choose_model, covers_factor
from mrisr.slices import from_slice_stack, slicing_axes, to_slice_stack
from mrisr.volume import Volume

if TYPE_CHECKING:
    from mrisr.adapt import AdaptSettings

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

    Raises:
        ConfigError: an axis other than 0, 1 or 2, or a factor that is not a
            finite number > 1.
        GeometryError: no thick axis (isotropic, or two thick axes), or the
            default factor on an axis no thicker than the in-plane spacing.
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
    """Refuse a factor the model was not trained for, unless ``force``.

    Args:
        model: the slice model; one without a ``factor_range`` takes any factor.
        factor: the planned factor.
        force: log a warning instead of refusing.

    Raises:
        ConfigError: ``factor`` outside the model's range widened by
            :data:`mrisr.models.FACTOR_TOLERANCE`, without ``force``.
    """
    if model.factor_range is None or covers_factor(model.factor_range, factor):
        return
    low, high = model.factor_range
    if force:
        log.warning("factor %.3g outside model %s's range %g-%g", factor, model.name, low, high)
        return
    raise ConfigError(
        f"factor {factor:.3g} is outside the range {low:g}-{high:g} that model "
        f"{model.name!r} was trained for",
        expected=f"a factor between {low:g} and {high:g}",
        fix="pass --factor in that range, use a model trained for this factor, or --force",
    )


#: ``Volume.meta`` keys that describe a grid's slices: not carried over to a new grid.
GRID_FACTS = ("slice_thickness_mm", "slice_spacing_mm", "simulation")


@dataclass(frozen=True)
class UpscaleOptions:
    """How a scan is upscaled, beyond its grid and model: one typed, frozen settings object.

    The CLI, :func:`upscale_file` and :func:`upscale_volume` pass it on whole,
    so a new option is added here once.

    Attributes:
        fusion: ``"mean"`` or ``"fba"`` (Fourier burst accumulation) of the two planes.
        consistency: project the result so that its thick slices, simulated
            with a box profile of the slice thickness, equal the input exactly.
        thickness_mm: slice thickness in mm, when it differs from the slice
            spacing (gaps or overlaps); default the header's
            (``volume.meta["slice_thickness_mm"]``, from DICOM or a BIDS
            sidecar), else the spacing. Recorded, and used by ``consistency``.
        force: allow a factor outside the model's trained range.
        adapt: fine-tune the model on the scan's own in-plane slices first
            (:class:`mrisr.adapt.AdaptSettings`: budget, seed, save path), or None.

    Raises:
        ConfigError: an unknown fusion. (A thickness is checked against the
            scan, by :func:`mrisr.consistency.slice_thickness`.)
    """

    fusion: Fusion = "mean"
    consistency: bool = False
    thickness_mm: float | None = None
    force: bool = False
    adapt: AdaptSettings | None = None

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}", expected=f"one of {FUSIONS}")

    @classmethod
    def build(cls, options: UpscaleOptions | None, settings: dict[str, Any]) -> UpscaleOptions:
        """``options`` (default: the defaults) with the keyword ``settings`` replacing fields.

        Raises:
            ConfigError: a setting that is not a field of :class:`UpscaleOptions`.
        """
        base = options if options is not None else cls()
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(
                f"unknown upscale option(s) {', '.join(unknown)}",
                expected=f"fields of UpscaleOptions: {', '.join(f.name for f in fields(cls))}",
            )
        return replace(base, **settings) if settings else base


def upscale_volume(
    volume: Volume,
    model: SliceModel,
    *,
    plan: UpscalePlan | None = None,
    factor: float | None = None,
    axis: int | None = None,
    options: UpscaleOptions | None = None,
    progress: ProgressCallback | None = None,
    **settings: Any,
) -> Volume:
    """Super-resolve a thick-slice volume along its thick axis.

    Args:
        volume: the scan, (X, Y, Z) voxels with its affine.
        model: any :class:`SliceModel` (``CubicSliceModel()``, a trained network).
        plan: the output grid, from :func:`plan_upscale` of this volume; default
            planned here from ``factor`` and ``axis``.
        factor: upsampling factor; default: isotropic voxels (see
            :func:`plan_upscale`). With ``plan``, leave it out or give the plan's.
        axis: thick axis; default detected. With ``plan``, leave it out or give
            the plan's.
        options: fusion, consistency, thickness, force (:class:`UpscaleOptions`).
        progress: called with (slices done, slices in all).
        **settings: fields of :class:`UpscaleOptions` (``fusion="fba"``,
            ``consistency=True``, ``thickness_mm=5``, ``force=True``) replacing
            those of ``options``.

    Returns:
        A new float32 Volume on the upsampled grid, same header; its
        ``meta["upscale"]`` holds the plan, model, normalisation and fusion.

    Raises:
        ConfigError: unknown fusion, a plan that is not this volume's or
            disagrees with ``factor``/``axis``, a factor outside the model's
            range (without ``force``), or an unusable thickness.
        GeometryError: no thick axis to upscale (see :func:`plan_upscale`).
        RuntimeError: the model returned slices of the wrong shape.
    """
    options = UpscaleOptions.build(options, settings)
    if plan is None:
        plan = plan_upscale(volume, factor=factor, axis=axis)
    else:
        _check_plan(plan, volume, factor=factor, axis=axis)
    check_factor_range(model, plan.factor, force=options.force)
    thickness = slice_thickness(volume, plan, options.thickness_mm)
    normalisation = fit_normalisation(volume.data)
    thick = normalisation.apply(volume.data)
    fused = fuse(_upscale_planes(thick, plan, model, progress), options.fusion)
    if options.consistency:
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
            "fusion": options.fusion,
            "consistency": options.consistency,
        },
    }
    return volume.with_data(data, plan.affine_out, meta=meta)


def _check_plan(
    plan: UpscalePlan, volume: Volume, *, factor: float | None, axis: int | None
) -> None:
    """Refuse a plan made for another volume, or one that contradicts ``factor``/``axis``."""
    if tuple(plan.shape_in) != tuple(volume.shape):
        raise ConfigError(
            f"the plan is for a volume of shape {plan.shape_in}, this one is {volume.shape}",
            path=volume.source,
            fix="pass plan=plan_upscale(volume, ...) of this volume, or leave plan out",
        )
    if (factor is not None and factor != plan.factor) or (axis is not None and axis != plan.axis):
        raise ConfigError(
            f"factor={factor}, axis={axis} disagree with the plan's factor "
            f"{plan.factor:g}, axis {plan.axis}",
            fix="pass either a plan or factor and axis, not both",
        )


def _upscale_planes(
    thick: np.ndarray,
    plan: UpscalePlan,
    model: SliceModel,
    progress: ProgressCallback | None,
) -> list[np.ndarray]:
    """The normalised volume upscaled by ``model`` in each plane containing the thick axis.

    Args:
        thick: (X, Y, Z) normalised intensities.
        plan: the output grid.
        model: the slice model.
        progress: called with (slices done, slices in both planes).

    Returns:
        One (X, Y, Z) array on the output grid per plane (see :func:`slicing_axes`).

    Raises:
        RuntimeError: the model returned slices of the wrong shape.
    """
    planes = slicing_axes(plan.axis)
    total = sum(thick.shape[a] for a in planes)
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
    return restacked


def upscale_file(
    input_path: str | Path,
    output_path: str | Path | None = None,
    *,
    model: SliceModel | ModelRequest | str | Path | None = None,
    factor: float | None = None,
    axis: int | None = None,
    options: UpscaleOptions | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    adapt_progress: ProgressCallback | None = None,
    **settings: Any,
) -> tuple[Path, Path]:
    """Load, upscale and save a scan with a JSON provenance sidecar beside it.

    The one upscale flow: check the outputs -> load the scan once -> plan once
    -> choose the model once (the default one depends on the planned factor)
    -> :func:`upscale_volume` -> write image and sidecar. Both outputs are
    checked before any work starts, and written atomically; if the sidecar
    cannot be written the image is removed again, so a failure never leaves
    half an output. The input is never modified.

    Args:
        input_path: NIfTI, MGH, NRRD, MHA file or DICOM folder.
        output_path: the output image; default :func:`default_output_path`.
        model: a loaded :class:`SliceModel`, a :class:`mrisr.models.ModelRequest`
            (a ``--model`` value with device and batch options), or a
            ``--model`` value (see :func:`mrisr.models.load_slice_model`);
            None: the bundled model for the planned factor.
        factor: upsampling factor; default: isotropic voxels.
        axis: thick axis; default detected.
        options: see :class:`UpscaleOptions`.
        overwrite: replace existing outputs.
        progress: called with (slices done, slices in all).
        adapt_progress: called with (done, total) while adapting (``options.adapt``).
        **settings: fields of :class:`UpscaleOptions` replacing those of ``options``.

    Returns:
        (output image path, sidecar path).

    Raises:
        InputError: a missing or unreadable input.
        OutputError: an output that is the input, exists (without
            ``overwrite``), lacks its folder or has an unwritable extension.
        GeometryError: no thick axis to upscale.
        ConfigError: bad settings, no model for the factor, or a factor outside
            the model's range (without ``force``).
        CheckpointError: a model file that is missing, unsafe or damaged.
    """
    from mrisr.io import load_volume, output_format

    options = UpscaleOptions.build(options, settings)
    input_path = Path(input_path)
    output = Path(output_path) if output_path is not None else default_output_path(input_path)
    output_format(output)  # an unwritable extension fails now, not after the work
    sidecar = sidecar_path(output)
    adapt = options.adapt
    saved_model = [adapt.save_path] if adapt is not None and adapt.save_path else []
    check_outputs(input_path, [output, sidecar, *saved_model], overwrite=overwrite)
    if adapt is not None:
        from mrisr.adapt import adapt_for_upscale, check_adaptable, refuse_without_network

        refuse_without_network(model)

    volume = load_volume(input_path)
    plan = plan_upscale(volume, factor=factor, axis=axis)
    if adapt is not None:
        check_adaptable(volume, plan)
    chosen = choose_model(model, plan.factor)
    adaptation = None
    if adapt is not None:
        chosen, adaptation = adapt_for_upscale(
            volume,
            plan,
            chosen,
            adapt,
            thickness_mm=options.thickness_mm,
            force=options.force,
            progress=adapt_progress,
        )
    result = upscale_volume(volume, chosen, plan=plan, options=options, progress=progress)
    if adaptation is not None:
        result.meta["upscale"]["adaptation"] = adaptation
    write_image_and_sidecar(
        result, output, sidecar, _provenance(result, input_path, output), overwrite=overwrite
    )
    return output, sidecar


def _provenance(result: Volume, input_path: Path, output: Path) -> dict[str, Any]:
    """What the JSON sidecar records: versions, time, input hash, plan, model, options."""
    from mrisr import __version__
    from mrisr.io import file_sha256

    return {
        "mrisr_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": str(input_path.resolve()), "sha256": file_sha256(input_path)},
        "output": str(output.resolve()),
        **result.meta["upscale"],
    }
