"""Metrics: hand-computed values on tiny arrays, known properties, masks, MONAI agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from mrisr.errors import InputError
from mrisr.metrics import (
    compare_volumes,
    foreground_mask,
    gaussian_window,
    hfen,
    nrmse,
    psnr,
    reference_range,
    ssim,
    ssim_map,
)
from mrisr.volume import Volume


def smooth(rng, shape=(20, 18, 16), scale=1000.0) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), 1.5) * scale


# --------------------------------------------------------------------------- hand-computed


def test_psnr_by_hand():
    reference = np.arange(8, dtype=float).reshape(2, 2, 2)
    result = reference.copy()
    result[0, 0, 0] += 1.0  # MSE = 1/8
    assert psnr(result, reference, data_range=4.0) == pytest.approx(10 * math.log10(16 * 8))


def test_reference_range_is_999th_percentile_minus_minimum():
    reference = np.arange(1001, dtype=float).reshape(7, 11, 13)  # 0..1000
    assert reference_range(reference) == pytest.approx(999.0)
    # A single hot voxel barely moves the range, and the minimum is subtracted.
    hot = reference + 50.0
    hot[0, 0, 0] = 1e6
    assert reference_range(hot) == pytest.approx(999.0, abs=2.0)


def test_psnr_default_range_comes_from_the_reference():
    reference = np.arange(1001, dtype=float).reshape(7, 11, 13)
    result = reference + 1.0  # MSE = 1
    assert psnr(result, reference) == pytest.approx(20 * math.log10(999.0))


def test_nrmse_by_hand():
    reference = np.array([3.0, 4.0]).reshape(1, 1, 2)  # norm 5
    assert nrmse(np.zeros_like(reference), reference) == pytest.approx(1.0)
    assert nrmse(reference + np.array([0.0, 1.0]).reshape(1, 1, 2), reference) == pytest.approx(0.2)


def test_ssim_with_a_one_voxel_window_by_hand():
    # With a 1-voxel window the local variances vanish and SSIM is the luminance term.
    reference = np.ones((1, 1, 2))
    result = np.array([2.0, 1.0]).reshape(1, 1, 2)
    c1 = (0.01 * 1.0) ** 2
    expected = np.mean([(4 + c1) / (5 + c1), 1.0])
    assert ssim(result, reference, data_range=1.0, win_size=1) == pytest.approx(expected)


def test_ssim_of_3x3x3_equals_a_direct_weighted_computation(rng):
    x, y = rng.random((3, 3, 3)), rng.random((3, 3, 3))
    g = gaussian_window(3, 1.5)
    w = np.einsum("i,j,k->ijk", g, g, g)  # the full 3D window, not separable filtering
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2
    cxy = (w * x * y).sum() - mx * my
    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    local = ssim_map(x, y, data_range=2.0, win_size=3)
    assert local.shape == (1, 1, 1)
    assert local.item() == pytest.approx(expected, rel=1e-12)


def test_gaussian_window_is_normalised_and_symmetric():
    g = gaussian_window(11, 1.5)
    assert g.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(g, g[::-1])
    assert g.argmax() == 5


def test_hfen_is_linear_and_blind_to_constant_offsets(rng):
    reference = smooth(rng)
    assert hfen(2 * reference, reference) == pytest.approx(1.0)
    assert hfen(0 * reference, reference) == pytest.approx(1.0)
    assert hfen(reference + 123.0, reference) == pytest.approx(0.0, abs=1e-12)
    # Blurring removes high frequencies: a clear HFEN, much larger than a small offset's.
    blurred = ndimage.gaussian_filter(reference, 1.5)
    assert 0.1 < hfen(blurred, reference) < 1.0


# --------------------------------------------------------------------------- properties


def test_identical_volumes_are_perfect(rng):
    reference = smooth(rng)
    metrics = compare_volumes(reference, reference.copy())
    assert metrics == {"psnr": math.inf, "ssim": pytest.approx(1.0), "hfen": 0.0, "nrmse": 0.0}


def test_more_noise_means_lower_psnr_and_ssim_and_higher_errors(rng):
    reference = smooth(rng)
    span = reference_range(reference)
    rows = [
        compare_volumes(reference + rng.normal(0, sigma * span, reference.shape), reference)
        for sigma in (0.01, 0.05, 0.2)
    ]
    for better, worse in zip(rows, rows[1:], strict=False):
        assert better["psnr"] > worse["psnr"]
        assert better["ssim"] > worse["ssim"]
        assert better["hfen"] < worse["hfen"]
        assert better["nrmse"] < worse["nrmse"]
    # Gaussian noise of sigma s * L gives PSNR ~ -20 log10(s).
    assert rows[0]["psnr"] == pytest.approx(40.0, abs=0.2)


def test_metrics_stay_within_their_ranges(rng):
    reference = smooth(rng)
    result = rng.permutation(reference.ravel()).reshape(reference.shape)
    metrics = compare_volumes(result, reference)
    assert -1.0 <= metrics["ssim"] < 0.5
    assert metrics["hfen"] > 0 and metrics["nrmse"] > 0
    assert np.isfinite(metrics["psnr"])


def test_masked_metrics_ignore_voxels_outside_the_mask(rng):
    reference = smooth(rng, (40, 40, 40))
    result = reference + rng.normal(0, 5.0, reference.shape)
    mask = np.zeros(reference.shape, bool)
    mask[14:26, 14:26, 14:26] = True
    corrupted = result.copy()
    # Far from the mask: further than the SSIM window (5) and the LoG kernel (7) reach.
    corrupted[:4] = 0.0
    corrupted[:, 36:] = 1e5
    span = reference_range(reference)
    clean = compare_volumes(result, reference, mask, data_range=span)
    dirty = compare_volumes(corrupted, reference, mask, data_range=span)
    assert dirty == pytest.approx(clean, rel=1e-12)
    assert compare_volumes(corrupted, reference, data_range=span)["psnr"] < clean["psnr"] - 10


def test_masked_psnr_and_nrmse_equal_those_of_the_masked_voxels(rng):
    reference = smooth(rng)
    result = reference + rng.normal(0, 3.0, reference.shape)
    mask = reference > np.median(reference)
    x, y = result[mask], reference[mask]
    assert psnr(result, reference, data_range=500.0, mask=mask) == pytest.approx(
        10 * math.log10(500.0**2 / np.mean((x - y) ** 2))
    )
    assert nrmse(result, reference, mask=mask) == pytest.approx(
        np.linalg.norm(x - y) / np.linalg.norm(y)
    )


def test_a_perfect_result_inside_the_mask_scores_perfectly_there(rng):
    reference = smooth(rng)
    result = reference.copy()
    result[:3] += 100.0
    mask = np.zeros(reference.shape, bool)
    mask[10:, :, :] = True
    assert psnr(result, reference, mask=mask) == math.inf
    assert nrmse(result, reference, mask=mask) == 0.0


def test_metrics_accept_volumes(rng):
    reference = smooth(rng)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    metrics = compare_volumes(Volume(reference + 1.0, affine), Volume(reference, affine))
    assert list(metrics) == ["psnr", "ssim", "hfen", "nrmse"]
    assert all(isinstance(value, float) for value in metrics.values())


# --------------------------------------------------------------------------- foreground mask


def test_foreground_mask_fills_holes_dilates_and_leaves_background_out():
    grid = np.indices((32, 32, 32)) - 15.5
    radius = np.sqrt((grid**2).sum(axis=0))
    reference = np.where(radius < 10, 800.0, 0.0)
    reference[radius < 3] = 20.0  # a dark core (like CSF): a hole the threshold misses
    mask = foreground_mask(reference, fraction=0.1, dilation=2)
    assert mask.dtype == bool
    assert mask[radius < 3].all()  # filled
    assert mask[(radius >= 10) & (radius < 11.0)].all()  # dilated past the edge
    assert not mask[radius > 13].any()  # background out


def test_foreground_mask_refuses_an_empty_result():
    with pytest.raises(InputError, match="constant"):
        foreground_mask(np.zeros((8, 8, 8)))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("result", "reference", "kwargs", "message"),
    [
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), {}, "shapes"),
        (np.full((4, 4, 4), np.nan), np.arange(64.0).reshape(4, 4, 4), {}, "NaN"),
        (np.zeros((4, 4, 4)), np.ones((4, 4, 4)), {}, "constant"),
        (
            np.zeros((4, 4, 4)),
            np.arange(64.0).reshape(4, 4, 4),
            {"mask": np.zeros((4, 4, 4))},
            "no voxel",
        ),
        (
            np.zeros((4, 4, 4)),
            np.arange(64.0).reshape(4, 4, 4),
            {"mask": np.ones((4, 4))},
            "mask of shape",
        ),
    ],
)
def test_bad_inputs_are_refused(result, reference, kwargs, message):
    with pytest.raises(InputError, match=message):
        psnr(result, reference, **kwargs)


def test_ssim_refuses_volumes_smaller_than_its_window():
    reference = np.arange(1000.0).reshape(10, 10, 10)
    with pytest.raises(InputError, match="11-voxel SSIM window"):
        ssim(reference, reference)


# --------------------------------------------------------------------------- MONAI agreement


def test_psnr_and_ssim_agree_with_monai(rng):
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    reference = smooth(rng, (24, 22, 20))
    reference -= reference.min()
    result = reference + rng.normal(0, 8.0, reference.shape)
    span = reference_range(reference)

    def as_tensor(data: np.ndarray):
        # (B, C, X, Y, Z), scaled to [0, ~1]: MONAI's SSIM runs in float32 (window
        # too), whose variance terms E[x^2] - E[x]^2 lose digits on large intensities.
        return torch.from_numpy(data / span)[None, None]

    expected_psnr = monai_metrics.PSNRMetric(max_val=1.0)(as_tensor(result), as_tensor(reference))
    expected_ssim = monai_metrics.SSIMMetric(spatial_dims=3, data_range=1.0)(
        as_tensor(result), as_tensor(reference)
    )
    assert psnr(result, reference) == pytest.approx(expected_psnr.item(), abs=1e-9)
    assert ssim(result, reference) == pytest.approx(expected_ssim.item(), abs=1e-6)
