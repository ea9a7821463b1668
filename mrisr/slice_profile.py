"""Slice-profile estimation: a thick-slice scan's slice profile, read from the image itself.

When no header or user says how thick a scan's slices are (or whether they
have gaps), the profile can still be measured: the in-plane directions of a
thick-slice scan are sharp, and anatomy looks much the same in every
direction. So in-plane lines, degraded with the right profile and sampled at
the slice spacing, have the same second-order statistics as the real
through-plane lines. This is the assumption of SMORE and ECLARE (Zhao et al.,
"SMORE: a self-supervised anti-aliasing and super-resolution algorithm for
MRI using deep learning", IEEE TMI 2021; Remedios et al., "ECLARE: efficient
cross-planar learning for anisotropic resolution enhancement", 2025), which
degrade in-plane data to make training pairs, and of ESPRESO (Han, Remedios
et al., "MR slice profile estimation by learning to match internal patch
distributions", IPMI 2021),
which estimates the profile by making degraded in-plane patches
indistinguishable from through-plane patches (with a GAN). Here the
"indistinguishable" test is explicit instead of learned:

1. Along the thick axis, the real lines are sampled at the slice spacing
   ``S`` mm. Their structure function (variogram) ``g(k) = E[(y[i+k] - y[i])^2]``
   at lags ``k = 1..MAX_LAG`` slices is measured over pairs of voxels that
   both hold signal.
2. In-plane lines (along each in-plane axis, spacing ``h`` mm) are degraded by
   a candidate profile with :func:`mrisr.simulate.slice_profile_matrix`, the
   same forward model mrisr trains and checks consistency with, at the
   factor ``S / h`` (in mm, so in-plane and through-plane spacings may differ),
   and the same variogram is measured on them.
3. The comparison is made symmetric (our addition, not in the papers): the
   in-plane lines of a thick-slice scan already carry the true profile along
   the thick axis, so the real thick lines are blurred in-plane by the same
   candidate before their variogram is taken. Both sides then hold one blur
   of each kind and differ only in which direction was sampled at ``S``.
   Without this the through-plane side looks too sharp and every estimate
   comes out near the narrowest candidate.
4. The candidate whose log-variogram has the same shape as the real one (an
   overall scale is free, since anatomy need not have the same contrast
   energy in every direction) wins. Candidates: the box (``"mean"``) and
   ``"gaussian"`` families, FWHM from 0.5 to 1.6 times the spacing (below
   1 is a gap), on a coarse grid and then refined around the best of each
   family.

What the variogram sees is how strongly neighbouring slices are correlated
relative to slices further apart, which the profile's width sets; it is a
one-sided aliasing measure in the spirit of SMORE's anti-aliasing argument.
The family (box or Gaussian) changes the shape of the curve much less than
the width does, so :attr:`SliceProfileEstimate.profile` is a weak guess while
:attr:`SliceProfileEstimate.fwhm_mm` is the measured quantity (see
``benchmarks/slice_profile_estimation.py`` for the accuracy on simulated scans).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.ndimage import correlate1d
from scipy.optimize import minimize_scalar

from mrisr.errors import InputError
from mrisr.geometry import MIN_ANISOTROPY, detect_thick_axis, voxel_sizes
from mrisr.simulate import PROFILES, check_profile, slice_profile_matrix
from mrisr.volume import Volume

#: Candidate FWHMs, as multiples of the slice spacing (below 1: gaps between slices).
FWHM_RANGE = (0.5, 1.6)
#: Coarse grid step of the candidate FWHMs, and the refined search's tolerance
#: (multiples of the spacing).
COARSE_STEP = 0.1
REFINE_TOLERANCE = 0.005
#: Largest variogram lag, in slices (2 measured best on the benchmark; 4 was worse on small scans).
MAX_LAG = 2
#: In-plane lines used per in-plane axis, and through-plane lines used at most.
IN_PLANE_LINES = 1200
#: Planes (holding one in-plane axis and the thick axis) blurred for the real side.
PLANES = 32
THROUGH_PLANE_LINES = 20000
#: Fewest lag-1 voxel pairs with signal that make a trustworthy estimate.
MIN_PAIRS = 200
#: Voxels above this fraction of the 99th intensity percentile hold signal.
SIGNAL_FRACTION = 0.1


@dataclass(frozen=True)
class SliceProfileEstimate:
    """A scan's slice profile, as estimated from its own voxels.

    Attributes:
        profile: ``"mean"`` (box) or ``"gaussian"``: the family that matched
            best (a weak guess: the width is what the image tells reliably).
        fwhm_mm: full width at half maximum of the profile in mm (the box's
            width: its slice thickness).
        spacing_mm: slice spacing along the thick axis in mm.
        fwhm_over_spacing: ``fwhm_mm / spacing_mm``; below 1 means gaps.
        source: where the profile came from; always ``"image"`` here.
        score: match error of the winner (mean squared difference of the
            centred log-variograms; 0 is a perfect match).
    """

    profile: str
    fwhm_mm: float
    spacing_mm: float
    fwhm_over_spacing: float
    source: str
    score: float

    @property
    def rms_width_mm(self) -> float:
        """Standard deviation of the profile in mm: what the image measures best.

        A box of width ``w`` and a Gaussian of FWHM ``0.68 w`` blur alike; both
        have this width ``w / sqrt(12)``, so it does not depend on the family.
        """
        return rms_width(self.profile, self.fwhm_mm)

    @property
    def gap_mm(self) -> float:
        """Spacing minus FWHM in mm: positive for gaps, negative for overlapping slices."""
        return self.spacing_mm - self.fwhm_mm

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description for a provenance sidecar."""
        return {**asdict(self), "rms_width_mm": self.rms_width_mm, "gap_mm": self.gap_mm}


def estimate_slice_profile(
    volume: Volume, axis: int | None = None, *, profile: str | None = None
) -> SliceProfileEstimate:
    """Estimate the slice profile of a thick-slice scan from its voxels.

    Args:
        volume: the thick-slice scan; ``data`` (X, Y, Z), affine in mm. Not modified.
        axis: the thick axis (0, 1 or 2); default detected from the spacing as
            :func:`mrisr.geometry.detect_thick_axis` does for upscaling.
        profile: the profile family when it is known (``"mean"`` or
            ``"gaussian"``): only the width is fitted. Default: both are tried
            and the better match is kept, which is a weak guess of the family.

    Returns:
        The best-matching :class:`SliceProfileEstimate` (FWHM in mm).

    Raises:
        InputError: the scan is not 3D, has non-finite voxels, is (nearly)
            isotropic or has no single thick axis (a
            :class:`~mrisr.errors.GeometryError`), has too few slices, or holds
            too little signal to measure.
    """
    source = str(volume.source) if volume.source is not None else None
    if profile is not None:
        check_profile(profile)
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise InputError(
            f"slice-profile estimation needs a 3D image, got shape {data.shape}",
            path=source,
            expected="an (X, Y, Z) volume",
            fix="pass one 3D frame",
        )
    spacing = voxel_sizes(volume.affine)
    if axis is None:
        zooms = volume.header.get_zooms() if hasattr(volume.header, "get_zooms") else None
        axis = detect_thick_axis(volume.affine, header_zooms=zooms, source=source)
    elif axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2, got {axis}", path=source, fix="pass 0, 1 or 2")
    in_plane = [a for a in range(3) if a != axis]
    slice_mm = float(spacing[axis])
    if slice_mm < MIN_ANISOTROPY * float(max(spacing[in_plane])):
        text = " x ".join(f"{s:.3g}" for s in spacing)
        raise InputError(
            f"axis {axis} is not a thick axis (spacing {text} mm): nothing sharper to compare with",
            path=source,
            expected=f"slices at least {MIN_ANISOTROPY:g} times thicker than the in-plane spacing",
            fix="pass the scan's thick axis, or give the slice thickness instead of estimating it",
        )
    if not np.isfinite(data).all():
        raise InputError(
            "contains NaN or Inf voxels",
            path=source,
            expected="finite intensities",
            fix="replace them (e.g. with 0) before estimating the slice profile",
        )
    max_lag = min(MAX_LAG, data.shape[axis] // 2)
    if max_lag < 2:
        raise InputError(
            f"has only {data.shape[axis]} slices along axis {axis}",
            path=source,
            expected="at least 4 slices to measure how neighbouring slices correlate",
            fix="give the slice thickness instead of estimating it",
        )
    threshold = SIGNAL_FRACTION * float(np.percentile(data, 99))
    through = np.moveaxis(data, axis, -1).reshape(-1, data.shape[axis])
    target, pairs = _variogram(_pick_lines(through, THROUGH_PLANE_LINES), threshold, max_lag)
    if pairs < MIN_PAIRS or not np.all(target > 0):
        raise InputError(
            f"holds too little signal to estimate its slice profile ({pairs} neighbouring "
            f"slice pairs with intensity above {threshold:.3g})",
            path=source,
            expected=f"at least {MIN_PAIRS} pairs of neighbouring voxels with signal",
            fix="give the slice thickness instead of estimating it",
        )
    directions = [_Direction.cut(data, axis, b, float(spacing[b]), slice_mm) for b in in_plane]
    directions = [item for item in directions if item is not None]
    if not directions:
        raise InputError(
            "its in-plane field of view ("
            + " x ".join(f"{data.shape[b] * float(spacing[b]):.3g}" for b in in_plane)
            + f" mm) is too small for slices of {slice_mm:.3g} mm",
            path=source,
            expected=f"in-plane lines at least {2 * MAX_LAG + 3} slice spacings long",
            fix="give the slice thickness instead of estimating it",
        )

    def score(profile: str, ratio: float) -> float:
        errors = [item.score(profile, ratio, threshold, max_lag) for item in directions]
        return float(np.mean(errors))

    coarse = np.arange(FWHM_RANGE[0], FWHM_RANGE[1] + COARSE_STEP / 2, COARSE_STEP)
    candidates = []
    for family in PROFILES if profile is None else (profile,):
        scores = [score(family, float(r)) for r in coarse]
        centre = float(coarse[int(np.argmin(scores))])
        candidates.append((min(scores), family, centre))
        # The score is smooth between grid points: a bounded 1D search refines the best one.
        bounds = (
            max(FWHM_RANGE[0], centre - COARSE_STEP),
            min(FWHM_RANGE[1], centre + COARSE_STEP),
        )
        refined = minimize_scalar(
            lambda r, family=family: score(family, float(r)),
            bounds=bounds,
            method="bounded",
            options={"xatol": REFINE_TOLERANCE},
        )
        candidates.append((float(refined.fun), family, float(refined.x)))
    error, family, ratio = min(candidates)
    return SliceProfileEstimate(
        profile=family,
        fwhm_mm=ratio * slice_mm,
        spacing_mm=slice_mm,
        fwhm_over_spacing=ratio,
        source="image",
        score=error,
    )


def rms_width(profile: str, fwhm: float) -> float:
    """Standard deviation of a ``profile`` of full width at half maximum ``fwhm`` (same unit).

    Raises:
        ConfigError: an unknown profile.
    """
    check_profile(profile)
    if profile == "mean":
        return fwhm / math.sqrt(12.0)
    return fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))  # gaussian


def _pick_lines(lines: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` rows of ``lines`` (n, L) with some signal, evenly strided (deterministic)."""
    varied = lines[np.ptp(lines, axis=1) > 0]
    if len(varied) > count:
        varied = varied[np.linspace(0, len(varied) - 1, count).round().astype(int)]
    return np.asarray(varied, np.float32)


def _variogram(lines: np.ndarray, threshold: float, max_lag: int) -> tuple[np.ndarray, int]:
    """Mean squared difference at lags 1..max_lag over pairs that both hold signal.

    Args:
        lines: (n, L) samples at the slice spacing.
        threshold: intensity above which a sample holds signal.
        max_lag: largest lag in samples.

    Returns:
        ((max_lag,) variogram, number of lag-1 pairs used).
    """
    signal = lines > threshold
    values = np.zeros(max_lag)
    pairs = 0
    for lag in range(1, max_lag + 1):
        both = signal[:, lag:] & signal[:, :-lag]
        count = int(both.sum())
        if lag == 1:
            pairs = count
        if count:
            squares = np.square(lines[:, lag:] - lines[:, :-lag])
            # A masked sum, not boolean indexing (which copies the selected pairs).
            values[lag - 1] = float(np.sum(squares, where=both, dtype=np.float64)) / count
    return values, pairs


@dataclass(frozen=True)
class _Direction:
    """One in-plane axis ``b`` of a thick-slice scan, cut into what the comparison needs.

    Attributes:
        planes: (n_planes, n_slices, n_b) voxels of some planes that hold ``b``
            and the thick axis: their through-plane lines are the real thick lines.
        voxels_b: in-plane voxels per slice spacing along ``b`` (``S / h_b``).
        segments: (n, n_in) in-plane lines along ``b``, cut to ``n_out`` whole
            slice spacings of ``n_in / n_out`` voxels each.
        n_out: slice spacings per segment.
    """

    planes: np.ndarray
    voxels_b: float
    segments: np.ndarray
    n_out: int

    @classmethod
    def cut(
        cls, data: np.ndarray, thick: int, b: int, b_mm: float, slice_mm: float
    ) -> _Direction | None:
        """Cut ``data`` for in-plane axis ``b`` (spacing ``b_mm``); None if its lines are too short."""
        length = data.shape[b]
        factor = slice_mm / b_mm
        n_out = int(np.floor(length / factor))
        if n_out < 2 * MAX_LAG + 3:
            return None
        n_in = min(length, max(n_out, int(round(n_out * factor))))
        lines = _pick_lines(np.moveaxis(data, b, -1).reshape(-1, length), IN_PLANE_LINES)
        # Different start voxels sample the anatomy at different slice phases.
        starts = np.linspace(0, length - n_in, 3).round().astype(int)
        segments = np.concatenate(
            [lines[i :: len(starts), s : s + n_in] for i, s in enumerate(starts)]
        )
        other = 3 - thick - b
        # b last and contiguous: the in-plane blur runs along memory.
        planes = np.moveaxis(data, (other, thick, b), (0, 1, 2))
        keep = np.linspace(0, planes.shape[0] - 1, min(PLANES, planes.shape[0]))
        planes = np.ascontiguousarray(planes[keep.round().astype(int)], np.float32)
        return cls(planes=planes, voxels_b=factor, segments=segments, n_out=n_out)

    def score(self, profile: str, ratio: float, threshold: float, max_lag: int) -> float:
        """Mismatch of the two variograms for a candidate profile of FWHM ``ratio`` spacings.

        Both sides are blurred by the candidate along ``b`` and by the scan's
        true profile along the thick axis; only one is sampled at the slice
        spacing along ``b``, the other along the thick axis. Blurring the real
        thick lines in-plane too matters: in-plane lines of a thick-slice
        scan have already lost the detail that the thick slices average
        away, so without it the through-plane side looks too sharp.
        """
        n_in = self.segments.shape[1]
        width = ratio * n_in / self.n_out
        matrix = slice_profile_matrix(n_in, self.n_out, profile=profile, thickness=width)
        # The outer slices' profiles are cut by the segment's ends: leave them out.
        simulated = (self.segments @ matrix.T.astype(np.float32))[:, 1:-1]
        kernel = _kernel(profile, ratio * self.voxels_b)
        blurred = correlate1d(self.planes, kernel, axis=-1, mode="nearest")
        real = np.swapaxes(blurred, 1, 2).reshape(-1, self.planes.shape[1])
        sim_values, _ = _variogram(simulated, threshold, max_lag)
        real_values, _ = _variogram(real, threshold, max_lag)
        if not (np.all(sim_values > 0) and np.all(real_values > 0)):
            return float("inf")
        diff = np.log(sim_values) - np.log(real_values)
        return float(np.mean((diff - diff.mean()) ** 2))


def _kernel(profile: str, width: float) -> np.ndarray:
    """(2h+1,) float32 convolution kernel of the profile, ``width`` voxels FWHM, unit spacing."""
    half = int(np.ceil(1.5 * width)) + 2
    size = 2 * half + 1
    return slice_profile_matrix(size, size, profile=profile, thickness=width)[half].astype(
        np.float32
    )
