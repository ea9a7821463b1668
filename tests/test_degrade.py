"""Training degradations, each checked against its definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrisr.config import DataConfig
from mrisr.errors import ConfigError
from mrisr.training.data import TrainingVolume, prepare_volume, signal_mask
from mrisr.training.degrade import Degrader, draw_factor
from mrisr.training.pairs import PairDataset
from mrisr.volume import Volume

DEGRADED = dict(
    factor=4.0,
    factor_range=(1.5, 16.0),
    factor_focus=(3.0, 8.0),
    focus_weight=0.5,
    profile="mixed",
    thickness_range=(0.5, 1.5),
    noise_snr=(15.0, 60.0),
    bias_field=0.1,
    gamma_range=(0.7, 1.5),
    degrade_fraction=1.0,
)


def degrader(**settings) -> Degrader:
    return Degrader(DataConfig(**{**DEGRADED, **settings}))


# ---------------------------------------------------------------- per batch


def test_factors_fall_in_the_focus_as_often_as_asked_and_log_uniformly_elsewhere():
    rng = np.random.default_rng(0)
    factors = np.array([draw_factor(rng, (1.5, 16.0), (3.0, 8.0), 0.5) for _ in range(20000)])
    assert factors.min() >= 1.5 and factors.max() <= 16.0
    # Half from the focus, plus the log-uniform half's share of [3, 8].
    log_share = math.log(8 / 3) / math.log(16 / 1.5)
    assert np.mean((factors >= 3) & (factors <= 8)) == pytest.approx(
        0.5 + 0.5 * log_share, abs=0.02
    )
    # Log-uniform: as many factors in [1.5, 3) as in (8, 16] (each one doubling).
    low, high = np.mean(factors < 3), np.mean(factors > 8)
    assert low == pytest.approx(high, abs=0.02) and low == pytest.approx(
        0.5 * math.log(2) / math.log(16 / 1.5), abs=0.02
    )


def test_without_a_focus_factors_are_uniform_and_a_single_factor_is_itself():
    rng = np.random.default_rng(1)
    factors = np.array([draw_factor(rng, (2.0, 6.0)) for _ in range(20000)])
    assert np.mean(factors < 4.0) == pytest.approx(0.5, abs=0.02)
    assert draw_factor(rng, (4.0, 4.0)) == 4.0


def test_batches_draw_both_profiles_and_thicknesses_across_the_range():
    rng = np.random.default_rng(2)
    batches = [degrader().draw_batch(rng) for _ in range(2000)]
    profiles = [b.profile for b in batches]
    assert profiles.count("mean") == pytest.approx(1000, abs=100)
    assert set(profiles) == {"mean", "gaussian"}
    thickness = np.array([b.thickness for b in batches])
    assert thickness.min() >= 0.5 and thickness.max() <= 1.5
    assert np.mean(thickness < 1.0) == pytest.approx(0.5, abs=0.05)  # gaps half of the time


def test_without_degradations_a_batch_is_the_fixed_profile_at_the_spacing():
    batch = Degrader(DataConfig(factor=4.0)).draw_batch(np.random.default_rng(0))
    assert (batch.factor, batch.profile, batch.thickness) == (4.0, "mean", 1.0)


# ----------------------------------------------------------------- per pair


def test_rician_noise_has_the_magnitude_statistics_of_its_sigma():
    # Gudbjartsson & Patz 1995: zero signal gives a Rayleigh mean of sigma * sqrt(pi / 2);
    # a signal far above sigma keeps its mean and gets a standard deviation of sigma.
    rng = np.random.default_rng(3)
    noisy = degrader(noise_snr=(20.0, 20.0))
    image = np.zeros((200, 200), np.float32)
    image[:, 100:] = 1.0
    out = noisy.acquisition_noise(image, signal=1.0, rng=rng)
    sigma = 1.0 / 20.0
    assert out[:, :100].mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.03)
    assert out[:, 100:].mean() == pytest.approx(1.0 + sigma**2 / 2, abs=0.003)
    assert out[:, 100:].std() == pytest.approx(sigma, rel=0.03)
    assert np.all(image[:, :100] == 0), "the input is not modified"


def test_noise_reaches_only_the_asked_share_of_pairs():
    rng = np.random.default_rng(4)
    half = degrader(degrade_fraction=0.5)
    image = np.ones((8, 8), np.float32)
    touched = [half.acquisition_noise(image, 1.0, rng) is not image for _ in range(2000)]
    assert np.mean(touched) == pytest.approx(0.5, abs=0.04)


def test_the_bias_field_is_a_positive_smooth_exponentiated_polynomial():
    rng = np.random.default_rng(5)
    only_bias = degrader(gamma_range=None, noise_snr=None, bias_field=0.3)
    flat = np.full((40, 32), 0.5, np.float32)
    out = only_bias.object_changes(flat, rng)
    field = out / flat
    assert np.all(field > 0) and not np.allclose(field, 1.0)
    # log(field) is a sum of Legendre products P_i(rows) P_j(cols), i, j <= 3
    # (MONAI's 2D field), on the window's [-1, 1] x [-1, 1] grid.
    rows, cols = np.meshgrid(np.linspace(-1, 1, 40), np.linspace(-1, 1, 32), indexing="ij")
    terms = np.stack([rows**i * cols**j for i in range(4) for j in range(4)], -1)
    coeffs, *_ = np.linalg.lstsq(terms.reshape(-1, terms.shape[-1]), np.log(field).ravel())
    residual = np.log(field).ravel() - terms.reshape(-1, terms.shape[-1]) @ coeffs
    assert np.abs(residual).max() < 1e-4


def test_gamma_maps_the_window_through_one_power_within_the_range():
    rng = np.random.default_rng(6)
    only_gamma = degrader(bias_field=0.0, noise_snr=None)
    ramp = np.tile(np.linspace(0.0, 1.0, 50, dtype=np.float32), (10, 1))
    out = only_gamma.object_changes(ramp, rng)
    assert out[0, 0] == pytest.approx(0.0, abs=1e-6) and out[0, -1] == pytest.approx(1.0, abs=1e-5)
    inside = (ramp > 0.05) & (ramp < 0.95)
    gammas = np.log(out[inside]) / np.log(ramp[inside])
    assert gammas.std() < 1e-3
    assert 0.7 <= gammas.mean() <= 1.5 and not gammas.mean() == pytest.approx(1.0, abs=1e-3)


def test_bias_and_gamma_are_shared_by_lr_and_hr_and_noise_is_on_lr_only():
    # The LR patch of a pair is the slice profile of its HR patch (bias and gamma
    # included), plus noise: with noise off, the block means of the HR rows.
    volume = smooth_training_volume()
    pairs = PairDataset(
        [volume],
        patch_size=32,
        batch_size=4,
        seed=0,
        degrader=degrader(
            factor_range=(4.0, 4.0), factor_focus=None, profile="mean",
            thickness_range=None, noise_snr=None,
        ),
    )  # fmt: skip
    lr, hr, factor = pairs.batch_arrays(0)
    assert factor == 4.0
    inside = hr.reshape(4, 1, 8, 4, 32).mean(axis=3)
    interior = slice(1, 7)  # rows whose box lies inside the patch
    np.testing.assert_allclose(lr[:, :, interior], inside[:, :, interior], atol=1e-5)


def test_batches_with_degradations_depend_only_on_seed_rank_and_step():
    volume = smooth_training_volume()

    def dataset(rank: int) -> PairDataset:
        return PairDataset(
            [volume], patch_size=32, batch_size=3, seed=7, rank=rank, degrader=degrader()
        )

    first, again, other = (
        dataset(0).batch_arrays(5),
        dataset(0).batch_arrays(5),
        dataset(1).batch_arrays(5),
    )
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[0].shape != other[0].shape or not np.array_equal(first[0], other[0])


def test_the_degrader_pickles_for_dataloader_workers():
    import pickle

    used = degrader()
    used.object_changes(np.ones((8, 8), np.float32), np.random.default_rng(0))
    copy = pickle.loads(pickle.dumps(used))
    assert copy.noise_snr == used.noise_snr and copy._transforms is None


# ------------------------------------------------------------- the settings


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (dict(factor_focus=(2.0, 20.0)), "factor_focus"),
        (dict(thickness_range=(1.5, 0.5)), "thickness_range"),
        (dict(noise_snr=(0.0, 10.0)), "noise_snr"),
        (dict(bias_field=2.0), "bias_field"),
        (dict(profile="triangle"), "profile"),
    ],
)
def test_bad_degradation_settings_are_refused_by_name(settings, words):
    with pytest.raises(ConfigError, match=words):
        DataConfig(**{**DEGRADED, **settings})


# ------------------------------------------------------------ signal voxels


def test_patch_centres_lie_on_signal_not_on_background_noise():
    # A bright head in a noisy background: Otsu puts the centres on the head.
    rng = np.random.default_rng(8)
    data = rng.normal(0.0, 30.0, (40, 40, 40)).clip(0).astype(np.float32)
    data[10:30, 10:30, 10:30] += 1000.0
    prepared = prepare_volume(Volume(data, np.eye(4)), "head")
    values = prepared.data[tuple(prepared.centres.T)]
    assert values.min() > 0.5
    assert prepared.signal == pytest.approx(values.mean(), rel=1e-5)
    # A nearly constant image still has centres (the fixed level decides).
    assert signal_mask(np.full((6, 6, 6), 0.8, np.float32)).all()


def smooth_training_volume() -> TrainingVolume:
    z, y, x = np.meshgrid(*(np.linspace(0, 3, 48),) * 3, indexing="ij")
    data = (0.5 + 0.4 * np.sin(x + 2 * y) * np.cos(z)).astype(np.float32)
    return prepare_volume(Volume(data, np.eye(4)), "smooth")
