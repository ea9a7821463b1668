"""NRRD and MetaImage files through SimpleITK, and the one RAS <-> LPS conversion.

SimpleITK (like DICOM) describes geometry in LPS world coordinates and hands
out (z, y, x) arrays; mrisr works in RAS+ with (x, y, z) arrays, as NIfTI does.
:func:`sitk_to_ras` and :func:`ras_to_sitk` are the only places where one
becomes the other (DICOM series are read in :mod:`mrisr.io.dicom`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mrisr.errors import InputError
from mrisr.geometry import voxel_sizes
from mrisr.io.files import suffix
from mrisr.io.validation import (
    MAX_DEFLATE_RATIO,
    REEXPORT,
    check_affine,
    check_components,
    check_dtype,
    check_shape,
    check_spacing,
    shape_text,
)
from mrisr.volume import Volume

T = TypeVar("T")


def simpleitk() -> Any:
    """SimpleITK, imported on first use so that ``import mrisr`` stays quick."""
    import SimpleITK

    return SimpleITK


@contextmanager
def quiet_itk() -> Iterator[Any]:
    """SimpleITK with ITK's global warning display off, restored afterwards.

    ITK prints its warnings ("WARNING: In .../itkGDCMSeriesFileNames.cxx ...
    No Series were found") straight to stderr, before and apart from mrisr's
    own message; mrisr checks what those warnings are about and says it in
    its words.

    Yields:
        The SimpleITK module.
    """
    sitk = simpleitk()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield sitk
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


# --------------------------------------------------------------------------- LPS <-> RAS

#: ITK/DICOM world axes are LPS (x to the Left, y to Posterior); NIfTI's are RAS.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def sitk_to_ras(image: Any) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and RAS+ affine of a 3D SimpleITK image, in mrisr's (x, y, z) order.

    SimpleITK stores geometry in LPS world coordinates (origin, spacing,
    direction) and hands out arrays indexed (z, y, x). This flips the first two
    world axes to RAS and transposes the array, so that
    ``affine @ [i, j, k, 1]`` is the RAS position (mm) of ``data[i, j, k]``.
    :func:`ras_to_sitk` is its exact inverse.

    Args:
        image: a 3D, scalar ``SimpleITK.Image``.

    Returns:
        ``(data, affine)``: a (X, Y, Z) array of the image's pixel type (a new
        array) and a (4, 4) float64 voxel-to-RAS matrix in mm.

    Raises:
        InputError: the image is not 3D or not scalar.
    """
    sitk = simpleitk()
    check_components(image.GetNumberOfComponentsPerPixel(), None)
    if image.GetDimension() != 3:
        raise InputError(
            f"the image is {image.GetDimension()}D",
            expected="a 3D image",
            fix="pass a 3D image (SimpleITK.Extract takes one volume out of a 4D one)",
        )
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    # GetArrayFromImage copies; the transpose is a view on that copy.
    data = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    return data, affine


def ras_to_sitk(data: np.ndarray, affine: np.ndarray) -> Any:
    """A SimpleITK image (LPS geometry, (z, y, x) storage) from mrisr voxels and affine.

    The inverse of :func:`sitk_to_ras`.

    Args:
        data: (X, Y, Z) array of a type SimpleITK supports.
        affine: (4, 4) voxel-to-RAS matrix in mm.

    Returns:
        A new ``SimpleITK.Image`` whose origin, spacing and direction describe
        the same voxel positions as ``affine``.
    """
    sitk = simpleitk()
    affine = np.asarray(affine, dtype=np.float64)
    lps = _LPS_TO_RAS @ affine[:3, :3]  # the flip is its own inverse
    spacing = voxel_sizes(affine)
    direction = lps / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in direction.ravel()])
    image.SetOrigin([float(o) for o in _LPS_TO_RAS @ affine[:3, 3]])
    return image


def load_itk_file(path: Path, kind: str) -> Volume:
    """Read an NRRD or MetaImage file through SimpleITK: header checks first, then the voxels.

    Args:
        path: an existing, non-empty .nrrd, .nhdr, .mha or .mhd file (absolute).
        kind: its format, ``"nrrd"`` or ``"metaimage"``.

    Returns:
        A Volume of float32 (X, Y, Z) voxels, its RAS+ affine (mm), no header,
        and ``meta``; a 4th axis of size 1 is dropped.

    Raises:
        InputError: wrong magic, truncated or damaged file, an unusable shape
            or voxel type, or a header claiming more voxels than the file holds.
        GeometryError: invalid voxel sizes or affine.
    """
    with quiet_itk():
        return _load_itk_file(path, kind)


def _load_itk_file(path: Path, kind: str) -> Volume:
    """:func:`load_itk_file` without ITK's own warnings."""
    sitk = simpleitk()
    label = "NRRD" if kind == "nrrd" else "MetaImage"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    read_or_refuse(
        reader.ReadImageInformation,
        path,
        f"cannot be read as {label} (wrong magic or damaged header): {{reason}}",
        expected=f"a valid {label} file",
    )
    pixel = reader.GetPixelID()
    if pixel in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        check_dtype(np.complex64, path)
    check_components(reader.GetNumberOfComponents(), path)
    raw_shape = tuple(int(n) for n in reader.GetSize())
    shape = check_shape(raw_shape, path, squeeze_frames=True)
    check_spacing(reader.GetSpacing()[:3], path, "spacing")
    # Detached headers keep their voxels elsewhere; for single files the voxels,
    # compressed or not, cannot exceed what deflate could expand the file to.
    if suffix(path) in (".nrrd", ".mha"):
        file_size = path.stat().st_size
        if math.prod(raw_shape) > MAX_DEFLATE_RATIO * file_size + 4096:
            raise InputError(
                f"has a header claiming an absurd size: {shape_text(raw_shape)} voxels in a "
                f"{file_size:,}-byte file",
                path=path,
                expected="a header that matches the voxels stored",
                fix=REEXPORT,
            )
    image = read_or_refuse(
        reader.Execute,
        path,
        "is truncated or damaged: its voxels cannot be read ({reason})",
        expected=f"a complete {label} file",
    )
    if image.GetDimension() > 3:
        image = sitk.Extract(image, [*shape, 0], [0, 0, 0, 0])
    data, affine = sitk_to_ras(image)
    meta: dict[str, Any] = {
        "format": kind,
        "dtype": data.dtype.name,
        "qform_code": None,
        "sform_code": None,
    }
    if raw_shape != shape:
        meta["squeezed_shape"] = raw_shape
    check_affine(affine, path)
    return Volume(data=data.astype(np.float32), affine=affine, header=None, source=path, meta=meta)


def read_or_refuse(
    step: Callable[[], T], path: Path, problem: str, *, expected: str, fix: str = REEXPORT
) -> T:
    """Run a SimpleITK reading step; its RuntimeError becomes an InputError naming the file.

    Args:
        step: e.g. ``reader.Execute``.
        path: file or folder for messages.
        problem: what is wrong, with ``{reason}`` where ITK's reason goes.
        expected: what was expected instead.
        fix: what the user can do.

    Returns:
        What ``step`` returns.

    Raises:
        InputError: ``step`` raised a RuntimeError (SimpleITK's only error type).
    """
    try:
        return step()
    except RuntimeError as exc:
        raise InputError(
            problem.format(reason=_itk_reason(exc)), path=path, expected=expected, fix=fix
        ) from exc


def _itk_reason(exc: Exception) -> str:
    """The informative lines of an ITK exception, without source locations and errno noise."""
    kept = []
    for line in str(exc).splitlines():
        line = line.strip()
        if not line or line.startswith(("Exception thrown", "Reason: No such file")):
            continue
        kept.append(re.sub(r"^(ITK|sitk::)\s*ERROR:\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", line))
    if len(kept) > 2:
        kept = [kept[0], kept[-1]]
    return " ".join(kept) or type(exc).__name__


def write_itk(volume: Volume, data: np.ndarray, affine: np.ndarray, target: Path) -> None:
    """Write NRRD or MetaImage (compressed), in LPS geometry.

    Args:
        volume: unused (the formats keep no header of ours); for a writer
            signature shared with the nibabel formats.
        data: (X, Y, Z) voxels, already of the on-disk type.
        affine: (4, 4) voxel-to-RAS matrix in mm.
        target: the file to write (its ending picks .nrrd or .mha).
    """
    simpleitk().WriteImage(ras_to_sitk(data, affine), str(target), True)
