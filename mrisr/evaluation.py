"""Judge slice models on a known truth: simulate thick slices, upscale, compare.

From a high-resolution volume, :func:`evaluate` simulates a thick-slice scan
along one axis (:func:`mrisr.simulate.simulate_volume`), upscales it with each
model (:func:`mrisr.upscale.upscale_volume`) and compares every result with
the truth (:func:`mrisr.metrics.compare_volumes`), all on one fixed intensity
range and one foreground mask. The results print as a table, write as JSON
``{method: {psnr, ssim, hfen, nrmse}}`` and draw as a PNG of three planes
(:mod:`mrisr.figures`, whose ``save_figure``, ``check_figure_path`` and
``nearest_on_grid`` are re-exported here).

Matching grids: simulating ``n`` slices by ``factor`` gives
``round(n / factor)`` thick slices, and upscaling those by ``factor`` gives
``round(round(n / factor) * factor)`` slices, which need not be ``n`` again
(60 slices at 8x: 8 thick slices, 64 back). Rather than resample anything, the
truth is first cropped along the axis, symmetrically, to the largest slice
count ``n_crop`` that a whole number of thick slices upsamples to exactly:
``n_thick = floor(n / factor)``, ``n_crop = round(n_thick * factor)``. The
field-of-view-aligned grids of simulation and upscaling then coincide voxel
for voxel with the cropped truth's grid, so every metric compares the same
voxels at the same positions.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mrisr.errors import ConfigError, InputError
from mrisr.figures import check_figure_path, nearest_on_grid, save_figure
from mrisr.fusion import Fusion, check_fusion
from mrisr.geometry import MIN_ANISOTROPY, output_slice_count
from mrisr.metrics import METRICS, compare_volumes, foreground_mask, reference_range
from mrisr.simulate import Profile, check_profile, simulate_volume
from mrisr.upscale import SliceModel, UpscaleOptions, upscale_volume
from mrisr.volume import Volume

if TYPE_CHECKING:
    from rich.table import Table

log = logging.getLogger(__name__)

__all__ = [
    "EvaluationResult",
    "caption",
    "central_crop",
    "check_figure_path",
    "crop_to_whole_slices",
    "evaluate",
    "markdown_table",
    "nearest_on_grid",
    "rich_table",
    "save_figure",
]


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics and volumes of one evaluation.

    Attributes:
        metrics: ``{method: {"psnr": dB, "ssim": .., "hfen": .., "nrmse": ..}}``
            in the order the models were given.
        truth: the high-resolution volume, cropped along ``axis`` (see the
            module docstring); every other volume is on its grid.
        thick: the simulated thick-slice volume the models saw.
        results: ``{method: upscaled Volume}``.
        mask: (X, Y, Z) bool foreground mask the metrics used, or None (all voxels).
        axis: the thick axis.
        factor: the requested factor.
        profile: the simulated slice profile.
        fusion: how each model's two planes were fused.
        data_range: the fixed intensity range ``L`` of PSNR and SSIM, in the
            truth's units.
        crop: (start, stop) slice indices of the truth kept along ``axis``.
    """

    metrics: dict[str, dict[str, float]]
    truth: Volume = field(repr=False)
    thick: Volume = field(repr=False)
    results: dict[str, Volume] = field(repr=False)
    mask: np.ndarray | None = field(repr=False)
    axis: int
    factor: float
    profile: str
    fusion: str
    data_range: float
    crop: tuple[int, int]

    def to_dict(self) -> dict[str, dict[str, float | None]]:
        """``{method: {psnr, ssim, hfen, nrmse}}``, JSON-ready.

        JSON has no infinity, so the PSNR of a perfect result is written as None (null).
        """
        return {
            method: {key: (value if math.isfinite(value) else None) for key, value in row.items()}
            for method, row in self.metrics.items()
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)


def crop_to_whole_slices(
    volume: Volume, axis: int, factor: float
) -> tuple[Volume, tuple[int, int]]:
    """Crop ``volume`` along ``axis`` so thick-slice simulation and upscaling return its grid.

    Args:
        volume: the high-resolution (X, Y, Z) volume.
        axis: the axis to be made thick (0, 1 or 2).
        factor: the thick-to-thin slice ratio (> 1).

    Returns:
        (the cropped Volume with its affine shifted to the kept slices,
        (start, stop) of the kept slice indices). Nothing is cropped when
        ``n`` is already a multiple of the factor.

    Raises:
        ConfigError: the axis or factor is invalid, or fewer than two thick
            slices would remain.
    """
    if axis not in (0, 1, 2):
        raise ConfigError(f"axis must be 0, 1 or 2, got {axis}", fix="pass --axis 0, 1 or 2")
    if not (math.isfinite(factor) and factor > 1):
        raise ConfigError(f"factor must be a number > 1, got {factor}", fix="pass --factor > 1")
    n = volume.shape[axis]
    n_thick = math.floor(n / factor)
    # Guard against n / factor landing a hair below an integer (e.g. 12 / 1.2).
    if output_slice_count(n_thick + 1, factor) <= n:
        n_thick += 1
    if n_thick < 2:
        raise ConfigError(
            f"{n} slices along axis {axis} give fewer than 2 thick slices at factor {factor:g}",
            expected=f"at least {math.ceil(2 * factor)} slices along axis {axis}",
            fix="use a smaller --factor or another --axis",
        )
    n_crop = output_slice_count(n_thick, factor)
    start = (n - n_crop) // 2
    box = [slice(None)] * 3
    box[axis] = slice(start, start + n_crop)
    return volume.crop(tuple(box)), (start, start + n_crop)  # type: ignore[arg-type]


def central_crop(volume: Volume, size: int) -> Volume:
    """A cube of ``size`` voxels per side (at most the volume) centred on the foreground.

    The foreground is where voxels are above the median; its mean position is
    the centre (the volume's centre when there is none).

    Args:
        volume: (X, Y, Z) volume.
        size: cube side in voxels.

    Returns:
        A new Volume (:meth:`mrisr.volume.Volume.crop`): its affine still maps
        its voxels to the same mm positions.
    """
    data = volume.data
    level = np.percentile(data, 50) if data.size else 0
    foreground = np.argwhere(data > level)
    centre = foreground.mean(axis=0) if len(foreground) else (np.asarray(data.shape) - 1) / 2
    starts = []
    for ax in range(3):
        n = min(size, data.shape[ax])
        starts.append(int(np.clip(round(centre[ax] - n / 2), 0, data.shape[ax] - n)))
    box = tuple(slice(s, s + min(size, data.shape[ax])) for ax, s in enumerate(starts))
    return volume.crop(box)  # type: ignore[arg-type]


#: Voxels longer than this many times the shortest: the truth is itself thick-sliced
#: (the limit training applies, mrisr.training.data.MAX_ANISOTROPY).
#: A truth is warned about when it is as anisotropic as a scan mrisr would call
#: thick-sliced (:data:`mrisr.geometry.MIN_ANISOTROPY`): its own long axis is blurred.
#: (At 1.3 the shipped demo volume, 0.94 x 0.94 x 1.25 mm, was warned about.)
TRUTH_MAX_ANISOTROPY = MIN_ANISOTROPY


def _check_truth(volume_hr: Volume, truth: Volume) -> None:
    """Refuse a truth too small for SSIM; warn about one that is itself thick-sliced."""
    from mrisr.metrics import SSIM_WINDOW

    if min(truth.shape) < SSIM_WINDOW:
        raise InputError(
            f"is {' x '.join(map(str, truth.shape))} voxels after cropping to whole thick "
            f"slices, under the {SSIM_WINDOW}-voxel SSIM window along an axis",
            path=volume_hr.source,
            expected=f"a truth of at least {SSIM_WINDOW} voxels along every axis",
            fix="evaluate on a larger high-resolution scan (or a smaller --factor)",
        )
    sizes = np.asarray(truth.spacing, float)
    if sizes.max() / sizes.min() >= TRUTH_MAX_ANISOTROPY:
        log.warning(
            "%s: the truth's voxels are %s mm (%.3g times longer along one axis): that axis "
            "is already blurred, so the figures compare with a blurred truth; evaluate on a "
            "near-isotropic scan for figures that mean what they say",
            volume_hr.source or "the truth",
            " x ".join(f"{s:.3g}" for s in sizes),
            sizes.max() / sizes.min(),
        )


def evaluate(
    volume_hr: Volume,
    *,
    axis: int,
    factor: float,
    models: Mapping[str, SliceModel],
    profile: Profile = "mean",
    fusion: Fusion = "mean",
    mask: bool | np.ndarray | None = True,
    data_range: float | None = None,
    force: bool = False,
    options: UpscaleOptions | None = None,
) -> EvaluationResult:
    """Simulate thick slices from a high-resolution volume, upscale with each model, compare.

    Args:
        volume_hr: the truth, (X, Y, Z) voxels (ideally isotropic) with its affine.
        axis: the axis made thick (0, 1 or 2).
        factor: thick-to-thin slice ratio (> 1).
        models: ``{method name: SliceModel}``, e.g. ``{"cubic": CubicSliceModel()}``.
        profile: simulated slice profile, ``"mean"`` (box) or ``"gaussian"``.
        fusion: fusion of each model's two planes, ``"mean"`` or ``"fba"``.
        mask: True: compare inside :func:`mrisr.metrics.foreground_mask` of
            the truth; False or None: all voxels; an (X, Y, Z) bool array on
            ``volume_hr``'s grid: inside it (cropped with the volume).
        data_range: fixed intensity range ``L`` for PSNR and SSIM; default
            :func:`mrisr.metrics.reference_range` of the cropped truth.
        force: let models run at a factor outside their trained range.
        options: the rest of the upscale settings (:class:`mrisr.upscale.UpscaleOptions`;
            ``fusion`` and ``force`` above replace its own); default what
            ``mrisr upscale`` does (data consistency where possible, the
            input's range, the disagreement map), so the numbers are the
            ones users get.

    Returns:
        The :class:`EvaluationResult`; each result's ``meta["disagreement"]``
        is its disagreement map (unless ``options`` turned it off).

    Raises:
        ConfigError: no model, an unknown profile or fusion, a bad axis or factor.
        InputError: a mask of the wrong shape, or a truth (after cropping to
            whole thick slices) under :data:`mrisr.metrics.SSIM_WINDOW` voxels
            along an axis.

    A truth at least :data:`TRUTH_MAX_ANISOTROPY` times anisotropic is
    measured, with a warning: its own thick axis is blurred, so the figures
    compare with a blurred truth.
    """
    if not models:
        raise ConfigError("no model to evaluate", fix="pass at least one model (e.g. cubic)")
    check_profile(profile)
    check_fusion(fusion)
    truth, crop = crop_to_whole_slices(volume_hr, axis, factor)
    _check_truth(volume_hr, truth)
    region = _mask_for(mask, volume_hr, truth, axis, crop)
    span = reference_range(truth.data) if data_range is None else float(data_range)

    thick = simulate_volume(truth, axis, factor, profile=profile)
    settings = options if options is not None else UpscaleOptions()
    metrics: dict[str, dict[str, float]] = {}
    results: dict[str, Volume] = {}
    for method, model in models.items():
        upscaled = upscale_volume(
            thick, model, factor=factor, axis=axis, options=settings, fusion=fusion, force=force
        )
        if upscaled.shape != truth.shape:
            # Cannot happen with the crop above; kept as a loud guard for future grid changes.
            raise RuntimeError(f"{method} gave shape {upscaled.shape}, truth is {truth.shape}")
        results[method] = upscaled
        metrics[method] = compare_volumes(upscaled.data, truth.data, region, data_range=span)
    return EvaluationResult(
        metrics=metrics,
        truth=truth,
        thick=thick,
        results=results,
        mask=region,
        axis=axis,
        factor=float(factor),
        profile=profile,
        fusion=fusion,
        data_range=span,
        crop=crop,
    )


def _mask_for(
    mask: bool | np.ndarray | None,
    volume_hr: Volume,
    truth: Volume,
    axis: int,
    crop: tuple[int, int],
) -> np.ndarray | None:
    """The comparison mask on the cropped truth's grid, or None for all voxels."""
    if mask is None or mask is False:
        return None
    if mask is True:
        return foreground_mask(truth.data)
    mask = np.asarray(mask)
    if mask.shape != volume_hr.shape:
        raise InputError(
            f"mask of shape {mask.shape} does not match the volume's shape {volume_hr.shape}",
            path=volume_hr.source,
            expected="a boolean mask on the high-resolution volume's grid",
            fix="resample the mask to the volume, or pass mask=True for an automatic one",
        )
    index = [slice(None)] * 3
    index[axis] = slice(*crop)
    return mask[tuple(index)].astype(bool)


# --------------------------------------------------------------------------- reports

#: Column headings and number formats of the tables.
_COLUMNS = {
    "psnr": ("PSNR (dB)", "{:.2f}"),
    "ssim": ("SSIM", "{:.4f}"),
    "hfen": ("HFEN", "{:.4f}"),
    "nrmse": ("NRMSE", "{:.4f}"),
}


def caption(result: EvaluationResult) -> str:
    """One line: axis, factor, profile, fusion, mask and range of an evaluation."""
    region = "foreground mask" if result.mask is not None else "all voxels"
    return (
        f"axis {result.axis}, factor {result.factor:g}, {result.profile} profile, "
        f"{result.fusion} fusion; {region}, range {result.data_range:.4g}"
    )


def markdown_table(result: EvaluationResult) -> str:
    """The metrics as a Markdown table, one row per method, with a caption line.

    PSNR and SSIM: higher is better; HFEN and NRMSE: lower is better.
    """
    lines = [
        "| method | " + " | ".join(_COLUMNS[key][0] for key in METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for method, row in result.metrics.items():
        cells = (_COLUMNS[key][1].format(row[key]) for key in METRICS)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(caption(result))
    return "\n".join(lines) + "\n"


def rich_table(result: EvaluationResult, title: str = "mrisr evaluate") -> Table:
    """The metrics as a :class:`rich.table.Table`, best value per column in bold."""
    from rich.table import Table

    table = Table(title=title, caption=caption(result))
    table.add_column("method")
    for key in METRICS:
        table.add_column(_COLUMNS[key][0], justify="right")
    best = {}
    for key in METRICS:
        values = [row[key] for row in result.metrics.values()]
        best[key] = max(values) if key in ("psnr", "ssim") else min(values)
    for method, row in result.metrics.items():
        cells = []
        for key in METRICS:
            text = _COLUMNS[key][1].format(row[key])
            cells.append(
                f"[bold]{text}[/]" if len(result.metrics) > 1 and row[key] == best[key] else text
            )
        table.add_row(method, *cells)
    return table
