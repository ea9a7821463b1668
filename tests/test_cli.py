"""The command line end to end: info, simulate, upscale; errors exit non-zero and leave nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mrisr.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def hr_file(shared_data, tmp_path) -> Path:
    source = shared_data / "fixtures" / "spine_t2_1mm.nii.gz"
    target = tmp_path / "hr.nii.gz"
    target.write_bytes(source.read_bytes())
    return target


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("info", "simulate", "upscale", "evaluate", "train", "models", "demo"):
        assert name in result.output


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_simulate_then_upscale_returns_the_original_grid(hr_file, tmp_path, axis):
    hr = nib.load(hr_file)
    # spine_t2 is 60 x 55 x 52: factor 4 divides 60 and 52, and 55 -> 14 -> 56 does not.
    thick = tmp_path / f"thick{axis}.nii.gz"
    result = invoke("simulate", hr_file, "--axis", axis, "--factor", 4, "-o", thick)
    assert result.exit_code == 0, result.output
    result = invoke("upscale", thick, "--model", "cubic", "--factor", 4, "--axis", axis)
    assert result.exit_code == 0, result.output
    output = tmp_path / f"thick{axis}_sr.nii.gz"
    sr = nib.load(output)
    if hr.shape[axis] % 4 == 0:
        assert sr.shape == hr.shape
        np.testing.assert_allclose(sr.affine, hr.affine, atol=1e-5)
    else:
        assert sr.shape[axis] == round(hr.shape[axis] / 4) * 4
    assert sr.get_data_dtype() == np.float32
    assert (float(sr.header["scl_slope"]), float(sr.header["scl_inter"])) in {(1.0, 0.0)} or (
        np.isnan(sr.header["scl_slope"])
    )
    assert int(sr.header["qform_code"]) == int(hr.header["qform_code"])
    assert int(sr.header["sform_code"]) == int(hr.header["sform_code"])
    sidecar = json.loads((tmp_path / f"thick{axis}_sr.json").read_text())
    assert sidecar["axis"] == axis and sidecar["model"]["name"] == "cubic"
    assert sidecar["input"]["sha256"] == digest(thick)
    assert {"mrisr_version", "fusion", "normalisation", "spacing_in_mm", "spacing_out_mm"} <= set(
        sidecar
    )


def test_output_geometry_reads_the_same_in_nibabel_and_simpleitk(hr_file, tmp_path):
    import SimpleITK as sitk

    thick = tmp_path / "thick.nii.gz"
    assert invoke("simulate", hr_file, "--axis", 2, "--factor", 3.3, "-o", thick).exit_code == 0
    assert invoke("upscale", thick, "--model", "cubic").exit_code == 0
    output = tmp_path / "thick_sr.nii.gz"
    affine = nib.load(output).affine
    image = sitk.ReadImage(str(output))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    direction = lps_to_ras @ np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction * np.array(image.GetSpacing()), affine[:3, :3], atol=1e-5)
    np.testing.assert_allclose(lps_to_ras @ np.array(image.GetOrigin()), affine[:3, 3], atol=1e-4)


def test_info_reports_the_thick_axis_and_plan(shared_data):
    result = invoke("info", shared_data / "thick" / "spine_t2star_7.5mm.nii.gz", "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["axis"] == 2
    assert facts["factor"] == pytest.approx(15.0)
    assert facts["shape_out"][2] == 135


def test_existing_output_is_refused_and_left_untouched(hr_file, tmp_path):
    thick = tmp_path / "thick.nii.gz"
    invoke("simulate", hr_file, "--axis", 2, "--factor", 4, "-o", thick)
    existing = tmp_path / "thick_sr.nii.gz"
    existing.write_bytes(b"precious")
    result = invoke("upscale", thick, "--model", "cubic")
    assert result.exit_code == 2
    assert "already exists" in result.output and "--overwrite" in result.output
    assert existing.read_bytes() == b"precious"
    assert not (tmp_path / "thick_sr.json").exists()
    assert invoke("upscale", thick, "--model", "cubic", "--overwrite").exit_code == 0
    assert nib.load(existing).shape == (60, 55, 52)


def test_output_equal_to_input_is_refused(hr_file):
    before = digest(hr_file)
    result = invoke(
        "upscale", hr_file, "--model", "cubic", "--axis", 2, "--factor", 2, "-o", hr_file
    )
    assert result.exit_code == 2 and "input" in result.output
    assert digest(hr_file) == before


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: d / "missing.nii.gz", "does not exist"),
        (lambda d: write(d / "empty.nii.gz", b""), "empty"),
        (lambda d: write(d / "junk.nii", b"x" * 400), "NIfTI"),
    ],
)
def test_bad_input_exits_non_zero_names_the_file_and_leaves_no_output(tmp_path, make, words):
    path = make(tmp_path)
    result = invoke("upscale", path, "--model", "cubic")
    assert result.exit_code == 2
    assert path.name in result.output and words in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in [path] if p.exists()
    )


def test_isotropic_input_gets_a_fix(hr_file, tmp_path):
    result = invoke("upscale", hr_file, "--model", "cubic")
    assert result.exit_code == 2
    assert "isotropic" in result.output and "--axis" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["hr.nii.gz"]


def test_a_failing_model_leaves_no_output(hr_file, tmp_path, monkeypatch):
    from mrisr.interpolation import CubicSliceModel

    def broken(self, stack, out_rows, progress=None):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(CubicSliceModel, "upscale_slices", broken)
    result = invoke("upscale", hr_file, "--model", "cubic", "--axis", 2, "--factor", 2)
    assert result.exit_code != 0
    assert [p.name for p in tmp_path.iterdir()] == ["hr.nii.gz"]


def test_an_unwritable_output_extension_is_refused_before_any_work(hr_file, tmp_path, monkeypatch):
    from mrisr.interpolation import CubicSliceModel

    def never(self, stack, out_rows, progress=None):
        raise AssertionError("the model ran although the output could not be written")

    monkeypatch.setattr(CubicSliceModel, "upscale_slices", never)
    before = digest(hr_file)
    result = invoke("upscale", hr_file, "--model", "cubic", "--axis", 2, "-o", tmp_path / "sr.tif")
    assert result.exit_code == 2
    assert "sr.tif" in result.output and "does not write (.tif)" in result.output
    assert "scan_sr.nii.gz" in result.output  # the fix
    assert [p.name for p in tmp_path.iterdir()] == ["hr.nii.gz"]
    assert digest(hr_file) == before


def test_the_input_s_json_sidecar_is_never_written_over(hr_file, tmp_path):
    # hr.nii.gz -o hr.mgz would put its sidecar at hr.json: the input's own BIDS sidecar.
    bids = tmp_path / "hr.json"
    bids.write_text('{"SliceThickness": 1.0}')
    before = bids.read_bytes()
    result = invoke(
        "upscale", hr_file, "--model", "cubic", "--axis", 2, "--factor", 2,
        "-o", tmp_path / "hr.mgz", "--overwrite",
    )  # fmt: skip
    assert result.exit_code == 2 and "hr.json" in result.output
    assert bids.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr.json", "hr.nii.gz"]


def test_demo_refuses_a_file_as_its_folder(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["demo", "--out", str(blocker), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "is a file, not a folder: it cannot be the demo folder" in result.output
    assert blocker.read_text() == "x"


# ------------------------------------------------- options that change nothing


def thick_scan(folder: Path) -> Path:
    """A small 4 mm thick-slice scan (1 x 1 x 4 mm voxels)."""
    data = np.random.default_rng(0).random((16, 16, 6)).astype(np.float32) + 1
    path = folder / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 4.0, 1.0])), str(path))
    return path


CUBIC = ("--model", "cubic")
NO_NETWORK = "when only cubic interpolation runs (no network --model)"


@pytest.mark.parametrize(
    ("command", "extra", "words"),
    [
        ("upscale", [*CUBIC, "--precision", "bfloat16"], ["--precision bfloat16", "--model cubic"]),
        ("upscale", [*CUBIC, "--device", "cpu"], ["--device cpu has no effect with --model cubic"]),
        ("upscale", [*CUBIC, "--threads", "1"], ["--threads 1 has no effect with --model cubic"]),
        ("upscale", [*CUBIC, "--batch-size", "4"], ["--batch-size 4 has no effect"]),
        ("upscale", [*CUBIC, "--force"], ["--force has no effect with --model cubic"]),
        (
            "upscale",
            [*CUBIC, "--precision", "float32", "--threads", "2"],
            ["--threads 2, --precision float32 have no effect", "drop --threads, --precision,"],
        ),
        (
            "upscale",
            ["--consistency-profile", "gaussian", "--no-consistency"],
            ["--consistency-profile gaussian has no effect with --no-consistency"],
        ),
        (
            "upscale",
            ["--adapt", "--adapt-steps", "5", "--adapt-seconds", "3"],
            ["--adapt-steps 5 and --adapt-seconds 3 both given", "keep one of"],
        ),
        ("bids", [*CUBIC, "--precision", "float32"], ["--precision float32", "--model cubic"]),
        (
            "bids",
            ["--consistency-profile", "gaussian", "--no-consistency"],
            ["--consistency-profile gaussian", "--no-consistency"],
        ),
        ("evaluate", ["--device", "cpu"], ["--device cpu has no effect", NO_NETWORK]),
        ("evaluate", [*CUBIC, "--force"], ["--force has no effect", NO_NETWORK]),
        ("evaluate", ["--threads", "1"], ["--threads 1 has no effect", NO_NETWORK]),
        ("demo", [*CUBIC, "--device", "cpu"], ["--device cpu has no effect with --model cubic"]),
    ],
)
def test_options_that_another_option_makes_ineffective_are_refused_before_work(
    tmp_path, command, extra, words
):
    scan = thick_scan(tmp_path)
    places = {
        "upscale": [scan],
        "bids": [tmp_path, tmp_path / "derivatives"],
        "evaluate": [scan],
        "demo": ["--out", tmp_path / "demo"],
    }
    before = sorted(tmp_path.iterdir())
    result = invoke(command, *places[command], *extra)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for word in [*words, "Fix: drop" if "both given" not in message else "Fix: keep"]:
        assert word in message, message
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_options_that_do_something_still_run(tmp_path):
    scan = thick_scan(tmp_path)
    result = invoke("upscale", scan, *CUBIC, "--consistency-profile", "gaussian", "--consistency")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "scan_sr.json").read_text())
    assert record["faithfulness"]["residual_profile"] == "gaussian"


# ----------------------------------------------------------------- empty paths


def tiny_volume(path: Path) -> Path:
    """A 1 mm volume for `mrisr train`."""
    data = np.random.default_rng(1).random((24, 24, 24)).astype(np.float32) + 1
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


QUICK_TRAIN = (
    *("--steps", "1", "--gan-steps", "0", "--patch-size", "16", "--batch-size", "2"),
    *("--val-crop", "16", "--device", "cpu", "--threads", "1", "--quiet"),
)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["upscale", "scan.nii.gz", "-o", ""], "'-o' / '--output'"),
        (["upscale", ""], "'scans'"),
        (["upscale", "scan.nii.gz", "--summary", ""], "'--summary'"),
        (["upscale", "scan.nii.gz", "--adapt", "--save-adapted", ""], "'--save-adapted'"),
        (["upscale", "scan.nii.gz", "--model", ""], "--model is empty"),
        (["simulate", "hr.nii.gz", "--axis", "2", "--factor", "2", "-o", ""], "'-o' / '--output'"),
        (["simulate", "", "--axis", "2", "--factor", "2", "-o", "x.nii.gz"], "'VOLUME'"),
        (["info", ""], "'scan'"),
        (["evaluate", ""], "'scan'"),
        (["evaluate", "hr.nii.gz", "--figure", ""], "'--figure'"),
        (["demo", "--out", ""], "'--out'"),
        (["bids", "", "derivatives"], "'bids_dir'"),
        (["bids", ".", ""], "'out_dir'"),
        (["bids", ".", "derivatives", "--summary", ""], "'--summary'"),
        (["train", "--volumes", "vols", "--out", "", *QUICK_TRAIN], "'--out'"),
        (["train", "--volumes", "", "--out", "run", *QUICK_TRAIN], "'--volumes'"),
        (
            ["train", "--volumes", "vols", "--out", "run", "--init-from", "", *QUICK_TRAIN],
            "--init-from (model.init_from) is an empty path",
        ),
        (
            ["train", "--volumes", "vols", "--out", "run", "--perceptual-weights", ""]
            + list(QUICK_TRAIN),
            "--perceptual-weights (loss.perceptual_weights) is an empty path",
        ),
    ],
)
def test_an_empty_path_is_refused_before_any_work_instead_of_meaning_the_current_folder(
    tmp_path, monkeypatch, args, named
):
    # The current folder holds what an empty path would have silently stood for.
    thick_scan(tmp_path)
    tiny_volume(tmp_path / "hr.nii.gz")
    (tmp_path / "vols").mkdir()
    tiny_volume(tmp_path / "vols" / "v1.nii.gz")
    tiny_volume(tmp_path / "vols" / "v2.nii.gz")
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.replace("│", " ").split())
    assert named in message, message
    assert "empty" in message and "Fix:" in message, message
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, here or anywhere


def test_empty_paths_in_settings_are_refused_by_the_api_too(tmp_path):
    from mrisr.config import TrainConfig, with_overrides
    from mrisr.errors import ConfigError
    from mrisr.models import ModelRequest, load_slice_model

    for key in ("out", "data.volumes", "model.init_from", "loss.perceptual_weights"):
        with pytest.raises(ConfigError, match=rf"--\S+ \({key}\) is an empty path"):
            with_overrides(TrainConfig(), {key: " "})
    with pytest.raises(ConfigError, match="--model is empty"):
        ModelRequest("")
    with pytest.raises(ConfigError, match="--model is empty"):
        load_slice_model("", factor=4.0)


def test_ctrl_c_says_what_was_left_and_exits_130(tmp_path, monkeypatch):
    """Not a silent exit: the user learns that no half-written file stays."""
    import mrisr.upscale

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mrisr.upscale, "upscale_file", interrupted)
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"")
    result = CliRunner().invoke(app, ["upscale", str(scan)])
    assert result.exit_code == 130, result.output
    assert "interrupted: files that were not complete were removed" in result.output


def test_results_on_stdout_are_not_wrapped_when_piped(shared_data, tmp_path):
    """`mrisr info scan | grep` must see each fact whole on its line."""
    deep = tmp_path / ("a" * 60) / ("b" * 60)
    deep.mkdir(parents=True)
    scan = deep / "spine_t2_thick.nii.gz"
    from mrisr import load_volume, save_volume, simulate_volume

    save_volume(
        simulate_volume(load_volume(shared_data / "fixtures" / "spine_t2_1mm.nii.gz"), 2, 4), scan
    )
    result = CliRunner().invoke(app, ["info", str(scan)])
    assert result.exit_code == 0, result.output
    assert str(scan) in result.stdout.splitlines()[0]


# ------------------------------------------------ bad values name the fix


def bad_value_files(folder: Path) -> None:
    """What the commands of the test below read, under ``folder`` (the current folder)."""
    thick_scan(folder)
    tiny_volume(folder / "hr.nii.gz")
    (folder / "vols").mkdir()
    for name in ("v1", "v2"):
        tiny_volume(folder / "vols" / f"{name}.nii.gz")
    # Perceptual-loss weights that are not torchvision's VGG19.
    import torch
    from safetensors.torch import save_file

    save_file({"classifier.0.weight": torch.zeros(2, 2)}, str(folder / "no_vgg.safetensors"))
    save_file({"features.0.weight": torch.zeros(2, 3, 3, 3)}, str(folder / "small.safetensors"))
    torch.save([torch.zeros(2)], folder / "list.pt")


#: A training run with a GAN stage (the perceptual loss is built for it) on ``vols``.
GAN_TRAIN = (
    *("train", "--volumes", "vols", "--out", "run", "--steps", "1", "--gan-steps", "1"),
    *("--patch-size", "32", "--batch-size", "2", "--val-crop", "16", "--device", "cpu", "--quiet"),
)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["upscale", "scan.nii.gz", *CUBIC, "--fusion", "max"],
            ["unknown fusion 'max'", "mean, fba", "Fix: pass --fusion mean"],
        ),
        (
            ["evaluate", "hr.nii.gz", "--fusion", "median"],
            ["unknown fusion 'median'", "mean, fba", "Fix: pass --fusion mean"],
        ),
        (
            ["bids", ".", "derivatives", *CUBIC, "--fusion", "max"],
            ["unknown fusion 'max'", "Fix: pass --fusion mean"],
        ),
        (
            ["train", "--volumes", "vols", "--out", "run", *QUICK_TRAIN, "--axes", "0,x"],
            ["--axes must be axis numbers", "'0,x'", "Fix: pass e.g. --axes 0,1,2"],
        ),
        (
            ["train", "--volumes", "vols", "--out", "run", "--steps", "1", "--device", "gpu"],
            ["device must be auto, cpu, cuda or cuda:N, got 'gpu'", "Fix: pass --device auto"],
        ),
        (
            [*GAN_TRAIN, "--perceptual-weights", "no_vgg.safetensors"],
            ["no_vgg.safetensors: holds no VGG conv weights", "Fix: pass torchvision's vgg19"],
        ),
        (
            [*GAN_TRAIN, "--perceptual-weights", "small.safetensors"],
            ["small.safetensors: does not fit VGG19", "Fix: pass torchvision's vgg19"],
        ),
        (
            [*GAN_TRAIN, "--perceptual-weights", "list.pt"],
            ["list.pt: holds a list, not a state dict", "Fix: pass torchvision's vgg19"],
        ),
        (
            ["upscale", "scan.nii.gz", "hr.nii.gz", *CUBIC, "-o", "x" * 300],
            ["has a name of 300 bytes", "longer than the 255 bytes", "Fix: shorten it", "-o"],
        ),
        (  # one scan and --shard: the same refusal, not an OSError from is_dir()
            ["upscale", "scan.nii.gz", *CUBIC, "--shard", "1/1", "-o", "y" * 300 + ".nii.gz"],
            ["has a name of 307 bytes", "Fix: shorten it", "-o"],
        ),
        (
            ["train", "--volumes", "vols", "--out", "z" * 256],
            ["has a name of 256 bytes", "Fix: shorten it", "--out"],
        ),
    ],
)
def test_a_bad_option_value_is_refused_with_the_fix(tmp_path, monkeypatch, args, words):
    bad_value_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.replace("│", " ").split())
    for word in words:
        assert word in message, message
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_sigterm_while_writing_removes_the_temporary_files_and_exits_143(
    shared_data, tmp_path, monkeypatch
):
    """A batch scheduler pre-empting a job sends SIGTERM: as Ctrl-C, nothing half-written stays."""
    import os
    import signal

    import mrisr.io.load_save
    from mrisr import load_volume, save_volume, simulate_volume

    scan = tmp_path / "scan.nii.gz"
    save_volume(
        simulate_volume(load_volume(shared_data / "fixtures" / "spine_t2_1mm.nii.gz"), 2, 4), scan
    )
    real = mrisr.io.load_save.write_nifti

    def write_then_terminated(*args, **kwargs):
        real(*args, **kwargs)  # the temporary file exists now
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(mrisr.io.load_save, "write_nifti", write_then_terminated)
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(app, ["upscale", str(scan), "--model", "cubic"])
    assert result.exit_code == 143, result.output
    assert "terminated: files that were not complete were removed" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
