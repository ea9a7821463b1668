"""BIDS in, BIDS derivatives out: discovery, names, sidecars, dataset description, refusals.

The names are checked against the BIDS specification's own schema
(bidsschematools, installed with pybids): the derivative file rules and the
entity order; dataset_description.json against the schema's required fields.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrisr import load_volume, save_volume, simulate_volume
from mrisr.cli import app
from mrisr.errors import ConfigError, InputError, OutputError

pytest.importorskip("bids", reason="pybids (the mrisr[bids] extra) is not installed")
schema_module = pytest.importorskip("bidsschematools.schema")
from bidsschematools import rules as schema_rules  # noqa: E402

from mrisr.bids import (  # noqa: E402
    derivative_name,
    entity_order,
    find_anatomical_scans,
    require_pybids,
)

#: (subject, session, entities between session and suffix, suffix)
SCANS = [
    ("01", "1", "_acq-ax", "T2w"),
    ("01", "2", "_acq-ax", "T2w"),
    ("01", "2", "", "T1w"),  # not a default suffix
    ("02", None, "_run-1", "T2w"),
    ("02", None, "_run-2", "FLAIR"),
    ("03", None, "", "T2w"),  # corrupt
]


def raw_name(subject, session, middle, suffix):
    return f"sub-{subject}" + (f"_ses-{session}" if session else "") + f"{middle}_{suffix}.nii.gz"


@pytest.fixture(scope="module")
def schema():
    return schema_module.load_schema()


@pytest.fixture(scope="module")
def derivative_patterns(schema):
    """The schema's regular expressions for files of a derivative dataset."""
    patterns = []
    for group in (schema.rules.files.common, schema.rules.files.deriv):
        patterns += schema_rules.regexify_filename_rules(group, schema, level=2)
    return [re.compile(r"(?:.*/)?" + p["regex"]) for p in patterns]


@pytest.fixture
def dataset(shared_data, tmp_path):
    """A small BIDS dataset: 3 subjects, 2 sessions, T2w/FLAIR/T1w, one corrupt scan."""
    root = tmp_path / "raw"
    thick = simulate_volume(load_volume(shared_data / "fixtures" / "spine_t2_1mm.nii.gz"), 2, 4)
    for subject, session, middle, suffix in SCANS:
        folder = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        save_volume(thick, folder / raw_name(subject, session, middle, suffix))
    bad = root / "sub-03" / "anat" / raw_name("03", None, "", "T2w")
    bad.write_bytes(bad.read_bytes()[:2000])
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "toy spine", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    )
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\nsub-03\n")
    return root


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------ names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sub-01_T2w.nii.gz", "sub-01_desc-sr_T2w.nii.gz"),
        ("sub-01_ses-1_T2w.nii", "sub-01_ses-1_desc-sr_T2w.nii.gz"),
        ("sub-01_ses-1_acq-ax_run-2_FLAIR.nii.gz", "sub-01_ses-1_acq-ax_run-2_desc-sr_FLAIR.nii.gz"),
        ("sub-01_ses-1_acq-ax_ce-gad_rec-norm_run-1_part-mag_T1w.nii.gz",
         "sub-01_ses-1_acq-ax_ce-gad_rec-norm_run-1_part-mag_desc-sr_T1w.nii.gz"),
        ("sub-01_run-1_acq-ax_ses-1_T2w.nii.gz", "sub-01_ses-1_acq-ax_run-1_desc-sr_T2w.nii.gz"),
        ("sub-01_space-orig_desc-bias_T2w.nii.gz", "sub-01_space-orig_desc-biassr_T2w.nii.gz"),
    ],
)  # fmt: skip
def test_derivative_names_add_desc_sr_in_bids_entity_order(raw, expected, derivative_patterns):
    name = derivative_name(raw)
    assert name == expected
    folder = "sub-01/ses-1/anat" if "_ses-1_" in name else "sub-01/anat"
    assert any(p.match(f"{folder}/{name}") for p in derivative_patterns), name


def test_the_entity_order_is_the_specification_schema_s(schema):
    order = entity_order()
    assert order.index("sub") < order.index("ses") < order.index("acq") < order.index("run")
    assert order[-1] == "desc"
    assert set(order) == {schema.objects.entities[e].name for e in schema.rules.entities}


def test_a_name_that_is_not_bids_is_refused():
    with pytest.raises(InputError, match="key-label.*Fix: rename it"):
        derivative_name("sub-01_bad_T2w.nii.gz")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        (
            "sub-01_bad_T2w.nii.gz",
            ["has a name part 'bad' that is not key-label", "key-label parts"],
        ),
        ("acq-ax_T2w.nii.gz", ["has no sub-<label> in its name", "begin with its subject"]),
    ],
)
def test_mrisr_bids_refuses_a_scan_name_that_is_not_bids_with_the_fix(
    shared_data, tmp_path, name, words
):
    root = tmp_path / "raw"
    scan = root / "sub-01" / "anat" / name
    scan.parent.mkdir(parents=True)
    save_volume(
        simulate_volume(load_volume(shared_data / "fixtures" / "spine_t2_1mm.nii.gz"), 2, 4), scan
    )
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "toy", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    )
    result = invoke("bids", root, tmp_path / "out", "--model", "cubic")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for word in [str(scan), *words, "Fix: rename it"]:
        assert word in message, message
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ discovery


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ["sub-01_ses-1_acq-ax_T2w", "sub-01_ses-2_acq-ax_T2w", "sub-02_run-1_T2w",
              "sub-02_run-2_FLAIR", "sub-03_T2w"]),
        ({"suffixes": ["T1w"]}, ["sub-01_ses-2_T1w"]),
        ({"participant_labels": ["sub-02"]}, ["sub-02_run-1_T2w", "sub-02_run-2_FLAIR"]),
        ({"participant_labels": ["01"], "session_labels": ["2"]}, ["sub-01_ses-2_acq-ax_T2w"]),
    ],
)  # fmt: skip
def test_pybids_finds_the_asked_anatomical_scans(dataset, options, expected):
    scans = find_anatomical_scans(dataset, **options)
    assert [s.path.name.removesuffix(".nii.gz") for s in scans] == expected
    assert all(s.relpath == s.path.relative_to(dataset).as_posix() for s in scans)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"participant_labels": ["07"]}, "has no participant 07; expected one of 01, 02, 03"),
        ({"session_labels": ["9"]}, "has no session 9"),
        ({"suffixes": ["PDw"]}, "holds no anatomical scan with suffix PDw"),
    ],
)
def test_unknown_labels_and_empty_queries_are_refused(dataset, options, match):
    with pytest.raises(InputError, match=match):
        find_anatomical_scans(dataset, **options)


def test_a_folder_that_is_not_a_bids_dataset_is_refused(tmp_path):
    (tmp_path / "scans").mkdir()
    result = invoke("bids", tmp_path / "scans", tmp_path / "out")
    assert result.exit_code == 2
    assert "is not a BIDS dataset: it has no dataset_description.json" in result.output
    assert not (tmp_path / "out").exists()


def test_a_bad_precision_is_refused_before_the_derivative_is_made(dataset, tmp_path):
    out = tmp_path / "derivative"
    result = invoke("bids", dataset, out, "--precision", "fp16")
    assert result.exit_code == 2 and "unknown precision 'fp16'" in result.output
    assert not out.exists()


def test_without_pybids_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "bids", None)  # makes `import bids` fail
    with pytest.raises(ConfigError, match=r'pip install "mrisr\[bids\]"'):
        require_pybids()


# ------------------------------------------------------------------ derivatives


def test_the_bids_command_writes_valid_derivatives_and_reports_the_corrupt_scan(
    dataset, derivative_patterns, schema
):
    out = dataset / "derivatives" / "mrisr"
    result = invoke(
        "bids", dataset, out, "--model", "cubic", "--suffix", "T2w", "--suffix", "FLAIR"
    )
    assert result.exit_code == 3, result.output
    assert "4 done, 0 skipped (already done), 1 failed" in result.output
    assert "sub-03_T2w.nii.gz" in result.output and "truncated" in result.output
    expected = [
        ".bidsignore",
        "README.md",
        "dataset_description.json",
        "logs/mrisr_summary.json",
        "sub-01/ses-1/anat/sub-01_ses-1_acq-ax_desc-sr_T2w.json",
        "sub-01/ses-1/anat/sub-01_ses-1_acq-ax_desc-sr_T2w.nii.gz",
        "sub-01/ses-1/anat/sub-01_ses-1_acq-ax_desc-srdisagreement_T2w.json",
        "sub-01/ses-1/anat/sub-01_ses-1_acq-ax_desc-srdisagreement_T2w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-ax_desc-sr_T2w.json",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-ax_desc-sr_T2w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-ax_desc-srdisagreement_T2w.json",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-ax_desc-srdisagreement_T2w.nii.gz",
        "sub-02/anat/sub-02_run-1_desc-sr_T2w.json",
        "sub-02/anat/sub-02_run-1_desc-sr_T2w.nii.gz",
        "sub-02/anat/sub-02_run-1_desc-srdisagreement_T2w.json",
        "sub-02/anat/sub-02_run-1_desc-srdisagreement_T2w.nii.gz",
        "sub-02/anat/sub-02_run-2_desc-sr_FLAIR.json",
        "sub-02/anat/sub-02_run-2_desc-sr_FLAIR.nii.gz",
        "sub-02/anat/sub-02_run-2_desc-srdisagreement_FLAIR.json",
        "sub-02/anat/sub-02_run-2_desc-srdisagreement_FLAIR.nii.gz",
    ]
    assert files_under(out) == expected  # nothing for sub-03, not even its folder
    # Every file the validator would read matches one of the schema's derivative rules.
    for path in expected:
        if not path.startswith((".", "logs/", "README")):
            assert any(p.match(path) for p in derivative_patterns), path
    assert (out / ".bidsignore").read_text() == "logs/\n"
    check_dataset_description(out, dataset, schema)
    check_sidecar(out, "sub-02/anat/sub-02_run-1_desc-sr_T2w.json", dataset)
    check_map_sidecar(out, "sub-02/anat/sub-02_run-1_desc-srdisagreement_T2w.json")
    check_with_the_bids_validator(out)


def check_with_the_bids_validator(out):
    """The BIDS validator (the schema-based one, from PyPI's bids-validator-deno): no error."""
    validator = shutil.which("bids-validator-deno") or shutil.which(
        "bids-validator-deno", path=str(Path(sys.executable).parent)
    )
    if validator is None:
        return  # not installed (it is in the dev extra): the schema rules above still ran
    run = subprocess.run(
        [validator, str(out), "--format", "json"], capture_output=True, text=True, timeout=300
    )
    issues = json.loads(run.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("subCode"), i.get("location")) for i in issues if i["severity"] == "error"]  # fmt: skip
    assert errors == [], errors


def check_map_sidecar(out, path):
    sidecar = json.loads((out / path).read_text())
    result = "bids::sub-02/anat/sub-02_run-1_desc-sr_T2w.nii.gz"
    raw = "bids:raw:sub-02/anat/sub-02_run-1_T2w.nii.gz"
    assert sidecar["Sources"] == [result, raw] and sidecar["SpatialReference"] == raw
    assert (out / result.removeprefix("bids::")).is_file()
    assert "Disagreement map" in sidecar["Description"]
    assert sidecar["SkullStripped"] is False


def check_dataset_description(out, raw, schema):
    description = json.loads((out / "dataset_description.json").read_text())
    rules = schema.rules.json.dataset
    required = [k for k, v in rules.dataset_description.fields.items() if v == "required"]
    required += [k for k, v in rules.derivative_description.fields.items() if v == "required"]
    assert set(required) == {"Name", "BIDSVersion", "GeneratedBy"}
    assert all(description.get(key) for key in required)
    assert description["DatasetType"] in schema.objects.metadata.DatasetType.enum
    assert description["DatasetType"] == "derivative"
    generated = description["GeneratedBy"]
    assert isinstance(generated, list) and len(generated) >= 1
    assert all(isinstance(item.get("Name"), str) for item in generated)
    assert generated[0]["Name"] == "mrisr" and generated[0]["Version"]
    uri = re.compile(schema.objects.formats.uri.pattern)
    links = description["DatasetLinks"]
    assert "" not in links and all(uri.fullmatch(value) for value in links.values())
    assert (out / links["raw"]).resolve() == raw.resolve()


def check_sidecar(out, path, raw):
    sidecar = json.loads((out / path).read_text())
    source = "bids:raw:sub-02/anat/sub-02_run-1_T2w.nii.gz"
    assert sidecar["Sources"] == [source] and sidecar["SpatialReference"] == source
    assert (raw / source.removeprefix("bids:raw:")).is_file()
    assert sidecar["input"]["path"] == str(raw / "sub-02/anat/sub-02_run-1_T2w.nii.gz")
    assert sidecar["model"]["name"] == "cubic" and sidecar["mrisr_version"]


def test_a_second_run_skips_everything_already_done(dataset):
    out = dataset / "derivatives" / "mrisr"
    assert invoke("bids", dataset, out, "--model", "cubic").exit_code == 3
    description = (out / "dataset_description.json").read_text()
    again = invoke("bids", dataset, out, "--model", "cubic")
    assert again.exit_code == 3 and "0 done, 4 skipped (already done), 1 failed" in again.output
    assert (out / "dataset_description.json").read_text() == description
    summary = json.loads((out / "logs" / "mrisr_summary.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 4, "failed": 1}
    only_good = invoke("bids", dataset, out, "--model", "cubic", "--participant-label", "01")
    assert only_good.exit_code == 0, only_good.output


def test_shards_1_of_2_and_2_of_2_cover_the_dataset_once(dataset, tmp_path):
    out = tmp_path / "derivative"
    for k in (1, 2):
        invoke("bids", dataset, out, "--model", "cubic", "--shard", f"{k}/2")
    shares = [json.loads((out / "logs" / f"mrisr_summary_shard-{k}-of-2.json").read_text()) for k in (1, 2)]  # fmt: skip
    scans = [s["scan"] for share in shares for s in share["scans"]]
    assert sorted(scans) == sorted(str(s.path) for s in find_anatomical_scans(dataset))
    assert len(set(scans)) == len(scans) == 5


@pytest.mark.parametrize(
    ("where", "match"),
    [
        (lambda raw: raw, "is inside the raw dataset"),
        (lambda raw: raw / "sub-01" / "sr", "is inside the raw dataset"),
        (lambda raw: raw.parent / "other", "holds another dataset"),
        (lambda raw: raw / "derivatives", "is the raw dataset's derivatives/ folder"),
        (lambda raw: raw.parent / "other" / "nested", "is inside another dataset"),
        (lambda raw: raw / "derivatives" / "fmriprep" / "sr", "is inside another dataset"),
    ],
)
def test_output_folders_that_would_mix_datasets_are_refused(dataset, where, match):
    other = dataset.parent / "other"
    other.mkdir()
    (other / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    fmriprep = dataset / "derivatives" / "fmriprep"
    fmriprep.mkdir(parents=True)
    (fmriprep / "dataset_description.json").write_text('{"Name": "y", "BIDSVersion": "1.9.0"}')
    before = files_under(dataset.parent)
    result = invoke("bids", dataset, where(dataset), "--model", "cubic")
    assert result.exit_code == 2 and match in result.output, result.output
    assert files_under(dataset.parent) == before
    with pytest.raises(OutputError):
        from mrisr.bids import check_output_dataset

        check_output_dataset(dataset, where(dataset))


def test_an_earlier_mrisr_derivative_of_another_raw_dataset_is_refused(dataset, tmp_path):
    out = tmp_path / "derivative"
    assert (
        invoke("bids", dataset, out, "--model", "cubic", "--participant-label", "02").exit_code == 0
    )
    other = tmp_path / "other_raw"
    other.mkdir()
    (other / "dataset_description.json").write_text(
        (dataset / "dataset_description.json").read_text()
    )
    (other / "sub-02" / "anat").mkdir(parents=True)
    scan = "sub-02/anat/sub-02_run-1_T2w.nii.gz"
    (other / scan).write_bytes((dataset / scan).read_bytes())
    before = files_under(out)
    result = invoke("bids", other, out, "--model", "cubic")
    assert result.exit_code == 2, result.output
    assert "holds mrisr's derivative of another raw dataset" in result.output
    assert files_under(out) == before


def test_a_derivative_inside_the_raw_dataset_still_matches_after_both_move(dataset, tmp_path):
    out = dataset / "derivatives" / "mrisr"
    assert (
        invoke("bids", dataset, out, "--model", "cubic", "--participant-label", "02").exit_code == 0
    )
    moved = tmp_path / "moved"
    dataset.rename(moved)
    again = invoke("bids", moved, moved / "derivatives" / "mrisr", "--model", "cubic",
                   "--participant-label", "02")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "0 done, 2 skipped" in again.output


def test_an_existing_bidsignore_keeps_its_lines_and_gains_the_log_folder(dataset, tmp_path):
    out = tmp_path / "derivative"
    out.mkdir()
    (out / ".bidsignore").write_text("mine/")
    assert (
        invoke("bids", dataset, out, "--model", "cubic", "--participant-label", "02").exit_code == 0
    )
    assert (out / ".bidsignore").read_text() == "mine/\nlogs/\n"
    assert (
        invoke("bids", dataset, out, "--model", "cubic", "--participant-label", "02").exit_code == 0
    )
    assert (out / ".bidsignore").read_text() == "mine/\nlogs/\n"  # not added twice
    readme = (out / "README.md").read_text()
    assert "desc-srdisagreement" in readme and "toy spine" in readme


def test_slice_thickness_is_inherited_from_metadata_above_the_scan(dataset, tmp_path):
    """BIDS inheritance: a top-level T2w.json applies to every T2w scan (the file's own wins)."""
    (dataset / "T2w.json").write_text('{"SliceThickness": 3.0}')
    own = dataset / "sub-02" / "anat" / "sub-02_run-1_T2w.json"
    own.write_text('{"SliceThickness": 3.5}')
    thickness = {s.path.name: load_volume(s.path).meta.get("slice_thickness_mm")
                 for s in find_anatomical_scans(dataset) if "sub-03" not in s.path.name}  # fmt: skip
    assert thickness["sub-02_run-1_T2w.nii.gz"] == 3.5
    assert thickness["sub-01_ses-1_acq-ax_T2w.nii.gz"] == 3.0
    assert thickness["sub-02_run-2_FLAIR.nii.gz"] is None
    out = tmp_path / "derivative"
    result = invoke("bids", dataset, out, "--model", "cubic", "--participant-label", "01",
                    "--session-label", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    sidecar = json.loads(
        (out / "sub-01/ses-1/anat/sub-01_ses-1_acq-ax_desc-sr_T2w.json").read_text()
    )
    assert sidecar["slice_thickness_mm"] == 3.0
    assert sidecar["slice_thickness_source"] == "header"


@pytest.mark.parametrize("level", [["participant"], []])
def test_the_bids_app_form_with_an_analysis_level_and_underscore_options_works(
    dataset, tmp_path, level
):
    out = tmp_path / "derivative"
    result = invoke("bids", dataset, out, *level, "--participant_label", "02", "--model", "cubic")
    assert result.exit_code == 0, result.output
    assert "2 done" in result.output


def test_a_group_analysis_level_is_refused_before_anything_is_written(dataset, tmp_path):
    out = tmp_path / "derivative"
    result = invoke("bids", dataset, out, "group", "--model", "cubic")
    assert result.exit_code == 2 and "no group level" in result.output, result.output
    assert not out.exists()


def test_a_changed_inherited_thickness_is_not_taken_for_a_finished_scan(dataset, tmp_path):
    """The input's hash does not cover the metadata files it inherits: they are compared too."""
    out = tmp_path / "derivative"
    selection = ("--model", "cubic", "--participant-label", "02", "--suffix", "T2w")
    assert invoke("bids", dataset, out, *selection).exit_code == 0
    assert "0 done, 1 skipped" in invoke("bids", dataset, out, *selection).output
    (dataset / "T2w.json").write_text('{"SliceThickness": 3.0}')
    changed = invoke("bids", dataset, out, *selection)
    assert changed.exit_code == 3, changed.output
    assert "slice thickness of its JSON metadata changed: None mm (recorded) against 3.0" in (
        " ".join(changed.output.split())
    )
    redone = invoke("bids", dataset, out, *selection, "--overwrite")
    assert redone.exit_code == 0 and "1 done" in redone.output
    assert "0 done, 1 skipped" in invoke("bids", dataset, out, *selection).output


def test_overwrite_without_the_map_removes_the_earlier_map_and_its_sidecar(dataset, tmp_path):
    out = tmp_path / "derivative"
    selection = ("--model", "cubic", "--participant-label", "02", "--suffix", "T2w")
    assert invoke("bids", dataset, out, *selection).exit_code == 0
    folder = out / "sub-02" / "anat"
    assert (folder / "sub-02_run-1_desc-srdisagreement_T2w.json").is_file()
    again = invoke("bids", dataset, out, *selection, "--overwrite", "--no-disagreement")
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in folder.iterdir()) == [
        "sub-02_run-1_desc-sr_T2w.json",
        "sub-02_run-1_desc-sr_T2w.nii.gz",
    ]


def test_an_existing_map_sidecar_is_refused_without_overwrite(dataset, tmp_path):
    out = tmp_path / "derivative"
    folder = out / "sub-02" / "anat"
    folder.mkdir(parents=True)
    (folder / "sub-02_run-1_desc-srdisagreement_T2w.json").write_text("{}")
    result = invoke("bids", dataset, out, "--model", "cubic", "--participant-label", "02",
                    "--suffix", "T2w")  # fmt: skip
    assert result.exit_code == 3 and "desc-srdisagreement_T2w.json" in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["sub-02_run-1_desc-srdisagreement_T2w.json"]


def test_skull_stripped_follows_the_input_s_metadata(dataset):
    from mrisr.bids import skull_stripped

    scan = dataset / "sub-02" / "anat" / "sub-02_run-1_T2w.nii.gz"
    assert skull_stripped(scan) is False  # a raw scan, nothing said
    (dataset / "T2w.json").write_text('{"SkullStripped": true}')
    assert skull_stripped(scan) is True
    assert skull_stripped(dataset / "sub-02" / "anat" / "sub-02_run-2_FLAIR.nii.gz") is False
