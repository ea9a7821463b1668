"""Where an upscaled scan goes: default output names, the JSON sidecar, and writing both.

The image and its provenance sidecar are written through
:func:`mrisr.io.files.write_atomic`; an image is never left without its sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import InputError
from mrisr.io.files import READ_FORMATS, check_output, stem, suffix, write_atomic
from mrisr.volume import Volume


def default_output_path(input_path: str | Path) -> Path:
    """``<stem>_sr.nii.gz`` beside the input (a DICOM folder gives ``<folder>_sr.nii.gz``)."""
    path = Path(input_path)
    return path.parent / f"{stem(path)}_sr.nii.gz"


def disagreement_path(output_path: str | Path) -> Path:
    """The disagreement map beside an output image (``x_sr.nii.gz`` -> ``x_sr_disagreement.nii.gz``).

    Same folder and format as the output; see :mod:`mrisr.disagreement`.
    """
    path = Path(output_path)
    ending = suffix(path)
    if ending in READ_FORMATS:
        return path.parent / f"{stem(path)}_disagreement{ending}"
    return path.with_name(f"{path.stem}_disagreement{path.suffix}")


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


def write_image_and_sidecar(
    result: Volume,
    output: Path,
    sidecar: Path,
    provenance: dict[str, Any],
    *,
    overwrite: bool,
    extras: dict[Path, Volume] | None = None,
) -> None:
    """Save the image, any extra images (the disagreement map), then the sidecar: all or none.

    Args:
        result: the volume to save.
        output: the image path (its format follows the ending).
        sidecar: the JSON path (:func:`sidecar_path` of ``output``).
        provenance: what the sidecar records (JSON-ready, numpy values allowed).
        overwrite: replace existing files.
        extras: ``{path: volume}`` written after the image, before the sidecar.

    Raises:
        OutputError: a file exists (without ``overwrite``) or cannot be
            written; the files already written by this call are removed again,
            so no partial set is left.
    """
    from mrisr.io.load_save import save_volume

    written: list[Path] = []
    try:
        for path, volume in [(output, result), *(extras or {}).items()]:
            save_volume(volume, path, overwrite=overwrite)
            written.append(path)
        write_json_atomic(provenance, sidecar, overwrite=overwrite)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def check_outputs(input_path: Path, outputs: list[Path], *, overwrite: bool) -> None:
    """Refuse outputs that are the input, already exist (without overwrite) or lack a folder.

    The input's own JSON sidecar (BIDS, dcm2niix) counts as input: it may hold
    the slice thickness, and mrisr never writes over its input.

    Raises:
        InputError: the input does not exist.
        OutputError: an output is the input or its sidecar, exists (without
            ``overwrite``), or its folder is missing.
    """
    if not input_path.exists():
        raise InputError("does not exist", path=input_path, fix="check the path")
    # A NIfTI's BIDS/dcm2niix sidecar (scan.json) is input too: it may hold the slice thickness.
    for output in outputs:
        check_output(output, overwrite=overwrite, inputs=[input_path, sidecar_path(input_path)])
