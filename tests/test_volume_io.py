"""Reading and writing volumes: round trips, geometry across libraries, headers, safety."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.errors import InputError, OutputError
from mrisr.geometry import resampled_affine, voxel_sizes
from mrisr.io import file_sha256, load_volume, save_volume
from mrisr.io.itk_formats import ras_to_sitk, sitk_to_ras
from mrisr.volume import Volume

FORMATS = [".nii", ".nii.gz", ".mgz", ".nrrd", ".mha"]
SPINE_T2 = "fixtures/spine_t2_1mm.nii.gz"  # permuted axes, qform_code 2, sform_code 1
T2STAR = "thick/spine_t2star_7.5mm.nii.gz"  # oblique, float32, qform_code 2, sform_code 1
PD_NIFTI = "thick/brain_pd_axial_7mm.nii.gz"
PD_DICOM = "thick/brain_pd_axial_7mm_dicom"
LPS = np.diag([-1.0, -1.0, 1.0])


def oblique_affine(rng: np.random.Generator, *, flip: bool = True) -> np.ndarray:
    """A random rotation, anisotropic spacing (mm) and offset; left-handed when ``flip``."""
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if (np.linalg.det(rotation) < 0) != flip:
        rotation[:, 0] *= -1
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.9, 4.0])
    affine[:3, 3] = rng.uniform(-50, 50, size=3)
    return affine


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def raw_header(path: Path) -> nib.Nifti1Header:
    """The header as stored, without nibabel's load-time fixes."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return nib.Nifti1Header(data[:348], check=False)


# --------------------------------------------------------------------------- LPS <-> RAS


@pytest.mark.parametrize("flip", [False, True], ids=["right-handed", "left-handed"])
def test_sitk_conversion_round_trips_and_means_the_same_points(
    rng: np.random.Generator, flip: bool
) -> None:
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    affine = oblique_affine(rng, flip=flip)
    image = ras_to_sitk(data, affine)
    # ITK's own index-to-world mapping, in LPS, agrees with the RAS affine.
    for index in [(0, 0, 0), (4, 0, 0), (1, 2, 3), (4, 5, 6)]:
        world_lps = np.array(image.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(world_lps, LPS @ (affine @ [*index, 1.0])[:3], atol=1e-9)
        assert image.GetPixel(*index) == data[index]
    back, back_affine = sitk_to_ras(image)
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(back_affine, affine, atol=1e-9)


# --------------------------------------------------------------------------- round trips


@pytest.fixture(params=["real-oblique", "synthetic-left-handed"])
def source_volume(request: pytest.FixtureRequest, rng: np.random.Generator) -> Volume:
    if request.param == "real-oblique":
        return load_volume(request.getfixturevalue("shared_data") / T2STAR)
    data = rng.uniform(0, 1000, size=(7, 8, 9)).astype(np.float32)
    return Volume(data=data, affine=oblique_affine(rng, flip=True))


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip(tmp_path: Path, source_volume: Volume, suffix: str) -> None:
    source_hash = sha256(source_volume.source) if source_volume.source else None
    out = save_volume(source_volume, tmp_path / f"out{suffix}")
    assert listing(tmp_path) == [f"out{suffix}"], "a temporary file was left"
    again = load_volume(out)
    np.testing.assert_array_equal(again.data, source_volume.data)
    np.testing.assert_allclose(again.affine, source_volume.affine, atol=1e-5)
    assert again.data.dtype == np.float32
    if source_hash is not None:
        assert sha256(source_volume.source) == source_hash


@pytest.mark.parametrize("name", [T2STAR, SPINE_T2])
def test_nibabel_and_simpleitk_read_our_nifti_alike(
    tmp_path: Path, shared_data: Path, name: str
) -> None:
    # SimpleITK is fine for a complete file we just wrote (never for inputs).
    volume = load_volume(shared_data / name)
    out = save_volume(volume, tmp_path / "out.nii.gz")
    by_nibabel = nib.load(out)
    image = sitk.ReadImage(str(out))
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin())
    affine = by_nibabel.affine
    np.testing.assert_allclose(origin, LPS @ affine[:3, 3], atol=1e-4)
    np.testing.assert_allclose(spacing, voxel_sizes(affine), atol=1e-5)
    np.testing.assert_allclose(direction, LPS @ affine[:3, :3] / voxel_sizes(affine), atol=1e-5)
    data, _ = sitk_to_ras(image)
    np.testing.assert_array_equal(data, np.asarray(by_nibabel.dataobj))


# --------------------------------------------------------------------------- real formats


@pytest.fixture(scope="module")
def pd_pair(shared_data: Path) -> tuple[Volume, Volume]:
    """The PD scan read from its DICOM folder (slow: ~10 s, see below) and from dcm2niix's NIfTI.

    One file of the series ends in 2.5 MB of zero padding that GDCM parses for
    seconds, so the folder is read once for all the tests that need it.
    """
    return load_volume(shared_data / PD_DICOM), load_volume(shared_data / PD_NIFTI)


def test_dicom_series_matches_dcm2niix(pd_pair: tuple[Volume, Volume]) -> None:
    """What differs between the DICOM reading and dcm2niix's NIfTI, found and pinned down.

    1. dcm2niix flipped the row axis (j): nifti[i, j, k] == dicom[i, 255 - j, k].
       Both affines describe it, so world coordinates agree; the arrays do not.
    2. dcm2niix took the slice spacing from the first two slices (7.0711 mm);
       the GDCM reader takes the mean over the stack (7.0005 mm). The positions
       are stored rounded to 0.1 mm, so gaps vary from 6.96 to 7.07 mm. The two
       grids agree on slice 0 and part by 0.0705 mm per slice (1.34 mm at
       slice 19); the mean matches the stored positions (next test).
    """
    dicom, nifti = pd_pair
    assert dicom.shape == nifti.shape == (256, 256, 20)
    np.testing.assert_array_equal(nifti.data, dicom.data[:, ::-1, :])
    assert not np.array_equal(nifti.data, dicom.data)
    # World positions of matching voxels (corners of every slice).
    i, j, k = np.meshgrid([0, 255], [0, 255], np.arange(20), indexing="ij")
    ones = np.ones(i.size)
    world_dicom = (dicom.affine @ np.stack([i.ravel(), j.ravel(), k.ravel(), ones]))[:3]
    world_nifti = (nifti.affine @ np.stack([i.ravel(), 255 - j.ravel(), k.ravel(), ones]))[:3]
    distance = np.linalg.norm(world_dicom - world_nifti, axis=0).reshape(i.shape)
    np.testing.assert_allclose(distance[..., 0], 0.0, atol=1e-3)
    np.testing.assert_allclose(distance[0, 0], 0.0705 * np.arange(20), atol=2e-3)
    # Same in-plane axes (the row axis reversed), same slice direction.
    np.testing.assert_allclose(nifti.affine[:3, 0], dicom.affine[:3, 0], atol=1e-4)
    np.testing.assert_allclose(nifti.affine[:3, 1], -dicom.affine[:3, 1], atol=1e-4)
    slice_nifti, slice_dicom = nifti.affine[:3, 2], dicom.affine[:3, 2]
    cosine = slice_nifti @ slice_dicom / np.linalg.norm(slice_nifti) / np.linalg.norm(slice_dicom)
    assert cosine > 1 - 1e-8
    np.testing.assert_allclose(voxel_sizes(nifti.affine)[2], 7.0711, atol=1e-4)
    np.testing.assert_allclose(voxel_sizes(dicom.affine)[2], 7.0005, atol=1e-4)


def test_dicom_grid_sits_on_the_stored_slice_positions(
    shared_data: Path, pd_pair: tuple[Volume, Volume]
) -> None:
    dicom, nifti = pd_pair
    # brain_001 is slice 0 (the padded file, slow to parse: its position is the
    # affine's origin, checked through the NIfTI above); the rest are quick.
    for k in range(1, 20):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(shared_data / PD_DICOM / f"brain_{k + 1:03d}.dcm"))
        reader.ReadImageInformation()
        stored = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        ours = LPS @ (dicom.affine @ [0, 0, k, 1])[:3]
        assert np.linalg.norm(ours - stored) < 0.1, (k, ours, stored)
    last = LPS @ (nifti.affine @ [0, 255, 19, 1])[:3]
    assert np.linalg.norm(last - stored) > 1.0  # dcm2niix's grid misses the last slice
    assert dicom.meta["format"] == "dicom"
    assert dicom.meta["slice_thickness_mm"] == 5.0
    assert dicom.meta["spacing_between_slices_mm"] == 2.0
    assert dicom.meta["dtype"] == "int16"
    assert (dicom.meta["qform_code"], dicom.meta["sform_code"]) == (1, 1)
    low, high = dicom.meta["slice_gap_range_mm"]
    assert 6.9 < low < high < 7.1


@pytest.mark.parametrize("name", ["mne_sample_brain.mgz", "niivue_fs_brainmask.mgz"])
def test_training_mgz_volumes(shared_data: Path, name: str) -> None:
    path = shared_data / "train" / name
    volume = load_volume(path)
    image = nib.load(path)
    assert volume.shape == (256, 256, 256)
    assert volume.data.dtype == np.float32
    assert volume.meta["format"] == "mgh" and volume.meta["dtype"] == "uint8"
    np.testing.assert_allclose(volume.affine, image.affine, atol=1e-6)
    # FreeSurfer's convention: voxel dims/2 sits at c_ras (Pxyz_c); conformed LIA axes.
    np.testing.assert_allclose(
        volume.affine @ [128, 128, 128, 1], [*image.header["Pxyz_c"], 1], atol=1e-4
    )
    np.testing.assert_allclose(
        np.round(volume.affine[:3, :3], 3), [[-1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-6
    )
    np.testing.assert_array_equal(volume.data, np.asarray(image.dataobj, dtype=np.float32))


# --------------------------------------------------------------------------- headers on output


def test_form_codes_and_header_fields_survive_a_new_grid(tmp_path: Path, shared_data: Path) -> None:
    image = nib.load(shared_data / SPINE_T2)
    header = image.header.copy()
    header["descrip"] = b"mrisr header test"
    header["intent_name"] = b"kept"
    header.set_dim_info(freq=0, phase=1, slice=2)
    header.set_xyzt_units("mm", "msec")
    source = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine, header), source)
    volume = load_volume(source)
    assert (volume.meta["qform_code"], volume.meta["sform_code"]) == (2, 1)
    header_before = volume.header.binaryblock

    # Twice the slices along axis 2: a new affine (nibabel would reset the codes).
    n_in = volume.shape[2]
    affine = resampled_affine(volume.affine, 2, n_in, 2 * n_in)
    upscaled = volume.with_data(np.repeat(volume.data, 2, axis=2) + 0.5, affine)
    out = save_volume(upscaled, tmp_path / "out.nii.gz")

    written = raw_header(out)
    assert (int(written["qform_code"]), int(written["sform_code"])) == (2, 1)
    assert written["descrip"].item() == b"mrisr header test"
    assert written["intent_name"].item() == b"kept"
    assert written.get_dim_info() == (0, 1, 2)
    assert written.get_xyzt_units() == ("mm", "msec")
    np.testing.assert_allclose(written["pixdim"][1:4], voxel_sizes(affine), atol=1e-6)
    np.testing.assert_allclose(written.get_sform(), affine, atol=1e-5)
    np.testing.assert_allclose(written.get_qform(), affine, atol=1e-5)
    assert volume.header.binaryblock == header_before  # the input header is not touched


def test_output_is_float32_with_unit_scaling(tmp_path: Path) -> None:
    # int16 on disk with a slope: loaded values are fractional, and writing
    # them back through an int16 header would quantise them.
    raw = (np.arange(8 * 9 * 10) % 101).reshape(8, 9, 10).astype(np.int16)
    image = nib.Nifti1Image(raw, np.diag([1.0, 1.0, 3.0, 1.0]), dtype=np.int16)
    image.header.set_slope_inter(0.25, 10.0)
    nib.save(image, tmp_path / "in.nii.gz")
    volume = load_volume(tmp_path / "in.nii.gz")
    np.testing.assert_allclose(volume.data, raw * 0.25 + 10.0)

    out = save_volume(volume.with_data(volume.data + 0.125), tmp_path / "out.nii.gz")
    written = raw_header(out)
    assert written.get_data_dtype() == np.float32
    assert int(written["bitpix"]) == 32
    assert (float(written["scl_slope"]), float(written["scl_inter"])) == (1.0, 0.0)
    np.testing.assert_array_equal(load_volume(out).data, volume.data + 0.125)


def test_integer_output_is_scaled_not_clipped(tmp_path: Path) -> None:
    # Issue 14 changed this: int16 used to be rounded and clipped (-1e6 -> -32768).
    data = np.full((4, 5, 6), 7.6, np.float32)
    data[0, 0, 0] = -1e6
    out = save_volume(Volume(data, np.eye(4)), tmp_path / "out.nii.gz", dtype=np.int16)
    image = nib.load(out)
    assert image.get_data_dtype() == np.int16
    values = image.get_fdata()
    slope = float(raw_header(out)["scl_slope"])
    assert slope == pytest.approx(1e6 / 32767)
    np.testing.assert_allclose(values, data, atol=slope / 2 + 1e-6)


def test_slice_thickness_from_json_sidecar(tmp_path: Path) -> None:
    data = (np.arange(4 * 5 * 6) % 7).reshape(4, 5, 6).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 6.0, 1.0])), tmp_path / "scan.nii.gz")
    (tmp_path / "scan.json").write_text(json.dumps({"SliceThickness": 5.0}))
    assert load_volume(tmp_path / "scan.nii.gz").meta["slice_thickness_mm"] == 5.0


# --------------------------------------------------------------------------- output safety


@pytest.fixture
def copied_input(tmp_path: Path, shared_data: Path) -> Path:
    path = tmp_path / "in.nii.gz"
    shutil.copy(shared_data / T2STAR, path)
    return path


def test_existing_output_is_refused_and_left_byte_identical(
    tmp_path: Path, copied_input: Path
) -> None:
    volume = load_volume(copied_input)
    existing = tmp_path / "out.nii.gz"
    existing.write_bytes(b"earlier result")
    before = listing(tmp_path)
    with pytest.raises(OutputError) as caught:
        save_volume(volume, existing)
    message = str(caught.value)
    assert "out.nii.gz" in message and "already exists" in message and "--overwrite" in message
    assert existing.read_bytes() == b"earlier result"
    assert listing(tmp_path) == before
    save_volume(volume, existing, overwrite=True)
    np.testing.assert_array_equal(load_volume(existing).data, volume.data)


@pytest.mark.parametrize("how", ["same-path", "relative-path", "symlink"])
def test_output_equal_to_input_is_refused(
    tmp_path: Path, copied_input: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    volume = load_volume(copied_input)
    before = sha256(copied_input)
    target: Path = copied_input
    if how == "relative-path":
        monkeypatch.chdir(tmp_path)
        target = Path(".") / copied_input.name
    elif how == "symlink":
        target = tmp_path / "link.nii.gz"
        target.symlink_to(copied_input)
    with pytest.raises(OutputError) as caught:
        save_volume(volume, target, overwrite=True)
    message = str(caught.value)
    assert "input" in message and "-o" in message and copied_input.name in message
    assert sha256(copied_input) == before


def test_the_input_is_never_modified(tmp_path: Path, copied_input: Path) -> None:
    before = sha256(copied_input)
    volume = load_volume(copied_input)
    data, affine = volume.data.copy(), volume.affine.copy()
    for suffix in FORMATS:
        save_volume(volume, tmp_path / f"out{suffix}")
    assert sha256(copied_input) == before
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_array_equal(volume.affine, affine)


@pytest.mark.parametrize(
    ("module", "name", "suffix"),
    [(nib, "save", ".nii.gz"), (nib, "save", ".mgz"), (sitk, "WriteImage", ".nrrd")],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_failed_write_leaves_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: object,
    name: str,
    suffix: str,
    existing: bool,
) -> None:
    target = tmp_path / f"out{suffix}"
    if existing:
        target.write_bytes(b"earlier result")
    before = listing(tmp_path)
    seen: list[Path] = []

    def half_write_then_fail(_image: object, filename: object, *args: object) -> None:
        seen.append(Path(filename))
        Path(filename).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, name, half_write_then_fail)
    volume = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.eye(4))
    with pytest.raises(OutputError, match="disk full"):
        save_volume(volume, target, overwrite=existing)
    assert listing(tmp_path) == before
    if existing:
        assert target.read_bytes() == b"earlier result"
    # The temporary file was beside the output, hidden, with the output's extension.
    (temporary,) = seen
    assert temporary.parent == tmp_path
    assert temporary.name.startswith(".out.tmp-") and temporary.name.endswith(suffix)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("out.png", ("extension", ".nii.gz")),
        ("out.nhdr", ("extension",)),
        ("missing/out.nii.gz", ("does not exist", "mkdir")),
        ("folder.nii.gz", ("is a folder",)),
    ],
)
def test_bad_output_paths(tmp_path: Path, name: str, words: tuple[str]) -> None:
    (tmp_path / "folder.nii.gz").mkdir()
    before = listing(tmp_path)
    with pytest.raises(OutputError) as caught:
        save_volume(Volume(np.ones((3, 4, 5), np.float32), np.eye(4)), tmp_path / name)
    for word in (Path(name).name, *words):
        assert word in str(caught.value)
    assert listing(tmp_path) == before


# --------------------------------------------------------------------------- provenance


def test_file_sha256(tmp_path: Path) -> None:
    single = tmp_path / "a.nii.gz"
    single.write_bytes(b"voxels")
    assert file_sha256(single) == hashlib.sha256(b"voxels").hexdigest()
    series = tmp_path / "series"
    series.mkdir()
    for name in ("2.dcm", "1.dcm"):
        (series / name).write_bytes(name.encode())
    first = file_sha256(series)
    assert len(first) == 64 and first == file_sha256(series)
    (series / "2.dcm").write_bytes(b"changed")
    assert file_sha256(series) != first
    with pytest.raises(InputError, match="does not exist"):
        file_sha256(tmp_path / "missing.nii.gz")
