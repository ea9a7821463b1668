"""Evaluation: cropping to matching grids, metrics per model, tables, JSON, figure and CLI."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from mrisr.errors import ConfigError, OutputError
from mrisr.evaluation import (
    crop_to_whole_slices,
    evaluate,
    markdown_table,
    nearest_on_grid,
    rich_table,
    save_figure,
)
from mrisr.interpolation import CubicSliceModel
from mrisr.metrics import compare_volumes, psnr
from mrisr.simulate import simulate_volume
from mrisr.upscale import UpscaleOptions, upscale_volume
from mrisr.volume import Volume

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class NearestSliceModel:
    """Nearest-neighbour rows: a deliberately poor second method for the tables."""

    name = "nearest"
    factor_range: tuple[float, float] | None = None

    def upscale_slices(self, stack: np.ndarray, out_rows: int, progress: Any = None) -> np.ndarray:
        return nearest_on_grid(stack, 1, out_rows).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def synthetic_volume(rng, shape=(26, 24, 30)) -> Volume:
    data = ndimage.gaussian_filter(rng.random(shape), 1.2) * 1000
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.0]
    return Volume(data.astype(np.float32), affine)


def load_fixture(shared_data) -> Volume:
    path = shared_data / "fixtures" / "spine_t2_1mm.nii.gz"
    image = nib.load(path)
    return Volume(np.asanyarray(image.dataobj).astype(np.float32), image.affine, image.header, path)


# --------------------------------------------------------------------------- cropping


@pytest.mark.parametrize(
    ("n", "factor", "crop"),
    [
        (32, 4, (0, 32)),  # already whole: nothing cropped
        (30, 4, (1, 29)),  # 7 thick slices -> 28
        (60, 8, (2, 58)),  # round(60 / 8) = 8 thick slices would give 64, not 60
        (26, 2.5, (0, 25)),  # 10 thick slices -> 25
        (12, 1.2, (0, 12)),  # 10 thick slices, despite 12 / 1.2 = 9.999...
    ],
)
def test_crop_gives_a_grid_that_simulation_and_upscaling_return_exactly(rng, n, factor, crop):
    volume = synthetic_volume(rng, (12, 12, n))
    cropped, kept = crop_to_whole_slices(volume, 2, factor)
    assert kept == crop
    np.testing.assert_array_equal(cropped.data, volume.data[:, :, crop[0] : crop[1]])
    # The kept voxels stay where they were in the world.
    np.testing.assert_allclose(cropped.affine @ [0, 0, 0, 1], volume.affine @ [0, 0, crop[0], 1])
    thick = simulate_volume(cropped, 2, factor)
    back = upscale_volume(thick, CubicSliceModel(), factor=factor, axis=2)
    assert back.shape == cropped.shape
    np.testing.assert_allclose(back.affine, cropped.affine, atol=1e-9)


def test_crop_refuses_too_few_slices(rng):
    with pytest.raises(ConfigError, match="fewer than 2 thick slices"):
        crop_to_whole_slices(synthetic_volume(rng, (12, 12, 7)), 2, 4)


# --------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("axis", [0, 2])
def test_cubic_matches_an_independent_scipy_interpolation(rng, axis):
    volume = synthetic_volume(rng)
    # The interpolation alone: without the default consistency projection and range clip.
    plain = UpscaleOptions(consistency=False, clip_range=False)
    result = evaluate(
        volume, axis=axis, factor=4, models={"cubic": CubicSliceModel()}, options=plain
    )
    zoom = [1, 1, 1]
    zoom[axis] = 4
    independent = ndimage.zoom(
        result.thick.data.astype(np.float64), zoom, order=3, grid_mode=True, mode="reflect"
    )
    assert independent.shape == result.truth.shape
    expected = psnr(independent, result.truth.data, data_range=result.data_range, mask=result.mask)
    assert result.metrics["cubic"]["psnr"] == pytest.approx(expected, abs=0.1)
    assert result.mask is not None and result.mask.shape == result.truth.shape


def test_every_method_gets_every_metric_in_order(rng):
    volume = synthetic_volume(rng)
    models = {"cubic": CubicSliceModel(), "nearest": NearestSliceModel()}
    result = evaluate(volume, axis=1, factor=3, models=models, mask=False)
    assert list(result.metrics) == ["cubic", "nearest"]
    for row in result.metrics.values():
        assert list(row) == ["psnr", "ssim", "hfen", "nrmse"]
        assert all(math.isfinite(value) for value in row.values())
    assert result.mask is None
    assert result.truth.shape == (26, 24, 30)  # 24 = 8 thick slices x 3: nothing cropped
    # Every result, recomputed independently on the same range, gives the same numbers.
    for method, upscaled in result.results.items():
        assert compare_volumes(
            upscaled.data, result.truth.data, data_range=result.data_range
        ) == pytest.approx(result.metrics[method])


def test_an_explicit_mask_is_cropped_with_the_volume(rng):
    volume = synthetic_volume(rng, (20, 20, 30))  # axis 2 at 4x keeps slices 1..28
    mask = np.zeros(volume.shape, bool)
    mask[4:16, 4:16, 5:25] = True
    result = evaluate(volume, axis=2, factor=4, models={"cubic": CubicSliceModel()}, mask=mask)
    np.testing.assert_array_equal(result.mask, mask[:, :, 1:29])
    assert result.crop == (1, 29)


def test_evaluate_refuses_bad_settings(rng):
    volume = synthetic_volume(rng)
    with pytest.raises(ConfigError, match="no model"):
        evaluate(volume, axis=2, factor=4, models={})
    with pytest.raises(ConfigError, match="fusion"):
        evaluate(volume, axis=2, factor=4, models={"cubic": CubicSliceModel()}, fusion="max")
    with pytest.raises(ConfigError, match="axis"):
        evaluate(volume, axis=3, factor=4, models={"cubic": CubicSliceModel()})


def test_real_spine_cubic_beats_nearest_and_reports_sane_numbers(shared_data, tmp_path):
    volume = load_fixture(shared_data)
    models = {"cubic": CubicSliceModel(), "nearest": NearestSliceModel()}
    result = evaluate(volume, axis=2, factor=4, models=models)
    cubic, nearest = result.metrics["cubic"], result.metrics["nearest"]
    assert 18 < cubic["psnr"] < 40
    assert 0 < cubic["ssim"] < 1
    assert cubic["psnr"] > nearest["psnr"]
    assert cubic["hfen"] < nearest["hfen"]
    assert result.truth.shape == (60, 55, 52)

    # Tables: markdown rows per method, rich renders.
    text = markdown_table(result)
    assert "| cubic |" in text and "| nearest |" in text and "PSNR (dB)" in text
    assert rich_table(result).row_count == 2

    # JSON: {method: {psnr, ssim, hfen, nrmse}}.
    parsed = json.loads(result.to_json())
    assert set(parsed) == {"cubic", "nearest"}
    assert set(parsed["cubic"]) == {"psnr", "ssim", "hfen", "nrmse"}

    # Figure: a real PNG, refused a second time without overwrite.
    figure = save_figure(tmp_path / "eval.png", result)
    assert figure.read_bytes()[:8] == PNG_MAGIC
    from matplotlib.image import imread

    pixels = imread(figure)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 600
    with pytest.raises(OutputError, match="already exists"):
        save_figure(figure, result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.png"]  # no temporary left


def test_json_writes_a_perfect_psnr_as_null(rng):
    volume = synthetic_volume(rng)
    result = evaluate(volume, axis=2, factor=2, models={"cubic": CubicSliceModel()})
    perfect = {**result.metrics["cubic"], "psnr": math.inf}
    text = type(result)(**{**result.__dict__, "metrics": {"cubic": perfect}}).to_json()
    assert json.loads(text)["cubic"]["psnr"] is None
    assert "Infinity" not in text


def test_nearest_on_grid_repeats_thick_slices():
    thick = np.arange(3.0).reshape(1, 1, 3)
    np.testing.assert_array_equal(nearest_on_grid(thick, 2, 6).ravel(), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(nearest_on_grid(thick, 2, 7).ravel(), [0, 0, 1, 1, 1, 2, 2])


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli():
    from mrisr.cli import app

    return lambda *args: CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_cli_json_prints_parseable_metrics_per_method(cli, shared_data):
    scan = shared_data / "fixtures" / "spine_t2_1mm.nii.gz"
    outcome = cli(scan, "--axis", 2, "--factor", 4, "--model", "cubic", "--json")
    assert outcome.exit_code == 0, outcome.output
    parsed = json.loads(outcome.stdout)
    assert list(parsed) == ["cubic"]  # cubic given again is still one row
    assert set(parsed["cubic"]) == {"psnr", "ssim", "hfen", "nrmse"}


def test_cli_refuses_a_bad_precision_even_with_cubic_alone(cli, tmp_path):
    # Before the scan is read: the path does not even exist.
    outcome = cli(tmp_path / "absent.nii.gz", "--precision", "half")
    assert outcome.exit_code == 2 and "unknown precision 'half'" in outcome.output


def test_cli_table_and_figure(cli, shared_data, tmp_path):
    scan = shared_data / "fixtures" / "spine_t2_1mm.nii.gz"
    figure = tmp_path / "out.png"
    outcome = cli(scan, "--axis", 0, "--factor", 3, "--no-mask", "--figure", figure)
    assert outcome.exit_code == 0, outcome.output
    # The table is the result (stdout); "wrote ..." is a message (stderr).
    assert "cubic" in outcome.stdout and "PSNR" in outcome.stdout
    assert "out.png" in outcome.stderr and "out.png" not in outcome.stdout
    assert figure.read_bytes()[:8] == PNG_MAGIC
    mask = os.umask(0o022)
    os.umask(mask)
    assert figure.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
    # An existing figure is refused before any work, naming the file.
    again = cli(scan, "--figure", figure)
    assert again.exit_code != 0
    assert "out.png" in again.stderr and "already exists" in again.stderr


def test_cli_missing_input_names_the_file(cli, tmp_path):
    missing = tmp_path / "no_such_scan.nii.gz"
    outcome = cli(missing, "--json")
    assert outcome.exit_code != 0
    assert "no_such_scan.nii.gz" in outcome.stderr
    assert outcome.stdout == ""


def test_a_model_outside_its_factor_range_runs_only_with_force(rng):
    class TrainedForTwoToFour(CubicSliceModel):
        name = "two-to-four"
        factor_range = (2.0, 4.0)

    volume = synthetic_volume(rng)
    models = {"cubic": CubicSliceModel(), "narrow": TrainedForTwoToFour()}
    with pytest.raises(ConfigError, match="--force"):
        evaluate(volume, axis=2, factor=6, models=models)
    result = evaluate(volume, axis=2, factor=6, models=models, force=True)
    assert result.metrics["narrow"] == result.metrics["cubic"]  # the same interpolation


def test_the_shipped_demo_truth_is_not_warned_about_but_a_thick_one_is(caplog):
    """1.25 / 0.94 mm (the demo's IXI crop) is not thick-sliced; 1.5 times is, as for upscale."""
    import logging

    from mrisr.demo import demo_volume_path
    from mrisr.interpolation import CubicSliceModel
    from mrisr.io import load_volume

    demo = load_volume(demo_volume_path())
    with caplog.at_level(logging.WARNING):
        evaluate(demo, axis=2, factor=4, models={"cubic": CubicSliceModel()})
    assert "blurred truth" not in caplog.text
    affine = demo.affine.copy()
    affine[:3, 2] *= 1.5 * 0.9375 / 1.25  # 1.5 times the in-plane spacing
    with caplog.at_level(logging.WARNING):
        evaluate(
            demo.with_data(demo.data, affine), axis=0, factor=4, models={"cubic": CubicSliceModel()}
        )
    assert "blurred truth" in caplog.text
