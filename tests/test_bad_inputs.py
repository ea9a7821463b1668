"""Every kind of bad input gets a clear error: the file, the problem, the fix; nothing is left.

Broken files are made in each test: real fixtures cut short, or small NIfTI
files whose raw header is written byte for byte (so that nibabel's own writer
cannot "repair" the damage before it reaches mrisr).
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.errors import GeometryError, InputError
from mrisr.io import load_volume, validate_volume
from mrisr.io.dicom import check_slice_positions
from mrisr.volume import Volume

SPINE_T1 = "fixtures/spine_t1w_1mm.nii.gz"
DICOM_SERIES = "thick/brain_pd_axial_7mm_dicom"
DICOM_UID = b"0.0.0.0.3.8811.2.20010413115754.12432"

# --------------------------------------------------------------------------- helpers


def good_data(shape: tuple[int, ...] = (8, 9, 10), dtype: str = "float32") -> np.ndarray:
    """Small image with contrast (a ramp), so only the intended defect is wrong."""
    return (np.arange(int(np.prod(shape))) % 97).reshape(shape).astype(dtype)


def write_raw_nifti(
    path: Path,
    data: np.ndarray,
    *,
    edit: Callable[[nib.Nifti1Header], None] | None = None,
    header_class: type = nib.Nifti1Header,
    affine: np.ndarray | None = None,
) -> Path:
    """Write a single-file NIfTI by hand: header bytes, 4 extension bytes, voxels.

    ``edit`` may set any header field afterwards (dims, pixdim, form codes...),
    however wrong, without nibabel checking it.
    """
    affine = np.diag([1.0, 1.0, 3.0, 1.0]) if affine is None else affine
    header = header_class()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    header["vox_offset"] = header.sizeof_hdr + 4
    if edit is not None:
        edit(header)
    blob = header.binaryblock + b"\0" * 4 + data.tobytes(order="F")
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return path


def set_field(name: str, value: object) -> Callable[[nib.Nifti1Header], None]:
    """A header edit that sets one raw field."""

    def edit(header: nib.Nifti1Header) -> None:
        header[name] = value

    return edit


def refused(
    path: Path, error: type[Exception], *words: str, load: Callable[[Path], object] = load_volume
) -> str:
    """Load ``path``, expect ``error`` naming the file and ``words``; check nothing was written.

    Returns:
        The error message.
    """
    folder = path.parent
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(error) as caught:
        load(path)
    message = str(caught.value)
    assert path.name in message, message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    assert "fix:" in message.lower(), message
    assert sorted(p.name for p in folder.iterdir()) == before, "an output file was left"
    return message


def real_nifti_bytes(shared_data: Path) -> bytes:
    """Uncompressed bytes of a real int16 NIfTI (42 x 76 x 77)."""
    return gzip.decompress((shared_data / SPINE_T1).read_bytes())


def copy_series(shared_data: Path, target: Path, skip: tuple[str, ...] = ()) -> Path:
    """Copy the PD DICOM series without brain_001.dcm.

    That file carries 2.5 MB of zero padding that makes GDCM take seconds per
    read; the other 19 slices are a complete, evenly spaced series on their own.
    """
    target.mkdir()
    for source in sorted((shared_data / DICOM_SERIES).iterdir()):
        if source.name != "brain_001.dcm" and source.name not in skip:
            shutil.copy(source, target / source.name)
    return target


# --------------------------------------------------------------------------- paths and files


def test_missing_path(tmp_path: Path) -> None:
    refused(tmp_path / "scan.nii.gz", InputError, "does not exist", "check the path")


@pytest.mark.parametrize("name", ["scan.nii", "scan.nii.gz", "scan.mgz", "scan.nrrd"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.touch()
    refused(path, InputError, "empty", "0 bytes")


@pytest.mark.parametrize(
    ("name", "fix_word"),
    [("scan.png", "convert"), ("slice_0001.dcm", "folder"), ("scan.hdr", "pair")],
)
def test_unsupported_extension(tmp_path: Path, name: str, fix_word: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    refused(path, InputError, "extension", fix_word)


def test_truncated_nii(tmp_path: Path, shared_data: Path) -> None:
    raw = real_nifti_bytes(shared_data)
    path = tmp_path / "cut.nii"
    path.write_bytes(raw[: len(raw) // 2])
    message = refused(path, InputError, "truncated", f"{len(raw) // 2:,} bytes")
    assert "42\u00d776\u00d777" in message


def test_truncated_nii_gz(tmp_path: Path, shared_data: Path) -> None:
    # Cutting the compressed file leaves a gzip stream without its end: SimpleITK
    # would zero-fill the missing voxels; mrisr must refuse.
    packed = (shared_data / SPINE_T1).read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(packed[: len(packed) // 2])
    refused(path, InputError, "truncated")


def test_truncated_nii_gz_inside_the_header(tmp_path: Path, shared_data: Path) -> None:
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(gzip.compress(real_nifti_bytes(shared_data)[:200]))
    refused(path, InputError, "truncated", "200 header bytes")


def test_nii_gz_whose_complete_stream_holds_too_few_voxels(
    tmp_path: Path, shared_data: Path
) -> None:
    # A well-formed gzip of a cut .nii: only the byte count can tell.
    raw = real_nifti_bytes(shared_data)
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    refused(path, InputError, "truncated", "decompresses to")


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("noise.nii", bytes(range(256)) * 3, ("not a nifti", "magic")),
        ("text.nii.gz", b"patient list\n" * 40, ("not gzip", "magic")),
        ("pair.nii", None, ("nifti pair", "ni1")),
        ("noise.mgh", b"\x00\x00\x00\x07" + bytes(400), ("not an mgh", "magic")),
        ("text.nrrd", b"hello, not an image\n", ("cannot be read as nrrd", "magic")),
        ("text.mha", b"hello, not an image\n", ("cannot be read as metaimage",)),
    ],
)
def test_wrong_magic(tmp_path: Path, name: str, content: bytes | None, words: tuple[str]) -> None:
    path = tmp_path / name
    if content is None:
        write_raw_nifti(path, good_data(), edit=set_field("magic", b"ni1"))
    else:
        path.write_bytes(content)
    refused(path, InputError, *words)


# --------------------------------------------------------------------------- header sizes


@pytest.mark.parametrize(
    ("name", "header_class", "dims", "words"),
    [
        # NIfTI-1 dims are int16: 30000 is near the largest it can claim.
        ("huge.nii.gz", nib.Nifti1Header, (30000, 30000, 30000), ("absurd", "voxels")),
        ("huge.nii", nib.Nifti2Header, (100000, 100000, 100000), ("absurd", "voxels")),
        # Under the voxel limit, but far more than the file can hold.
        ("big.nii.gz", nib.Nifti1Header, (1000, 1000, 1000), ("absurd", "gzip")),
        ("big.nii", nib.Nifti1Header, (1000, 1000, 1000), ("truncated or its header is wrong",)),
    ],
)
def test_header_claiming_absurd_size(
    tmp_path: Path, name: str, header_class: type, dims: tuple[int, int, int], words: tuple[str]
) -> None:
    def edit(header: nib.Nifti1Header) -> None:
        header["dim"][:4] = (3, *dims)

    path = write_raw_nifti(tmp_path / name, good_data(), edit=edit, header_class=header_class)
    refused(path, InputError, *words)


def test_zero_size_dimension(tmp_path: Path) -> None:
    def edit(header: nib.Nifti1Header) -> None:
        header["dim"][:4] = (3, 8, 0, 10)

    path = write_raw_nifti(tmp_path / "zero.nii.gz", good_data(), edit=edit)
    refused(path, InputError, "zero-size dimension", "8\u00d70\u00d710")


# --------------------------------------------------------------------------- dimensions


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ((12, 14), ("2D", "12\u00d714")),
        ((12, 14, 1), ("single 2D slice",)),
        ((8, 9, 10, 5), ("4D", "5 frames", "fslroi in out 0 1")),
        ((8, 9, 10, 1, 3), ("5D", "extract one 3D component")),
    ],
    ids=["2d", "one-slice", "4d", "5d"],
)
def test_wrong_number_of_dimensions(
    tmp_path: Path, shape: tuple[int, ...], words: tuple[str]
) -> None:
    path = write_raw_nifti(tmp_path / "dims.nii.gz", good_data(shape))
    refused(path, InputError, *words)


def test_4d_with_one_frame_is_squeezed(tmp_path: Path) -> None:
    path = write_raw_nifti(tmp_path / "one_frame.nii.gz", good_data((8, 9, 10, 1)))
    volume = load_volume(path)
    assert volume.data.shape == (8, 9, 10)
    assert volume.meta["squeezed_shape"] == (8, 9, 10, 1)
    np.testing.assert_array_equal(volume.data, good_data((8, 9, 10)))


def test_4d_nrrd(tmp_path: Path) -> None:
    frames = [sitk.GetImageFromArray(good_data((10, 9, 8))) for _ in range(3)]
    path = tmp_path / "frames.nrrd"
    sitk.WriteImage(sitk.JoinSeries(frames), str(path))
    refused(path, InputError, "4D", "3 frames", "fslroi")


# --------------------------------------------------------------------------- voxel types and values


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (good_data().astype(np.complex64) * (1 + 1j), ("complex", "magnitude")),
        (
            np.zeros((8, 9, 10), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]),
            ("RGB", "greyscale"),
        ),
    ],
    ids=["complex", "rgb"],
)
def test_complex_or_rgb_nifti(tmp_path: Path, data: np.ndarray, words: tuple[str]) -> None:
    path = write_raw_nifti(tmp_path / "colour.nii.gz", data)
    refused(path, InputError, *words)


def test_rgb_nrrd(tmp_path: Path) -> None:
    image = sitk.Image([8, 9, 10], sitk.sitkVectorUInt8, 3)
    path = tmp_path / "colour.nrrd"
    sitk.WriteImage(image, str(path))
    refused(path, InputError, "3 components", "RGB")


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (sitk.Image([8, 9, 10], sitk.sitkVectorUInt8, 3), "the image has 3 components per voxel"),
        (sitk.Image([8, 9], sitk.sitkFloat32), "the image is 2D; expected a 3D image"),
    ],
    ids=["rgb", "2d"],
)
def test_sitk_to_ras_refuses_an_image_it_cannot_convert_with_the_fix(image, words):
    from mrisr.io.itk_formats import sitk_to_ras

    with pytest.raises(InputError, match=f"{words}.*Fix:"):
        sitk_to_ras(image)


def test_nan_and_inf_voxels_are_counted(tmp_path: Path) -> None:
    data = good_data()
    data[0, 0, :3] = np.nan
    data[1, 2, :2] = [np.inf, -np.inf]
    path = write_raw_nifti(tmp_path / "nan.nii.gz", data)
    refused(path, InputError, "3 NaN", "2 infinite", "nan_to_num")


@pytest.mark.parametrize(("value", "words"), [(0.0, ("all zeros",)), (5.0, ("constant", "5"))])
def test_constant_image(tmp_path: Path, value: float, words: tuple[str]) -> None:
    path = write_raw_nifti(tmp_path / "flat.nii.gz", np.full((8, 9, 10), value, np.float32))
    refused(path, InputError, *words, "contrast")


# --------------------------------------------------------------------------- geometry


def _no_form_codes(header: nib.Nifti1Header) -> None:
    header["qform_code"] = 0
    header["sform_code"] = 0


def _pixdim(index: int, value: float) -> Callable[[nib.Nifti1Header], None]:
    def edit(header: nib.Nifti1Header) -> None:
        header["pixdim"][index] = value

    return edit


def _singular_sform(header: nib.Nifti1Header) -> None:
    # The second voxel axis is a copy of the first: the grid is flat.
    header["qform_code"] = 0
    header["srow_x"] = [1.0, 1.0, 0.0, 0.0]
    header["srow_y"] = [0.0, 0.0, 0.0, 0.0]
    header["srow_z"] = [0.0, 0.0, 3.0, 0.0]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_no_form_codes, ("qform_code 0", "sform_code 0", "orientation", "unknown")),
        (_pixdim(2, -1.0), ("spacing", "-1", "positive")),
        (_pixdim(3, 0.0), ("spacing", "0", "positive")),
        (_pixdim(1, np.nan), ("spacing", "nan", "finite")),
        (_pixdim(3, np.inf), ("spacing", "inf", "finite")),
        (_singular_sform, ("singular",)),
    ],
    ids=["no-form-codes", "negative-pixdim", "zero-pixdim", "nan-pixdim", "inf-pixdim", "singular"],
)
def test_bad_geometry(tmp_path: Path, edit: Callable, words: tuple[str]) -> None:
    path = write_raw_nifti(tmp_path / "geometry.nii.gz", good_data(), edit=edit)
    refused(path, GeometryError, *words)


def test_mgh_without_orientation(tmp_path: Path) -> None:
    # nibabel's loader silently replaces a 0 flag by a default orientation, so
    # the flag (big-endian int16 at byte 28) is zeroed in the raw bytes.
    raw = bytearray(nib.MGHImage(good_data(), np.diag([1.0, 1.0, 3.0, 1.0])).to_bytes())
    raw[28:30] = b"\0\0"
    path = tmp_path / "noras.mgz"
    path.write_bytes(gzip.compress(bytes(raw)))
    refused(path, GeometryError, "goodRASFlag 0", "orientation")


# --------------------------------------------------------------------------- DICOM folders


def test_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    refused(folder, InputError, "without a DICOM series")


@pytest.mark.parametrize("name", ["notes.txt", "IM0001.dcm"])
def test_a_folder_of_files_that_are_not_dicom_says_so(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / name).write_bytes(b"not DICOM at all")
    refused(folder, InputError, f"holds 1 file(s) (e.g. {name}) but no readable DICOM series")


def test_dicom_folder_with_two_series(tmp_path: Path, shared_data: Path) -> None:
    folder = copy_series(shared_data, tmp_path / "series")
    # A second series: three slices whose SeriesInstanceUID differs in its last
    # digit (same length, so the DICOM element stays valid).
    other_uid = DICOM_UID[:-1] + b"9"
    for name in ("brain_002.dcm", "brain_003.dcm", "brain_004.dcm"):
        patched = (folder / name).read_bytes().replace(DICOM_UID, other_uid)
        (folder / f"other_{name}").write_bytes(patched)
    message = refused(folder, InputError, "2 DICOM series", "own folder")
    assert DICOM_UID.decode() in message and other_uid.decode() in message
    assert "(19 files)" in message and "(3 files)" in message


def test_dicom_series_with_a_missing_slice(tmp_path: Path, shared_data: Path) -> None:
    folder = copy_series(shared_data, tmp_path / "series", skip=("brain_010.dcm",))
    message = refused(folder, GeometryError, "uneven slice spacing", "missing")
    # Both the normal gaps (~7 mm) and the double one (~14 mm) are named.
    assert "6.9" in message and "14.0" in message, message


def test_dicom_series_loads_without_its_padded_file(tmp_path: Path, shared_data: Path) -> None:
    # The control for the two tests above: the copied 19 slices are fine.
    volume = load_volume(copy_series(shared_data, tmp_path / "series"))
    assert volume.shape == (256, 256, 19)
    assert volume.meta["format"] == "dicom"


@pytest.mark.parametrize(
    ("positions", "error", "words"),
    [
        ([[0, 0, 0], [0, 0, 5], [0, 0, 5]], InputError, ("same slice position", "echoes")),
        ([[0, 0, 0], [0, 0, 5], [0, 0, 12]], GeometryError, ("uneven", "5, 7")),
        ([[0, 0, 0], [1, 0, 5], [2, 0, 10]], GeometryError, ("sideways", "gantry tilt")),
    ],
    ids=["duplicate", "uneven", "tilt"],
)
def test_slice_position_checks(positions: list, error: type, words: tuple[str]) -> None:
    orientations = np.tile([1.0, 0, 0, 0, 1.0, 0], (len(positions), 1))
    with pytest.raises(error) as caught:
        check_slice_positions(np.array(positions, float), orientations, (1.0, 1.0), "series")
    for word in words:
        assert word in str(caught.value)


# --------------------------------------------------------------------------- in-memory volumes


@pytest.mark.parametrize(
    ("data", "affine", "error", "words"),
    [
        (good_data((8, 9, 10, 1)), np.eye(4), InputError, ("array axes", "reshape")),
        (good_data(), np.diag([1.0, 1.0, np.nan, 1.0]), GeometryError, ("invalid affine",)),
        (good_data(), np.diag([1.0, 0.0, 1.0, 1.0]), GeometryError, ("spacing",)),
        (good_data((8, 9, 10), "complex64"), np.eye(4), InputError, ("complex",)),
    ],
    ids=["4d-singleton", "nan-affine", "zero-spacing", "complex"],
)
def test_validate_in_memory(
    data: np.ndarray, affine: np.ndarray, error: type, words: tuple[str]
) -> None:
    with pytest.raises(error) as caught:
        validate_volume(Volume(data=data, affine=affine, source=Path("memory.nii")))
    for word in words:
        assert word in str(caught.value)
