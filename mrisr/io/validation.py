"""Input validation: what every loaded file and in-memory volume must satisfy.

The ``check_*`` functions are shared by the format readers, which run them on
header fields before any voxel is allocated; :func:`validate_volume` runs them
(and the voxel checks) on a whole :class:`~mrisr.volume.Volume`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import GeometryError, InputError
from mrisr.geometry import voxel_sizes
from mrisr.volume import Volume

#: Refuse headers claiming more voxels than this before allocating anything (8 GiB as float32).
MAX_VOXELS = 2**31
#: Deflate cannot shrink data by more than about 1032:1, so a gzip file of n bytes
#: never holds more than this many times n bytes once decompressed.
MAX_DEFLATE_RATIO = 1032
#: The fix for damaged or cut-short files.
REEXPORT = "copy or export the image again (a download or copy may have been cut short)"


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    """A shape for messages, e.g. ``256×256×40``."""
    return "\u00d7".join(str(int(n)) for n in shape)


def check_shape(
    shape: tuple[int, ...], path: Path | None, *, squeeze_frames: bool
) -> tuple[int, int, int]:
    """Refuse shapes mrisr cannot upscale; return the 3D shape.

    Args:
        shape: the array or header shape (voxels per axis).
        path: file for messages.
        squeeze_frames: accept trailing axes of size 1 (a 4D file holding one
            frame) and drop them; in-memory arrays must already be 3D.

    Returns:
        (X, Y, Z) voxel counts.

    Raises:
        InputError: a zero-size axis, fewer than 3 axes, more than one frame
            or component, extra axes of size 1 (unless ``squeeze_frames``), a
            single slice, or more than :data:`MAX_VOXELS` voxels.
    """
    shape = tuple(int(n) for n in shape)
    text = shape_text(shape)
    if any(n <= 0 for n in shape):
        raise InputError(
            f"has a zero-size dimension (shape {text})",
            path=path,
            expected="at least one voxel along every axis",
            fix="the header's dim field is wrong or the export failed: " + REEXPORT,
        )
    if len(shape) < 3:
        raise InputError(
            f"is {len(shape)}D (shape {text})",
            path=path,
            expected="a 3D volume (a stack of slices)",
            fix="pass the whole series as one 3D volume, not a single slice",
        )
    extra = shape[3:]
    if any(n > 1 for n in extra):
        if len(shape) == 4:
            raise InputError(
                f"is 4D with {extra[0]} frames (shape {text})",
                path=path,
                expected="one 3D volume (a 4th dimension of size 1 is accepted)",
                fix="extract one frame, e.g. `fslroi in out 0 1`, and upscale that",
            )
        raise InputError(
            f"is {len(shape)}D (shape {text}), e.g. a vector or tensor image",
            path=path,
            expected="one 3D scalar volume",
            fix="extract one 3D component first (e.g. nibabel: img.slicer[..., 0, 0])",
        )
    if extra and not squeeze_frames:
        raise InputError(
            f"has {len(shape)} array axes (shape {text})",
            path=path,
            expected="a 3D (X, Y, Z) array",
            fix="drop the trailing axes of size 1, e.g. data.reshape(data.shape[:3])",
        )
    if min(shape[:3]) == 1:
        raise InputError(
            f"is a single 2D slice (shape {text})",
            path=path,
            expected="a 3D volume with at least 2 voxels along every axis",
            fix="pass the whole series as one 3D volume, not a single slice",
        )
    n_voxels = math.prod(shape)
    if n_voxels > MAX_VOXELS:
        raise InputError(
            f"has a header claiming an absurd size: {text} = {n_voxels:,} voxels",
            path=path,
            expected=f"at most {MAX_VOXELS:,} voxels",
            fix="the header's dim field is corrupt: " + REEXPORT,
        )
    return shape[0], shape[1], shape[2]


def check_dtype(dtype: np.dtype, path: Path | None) -> None:
    """Refuse complex, RGB and non-numeric voxel types.

    Args:
        dtype: the voxel type (on disk or in memory).
        path: file for messages.

    Raises:
        InputError: complex, structured (RGB) or non-numeric voxels.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise InputError(
            f"has complex voxels ({dtype.name})",
            path=path,
            expected="real-valued (magnitude) intensities",
            fix="take the magnitude first, e.g. `fslcomplex -realabs in out`",
        )
    if dtype.names is not None or dtype.kind == "V":
        raise InputError(
            f"has RGB/vector voxels ({dtype})",
            path=path,
            expected="greyscale intensities, one number per voxel",
            fix="convert to greyscale or extract one channel first",
        )
    if dtype.kind not in "biuf":
        raise InputError(
            f"has voxels of type {dtype}",
            path=path,
            expected="integer or floating-point intensities",
            fix="convert the image to float32",
        )


def check_components(components: int, path: Path | None) -> None:
    """Refuse voxels of several components (RGB, vector images); the one place this is decided.

    Args:
        components: numbers per voxel, as SimpleITK reports them.
        path: file or DICOM folder for messages.

    Raises:
        InputError: more than one component per voxel.
    """
    if components != 1:
        raise InputError(
            f"{'' if path is not None else 'the image '}has {components} components per voxel "
            "(RGB or vector data)",
            path=path,
            expected="greyscale intensities, one number per voxel",
            fix="convert to greyscale or extract one channel first",
        )


def check_spacing(spacing: Any, path: Path | None, what: str) -> None:
    """Refuse zero, negative or non-finite voxel sizes (mm).

    Args:
        spacing: (3,) voxel sizes in mm.
        path: file for messages.
        what: where the sizes come from, for messages (e.g. ``"pixdim[1:4]"``).

    Raises:
        GeometryError: not three positive, finite sizes.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        text = ", ".join(f"{s:g}" for s in np.ravel(spacing))
        raise GeometryError(
            f"has invalid voxel spacing: {what} = ({text}) mm",
            path=path,
            expected="three positive, finite voxel sizes in mm",
            fix="repair the header's voxel sizes (e.g. copy the geometry of a good "
            "export with `fslcpgeom`) or convert the scan again",
        )


def check_affine(affine: Any, path: Path | None) -> None:
    """Refuse affines that are not (4, 4), not finite, or singular.

    Args:
        affine: (4, 4) voxel-to-world matrix (mm).
        path: file for messages.

    Raises:
        GeometryError: wrong shape, non-finite entries, a last row other than
            [0, 0, 0, 1], invalid voxel sizes, or two voxel axes (nearly) parallel.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise GeometryError(
            f"has an invalid affine (shape {affine.shape}, finite: {bool(np.all(np.isfinite(affine)))})",
            path=path,
            expected="a finite (4, 4) voxel-to-world matrix",
            fix="repair the header's qform/sform or convert the scan again",
        )
    if not np.allclose(affine[3], [0.0, 0.0, 0.0, 1.0]):
        raise GeometryError(
            f"has an affine whose last row is {affine[3].tolist()}",
            path=path,
            expected="last row [0, 0, 0, 1]",
            fix="repair the header's qform/sform or convert the scan again",
        )
    check_spacing(voxel_sizes(affine), path, "affine column norms")
    # |det| / product of column norms is the volume of the unit voxel cell relative
    # to a box: near zero when two voxel axes (almost) coincide.
    sizes = voxel_sizes(affine)
    if abs(np.linalg.det(affine[:3, :3])) / np.prod(sizes) < 1e-6:
        raise GeometryError(
            "has a singular affine: two voxel axes point the same way",
            path=path,
            expected="three independent voxel axes",
            fix="repair the header's qform/sform or convert the scan again",
        )


def check_form_codes(qform_code: Any, sform_code: Any, path: Path | None) -> None:
    """Refuse a NIfTI orientation that is unknown (qform and sform codes both 0).

    Args:
        qform_code: the header's qform_code, or None where the format has none.
        sform_code: the header's sform_code, or None.
        path: file for messages.

    Raises:
        GeometryError: both codes are 0.
    """
    if (
        qform_code is not None
        and sform_code is not None
        and int(qform_code) == 0
        and int(sform_code) == 0
    ):
        raise GeometryError(
            "has qform_code 0 and sform_code 0: its orientation in the scanner is unknown",
            path=path,
            expected="a qform or sform code above 0 (e.g. 1, scanner)",
            fix="set a qform/sform from a correct export (`fslcpgeom good.nii.gz this.nii.gz`), "
            "or, if the affine is right, set its code (nibabel: hdr.set_sform(affine, code=1))",
        )


def validate_volume(volume: Volume) -> None:
    """Check that a volume is something mrisr can upscale.

    Runs on every loaded file and can be called on in-memory volumes. Isotropy
    is not checked here (see :func:`mrisr.geometry.detect_thick_axis`).

    Args:
        volume: the volume; ``data`` must be a (X, Y, Z) real array.

    Raises:
        InputError: wrong number of axes, a zero-size or single-slice axis,
            complex/RGB data, NaN or infinite voxels, or a constant image.
        GeometryError: non-finite, zero or negative spacing, a singular
            affine, or both NIfTI form codes 0 (unknown orientation).
    """
    path = volume.source
    data = np.asarray(volume.data)
    check_dtype(data.dtype, path)
    check_shape(data.shape, path, squeeze_frames=False)
    check_affine(volume.affine, path)
    check_form_codes(volume.meta.get("qform_code"), volume.meta.get("sform_code"), path)
    if data.dtype.kind == "f":
        n_bad = data.size - int(np.count_nonzero(np.isfinite(data)))
        if n_bad:
            n_nan = int(np.count_nonzero(np.isnan(data)))
            raise InputError(
                f"contains {n_nan:,} NaN and {n_bad - n_nan:,} infinite voxels (of {data.size:,})",
                path=path,
                expected="finite intensities in every voxel",
                fix="replace them first, e.g. `fslmaths in -nan out` or numpy.nan_to_num",
            )
    low, high = data.min(), data.max()
    if low == high:
        what = "all zeros" if low == 0 else f"constant (every voxel is {float(low):g})"
        raise InputError(
            f"is {what}",
            path=path,
            expected="an image with contrast",
            fix="check that the right file or series was exported; a failed conversion "
            "or an empty mask looks like this",
        )
