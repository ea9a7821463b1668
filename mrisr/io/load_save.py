"""Loading and saving volumes: the format follows the path, every input is validated.

:func:`load_volume` picks the reader from the path (a folder is a DICOM
series) and validates what it read; :func:`save_volume` picks the writer from
the ending and writes through :func:`mrisr.io.files.write_atomic`, never over
the volume's own source.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import InputError, OutputError
from mrisr.io.dicom import load_dicom_folder
from mrisr.io.files import (
    FORMAT_LABELS,
    READ_FORMATS,
    READABLE,
    WRITE_FORMATS,
    require_existing,
    suffix,
    write_atomic,
)
from mrisr.io.itk_formats import load_itk_file, write_itk
from mrisr.io.nibabel_formats import load_nibabel, write_mgh, write_nifti
from mrisr.io.storage import Storage, choose_storage, stored_values
from mrisr.io.validation import REEXPORT, validate_volume
from mrisr.volume import Volume

#: The writer of each output format without a scale factor: (volume, on-disk voxels,
#: affine, target file). NIfTI's writer also takes the scale factor (see save_volume).
_WRITERS: dict[str, Callable[[Volume, np.ndarray, np.ndarray, Path], None]] = {
    "mgh": write_mgh,
    "nrrd": write_itk,
    "metaimage": write_itk,
}


def load_volume(path: str | Path) -> Volume:
    """Read and validate a 3D image.

    What is read depends on the path: ``.nii``/``.nii.gz`` and ``.mgz``/``.mgh``
    through nibabel, ``.nrrd``/``.nhdr``/``.mha``/``.mhd`` through SimpleITK,
    and a folder as one DICOM series through SimpleITK's GDCM reader. Headers
    are checked before any voxel is allocated; NIfTI is never read through
    SimpleITK (it zero-fills truncated files silently).

    Args:
        path: image file or DICOM folder.

    Returns:
        A :class:`Volume`: float32 (X, Y, Z) voxels in file order (a 4th
        dimension of size 1 is dropped), the RAS+ affine in mm, the nibabel
        header (a copy; None for SimpleITK formats), ``source`` (absolute
        path) and ``meta`` with ``format``, ``dtype`` (on disk),
        ``qform_code``/``sform_code`` (None where the format has none) and
        ``slice_thickness_mm`` when known.

    Raises:
        InputError: missing, empty, truncated, unreadable or unusable input
            (see :func:`validate_volume`); the message names the file, the
            problem, what was expected and the fix.
        GeometryError: invalid spacing, orientation or slice positions.
    """
    path = require_existing(
        Path(path).expanduser().absolute(),
        expected=READABLE,
        fix="check the path (relative paths start from the current folder)",
    )
    if path.is_dir():
        volume = load_dicom_folder(path)
    else:
        ending = suffix(path)
        kind = READ_FORMATS.get(ending)
        if kind is None:
            fix = "convert it to NIfTI, e.g. with dcm2niix or `mri_convert`"
            if ending in (".dcm", ".ima", ""):
                fix = "pass the folder that holds the whole DICOM series, not one file"
            elif ending in (".hdr", ".img"):
                fix = "convert the Analyze/NIfTI pair to a single .nii.gz (e.g. `fslchfiletype NIFTI_GZ`)"
            raise InputError(
                f"has an extension mrisr does not read ({ending or 'none'})",
                path=path,
                expected=READABLE,
                fix=fix,
            )
        if path.stat().st_size == 0:
            raise InputError(
                "is empty (0 bytes)",
                path=path,
                expected=f"a {FORMAT_LABELS[kind]} image",
                fix=REEXPORT,
            )
        if kind in ("nifti", "mgh"):
            volume = load_nibabel(path, kind)
        else:
            volume = load_itk_file(path, kind)
    validate_volume(volume)
    return volume


def output_format(path: str | Path) -> str:
    """The format save_volume writes for this extension: nifti, mgh, nrrd or metaimage.

    Raises:
        OutputError: an extension mrisr does not write.
    """
    path = Path(path)
    ending = suffix(path)
    kind = WRITE_FORMATS.get(ending)
    if kind is None and not ending and not path.is_dir():
        # `-o results/` reaches here as `results`: a folder that does not exist yet.
        raise OutputError(
            "has no image file ending, and no folder of that name exists",
            path=path,
            expected="an output file name (" + ", ".join(WRITE_FORMATS) + ") or an existing folder",
            fix=f"create the folder first (mkdir -p {path}), or name the output file with an "
            "ending, e.g. scan_sr.nii.gz",
        )
    if kind is None:
        raise OutputError(
            f"has an extension mrisr does not write ({ending or 'none'})",
            path=path,
            expected="one of " + ", ".join(WRITE_FORMATS),
            fix="name the output file with one of those endings, e.g. scan_sr.nii.gz",
        )
    return kind


def save_volume(
    volume: Volume,
    path: str | Path,
    *,
    overwrite: bool = False,
    dtype: Any = np.float32,
) -> Path:
    """Write a volume atomically, never over its input.

    The format follows the extension: ``.nii``/``.nii.gz`` (NIfTI, keeping a
    NIfTI input header's other fields), ``.mgz``/``.mgh`` (MGH) or
    ``.nrrd``/``.mha`` (SimpleITK, LPS geometry). Voxels are written as
    ``dtype``: float types with scl_slope 1 and scl_inter 0; integer types
    with a NIfTI scale factor chosen from the data's range, so nothing is
    clipped (:mod:`mrisr.io.storage`). The header's qform and sform codes are
    those of the input (``volume.meta``, else its header, else 1 "scanner"),
    and pixdim holds the affine's voxel sizes. The file is written to a
    temporary name in the same folder and renamed into place; nothing is left
    behind when writing fails.

    Args:
        volume: the (X, Y, Z) voxels and their (4, 4) RAS+ affine in mm.
        path: output file.
        overwrite: replace an existing file (never the input).
        dtype: on-disk voxel type (float32 by default), or a
            :class:`mrisr.io.storage.Storage` chosen beforehand.

    Returns:
        The absolute output path.

    Raises:
        OutputError: unknown extension, a missing folder, the input's own
            path, an existing file without ``overwrite``, integer values a
            format without a scale factor cannot hold, or a failed write.
        ConfigError: a voxel type that is not a real number type.
    """
    path = Path(path).expanduser().absolute()
    kind = output_format(path)
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise OutputError(
            f"cannot hold voxels of shape {data.shape}",
            path=path,
            expected="a 3D (X, Y, Z) array",
            fix="pass one 3D volume",
        )
    affine = np.array(volume.affine, dtype=np.float64)
    storage = dtype if isinstance(dtype, Storage) else choose_storage(data, dtype, kind, path)

    def write(temporary: Path) -> None:
        stored = stored_values(data, storage)
        if kind == "nifti":  # the one format with a scale factor (io.storage refuses the others)
            write_nifti(volume, stored, affine, temporary, scaling=(storage.slope, storage.inter))
        else:
            _WRITERS[kind](volume, stored, affine, temporary)

    return write_atomic(path, write, overwrite=overwrite, inputs=[volume.source])
