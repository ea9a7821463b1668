"""What a new user trips over: odd paths, checks before work, messages, --version, progress.

Each bad input goes through the command line as a user would type it; the
expensive part (the slice model's work) is replaced by a function that fails
the test if it is reached, so "checked before any voxel is computed" is tested
directly rather than timed.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

import mrisr.upscale
from mrisr.cli import app
from mrisr.errors import OutputError
from mrisr.io.outputs import default_output_path, named_path

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def thick_scan(path: Path, shape=(24, 20, 6), zooms=(1.0, 1.0, 4.0)) -> Path:
    """A small thick-slice NIfTI: smooth positive blobs, 4 mm along axis 2."""
    grid = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    data = 100 + 80 * np.exp(-4 * sum(g**2 for g in grid)) + 10 * np.sin(5 * grid[0])
    nib.save(nib.Nifti1Image(data.astype(np.int16), np.diag([*zooms, 1.0])), str(path))
    return path


@pytest.fixture
def no_voxel_work(monkeypatch):
    """Fail the test if the slice model ever runs."""

    def refuse(*args, **kwargs):
        raise AssertionError("the slice model ran before a check that should have come first")

    monkeypatch.setattr(mrisr.upscale, "_upscale_planes", refuse)


@pytest.fixture
def dicom_folder(shared_data, tmp_path) -> Path:
    folder = tmp_path / "pd_axial"
    shutil.copytree(shared_data / "thick" / "brain_pd_axial_7mm_dicom", folder)
    return folder


# ------------------------------------------------------------- 1. . and ..


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("scan.nii.gz", "scan_sr.nii.gz"),
        ("dicom", "dicom_sr.nii.gz"),
        (".", "{cwd}_sr.nii.gz"),
        ("..", "{parent}_sr.nii.gz"),
        ("dicom/..", "{cwd}_sr.nii.gz"),
        ("./dicom/", "dicom_sr.nii.gz"),
    ],
)
def test_default_output_is_named_after_the_real_folder(given, expected, tmp_path, monkeypatch):
    work = tmp_path / "study" / "series"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    output = default_output_path(given)
    name = expected.format(cwd="series", parent="study")
    assert output.name == name
    assert not output.name.startswith(".")
    # Beside the input: "." gives study/series_sr.nii.gz, ".." gives tmp_path/study_sr.nii.gz.
    assert output.resolve().parent == named_path(given).resolve().parent


def test_the_root_folder_names_no_output():
    with pytest.raises(OutputError, match="-o"):
        default_output_path("/")


@pytest.mark.parametrize("where", [".", ".."])
def test_upscale_dot_and_dot_dot_in_a_dicom_folder(dicom_folder, monkeypatch, where):
    inside = dicom_folder if where == "." else dicom_folder / "work"
    inside.mkdir(exist_ok=True)
    monkeypatch.chdir(inside)
    result = invoke("upscale", where, "--model", "cubic", "--factor", 2)
    assert result.exit_code == 0, result.output
    output = dicom_folder.parent / "pd_axial_sr.nii.gz"
    assert output.is_file() and (dicom_folder.parent / "pd_axial_sr.json").is_file()
    assert not list(inside.glob(".*_sr*")), "no hidden output in the current folder"
    assert nib.load(output).shape == (256, 256, 40)


def test_upscale_dot_dot_with_a_file_input_keeps_the_file_s_name(tmp_path, monkeypatch):
    scan = thick_scan(tmp_path / "scan.nii.gz")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    result = invoke("upscale", "../scan.nii.gz", "--model", "cubic")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "scan_sr.nii.gz").is_file()
    assert scan.is_file()


# ------------------------------------------- 2. every check before the work


def read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` refuse new files, also for root (who ignores mode bits)."""
    import mrisr.io.files as files

    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", guarded)


#: (case, extra command-line options, words the message must hold)
EARLY_REFUSALS = [
    ("read-only folder", ["--model", "cubic"], ["cannot be written", "Permission denied"]),
    ("existing output, default model", [], ["already exists", "--overwrite"]),
    ("unknown model", ["--model", "nosuchmodel"], ["unknown model", "nosuchmodel"]),
    ("no bundled model", ["--factor", 30], ["no bundled model covers factor 30", "--model cubic"]),
    ("factor outside range", ["--model", "fast", "--factor", 9], ["outside the range 2-6"]),
    (
        "thickness with consistency",
        ["--model", "cubic", "--consistency", "--thickness", 10],
        ["--consistency needs a slice thickness", "10 mm"],
    ),
    (
        "thickness far over the spacing",
        ["--model", "cubic", "--thickness", 40],
        ["slice thickness 40 mm is 10 times the slice spacing 4 mm", "at most 3 times"],
    ),
    ("axis", ["--model", "cubic", "--axis", 5], ["axis must be 0, 1 or 2"]),
    ("fusion", ["--model", "cubic", "--fusion", "median"], ["unknown fusion", "median"]),
    ("factor below 1", ["--model", "cubic", "--factor", 0.5], ["factor must be a number > 1"]),
]


@pytest.mark.parametrize(
    ("case", "options", "words"), EARLY_REFUSALS, ids=[c[0] for c in EARLY_REFUSALS]
)
def test_refusals_come_before_any_voxel_is_computed(
    tmp_path, monkeypatch, no_voxel_work, case, options, words
):
    scan = thick_scan(tmp_path / "scan.nii.gz")
    output = tmp_path / "scan_sr.nii.gz"
    if case.startswith("existing"):
        output.write_bytes(b"an earlier result")
    if case.startswith("read-only"):
        read_only(monkeypatch, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("upscale", scan, *options)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for word in words:
        assert word in message
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing is left behind"
    if case.startswith("existing"):
        assert output.read_bytes() == b"an earlier result"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_folder_is_refused_before_work(tmp_path, no_voxel_work):
    scan = thick_scan(tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = invoke("upscale", scan, "--model", "cubic", "-o", out / "x.nii.gz")
    finally:
        out.chmod(0o755)
    assert result.exit_code == 2 and "cannot be written" in result.output


# ------------------------------------------------------------- 3. messages


#: (case, how to make the scan, options): every message must name the scan.
NAMED = [
    ("no bundled model", None, ["--factor", 30]),
    ("model range", None, ["--model", "fast", "--factor", 9]),
    ("thickness", None, ["--model", "cubic", "--thickness", -2]),
    ("consistency", None, ["--model", "cubic", "--consistency", "--thickness", 10]),
    ("thickness over the spacing", None, ["--model", "cubic", "--thickness", 40]),
    ("isotropic", {"zooms": (1.0, 1.0, 1.0)}, ["--model", "cubic"]),
    ("factor", None, ["--model", "cubic", "--factor", 0.5]),
]


@pytest.mark.parametrize(("case", "make", "options"), NAMED, ids=[c[0] for c in NAMED])
def test_every_upscale_message_names_the_scan_and_no_numpy_repr(tmp_path, case, make, options):
    scan = thick_scan(tmp_path / "my_scan.nii.gz", **(make or {}))
    result = invoke("upscale", scan, *options)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "my_scan.nii.gz" in message
    assert "Fix:" in message
    assert not re.search(r"\bnp\.|float64|float32\(|int64\(", message), message


def test_a_message_with_brackets_is_printed_whole(tmp_path):
    """``[low, high]`` is text, not rich markup: it must not vanish from the message."""
    from mrisr.errors import ConfigError

    def fail() -> None:
        raise ConfigError("factor_range is [6, 2], not [low, high]", fix="see [bold]this[/bold]")

    import typer

    from mrisr.cli.common import run_reporting_errors

    probe = typer.Typer()
    probe.command()(run_reporting_errors(fail))
    result = CliRunner().invoke(probe, [])
    assert result.exit_code == 2
    assert "not [low, high]" in result.output and "[bold]this[/bold]" in result.output


def test_no_voxel_brighter_than_background_names_the_scan(tmp_path):
    from mrisr.errors import InputError
    from mrisr.interpolation import CubicSliceModel
    from mrisr.volume import Volume

    data = np.zeros((8, 8, 4), np.float32)
    data[0, 0, 0] = -1.0  # one dark voxel: nothing above the 0.5th percentile
    volume = Volume(data=data, affine=np.diag([1, 1, 4, 1.0]), source=tmp_path / "dark.nii.gz")
    with pytest.raises(InputError, match="dark.nii.gz: has no voxel brighter"):
        mrisr.upscale.upscale_volume(volume, CubicSliceModel())


# ---------------------------------------------------------------- 10. CLI


def test_version():
    from mrisr import __version__

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"mrisr {__version__}"


def test_a_progress_bar_without_a_total_shows_no_none():
    from rich.console import Console

    import mrisr.cli.common as common

    console = Console(record=True, width=100, force_terminal=True)
    bar = common.progress_bar("slices", transient=False)
    bar.live.console = console
    with bar:
        task = bar.add_task("upscaling scan", total=None)
        bar.refresh()
        unknown = console.export_text()
        bar.update(task, completed=3, total=12)
        bar.refresh()
        known = console.export_text()
    assert "None" not in unknown and "0/" not in unknown
    assert "3/12 slices" in known


# ------------------------------------------------------ 3. across commands


def iso_scan(path: Path, slices: int = 42) -> Path:
    data = np.random.default_rng(0).random((20, 18, slices)).astype(np.float32) * 100
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


#: (case, command line with {scan} and {out}, words): bad inputs to every command.
COMMANDS = [
    ("info factor", ["info", "{scan}", "--axis", 2, "--factor", 0.5], ["factor must be"]),
    ("simulate factor 30", ["simulate", "{scan}", "--axis", 2, "--factor", 30, "-o", "{out}"], ["would leave 1 of 42 slices", "--factor 21 or less"]),
    ("simulate factor nan", ["simulate", "{scan}", "--axis", 2, "--factor", "nan", "-o", "{out}"], ["finite number > 1"]),
    ("simulate axis", ["simulate", "{scan}", "--axis", 3, "--factor", 2, "-o", "{out}"], ["axis must be 0, 1 or 2"]),
    ("simulate gap", ["simulate", "{scan}", "--axis", 2, "--factor", 2, "--gap", 5, "-o", "{out}"], ["-3 mm thick", "--gap below 2 mm"]),
    ("simulate thickness", ["simulate", "{scan}", "--axis", 2, "--factor", 2, "--thickness", -1, "-o", "{out}"], ["-1 mm thick"]),
    ("simulate profile", ["simulate", "{scan}", "--axis", 2, "--factor", 2, "--profile", "tri", "-o", "{out}"], ["unknown slice profile 'tri'"]),
    ("evaluate factor", ["evaluate", "{scan}", "--factor", 30], ["fewer than 2 thick slices"]),
    ("evaluate axis", ["evaluate", "{scan}", "--axis", 4], ["axis must be 0, 1 or 2"]),
    ("evaluate model range", ["evaluate", "{scan}", "--model", "fast", "--factor", 9], ["outside the range 2-6"]),
    ("upscale isotropic", ["upscale", "{scan}", "--model", "cubic"], ["isotropic"]),
    ("upscale factor nan", ["upscale", "{scan}", "--model", "cubic", "--axis", 2, "--factor", "nan"], ["factor must be"]),
    ("upscale batch size", ["upscale", "{scan}", "--model", "fast", "--axis", 2, "--factor", 4, "--batch-size", 0], ["batch size"]),
    ("upscale device", ["upscale", "{scan}", "--model", "fast", "--axis", 2, "--factor", 4, "--device", "tpu"], ["unknown device 'tpu'"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "line", "words"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_bad_inputs_to_every_command_name_the_scan_without_numpy_reprs(tmp_path, case, line, words):
    scan = iso_scan(tmp_path / "hr_scan.nii.gz")
    out = tmp_path / "thick.nii.gz"
    args = [str(a).format(scan=scan, out=out) for a in line]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = " ".join(result.output.split())
    assert message.startswith("error: ") or "error: " in message
    assert "hr_scan.nii.gz" in message
    for word in words:
        assert word in message
    assert not re.search(r"\bnp\.|float64|float32\(|int64\(", message), message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr_scan.nii.gz"]


# ------------------------------------------------------------ 4. simulate


@pytest.mark.parametrize(("slices", "factor", "kept"), [(42, 21, 2), (42, 28, 2), (3, 2, 2)])
def test_simulate_keeps_at_least_two_slices(tmp_path, slices, factor, kept):
    scan = iso_scan(tmp_path / "hr.nii.gz", slices)
    out = tmp_path / "thick.nii.gz"
    result = invoke("simulate", scan, "--axis", 2, "--factor", factor, "-o", out)
    assert result.exit_code == 0, result.output
    assert nib.load(out).shape[2] == kept
    assert invoke("info", out, "--axis", 2).exit_code == 0, "mrisr reads what it simulated"


def test_simulate_refuses_before_reading_when_the_output_cannot_be_written(tmp_path, monkeypatch):
    import mrisr.io

    scan = iso_scan(tmp_path / "hr.nii.gz")
    (tmp_path / "thick.nii.gz").write_bytes(b"kept")
    monkeypatch.setattr(mrisr.io, "load_volume", lambda *a, **k: pytest.fail("read the volume"))
    result = invoke("simulate", scan, "--axis", 2, "--factor", 2, "-o", tmp_path / "thick.nii.gz")
    assert result.exit_code == 2 and "already exists" in result.output


# --------------------------------------------------------------- 9. --dtype


def storage_volume(kind: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    data = rng.normal(300, 80, (10, 9, 8))
    data[:3] = 0.0  # background
    if kind == "negative":
        data[5, 5, 5] = -40.5
    if kind == "whole":
        data = np.rint(data)
    if kind == "huge":
        data[4, 4, 4] = 1e7
    return data.astype(np.float32)


@pytest.mark.parametrize("kind", ["positive", "negative", "whole", "huge"])
@pytest.mark.parametrize("dtype", ["float32", "int16", "uint8"])
def test_integer_outputs_are_scaled_never_clipped(tmp_path, dtype, kind):
    from mrisr.io import save_volume
    from mrisr.io.storage import choose_storage
    from mrisr.volume import Volume

    data = storage_volume(kind)
    path = tmp_path / "out.nii.gz"
    storage = choose_storage(data, dtype, "nifti", path)
    save_volume(Volume(data, np.eye(4)), path, dtype=storage)
    image = nib.load(path)
    assert image.get_data_dtype() == np.dtype(dtype)
    back = image.get_fdata()
    step = storage.slope if dtype != "float32" else 0.0
    np.testing.assert_allclose(back, data, rtol=0, atol=step / 2 * 1.001 + 1e-3)
    assert back.min() == pytest.approx(data.min(), abs=step / 2 + 1e-3)  # nothing clipped
    assert back.max() == pytest.approx(data.max(), abs=step / 2 + 1e-3)
    if not (dtype == "uint8" and kind == "negative"):
        assert np.all(back[:3] == 0), "a zero background stays exactly zero"
    if kind == "whole" and dtype == "int16":
        assert (storage.slope, storage.inter) == (1.0, 0.0)  # exact


def test_upscale_dtype_shrinks_the_file_records_the_scaling_and_reports_the_size(tmp_path):
    import json

    scan = thick_scan(tmp_path / "scan.nii.gz", shape=(40, 36, 8))
    sizes = {}
    for dtype in ("float32", "int16", "uint8"):
        out = tmp_path / f"{dtype}.nii.gz"
        result = invoke("upscale", scan, "--model", "cubic", "--dtype", dtype, "-o", out)
        assert result.exit_code == 0, result.output
        assert re.search(
            rf"{dtype}\.nii\.gz \([\d.]+ [kM]?B, {dtype}", " ".join(result.output.split())
        )
        record = json.loads((tmp_path / f"{dtype}.json").read_text())["output_storage"]
        assert record["dtype"] == dtype
        assert nib.load(out).get_data_dtype() == np.dtype(dtype)
        sizes[dtype] = nib.load(out).get_fdata()
    reference = sizes["float32"]
    for dtype in ("int16", "uint8"):
        step = float(nib.load(tmp_path / f"{dtype}.nii.gz").dataobj.slope)
        assert np.abs(sizes[dtype] - reference).max() <= step / 2 * 1.001


@pytest.mark.parametrize(
    ("output", "dtype", "words"),
    [
        ("out.mgz", "int16", ["no scale factor", ".nii.gz"]),
        ("out.nrrd", "uint8", ["no scale factor"]),
        ("out.nii.gz", "int8", ["unknown output dtype 'int8'", "float32, int16, uint8"]),
    ],
)
def test_an_output_type_that_cannot_hold_the_result_is_refused_before_work(
    tmp_path, no_voxel_work, output, dtype, words
):
    scan = thick_scan(tmp_path / "scan.nii.gz")
    result = invoke("upscale", scan, "--model", "cubic", "--dtype", dtype, "-o", tmp_path / output)
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_whole_numbers_go_to_formats_without_scaling_and_fractions_are_refused(tmp_path):
    from mrisr.io import save_volume
    from mrisr.volume import Volume

    labels = np.zeros((6, 6, 6), np.float32)
    labels[2:4] = 3
    save_volume(Volume(labels, np.eye(4)), tmp_path / "labels.mgz", dtype=np.uint8)
    assert np.array_equal(nib.load(tmp_path / "labels.mgz").get_fdata(), labels)
    with pytest.raises(OutputError, match="without a scale factor"):
        save_volume(Volume(labels + 0.5, np.eye(4)), tmp_path / "half.mgz", dtype=np.uint8)
    assert not (tmp_path / "half.mgz").exists()


@pytest.mark.parametrize(("low", "high"), [(-13.0, 900.0), (-0.5, 0.7), (-100.0, 1.0), (-5.0, 0.0)])
def test_uint8_with_negative_values_keeps_zero_exactly_zero(low, high):
    """A zero background stays zero (it read back as -0.125 on the PD scan), within half a level."""
    from mrisr.io.storage import choose_storage, stored_values

    data = np.random.default_rng(0).uniform(low, high, (10, 10, 10))
    data[:3] = 0.0
    data.flat[-1], data.flat[-2] = low, high
    storage = choose_storage(data, "uint8", "nifti", "x.nii.gz")
    back = stored_values(data, storage) * storage.slope + storage.inter
    assert np.all(back[:3] == 0.0)
    assert np.abs(back - data).max() <= 0.5 * storage.slope * (1 + 1e-9)
