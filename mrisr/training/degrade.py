"""Degradations that make simulated thick slices look like real acquisitions.

A real thick-slice scan differs from block-averaged thin slices in more than
its spacing: its slice profile is a box or close to a Gaussian, its slices may
have gaps or overlap, its factor is rarely a whole number, its magnitude image
carries Rician noise, a receive-coil bias field shades it, and its contrast
differs from scan to scan. :class:`Degrader` draws these for the training
pairs of :mod:`mrisr.training.data`:

* per batch (all pairs of a batch share the LR rows): the factor
  (:func:`draw_factor`), the slice profile and its thickness
  (:class:`BatchDegradation`);
* per pair, each applied to ``data.degrade_fraction`` of the pairs: an
  intensity gamma and a smooth bias field on the HR window before simulation
  (they belong to the imaged object, so the target keeps them too), and
  Rician noise on the LR patch after it (it belongs to the acquisition, so the
  target stays clean).

The bias field and the gamma are MONAI's ``RandBiasField`` (a polynomial of
degree 3 exponentiated, as in Van Leemput et al., IEEE TMI 1999) and
``RandAdjustContrast``; Rician noise is MONAI's ``RandRicianNoise`` (Gudbjartsson
& Patz, MRM 1995: the magnitude of a complex signal with Gaussian noise of the
same sigma on both channels). Each MONAI transform is reseeded from the step's
generator for every pair, so a batch depends only on ``(seed, rank, step)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrisr.config import PROFILES, DataConfig

#: Degree of the bias field's polynomial (MONAI's default; smooth over a patch).
BIAS_DEGREE = 3


@dataclass(frozen=True)
class BatchDegradation:
    """What all pairs of one batch share.

    Attributes:
        factor: thick / thin spacing ratio drawn for the batch.
        profile: ``"mean"`` (box) or ``"gaussian"``.
        thickness: slice thickness (box width or FWHM) as a multiple of the
            slice spacing: 1 contiguous, below 1 gaps, above 1 overlap.
    """

    factor: float
    profile: str
    thickness: float


def draw_factor(
    rng: np.random.Generator,
    bounds: tuple[float, float],
    focus: tuple[float, float] | None = None,
    focus_weight: float = 0.0,
) -> float:
    """A factor in ``bounds``.

    With probability ``focus_weight`` it is uniform in ``focus`` (the factors
    clinical scans need most often); otherwise log-uniform over ``bounds``, so
    that 1.5-3x and 8-16x get equal shares per doubling. Without a focus it is
    uniform over ``bounds`` (the low bound itself when they are equal).

    Args:
        rng: the step's generator.
        bounds: (low, high) factors.
        focus: (low, high) inside ``bounds``, or None.
        focus_weight: probability of drawing from ``focus``.

    Returns:
        The factor.
    """
    low, high = bounds
    if high <= low:
        return float(low)
    if focus is None:
        return float(rng.uniform(low, high))
    if rng.random() < focus_weight:
        return float(rng.uniform(*focus))
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


class Degrader:
    """Draws and applies the degradations configured in a :class:`DataConfig`.

    Args:
        settings: the ``data`` section (``profile``, ``factor_range``,
            ``factor_focus``, ``focus_weight``, ``thickness_range``,
            ``noise_snr``, ``bias_field``, ``gamma_range``, ``degrade_fraction``).
    """

    def __init__(self, settings: DataConfig) -> None:
        self.factor_bounds = settings.factor_bounds
        self.factor_focus = settings.factor_focus
        self.focus_weight = settings.focus_weight
        self.profile = settings.profile
        self.thickness_range = settings.thickness_range
        self.noise_snr = settings.noise_snr
        self.bias_field = settings.bias_field
        self.gamma_range = settings.gamma_range
        self.fraction = settings.degrade_fraction
        self._transforms: dict[str, Any] | None = None

    def draw_batch(self, rng: np.random.Generator) -> BatchDegradation:
        """The factor, profile and thickness of one batch."""
        factor = draw_factor(rng, self.factor_bounds, self.factor_focus, self.focus_weight)
        profile = self.profile
        if profile not in PROFILES:  # "mixed"
            profile = PROFILES[int(rng.integers(len(PROFILES)))]
        thickness = (
            1.0 if self.thickness_range is None else float(rng.uniform(*self.thickness_range))
        )
        return BatchDegradation(factor=factor, profile=profile, thickness=thickness)

    def object_changes(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gamma and bias field on an HR window (rows, cols), each on a share of pairs.

        Returns:
            A new float32 array (the input is not modified), or ``window`` itself
            when neither was drawn.
        """
        gamma = self.gamma_range is not None and rng.random() < self.fraction
        bias = self.bias_field > 0 and rng.random() < self.fraction
        if not (gamma or bias):
            return window
        transforms = self._monai()
        image = window[None]
        if gamma:
            image = _seeded(transforms["gamma"], rng)(image)
        if bias:
            image = _seeded(transforms["bias"], rng)(image)
        return np.asarray(image, np.float32)[0]

    def acquisition_noise(
        self, lr: np.ndarray, signal: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Rician noise on an LR patch, on a share of pairs.

        Args:
            lr: (rows, cols) LR patch.
            signal: the mean foreground intensity the SNR refers to.
            rng: the step's generator.

        Returns:
            A new float32 array with noise of sigma ``signal / snr``, or ``lr``
            itself when no noise was drawn.
        """
        if self.noise_snr is None or not rng.random() < self.fraction:
            return lr
        snr = float(rng.uniform(*self.noise_snr))
        sigma = max(signal, 1e-6) / snr
        noise = self._monai()["noise"]
        noise.std = sigma  # RandRicianNoise reads std when it draws
        return np.asarray(_seeded(noise, rng)(lr[None]), np.float32)[0]

    def _monai(self) -> dict[str, Any]:
        """The MONAI transforms, made on first use (importing MONAI takes a second)."""
        if self._transforms is None:
            from monai.transforms import RandAdjustContrast, RandBiasField, RandRicianNoise

            gamma = self.gamma_range or (1.0, 1.0)
            self._transforms = {
                "gamma": RandAdjustContrast(prob=1.0, gamma=gamma),
                "bias": RandBiasField(
                    degree=BIAS_DEGREE, coeff_range=(0.0, self.bias_field or 0.0), prob=1.0
                ),
                "noise": RandRicianNoise(prob=1.0, mean=0.0, std=1.0, sample_std=False),
            }
        return self._transforms

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers receive the dataset by pickling; they make their own transforms.
        return {**self.__dict__, "_transforms": None}


def _seeded(transform: Any, rng: np.random.Generator) -> Any:
    """``transform`` reseeded from ``rng`` (MONAI keeps its own RandomState)."""
    transform.set_random_state(seed=int(rng.integers(2**31 - 1)))
    return transform
