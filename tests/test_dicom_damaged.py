"""Damaged files in a DICOM series are named, never dropped.

GDCM's series listing skips a file it cannot parse without a word: a
truncated first or last slice gave a volume one slice short and exit 0, a
middle one an "uneven slice spacing" error naming no file. The series here
are copies of the shared PD series; most use seven of its slices
(brain_002 to brain_008) because GDCM takes seconds over the trailing padding
of brain_001.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.errors import InputError
from mrisr.io import load_volume
from mrisr.io.dicom_files import file_meta, looks_like_dicom

SERIES = "thick/brain_pd_axial_7mm_dicom"
#: Each slice but brain_001 is 132914 bytes: its Pixel Data runs to the end.
SLICE_BYTES = 132914


def copy_series(shared_data: Path, target: Path, names: list[str] | None = None) -> Path:
    """A writable copy of the shared PD series (or of the named files of it)."""
    target.mkdir(parents=True)
    source = shared_data / SERIES
    for path in sorted(source.iterdir()):
        if names is None or path.name in names:
            shutil.copyfile(path, target / path.name)
    return target


def seven_slices(shared_data: Path, target: Path) -> Path:
    return copy_series(shared_data, target, [f"brain_{k:03d}.dcm" for k in range(2, 9)])


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian data element."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr in (b"OB", b"SQ", b"UN", b"UT"):
        return (
            struct.pack("<HH", group, number) + vr + b"\0\0" + struct.pack("<I", len(value)) + value
        )
    return struct.pack("<HH", group, number) + vr + struct.pack("<H", len(value)) + value


def part10(sop_class: bytes, body: bytes) -> bytes:
    """A DICOM Part 10 file of ``sop_class``: preamble, DICM, file meta group, ``body``."""
    meta = (
        element(2, 0x0001, b"OB", b"\0\1")
        + element(2, 0x0002, b"UI", sop_class)
        + element(2, 0x0003, b"UI", b"1.2.826.0.1.3680043.2.1125.7")
        + element(2, 0x0010, b"UI", b"1.2.840.10008.1.2.1")
    )
    group_length = element(2, 0x0000, b"UL", struct.pack("<I", len(meta)))
    return b"\0" * 128 + b"DICM" + group_length + meta + body


# ------------------------------------------------------------------ the tester's cases


@pytest.mark.parametrize("name", ["brain_001.dcm", "brain_010.dcm", "brain_020.dcm"])
def test_a_truncated_slice_is_named_not_dropped(shared_data, tmp_path, name):
    """The whole series, as the tester ran it: first, middle and last slice cut short."""
    folder = copy_series(shared_data, tmp_path / "series")
    truncate(folder / name, 132000)
    with pytest.raises(InputError) as caught:
        load_volume(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder}: holds 1 DICOM file that cannot be read"), message
    assert f"{name} (truncated: 132000 bytes where its Pixel Data runs to byte" in message
    assert "19 files read" in message and "export the series again" in message
    assert "uneven" not in message


def test_the_command_exits_2_and_writes_nothing(shared_data, tmp_path):
    folder = seven_slices(shared_data, tmp_path / "series")
    truncate(folder / "brain_008.dcm", 132000)
    before = digests(folder)
    result = CliRunner().invoke(app, ["upscale", str(folder), "--model", "cubic"])
    assert result.exit_code == 2, result.output
    assert "brain_008.dcm (truncated: 132000 bytes" in result.output
    assert "Fix: copy or export the series again" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]  # no output, no sidecar
    assert digests(folder) == before  # the input is never modified


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: truncate(p, 5000), f"truncated: 5000 bytes where its Pixel Data runs to byte {SLICE_BYTES}"),
        (lambda p: truncate(p, 1000), "truncated or damaged: 1000 bytes and no Pixel Data"),
        (lambda p: p.write_bytes(b""), "empty: 0 bytes"),
        (
            lambda p: p.write_bytes(p.read_bytes()[:600] + b"\xff" * 200 + p.read_bytes()[800:]),
            "a DICOM file (DICM marker) that cannot be read: damaged",
        ),
        (lambda p: p.write_bytes(b"not DICOM at all"), "named like a DICOM file, but without the DICM marker"),
        (
            lambda p: p.write_bytes(p.read_bytes()[:132] + b"\xff" * 100 + p.read_bytes()[232:]),
            "a DICOM file (DICM marker) that cannot be read: damaged",  # the marker is there
        ),
    ],
    ids=["in-pixels", "in-header", "empty", "overwritten", "not-dicom-named-dcm", "meta-group"],
)  # fmt: skip
def test_each_kind_of_damage_is_told(shared_data, tmp_path, damage, reason):
    folder = seven_slices(shared_data, tmp_path / "series")
    damage(folder / "brain_005.dcm")
    with pytest.raises(InputError, match="holds 1 DICOM file that cannot be read") as caught:
        load_volume(folder)
    assert f"brain_005.dcm ({reason}" in str(caught.value), str(caught.value)


def test_every_damaged_file_is_named(shared_data, tmp_path):
    folder = seven_slices(shared_data, tmp_path / "series")
    truncate(folder / "brain_003.dcm", 132000)
    (folder / "brain_007.dcm").rename(folder / "IM0007")  # no ending: the DICM marker tells
    truncate(folder / "IM0007", 40000)
    with pytest.raises(InputError, match="holds 2 DICOM files that cannot be read") as caught:
        load_volume(folder)
    assert "brain_003.dcm (truncated" in str(caught.value)
    assert "IM0007 (truncated: 40000 bytes" in str(caught.value)
    assert "5 files read" in str(caught.value)


def test_a_damaged_slice_in_a_series_found_below_is_named_with_its_folder(shared_data, tmp_path):
    folder = seven_slices(shared_data, tmp_path / "export" / "DICOM" / "S1")
    truncate(folder / "brain_004.dcm", 132000)
    with pytest.raises(InputError, match=r"DICOM/S1/brain_004\.dcm \(truncated"):
        load_volume(tmp_path / "export")


def test_a_folder_of_damaged_files_only_names_them(shared_data, tmp_path):
    folder = seven_slices(shared_data, tmp_path / "series")
    for path in folder.iterdir():
        truncate(path, 132000)
    with pytest.raises(InputError, match="no readable DICOM series") as caught:
        load_volume(folder)
    assert "7 DICOM files cannot be read: brain_002.dcm (truncated" in str(caught.value)


# ------------------------------------------------------------------ what stays out, as before


def test_other_files_beside_the_series_are_still_ignored(shared_data, tmp_path, caplog):
    folder = seven_slices(shared_data, tmp_path / "series")
    (folder / "README").write_text("exported by the PACS")
    (folder / "notes.json").write_text("{}")
    (folder / ".DS_Store").write_bytes((folder / "brain_002.dcm").read_bytes()[:500])
    (folder / "DICOMDIR").write_bytes(
        part10(b"1.2.840.10008.1.3.10", element(4, 0x1130, b"CS", b"X"))
    )
    with caplog.at_level(logging.WARNING):
        volume = load_volume(folder)
    assert volume.data.shape[2] == 7
    assert not caplog.records


def test_a_dicom_object_without_an_image_is_left_out_with_a_warning(shared_data, tmp_path, caplog):
    folder = seven_slices(shared_data, tmp_path / "series")
    report = b"1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: no Pixel Data
    (folder / "report.dcm").write_bytes(part10(report, element(8, 0x0016, b"UI", report)))
    with caplog.at_level(logging.WARNING):
        volume = load_volume(folder)
    assert volume.data.shape[2] == 7
    assert "1 DICOM file without an image left out of the series: report.dcm" in caplog.text


def test_looks_like_dicom_and_file_meta(shared_data, tmp_path):
    slice_ = shared_data / SERIES / "brain_002.dcm"
    assert looks_like_dicom(slice_)
    assert file_meta(slice_.read_bytes()[:4096])["0002|0002"] == "1.2.840.10008.5.1.4.1.1.4"
    plain = tmp_path / "IM0001"
    plain.write_bytes(b"x" * 200)
    hidden = tmp_path / ".scan.dcm"
    hidden.write_bytes(b"")
    assert not looks_like_dicom(plain) and not looks_like_dicom(hidden)
    assert looks_like_dicom(tmp_path / "EMPTY.DCM") is True  # by its name alone
    assert file_meta(b"x" * 200) == {}
