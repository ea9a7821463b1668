"""DICOM series through SimpleITK's GDCM reader, with the checks ITK leaves out.

A folder must hold exactly one series whose slices form one regular stack
(:func:`check_slice_positions`): ITK's reader only warns about missing slices,
uneven gaps or gantry tilt and builds a regular grid anyway, putting slices in
the wrong place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import GeometryError, InputError
from mrisr.geometry import voxel_sizes
from mrisr.io.files import READABLE
from mrisr.io.itk_formats import read_or_refuse, simpleitk, sitk_to_ras
from mrisr.io.validation import check_affine, check_dtype, check_shape
from mrisr.volume import Volume

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
    """One DICOM series from a folder through SimpleITK's GDCM readers.

    Each file is parsed as few times as possible: GDCM is slow on files with
    trailing padding (the shared PD series has 2.5 MB of it in one file), so the
    per-slice tags come from the series read itself rather than a separate pass.

    Args:
        folder: absolute path of an existing folder.

    Returns:
        float32 (X, Y, Z) voxels, the RAS+ affine in mm, no header, and ``meta``
        (series UID, file count, slice spacing and thickness, gap range).

    Raises:
        InputError: no series or several, unreadable files, slices without
            positions, several images per position, RGB or unusable voxels.
        GeometryError: slices that do not form one regular stack, or an
            invalid affine.
    """
    sitk = simpleitk()
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(
            "is a folder without a DICOM series",
            path=folder,
            expected=READABLE,
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
        image = read_or_refuse(
            reader.Execute,
            folder,
            "holds a DICOM series that cannot be read: {reason}",
            expected="a complete DICOM series",
            fix="copy or export the series again, or convert it with `dcm2niix`",
        )
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
        check_dtype(np.complex64, folder)
    check_shape(tuple(image.GetSize()), folder, squeeze_frames=False)
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
    check_affine(affine, folder)
    return Volume(
        data=data.astype(np.float32), affine=affine, header=None, source=folder, meta=meta
    )


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
