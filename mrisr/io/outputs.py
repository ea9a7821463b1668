"""Where an upscaled scan goes: default output names, the JSON sidecar, and writing both.

The image and its provenance sidecar are written through
:func:`mrisr.io.files.write_atomic`; an image is never left without its sidecar.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import OutputError
from mrisr.io.files import (
    READ_FORMATS,
    check_output,
    check_writable,
    renamed_together,
    require_existing,
    stem,
    suffix,
    write_atomic,
)
from mrisr.io.storage import SCALED_FORMATS, Storage, choose_storage
from mrisr.volume import Volume

#: On-disk type of the extra images (the disagreement map) in a format with a scale
#: factor: int16 with ``scl_slope = max|value| / 32767`` (:mod:`mrisr.io.storage`), so
#: a stored value is within about 1/65534 of the map's maximum of the computed one. The
#: float32 map's low mantissa bits are noise that gzip cannot shrink: for a 256 x 256 x 160
#: output, 9.1 MB as float32 against 5.7 MB as int16 (the image itself: 6.5 MB).
EXTRA_DTYPE = "int16"


def named_path(path: str | Path) -> Path:
    """``path`` itself, or made absolute when its last part does not name it (``.``, ``..``).

    ``mrisr upscale .`` inside a DICOM folder, or ``..``, must name outputs after
    the folder's real name and put them beside it. Only such paths are made
    absolute (``os.path.abspath``: symlinks are not followed, so a linked scan's
    output stays beside the link); others are returned unchanged.
    """
    path = Path(path)
    if path.name in ("", ".", "..") or ".." in path.parts:
        return Path(os.path.abspath(path))
    return path


def default_output_path(input_path: str | Path) -> Path:
    """``<stem>_sr.nii.gz`` beside the input (a DICOM folder gives ``<folder>_sr.nii.gz``).

    ``.`` and ``..`` are named after the folder they are (see :func:`named_path`).

    Raises:
        OutputError: the input is the file-system root, which names nothing.
    """
    path = named_path(input_path)
    if not stem(path):
        raise OutputError(
            "names no file or folder to call the output after",
            path=path,
            fix="pass the output path with -o",
        )
    return path.parent / f"{stem(path)}_sr.nii.gz"


def disagreement_path(output_path: str | Path) -> Path:
    """The disagreement map beside an output image, in the same folder and format.

    ``x_sr.nii.gz`` -> ``x_sr_disagreement.nii.gz``. A BIDS derivative name
    (``sub-01_..._desc-sr_T2w.nii.gz``) keeps its entities and suffix and
    gets ``desc-srdisagreement`` instead, so that the map's name is valid
    BIDS too. See :mod:`mrisr.disagreement`.
    """
    path = Path(output_path)
    ending = suffix(path)
    if ending not in READ_FORMATS:
        return path.with_name(f"{path.stem}_disagreement{path.suffix}")
    name = stem(path)
    bids = _BIDS_DESC.fullmatch(name)
    if bids:
        return path.parent / f"{bids['head']}{bids['desc']}disagreement{bids['tail']}{ending}"
    return path.parent / f"{name}_disagreement{ending}"


#: A BIDS file name's stem with a ``desc`` entity: ``sub-X_[...]_desc-LABEL[_...]_SUFFIX``.
_BIDS_DESC = re.compile(
    r"(?P<head>sub-[A-Za-z0-9]+(?:_[a-z]+-[A-Za-z0-9]+)*_desc-)(?P<desc>[A-Za-z0-9]+)"
    r"(?P<tail>(?:_[a-z]+-[A-Za-z0-9]+)*_[A-Za-z0-9]+)"
)


def recorded_map(output_path: str | Path) -> Path | None:
    """The disagreement map an earlier run wrote beside ``output_path``, by its sidecar.

    Returns:
        The map's path when the output's sidecar is mrisr's record of this
        output and names a map at :func:`disagreement_path` that exists; else None
        (a file of that name that mrisr did not record is left alone).
    """
    output = Path(output_path)
    try:
        record = json.loads(sidecar_path(output).read_text())
        named = Path(record["disagreement"]["file"])
        owner = Path(record["output"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    expected = disagreement_path(output)
    if owner.resolve() != output.resolve() or named.resolve() != expected.resolve():
        return None
    return expected if expected.is_file() else None


def sidecar_path(output_path: str | Path) -> Path:
    """The JSON provenance file beside an output image (``x.nii.gz`` -> ``x.json``)."""
    path = named_path(output_path)
    if not path.name:  # the file-system root: no file beside it
        return path / ".json"
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
    dtype: Any = "float32",
    extras: dict[Path, Volume] | None = None,
    extra_json: dict[Path, dict[str, Any]] | None = None,
) -> Storage:
    """Save the image, any extra images (the disagreement map), then the sidecar: all or none.

    Args:
        result: the volume to save.
        output: the image path (its format follows the ending).
        sidecar: the JSON path (:func:`sidecar_path` of ``output``).
        provenance: what the sidecar records (JSON-ready, numpy values allowed);
            ``output_storage`` (type and scale factor) is added.
        overwrite: replace existing files.
        dtype: on-disk voxel type of the image (see :mod:`mrisr.io.storage`).
        extras: ``{path: volume}`` written after the image, before the sidecar,
            as :data:`EXTRA_DTYPE` where the format has a scale factor (NIfTI),
            else float32. A top-level provenance entry whose ``"file"`` is an
            extra's absolute path gets its ``"storage"`` (type, scale factor,
            largest rounding error).
        extra_json: ``{path: fields}`` JSON files written with the extras (a
            BIDS derivative's sidecar of its disagreement map).

    Returns:
        How the image's voxels were stored.

    Raises:
        OutputError: a file exists (without ``overwrite``) or cannot be
            written; nothing of this call's is then left, and earlier files
            at those paths are untouched (:func:`~mrisr.io.files.renamed_together`).
    """
    from mrisr.io.load_save import output_format, save_volume

    storage = choose_storage(result.data, dtype, output_format(output), output)
    provenance = {**provenance, "output_storage": storage.to_dict()}
    # Nothing is renamed into place before the sidecar is written too: with
    # overwrite, a failure leaves the earlier image, map and sidecar as they were.
    with renamed_together():
        save_volume(result, output, overwrite=overwrite, dtype=storage)
        for path, volume in (extras or {}).items():
            kind = output_format(path)
            extra_dtype = EXTRA_DTYPE if kind in SCALED_FORMATS else "float32"
            extra_storage = choose_storage(volume.data, extra_dtype, kind, path)
            save_volume(volume, path, overwrite=overwrite, dtype=extra_storage)
            _record_storage(provenance, path, extra_storage)
        for path, fields in (extra_json or {}).items():
            write_json_atomic(fields, path, overwrite=overwrite)
        write_json_atomic(provenance, sidecar, overwrite=overwrite)
    return storage


def _record_storage(provenance: dict[str, Any], path: Path, storage: Storage) -> None:
    """Add ``storage`` to the provenance entries that name ``path`` as their ``"file"``."""
    name = str(Path(path).resolve())
    for key, entry in provenance.items():
        if isinstance(entry, dict) and entry.get("file") == name:
            provenance[key] = {**entry, "storage": storage.to_dict()}


def check_outputs(input_path: Path, outputs: list[Path], *, overwrite: bool) -> None:
    """Refuse outputs that are the input, already exist (without overwrite) or lack a folder.

    The input's own JSON sidecar (BIDS, dcm2niix) counts as input: it may hold
    the slice thickness, and mrisr never writes over its input.

    Raises:
        InputError: the input does not exist.
        OutputError: an output is the input or its sidecar, exists (without
            ``overwrite``), or its folder is missing or not writable.
    """
    require_existing(input_path, expected="a scan file or DICOM folder")
    # A NIfTI's BIDS/dcm2niix sidecar (scan.json) is input too: it may hold the slice thickness.
    for output in outputs:
        check_output(output, overwrite=overwrite, inputs=[input_path, sidecar_path(input_path)])
    # A read-only folder fails now, not after minutes of work: one probe per folder.
    for output in {Path(output).absolute().parent: output for output in outputs}.values():
        check_writable(output)
