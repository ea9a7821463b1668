"""Volume: voxels, affine and header travelling together; loading, saving, validation.

This module owns every file format mrisr reads or writes: NIfTI and MGH through
nibabel; NRRD, MetaImage and DICOM series through SimpleITK (whose LPS geometry
and (z, y, x) arrays are converted in one place, :func:`sitk_to_ras`). Every
input is checked before its voxels are allocated, and every output is written
to a temporary file and renamed into place, never over its input.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import re
import secrets
import struct
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.freesurfer.mghformat import MGHHeader

from mrisr.errors import GeometryError, InputError, OutputError
from mrisr.geometry import voxel_sizes


@dataclass(frozen=True)
class Volume:
    """A 3D image on a grid.

    Attributes:
        data: (X, Y, Z) voxel array, in the voxel order of the file.
        affine: (4, 4) float64 voxel-to-world (RAS+, mm) matrix, NIfTI convention.
        header: the source file's header (nibabel header for NIfTI/MGH), or None.
        source: the file or folder it was read from, or that the volume it was
            derived from (by simulation or upscaling) was read from; None for
            in-memory data. Saving refuses to write over it.
        meta: extra facts worth recording (e.g. qform/sform codes, slice thickness).
    """

    data: np.ndarray
    affine: np.ndarray
    header: Any = None
    source: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel counts along the three array axes."""
        return tuple(int(n) for n in self.data.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """(3,) voxel sizes in mm along the array axes."""
        from mrisr.geometry import voxel_sizes

        return voxel_sizes(self.affine)

    def with_data(
        self,
        data: np.ndarray,
        affine: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Volume:
        """A new Volume with other voxels, on ``affine`` (default: this one's).

        On a new grid the header is a copy whose voxel sizes are the new
        affine's, so that header and affine keep describing the same grid
        (thick-axis detection cross-checks them).

        Args:
            data: (X, Y, Z) voxels on the new grid.
            affine: (4, 4) voxel-to-world matrix of the new grid (mm).
            meta: replaces ``meta`` (default: kept).
        """
        header = self.header
        if affine is None:
            affine = self.affine.copy()
        else:
            affine = np.asarray(affine, np.float64)
            if hasattr(header, "set_zooms") and hasattr(header, "get_zooms"):
                header = header.copy()
                zooms = list(header.get_zooms())
                zooms[:3] = voxel_sizes(affine)
                header.set_zooms(zooms)
        return replace(
            self,
            data=data,
            affine=affine,
            header=header,
            meta=dict(self.meta) if meta is None else meta,
        )

    def crop(self, box: tuple[slice, slice, slice]) -> Volume:
        """The voxels inside ``box``, on an affine that keeps them where they were in mm.

        Args:
            box: one ``slice(start, stop)`` per array axis (step 1; ``None``
                bounds allowed; negative indices count from the end, as numpy's).

        Returns:
            A new Volume holding a contiguous copy of the voxels; its affine is
            this one's shifted by ``start`` voxels along each axis, so every kept
            voxel maps to the same world position (mm) as before.

        Raises:
            ValueError: ``box`` does not have three slices, has a step other
                than 1, or selects no voxel along an axis.
        """
        if len(box) != 3 or any(not isinstance(b, slice) for b in box):
            raise ValueError(f"box must be three slices, got {box!r}")
        starts = []
        for axis, (part, n) in enumerate(zip(box, self.shape, strict=True)):
            start, stop, step = part.indices(n)
            if step != 1 or stop <= start:
                raise ValueError(f"box selects no voxel (or steps) along axis {axis}: {part!r}")
            starts.append(start)
        shift = np.eye(4)
        shift[:3, 3] = starts
        return self.with_data(np.ascontiguousarray(self.data[box]), self.affine @ shift)


# --------------------------------------------------------------------------- formats

#: Refuse headers claiming more voxels than this before allocating anything (8 GiB as float32).
MAX_VOXELS = 2**31
#: Deflate cannot shrink data by more than about 1032:1, so a gzip file of n bytes
#: never holds more than this many times n bytes once decompressed.
MAX_DEFLATE_RATIO = 1032
#: Form codes written when neither the volume's meta nor its header knows them:
#: "scanner", as dcm2niix, FreeSurfer and ITK write when converting scanner images.
DEFAULT_FORM_CODE = 1

_READ_FORMATS = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".mgz": "mgh",
    ".mgh": "mgh",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
# Detached-header formats (.nhdr, .mhd) are read but not written: their two files
# cannot be renamed into place in one atomic step.
_WRITE_FORMATS = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".mgz": "mgh",
    ".mgh": "mgh",
    ".nrrd": "nrrd",
    ".mha": "metaimage",
}
_LABELS = {"nifti": "NIfTI", "mgh": "MGH", "nrrd": "NRRD", "metaimage": "MetaImage"}
_READABLE = "a NIfTI (.nii, .nii.gz), MGH (.mgz, .mgh), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd) file, or a folder holding one DICOM series"
_REEXPORT = "copy or export the image again (a download or copy may have been cut short)"

_NIFTI1_MAGICS = (b"n+1\x00",)
_NIFTI2_MAGICS = (b"n+2\x00",)
_GZIP_MAGIC = b"\x1f\x8b"


def _suffix(path: Path) -> str:
    """The format-defining extension, lower case (``.nii.gz`` counts as one)."""
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()


def _stem(path: Path) -> str:
    """File name without its format extension."""
    suffix = _suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "\u00d7".join(str(int(n)) for n in shape)


def _sitk() -> Any:
    """SimpleITK, imported on first use so that ``import mrisr`` stays quick."""
    import SimpleITK

    return SimpleITK


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
    sitk = _sitk()
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"is a {image.GetDimension()}D image with "
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel",
            expected="a 3D scalar image",
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
    sitk = _sitk()
    affine = np.asarray(affine, dtype=np.float64)
    lps = _LPS_TO_RAS @ affine[:3, :3]  # the flip is its own inverse
    spacing = voxel_sizes(affine)
    direction = lps / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in direction.ravel()])
    image.SetOrigin([float(o) for o in _LPS_TO_RAS @ affine[:3, 3]])
    return image


# --------------------------------------------------------------------------- checks shared by all formats


def _check_shape(
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
    """
    shape = tuple(int(n) for n in shape)
    text = _shape_text(shape)
    if any(n <= 0 for n in shape):
        raise InputError(
            f"has a zero-size dimension (shape {text})",
            path=path,
            expected="at least one voxel along every axis",
            fix="the header's dim field is wrong or the export failed: " + _REEXPORT,
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
            fix="the header's dim field is corrupt: " + _REEXPORT,
        )
    return shape[0], shape[1], shape[2]


def _check_dtype(dtype: np.dtype, path: Path | None) -> None:
    """Refuse complex, RGB and non-numeric voxel types."""
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


def _check_spacing(spacing: Any, path: Path | None, what: str) -> None:
    """Refuse zero, negative or non-finite voxel sizes (mm)."""
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


def _check_affine(affine: Any, path: Path | None) -> None:
    """Refuse affines that are not (4, 4), not finite, or singular."""
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
    _check_spacing(voxel_sizes(affine), path, "affine column norms")
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


def _check_form_codes(qform_code: Any, sform_code: Any, path: Path | None) -> None:
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
    _check_dtype(data.dtype, path)
    _check_shape(data.shape, path, squeeze_frames=False)
    _check_affine(volume.affine, path)
    _check_form_codes(volume.meta.get("qform_code"), volume.meta.get("sform_code"), path)
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


# --------------------------------------------------------------------------- loading


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
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise InputError(
            "does not exist",
            path=path,
            expected=_READABLE,
            fix="check the path (relative paths start from the current folder)",
        )
    if path.is_dir():
        volume = _load_dicom_folder(path)
    else:
        suffix = _suffix(path)
        kind = _READ_FORMATS.get(suffix)
        if kind is None:
            fix = "convert it to NIfTI, e.g. with dcm2niix or `mri_convert`"
            if suffix in (".dcm", ".ima", ""):
                fix = "pass the folder that holds the whole DICOM series, not one file"
            elif suffix in (".hdr", ".img"):
                fix = "convert the Analyze/NIfTI pair to a single .nii.gz (e.g. `fslchfiletype NIFTI_GZ`)"
            raise InputError(
                f"has an extension mrisr does not read ({suffix or 'none'})",
                path=path,
                expected=_READABLE,
                fix=fix,
            )
        if path.stat().st_size == 0:
            raise InputError(
                "is empty (0 bytes)", path=path, expected=f"a {_LABELS[kind]} image", fix=_REEXPORT
            )
        if kind in ("nifti", "mgh"):
            volume = _load_nibabel(path, kind)
        else:
            volume = _load_itk_file(path, kind)
    validate_volume(volume)
    return volume


def _read_head(path: Path, n_bytes: int, *, gz: bool, label: str) -> bytes:
    """The first ``n_bytes`` (decompressed) bytes of a file, for sniffing its header."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if gz and magic != _GZIP_MAGIC:
        raise InputError(
            f"is named {_suffix(path)} but is not gzip-compressed (wrong magic {magic!r})",
            path=path,
            expected=f"a gzip-compressed {label} file",
            fix="rename it if it is an uncompressed image, or export it again",
        )
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as stream:
            return stream.read(n_bytes)
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(
            f"is truncated or damaged: its compressed stream cannot be read ({exc})",
            path=path,
            expected=f"a complete {label} file",
            fix=_REEXPORT,
        ) from exc


def _sniff_nibabel(path: Path, kind: str) -> Any:
    """Check the header's size field and magic, so a wrong file gets a precise message.

    Returns:
        The header exactly as stored: nibabel's loader silently "repairs"
        some fields (negative pixdim, an MGH goodRASFlag of 0).
    """
    gz = _suffix(path) in (".nii.gz", ".mgz")
    if kind == "mgh":
        head = _read_head(path, 284, gz=gz, label="MGH")
        if len(head) >= 4 and struct.unpack(">i", head[:4])[0] != 1:
            raise InputError(
                f"is not an MGH image (wrong magic: version field {head[:4]!r})",
                path=path,
                expected="a FreeSurfer MGH/MGZ file (version 1)",
                fix="check the file; convert other formats to NIfTI first",
            )
        if len(head) < 284:
            raise InputError(
                f"is truncated: {len(head)} header bytes",
                path=path,
                expected="an MGH header of 284 bytes",
                fix=_REEXPORT,
            )
        # nibabel's MGHHeader replaces a 0 goodRASFlag even with check=False, so
        # these fields are unpacked by hand (big-endian: int16 flag, 3 float32).
        flag, *delta = struct.unpack(">h3f", head[28:42])
        return {"goodRASFlag": flag, "delta": np.array(delta)}
    head = _read_head(path, 540, gz=gz, label="NIfTI")
    sizes = {struct.unpack(f"{e}i", head[:4])[0] for e in "<>"} if len(head) >= 4 else set()
    if 540 in sizes and head[4:8] in _NIFTI2_MAGICS:
        need = 540
    elif 348 in sizes and len(head) >= 348 and head[344:348] in _NIFTI1_MAGICS:
        need = 348
    elif 348 in sizes and len(head) >= 348 and head[344:348] == b"ni1\x00":
        raise InputError(
            "holds the header of a NIfTI pair (magic 'ni1': voxels in a separate .img file)",
            path=path,
            expected="a single-file NIfTI (magic 'n+1')",
            fix="convert the pair to one file, e.g. `fslchfiletype NIFTI_GZ`",
        )
    elif sizes & {348, 540} and len(head) < max(sizes & {348, 540}):
        raise InputError(
            f"is truncated: only {len(head)} header bytes",
            path=path,
            expected=f"a NIfTI header of {max(sizes & {348, 540})} bytes",
            fix=_REEXPORT,
        )
    else:
        raise InputError(
            "is not a NIfTI image (wrong magic: no NIfTI header size 348/540 at byte 0 "
            "and 'n+1'/'n+2' magic)",
            path=path,
            expected="a NIfTI-1 or NIfTI-2 file",
            fix="check the file; Analyze 7.5 files without magic have no reliable orientation, "
            "convert them with a tool that knows their orientation",
        )
    header_class = nib.Nifti2Header if need == 540 else nib.Nifti1Header
    return header_class.from_fileobj(io.BytesIO(head[:need]), check=False)


def _gzip_isize(path: Path) -> int:
    """The gzip trailer's ISIZE: the last member's uncompressed size mod 2**32 (a hint)."""
    with open(path, "rb") as raw:
        raw.seek(0, os.SEEK_END)
        if raw.tell() < 4:
            return 0
        raw.seek(-4, os.SEEK_END)
        return struct.unpack("<I", raw.read(4))[0]


def _gzip_length(path: Path, limit: int) -> int:
    """Decompressed length of a gzip file, counted in chunks up to ``limit`` bytes.

    Raises EOFError/zlib.error/OSError on a damaged stream.
    """
    total = 0
    with gzip.open(path, "rb") as stream:
        while total < limit:
            chunk = stream.read(min(1 << 22, limit - total))
            if not chunk:
                break
            total += len(chunk)
    return total


def _check_stored_size(
    path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype, label: str
) -> None:
    """Refuse a header claiming more voxel bytes than the file holds, before reading them."""
    n_data = math.prod(shape) * np.dtype(dtype).itemsize
    needed = int(offset) + n_data
    file_size = path.stat().st_size
    claim = (
        f"{_shape_text(shape)} {np.dtype(dtype).name} voxels "
        f"({n_data:,} bytes from byte {int(offset):,})"
    )
    gz = _suffix(path) in (".nii.gz", ".mgz")
    if not gz:
        if file_size < needed:
            raise InputError(
                f"is truncated or its header is wrong: the header claims {claim}, but the file "
                f"holds {file_size:,} bytes",
                path=path,
                expected=f"a {label} file of at least {needed:,} bytes",
                fix=_REEXPORT,
            )
        return
    if needed > MAX_DEFLATE_RATIO * file_size + 1024:
        raise InputError(
            f"has a header claiming an absurd size: {claim}, more than a "
            f"{file_size:,}-byte gzip file can hold",
            path=path,
            expected=f"at most about {MAX_DEFLATE_RATIO * file_size:,} bytes once decompressed",
            fix=_REEXPORT,
        )
    # ISIZE is only a hint (mod 2**32, last member only), so a short hint is
    # confirmed by counting, in constant memory, before anything is allocated.
    if needed < 2**32 and _gzip_isize(path) < needed:
        try:
            length = _gzip_length(path, needed)
        except (EOFError, OSError, zlib.error) as exc:
            raise InputError(
                f"is truncated: the compressed stream ends early ({exc})",
                path=path,
                expected=f"a complete {label} file",
                fix=_REEXPORT,
            ) from exc
        if length < needed:
            raise InputError(
                f"is truncated or its header is wrong: the header claims {claim}, but it decompresses "
                f"to {length:,} bytes",
                path=path,
                expected=f"at least {needed:,} bytes once decompressed",
                fix=_REEXPORT,
            )


def _sidecar_slice_thickness(path: Path) -> float | None:
    """SliceThickness (mm) from a BIDS/dcm2niix JSON sidecar beside the image, if any."""
    sidecar = path.with_name(_stem(path) + ".json")
    try:
        value = json.loads(sidecar.read_text()).get("SliceThickness")
        return float(value) if value is not None else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _load_nibabel(path: Path, kind: str) -> Volume:
    """NIfTI or MGH through nibabel: header checks first, then the voxels."""
    label = "NIfTI" if kind == "nifti" else "MGH"
    stored = _sniff_nibabel(path, kind)
    try:
        image = nib.load(path, mmap=False)
    except Exception as exc:  # nibabel raises many types for a bad header
        raise InputError(
            f"cannot be read as {label}: {exc}",
            path=path,
            expected=f"a valid {label} file",
            fix=_REEXPORT,
        ) from exc
    header = image.header
    on_disk = np.dtype(header.get_data_dtype())
    raw_shape = tuple(int(n) for n in header.get_data_shape())
    _check_dtype(on_disk, path)
    shape = _check_shape(raw_shape, path, squeeze_frames=True)
    meta: dict[str, Any] = {"dtype": on_disk.name if on_disk.names is None else str(on_disk)}
    if kind == "nifti":
        meta["format"] = "nifti2" if isinstance(header, nib.Nifti2Header) else "nifti1"
        meta["qform_code"] = int(header["qform_code"])
        meta["sform_code"] = int(header["sform_code"])
        _check_spacing(stored["pixdim"][1:4], path, "pixdim[1:4]")
        _check_form_codes(meta["qform_code"], meta["sform_code"], path)
    else:
        meta["format"] = "mgh"
        meta["qform_code"] = meta["sform_code"] = None
        _check_spacing(stored["delta"], path, "delta")
        if int(stored["goodRASFlag"]) <= 0:
            raise GeometryError(
                "has goodRASFlag 0: its orientation in the scanner is unknown",
                path=path,
                expected="an MGH header with valid direction cosines (goodRASFlag 1)",
                fix="convert the scan again from DICOM (e.g. `mri_convert`)",
            )
    offset = int(getattr(image.dataobj, "offset", header.get_data_offset()))
    _check_stored_size(path, offset, raw_shape, on_disk, label)
    try:
        affine = np.array(image.affine, dtype=np.float64)
    except Exception as exc:
        raise GeometryError(
            f"has an orientation nibabel cannot turn into an affine: {exc}",
            path=path,
            expected="a valid qform or sform",
            fix="repair the header's qform/sform or convert the scan again",
        ) from exc
    _check_affine(affine, path)
    try:
        data = image.get_fdata(dtype=np.float32)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise InputError(
            f"is truncated or damaged: its voxels cannot be read ({str(exc).splitlines()[0]})",
            path=path,
            expected=f"a complete {label} file",
            fix=_REEXPORT,
        ) from exc
    if data.shape != shape:
        meta["squeezed_shape"] = raw_shape
        data = data.reshape(shape)
    thickness = _sidecar_slice_thickness(path)
    if thickness is not None:
        meta["slice_thickness_mm"] = thickness
    return Volume(data=data, affine=affine, header=header.copy(), source=path, meta=meta)


def _load_itk_file(path: Path, kind: str) -> Volume:
    """NRRD or MetaImage through SimpleITK: header checks first, then the voxels."""
    sitk = _sitk()
    label = "NRRD" if kind == "nrrd" else "MetaImage"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            f"cannot be read as {label} (wrong magic or damaged header): {_itk_reason(exc)}",
            path=path,
            expected=f"a valid {label} file",
            fix=_REEXPORT,
        ) from exc
    pixel = reader.GetPixelID()
    if pixel in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        _check_dtype(np.complex64, path)
    if reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"has {reader.GetNumberOfComponents()} components per voxel (RGB or vector data)",
            path=path,
            expected="greyscale intensities, one number per voxel",
            fix="convert to greyscale or extract one channel first",
        )
    raw_shape = tuple(int(n) for n in reader.GetSize())
    shape = _check_shape(raw_shape, path, squeeze_frames=True)
    _check_spacing(reader.GetSpacing()[:3], path, "spacing")
    # Detached headers keep their voxels elsewhere; for single files the voxels,
    # compressed or not, cannot exceed what deflate could expand the file to.
    if _suffix(path) in (".nrrd", ".mha"):
        file_size = path.stat().st_size
        if math.prod(raw_shape) > MAX_DEFLATE_RATIO * file_size + 4096:
            raise InputError(
                f"has a header claiming an absurd size: {_shape_text(raw_shape)} voxels in a "
                f"{file_size:,}-byte file",
                path=path,
                expected="a header that matches the voxels stored",
                fix=_REEXPORT,
            )
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"is truncated or damaged: its voxels cannot be read ({_itk_reason(exc)})",
            path=path,
            expected=f"a complete {label} file",
            fix=_REEXPORT,
        ) from exc
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
    _check_affine(affine, path)
    return Volume(data=data.astype(np.float32), affine=affine, header=None, source=path, meta=meta)


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


def _dicom_floats(text: str | None) -> list[float] | None:
    """Numbers of a DICOM multi-valued decimal string such as ``"-110.5\\-78.3\\-72.7"``."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.strip().split("\\")]
    except ValueError:
        return None


def _load_dicom_folder(folder: Path) -> Volume:
    """One DICOM series from a folder through SimpleITK's GDCM readers.

    Each file is parsed as few times as possible: GDCM is slow on files with
    trailing padding (the shared PD series has 2.5 MB of it in one file), so the
    per-slice tags come from the series read itself rather than a separate pass.
    """
    sitk = _sitk()
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(
            "is a folder without a DICOM series",
            path=folder,
            expected=_READABLE,
            fix="pass the folder that holds the .dcm files, or an image file",
        )
    if len(series) > 1:
        listing = ", ".join(
            f"{uid} ({len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))} files)"
            for uid in series
        )
        raise InputError(
            f"holds {len(series)} DICOM series: {listing}",
            path=folder,
            expected="one DICOM series per folder",
            fix="move each series into its own folder (e.g. sort by SeriesInstanceUID) and pass "
            "one, or convert them all with `dcm2niix` and pass one .nii.gz",
        )
    uid = series[0]
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    # Spacing is checked below; ITK's own non-uniformity warning only adds noise.
    warnings_on = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"holds a DICOM series that cannot be read: {_itk_reason(exc)}",
            path=folder,
            expected="a complete DICOM series",
            fix="copy or export the series again, or convert it with `dcm2niix`",
        ) from exc
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_on)

    def tag(index: int, key: str) -> str | None:
        return reader.GetMetaData(index, key) if reader.HasMetaDataKey(index, key) else None

    positions, orientations = [], []
    for index, name in enumerate(files):
        position = _dicom_floats(tag(index, "0020|0032"))
        orientation = _dicom_floats(tag(index, "0020|0037"))
        if position is None or orientation is None or len(position) != 3 or len(orientation) != 6:
            raise InputError(
                f"holds DICOM file {Path(name).name} without ImagePositionPatient/"
                "ImageOrientationPatient (0020,0032)/(0020,0037)",
                path=folder,
                expected="a cross-sectional series with slice positions",
                fix="convert it with `dcm2niix`, which handles more DICOM variants",
            )
        positions.append(position)
        orientations.append(orientation)
    pixel = _dicom_floats(tag(0, "0028|0030")) or [1.0, 1.0]
    gaps = check_slice_positions(np.asarray(positions), np.asarray(orientations), pixel, folder)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"holds a DICOM series with {image.GetNumberOfComponentsPerPixel()} components "
            "per voxel (RGB)",
            path=folder,
            expected="greyscale intensities, one number per voxel",
            fix="convert to greyscale first",
        )
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        _check_dtype(np.complex64, folder)
    _check_shape(tuple(image.GetSize()), folder, squeeze_frames=False)
    data, affine = sitk_to_ras(image)
    meta: dict[str, Any] = {
        "format": "dicom",
        "dtype": data.dtype.name,
        "series_uid": uid,
        "n_files": len(files),
        # DICOM positions are scanner coordinates.
        "qform_code": 1,
        "sform_code": 1,
        "slice_spacing_mm": float(voxel_sizes(affine)[2]),
    }
    if gaps.size:
        meta["slice_gap_range_mm"] = (float(gaps.min()), float(gaps.max()))
    for key, name in (
        ("0018|0050", "slice_thickness_mm"),
        ("0018|0088", "spacing_between_slices_mm"),
    ):
        value = _dicom_floats(tag(0, key))
        if value:
            meta[name] = value[0]
    _check_affine(affine, folder)
    return Volume(
        data=data.astype(np.float32), affine=affine, header=None, source=folder, meta=meta
    )


#: Slice gaps may differ from the median by this much (mm) or this fraction,
#: whichever is larger: old scanners store positions rounded to 0.1 mm (the
#: shared PD series has gaps from 6.96 to 7.07 mm).
GAP_TOLERANCE_MM = 0.2
GAP_TOLERANCE_FRACTION = 0.05


def check_slice_positions(
    positions: np.ndarray,
    orientations: np.ndarray,
    pixel_spacing: Any = (1.0, 1.0),
    source: str | Path | None = None,
) -> np.ndarray:
    """Refuse DICOM slices that do not form one regular stack.

    ITK's series reader only warns about these and builds a regular grid
    anyway, putting slices in the wrong place.

    Args:
        positions: (N, 3) ImagePositionPatient of each slice, LPS mm.
        orientations: (N, 6) ImageOrientationPatient (row then column cosines).
        pixel_spacing: in-plane pixel size (mm), to judge sideways drift.
        source: folder for messages.

    Returns:
        (N - 1,) gaps (mm) between consecutive slices along the slice normal.

    Raises:
        GeometryError: slices of different orientations, uneven gaps, or
            positions drifting sideways (gantry tilt).
        InputError: two images at the same position (echoes, time points).
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    orientations = np.asarray(orientations, dtype=np.float64).reshape(-1, 6)
    if len(positions) < 2:
        return np.zeros(0)
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        raise GeometryError(
            "holds slices with different orientations (ImageOrientationPatient)",
            path=source,
            expected="parallel slices",
            fix="this is a localizer or multi-stack series; export one stack",
        )
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    normal /= np.linalg.norm(normal)
    along = positions @ normal
    order = np.argsort(along)
    along, positions = along[order], positions[order]
    gaps = np.diff(along)
    if gaps.min() < 1e-3:
        raise InputError(
            f"holds several images at the same slice position ({along[np.argmin(gaps)]:.2f} mm "
            "along the normal), e.g. echoes, time points or repeats",
            path=source,
            expected="one image per slice position",
            fix="split the series (e.g. `dcm2niix` writes one file per echo) and pass one volume",
        )
    median = float(np.median(gaps))
    tolerance = max(GAP_TOLERANCE_MM, GAP_TOLERANCE_FRACTION * median)
    if np.abs(gaps - median).max() > tolerance:
        found = sorted({round(float(g), 2) for g in gaps})
        raise GeometryError(
            "holds a DICOM series with uneven slice spacing: gaps of "
            f"{', '.join(f'{g:g}' for g in found)} mm between slice positions",
            path=source,
            expected=f"evenly spaced slices (within {tolerance:.2g} mm of {median:.3g} mm)",
            fix="a slice may be missing or the series may join several stacks: export the "
            "complete series, or convert it with `dcm2niix` and resample",
        )
    # Positions should move along the slice normal only; sideways drift means a
    # tilted gantry, which a regular grid built on the normal would misplace.
    sideways = positions - np.outer(along, normal)
    drift = float(np.linalg.norm(sideways - sideways[0], axis=1).max())
    if drift > 0.5 * min(pixel_spacing):
        raise GeometryError(
            f"holds slices that shift sideways by up to {drift:.2f} mm (gantry tilt or shear)",
            path=source,
            expected="slice positions along the slice normal",
            fix="convert it with `dcm2niix`, which corrects gantry tilt",
        )
    return gaps


# --------------------------------------------------------------------------- saving


def output_format(path: str | Path) -> str:
    """The format save_volume writes for this extension: nifti, mgh, nrrd or metaimage.

    Raises:
        OutputError: an extension mrisr does not write.
    """
    path = Path(path)
    suffix = _suffix(path)
    kind = _WRITE_FORMATS.get(suffix)
    if kind is None:
        raise OutputError(
            f"has an extension mrisr does not write ({suffix or 'none'})",
            path=path,
            expected="one of " + ", ".join(_WRITE_FORMATS),
            fix="name the output e.g. scan_sr.nii.gz",
        )
    return kind


def save_volume(
    volume: Volume, path: str | Path, *, overwrite: bool = False, dtype: Any = np.float32
) -> Path:
    """Write a volume atomically, never over its input.

    The format follows the extension: ``.nii``/``.nii.gz`` (NIfTI, keeping a
    NIfTI input header's other fields), ``.mgz``/``.mgh`` (MGH) or
    ``.nrrd``/``.mha`` (SimpleITK, LPS geometry). Voxels are written as
    ``dtype`` with scl_slope 1 and scl_inter 0; the header's qform and sform
    codes are those of the input (``volume.meta``, else its header, else
    1 "scanner"), and pixdim holds the affine's voxel sizes. The file is
    written to a temporary name in the same folder and renamed into place;
    nothing is left behind when writing fails.

    Args:
        volume: the (X, Y, Z) voxels and their (4, 4) RAS+ affine in mm.
        path: output file.
        overwrite: replace an existing file (never the input).
        dtype: on-disk voxel type; integer types are rounded and clipped.

    Returns:
        The absolute output path.

    Raises:
        OutputError: unknown extension, a missing folder, the input's own
            path, an existing file without ``overwrite``, or a failed write.
    """
    path = Path(path).expanduser().absolute()
    kind = output_format(path)
    _check_output_path(volume, path, overwrite=overwrite)
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise OutputError(
            f"cannot hold voxels of shape {data.shape}",
            path=path,
            expected="a 3D (X, Y, Z) array",
            fix="pass one 3D volume",
        )
    affine = np.array(volume.affine, dtype=np.float64)
    data = _cast(data, np.dtype(dtype), path)
    temporary = reserve_temporary(path)
    try:
        if kind == "nifti":
            _write_nifti(volume, data, affine, temporary)
        elif kind == "mgh":
            _write_mgh(volume, data, affine, temporary)
        else:
            _sitk().WriteImage(ras_to_sitk(data, affine), str(temporary), True)
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OutputError) or not isinstance(exc, (OSError, RuntimeError, ValueError)):
            raise
        raise OutputError(
            f"could not be written: {exc}",
            path=path,
            expected="a writable folder with free space",
            fix="check the folder's permissions and free space, or choose another output path",
        ) from exc
    return path


def _check_output_path(volume: Volume, path: Path, *, overwrite: bool) -> None:
    """Refuse the input's own path, an existing file (unless overwrite) and a missing folder."""
    source = Path(volume.source).expanduser().absolute() if volume.source is not None else None
    if source is not None and (
        path.resolve() == source.resolve()
        or (path.exists() and source.exists() and os.path.samefile(path, source))
    ):
        raise OutputError(
            f"is the input file {source}; mrisr never writes over its input",
            path=path,
            expected="an output path different from the input",
            fix=f"pass another output path with -o, e.g. {source.parent / (_stem(source) + '_sr.nii.gz')}",
        )
    if not path.parent.is_dir():
        raise OutputError(
            f"cannot be written: its folder {path.parent} does not exist",
            path=path,
            expected="an existing folder",
            fix="create the folder first (mkdir -p) or choose another output path",
        )
    if path.is_dir():
        raise OutputError(
            "is a folder", path=path, expected="a file name", fix="name an output file inside it"
        )
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(
            "already exists",
            path=path,
            expected="a path that does not exist yet",
            fix="pass --overwrite (overwrite=True) to replace it, or choose another output path",
        )


def _cast(data: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    """A new array of ``dtype``; integers are rounded and clipped to the type's range."""
    if dtype.kind == "f":
        return data.astype(dtype, copy=True)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(data), info.min, info.max).astype(dtype)
    raise OutputError(
        f"cannot be written with voxel type {dtype}",
        path=path,
        expected="a real integer or floating-point type (float32 by default)",
        fix="pass dtype=numpy.float32",
    )


def reserve_temporary(path: Path) -> Path:
    """Create an empty, unique ``.{stem}.tmp-XXXXXXXX{ext}`` beside ``path``.

    The extension is kept so that nibabel and SimpleITK pick the format from it;
    the mode follows the umask, like a file opened normally.
    """
    for _ in range(100):
        candidate = path.with_name(f".{_stem(path)}.tmp-{secrets.token_hex(4)}{_suffix(path)}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(
                f"cannot be written: {exc.strerror or exc}",
                path=path,
                expected="a writable folder",
                fix="check the folder's permissions, or choose another output path",
            ) from exc
        return candidate
    raise OutputError("cannot be written: no free temporary name", path=path)


def _form_codes(volume: Volume) -> tuple[int, int]:
    """qform and sform codes to write: the volume's meta, else its NIfTI header, else scanner."""
    codes = []
    for key in ("qform_code", "sform_code"):
        code = volume.meta.get(key)
        if code is None and _is_nifti_header(volume.header):
            code = volume.header[key]
        codes.append(DEFAULT_FORM_CODE if code is None else int(code))
    if codes == [0, 0]:
        # Never write a file whose orientation mrisr itself would refuse as unknown.
        codes[1] = 2  # "aligned"
    return codes[0], codes[1]


def _is_nifti_header(header: Any) -> bool:
    return isinstance(header, nib.Nifti1Header)  # Nifti2Header derives from it


def _write_nifti(volume: Volume, data: np.ndarray, affine: np.ndarray, target: Path) -> None:
    """Write NIfTI, keeping the input header's fields and form codes."""
    if _is_nifti_header(volume.header):
        header = volume.header.copy()
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    else:
        header = nib.Nifti1Header()
        header.set_xyzt_units("mm", "sec")
        image_class = nib.Nifti1Image
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    qform_code, sform_code = _form_codes(volume)
    # set_qform also writes pixdim[0:4] (qfac and voxel sizes) from the affine.
    header.set_qform(affine, code=qform_code)
    header.set_sform(affine, code=sform_code)
    if sform_code == 0 and not np.allclose(header.get_qform(), affine, atol=1e-5):
        # The qform cannot hold shears; without an sform the geometry would be lost.
        header.set_sform(affine, code=qform_code)
    # Explicit 1/0 (not NaN) also stops nibabel from computing a scaling of its own.
    header.set_slope_inter(1.0, 0.0)
    # affine=None: the header already holds the geometry and its codes; passing
    # the affine would let nibabel reset the codes when it cannot match them.
    nib.save(image_class(data, None, header=header), target)


def _write_mgh(volume: Volume, data: np.ndarray, affine: np.ndarray, target: Path) -> None:
    """Write MGH/MGZ, keeping an MGH input header's scan parameters (TR, TE, TI, flip)."""
    header = volume.header.copy() if isinstance(volume.header, MGHHeader) else None
    image = nib.MGHImage(data, affine, header=header)
    image.header.set_data_dtype(data.dtype)
    nib.save(image, target)


# --------------------------------------------------------------------------- provenance


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a DICOM folder's files, for provenance sidecars.

    Args:
        path: a file, or a folder whose regular files (not sub-folders) are
            hashed in name order, each as its name and content digest.

    Returns:
        64 hexadecimal characters.

    Raises:
        InputError: the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("does not exist", path=path, expected="a file or folder to hash")
    if not path.is_dir():
        return _hash_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(child.name.encode() + b"\0" + _hash_file(child).encode() + b"\n")
    return digest.hexdigest()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
