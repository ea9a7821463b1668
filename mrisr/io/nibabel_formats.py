"""NIfTI and MGH files through nibabel: header sniffing and size checks, reading, writing.

Headers are checked as stored (nibabel's loader silently "repairs" some
fields) and against the file's size before any voxel is allocated, so a
truncated, mislabelled or absurd file gets a precise message instead of a
crash or a zero-filled volume.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np
from nibabel.freesurfer.mghformat import MGHHeader

from mrisr.errors import GeometryError, InputError
from mrisr.io import sidecars
from mrisr.io.files import suffix
from mrisr.io.validation import (
    MAX_DEFLATE_RATIO,
    REEXPORT,
    check_affine,
    check_dtype,
    check_form_codes,
    check_shape,
    check_spacing,
    shape_text,
)
from mrisr.volume import Volume

#: Form codes written when neither the volume's meta nor its header knows them:
#: "scanner", as dcm2niix, FreeSurfer and ITK write when converting scanner images.
DEFAULT_FORM_CODE = 1

T = TypeVar("T")

_NIFTI1_MAGICS = (b"n+1\x00",)
_NIFTI2_MAGICS = (b"n+2\x00",)
_GZIP_MAGIC = b"\x1f\x8b"


def _read_head(path: Path, n_bytes: int, *, gz: bool, label: str) -> bytes:
    """The first ``n_bytes`` (decompressed) bytes of a file, for sniffing its header."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if gz and magic != _GZIP_MAGIC:
        raise InputError(
            f"is named {suffix(path)} but is not gzip-compressed (wrong magic {magic!r})",
            path=path,
            expected=f"a gzip-compressed {label} file",
            fix="rename it if it is an uncompressed image, or export it again",
        )

    def read() -> bytes:
        with gzip.open(path, "rb") if gz else open(path, "rb") as stream:
            return stream.read(n_bytes)

    problem = "is truncated or damaged: its compressed stream cannot be read ({reason})"
    return _read_or_refuse(read, path, problem, label)


def _read_or_refuse(step: Callable[[], T], path: Path, problem: str, label: str) -> T:
    """Run a reading step; a damaged or cut-short stream becomes an InputError naming the file.

    ``problem`` says what is wrong, with ``{reason}`` where the error's first line goes.
    """
    try:
        return step()
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            problem.format(reason=reason),
            path=path,
            expected=f"a complete {label} file",
            fix=REEXPORT,
        ) from exc


def _sniff_nibabel(path: Path, kind: str) -> Any:
    """Check the header's size field and magic, so a wrong file gets a precise message.

    Returns:
        The header exactly as stored: nibabel's loader silently "repairs"
        some fields (negative pixdim, an MGH goodRASFlag of 0).
    """
    gz = suffix(path) in (".nii.gz", ".mgz")
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
                fix=REEXPORT,
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
            fix=REEXPORT,
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
        f"{shape_text(shape)} {np.dtype(dtype).name} voxels "
        f"({n_data:,} bytes from byte {int(offset):,})"
    )
    gz = suffix(path) in (".nii.gz", ".mgz")
    if not gz:
        if file_size < needed:
            raise InputError(
                f"is truncated or its header is wrong: the header claims {claim}, but the file "
                f"holds {file_size:,} bytes",
                path=path,
                expected=f"a {label} file of at least {needed:,} bytes",
                fix=REEXPORT,
            )
        return
    if needed > MAX_DEFLATE_RATIO * file_size + 1024:
        raise InputError(
            f"has a header claiming an absurd size: {claim}, more than a "
            f"{file_size:,}-byte gzip file can hold",
            path=path,
            expected=f"at most about {MAX_DEFLATE_RATIO * file_size:,} bytes once decompressed",
            fix=REEXPORT,
        )
    # ISIZE is only a hint (mod 2**32, last member only), so a short hint is
    # confirmed by counting, in constant memory, before anything is allocated.
    if needed < 2**32 and _gzip_isize(path) < needed:
        length = _read_or_refuse(
            lambda: _gzip_length(path, needed),
            path,
            "is truncated: the compressed stream ends early ({reason})",
            label,
        )
        if length < needed:
            raise InputError(
                f"is truncated or its header is wrong: the header claims {claim}, but it decompresses "
                f"to {length:,} bytes",
                path=path,
                expected=f"at least {needed:,} bytes once decompressed",
                fix=REEXPORT,
            )


def load_nibabel(path: Path, kind: str) -> Volume:
    """Read a NIfTI or MGH file through nibabel: header checks first, then the voxels.

    Args:
        path: an existing, non-empty .nii, .nii.gz, .mgh or .mgz file (absolute).
        kind: its format, ``"nifti"`` or ``"mgh"``.

    Returns:
        float32 (X, Y, Z) voxels (a 4th axis of size 1 dropped), the RAS+ affine
        in mm, a copy of the header, and ``meta`` (format, on-disk dtype, form
        codes, slice thickness from the file's JSON metadata if any: the sidecar
        beside it, or what it inherits in a BIDS dataset, see :mod:`mrisr.io.sidecars`).

    Raises:
        InputError: wrong magic, truncated or damaged file, an unusable shape
            or voxel type.
        GeometryError: invalid voxel sizes, orientation or affine.
    """
    label = "NIfTI" if kind == "nifti" else "MGH"
    stored = _sniff_nibabel(path, kind)
    try:
        image = nib.load(path, mmap=False)
    except Exception as exc:  # nibabel raises many types for a bad header
        raise InputError(
            f"cannot be read as {label}: {exc}",
            path=path,
            expected=f"a valid {label} file",
            fix=REEXPORT,
        ) from exc
    header = image.header
    on_disk = np.dtype(header.get_data_dtype())
    raw_shape = tuple(int(n) for n in header.get_data_shape())
    check_dtype(on_disk, path)
    shape = check_shape(raw_shape, path, squeeze_frames=True)
    meta: dict[str, Any] = {"dtype": on_disk.name if on_disk.names is None else str(on_disk)}
    if kind == "nifti":
        meta["format"] = "nifti2" if isinstance(header, nib.Nifti2Header) else "nifti1"
        meta["qform_code"] = int(header["qform_code"])
        meta["sform_code"] = int(header["sform_code"])
        check_spacing(stored["pixdim"][1:4], path, "pixdim[1:4]")
        check_form_codes(meta["qform_code"], meta["sform_code"], path)
        meta.update(_qform_from_sform(header, path))
    else:
        meta["format"] = "mgh"
        meta["qform_code"] = meta["sform_code"] = None
        check_spacing(stored["delta"], path, "delta")
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
    check_affine(affine, path)
    data = _read_or_refuse(
        lambda: image.get_fdata(dtype=np.float32),
        path,
        "is truncated or damaged: its voxels cannot be read ({reason})",
        label,
    )
    if data.shape != shape:
        meta["squeezed_shape"] = raw_shape
        data = data.reshape(shape)
    thickness = sidecars.slice_thickness(path)
    if thickness is not None:
        meta["slice_thickness_mm"] = thickness
    return Volume(data=data, affine=affine, header=header.copy(), source=path, meta=meta)


#: qform and sform closer than this (mm at the grid's corners) count as the same transform.
FORM_AGREEMENT_MM = 1e-4


def _qform_from_sform(header: Any, path: Path) -> dict[str, Any]:
    """``{"qform_from_sform": W}`` when both forms are valid and differ, else ``{}``.

    ``W = qform @ inv(sform)`` maps the sform's world (which mrisr's affine is)
    to the qform's. It is a property of the two worlds, not of the grid, so it
    survives crops and resampling: the qform of any new grid is ``W @ affine``.
    """
    if int(header["qform_code"]) <= 0 or int(header["sform_code"]) <= 0:
        return {}
    qform, sform = header.get_qform(), header.get_sform()
    try:
        world = qform @ np.linalg.inv(sform)
    except np.linalg.LinAlgError:
        return {}  # a singular sform is refused by check_affine
    corners = _grid_corners(header.get_data_shape()[:3])
    if np.abs((qform - sform) @ corners).max() <= FORM_AGREEMENT_MM:
        return {}
    return {"qform_from_sform": world}


def _grid_corners(shape: Any) -> np.ndarray:
    """(4, 8) homogeneous voxel coordinates of a grid's corner voxels."""
    ends = [(0, max(int(n), 1) - 1) for n in (list(shape) + [1, 1, 1])[:3]]
    return np.array([[i, j, k, 1.0] for i in ends[0] for j in ends[1] for k in ends[2]]).T


def form_disagreement(volume: Volume) -> dict[str, Any] | None:
    """How far a NIfTI's qform lies from its sform (which mrisr uses), or None when they agree.

    Args:
        volume: a loaded volume; its ``meta["qform_from_sform"]`` is set by the
            NIfTI reader when both form codes are > 0 and the forms differ.

    Returns:
        ``{"max_shift_mm", "rotation_deg", "used": "sform", "sform_code",
        "qform_code"}``: the largest distance (mm) between where the two put a
        corner voxel of the grid, and the angle (degrees) of the rotation
        between them; None when there is no disagreement.
    """
    world = volume.meta.get("qform_from_sform")
    if world is None:
        return None
    world = np.asarray(world, dtype=np.float64)
    corners = volume.affine @ _grid_corners(volume.shape)
    shift = float(np.linalg.norm(((world - np.eye(4)) @ corners)[:3], axis=0).max())
    # The rotation part of W (its polar factor), as an angle about one axis.
    u, _, vt = np.linalg.svd(world[:3, :3])
    rotation = u @ vt
    cosine = np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)
    return {
        "max_shift_mm": shift,
        "rotation_deg": float(np.degrees(np.arccos(cosine))),
        "used": "sform",
        "sform_code": volume.meta.get("sform_code"),
        "qform_code": volume.meta.get("qform_code"),
    }


def is_sheared(affine: np.ndarray, tolerance: float = 1e-6) -> bool:
    """Whether a (4, 4) affine is more than rotation, voxel scaling and flips (a qform cannot hold it).

    Args:
        affine: voxel-to-world matrix (mm).
        tolerance: largest |cosine| between two voxel axes still counted as 90 degrees.
    """
    axes = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = axes / np.linalg.norm(axes, axis=0)
    gram = unit.T @ unit
    return bool(np.abs(gram - np.eye(3)).max() > tolerance)


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


def write_nifti(
    volume: Volume,
    data: np.ndarray,
    affine: np.ndarray,
    target: Path,
    *,
    scaling: tuple[float, float] = (1.0, 0.0),
) -> None:
    """Write NIfTI, keeping the input header's fields and form codes.

    Args:
        volume: where the header and form codes come from.
        data: (X, Y, Z) voxels, already of the on-disk type.
        affine: (4, 4) voxel-to-RAS matrix in mm.
        target: the file to write (its ending picks .nii or .nii.gz).
        scaling: (scl_slope, scl_inter) of ``data``: value = stored * slope + inter.
    """
    if _is_nifti_header(volume.header):
        header = volume.header.copy()
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    else:
        header = nib.Nifti1Header()
        header.set_xyzt_units("mm", "sec")
        image_class = nib.Nifti1Image
    _clear_grid_fields(header, data.shape)
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    _set_forms(header, volume, affine)
    # Explicit 1/0 (not NaN) also stops nibabel from computing a scaling of its own.
    header.set_slope_inter(1.0, 0.0)
    # affine=None: the header already holds the geometry and its codes; passing
    # the affine would let nibabel reset the codes when it cannot match them.
    image = image_class(data, None, header=header)
    # Set again on the image: nibabel's constructor resets the scaling, and
    # with it set, nibabel writes the stored values as they are.
    image.header.set_slope_inter(*scaling)
    nib.save(image, target)


def _set_forms(header: Any, volume: Volume, affine: np.ndarray) -> None:
    """Write both transforms of ``affine``'s grid into ``header``, each with the input's code.

    The sform is ``affine``. The qform is ``W @ affine`` when the input's
    qform differed from its sform (``W`` from :func:`_qform_from_sform`), so
    that tools reading the qform (ITK, ANTs, ITK-SNAP) see the output where
    they saw the input; otherwise it is ``affine`` itself, except that a
    sheared affine (gantry tilt) is never squeezed into a qform: that qform
    gets code 0 and the sform keeps the geometry.
    """
    qform_code, sform_code = _form_codes(volume)
    world = volume.meta.get("qform_from_sform")
    qform = affine if world is None else np.asarray(world, dtype=np.float64) @ affine
    if is_sheared(qform, tolerance=1e-5):
        # The qform cannot hold shears; nibabel would store the nearest rotation.
        header.set_qform(None)
        zooms = list(header.get_zooms())
        zooms[:3] = np.linalg.norm(affine[:3, :3], axis=0)
        header.set_zooms(zooms)
        header.set_sform(affine, code=sform_code or qform_code or DEFAULT_FORM_CODE)
        return
    # set_qform also writes pixdim[0:4] (qfac and voxel sizes) from the matrix.
    header.set_qform(qform, code=qform_code)
    header.set_sform(affine, code=sform_code)
    if sform_code == 0 and not np.allclose(header.get_qform(), affine, atol=1e-5):
        # Without an sform the geometry would be lost where the qform differs.
        header.set_sform(affine, code=qform_code)


#: NIfTI intent codes whose meaning depends on the voxel grid or on exact voxel
#: values (labels, vectors, matrices, node indices, colours): upscaled voxels are
#: neither, so the intent is cleared. Statistics and estimates (2-24, 1001) stay.
GRID_INTENTS = frozenset(
    {1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010} | set(range(2001, 2006))
)


def _clear_grid_fields(header: Any, shape: tuple[int, ...]) -> None:
    """Clear header fields that describe the input's grid when ``shape`` is another grid.

    Slice timing (slice_code, slice_start, slice_end, slice_duration) counts the
    input's acquired slices: on a grid with another number of slices along the
    slice dimension (or an unknown one) it is cleared. Intents tied to the grid
    (:data:`GRID_INTENTS`) are cleared with their parameters and name. dim_info
    (which array axis is frequency, phase, slice) stays true: the axes keep their
    order. Call before the new shape is set.
    """
    old = tuple(int(n) for n in header.get_data_shape()[:3])
    new = tuple(int(n) for n in shape[:3])
    if old == new:
        return
    slice_dim = header.get_dim_info()[2]
    if slice_dim is None or old[slice_dim] != new[slice_dim]:
        for key in ("slice_code", "slice_start", "slice_end"):
            header[key] = 0
        header["slice_duration"] = 0.0
    if int(header["intent_code"]) in GRID_INTENTS:
        header.set_intent("none", (), name="")


def write_mgh(volume: Volume, data: np.ndarray, affine: np.ndarray, target: Path) -> None:
    """Write MGH/MGZ, keeping an MGH input header's scan parameters (TR, TE, TI, flip).

    Args:
        volume: where the header comes from.
        data: (X, Y, Z) voxels, already of the on-disk type.
        affine: (4, 4) voxel-to-RAS matrix in mm.
        target: the file to write (its ending picks .mgh or .mgz).
    """
    header = volume.header.copy() if isinstance(volume.header, MGHHeader) else None
    image = nib.MGHImage(data, affine, header=header)
    image.header.set_data_dtype(data.dtype)
    nib.save(image, target)
