"""A scan's JSON metadata: the sidecar beside it, and the BIDS inheritance principle."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from mrisr import load_volume, save_volume
from mrisr.errors import InputError
from mrisr.io.sidecars import metadata, slice_thickness
from mrisr.volume import Volume


def write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


@pytest.fixture
def dataset(tmp_path):
    """A BIDS dataset's folders with one scan path: sub-01/ses-1/anat/sub-01_ses-1_acq-ax_T2w."""
    root = tmp_path / "ds"
    write(root / "dataset_description.json", {"Name": "x", "BIDSVersion": "1.9.0"})
    scan = root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_acq-ax_T2w.nii.gz"
    scan.parent.mkdir(parents=True)
    scan.write_bytes(b"")
    return root, scan


def test_outside_a_dataset_only_the_sidecar_beside_the_scan_counts(tmp_path):
    scan = tmp_path / "scans" / "sub-01_T2w.nii.gz"
    scan.parent.mkdir()
    write(tmp_path / "T2w.json", {"SliceThickness": 9})  # no dataset_description above
    assert slice_thickness(scan) is None
    write(scan.with_name("sub-01_T2w.json"), {"SliceThickness": 4})
    assert slice_thickness(scan) == 4.0


def test_a_top_level_file_applies_to_every_scan_of_its_suffix(dataset):
    root, scan = dataset
    write(root / "T2w.json", {"SliceThickness": 3, "RepetitionTime": 5})
    write(root / "FLAIR.json", {"SliceThickness": 7})  # another suffix
    write(root / "acq-cor_T2w.json", {"SliceThickness": 8})  # another acquisition
    assert slice_thickness(scan) == 3.0
    assert metadata(scan) == {"SliceThickness": 3, "RepetitionTime": 5}


def test_deeper_files_replace_the_values_above_and_the_file_beside_wins(dataset):
    root, scan = dataset
    write(root / "T2w.json", {"SliceThickness": 3, "RepetitionTime": 5})
    write(root / "sub-01" / "sub-01_T2w.json", {"SliceThickness": 3.5})
    assert slice_thickness(scan) == 3.5
    write(scan.parent / "sub-01_ses-1_acq-ax_T2w.json", {"SliceThickness": 4})
    assert metadata(scan) == {"SliceThickness": 4, "RepetitionTime": 5}


def test_two_files_of_one_folder_that_disagree_are_refused(dataset):
    root, scan = dataset
    write(root / "T2w.json", {"SliceThickness": 3})
    write(root / "acq-ax_T2w.json", {"SliceThickness": 5})
    with pytest.raises(InputError, match=r"disagree on SliceThickness: T2w.json \(3\) and acq-ax_T2w.json \(5\)"):  # fmt: skip
        slice_thickness(scan)
    write(root / "acq-ax_T2w.json", {"SliceThickness": 3})  # agreeing: allowed
    assert slice_thickness(scan) == 3.0


def test_unreadable_or_non_numeric_metadata_is_ignored_with_a_warning(dataset, caplog):
    root, scan = dataset
    (root / "T2w.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert slice_thickness(scan) is None
    assert "T2w.json: cannot be read as JSON metadata" in caplog.text
    write(root / "T2w.json", {"SliceThickness": "thick"})
    with caplog.at_level(logging.WARNING):
        assert slice_thickness(scan) is None
    assert "SliceThickness 'thick' is not a number" in caplog.text


def test_a_scan_whose_name_is_not_bids_reads_only_its_own_sidecar(dataset):
    root, _ = dataset
    scan = root / "sub-01" / "anat" / "localizer.nii.gz"
    scan.parent.mkdir(parents=True)
    write(root / "localizer.json", {"SliceThickness": 9})
    assert slice_thickness(scan) is None
    write(scan.with_name("localizer.json"), {"SliceThickness": 6})
    assert slice_thickness(scan) == 6.0


def test_loading_a_scan_in_a_dataset_takes_its_inherited_thickness(dataset):
    root, scan = dataset
    save_volume(
        Volume(np.arange(48, dtype=np.float32).reshape(4, 4, 3), np.diag([1.0, 1.0, 4.0, 1.0])),
        scan,
        overwrite=True,
    )
    assert "slice_thickness_mm" not in load_volume(scan).meta
    write(root / "T2w.json", {"SliceThickness": 3})
    assert load_volume(scan).meta["slice_thickness_mm"] == 3.0
