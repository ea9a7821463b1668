"""DICOM series through SimpleITK's GDCM reader, with the checks ITK leaves out.

A folder must hold exactly one series whose slices form one regular stack
(:func:`check_slice_positions`): ITK's reader only warns about missing slices,
uneven gaps or gantry tilt and builds a regular grid anyway, putting slices in
the wrong place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import GeometryError, InputError
from mrisr.geometry import voxel_sizes
from mrisr.io.dicom_files import LeftOut, file_meta, left_out_files
from mrisr.io.files import READABLE
from mrisr.io.itk_formats import quiet_itk, read_or_refuse, simpleitk, sitk_to_ras
from mrisr.io.validation import check_affine, check_components, check_dtype, check_shape
from mrisr.volume import Volume

log = logging.getLogger(__name__)

#: Slice gaps may differ from the median by this much (mm) or this fraction,
#: whichever is larger: old scanners store positions rounded to 0.1 mm (the
#: shared PD series has gaps from 6.96 to 7.07 mm).
GAP_TOLERANCE_MM = 0.2
GAP_TOLERANCE_FRACTION = 0.05


def _dicom_floats(text: str | None) -> list[float] | None:
    """Numbers of a DICOM multi-valued decimal string such as ``"-110.5\\-78.3\\-72.7"``."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.strip().split("\\")]
    except ValueError:
        return None


def load_dicom_folder(folder: Path) -> Volume:
    """One DICOM series from a folder (or the one folder below it that holds one).

    Each file is parsed as few times as possible: GDCM is slow on files with
    trailing padding (the shared PD series has 2.5 MB of it in one file), so the
    per-slice tags come from the series read itself rather than a separate pass.
    Intensities are read as float32 with each file's own RescaleSlope and
    RescaleIntercept (ITK would otherwise cast every slice to the first file's
    voxel type, truncating fractional per-slice scalings). A multi-frame file
    is read on its own (:func:`_load_multiframe`). ITK's own warnings are
    silenced: what they warn about is checked here and reported in mrisr's words.

    Args:
        folder: absolute path of an existing folder.

    Returns:
        float32 (X, Y, Z) voxels, the RAS+ affine in mm, no header, and ``meta``
        (series UID, the folder it was found in, file count, slice spacing and
        thickness, gap range, on-disk voxel type).

    Raises:
        InputError: no series or several (in the folder or below it),
            unreadable or damaged files (:func:`check_left_out`), slices
            without positions, several images per position, a multi-frame
            file without a trustworthy slice spacing, RGB or unusable voxels.
        GeometryError: slices that do not form one regular stack, or an
            invalid affine.
    """
    with quiet_itk() as sitk:
        where, uid = find_series(folder)
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(where), uid))
        check_left_out(folder, where, files)
        if len(files) == 1:
            volume = _load_multiframe(folder, Path(files[0]))
            if volume is not None:
                volume.meta.update(series_uid=uid, series_folder=str(where))
                return volume
        reader = sitk.ImageSeriesReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileNames(files)
        reader.SetOutputPixelType(sitk.sitkFloat32)
        reader.MetaDataDictionaryArrayUpdateOn()
        image = read_or_refuse(
            reader.Execute,
            folder,
            "holds a DICOM series that cannot be read: {reason}",
            expected="a complete DICOM series",
            fix="copy or export the series again, or convert it with `dcm2niix`",
        )

    def tag(index: int, key: str) -> str | None:
        return reader.GetMetaData(index, key) if reader.HasMetaDataKey(index, key) else None

    frames = _dicom_floats(tag(0, "0028|0008"))
    if frames and frames[0] > 1:
        raise InputError(
            f"holds a series of {len(files)} multi-frame DICOM files ({frames[0]:g} frames each)",
            path=folder,
            expected="single-frame slices, or one multi-frame file holding the whole volume",
            fix=MULTIFRAME_FIX,
        )
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
    data, affine = _check_image(image, folder)
    meta = _series_meta(tag, uid, where, len(files), affine)
    if gaps.size:
        meta["slice_gap_range_mm"] = (float(gaps.min()), float(gaps.max()))
    return Volume(data=data, affine=affine, header=None, source=folder, meta=meta)


#: What to do about DICOM files that cannot be read.
DAMAGED_FIX = (
    "copy or export the series again from the scanner or PACS, and check that every file "
    "arrives whole (compare file sizes); a file that is not part of the series belongs in "
    "another folder"
)


def check_left_out(folder: Path, where: Path, files: list[str]) -> None:
    """Refuse DICOM files that GDCM's series listing skipped because they cannot be read.

    GDCM drops such files without a word: a truncated first or last slice
    would give a volume one slice short, a middle one uneven spacing. DICOM
    objects without an image (a report, a presentation state) are left out
    with a warning; a DICOMDIR silently. Only files outside the series are
    read (:func:`~mrisr.io.dicom_files.left_out_files`).

    Args:
        folder: the folder the user named, for messages.
        where: the folder holding the series (``folder`` or one below it).
        files: the series' files as GDCM lists them.

    Raises:
        InputError: a file in ``where`` that looks like DICOM (DICM marker or a
            .dcm/.dicom/.ima name) but cannot be read; every one is named.
    """
    head = b""
    if files:  # the series' SOP class tells a damaged slice from a report
        with open(files[0], "rb") as stream:
            head = stream.read(65536)
    left = left_out_files(where, files, file_meta(head).get("0002|0002"))
    others = [item for item in left if not item.damaged]
    if others:
        log.warning(
            "%s: %s without an image left out of the series: %s",
            folder,
            _files(len(others)),
            _named(folder, others),
        )
    damaged = [item for item in left if item.damaged]
    if damaged:
        raise InputError(
            f"holds {_files(len(damaged))} that cannot be read, which GDCM would leave out "
            f"of the series ({_files(len(files), 'read')}): {_named(folder, damaged)}",
            path=folder,
            expected="every DICOM file of the series complete and readable",
            fix=DAMAGED_FIX,
        )


def _files(count: int, what: str = "") -> str:
    """``"1 DICOM file"``, ``"19 files read"``: a count with its noun, for messages."""
    noun = "file" if count == 1 else "files"
    return f"{count} {noun} {what}" if what else f"{count} DICOM {noun}"


def _named(folder: Path, items: list[LeftOut], most: int = 10) -> str:
    """``"brain_020.dcm (truncated: ...); ..."``, at most ``most`` of them, for messages."""
    parts = [f"{item.path.relative_to(folder)} ({item.reason})" for item in items[:most]]
    if len(items) > most:
        parts.append(f"and {len(items) - most} more")
    return "; ".join(parts)


#: How to get a multi-frame DICOM file into mrisr.
MULTIFRAME_FIX = (
    "convert it with `dcm2niix -z y <folder>` (it reads multi-frame DICOM and their per-frame "
    "positions) and pass the .nii.gz"
)

#: SOP classes whose frames carry their own geometry (functional groups), read by GDCM.
ENHANCED_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image
    }
)


def _load_multiframe(folder: Path, file: Path) -> Volume | None:
    """A volume from one multi-frame DICOM file, or None when it is a single frame.

    The slice spacing comes from SpacingBetweenSlices (0018,0088) with the
    position, orientation and pixel spacing of the file's top level (legacy
    multi-frame), or from GDCM's reading of per-frame positions (enhanced
    files); never from ITK's 1 mm default, which legacy files get otherwise.

    Raises:
        InputError: several frames without a slice spacing to trust, or
            unusable voxels.
    """
    sitk = simpleitk()
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(file))
    problem = "holds a DICOM file that cannot be read: {reason}"
    read_or_refuse(reader.ReadImageInformation, folder, problem, expected="a DICOM file")

    def tag(key: str) -> str | None:
        return reader.GetMetaData(key) if reader.HasMetaDataKey(key) else None

    frames = _dicom_floats(tag("0028|0008"))
    if not frames or frames[0] <= 1:
        return None
    reader.SetOutputPixelType(sitk.sitkFloat32)
    image = read_or_refuse(reader.Execute, folder, problem, expected="a complete DICOM file")
    between = _dicom_floats(tag("0018|0088"))
    position = _dicom_floats(tag("0020|0032"))
    orientation = _dicom_floats(tag("0020|0037"))
    pixel = _dicom_floats(tag("0028|0030"))
    sop = (tag("0008|0016") or "").strip().rstrip("\x00")
    if between and between[0] > 0 and position and orientation and pixel:
        # Legacy multi-frame: one position for the first frame, frames one spacing apart.
        rows, columns = np.asarray(orientation[:3]), np.asarray(orientation[3:])
        normal = np.cross(rows, columns)
        image.SetSpacing([float(pixel[1]), float(pixel[0]), float(between[0])])
        image.SetDirection([float(v) for v in np.column_stack([rows, columns, normal]).ravel()])
        image.SetOrigin([float(v) for v in position])
    elif sop not in ENHANCED_CLASSES or image.GetSpacing()[2] == 1.0:
        raise InputError(
            f"is a multi-frame DICOM file ({frames[0]:g} frames in {file.name}) without a slice "
            "spacing mrisr can trust: no SpacingBetweenSlices (0018,0088) with the frames' "
            "position and orientation, nor per-frame positions",
            path=folder,
            expected="a multi-frame file whose frames' positions or spacing are stored",
            fix=MULTIFRAME_FIX,
        )
    data, affine = _check_image(image, folder)
    meta = _series_meta(lambda _index, key: tag(key), "", folder, 1, affine)
    meta["n_frames"] = int(frames[0])
    return Volume(data=data, affine=affine, header=None, source=folder, meta=meta)


def _check_image(image: Any, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """float32 (X, Y, Z) voxels and RAS affine of a read series, refusing unusable ones."""
    sitk = simpleitk()
    check_components(image.GetNumberOfComponentsPerPixel(), folder)
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        check_dtype(np.complex64, folder)
    check_shape(tuple(image.GetSize()), folder, squeeze_frames=False)
    data, affine = sitk_to_ras(image)
    check_affine(affine, folder)
    return data.astype(np.float32, copy=False), affine


def _series_meta(
    tag: Callable[[int, str], str | None], uid: str, where: Path, n_files: int, affine: np.ndarray
) -> dict[str, Any]:
    """``Volume.meta`` of a DICOM series from its first file's tags."""
    meta: dict[str, Any] = {
        "format": "dicom",
        "dtype": _stored_dtype(tag(0, "0028|0100"), tag(0, "0028|0103")),
        "series_uid": uid,
        "series_folder": str(where),
        "n_files": n_files,
        # DICOM positions are scanner coordinates.
        "qform_code": 1,
        "sform_code": 1,
        "slice_spacing_mm": float(voxel_sizes(affine)[2]),
    }
    for key, name in (
        ("0018|0050", "slice_thickness_mm"),
        ("0018|0088", "spacing_between_slices_mm"),
    ):
        value = _dicom_floats(tag(0, key))
        if value:
            meta[name] = value[0]
    return meta


def _stored_dtype(bits: str | None, representation: str | None) -> str:
    """The stored voxel type from BitsAllocated (0028,0100) and PixelRepresentation (0028,0103)."""
    try:
        n_bits, signed = int(str(bits).strip()), int(str(representation).strip())
    except ValueError:
        return "float32"
    if n_bits not in (8, 16, 32):
        return "float32"
    return f"{'int' if signed else 'uint'}{n_bits}"


def find_series(folder: Path) -> tuple[Path, str]:
    """The one DICOM series in ``folder`` or, when it holds none, in the folders below it.

    A PACS export often puts the series one or two folders down
    (``study/DICOM/...``); that series is used, and where it was found is
    logged and recorded in ``meta["series_folder"]``.

    Args:
        folder: absolute path of an existing folder.

    Returns:
        (the folder holding the series, its SeriesInstanceUID).

    Raises:
        InputError: no series, or several (each listed with its folder,
            description and file count, so that the user can pass one).
    """
    sitk = simpleitk()
    here = [(folder, uid) for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))]
    if len(here) > 1:
        raise InputError(
            f"holds {len(here)} DICOM series: {_listing(folder, here)}",
            path=folder,
            expected="one DICOM series per folder",
            fix="move each series into its own folder (e.g. sort by SeriesInstanceUID) and pass "
            "one, or convert them all with `dcm2niix` and pass one .nii.gz",
        )
    if here:
        return here[0]
    below = []
    for sub in _subfolders(folder):
        below += [(sub, uid) for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(sub))]
    if not below:
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        if files:  # files are there, but none is DICOM that GDCM can group into a series
            damaged = [item for item in left_out_files(folder, [], None) if item.damaged]
            why = "they are not DICOM, or damaged, or lack the series tags"
            if damaged:
                why = f"{_files(len(damaged))} cannot be read: {_named(folder, damaged)}"
            raise InputError(
                f"holds {len(files)} file(s) (e.g. {files[0].name}) but no readable DICOM "
                f"series: {why}",
                path=folder,
                expected=READABLE,
                fix="check the files (e.g. with dcmdump), re-export the series from the PACS, "
                "or convert it with `dcm2niix` and pass the .nii.gz",
            )
        raise InputError(
            "is a folder without a DICOM series (none in it, nor in the folders below it "
            f"up to {MAX_SERIES_DEPTH} levels down)",
            path=folder,
            expected=READABLE,
            fix="pass the folder that holds the .dcm files, or an image file",
        )
    if len(below) > 1:
        raise InputError(
            f"holds {len(below)} DICOM series in the folders below it: {_listing(folder, below)}",
            path=folder,
            expected="one DICOM series",
            fix="pass the folder of the series you want (one of those listed), or convert them "
            "all with `dcm2niix` and pass one .nii.gz",
        )
    where, uid = below[0]
    log.warning(
        "%s: no DICOM files in the folder itself; using the series found in %s", folder, where
    )
    return where, uid


#: How many folder levels below the given one are searched for a DICOM series.
MAX_SERIES_DEPTH = 4


def _subfolders(folder: Path) -> list[Path]:
    """Visible folders below ``folder`` up to :data:`MAX_SERIES_DEPTH` levels, sorted."""
    found, level = [], [folder]
    for _ in range(MAX_SERIES_DEPTH):
        level = sorted(
            child
            for parent in level
            for child in parent.iterdir()
            if child.is_dir() and not child.name.startswith(".")
        )
        found += level
    return found


def _listing(top: Path, series: list[tuple[Path, str]]) -> str:
    """``"sub/dir: 'T2 AX' uid (20 files)"`` for each series, for messages."""
    sitk = simpleitk()
    parts = []
    for where, uid in series:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(where), uid)
        description = _description(files[0]) if files else ""
        place = "" if where == top else f"{where.relative_to(top)}: "
        label = f"{description!r} " if description else ""
        parts.append(f"{place}{label}{uid} ({len(files)} files)")
    return "; ".join(parts)


def _description(file: str) -> str:
    """A DICOM file's SeriesDescription (0008,103E), or "" when it has none or cannot be read."""
    reader = simpleitk().ImageFileReader()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    key = "0008|103e"
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


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
