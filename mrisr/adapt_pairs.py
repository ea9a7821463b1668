"""The scan's own training pairs for per-scan adaptation, and the slice profile they use.

The planes perpendicular to a thick-slice scan's thick axis are sharp.
:class:`InPlanePairs` cuts patches from them, takes one in-plane axis as the
rows and degrades the rows with the scan's slice profile at the scan's factor
(:func:`mrisr.simulate.slice_profile_matrix`, the forward model mrisr trains
with), giving (LR, HR) pairs in the generator's layout (rows = the axis to
upsample), as SMORE and ECLARE do (Zhao et al., IEEE TMI 2021; Remedios et
al., 2025). Whole in-plane slices are held out to check the adaptation on.
:func:`scan_profile` says which profile: given, from the header, or estimated
from the image. :func:`check_adaptable` refuses scans too small for this.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.errors import InputError
from mrisr.intensity import fit_normalisation
from mrisr.simulate import slice_profile_matrix
from mrisr.training.pairs import FOREGROUND_LEVEL, lr_rows, pair_margin
from mrisr.volume import Volume

if TYPE_CHECKING:
    from mrisr.upscale import UpscalePlan

log = logging.getLogger(__name__)

#: Largest and smallest HR patch side (rows and columns, in-plane voxels).
MAX_PATCH = 64
MIN_PATCH = 16
#: Fewest LR rows a pair may have (the generator needs some context).
MIN_LR_ROWS = 2
#: One in-plane slice in this many (with signal) is held out, starting with the third.
HELD_OUT_EVERY = 5
#: Fewest slices with signal a scan may have: one held out (the third) and two to train on.
MIN_SLICES = 3
#: Held-out pairs the before/after PSNR is measured on.
HELD_OUT_PAIRS = 48
#: Least foreground fraction of a slice for it to be used, and of a patch.
MIN_SLICE_FOREGROUND = 0.02
MIN_PATCH_FOREGROUND = 0.2
#: Image estimates of the slice width (x spacing) used as they are; outside, contiguous
#: slices are assumed (see :func:`scan_profile`).
TRUSTED_ESTIMATE = (0.8, 1.5)


@dataclass(frozen=True)
class ScanProfile:
    """The slice profile of a scan along its thick axis, and where it came from.

    Attributes:
        profile: ``"mean"`` (box) or ``"gaussian"``.
        fwhm_mm: full width at half maximum (a box's width: the slice thickness), mm.
        spacing_mm: slice spacing along the thick axis, mm.
        source: ``"given"``, ``"header"``, ``"estimated"`` or ``"spacing"``
            (assumed contiguous because the estimate failed).
        estimate: the image estimate's record when one was made, else None.
    """

    profile: str
    fwhm_mm: float
    spacing_mm: float
    source: str
    estimate: dict[str, Any] | None = None

    @property
    def fwhm_over_spacing(self) -> float:
        """Width relative to the spacing: below 1 means gaps between slices."""
        return self.fwhm_mm / self.spacing_mm

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description for a provenance sidecar."""
        return {**asdict(self), "fwhm_over_spacing": self.fwhm_over_spacing}


def scan_profile(
    volume: Volume, plan: UpscalePlan, thickness_mm: float | None = None
) -> ScanProfile:
    """The scan's slice profile: given, from the header, or estimated from the image.

    A given or header thickness is a box of that width (what a slice thickness
    means for a 2D acquisition); otherwise the profile is estimated by
    :func:`mrisr.slice_profile.estimate_slice_profile`, and where that cannot
    measure (too little signal, too few slices) or its width lies outside
    :data:`TRUSTED_ESTIMATE` (0.8-1.5 x the spacing: narrower estimates were
    measured wrong, and harmful, on the spine fixture and a brain crop),
    contiguous box slices are assumed, with a warning.

    Args:
        volume: the thick-slice scan.
        plan: its upscale plan (thick axis and spacing).
        thickness_mm: a slice thickness given by the user, mm.

    Returns:
        The :class:`ScanProfile`.

    Raises:
        ConfigError: a given thickness that is not a positive number.
    """
    from mrisr.consistency import slice_thickness
    from mrisr.slice_profile import estimate_slice_profile

    known = slice_thickness(volume, plan, thickness_mm)
    spacing = known["slice_spacing_mm"]
    if known["slice_thickness_source"] in ("given", "header"):
        return ScanProfile(
            "mean", known["slice_thickness_mm"], spacing, known["slice_thickness_source"]
        )
    try:
        estimate = estimate_slice_profile(volume, plan.axis)
    except InputError as error:
        log.warning("slice profile not estimated (%s); assuming contiguous slices", error)
        return ScanProfile("mean", spacing, spacing, "spacing", {"error": str(error)})
    low, high = TRUSTED_ESTIMATE
    if not low <= estimate.fwhm_over_spacing <= high:
        # Measured: estimates of 0.50 and 0.52 x the spacing on the spine fixture and
        # a 128-voxel crop of ixi002_t2 (truth 1.0) made the adapted model 0.5-0.9 dB
        # worse through-plane, and the held-out check cannot see it (its pairs use the
        # same profile). Contiguous slices are what the models were trained on.
        log.warning(
            "slice profile estimated from the image (%.2f x the spacing) is outside the "
            "trusted %.2f-%.2f; assuming contiguous slices (pass --thickness if you know it)",
            estimate.fwhm_over_spacing,
            low,
            high,
        )
        return ScanProfile("mean", spacing, spacing, "spacing", estimate.to_dict())
    return ScanProfile(estimate.profile, estimate.fwhm_mm, spacing, "estimated", estimate.to_dict())


# --------------------------------------------------------------------- pairs


@dataclass
class _Direction:
    """In-plane slices laid out with one in-plane axis as rows, and how to degrade them.

    Attributes:
        planes: (S, rows, cols) normalised in-plane slices, rows = the axis degraded.
        rows_axis: that axis of the volume.
        patch: HR patch side.
        rows_lr: LR rows of a pair.
        matrix: (rows_lr + 2 m_lr, patch + 2 m_hr) slice-profile weights.
        margins: (m_hr, m_lr).
        factor: the factor asked (thick spacing over this axis's spacing, mm).
        foreground: (S, rows, cols) bool, where ``planes`` hold signal.
    """

    planes: np.ndarray = field(repr=False)
    rows_axis: int
    patch: int
    rows_lr: int
    matrix: np.ndarray = field(repr=False)
    margins: tuple[int, int]
    factor: float
    foreground: np.ndarray = field(repr=False)

    def pair(self, index: int, row0: int, col0: int) -> tuple[np.ndarray, np.ndarray]:
        """(lr (rows_lr, P), hr (P, P)) from slice ``index``, zero outside the slice."""
        m_hr, m_lr = self.margins
        size = self.patch
        plane = self.planes[index]
        window = np.zeros((size + 2 * m_hr, size), np.float32)
        r0, r1 = max(row0 - m_hr, 0), min(row0 + size + m_hr, plane.shape[0])
        c0, c1 = max(col0, 0), min(col0 + size, plane.shape[1])
        window[r0 - row0 + m_hr : r1 - row0 + m_hr, c0 - col0 : c1 - col0] = plane[r0:r1, c0:c1]
        lr = (self.matrix @ window)[m_lr : m_lr + self.rows_lr]
        return lr.astype(np.float32), window[m_hr : m_hr + size]


class InPlanePairs:
    """(LR, HR) pairs cut from a scan's own in-plane slices, split into training and held out.

    Args:
        volume: the thick-slice scan (not modified).
        plan: its upscale plan.
        profile: its slice profile.
        seed: picks the held-out pairs.

    Raises:
        InputError: the scan is too small to cut patches from, or has too
            few in-plane slices with signal to hold some out.
    """

    def __init__(
        self, volume: Volume, plan: UpscalePlan, profile: ScanProfile, *, seed: int = 0
    ) -> None:
        check_adaptable(volume, plan)
        data = fit_normalisation(volume.data).apply(volume.data)
        axis = plan.axis
        in_plane = [a for a in range(3) if a != axis]
        # (S, b, c): the in-plane slices, in volume order.
        slices = np.moveaxis(data, axis, 0).astype(np.float32)
        spacing = np.asarray(plan.spacing_in, float)
        finest = float(spacing[in_plane].min())
        self.directions: list[_Direction] = []
        for position, rows_axis in enumerate(in_plane):
            planes = slices if position == 0 else np.swapaxes(slices, 1, 2)
            # The factor the model will run at, in mm for this axis: the default
            # plan's factor is thick spacing / finest in-plane spacing.
            factor = plan.factor * finest / float(spacing[rows_axis])
            size = _patch_size(min(slices.shape[1:]), factor)
            rows = lr_rows(size, factor)
            m_hr, m_lr = pair_margin(size, rows)
            width = profile.fwhm_over_spacing * size / rows  # in HR voxels
            matrix = slice_profile_matrix(
                size + 2 * m_hr, rows + 2 * m_lr, profile=profile.profile, thickness=width
            ).astype(np.float32)
            self.directions.append(
                _Direction(
                    planes=np.ascontiguousarray(planes),
                    rows_axis=rows_axis,
                    patch=size,
                    rows_lr=rows,
                    matrix=matrix,
                    margins=(m_hr, m_lr),
                    factor=factor,
                    foreground=np.ascontiguousarray(planes > FOREGROUND_LEVEL),
                )
            )
        # check_adaptable refused fewer than MIN_SLICES slices with signal, so both
        # sets hold at least one slice.
        useful = _slices_with_signal(slices)
        held = useful[HELD_OUT_EVERY // 2 :: HELD_OUT_EVERY]
        self.held_out_slices = [int(i) for i in held]
        self.train_slices = [int(i) for i in useful if i not in set(held)]
        self.seed = int(seed)
        self._held: list[tuple[np.ndarray, np.ndarray]] | None = None

    def batch(self, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The training pairs of ``step``: (lr (B, 1, rows_lr, P), hr (B, 1, P, P)).

        Steps alternate the two in-plane axes as rows; pairs depend only on
        (seed, step).
        """
        rng = np.random.default_rng([self.seed, int(step)])
        direction = self.directions[step % len(self.directions)]
        return _stack(
            [self._draw(rng, direction, self.train_slices, flips=True) for _ in range(size)]
        )

    def held_out(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Fixed held-out batches, one per direction: [(lr, hr), ...] as in :meth:`batch`."""
        if self._held is None:
            rng = np.random.default_rng([self.seed, 2**31])
            count = max(1, HELD_OUT_PAIRS // len(self.directions))
            self._held = [
                _stack(
                    [self._draw(rng, d, self.held_out_slices, flips=False) for _ in range(count)]
                )
                for d in self.directions
            ]
        return self._held

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of the pairs."""
        return {
            "train_slices": len(self.train_slices),
            "held_out_slices": self.held_out_slices,
            "directions": [
                {
                    "rows_axis": d.rows_axis,
                    "factor": d.factor,
                    "patch": d.patch,
                    "rows_lr": d.rows_lr,
                    "effective_factor": d.patch / d.rows_lr,
                }
                for d in self.directions
            ],
        }

    def _draw(
        self, rng: np.random.Generator, direction: _Direction, slices: list[int], *, flips: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """One pair around a foreground pixel of a random slice of ``slices``."""
        size = direction.patch
        lr = hr = None
        for _ in range(10):  # redraw mostly-background patches, as training does
            index = int(slices[rng.integers(len(slices))])
            mask = direction.foreground[index]
            points = np.argwhere(mask)
            centre = points[rng.integers(len(points))] if len(points) else np.array([0, 0])
            row0 = _place(int(centre[0]) - int(rng.integers(size)), size, mask.shape[0])
            col0 = _place(int(centre[1]) - int(rng.integers(size)), size, mask.shape[1])
            lr, hr = direction.pair(index, row0, col0)
            if np.mean(hr > FOREGROUND_LEVEL) >= MIN_PATCH_FOREGROUND:
                break
        assert lr is not None and hr is not None  # the loop runs at least once
        if flips and rng.random() < 0.5:
            lr, hr = lr[::-1], hr[::-1]
        if flips and rng.random() < 0.5:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        return lr, hr


def _stack(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    lr = np.stack([np.ascontiguousarray(p[0]) for p in pairs])[:, None]
    hr = np.stack([np.ascontiguousarray(p[1]) for p in pairs])[:, None]
    return lr, hr


def _place(start: int, size: int, length: int) -> int:
    """Clamp a patch start so the patch lies inside [0, length) when it fits."""
    if length <= size:
        return (length - size) // 2
    return min(max(start, 0), length - size)


def _patch_size(smallest: int, factor: float) -> int:
    """Even HR patch side <= the slice's smaller side whose LR grid best fits ``factor``.

    Among even sides within 16 of the largest allowed, the one whose effective
    factor ``P / round(P / factor)`` is nearest ``factor`` (larger on ties).
    """
    largest = min(MAX_PATCH, smallest - smallest % 2)
    sides = range(largest, max(MIN_PATCH, largest - 16) - 1, -2)
    return min(sides, key=lambda p: (abs(p / lr_rows(p, factor) - factor), -p), default=largest)


def _slices_with_signal(slices: np.ndarray) -> np.ndarray:
    """Indices of the (S, b, c) normalised in-plane slices with enough foreground to use."""
    foreground = (slices > FOREGROUND_LEVEL).mean(axis=(1, 2))
    return np.flatnonzero(foreground >= MIN_SLICE_FOREGROUND)


def check_adaptable(volume: Volume, plan: UpscalePlan) -> None:
    """Refuse, before any work, a scan too small to cut adaptation patches from.

    Raises:
        InputError: in-plane sides under :data:`MIN_PATCH` voxels, pairs with
            fewer than :data:`MIN_LR_ROWS` LR rows at the planned factor, or
            fewer than :data:`MIN_SLICES` slices (with signal): whole slices
            are held out to check the adaptation on.
    """
    axis = plan.axis
    in_plane = [volume.shape[a] for a in range(3) if a != axis]
    spacing = np.asarray(plan.spacing_in, float)
    finest = float(min(spacing[a] for a in range(3) if a != axis))
    smallest = min(in_plane)
    problem = None
    if smallest < MIN_PATCH:
        problem = f"its in-plane size {in_plane[0]} x {in_plane[1]} is under {MIN_PATCH} voxels"
    elif volume.shape[axis] < MIN_SLICES:
        problem = f"it has {volume.shape[axis]} slice(s) along axis {axis}"
    else:
        for a in range(3):
            if a == axis:
                continue
            factor = plan.factor * finest / float(spacing[a])
            size = _patch_size(smallest, factor)
            if lr_rows(size, factor) < MIN_LR_ROWS:
                problem = (
                    f"a {size}-voxel in-plane patch holds under {MIN_LR_ROWS} slices "
                    f"at factor {factor:.3g}"
                )
    if problem is None:
        data = fit_normalisation(volume.data).apply(volume.data)
        useful = len(_slices_with_signal(np.moveaxis(data, axis, 0)))
        if useful < MIN_SLICES:
            problem = (
                f"only {useful} of its {volume.shape[axis]} slices along axis {axis} hold signal"
            )
    if problem is not None:
        raise InputError(
            f"is too small to adapt a model to: {problem}",
            path=volume.source,
            expected=f"in-plane slices of at least {MIN_PATCH} x {MIN_PATCH} voxels spanning "
            f"at least {MIN_LR_ROWS} slice spacings, and {MIN_SLICES} or more slices with "
            "signal (one is held out to check the adaptation on, the rest train it)",
            fix="upscale without --adapt",
        )
