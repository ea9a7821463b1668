"""DICOM series as users' scanners and PACS exports write them.

Per-file rescale slopes and intercepts (PET, Philips), multi-frame files,
series a folder or two down, and ITK's own warnings kept out of the terminal.
Test files are written with SimpleITK/GDCM, or byte by byte where GDCM
would write another variant (legacy multi-frame).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.errors import InputError
from mrisr.geometry import voxel_sizes
from mrisr.io import load_volume

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
LPS = np.diag([-1.0, -1.0, 1.0])


def write_series(
    folder: Path,
    stored: np.ndarray,
    slopes: list[float],
    intercepts: list[float],
    *,
    uid: str = "1.2.826.0.1.3680043.2.1125.1.99",
    description: str = "test series",
    gap: float = 3.0,
) -> np.ndarray:
    """Single-frame MR files, slice k holding ``stored[k]`` with its own slope/intercept.

    GDCM writes a fractionally rescaled float buffer as an Enhanced MR file, so
    each slice is written as stored integers and its rescale elements are then
    replaced by the slice's own (:func:`set_decimal`).

    Returns:
        The (slices, rows, columns) intensities a correct reader must give.
    """
    folder.mkdir(parents=True, exist_ok=True)
    signed = stored.dtype.kind == "i"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, (plane, slope, intercept) in enumerate(zip(stored, slopes, intercepts, strict=True)):
        image = sitk.GetImageFromArray(plane)
        tags = {
            "0008|0060": "MR",
            "0008|0016": MR_STORAGE,
            "0008|0018": f"{uid}.{k + 1}",
            "0020|000d": "1.2.3.4",
            "0020|000e": uid,
            "0008|103e": description,
            "0020|0013": str(k + 1),
            "0020|0032": f"-10\\-20\\{k * gap}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.5\\0.5",
            "0018|0050": str(gap),
            "0028|1053": "1",
            "0028|1052": "0",
            "0028|0100": "16",
            "0028|0101": "16",
            "0028|0102": "15",
            "0028|0103": "1" if signed else "0",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        path = folder / f"slice_{k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(image)
        blob = set_decimal(path.read_bytes(), 0x0028, 0x1053, slope)
        path.write_bytes(set_decimal(blob, 0x0028, 0x1052, intercept))
    scale = np.asarray(slopes)[:, None, None]
    return stored * scale + np.asarray(intercepts)[:, None, None]


def set_decimal(blob: bytes, group: int, element: int, value: float) -> bytes:
    """Replace one top-level decimal-string element of an implicit-VR little-endian file."""
    tag = struct.pack("<HH", group, element)
    assert blob.count(tag) == 1
    start = blob.index(tag)
    (length,) = struct.unpack("<I", blob[start + 4 : start + 8])
    text = f"{value:g}".encode()
    text += b" " * (len(text) % 2)
    return blob[:start] + tag + struct.pack("<I", len(text)) + text + blob[start + 8 + length :]


def as_zyx(volume_data: np.ndarray) -> np.ndarray:
    return np.transpose(volume_data, (2, 1, 0))


RESCALES = {
    # name: (stored type, slopes, intercepts)
    "first-unit-then-fractional": ("uint16", [1.0] + [0.001] * 5, [0.0] * 6),
    "all-fractional": ("uint16", [0.25] * 6, [0.0] * 6),
    "varying-intercepts": ("uint16", [1.0] * 6, [0.0, 5.0, -3.5, 100.0, 0.0, 2.25]),
    "varying-both": ("int16", [1.0, 0.5, 2.0, 0.001, 3.0, 0.75], [0.0, -1024, 10, 0.5, -7, 0]),
}


@pytest.mark.parametrize("name", list(RESCALES))
def test_each_file_keeps_its_own_rescale(tmp_path: Path, name: str) -> None:
    dtype, slopes, intercepts = RESCALES[name]
    rng = np.random.default_rng(5)
    low = -2000 if dtype == "int16" else 0
    stored = rng.integers(low, 3000, size=(6, 8, 9)).astype(dtype)
    expected = write_series(tmp_path / "series", stored, slopes, intercepts)
    volume = load_volume(tmp_path / "series")
    np.testing.assert_allclose(as_zyx(volume.data), expected, rtol=1e-6, atol=1e-4)
    assert volume.meta["dtype"] == dtype


def test_issue_case_gives_thousands_of_values(tmp_path: Path) -> None:
    """20 uint16 slices, first slope 1 then 0.001: not truncated to 0, 1, 2."""
    stored = np.random.default_rng(1).integers(0, 3000, size=(20, 16, 16)).astype(np.uint16)
    expected = write_series(tmp_path / "s", stored, [1.0] + [0.001] * 19, [0.0] * 20)
    data = as_zyx(load_volume(tmp_path / "s").data)
    assert np.unique(data[1:]).size > 2000
    np.testing.assert_allclose(data, expected, rtol=1e-6)


# --------------------------------------------------------------------------- multi-frame


def _element(group: int, element: int, vr: str, value: bytes) -> bytes:
    """One explicit-VR little-endian data element, its value padded to even length."""
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB", "OW") else b" "
    head = struct.pack("<HH", group, element) + vr.encode()
    if vr in ("OB", "OW", "SQ", "UN", "UT"):
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def write_legacy_multiframe(path: Path, frames: np.ndarray, spacing: float | None) -> None:
    """A legacy multi-frame MR file: one position for frame 0, no per-frame groups."""
    n, rows, columns = frames.shape
    sop_uid = b"1.2.826.0.1.3680043.2.1125.7.1"
    text = {
        (0x0008, 0x0016): ("UI", MR_STORAGE.encode()),
        (0x0008, 0x0018): ("UI", sop_uid),
        (0x0008, 0x0060): ("CS", b"MR"),
        (0x0008, 0x103E): ("LO", b"legacy multiframe"),
        (0x0018, 0x0050): ("DS", b"5"),
        (0x0020, 0x000D): ("UI", b"1.2.826.0.1.3680043.2.1125.7.2"),
        (0x0020, 0x000E): ("UI", b"1.2.826.0.1.3680043.2.1125.7.3"),
        (0x0020, 0x0013): ("IS", b"1"),
        (0x0020, 0x0032): ("DS", b"-40\\-30\\12"),
        (0x0020, 0x0037): ("DS", b"1\\0\\0\\0\\0\\-1"),  # coronal frames
        (0x0028, 0x0002): ("US", struct.pack("<H", 1)),
        (0x0028, 0x0004): ("CS", b"MONOCHROME2"),
        (0x0028, 0x0008): ("IS", str(n).encode()),
        (0x0028, 0x0010): ("US", struct.pack("<H", rows)),
        (0x0028, 0x0011): ("US", struct.pack("<H", columns)),
        (0x0028, 0x0030): ("DS", b"0.8\\0.6"),
        (0x0028, 0x0100): ("US", struct.pack("<H", 16)),
        (0x0028, 0x0101): ("US", struct.pack("<H", 16)),
        (0x0028, 0x0102): ("US", struct.pack("<H", 15)),
        (0x0028, 0x0103): ("US", struct.pack("<H", 1)),
        (0x7FE0, 0x0010): ("OW", frames.astype("<i2").tobytes()),
    }
    if spacing is not None:
        text[(0x0018, 0x0088)] = ("DS", str(spacing).encode())
    dataset = b"".join(_element(*tag, *text[tag]) for tag in sorted(text))
    meta = b"".join(
        [
            _element(0x0002, 0x0001, "OB", b"\0\1"),
            _element(0x0002, 0x0002, "UI", MR_STORAGE.encode()),
            _element(0x0002, 0x0003, "UI", sop_uid),
            _element(0x0002, 0x0010, "UI", b"1.2.840.10008.1.2.1"),
            _element(0x0002, 0x0012, "UI", b"1.2.826.0.1.3680043.2.1125.7.9"),
        ]
    )
    group_length = _element(0x0002, 0x0000, "UL", struct.pack("<I", len(meta)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + group_length + meta + dataset)


def frames_18() -> np.ndarray:
    return (np.arange(18 * 10 * 12) % 500).reshape(18, 10, 12).astype(np.int16)


def test_legacy_multiframe_uses_spacing_between_slices(tmp_path: Path) -> None:
    frames = frames_18()
    write_legacy_multiframe(tmp_path / "mf" / "volume.dcm", frames, spacing=6.0)
    volume = load_volume(tmp_path / "mf")
    assert volume.shape == (12, 10, 18)
    np.testing.assert_array_equal(as_zyx(volume.data), frames)
    # 6 mm between slices (not ITK's 1 mm default, not the 5 mm thickness).
    np.testing.assert_allclose(voxel_sizes(volume.affine), [0.6, 0.8, 6.0], atol=1e-9)
    assert volume.meta["slice_thickness_mm"] == 5.0 and volume.meta["n_frames"] == 18
    # Frame k sits at the first position plus k spacings along the slice normal.
    row, column = np.array([1.0, 0, 0]), np.array([0, 0, -1.0])
    normal = np.cross(row, column)
    for k in (0, 7, 17):
        lps = LPS @ (volume.affine @ [0, 0, k, 1])[:3]
        np.testing.assert_allclose(lps, np.array([-40, -30, 12]) + 6.0 * k * normal, atol=1e-9)


def test_legacy_multiframe_without_spacing_is_refused(tmp_path: Path) -> None:
    write_legacy_multiframe(tmp_path / "mf" / "volume.dcm", frames_18(), spacing=None)
    with pytest.raises(InputError) as caught:
        load_volume(tmp_path / "mf")
    message = str(caught.value)
    assert "multi-frame DICOM" in message and "dcm2niix" in message
    assert str(tmp_path / "mf") in message
    assert "reshape" not in message


def test_enhanced_multiframe_written_by_gdcm(tmp_path: Path) -> None:
    frames = frames_18()
    image = sitk.GetImageFromArray(frames)
    image.SetSpacing((0.5, 0.5, 6.0))
    image.SetOrigin((-10.0, -20.0, 30.0))
    image.SetMetaData("0008|0060", "MR")
    (tmp_path / "mf").mkdir()
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(tmp_path / "mf" / "volume.dcm"))
    writer.Execute(image)
    volume = load_volume(tmp_path / "mf")
    np.testing.assert_array_equal(as_zyx(volume.data), frames)
    np.testing.assert_allclose(voxel_sizes(volume.affine), [0.5, 0.5, 6.0], atol=1e-6)


# --------------------------------------------------------------------------- nested folders


def small_series(folder: Path, uid: str, description: str, n: int = 4) -> None:
    stored = np.random.default_rng(2).integers(0, 1000, size=(n, 6, 7)).astype(np.uint16)
    write_series(folder, stored, [1.0] * n, [0.0] * n, uid=uid, description=description)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_one_series_below_the_folder_is_read(tmp_path: Path, depth: int) -> None:
    where = tmp_path / "study" / Path(*["DICOM", "S0001", "E01"][:depth])
    small_series(where, "1.2.826.0.1.3680043.2.1125.1.51", "T2 AX")
    (tmp_path / "study" / "DICOMDIR.txt").write_text("index")
    volume = load_volume(tmp_path / "study")
    assert volume.shape == (7, 6, 4)
    assert volume.meta["series_folder"] == str(where)
    assert volume.source == tmp_path / "study"


def test_several_series_below_are_listed(tmp_path: Path) -> None:
    study = tmp_path / "study"
    small_series(study / "DICOM" / "a", "1.2.826.0.1.3680043.2.1125.1.61", "T1 SAG", n=3)
    small_series(study / "DICOM" / "b", "1.2.826.0.1.3680043.2.1125.1.62", "FLAIR AX", n=5)
    with pytest.raises(InputError) as caught:
        load_volume(study)
    message = str(caught.value)
    assert "2 DICOM series" in message
    for words in ("DICOM/a", "'T1 SAG'", "(3 files)", "DICOM/b", "'FLAIR AX'", "(5 files)"):
        assert words in message, message
    assert "pass the folder" in message


def test_no_series_anywhere_and_no_itk_warning(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "empty" / "sub"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match="without a DICOM series"):
        load_volume(tmp_path / "empty")
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err and "itk" not in captured.err.lower(), captured.err
    assert sitk.ProcessObject.GetGlobalWarningDisplay()  # restored afterwards
