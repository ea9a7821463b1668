"""Cohorts: many scans in one process, shards, resume, failure isolation, read-ahead, torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr import load_volume, save_volume, upscale_file, upscale_many
from mrisr.cli import app
from mrisr.cohort import (
    ModelCache,
    expand_scans,
    is_single_scan,
    parse_shard,
    rank_share,
    scan_jobs,
    take_shard,
)
from mrisr.errors import ConfigError, InputError, OutputError
from mrisr.interpolation import CubicSliceModel


@pytest.fixture
def study(thick, tmp_path):
    """study/a/{s1,s2}.nii.gz, study/b/s3.nii.gz, study/b/bad.nii.gz (truncated)."""
    root = tmp_path / "study"
    for name in ("a/s1", "a/s2", "b/s3"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        save_volume(thick, root / f"{name}.nii.gz")
    data = (root / "a" / "s1.nii.gz").read_bytes()
    (root / "b" / "bad.nii.gz").write_bytes(data[: len(data) // 2])
    return root


def names(paths):
    return [Path(p).name for p in paths]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ------------------------------------------------------------------ finding scans


def test_folders_are_searched_recursively_and_sorted(study):
    assert names(expand_scans([study])) == ["s1.nii.gz", "s2.nii.gz", "bad.nii.gz", "s3.nii.gz"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("a/*.nii.gz", ["s1.nii.gz", "s2.nii.gz"]),
        ("**/s*.nii.gz", ["s1.nii.gz", "s2.nii.gz", "s3.nii.gz"]),
        ("*", ["s1.nii.gz", "s2.nii.gz", "bad.nii.gz", "s3.nii.gz"]),  # folders expand
    ],
)
def test_glob_patterns_are_expanded_by_mrisr(study, pattern, expected):
    assert names(expand_scans([f"{study}/{pattern}"])) == expected


def test_repeats_are_dropped_and_missing_paths_kept_to_fail_on_their_own(study):
    scans = expand_scans([study / "a" / "s1.nii.gz", f"{study}/a/*", study / "nope.nii.gz"])
    assert names(scans) == ["s1.nii.gz", "s2.nii.gz", "nope.nii.gz"]


def test_mrisr_outputs_are_not_taken_as_scans(study):
    upscale_file(study / "a" / "s1.nii.gz", model="cubic")
    assert (study / "a" / "s1_sr.nii.gz").exists()
    assert names(expand_scans([study / "a"])) == ["s1.nii.gz", "s2.nii.gz"]
    # Named explicitly, a file is taken as it is.
    assert names(expand_scans([study / "a" / "s1_sr.nii.gz"])) == ["s1_sr.nii.gz"]


def test_a_folder_of_files_in_no_image_format_is_one_dicom_series(tmp_path):
    series = tmp_path / "study" / "series1"
    series.mkdir(parents=True)
    for i in range(3):
        (series / f"IM{i:04d}").write_bytes(b"DICM")
    assert expand_scans([tmp_path / "study"]) == [series.absolute()]
    assert is_single_scan([series]) and not is_single_scan([tmp_path / "study"])


@pytest.fixture
def series_with_nifti(shared_data, thick, tmp_path):
    """withnii/: the shared PD series (20 .dcm files) and a NIfTI beside it."""
    folder = tmp_path / "withnii"
    folder.mkdir()
    for path in sorted((shared_data / "thick" / "brain_pd_axial_7mm_dicom").iterdir()):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "README").write_text("exported from the PACS")  # not DICOM: not counted
    save_volume(thick, folder / "converted.nii.gz")
    return folder


def test_dicom_files_beside_an_image_are_named_in_a_warning(series_with_nifti, caplog):
    with caplog.at_level("WARNING"):
        assert names(expand_scans([series_with_nifti])) == ["converted.nii.gz"]
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith(f"{series_with_nifti}: 20 DICOM files not upscaled"), message
    assert "also holds an image file (converted.nii.gz)" in message
    assert "move it into a folder of its own and pass that folder" in message
    assert f"'{series_with_nifti}/*.nii.gz'" in message


def test_naming_the_images_of_such_a_folder_gives_no_warning(series_with_nifti, caplog):
    with caplog.at_level("WARNING"):
        assert names(expand_scans([f"{series_with_nifti}/*.nii.gz"])) == ["converted.nii.gz"]
    assert not caplog.records


def test_the_warning_is_given_once_per_folder_and_then_counted(tmp_path, thick, caplog):
    for k in range(7):
        folder = tmp_path / "study" / f"sub-{k}"
        folder.mkdir(parents=True)
        save_volume(thick, folder / "t2.nii.gz")
        (folder / "IM0001").write_bytes(b"\0" * 128 + b"DICM")
    (tmp_path / "study" / "sub-0" / "notes.pdf").write_bytes(b"%PDF")
    with caplog.at_level("WARNING"):
        assert len(expand_scans([tmp_path / "study"])) == 7
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 6 and "sub-0: 1 DICOM file not upscaled" in messages[0]
    assert messages[-1].startswith("2 more folders hold DICOM files beside image files")


def test_the_upscale_command_warns_and_upscales_the_image(series_with_nifti, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        result = invoke("upscale", series_with_nifti, "-o", out, "--model", "cubic")
    assert result.exit_code == 0, result.output
    assert "withnii: 20 DICOM files not upscaled" in caplog.text  # once, not per listing
    assert caplog.text.count("DICOM files not upscaled") == 1
    assert (out / "converted_sr.nii.gz").exists()


@pytest.mark.parametrize(
    ("args", "single"),
    [(["a/s1.nii.gz"], True), (["missing.nii.gz"], True), (["a"], False),
     (["a/*.nii.gz"], False), (["a/s1.nii.gz", "a/s2.nii.gz"], False)],
)  # fmt: skip
def test_which_arguments_keep_the_one_scan_behaviour(study, monkeypatch, args, single):
    monkeypatch.chdir(study)
    assert is_single_scan(args) == single


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda root: [f"{root}/*.mgz"], "matches no scan"),
        (lambda root: [root / "empty"], "holds no scan"),
        (lambda root: [], "no scans were named"),
    ],
)
def test_naming_nothing_is_refused(study, make, match):
    (study / "empty").mkdir()
    with pytest.raises(InputError, match=match):
        expand_scans(make(study))


def test_two_scans_writing_one_output_are_refused_before_any_work(study, tmp_path):
    save_volume(load_volume(study / "a" / "s1.nii.gz"), study / "b" / "s1.nii.gz")
    with pytest.raises(OutputError, match="would be written for both"):
        scan_jobs([study / "a" / "s1.nii.gz", study / "b" / "s1.nii.gz"], tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


# ------------------------------------------------------------------ shares


@pytest.mark.parametrize("count", [0, 1, 2, 5, 7, 20])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_shards_cover_the_list_exactly_once(count, n):
    items = [f"scan{i:02d}" for i in range(count)]
    shares = [take_shard(items, k, n) for k in range(1, n + 1)]
    assert sorted(item for share in shares for item in share) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize(
    ("text", "expected"), [("1/2", (1, 2)), (" 2/2 ", (2, 2)), ("3/10", (3, 10))]
)
def test_shard_text_is_parsed(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/2/3", "-1/2", "1/0"])
def test_bad_shard_text_is_refused(text):
    with pytest.raises(ConfigError, match="K/N.*Fix: pass --shard"):
        parse_shard(text)


@pytest.mark.parametrize("shard", [(5, 4), (0, 2), (1, 0), (1.5, 2), "3/2"])
def test_a_bad_shard_given_to_the_api_is_refused_with_the_fix(study, tmp_path, shard):
    with pytest.raises(ConfigError, match="is not K/N with 1 <= K <= N.*Fix: pass --shard"):
        list(upscale_many([study / "a"], "cubic", output_dir=tmp_path / "out", shard=shard))
    assert not list(tmp_path.rglob("*_sr.nii.gz"))


@pytest.mark.parametrize(("k", "n"), [(5, 4), (0, 2), (1, 0), (1.5, 2)])
def test_take_shard_refuses_what_parse_shard_refuses(k, n):
    with pytest.raises(ConfigError, match="is not K/N with 1 <= K <= N.*Fix: pass --shard"):
        take_shard([1, 2, 3], k, n)


def test_torchrun_ranks_split_each_shard_exactly_once(monkeypatch):
    items = list(range(23))
    taken = []
    for k in (1, 2, 3):
        for rank in (0, 1):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            taken += take_shard(items, *rank_share((k, 3)))
    assert sorted(taken) == items


# ------------------------------------------------------------------ many scans


def test_a_bad_scan_is_recorded_and_the_others_go_on(study, tmp_path):
    records = list(upscale_many([study], "cubic", output_dir=tmp_path / "out"))
    assert [(Path(r.scan).name, r.status) for r in records] == [
        ("s1.nii.gz", "done"), ("s2.nii.gz", "done"), ("bad.nii.gz", "failed"), ("s3.nii.gz", "done")
    ]  # fmt: skip
    failed = records[2]
    assert "bad.nii.gz" in failed.error and "truncated" in failed.error and failed.output is None
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"s{i}_sr{end}" for i in (1, 2, 3) for end in (".json", ".nii.gz", "_disagreement.nii.gz")]  # fmt: skip


def test_a_cohort_output_equals_the_single_scan_output(study, tmp_path):
    single, _ = upscale_file(study / "a" / "s1.nii.gz", tmp_path / "single.nii.gz", model="cubic")
    (record,) = upscale_many([study / "a" / "s1.nii.gz"], "cubic", output_dir=tmp_path / "many")
    one, many = load_volume(single), load_volume(record.output)
    np.testing.assert_array_equal(one.data, many.data)
    np.testing.assert_array_equal(one.affine, many.affine)
    sidecars = [json.loads(Path(p).with_suffix("").with_suffix(".json").read_text()) for p in (single, record.output)]  # fmt: skip
    for key in ("input", "model", "options", "factor", "axis", "normalisation"):
        assert sidecars[0][key] == sidecars[1][key]


def test_a_second_run_skips_finished_scans_and_overwrite_redoes_them(study, tmp_path):
    out = tmp_path / "out"
    list(upscale_many([study / "a"], "cubic", output_dir=out))
    before = (out / "s1_sr.nii.gz").stat().st_mtime_ns
    assert [r.status for r in upscale_many([study / "a"], "cubic", output_dir=out)] == [
        "skipped"
    ] * 2
    assert (out / "s1_sr.nii.gz").stat().st_mtime_ns == before
    redone = [
        r.status for r in upscale_many([study / "a"], "cubic", output_dir=out, overwrite=True)
    ]
    assert redone == ["done", "done"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"fusion": "fba"}, "fusion 'mean' (recorded) against 'fba' (now)"),  # other options
        ({"factor": 2.0}, "factor"),  # another factor than the one recorded
        ({"input": True}, "the input changed since"),
    ],
    ids=["options", "factor", "input"],
)
def test_a_finished_scan_made_differently_is_not_skipped(study, tmp_path, change, named):
    out, scan = tmp_path / "out", study / "a" / "s1.nii.gz"
    list(upscale_many([scan], "cubic", output_dir=out))
    settings = {k: v for k, v in change.items() if k != "input"}
    if "input" in change:
        volume = load_volume(scan)
        save_volume(volume.with_data(volume.data * 2, volume.affine), tmp_path / "new.nii.gz")
        scan.write_bytes((tmp_path / "new.nii.gz").read_bytes())
    (record,) = upscale_many([scan], "cubic", output_dir=out, **settings)
    assert record.status == "failed" and "does not match this one" in record.error
    assert named in record.error  # the refusal says what differs
    (record,) = upscale_many([scan], "cubic", output_dir=out, overwrite=True, **settings)
    assert record.status == "done"


def test_the_same_weights_in_another_precision_are_the_same_model():
    from mrisr.cohort import model_identity

    # A study resumed on a machine without native bfloat16 is not redone for it.
    described = {"weights_sha256": "ab" * 32, "name": "fast", "kind": "generator"}
    single = model_identity({**described, "precision": "float32"})
    assert single == model_identity({**described, "precision": "bfloat16 autocast"})
    assert single != model_identity({**described, "weights_sha256": "cd" * 32})


def test_force_does_not_make_a_finished_scan_unfinished(study, tmp_path):
    list(upscale_many([study / "a"], "cubic", output_dir=tmp_path))
    statuses = [
        r.status for r in upscale_many([study / "a"], "cubic", output_dir=tmp_path, force=True)
    ]
    assert statuses == ["skipped", "skipped"]


def test_an_unexpected_error_is_recorded_with_its_type(study, tmp_path):
    class Flaky(CubicSliceModel):
        calls = 0

        def upscale_slices(self, stack, out_rows, progress=None):
            Flaky.calls += 1
            if Flaky.calls == 3:  # the second scan's first plane
                raise RuntimeError("out of memory")
            return super().upscale_slices(stack, out_rows, progress)

    scans = [study / "a", study / "b" / "s3.nii.gz"]
    records = list(upscale_many(scans, Flaky(), output_dir=tmp_path))
    assert [r.status for r in records] == ["done", "failed", "done"]
    assert "RuntimeError: out of memory" in records[1].error and "s2.nii.gz" in records[1].error
    assert not (tmp_path / "s2_sr.nii.gz").exists() and not (tmp_path / "s2_sr.json").exists()


def test_the_model_is_loaded_once_per_model_file(monkeypatch):
    import mrisr.cohort as cohort
    from mrisr.models import default_model_path

    loaded = []
    monkeypatch.setattr(cohort, "choose_model", lambda model, factor: loaded.append(factor) or CubicSliceModel())  # fmt: skip
    cache = ModelCache(None)  # the default model, chosen by factor
    factors = [4.0, 4.0, 3.9, 2.5, 4.0]
    models = [cache.get(f) for f in factors]
    files = {default_model_path(f) for f in factors}
    assert cache.loads == len(loaded) == len(files)
    assert models[0] is models[1] is models[4]
    named = ModelCache("cubic")
    assert named.get(4.0) is named.get(2.0) and named.loads == 1


def test_the_next_scan_is_read_while_this_one_computes(study, tmp_path, monkeypatch):
    import mrisr.io.load_save as load_save

    second_read = threading.Event()
    real_load = load_save.load_volume

    def load(path):
        if Path(path).name == "s2.nii.gz":
            second_read.set()
        return real_load(path)

    class Waiting(CubicSliceModel):
        def upscale_slices(self, stack, out_rows, progress=None):
            # Scan 1 cannot finish before scan 2 is being read: without read-ahead this fails.
            assert second_read.wait(timeout=20), "the next scan was not read during this one"
            return super().upscale_slices(stack, out_rows, progress)

    monkeypatch.setattr(load_save, "load_volume", load)
    records = list(upscale_many([study / "a"], Waiting(), output_dir=tmp_path))
    assert [r.status for r in records] == ["done", "done"], records


def test_the_last_scan_is_written_while_the_next_one_computes(study, tmp_path, monkeypatch):
    import mrisr.upscale as upscale

    second_computing = threading.Event()
    real_write = upscale.write_upscaled

    def write(result, input_path, output, **kwargs):
        if Path(input_path).name == "s1.nii.gz":
            # Without a writing thread, scan 2 starts only after this returns: it would fail.
            assert second_computing.wait(timeout=20), "scan 2 did not compute during this write"
        return real_write(result, input_path, output, **kwargs)

    class Noting(CubicSliceModel):
        calls = 0

        def upscale_slices(self, stack, out_rows, progress=None):
            Noting.calls += 1
            if Noting.calls == 3:  # scan 2's first plane
                second_computing.set()
            return super().upscale_slices(stack, out_rows, progress)

    monkeypatch.setattr(upscale, "write_upscaled", write)
    records = list(upscale_many([study / "a"], Noting(), output_dir=tmp_path))
    assert [(r.status, Path(r.scan).name) for r in records] == [
        ("done", "s1.nii.gz"),
        ("done", "s2.nii.gz"),
    ], records
    assert all((tmp_path / f"s{i}_sr.json").is_file() for i in (1, 2))


def test_a_failed_write_fails_that_scan_only_and_leaves_none_of_it(study, tmp_path, monkeypatch):
    import mrisr.io.outputs as outputs

    real_write_json = outputs.write_json_atomic

    def write_json(data, path, **kwargs):
        if Path(path).name == "s1_sr.json":  # after the image and the map were written
            raise OutputError("disk full", path=path)
        return real_write_json(data, path, **kwargs)

    monkeypatch.setattr(outputs, "write_json_atomic", write_json)
    records = list(upscale_many([study / "a"], "cubic", output_dir=tmp_path / "out"))
    assert [r.status for r in records] == ["failed", "done"], records
    assert "disk full" in records[0].error and records[0].output is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "s2_sr.json",
        "s2_sr.nii.gz",
        "s2_sr_disagreement.nii.gz",
    ]


def test_a_failed_scan_does_not_take_its_folder_from_the_next(thick, tmp_path):
    from mrisr.cohort import ScanJob

    inputs = []
    for name in ("t2", "flair"):
        save_volume(thick, tmp_path / f"{name}.nii.gz")
        inputs.append(tmp_path / f"{name}.nii.gz")
    anat = tmp_path / "derivatives" / "sub-01" / "anat"  # made for the scans, shared by both
    jobs = [
        ScanJob(path, anat / f"{path.name[:-7]}_sr.nii.gz", create_folder=True) for path in inputs
    ]
    jobs.sort(key=lambda job: str(job.input))  # flair first

    class FirstFails(CubicSliceModel):
        calls = 0

        def upscale_slices(self, stack, out_rows, progress=None):
            FirstFails.calls += 1
            if FirstFails.calls == 1:
                raise RuntimeError("no memory")
            return super().upscale_slices(stack, out_rows, progress)

    # anat/ was made for both; the first scan's failure must not remove it
    # while the second is read, computed or written.
    records = list(upscale_many(jobs, FirstFails()))
    assert [r.status for r in records] == ["failed", "done"], records
    assert sorted(p.name for p in anat.iterdir()) == [
        "t2_sr.json",
        "t2_sr.nii.gz",
        "t2_sr_disagreement.nii.gz",
    ]


def test_a_failed_scan_holds_no_memory_while_the_next_one_computes(study, tmp_path):
    import gc
    import weakref

    class Big:  # stands for the arrays of the failed scan's frames
        pass

    held = []

    class FailsFirst(CubicSliceModel):
        calls = 0

        def upscale_slices(self, stack, out_rows, progress=None):
            FailsFirst.calls += 1
            if FailsFirst.calls == 1:
                arrays = Big()  # a local of the frame that raises
                held.append(weakref.ref(arrays))
                raise RuntimeError("no memory")
            gc.collect()
            # The failed scan's record is made after this one computes: its
            # traceback (and the frames' arrays) must already be gone.
            assert held[0]() is None, "the failed scan's arrays are still alive"
            return super().upscale_slices(stack, out_rows, progress)

    records = list(upscale_many([study / "a"], FailsFirst(), output_dir=tmp_path / "out"))
    assert [r.status for r in records] == ["failed", "done"], records
    assert "RuntimeError: no memory" in records[0].error


def test_stopping_early_reads_no_further(study, tmp_path):
    many = upscale_many([study], "cubic", output_dir=tmp_path / "out")
    first = next(many)
    many.close()
    assert first.status == "done"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "s1_sr.json",
        "s1_sr.nii.gz",
        "s1_sr_disagreement.nii.gz",
    ]


# ------------------------------------------------------------------ command line


def test_the_cli_upscales_several_scans_and_writes_a_summary(study, tmp_path):
    out = tmp_path / "out"
    result = invoke("upscale", study / "a", f"{study}/b/*.nii.gz", "--model", "cubic", "-o", out)
    assert result.exit_code == 3, result.output
    assert "3 done, 0 skipped (already done), 1 failed" in result.output
    summary = json.loads((out / "mrisr_summary.json").read_text())
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    assert [Path(s["scan"]).name for s in summary["scans"]] == ["s1.nii.gz", "s2.nii.gz", "bad.nii.gz", "s3.nii.gz"]  # fmt: skip
    assert {"scan", "status", "seconds", "output", "error"} <= set(summary["scans"][0])
    again = invoke("upscale", study / "a", f"{study}/b/*.nii.gz", "--model", "cubic", "-o", out)
    assert again.exit_code == 3 and "0 done, 3 skipped (already done), 1 failed" in again.output
    clean = invoke("upscale", study / "a", "--model", "cubic", "-o", out)
    assert clean.exit_code == 0, clean.output


def test_cli_shards_1_of_2_and_2_of_2_cover_the_scans_once(study, tmp_path):
    out = tmp_path / "out"
    for k in (1, 2):
        result = invoke("upscale", study, "--model", "cubic", "-o", out, "--shard", f"{k}/2")
        assert result.exit_code in (0, 3), result.output
    shares = [json.loads((out / f"mrisr_summary_shard-{k}-of-2.json").read_text()) for k in (1, 2)]
    scans = [s["scan"] for share in shares for s in share["scans"]]
    assert sorted(scans) == sorted(str(p) for p in expand_scans([study]))
    assert all(share["shard"] == f"{k}/2" for k, share in zip((1, 2), shares, strict=True))


@pytest.mark.parametrize(
    ("name", "exists", "match"),
    [("file.txt", True, "is not a folder"), ("out.nii.gz", False, "is an image file name")],
)
def test_the_cli_refuses_a_file_as_the_output_folder_of_several_scans(
    study, tmp_path, name, exists, match
):
    if exists:
        (tmp_path / name).write_bytes(b"x")
    result = invoke("upscale", study / "a", "--model", "cubic", "-o", tmp_path / name)
    assert result.exit_code == 2 and match in result.output, result.output
    assert (tmp_path / name).is_file() == exists


def test_one_scan_keeps_its_output_path_and_messages(study, tmp_path):
    (tmp_path / "o").mkdir()
    result = invoke(
        "upscale", study / "a" / "s1.nii.gz", "--model", "cubic", "-o", tmp_path / "o" / "x.nii.gz"
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'o' / 'x.nii.gz'}" in result.output
    assert "summary" not in result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "x.json",
        "x.nii.gz",
        "x_disagreement.nii.gz",
    ]


# ------------------------------------------------------------------ torchrun

RANK_WORKER = """
import sys
from mrisr.cli import app
app(sys.argv[1:])
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_torchrun_ranks_share_the_scans_and_rank_0_writes_the_summary(study, tmp_path):
    (tmp_path / "worker.py").write_text(RANK_WORKER)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(tmp_path / "worker.py"), "upscale", str(study), "--model", "cubic", "-o", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    # Every rank knows that bad.nii.gz failed, so each exits 3 and torchrun fails.
    assert done.returncode != 0, done.stdout + done.stderr
    summary = json.loads((out / "mrisr_summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    by_scan = {Path(s["scan"]).name: s["rank"] for s in summary["scans"]}
    assert by_scan == {"s1.nii.gz": 0, "s2.nii.gz": 1, "bad.nii.gz": 0, "s3.nii.gz": 1}
    assert sorted(p.name for p in out.glob("*_sr.nii.gz")) == ["s1_sr.nii.gz", "s2_sr.nii.gz", "s3_sr.nii.gz"]  # fmt: skip


def test_adaptation_is_refused_for_a_cohort():
    from mrisr.adapt import AdaptSettings
    from mrisr.cohort import CohortSettings
    from mrisr.upscale import UpscaleOptions

    with pytest.raises(ConfigError, match="not available in a cohort run.*save_path=PATH"):
        CohortSettings(options=UpscaleOptions(adapt=AdaptSettings(steps=5)))
