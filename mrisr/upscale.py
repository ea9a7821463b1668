"""Upscaling a thick-slice volume with any 2D slice model, both planes, fused.

The pipeline: detect the thick axis -> normalise intensities -> cut slices in
the two planes that contain the thick axis -> let the slice model upsample
their rows -> restack each plane (and flipped passes, with test-time
augmentation) -> fuse -> undo the normalisation -> data consistency and the
input's intensity range -> the disagreement map of the passes, on the
field-of-view-aligned grid of :mod:`mrisr.geometry`.

:class:`UpscalePlan` and :func:`plan_upscale` live in :mod:`mrisr.plan` and
are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mrisr.consistency import (
    consistency_choice,
    constrain_to_input,
    slice_thickness,
    warn_thickness,
)
from mrisr.disagreement import (
    NO_FLIP,
    POOL_SIGMA_VOXELS,
    flip_stack,
    flips_for,
    pooled_spread,
    summary,
)
from mrisr.errors import ConfigError, naming_input
from mrisr.fusion import Fusion, check_fusion, fuse
from mrisr.intensity import fit_normalisation
from mrisr.io.files import renamed_together, require_existing
from mrisr.io.outputs import (
    check_outputs,
    default_output_path,
    disagreement_path,
    named_path,
    recorded_map,
    sidecar_path,
    write_image_and_sidecar,
)
from mrisr.io.storage import OUTPUT_DTYPES, check_output_dtype
from mrisr.models import ModelRequest, choose_model, covers_factor
from mrisr.output_check import check_model_output
from mrisr.plan import (
    UpscalePlan,
    check_grid_request,
    check_plan,
    plan_upscale,
    working_grid,
)
from mrisr.simulate import Profile, check_profile
from mrisr.slices import from_slice_stack, slicing_axes, to_slice_stack
from mrisr.volume import Volume

if TYPE_CHECKING:
    from mrisr.adapt_settings import AdaptSettings

__all__ = [
    "GRID_FACTS",
    "ProgressCallback",
    "SliceModel",
    "UpscaleOptions",
    "UpscalePlan",
    "check_factor_range",
    "check_upscale_outputs",
    "plan_upscale",
    "upscale_and_write",
    "upscale_file",
    "upscale_volume",
    "write_upscaled",
]

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
    if low == high:  # a model trained at one factor: no range to speak of
        raise ConfigError(
            f"factor {factor:.3g} is not the factor {low:g} that model {model.name!r} was "
            "trained for",
            expected=f"a factor of {low:g}",
            fix=f"pass --factor {low:g}, use a model trained for this factor, or --force",
        )
    raise ConfigError(
        f"factor {factor:.3g} is outside the range {low:g}-{high:g} that model "
        f"{model.name!r} was trained for",
        expected=f"a factor between {low:g} and {high:g}",
        fix="pass --factor in that range, use a model trained for this factor, or --force",
    )


#: ``Volume.meta`` keys that describe a grid's slices: not carried over to a new grid.
GRID_FACTS = ("slice_thickness_mm", "slice_spacing_mm", "simulation", "disagreement")


@dataclass(frozen=True)
class UpscaleOptions:
    """How a scan is upscaled, beyond its grid and model: one typed, frozen settings object.

    The CLI, :func:`upscale_file` and :func:`upscale_volume` pass it on whole,
    so a new option is added here once.

    Attributes:
        fusion: ``"mean"`` or ``"fba"`` (Fourier burst accumulation) of the two planes.
        consistency: project the result so that its thick slices, simulated
            with a box profile of the slice thickness, equal the input: True
            (refuse a thickness it cannot use), False, or None (the default:
            wherever the thickness allows it; the sidecar says when skipped).
            See docs/faithfulness.md for the measurements behind the default.
        clip_range: keep the output within the input's intensity range, and
            zero where the measured thick voxels are zero (default on).
        disagreement: compute the disagreement map (``meta["disagreement"]``).
        consistency_profile: the slice profile of the projection (and of the
            residual): ``"mean"`` (box, mrisr's forward model) or
            ``"gaussian"`` (FWHM the slice thickness), for scans known to
            have one; the box costs quality on Gaussian-profile scans
            (docs/faithfulness.md).
        tta: test-time augmentation: also run each plane's slices flipped
            along rows, columns and both (4x the work); the output is the fused
            mean of all passes, the disagreement map their spread.
        thickness_mm: slice thickness in mm, when it differs from the slice
            spacing (gaps or overlaps); default the header's
            (``volume.meta["slice_thickness_mm"]``, from DICOM or a BIDS
            sidecar), else the spacing. Recorded, and used by ``consistency``.
        force: allow a factor outside the model's trained range.
        adapt: fine-tune the model on the scan's own in-plane slices first
            (:class:`mrisr.adapt.AdaptSettings`: budget, seed, save path), or None.
            One scan at a time: :mod:`mrisr.cohort` refuses it.
        dtype: the output file's voxel type, ``float32``, ``int16`` or
            ``uint8`` (integers with a NIfTI scale factor; see :mod:`mrisr.io.storage`).

    Raises:
        ConfigError: an unknown fusion, dtype or profile, an ``adapt`` that is not
            :class:`mrisr.adapt.AdaptSettings` or None. (A thickness is checked
            against the scan, by :func:`mrisr.consistency.slice_thickness`.)
    """

    fusion: Fusion = "mean"
    consistency: bool | None = None
    thickness_mm: float | None = None
    force: bool = False
    adapt: AdaptSettings | None = None
    dtype: str = "float32"
    clip_range: bool = True
    disagreement: bool = True
    tta: bool = False
    consistency_profile: Profile = "mean"

    def __post_init__(self) -> None:
        # A string such as "no" or "false" is truthy: refuse it rather than obey it.
        for switch in ("force", "clip_range", "disagreement", "tta"):
            if not isinstance(getattr(self, switch), (bool, np.bool_)):
                raise ConfigError(
                    f"{switch} must be True or False, got {getattr(self, switch)!r}",
                    fix=f"pass {switch}=True or {switch}=False",
                )
        if self.consistency is not None and not isinstance(self.consistency, (bool, np.bool_)):
            raise ConfigError(
                f"consistency must be True, False or None, got {self.consistency!r}",
                fix="pass consistency=True, False, or None (where the thickness allows it)",
            )
        check_fusion(self.fusion)
        if self.dtype not in OUTPUT_DTYPES:
            raise ConfigError(
                f"unknown output dtype {self.dtype!r}",
                expected=f"one of {', '.join(OUTPUT_DTYPES)}",
                fix="pass --dtype float32 (default), int16 or uint8",
            )
        check_profile(self.consistency_profile)
        if self.adapt is not None:
            from mrisr.adapt_settings import AdaptSettings

            if not isinstance(self.adapt, AdaptSettings):
                raise ConfigError(
                    f"adapt must be an AdaptSettings or None, got {self.adapt!r}",
                    fix="pass adapt=AdaptSettings() (from mrisr.adapt) for the default budget, "
                    "AdaptSettings(steps=200) for another, or adapt=None not to adapt",
                )

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
                fix='pass only those fields (check the spelling), e.g. fusion="fba"',
            )
        return replace(base, **settings) if settings else base


def upscale_volume(
    volume: Volume,
    model: SliceModel | ModelRequest | str | Path | None = None,
    *,
    plan: UpscalePlan | None = None,
    factor: float | None = None,
    axis: int | None = None,
    spacing_mm: float | None = None,
    options: UpscaleOptions | None = None,
    progress: ProgressCallback | None = None,
    **settings: Any,
) -> Volume:
    """Super-resolve a thick-slice volume along its thick axis.

    Args:
        volume: the scan, (X, Y, Z) voxels with its affine.
        model: any :class:`SliceModel` (``CubicSliceModel()``, a trained network),
            a :class:`mrisr.models.ModelRequest`, or a ``--model`` value
            (``"cubic"``, ``"fast"``, a model file or run folder; see
            :func:`mrisr.models.load_slice_model`); None: the bundled model for
            the planned factor.
        plan: the output grid, from :func:`plan_upscale` of this volume; default
            planned here from ``factor`` and ``axis``.
        factor: upsampling factor; default: isotropic voxels (see
            :func:`plan_upscale`). With ``plan``, leave it out or give the plan's.
        axis: thick axis; default detected. With ``plan``, leave it out or give
            the plan's.
        spacing_mm: isotropic output spacing in mm instead of ``factor``: the
            in-plane axes are area-averaged down to it first (see
            :mod:`mrisr.plan`). With ``plan``, leave it out or give the plan's.
        options: fusion, consistency, thickness, force, clip_range,
            disagreement, tta (:class:`UpscaleOptions`).
        progress: called with (slices done, slices in all).
        **settings: fields of :class:`UpscaleOptions` (``fusion="fba"``,
            ``consistency=True``, ``thickness_mm=5``, ``force=True``) replacing
            those of ``options``.

    Returns:
        A new float32 Volume on the upsampled grid, same header; its
        ``meta["upscale"]`` holds the plan (with the in-plane resampling), model, normalisation, fusion and
        ``faithfulness`` (residuals before/after consistency and clipping),
        and ``meta["disagreement"]`` (unless ``disagreement=False``) is the
        disagreement map: a float32 :class:`Volume` on exactly the result's
        grid and header, in the result's intensity units.

    Raises:
        ConfigError: unknown fusion, a plan that is not this volume's or
            disagrees with ``factor``/``axis``/``spacing_mm``, a bad
            ``spacing_mm``, a factor outside the model's range (without
            ``force``), or an unusable thickness.
        GeometryError: no thick axis to upscale (see :func:`plan_upscale`).
        CheckpointError: a model file that is missing, unsafe or damaged.
        RuntimeError: the model returned slices of the wrong shape.
    """
    options = UpscaleOptions.build(options, settings)
    if plan is None:
        plan = plan_upscale(volume, factor=factor, axis=axis, spacing_mm=spacing_mm)
    else:
        check_plan(plan, volume, factor=factor, axis=axis, spacing_mm=spacing_mm)
    model = choose_model(model, plan.factor)
    grid = plan.to_dict()
    # With --spacing the model, consistency and range all work on the scan
    # downsampled in-plane: the "input" the output must reproduce.
    volume, plan = working_grid(volume, plan)
    with naming_input(volume.source):
        # Every check before the first voxel is computed.
        check_factor_range(model, plan.factor, force=options.force)
        thickness = slice_thickness(volume, plan, options.thickness_mm)
        warn_thickness(thickness, volume.source, network=hasattr(model, "generator"))
        width, project, skipped = consistency_choice(thickness, plan, options.consistency)
        normalisation = fit_normalisation(volume.data)
    thick = normalisation.apply(volume.data)
    passes = _upscale_planes(thick, plan, model, progress, flips_for(options.tta))
    fused = fuse(passes, options.fusion)
    check_model_output(fused, thick, model, volume.source, normalisation.invert)
    # In the input's own units, so the range is the input's exactly (the
    # projection commutes with the linear normalisation).
    data, faithfulness = constrain_to_input(
        normalisation.invert(fused),
        volume.data,
        plan.axis,
        thickness=width,
        profile=options.consistency_profile,
        project=project,
        clip=options.clip_range,
    )
    # Facts of the input's grid (its slice thickness, how it was simulated) do not
    # hold for the result; they stay recorded under "upscale".
    kept = {k: v for k, v in volume.meta.items() if k not in GRID_FACTS}
    meta = {
        **kept,
        "upscale": {
            **grid,
            **thickness,
            "model": model.describe(),
            "normalisation": normalisation.to_dict(),
            "fusion": options.fusion,
            "consistency": project,
            "faithfulness": {
                **faithfulness,
                "consistency_skipped": skipped,
                "clip_range": options.clip_range,
            },
            "tta": options.tta,
        },
    }
    if options.disagreement:
        scale = normalisation.high - normalisation.low
        disagreement = pooled_spread(passes) * np.float32(scale)
        span = float(volume.data.max()) - float(volume.data.min())
        meta["upscale"]["disagreement"] = {
            "passes": len(passes),
            "statistic": "standard deviation across passes, pooled over a Gaussian "
            "neighbourhood, intensity units",
            "pool_sigma_voxels": POOL_SIGMA_VOXELS,
            **summary(disagreement, span),
        }
        meta["disagreement"] = volume.with_data(disagreement, plan.affine_out, meta={})
    return volume.with_data(data, plan.affine_out, meta=meta)


def _upscale_planes(
    thick: np.ndarray,
    plan: UpscalePlan,
    model: SliceModel,
    progress: ProgressCallback | None,
    flips: tuple[tuple[bool, bool], ...] = NO_FLIP,
) -> list[np.ndarray]:
    """The normalised volume upscaled by ``model`` in each plane containing the thick axis.

    Args:
        thick: (X, Y, Z) normalised intensities.
        plan: the output grid.
        model: the slice model.
        progress: called with (slices done, slices in all passes).
        flips: flips of each plane's stack (:mod:`mrisr.disagreement`), each one pass.

    Returns:
        One (X, Y, Z) array on the output grid per plane and flip (see :func:`slicing_axes`).

    Raises:
        RuntimeError: the model returned slices of the wrong shape.
    """
    planes = slicing_axes(plan.axis)
    total = sum(thick.shape[a] for a in planes) * len(flips)
    done = 0
    restacked = []
    for slice_axis, flip in ((a, f) for a in planes for f in flips):
        stack = flip_stack(to_slice_stack(thick, plan.axis, slice_axis), flip)

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
        restacked.append(from_slice_stack(flip_stack(upscaled, flip), plan.axis, slice_axis))
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
    spacing_mm: float | None = None,
    options: UpscaleOptions | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    adapt_progress: ProgressCallback | None = None,
    **settings: Any,
) -> tuple[Path, Path]:
    """Load, upscale and save a scan with a JSON provenance sidecar beside it.

    The one upscale flow: check the outputs -> load the scan once -> plan once
    -> choose the model once (the default one depends on the planned factor)
    -> :func:`upscale_volume` -> write image, disagreement map
    (:func:`mrisr.io.outputs.disagreement_path`, unless
    ``disagreement=False``) and sidecar. All outputs are checked before any
    work starts, and written atomically; if one cannot be written the others
    are removed again, so a failure never leaves part of an output set. The
    input is never modified.

    Args:
        input_path: NIfTI, MGH, NRRD, MHA file or DICOM folder.
        output_path: the output image; default :func:`default_output_path`.
        model: a loaded :class:`SliceModel`, a :class:`mrisr.models.ModelRequest`
            (a ``--model`` value with device and batch options), or a
            ``--model`` value (see :func:`mrisr.models.load_slice_model`);
            None: the bundled model for the planned factor.
        factor: upsampling factor; default: isotropic voxels.
        axis: thick axis; default detected.
        spacing_mm: isotropic output spacing in mm (``--spacing``), instead of
            ``factor``: in-plane axes downsampled to it, the thick axis
            super-resolved to it (:func:`plan_upscale`).
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
        ConfigError: bad settings (a ``spacing_mm`` with ``factor``, or one
            the scan cannot take), no model for the factor, or a factor
            outside the model's range (without ``force``).
        CheckpointError: a model file that is missing, unsafe or damaged.
    """
    from mrisr.io import load_volume

    options = UpscaleOptions.build(options, settings)
    check_grid_request(spacing_mm, factor, axis)  # before anything is read
    # "." and ".." name the folder they are; "" is refused (Path("") would be ".").
    input_path = named_path(require_existing(input_path, expected="a scan file or DICOM folder"))
    if options.adapt is not None and options.adapt.save_path is not None:
        from mrisr.adapt import check_save_path  # the model file is an input: never written over

        check_save_path(options.adapt.save_path, model, overwrite=True)
    output, sidecar = check_upscale_outputs(
        input_path, output_path, overwrite=overwrite, options=options
    )
    if options.adapt is not None:
        from mrisr.adapt import adapt_for_upscale, check_adaptable, refuse_without_network

        refuse_without_network(model)
    volume = load_volume(input_path)
    with naming_input(input_path):
        plan = plan_upscale(volume, factor=factor, axis=axis, spacing_mm=spacing_mm)
        slice_thickness(volume, plan, options.thickness_mm)  # a bad --thickness: before the model
        if options.adapt is not None:
            # Adapt on what the model will see: the scan on the planned in-plane grid.
            adapt_on = working_grid(volume, plan)
            check_adaptable(*adapt_on)
        chosen = choose_model(model, plan.factor)
    adaptation = None
    # The adapted model file (--save-adapted) joins the image, map and sidecar:
    # all are renamed into place once all are written, or none is.
    with renamed_together():
        if options.adapt is not None:
            chosen, adaptation = adapt_for_upscale(
                *adapt_on,
                chosen,
                options.adapt,
                thickness_mm=options.thickness_mm,
                force=options.force,
                overwrite=overwrite,
                progress=adapt_progress,
            )
        upscale_and_write(
            volume,
            plan,
            chosen,
            input_path,
            output,
            options=options,
            overwrite=overwrite,
            progress=progress,
            sidecar_fields={"adaptation": adaptation} if adaptation is not None else None,
        )
    return output, sidecar


def check_upscale_outputs(
    input_path: Path,
    output_path: str | Path | None,
    *,
    overwrite: bool,
    options: UpscaleOptions | None = None,
    map_sidecar: bool = False,
) -> tuple[Path, Path]:
    """The output image and sidecar paths of a scan, refused now if they cannot be written.

    The disagreement map (when ``options.disagreement``) is checked with them,
    and its own JSON sidecar when ``map_sidecar`` (BIDS derivatives).

    Args:
        input_path: the scan.
        output_path: the output image; default :func:`default_output_path`.
        overwrite: allow replacing existing outputs.
        options: the upscale settings (output voxel type, disagreement map);
            default :class:`UpscaleOptions`'s defaults.

    Returns:
        (output image path, sidecar path).

    Raises:
        InputError: the input does not exist.
        OutputError: see :func:`mrisr.io.outputs.check_outputs`; an unwritable
            extension or one that cannot store the dtype; a sidecar that belongs
            to another image.
    """
    from mrisr.io import output_format
    from mrisr.io.files import check_sidecar_owner

    options = options if options is not None else UpscaleOptions()
    output = Path(output_path) if output_path is not None else default_output_path(input_path)
    # An unwritable extension, or an integer type it cannot scale, fails now, not after the work.
    check_output_dtype(output, options.dtype, output_format(output))
    sidecar = sidecar_path(output)
    outputs = [output, sidecar]
    if options.disagreement:
        outputs.append(disagreement_path(output))
        if map_sidecar:
            outputs.append(sidecar_path(disagreement_path(output)))
    if options.adapt is not None and options.adapt.save_path is not None:
        outputs.append(Path(options.adapt.save_path))
    check_outputs(input_path, outputs, overwrite=overwrite)
    check_sidecar_owner(sidecar, output)  # x.nii.gz and x.mgz would share x.json
    return output, sidecar


def upscale_and_write(
    volume: Volume,
    plan: UpscalePlan,
    model: SliceModel,
    input_path: Path,
    output: Path,
    *,
    options: UpscaleOptions,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    sidecar_fields: dict[str, Any] | None = None,
) -> Volume:
    """The second half of :func:`upscale_file`, for a scan already loaded and planned.

    :func:`upscale_volume`, then :func:`write_upscaled`. :mod:`mrisr.cohort`
    runs the two itself, so that writing one scan overlaps computing the next.

    Args:
        volume: the scan, loaded from ``input_path``.
        plan: :func:`plan_upscale` of ``volume``.
        model: the chosen slice model.
        input_path: the scan's file or DICOM folder (hashed into the sidecar).
        output: the output image; its sidecar is :func:`sidecar_path` of it.
        options: see :class:`UpscaleOptions`.
        overwrite: replace existing outputs.
        progress: called with (slices done, slices in all).
        sidecar_fields: extra JSON-ready fields for the sidecar (BIDS ``Sources``...).

    Returns:
        The upscaled volume, as written.

    Raises:
        See :func:`upscale_volume` and :func:`mrisr.io.outputs.write_image_and_sidecar`.
    """
    result = upscale_volume(volume, model, plan=plan, options=options, progress=progress)
    write_upscaled(
        result,
        input_path,
        output,
        options=options,
        overwrite=overwrite,
        sidecar_fields=sidecar_fields,
    )
    return result


def write_upscaled(
    result: Volume,
    input_path: Path,
    output: Path,
    *,
    options: UpscaleOptions,
    overwrite: bool = False,
    sidecar_fields: dict[str, Any] | None = None,
    map_sidecar_fields: dict[str, Any] | None = None,
) -> None:
    """Write an :func:`upscale_volume` result: image, disagreement map, then sidecar.

    The input is hashed here, so :mod:`mrisr.cohort` can run this whole step
    in its writing thread while the next scan computes.

    Args:
        result: the upscaled volume (its ``meta`` from :func:`upscale_volume`).
        input_path: the scan's file or DICOM folder (hashed into the sidecar).
        output: the output image; its sidecar is :func:`sidecar_path` of it.
        options: the options ``result`` was made with.
        overwrite: replace existing outputs.
        sidecar_fields: extra JSON-ready fields for the sidecar.
        map_sidecar_fields: when given (BIDS derivatives), the disagreement
            map gets a JSON sidecar of its own with these fields.

    Raises:
        OutputError: see :func:`mrisr.io.outputs.write_image_and_sidecar`;
            files this call wrote are removed again.
    """
    provenance = {**_provenance(result, input_path, output, options), **(sidecar_fields or {})}
    extras, extra_json = {}, {}
    if options.disagreement:
        spread_path = disagreement_path(output)
        extras[spread_path] = result.meta["disagreement"]
        if map_sidecar_fields is not None:
            extra_json[sidecar_path(spread_path)] = map_sidecar_fields
        provenance["disagreement"] = {
            **provenance["disagreement"],
            "file": str(spread_path.resolve()),
        }
    # An earlier run's map beside a result made without one would be read as this one's.
    stale = None if options.disagreement or not overwrite else recorded_map(output)
    write_image_and_sidecar(
        result,
        output,
        sidecar_path(output),
        provenance,
        overwrite=overwrite,
        dtype=options.dtype,
        extras=extras,
        extra_json=extra_json,
    )
    if stale is not None:
        stale.unlink(missing_ok=True)
        sidecar_path(stale).unlink(missing_ok=True)  # a BIDS map's own sidecar


def _provenance(
    result: Volume, input_path: Path, output: Path, options: UpscaleOptions
) -> dict[str, Any]:
    """What the JSON sidecar records: versions, time, input hash, plan, model, options."""
    from mrisr import __version__
    from mrisr.io import file_sha256

    return {
        "mrisr_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": str(input_path.resolve()), "sha256": file_sha256(input_path)},
        "output": str(output.resolve()),
        **result.meta["upscale"],
        # What a resumed cohort run compares (mrisr.cohort): the options as given.
        "options": asdict(options),
    }
