"""Per-scan adaptation: pairs from the scan's own slices, the training step, never worse, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

import mrisr.adapt as adapt
from mrisr.adapt import (
    InPlanePairs,
    ScanProfile,
    adapt_model,
    check_adaptable,
    save_adapted,
    scan_profile,
)
from mrisr.checkpoint import save_model
from mrisr.cli import app
from mrisr.errors import ConfigError, InputError
from mrisr.inference import GeneratorSliceModel
from mrisr.interpolation import CubicSliceModel
from mrisr.io import save_volume
from mrisr.networks import build_generator
from mrisr.simulate import simulate_thick_slices
from mrisr.upscale import plan_upscale
from mrisr.volume import Volume

DESCRIPTION = {"factor_range": [2.0, 6.0], "recipe": "esrgan"}


def _scan(shape=(40, 36, 10), spacing=(1.0, 1.0, 4.0), seed=0) -> Volume:
    """A smooth blobby thick-slice scan with a zero background border."""
    rng = np.random.default_rng(seed)
    data = gaussian_filter(rng.normal(size=shape), (2, 2, 0.6)).astype(np.float32)
    data = np.clip(data * 5 + 1, 0, None)
    data[:3], data[-3:] = 0, 0
    return Volume(data, np.diag([*spacing, 1.0]), None)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    generator = build_generator("rrdbnet", size="small")
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_model(path, generator, name="rrdbnet", description=DESCRIPTION)


@pytest.fixture
def model(model_file) -> GeneratorSliceModel:
    return GeneratorSliceModel.from_file(model_file, device="cpu")


def _weights(generator) -> list[np.ndarray]:
    return [t.detach().cpu().numpy().copy() for t in generator.state_dict().values()]


# ------------------------------------------------------------------- pairs


def test_pairs_match_the_forward_model_and_hold_out_disjoint_slices():
    scan = _scan()
    plan = plan_upscale(scan)
    pairs = InPlanePairs(scan, plan, ScanProfile("mean", 4.0, 4.0, "given"))
    assert set(pairs.train_slices).isdisjoint(pairs.held_out_slices)
    assert pairs.held_out_slices
    direction = pairs.directions[0]
    assert direction.patch / direction.rows_lr == pytest.approx(4.0)
    # An aligned patch inside the slice: LR = block means of the HR rows, as simulate does.
    lr, hr = direction.pair(pairs.train_slices[0], 8, 0)
    expected = simulate_thick_slices(hr[:, :, None], 0, 4.0)[:, :, 0]
    np.testing.assert_allclose(lr, expected, atol=1e-5)
    lr_batch, hr_batch = pairs.batch(0, 3)
    assert lr_batch.shape == (3, 1, direction.rows_lr, direction.patch)
    assert hr_batch.shape == (3, 1, direction.patch, direction.patch)
    again = pairs.batch(0, 3)
    np.testing.assert_array_equal(again[0], lr_batch)
    # Steps alternate the in-plane axis used as rows.
    assert pairs.batch(1, 1)[1].shape[-1] == pairs.directions[1].patch


@pytest.mark.parametrize(
    ("thickness", "meta", "source", "fwhm"),
    [(3.0, {}, "given", 3.0), (None, {"slice_thickness_mm": 3.5}, "header", 3.5)],
)
def test_scan_profile_sources(thickness, meta, source, fwhm):
    scan = _scan()
    scan = scan.with_data(scan.data, scan.affine, meta=meta)
    profile = scan_profile(scan, plan_upscale(scan), thickness)
    assert (profile.source, profile.fwhm_mm, profile.spacing_mm) == (source, fwhm, 4.0)


def test_scan_profile_is_estimated_when_nothing_says_it():
    profile = scan_profile(_scan(), plan_upscale(_scan()))
    assert profile.source in ("estimated", "spacing")
    assert profile.to_dict()["estimate"] is not None


@pytest.mark.parametrize(
    ("ratio", "source", "used"), [(0.5, "spacing", 1.0), (1.2, "estimated", 1.2)]
)
def test_only_plausible_image_estimates_are_used(monkeypatch, ratio, source, used):
    import mrisr.slice_profile as slice_profile

    def fake(volume, axis=None, *, profile=None):
        return slice_profile.SliceProfileEstimate("mean", ratio * 4.0, 4.0, ratio, "image", 0.0)

    monkeypatch.setattr(slice_profile, "estimate_slice_profile", fake)
    chosen = scan_profile(_scan(), plan_upscale(_scan()))
    assert chosen.source == source
    assert chosen.fwhm_over_spacing == pytest.approx(used)
    assert chosen.estimate["fwhm_over_spacing"] == ratio


# --------------------------------------------------------------- adaptation


def test_adaptation_is_deterministic_and_leaves_the_model_alone(model):
    scan = _scan()
    original = _weights(model.generator)
    profile = ScanProfile("mean", 4.0, 4.0, "given")
    first = adapt_model(scan, model, profile=profile, steps=3, seed=1)
    second = adapt_model(scan, model, profile=profile, steps=3, seed=1)
    other = adapt_model(scan, model, profile=profile, steps=3, seed=2)
    assert first.record["adapted_weights_sha256"] == second.record["adapted_weights_sha256"]
    assert first.record["held_out_psnr_after"] == second.record["held_out_psnr_after"]
    assert first.record["adapted_weights_sha256"] != other.record["adapted_weights_sha256"]
    for before, after in zip(original, _weights(model.generator), strict=True):
        np.testing.assert_array_equal(before, after)
    record = first.record
    assert record["steps"] == 3 and record["budget"] == {"steps": 3}
    assert record["slice_profile"]["source"] == "given"
    json.dumps(record)  # JSON-ready


def test_worse_weights_are_not_kept(model, monkeypatch):
    monkeypatch.setattr(adapt, "LEARNING_RATE", 1.0)  # wrecks the network
    result = adapt_model(
        _scan(), model, profile=ScanProfile("mean", 4.0, 4.0, "given"), steps=3, seed=0
    )
    assert not result.kept and result.model is model
    assert "kept the original model" in result.record["reason"]


def test_better_weights_are_kept_and_saved_as_a_normal_model(model, monkeypatch, tmp_path):
    monkeypatch.setattr(adapt, "KEEP_MARGIN_DB", -math.inf)  # keep whatever came out
    monkeypatch.setattr(adapt, "through_plane_residual", lambda *args: 0.0)
    scan = _scan()
    result = adapt_model(scan, model, profile=ScanProfile("mean", 4.0, 4.0, "given"), steps=2)
    assert result.kept and result.model is not model
    assert "measured slices are reproduced better" in result.record["reason"]
    assert result.model.describe()["weights_sha256"] == result.record["adapted_weights_sha256"]
    path = save_adapted(result, tmp_path / "adapted.safetensors")
    reloaded = GeneratorSliceModel.from_file(path, device="cpu")
    stack = np.random.default_rng(0).random((2, 5, 12)).astype(np.float32)
    np.testing.assert_allclose(
        reloaded.upscale_slices(stack, 20), result.model.upscale_slices(stack, 20), atol=1e-6
    )
    assert reloaded.description["adaptation"]["kept"] is True


class RepeatRows(CubicSliceModel):
    """Each thick row repeated: its box re-simulation is exactly the input."""

    def upscale_slices(self, stack, out_rows, progress=None):
        return np.repeat(stack, out_rows // stack.shape[1], axis=1).astype(np.float32)


class Zeros(CubicSliceModel):
    def upscale_slices(self, stack, out_rows, progress=None):
        return np.zeros((stack.shape[0], out_rows, stack.shape[2]), np.float32)


def test_the_through_plane_residual_measures_agreement_with_the_measured_slices():
    from mrisr.intensity import fit_normalisation

    scan = _scan()  # 4 mm slices, 1 mm in plane: 4x, contiguous
    plan = plan_upscale(scan)
    assert adapt.through_plane_residual(RepeatRows(), scan, plan) < 1e-6
    normalised = fit_normalisation(scan.data).apply(scan.data)
    nothing = adapt.through_plane_residual(Zeros(), scan, plan)
    assert nothing == pytest.approx(float(np.sqrt(np.mean(normalised**2))), rel=1e-6)
    assert 0 < adapt.through_plane_residual(CubicSliceModel(), scan, plan) < nothing


def test_a_held_out_gain_that_fits_the_measured_slices_worse_is_not_kept(model, monkeypatch):
    monkeypatch.setattr(adapt, "KEEP_MARGIN_DB", -math.inf)  # the held-out check passes
    # Worse agreement with the measured slices for the adapted network than the original.
    monkeypatch.setattr(
        adapt, "through_plane_residual", lambda m, *args: 0.01 if m is model else 0.02
    )
    result = adapt_model(
        _scan(), model, profile=ScanProfile("mean", 4.0, 4.0, "given"), steps=2, seed=0
    )
    assert not result.kept and result.model is model
    assert result.record["through_plane_residual"] == {"before": 0.01, "after": 0.02}
    assert "does not agree better with the measured slices" in result.record["reason"]


@pytest.mark.parametrize(("after", "kept"), [(0.0096, False), (0.0095, True), (0.005, True)])
def test_the_measured_slices_must_be_reproduced_clearly_better(model, monkeypatch, after, kept):
    monkeypatch.setattr(adapt, "KEEP_MARGIN_DB", -math.inf)  # the held-out check passes
    monkeypatch.setattr(
        adapt, "through_plane_residual", lambda m, *args: 0.01 if m is model else after
    )
    result = adapt_model(
        _scan(), model, profile=ScanProfile("mean", 4.0, 4.0, "given"), steps=2, seed=0
    )
    assert result.kept == kept  # a 4 % cut is a tie; 5 % is the margin


def test_non_finite_weights_are_never_saved(model, monkeypatch, tmp_path):
    monkeypatch.setattr(adapt, "KEEP_MARGIN_DB", -math.inf)
    result = adapt_model(_scan(), model, profile=ScanProfile("mean", 4.0, 4.0, "given"), steps=1)
    with torch.no_grad():
        next(result.model.generator.parameters()).fill_(float("nan"))
    target = tmp_path / "bad.safetensors"
    with pytest.raises(ConfigError, match="non-finite"):
        save_adapted(result, target)
    assert not target.exists()


def test_save_adapted_checks_first_and_never_writes_over_a_file_unasked(
    model, model_file, tmp_path, caplog
):
    from mrisr.errors import OutputError

    result = adapt_model(_scan(), model, profile=ScanProfile("mean", 4.0, 4.0, "given"), steps=1)
    assert result.original is model
    # A wrong name is refused before anything is logged about the file.
    with caplog.at_level("WARNING"), pytest.raises(ConfigError, match=".safetensors"):
        save_adapted(result, tmp_path / "x.pt")
    assert "holds the original" not in caplog.text and not (tmp_path / "x.pt").exists()
    target = tmp_path / "adapted.safetensors"
    target.write_bytes(b"someone's file")
    with pytest.raises(OutputError, match="already exists.*overwrite=True"):
        save_adapted(result, target)
    assert target.read_bytes() == b"someone's file"
    assert save_adapted(result, target, overwrite=True) == target.absolute()
    assert GeneratorSliceModel.from_file(target, device="cpu").description["adaptation"]
    # The model adapted from is an input: not even overwrite=True replaces it.
    before = model_file.read_bytes()
    with pytest.raises(OutputError, match="model file adapted from: an input"):
        save_adapted(result, model_file, overwrite=True)
    assert model_file.read_bytes() == before


def test_not_kept_is_logged_after_the_file_is_written(model, tmp_path, caplog):
    result = adapt_model(_scan(), model, profile=ScanProfile("mean", 4.0, 4.0, "given"), steps=1)
    result = adapt.AdaptationResult(result.original, False, result.record, result.original)
    target = tmp_path / "kept_not.safetensors"
    with caplog.at_level("WARNING"):
        save_adapted(result, target)
    assert target.is_file() and f"{target} holds the original model's weights" in caplog.text


@pytest.mark.parametrize(
    ("budget", "error"),
    [
        ({"steps": 0}, ConfigError),
        ({"steps": -3}, ConfigError),
        ({"seconds": 0.0}, ConfigError),
        ({"seconds": -1.0}, ConfigError),
        ({"seconds": float("nan")}, ConfigError),
    ],
)
def test_bad_budgets_are_refused(model, budget, error):
    with pytest.raises(error, match="budget"):
        adapt_model(_scan(), model, **budget)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"steps": 3, "seconds": 3}, "budget given both in steps \\(3\\) and in seconds"),
        ({"steps": "a"}, "at least 1 step, got 'a'"),
        ({"steps": True}, "at least 1 step, got True"),
        ({"seconds": "a"}, "positive number of seconds, got 'a'"),
        ({"seconds": True}, "positive number of seconds, got True"),
        ({"seed": "a"}, "seed must be a whole number from 0 to 2\\*\\*64 - 1, got 'a'"),
        ({"seed": -1}, "seed must be a whole number .*got -1"),
        ({"seed": 1.5}, "seed must be a whole number .*got 1.5"),
        ({"seed": 2**64}, "seed must be a whole number"),
        ({"save_path": 3}, "save_path must be a file path or None, got 3"),
    ],
)
def test_settings_of_the_wrong_kind_are_config_errors_with_a_fix(model, settings, words):
    from mrisr.adapt import AdaptSettings

    with pytest.raises(ConfigError, match=words) as caught:
        AdaptSettings(**settings)
    assert caught.value.fix
    # The API's keywords go through the same check, before any work.
    budget = {k: v for k, v in settings.items() if k != "save_path"}
    if budget:
        with pytest.raises(ConfigError, match=words):
            adapt_model(_scan(), model, **budget)


def test_a_budget_keyword_replaces_the_settings_budget(model):
    from mrisr.adapt import AdaptSettings

    result = adapt_model(_scan(), model, settings=AdaptSettings(seconds=60), steps=1)
    assert result.record["budget"] == {"steps": 1}
    with pytest.raises(ConfigError, match="settings must be an AdaptSettings or None"):
        adapt_model(_scan(), model, settings={"steps": 1})


def test_upscale_file_refuses_adapt_that_is_not_adapt_settings(tmp_path):
    from mrisr.upscale import upscale_file

    scan = _scan_file(tmp_path)
    for value in (True, {"steps": 3}):
        with pytest.raises(ConfigError, match="adapt must be an AdaptSettings or None") as caught:
            upscale_file(scan, adapt=value)
        assert "adapt=AdaptSettings()" in caught.value.fix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_adapt_model_takes_a_model_value_as_upscale_does(model_file):
    result = adapt_model(_scan(), str(model_file), steps=1)  # a --model value: loaded here
    assert result.record["steps"] == 1 and result.model.description["factor_range"] == [2.0, 6.0]
    with pytest.raises(ConfigError, match="model 'cubic' has no network") as caught:
        adapt_model(_scan(), "cubic", steps=1)
    assert "model=None" in caught.value.fix and "--model" in caught.value.fix
    with pytest.raises(ConfigError, match="model 5 \\(int\\) has no network"):
        adapt_model(_scan(), 5, steps=1)


def test_a_misspelt_budget_is_refused_with_the_fix(model):
    with pytest.raises(ConfigError, match="unknown adaptation setting.*stepz.*Fix: pass steps="):
        adapt_model(_scan(), model, stepz=3)


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [
        ((12, 12, 6), (1.0, 1.0, 4.0)),
        ((40, 36, 1), (1.0, 1.0, 4.0)),
        ((40, 36, 2), (1.0, 1.0, 4.0)),  # no slice left to hold out
        ((20, 20, 3), (1, 1, 15.0)),
    ],
)
def test_scans_too_small_are_refused(model, shape, spacing):
    scan = _scan(shape, spacing)
    with pytest.raises(InputError, match="too small"):
        adapt_model(scan, model, plan=plan_upscale(scan, axis=2), steps=1)


def test_a_scan_with_signal_in_two_slices_only_is_refused_before_any_pairs(model):
    scan = _scan((40, 36, 8))
    data = scan.data.copy()
    data[:, :, 2:] = 0  # 8 slices, 2 of them with signal: none could be held out
    scan = scan.with_data(data, scan.affine)
    with pytest.raises(InputError, match="only 2 of its 8 slices along axis 2 hold signal"):
        check_adaptable(scan, plan_upscale(scan))
    with pytest.raises(InputError, match="too small"):
        adapt_model(scan, model, steps=1)


def test_cubic_cannot_be_adapted():
    with pytest.raises(ConfigError, match="no network"):
        adapt_model(_scan(), CubicSliceModel(), steps=1)


# ---------------------------------------------------------------------- CLI

runner = CliRunner()


def _scan_file(tmp_path: Path) -> Path:
    path = tmp_path / "scan.nii.gz"
    save_volume(_scan(), path)
    return path


def test_a_save_path_is_stored_absolute(tmp_path, monkeypatch):
    from mrisr.adapt import AdaptSettings

    monkeypatch.chdir(tmp_path)
    assert (
        AdaptSettings(save_path="p.safetensors").save_path == tmp_path.absolute() / "p.safetensors"
    )
    assert AdaptSettings(save_path=None).save_path is None


def test_a_budget_over_the_limit_is_refused_with_a_fix(model):
    from mrisr.adapt import MAX_SECONDS, MAX_STEPS, AdaptSettings

    assert AdaptSettings(steps=MAX_STEPS).budget == {"steps": MAX_STEPS}
    assert AdaptSettings(seconds=MAX_SECONDS).budget == {"seconds": MAX_SECONDS}
    with pytest.raises(ConfigError, match="1000000000 steps is over the limit of 10,000") as caught:
        AdaptSettings(steps=10**9)
    assert "--adapt-steps 10000 or fewer" in caught.value.fix
    with pytest.raises(ConfigError, match="over the limit of 3600") as caught:
        AdaptSettings(seconds=1e7)
    assert "--adapt-seconds 3600 or less" in caught.value.fix
    # The API's keyword budget goes through the same check, before any step.
    with pytest.raises(ConfigError, match="over the limit"):
        adapt_model(_scan(), model, steps=MAX_STEPS + 1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--adapt", "--model", "cubic"], "cubic"),
        (["--adapt", "--adapt-steps", "0"], "budget"),
        (["--adapt", "--adapt-seconds", "-5"], "budget"),
        (["--adapt", "--adapt-steps", str(10**9)], "over the limit of 10,000"),
        (["--adapt", "--adapt-seconds", "1e7"], "over the limit of 3600"),
        (["--adapt-steps", "3"], "without --adapt"),
        (["--adapt", "--save-adapted", "x.pt"], ".safetensors"),
    ],
)
def test_cli_refuses_bad_adaptation_before_work(tmp_path, extra, message):
    scan = _scan_file(tmp_path)
    before = sorted(tmp_path.iterdir())
    result = runner.invoke(app, ["upscale", str(scan), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert sorted(tmp_path.iterdir()) == before


def test_cli_refuses_a_scan_too_small_to_adapt(tmp_path, model_file):
    path = tmp_path / "small.nii.gz"
    save_volume(_scan((12, 12, 6)), path)
    result = runner.invoke(app, ["upscale", str(path), "--adapt", "--model", str(model_file)])
    assert result.exit_code == 2 and "too small" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.nii.gz"]


def test_cli_refuses_a_two_slice_scan_before_any_work(tmp_path, model_file):
    path = tmp_path / "two.nii.gz"
    save_volume(_scan((40, 36, 2)), path)
    result = runner.invoke(app, ["upscale", str(path), "--adapt", "--model", str(model_file)])
    assert result.exit_code == 2, result.output
    assert f"{path}: is too small to adapt a model to: it has 2 slice(s)" in result.output
    assert "3 or more slices" in result.output and "Fix: upscale without --adapt" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.nii.gz"]


@pytest.mark.parametrize(
    ("extra", "selected", "fix"),
    [
        (["--summary", "s.json"], "--summary", "drop --summary to adapt this scan alone"),
        (["--shard", "1/1"], "--shard", "drop --shard to adapt this scan alone"),
        (["SECOND"], "2 scans", "Fix: adapt on one scan of the protocol with --adapt"),
    ],
)
def test_cli_says_adaptation_is_not_available_in_cohort_mode(tmp_path, extra, selected, fix):
    scan = _scan_file(tmp_path)
    extra = [str(scan) if e == "SECOND" else e for e in extra]
    before = sorted(tmp_path.iterdir())
    result = runner.invoke(app, ["upscale", str(scan), "--adapt", "--adapt-steps", "2", *extra])
    assert result.exit_code == 2, result.output
    assert f"not available in cohort mode, selected here by {selected};" in result.output
    assert fix in result.output and "then upscale the rest with --model PATH" in result.output
    assert "scans in this process" not in result.output  # refused before the cohort starts
    assert sorted(tmp_path.iterdir()) == before


def test_cli_adapts_records_and_saves_a_reusable_model(tmp_path, model_file):
    scan = _scan_file(tmp_path)
    saved = tmp_path / "protocol.safetensors"
    args = ["upscale", str(scan), "--model", str(model_file), "--device", "cpu"]
    result = runner.invoke(
        app, [*args, "--adapt", "--adapt-steps", "2", "--save-adapted", str(saved)]
    )
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "scan_sr.json").read_text())
    record = sidecar["adaptation"]
    assert record["steps"] == 2 and record["budget"] == {"steps": 2}
    assert record["slice_profile"]["source"] in ("estimated", "spacing")
    assert {"held_out_psnr_before", "held_out_psnr_after", "kept"} <= set(record)
    assert saved.is_file()
    again = runner.invoke(app, [*args, "--model", str(saved), "-o", str(tmp_path / "b.nii.gz")])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("save", ["MODEL", "LINK", "BUNDLED"])
def test_cli_never_saves_the_adapted_model_over_the_model_file(
    tmp_path, model_file, save, monkeypatch
):
    import shutil

    import mrisr.models

    scan = _scan_file(tmp_path)
    model = tmp_path / "m.safetensors"
    shutil.copy(model_file, model)
    (tmp_path / "link.safetensors").symlink_to(model)
    # A stand-in for the bundled models, so that a failure cannot damage the real ones.
    (tmp_path / "weights").mkdir()
    bundled = Path(shutil.copy(model_file, tmp_path / "weights" / "fast.safetensors"))
    monkeypatch.setattr(mrisr.models, "bundled_models", lambda: {"fast": bundled})
    target = {"MODEL": model, "LINK": tmp_path / "link.safetensors", "BUNDLED": bundled}[save]
    before = sorted(tmp_path.iterdir()), model.read_bytes(), bundled.read_bytes()
    result = runner.invoke(
        app,
        ["upscale", str(scan), "--model", str(model), "--device", "cpu", "--adapt",
         "--adapt-steps", "1", "--save-adapted", str(target), "--overwrite"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "an input, and mrisr never writes over its input" in result.output
    assert "Fix: pass another --save-adapted path" in result.output
    assert (sorted(tmp_path.iterdir()), model.read_bytes(), bundled.read_bytes()) == before


def test_cli_replaces_an_earlier_adapted_model_with_overwrite(tmp_path, model_file):
    scan = _scan_file(tmp_path)
    saved = tmp_path / "protocol.safetensors"
    saved.write_bytes(b"an earlier adaptation")
    args = ["upscale", str(scan), "--model", str(model_file), "--device", "cpu", "--adapt",
            "--adapt-steps", "1", "--save-adapted", str(saved)]  # fmt: skip
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "already exists" in refused.output
    assert saved.read_bytes() == b"an earlier adaptation"
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert GeneratorSliceModel.from_file(saved, device="cpu").description["adaptation"]


def test_the_thickness_warning_is_given_once_per_scan_when_adapting(tmp_path, model_file, caplog):
    from mrisr.adapt import AdaptSettings
    from mrisr.upscale import upscale_file

    scan = _scan_file(tmp_path)  # 4 mm slices
    with caplog.at_level("WARNING"):
        upscale_file(scan, model=str(model_file), adapt=AdaptSettings(steps=1), thickness_mm=3.0)
    warnings = [
        r.getMessage() for r in caplog.records if "differs from the slice spacing" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert "contiguous slices" in warnings[0]  # a network ran: what models were trained on


@pytest.mark.parametrize("adapting", [[], ["--adapt", "--adapt-steps", "1"]])
def test_a_factor_outside_the_model_s_range_names_the_scan_with_or_without_adapt(
    tmp_path, model_file, adapting
):
    scan = _scan_file(tmp_path)
    args = ["upscale", str(scan), "--model", str(model_file), "--factor", "8", *adapting]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"error: {scan}: factor 8 is outside the range 2-6" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def _documented_adaptation_keys() -> str:
    docs = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    return next(line for line in docs.read_text().splitlines() if line.startswith("| `adaptation`"))


def test_the_sidecar_records_paths_absolute_and_documents_every_key(
    tmp_path, model_file, monkeypatch
):
    _scan_file(tmp_path)
    monkeypatch.chdir(tmp_path)  # --save-adapted as typed: relative
    args = ["upscale", "scan.nii.gz", "--model", str(model_file), "--adapt", "--adapt-steps", "1"]
    saved = runner.invoke(app, [*args, "--save-adapted", "p.safetensors"])
    assert saved.exit_code == 0, saved.output
    sidecar = json.loads((tmp_path / "scan_sr.json").read_text())
    absolute = str((tmp_path / "p.safetensors").absolute())
    assert sidecar["adaptation"]["saved_to"] == absolute
    assert sidecar["options"]["adapt"]["save_path"] == absolute
    plain = runner.invoke(app, [*args, "-o", "plain.nii.gz"])
    assert plain.exit_code == 0, plain.output
    record = json.loads((tmp_path / "plain.json").read_text())["adaptation"]
    assert record["saved_to"] is None and record["weights"] == "ema"  # null, not absent
    documented = _documented_adaptation_keys()
    for key in record:
        assert f"`{key}`" in documented, f"adaptation key {key!r} is not in docs/cli.md"
    for key in record["pairs"]:
        assert f"`{key}`" in documented, f"adaptation.pairs key {key!r} is not in docs/cli.md"


def test_a_failed_image_write_takes_the_saved_adapted_model_with_it(
    tmp_path, model_file, monkeypatch
):
    import mrisr.io.outputs as outputs

    scan = _scan_file(tmp_path)
    saved = tmp_path / "protocol.safetensors"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_json_atomic", full_disk)  # the sidecar, last of the set
    result = runner.invoke(
        app,
        ["upscale", str(scan), "--model", str(model_file), "--device", "cpu", "--adapt",
         "--adapt-steps", "2", "--save-adapted", str(saved)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]  # no model, no temp
