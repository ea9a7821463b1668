"""Cohort runs at their edges: what a pipeline engineer trying the commands ran into.

A summary that cannot be written fails before any scan; a leftover sidecar
or a changed option is named in the refusal; ``--overwrite`` without a map
removes the earlier run's map; a 3D scan among 2D ones is skipped, not
failed; one scan can be a cohort of one (``--summary``, ``--shard``, an
output folder); the Python API takes one path and ``"K/N"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mrisr import (
    NotThickSliceError,
    Volume,
    load_volume,
    plan_upscale,
    save_volume,
    upscale_many,
)
from mrisr.errors import GeometryError, InputError, OutputError
from tests.test_cohort import invoke


@pytest.fixture
def scans(thick, tmp_path):
    """scans/s1.nii.gz and scans/s2.nii.gz."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("s1", "s2"):
        save_volume(thick, folder / f"{name}.nii.gz")
    return folder


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_summary_that_cannot_be_written_fails_before_any_scan(scans, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "upscale", scans, "--model", "cubic", "-o", out, "--summary", tmp_path / "no" / "s.json"
    )
    assert result.exit_code == 2 and "does not exist" in result.output, result.output
    assert not out.exists() or files(out) == []  # no scan was computed
    (tmp_path / "is_a_folder.json").mkdir()
    again = invoke(
        "upscale", scans, "--model", "cubic", "-o", out, "--summary", tmp_path / "is_a_folder.json"
    )
    assert again.exit_code == 2 and "is a folder" in again.output, again.output
    assert files(out) == []


def test_a_leftover_sidecar_without_its_image_is_named(scans, tmp_path):
    out = tmp_path / "out"
    list(upscale_many([scans], "cubic", output_dir=out))
    (out / "s1_sr.nii.gz").unlink()  # the user deleted the image to have it redone
    first, second = upscale_many([scans], "cubic", output_dir=out)
    assert first.status == "failed" and "is missing" in first.error
    assert f"remove the leftover {out / 's1_sr.json'}" in first.error
    assert second.status == "skipped"
    (first,) = upscale_many([scans / "s1.nii.gz"], "cubic", output_dir=out, overwrite=True)
    assert first.status == "done"


@pytest.mark.parametrize("cohort", [False, True], ids=["one scan", "cohort"])
def test_overwrite_without_a_map_removes_the_earlier_runs_map(scans, tmp_path, cohort):
    out = tmp_path / "out"
    out.mkdir()
    target = ["-o", out] if cohort else ["-o", out / "s1_sr.nii.gz"]
    inputs = [scans] if cohort else [scans / "s1.nii.gz"]
    assert invoke("upscale", *inputs, "--model", "cubic", *target).exit_code == 0
    assert (out / "s1_sr_disagreement.nii.gz").is_file()
    result = invoke(
        "upscale", *inputs, "--model", "cubic", *target, "--overwrite", "--no-disagreement"
    )
    assert result.exit_code == 0, result.output
    assert not (out / "s1_sr_disagreement.nii.gz").exists()
    assert "disagreement" not in json.loads((out / "s1_sr.json").read_text())


def test_a_file_named_like_a_map_that_no_sidecar_records_is_left_alone(scans, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "s1_sr_disagreement.nii.gz"
    mine.write_bytes(b"the user's own file")
    target = out / "s1_sr.nii.gz"
    args = ("upscale", scans / "s1.nii.gz", "--model", "cubic", "-o", target)
    assert invoke(*args, "--no-disagreement").exit_code == 0
    assert invoke(*args, "--no-disagreement", "--overwrite").exit_code == 0
    assert mine.read_bytes() == b"the user's own file"


@pytest.fixture
def isotropic(tmp_path):
    path = tmp_path / "scans3d" / "t2_3d.nii.gz"
    path.parent.mkdir()
    data = np.random.default_rng(0).random((12, 12, 12)).astype(np.float32)
    save_volume(Volume(data, np.eye(4)), path)
    return path


def test_a_3d_scan_among_2d_ones_is_skipped_not_failed(scans, isotropic, tmp_path):
    out = tmp_path / "out"
    result = invoke("upscale", scans, isotropic, "--model", "cubic", "-o", out)
    assert result.exit_code == 0, result.output
    assert "2 done, 1 skipped (1 not thick-slice), 0 failed" in result.output
    summary = json.loads((out / "mrisr_summary.json").read_text())
    (record,) = [s for s in summary["scans"] if s["scan"] == str(isotropic)]
    assert record["status"] == "skipped" and record["output"] is None
    assert record["note"].startswith("not a thick-slice scan: is already (nearly) isotropic")
    assert not (out / "t2_3d_sr.nii.gz").exists()


def test_a_broken_symbolic_link_among_scans_fails_as_its_own_scan_naming_its_target(
    scans, tmp_path
):
    lost = scans / "s3.nii.gz"
    lost.symlink_to(tmp_path / "unmounted" / "s3.nii.gz")
    (scans / "notes.txt").symlink_to(tmp_path / "gone.txt")  # not named like an image: ignored
    out = tmp_path / "out"
    result = invoke("upscale", scans, "--model", "cubic", "-o", out)
    assert result.exit_code == 3, result.output  # it was silently left out
    assert "2 done, 0 skipped (already done), 1 failed" in result.output
    summary = json.loads((out / "mrisr_summary.json").read_text())
    (record,) = [s for s in summary["scans"] if s["scan"] == str(lost)]
    assert record["status"] == "failed"
    assert "is a broken symbolic link: its target" in record["error"]
    assert str(tmp_path / "unmounted" / "s3.nii.gz") in record["error"]
    assert "Fix: restore the target" in record["error"]
    # Named alone, it is refused with the same words.
    alone = invoke("upscale", lost, "--model", "cubic")
    assert alone.exit_code == 2 and "is a broken symbolic link" in alone.output


def test_one_3d_scan_alone_is_still_refused(isotropic, tmp_path):
    result = invoke("upscale", isotropic, "--model", "cubic", "-o", tmp_path / "x.nii.gz")
    assert result.exit_code == 2 and "isotropic" in result.output
    assert issubclass(NotThickSliceError, GeometryError)  # callers catching that still do
    with pytest.raises(NotThickSliceError):
        plan_upscale(load_volume(isotropic))


def test_an_existing_folder_is_the_output_folder_of_one_scan(scans, tmp_path):
    (tmp_path / "results").mkdir()
    result = invoke("upscale", scans / "s1.nii.gz", "--model", "cubic", "-o", tmp_path / "results")
    assert result.exit_code == 0, result.output
    assert "s1_sr.nii.gz" in files(tmp_path / "results")


def test_one_scan_with_a_summary_or_shard_is_a_cohort_of_one(scans, tmp_path):
    target = tmp_path / "x.nii.gz"
    result = invoke(
        "upscale", scans / "s1.nii.gz", "--model", "cubic", "-o", target, "--summary", tmp_path / "s.json"
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert target.is_file()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [s["output"] for s in summary["scans"]] == [str(target)]
    # An array job of one scan per task: task 2 of 2 gets nothing, and says so.
    empty = invoke("upscale", scans / "s2.nii.gz", "--model", "cubic", "-o", tmp_path / "y.nii.gz",
                   "--shard", "2/2")  # fmt: skip
    assert empty.exit_code == 0, empty.output
    assert "0 of 1 scans" in empty.output and not (tmp_path / "y.nii.gz").exists()


def test_the_python_api_takes_one_path_and_a_shard_text(scans, tmp_path):
    (record,) = upscale_many(str(scans / "s1.nii.gz"), "cubic", output_dir=tmp_path / "o")
    assert record.status == "done"
    records = list(upscale_many(scans, "cubic", output_dir=tmp_path / "p", shard="2/2"))
    assert [Path(r.scan).name for r in records] == ["s2.nii.gz"]


def test_logs_get_one_whole_line_per_scan(scans, tmp_path):
    out = tmp_path / "a_rather_long_output_folder_name_that_a_table_would_cut" / "and_deeper"
    result = invoke("upscale", scans, "--model", "cubic", "-o", out)  # not a terminal
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.endswith(str(out / "s1_sr.nii.gz")) for line in lines), result.output
    assert lines[-1].endswith(f"summary: {out / 'mrisr_summary.json'}")


def test_bids_summaries_are_named_after_the_selection():
    from mrisr.cli.bids import _summary_name

    default = Path("logs/mrisr_summary.json")
    chosen = {"participant_label": ["01"], "session_label": None, "suffix": None}
    assert _summary_name(default, chosen).name == "mrisr_summary_sub-01.json"
    chosen = {"participant_label": ["sub-01"], "session_label": ["1"], "suffix": ["T1w"]}
    assert _summary_name(default, chosen).name == "mrisr_summary_sub-01_ses-1_T1w.json"
    sharded = Path("logs/mrisr_summary_shard-1-of-2.json")
    assert _summary_name(sharded, chosen).name == "mrisr_summary_sub-01_ses-1_T1w_shard-1-of-2.json"
    nothing = {"participant_label": None, "session_label": None, "suffix": ["FLAIR", "T2w"]}
    assert _summary_name(default, nothing) == default


def test_a_failed_overwrite_leaves_the_earlier_result_whole(scans, tmp_path, monkeypatch):
    import mrisr.io.outputs as outputs

    target = tmp_path / "a.nii.gz"
    args = ("upscale", scans / "s1.nii.gz", "--model", "cubic", "-o", target)
    assert invoke(*args).exit_code == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}

    def full_disk(*args, **kwargs):
        raise OutputError("could not be written: [Errno 28] No space left on device")

    monkeypatch.setattr(outputs, "write_json_atomic", full_disk)
    result = invoke(*args, "--overwrite", "--factor", "2")
    assert result.exit_code == 2 and "No space left" in result.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_evaluate_refuses_a_truth_too_small_and_warns_about_a_thick_one(thick, tmp_path, caplog):
    small = tmp_path / "small.nii.gz"
    save_volume(thick, small)  # 13 slices along axis 2: 10 after cropping to whole 5x slices
    result = invoke("evaluate", small, "--axis", "2", "--factor", "5")
    assert result.exit_code == 2 and "SSIM window" in result.output, result.output
    assert "win_size" not in result.output
    warned = invoke("evaluate", small, "--axis", "0", "--factor", "2")
    assert warned.exit_code == 0, warned.output
    assert "compare with a blurred truth" in caplog.text  # 1 x 1 x 4 mm voxels


@pytest.mark.parametrize("nothing", [[], (), iter([])])
def test_the_api_refuses_an_empty_list_of_scans_instead_of_doing_nothing(nothing):
    from mrisr.cohort import upscale_many

    with pytest.raises(InputError, match="no scans were given"):
        list(upscale_many(nothing, "cubic"))


def test_an_empty_path_is_refused_by_the_api_instead_of_meaning_the_current_folder(
    tmp_path, monkeypatch
):
    from mrisr.cohort import upscale_many
    from mrisr.upscale import upscale_file

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="an empty path names no scan"):
        list(upscale_many([""], "cubic"))
    with pytest.raises(InputError, match="an empty path names nothing"):
        upscale_file("", model="cubic")
    assert list(tmp_path.iterdir()) == []


def test_a_refused_cohort_leaves_no_output_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("upscale", empty, "-o", tmp_path / "eo", "--model", "cubic")
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "eo").exists()
