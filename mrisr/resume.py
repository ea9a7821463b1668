"""Is a cohort's scan already done? Resuming a study by the sidecars of earlier runs.

A scan counts as done when its output image and JSON sidecar exist and the
sidecar records what this run would do: the same input bytes (SHA-256), the
same voxel-changing options, factor, axis and spacing, and the same model
weights. :func:`resume_difference` says what differs otherwise, so that a
refusal can name it. Used by :mod:`mrisr.cohort`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrisr.errors import MrisrError
from mrisr.io.outputs import sidecar_path

if TYPE_CHECKING:
    from mrisr.cohort import CohortSettings, ModelCache, ScanJob

__all__ = ["is_done", "model_identity", "resume_difference"]

#: Options that change no voxel of the output: a resumed run ignores them.
_RESULT_NEUTRAL_OPTIONS = ("force",)


def model_identity(description: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two model descriptions the same model: the weights' hash, else name and kind.

    The precision the weights ran in is left out, as ``--force`` is left out of
    the options: bfloat16 and float32 results differ by at most 0.005 dB PSNR
    (docs/precision.md), and a study resumed on another machine must not be
    redone for it.
    """
    weights = description.get("weights_sha256")
    return (
        ("weights", weights)
        if weights
        else ("model", description.get("name"), description.get("kind"))
    )


def is_done(job: ScanJob, models: ModelCache, settings: CohortSettings) -> bool:
    """Whether ``job`` was finished by an earlier run with the same input, model and options.

    See :func:`resume_difference`, which also says what differs.
    """
    return resume_difference(job, models, settings) is None


def resume_difference(job: ScanJob, models: ModelCache, settings: CohortSettings) -> str | None:
    """None when ``job`` was finished by an earlier run of the same kind, else what differs.

    Finished means: the output image and its sidecar exist, and the sidecar
    records the input's current SHA-256, the options (those that change
    voxels), the factor and axis this run resolves to (when given), the same
    ``spacing_mm`` (or none) and the weights of the model this run would use
    at the recorded factor.

    Returns:
        None, or a short reason such as ``"the options differ: fusion 'mean'
        (recorded) against 'median' (now)"``.

    Raises:
        Nothing: anything unreadable is a reason (the scan is redone, or
        refused as an existing output without ``overwrite``).
    """
    from mrisr.io import file_sha256

    output = job.output_path
    sidecar = sidecar_path(output)
    if not output.is_file():
        return f"the output image {output.name} is missing"
    if not sidecar.is_file():
        return f"the sidecar {sidecar.name} is missing"
    try:
        recorded = json.loads(sidecar.read_text())
        # The cheap comparisons first: hashing a large input or DICOM folder is not.
        differences = _option_differences(recorded["options"], asdict(settings.options))
        for name, asked in (("factor", settings.factor), ("axis", settings.axis)):
            if asked is not None and asked != recorded[name]:
                differences.append(f"{name} {recorded[name]!r} (recorded) against {asked!r} (now)")
        if settings.spacing_mm != recorded.get("spacing_mm"):
            differences.append(
                f"spacing_mm {recorded.get('spacing_mm')!r} (recorded) against "
                f"{settings.spacing_mm!r} (now)"
            )
        if differences:
            return "the options differ: " + "; ".join(differences)
        metadata = _metadata_difference(job.input, recorded, settings)
        if metadata is not None:
            return metadata
        if recorded["input"]["sha256"] != file_sha256(job.input):
            return "the input changed since (its SHA-256 differs from the recorded one)"
        model = models.get(float(recorded["factor"]))
        if model_identity(recorded["model"]) != model_identity(model.describe()):
            return (
                f"another model: {recorded['model'].get('name')!r} recorded, "
                f"{model.describe().get('name')!r} now (or the same name with other weights)"
            )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, MrisrError) as error:
        return f"its sidecar {sidecar.name} cannot be compared ({type(error).__name__}: {error})"
    return None


def _metadata_difference(
    scan: Path, recorded: dict[str, Any], settings: CohortSettings
) -> str | None:
    """What changed in the slice thickness a NIfTI/MGH scan's JSON metadata gives, if anything.

    The input's hash does not cover its JSON sidecar, nor, in a BIDS dataset,
    the files it inherits (:mod:`mrisr.io.sidecars`); a thickness given as an
    option is compared with the options instead.
    """
    from mrisr.io.files import READ_FORMATS, suffix
    from mrisr.io.sidecars import slice_thickness

    if settings.options.thickness_mm is not None or not scan.is_file():
        return None
    if READ_FORMATS.get(suffix(scan)) not in ("nifti", "mgh"):
        return None
    then = recorded.get("slice_thickness_mm")
    if recorded.get("slice_thickness_source") != "header":
        then = None
    now = slice_thickness(scan)
    if now == then:
        return None
    return (
        f"the slice thickness of its JSON metadata changed: {then!r} mm (recorded) against "
        f"{now!r} mm (now)"
    )


def _option_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``"fusion 'mean' (recorded) against 'median' (now)"`` for each voxel-changing option."""
    recorded, now = _voxel_options(recorded), _voxel_options(now)
    return [
        f"{key} {recorded.get(key)!r} (recorded) against {now.get(key)!r} (now)"
        for key in sorted(set(recorded) | set(now))
        if recorded.get(key) != now.get(key)
    ]


def _voxel_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in _RESULT_NEUTRAL_OPTIONS}
