"""The upscale pipeline with the cubic slice model: grid, values, fusion, consistency."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrisr.errors import ConfigError, GeometryError
from mrisr.fusion import fuse
from mrisr.geometry import resampled_affine
from mrisr.interpolation import CubicSliceModel
from mrisr.simulate import simulate_thick_slices, simulate_volume
from mrisr.upscale import UpscaleOptions, plan_upscale, upscale_volume
from mrisr.volume import Volume


def smooth_volume(rng, shape=(24, 20, 32)) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), 2).astype(np.float32) * 1000


def oblique_affine() -> np.ndarray:
    affine = np.eye(4)
    angle = 0.3
    affine[:3, :3] = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    ) @ np.diag([0.9, -0.9, 4.0])
    affine[:3, 3] = [12.0, -40.0, 7.5]
    return affine


def test_cubic_model_equals_direct_cubic_bspline_interpolation(rng):
    data = smooth_volume(rng, (20, 18, 9))
    volume = Volume(data, oblique_affine())
    # Plain interpolation: without the (default) consistency projection and range clip.
    result = upscale_volume(
        volume, CubicSliceModel(), factor=4, consistency=False, clip_range=False
    )
    # Independent reference: map_coordinates on the whole volume at FOV-aligned positions.
    n_out = 36
    z = (np.arange(n_out) + 0.5) * (9 / n_out) - 0.5
    grid = np.meshgrid(np.arange(20), np.arange(18), z, indexing="ij")
    reference = ndimage.map_coordinates(data.astype(np.float64), grid, order=3, mode="reflect")
    np.testing.assert_allclose(result.data, reference, rtol=0, atol=1e-3 * data.max())
    np.testing.assert_allclose(result.affine, resampled_affine(volume.affine, 2, 9, 36))


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("factor", [2, 4])
def test_simulate_then_upscale_returns_the_original_grid(rng, axis, factor):
    affine = oblique_affine()
    affine[:3, :3] = affine[:3, :3] @ np.diag([1, 1, 0.25])  # ~1 mm isotropic
    hr = Volume(smooth_volume(rng), affine)
    thick = simulate_volume(hr, axis, factor)
    result = upscale_volume(thick, CubicSliceModel(), factor=factor, axis=axis)
    assert result.shape == hr.shape
    np.testing.assert_allclose(result.affine, hr.affine, atol=1e-5)
    assert result.data.dtype == np.float32


@pytest.mark.parametrize("flip_axis", [0, 1, 2])
def test_flip_then_upscale_equals_upscale_then_flip(rng, flip_axis):
    data = smooth_volume(rng, (12, 10, 7))
    model = CubicSliceModel()
    direct = upscale_volume(Volume(data, oblique_affine()), model, factor=3.3).data
    flipped = upscale_volume(
        Volume(np.flip(data, flip_axis).copy(), oblique_affine()), model, factor=3.3
    ).data
    np.testing.assert_allclose(np.flip(flipped, flip_axis), direct, atol=1e-3 * data.max())


def test_default_factor_gives_isotropic_voxels():
    volume = Volume(np.ones((10, 10, 6), np.float32), np.diag([0.9, 0.9, 4.0, 1.0]))
    plan = plan_upscale(volume)
    assert plan.factor == pytest.approx(4.0 / 0.9)
    assert plan.n_out == 27
    assert plan.spacing_out[2] == pytest.approx(4.0 * 6 / 27)


def test_consistency_makes_the_block_means_equal_the_input(rng):
    thick_data = smooth_volume(rng, (10, 12, 8))
    volume = Volume(thick_data, oblique_affine())
    result = upscale_volume(volume, CubicSliceModel(), factor=4, consistency=True)
    resimulated = simulate_thick_slices(result.data, 2, 4)
    np.testing.assert_allclose(resimulated, thick_data, rtol=1e-4, atol=1e-2)


def test_fusions_agree_on_identical_inputs(rng):
    data = smooth_volume(rng, (8, 9, 10))
    for method in ("mean", "fba"):
        np.testing.assert_allclose(fuse([data, data], method), data, rtol=1e-5, atol=1e-3)


def test_an_unknown_fusion_is_refused_by_fuse_options_and_evaluate_alike(rng):
    from mrisr.evaluation import evaluate

    data = smooth_volume(rng, (8, 9, 10))
    volume = Volume(data, np.eye(4))
    for call in (
        lambda: fuse([data, data], "max"),
        lambda: UpscaleOptions(fusion="max"),
        lambda: evaluate(
            volume, axis=2, factor=2, models={"cubic": CubicSliceModel()}, fusion="max"
        ),
    ):
        with pytest.raises(
            ConfigError, match="unknown fusion 'max'; expected one of mean, fba. Fix:"
        ):
            call()


def test_fba_keeps_the_stronger_frequency(rng):
    sharp = rng.standard_normal((16, 16, 16)).astype(np.float32)
    blurred = ndimage.gaussian_filter(sharp, 2)
    fba = fuse([sharp, blurred], "fba")
    mean = fuse([sharp, blurred], "mean")
    assert np.abs(fba - sharp).mean() < np.abs(mean - sharp).mean()


def test_upscale_does_not_modify_its_input(rng):
    data = smooth_volume(rng, (8, 8, 5))
    volume = Volume(data, oblique_affine())
    before, affine_before = data.copy(), volume.affine.copy()
    upscale_volume(volume, CubicSliceModel(), factor=2, fusion="fba", consistency=True)
    np.testing.assert_array_equal(volume.data, before)
    np.testing.assert_array_equal(volume.affine, affine_before)


def test_provenance_is_recorded(rng):
    volume = Volume(smooth_volume(rng, (8, 8, 5)), oblique_affine())
    meta = upscale_volume(volume, CubicSliceModel(), factor=2, fusion="fba").meta["upscale"]
    assert meta["axis"] == 2 and meta["effective_factor"] == 2.0
    assert meta["fusion"] == "fba" and meta["model"]["name"] == "cubic"
    assert meta["spacing_out_mm"][2] == pytest.approx(2.0)
    assert set(meta["normalisation"]) == {"method", "low", "high"}


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"factor": 1.0}, ConfigError, "factor must be a number > 1"),
        ({"factor": float("nan")}, ConfigError, "factor must be a number > 1"),
        ({"axis": 3}, ConfigError, "axis must be 0, 1 or 2"),
        ({"fusion": "max"}, ConfigError, "unknown fusion"),
        # Truthy strings are not switches: "no" must not turn TTA on.
        ({"tta": "no"}, ConfigError, "tta must be True or False, got 'no'"),
        ({"disagreement": "false"}, ConfigError, "disagreement must be True or False"),
        ({"clip_range": 0}, ConfigError, "clip_range must be True or False"),
        ({"force": None}, ConfigError, "force must be True or False"),
        ({"consistency": "yes"}, ConfigError, "consistency must be True, False or None"),
        ({"axis": 2.0}, ConfigError, "axis must be 0, 1 or 2, got 2.0"),
        (
            {"consistency_profile": "box"},
            ConfigError,
            "unknown slice profile 'box'.*Fix: pass mean \\(a box",
        ),
    ],
)
def test_bad_settings_are_refused(rng, kwargs, error, words):
    volume = Volume(smooth_volume(rng, (8, 8, 5)), oblique_affine())
    with pytest.raises(error, match=words):
        upscale_volume(volume, CubicSliceModel(), **kwargs)


def test_isotropic_scan_is_refused_with_the_spacing_and_a_fix():
    volume = Volume(np.ones((8, 8, 8), np.float32), np.eye(4))
    with pytest.raises(GeometryError, match="isotropic.*Fix: pass --axis"):
        upscale_volume(volume, CubicSliceModel())


def test_a_factor_outside_the_models_range_is_refused_unless_forced(rng):
    class RangedModel(CubicSliceModel):
        name = "ranged"
        factor_range = (2.0, 4.0)

    volume = Volume(smooth_volume(rng, (8, 8, 5)), oblique_affine())
    with pytest.raises(ConfigError, match="outside the range 2-4"):
        upscale_volume(volume, RangedModel(), factor=6)
    assert upscale_volume(volume, RangedModel(), factor=6, force=True).shape == (8, 8, 30)


def test_slice_thickness_is_recorded_with_its_source_and_used_by_consistency(rng):
    from mrisr.simulate import slice_profile_matrix

    data = rng.random((12, 10, 6)).astype(np.float32) * 100 + 50
    volume = Volume(data, np.diag([1.0, 1.0, 4.0, 1.0]), None)
    assumed = upscale_volume(volume, CubicSliceModel(), factor=4.0)
    assert assumed.meta["upscale"]["slice_thickness_mm"] == 4.0
    assert assumed.meta["upscale"]["slice_thickness_source"] == "spacing"
    from_header = Volume(data, volume.affine, None, meta={"slice_thickness_mm": 3.0})
    assert (
        upscale_volume(from_header, CubicSliceModel(), factor=4.0).meta["upscale"][
            "slice_thickness_source"
        ]
        == "header"
    )
    # 3 mm slices every 4 mm (1 mm gaps): consistency holds for a 3-voxel box, not a 4-voxel one.
    given = upscale_volume(
        volume, CubicSliceModel(), factor=4.0, consistency=True, thickness_mm=3.0
    )
    record = given.meta["upscale"]
    assert (record["slice_thickness_mm"], record["slice_spacing_mm"]) == (3.0, 4.0)
    assert record["slice_thickness_source"] == "given"
    gap_profile = slice_profile_matrix(24, 6, thickness=3.0)
    resimulated = np.einsum("oz,xyz->xyo", gap_profile, given.data)
    np.testing.assert_allclose(resimulated, data, rtol=1e-4)
    box = slice_profile_matrix(24, 6)
    assert not np.allclose(np.einsum("oz,xyz->xyo", box, given.data), data, rtol=1e-3)


@pytest.mark.parametrize("thickness", [0.0, -2.0, float("nan"), float("inf")])
def test_a_given_thickness_must_be_a_positive_number(thickness):
    volume = Volume(np.ones((8, 8, 4), np.float32) * np.arange(4), np.diag([1, 1, 4, 1.0]), None)
    with pytest.raises(ConfigError, match="slice thickness must be a positive number of mm"):
        upscale_volume(volume, CubicSliceModel(), factor=4.0, thickness_mm=thickness)


@pytest.mark.parametrize(("thickness", "words"), [(0.5, "one output voxel"), (6.5, "1.5 x")])
def test_consistency_refuses_a_thickness_it_cannot_use(thickness, words):
    volume = Volume(np.ones((8, 8, 4), np.float32) * np.arange(4), np.diag([1, 1, 4, 1.0]), None)
    # Without --consistency the thickness is only recorded.
    plain = upscale_volume(volume, CubicSliceModel(), factor=4.0, thickness_mm=thickness)
    assert plain.meta["upscale"]["slice_thickness_mm"] == thickness
    with pytest.raises(ConfigError, match=words):
        upscale_volume(
            volume, CubicSliceModel(), factor=4.0, thickness_mm=thickness, consistency=True
        )


@pytest.mark.parametrize("thickness", [12.01, 1e6])
def test_a_thickness_far_over_the_spacing_is_refused_with_the_fix(thickness):
    volume = Volume(np.ones((8, 8, 4), np.float32) * np.arange(4), np.diag([1, 1, 4, 1.0]), None)
    with pytest.raises(ConfigError, match="times the slice spacing 4 mm along axis 2") as caught:
        upscale_volume(volume, CubicSliceModel(), factor=4.0, thickness_mm=thickness)
    assert "at most 3 times the spacing (12 mm)" in str(caught.value)
    assert "--thickness" in caught.value.fix and "thickness_mm=" in caught.value.fix
    # 3 times the spacing (overlapping slices) is still a thickness: recorded, used where it can be.
    done = upscale_volume(volume, CubicSliceModel(), factor=4.0, thickness_mm=12.0)
    assert done.meta["upscale"]["slice_thickness_mm"] == 12.0


def test_the_thickness_warning_speaks_of_models_only_when_a_network_runs(caplog):
    volume = Volume(np.ones((8, 8, 4), np.float32) * np.arange(4), np.diag([1, 1, 4, 1.0]), None)
    with caplog.at_level("WARNING"):
        upscale_volume(volume, CubicSliceModel(), factor=4.0, thickness_mm=3.0)
    warnings = [r.getMessage() for r in caplog.records if "slice thickness" in r.getMessage()]
    assert len(warnings) == 1
    assert "3 mm (given) differs from the slice spacing 4 mm (gaps)" in warnings[0]
    assert "model" not in warnings[0] and "fast" not in warnings[0]


def test_a_header_thickness_does_not_block_plain_upscaling(rng):
    # 5 mm slices every 7 mm, upscaled 1.3x: output voxels (5.4 mm) are thicker than
    # the slices, which only --consistency would need to resolve.
    data = rng.random((10, 10, 6)).astype(np.float32) + 1
    volume = Volume(data, np.diag([1.0, 1.0, 7.0, 1.0]), None, meta={"slice_thickness_mm": 5.0})
    result = upscale_volume(volume, CubicSliceModel(), factor=1.3)
    assert result.meta["upscale"]["slice_thickness_source"] == "header"
    assert "slice_thickness_mm" not in result.meta  # the input's slices, not the result's
    with pytest.raises(ConfigError, match="one output voxel"):
        upscale_volume(volume, CubicSliceModel(), factor=1.3, consistency=True)


def test_thickness_reaches_the_sidecar_from_the_command_line(tmp_path, rng, caplog):
    import json

    import nibabel as nib
    from typer.testing import CliRunner

    from mrisr.cli import app

    scan = tmp_path / "scan.nii.gz"
    nib.save(
        nib.Nifti1Image(rng.random((12, 10, 6)).astype(np.float32) + 1, np.diag([1, 1, 4, 1.0])),
        scan,
    )
    done = CliRunner().invoke(
        app, ["upscale", str(scan), "--model", "cubic", "--thickness", "3", "--consistency"]
    )
    assert done.exit_code == 0, done.output
    record = json.loads((tmp_path / "scan_sr.json").read_text())
    assert (record["slice_thickness_mm"], record["slice_spacing_mm"]) == (3.0, 4.0)
    assert record["slice_thickness_source"] == "given" and record["consistency"] is True
    assert "differs from the slice spacing 4 mm (gaps)" in caplog.text  # warned about


def test_a_simulated_volume_upscales_without_naming_its_axis(shared_data):
    # simulate_volume and upscale_volume change the grid: the header copied
    # with the voxels must describe the new grid, or detection would refuse it.
    from mrisr.io import load_volume

    hr = load_volume(shared_data / "fixtures" / "spine_t2_1mm.nii.gz")
    thick = simulate_volume(hr, axis=1, factor=4)
    np.testing.assert_allclose(thick.header.get_zooms()[:3], thick.spacing, rtol=1e-6)
    assert hr.header.get_zooms()[:3] == (1.0, 1.0, 1.0)  # the input's header is untouched
    result = upscale_volume(thick, CubicSliceModel(), factor=4)
    assert result.meta["upscale"]["axis"] == 1
    np.testing.assert_allclose(result.header.get_zooms()[:3], result.spacing, rtol=1e-6)


def test_a_dicom_folder_is_read_once_per_upscale_command(shared_data, tmp_path, monkeypatch):
    # The default model depends on the planned factor; planning must not cost a
    # second read of the series (load once -> plan once -> choose the model once).
    import json

    import SimpleITK as sitk
    from typer.testing import CliRunner

    from mrisr.cli import app
    from mrisr.inference import GeneratorSliceModel
    from mrisr.models import bundled_models

    if "fast" not in bundled_models():
        pytest.skip("no bundled models installed in mrisr/weights")
    calls = {"series ids": 0, "series reads": 0}
    list_series = sitk.ImageSeriesReader.GetGDCMSeriesIDs
    read_series = sitk.ImageSeriesReader.Execute

    def counted_list(*args, **kwargs):
        calls["series ids"] += 1
        return list_series(*args, **kwargs)

    def counted_read(self, *args, **kwargs):
        calls["series reads"] += 1
        return read_series(self, *args, **kwargs)

    monkeypatch.setattr(sitk.ImageSeriesReader, "GetGDCMSeriesIDs", staticmethod(counted_list))
    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", counted_read)
    # The network's arithmetic is not under test here; cubic keeps the test quick.
    monkeypatch.setattr(
        GeneratorSliceModel, "upscale_slices", lambda self, *a: CubicSliceModel().upscale_slices(*a)
    )
    series = shared_data / "thick" / "brain_pd_axial_7mm_dicom"
    output = tmp_path / "pd_sr.nii.gz"
    done = CliRunner().invoke(
        app, ["upscale", str(series), "-o", str(output), "--factor", "4", "--device", "cpu"]
    )
    assert done.exit_code == 0, done.output
    assert calls == {"series ids": 1, "series reads": 1}
    record = json.loads((tmp_path / "pd_sr.json").read_text())
    assert record["model"]["name"] == "fast"  # the default model for 4x


def test_options_object_and_keyword_settings_are_the_same_and_unknown_ones_are_refused():
    from mrisr.upscale import UpscaleOptions

    rng = np.random.default_rng(3)
    volume = Volume(rng.random((12, 10, 5)).astype(np.float32), np.diag([1.0, 1.0, 4.0, 1.0]))
    by_object = upscale_volume(
        volume, CubicSliceModel(), options=UpscaleOptions(fusion="fba", consistency=True)
    )
    by_keywords = upscale_volume(volume, CubicSliceModel(), fusion="fba", consistency=True)
    np.testing.assert_array_equal(by_object.data, by_keywords.data)
    assert by_object.meta["upscale"]["fusion"] == "fba"
    assert by_object.meta["upscale"]["consistency"] is True
    with pytest.raises(ConfigError, match="unknown upscale option.*consistancy"):
        upscale_volume(volume, CubicSliceModel(), consistancy=True)
    with pytest.raises(ConfigError, match="unknown fusion"):
        UpscaleOptions(fusion="median")


def test_the_model_may_be_named_as_on_the_command_line(rng):
    """upscale_volume takes what upscale_file takes: a model, a --model value, or None."""
    from mrisr.errors import CheckpointError

    volume = Volume(smooth_volume(rng, (20, 18, 9)), oblique_affine())
    by_name = upscale_volume(volume, "cubic", factor=4)
    loaded = upscale_volume(volume, CubicSliceModel(), factor=4)
    np.testing.assert_array_equal(by_name.data, loaded.data)
    assert by_name.meta["upscale"]["model"]["name"] == "cubic"
    bundled = upscale_volume(volume, factor=4)  # None: the bundled model for 4x
    assert bundled.meta["upscale"]["model"]["name"] == "fast"
    with pytest.raises((ConfigError, CheckpointError), match="no-such-model"):
        upscale_volume(volume, "no-such-model", factor=4)


def test_an_output_too_large_for_memory_is_refused_before_any_work(rng, monkeypatch):
    import mrisr.plan

    volume = Volume(smooth_volume(rng, (20, 18, 9)), oblique_affine())
    plan_upscale(volume, factor=300)  # 20 x 18 x 2700 voxels, about 62 MB: fits here
    monkeypatch.setattr(mrisr.plan, "physical_memory", lambda: 32 * 2**20)  # 32 MiB
    with pytest.raises(
        ConfigError, match=r"factor 300 makes an output of 20 x 18 x 2700 voxels"
    ) as caught:
        upscale_volume(volume, "cubic", factor=300)
    assert "0.1 GiB of memory" in str(caught.value) and "smaller --factor" in str(caught.value)
    monkeypatch.setattr(mrisr.plan, "physical_memory", lambda: None)  # unknown: not checked
    plan_upscale(volume, factor=300)


def test_a_model_of_one_factor_names_that_factor_not_a_range(rng):
    class OneFactor(CubicSliceModel):
        name = "x4"
        factor_range = (4.0, 4.0)

    volume = Volume(smooth_volume(rng, (8, 8, 5)), oblique_affine())
    with pytest.raises(ConfigError, match="factor 6 is not the factor 4 that model 'x4' was trained for") as caught:  # fmt: skip
        upscale_volume(volume, OneFactor(), factor=6)
    assert "between" not in str(caught.value) and "--factor 4," in str(caught.value)


def test_a_missing_output_folder_named_with_a_slash_says_so(tmp_path):
    from mrisr.errors import OutputError
    from mrisr.io import output_format

    with pytest.raises(OutputError, match="no folder of that name exists") as caught:
        output_format(f"{tmp_path}/results/")
    assert "mkdir -p" in str(caught.value)
    with pytest.raises(OutputError, match="has an extension mrisr does not write"):
        output_format(tmp_path / "results.txt")


def test_an_axis_equal_to_the_in_plane_spacing_but_for_float_noise_is_not_thicker(rng):
    """Header voxel sizes carry float32 noise: 0.5000000005 against 0.4999999981 mm are equal."""
    affine = np.diag([0.5000000005, 0.4999999981, 7.5, 1.0])
    volume = Volume(smooth_volume(rng, (12, 12, 5)), affine)
    with pytest.raises(GeometryError, match="axis 0 is not thicker than the in-plane spacing"):
        plan_upscale(volume, axis=0)


def test_an_axis_other_than_the_thick_one_is_upscaled_with_a_warning(rng, caplog):
    import logging

    volume = Volume(smooth_volume(rng, (12, 12, 5)), np.diag([0.5, 0.5, 7.5, 1.0]))
    with caplog.at_level(logging.WARNING):
        plan = plan_upscale(volume, axis=1, factor=2)
    assert plan.axis == 1
    assert (
        "--axis 1 is not the thick axis of its voxels (0.5 x 0.5 x 7.5 mm: axis 2)" in caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        plan_upscale(volume, axis=2)
    assert "not the thick axis" not in caplog.text
