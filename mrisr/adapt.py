"""Per-scan adaptation: fine-tune a trained slice model on the scan's own in-plane detail.

The planes perpendicular to a thick-slice scan's thick axis are sharp. Cut
patches from them, pick one in-plane axis as the rows and degrade the rows
with the scan's own slice profile at the scan's factor
(:func:`mrisr.simulate.slice_profile_matrix`, the forward model mrisr trains
with), and the (degraded, original) patches are training pairs that match
this scan exactly, in the generator's layout (rows = the axis to upsample).
This is the self-supervision of SMORE and ECLARE (Zhao et al., IEEE TMI 2021;
Remedios et al., 2025); unlike them, mrisr starts from its pretrained model,
so a minute of fine-tuning with the training step of ``mrisr train``
(:func:`mrisr.training.step.pixel_step`, L1) is enough.

It never makes things worse on what it can measure: part of the in-plane
slices is held out (whole slices, disjoint from the training ones), the
model's PSNR on pairs cut from them is measured before and after, and the
adapted weights are kept only when they improve it; otherwise the original
model is returned and the record says so.

The slice profile comes from, in order: a thickness the user gives, the
header's (DICOM, BIDS sidecar), or an estimate from the image
(:func:`mrisr.slice_profile.estimate_slice_profile`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.errors import ConfigError, InputError
from mrisr.intensity import fit_normalisation
from mrisr.simulate import PROFILES, slice_profile_matrix
from mrisr.training.data import FOREGROUND_LEVEL, lr_rows, pair_margin
from mrisr.volume import Volume

if TYPE_CHECKING:
    import torch

    from mrisr.inference import GeneratorSliceModel
    from mrisr.upscale import SliceModel, UpscalePlan

log = logging.getLogger(__name__)

#: Training budget when neither steps nor seconds are given (about 1-2 minutes on
#: 2 CPU cores with the bundled model; see docs/adaptation.md).
DEFAULT_SECONDS = 90.0
#: Adam learning rate of the fine-tuning (measured: see docs/adaptation.md).
LEARNING_RATE = 1e-4
#: Pairs per step.
BATCH_SIZE = 8
#: Largest and smallest HR patch side (rows and columns, in-plane voxels).
MAX_PATCH = 64
MIN_PATCH = 16
#: Fewest LR rows a pair may have (the generator needs some context).
MIN_LR_ROWS = 2
#: One in-plane slice in this many (with signal) is held out.
HELD_OUT_EVERY = 5
#: Held-out pairs the before/after PSNR is measured on.
HELD_OUT_PAIRS = 48
#: Least foreground fraction of a slice for it to be used, and of a patch.
MIN_SLICE_FOREGROUND = 0.02
MIN_PATCH_FOREGROUND = 0.2
#: Adapted weights are kept only when they raise the held-out PSNR by more than this (dB).
KEEP_MARGIN_DB = 0.01

#: An image estimate of the slice width within this much (x spacing) of the searched
#: range's ends is not trusted (see :func:`scan_profile`).
BOUND_MARGIN = 0.02

#: Called with (done, total) while adapting: steps, or whole seconds for a time budget.
AdaptProgress = Callable[[int, int], None]


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class AdaptSettings:
    """How much to adapt, and what to keep.

    Attributes:
        steps: training steps (deterministic; takes precedence over ``seconds``).
        seconds: training time in seconds; default :data:`DEFAULT_SECONDS`
            when ``steps`` is not given either.
        seed: seeds the pairs drawn and torch.
        save_path: where to write the adapted model (a ``.safetensors`` file),
            or None.

    Raises:
        ConfigError: a budget of zero or less, or a save path that is not
            ``.safetensors``.
    """

    steps: int | None = None
    seconds: float | None = None
    seed: int = 0
    save_path: Path | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and (
            isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1
        ):
            raise ConfigError(
                f"adaptation budget must be at least 1 step, got {self.steps!r}",
                fix="pass --adapt-steps 1 or more, or leave it out",
            )
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(
                f"adaptation budget must be a positive number of seconds, got {self.seconds!r}",
                fix="pass --adapt-seconds > 0, or leave it out",
            )
        if self.save_path is not None and Path(self.save_path).suffix != ".safetensors":
            raise ConfigError(
                "is not a .safetensors path",
                path=self.save_path,
                expected="a model file name ending in .safetensors",
                fix="name it e.g. --save-adapted protocol.safetensors",
            )

    @property
    def budget(self) -> dict[str, Any]:
        """``{"steps": n}`` or ``{"seconds": s}``: the budget in force."""
        if self.steps is not None:
            return {"steps": int(self.steps)}
        return {"seconds": float(self.seconds if self.seconds is not None else DEFAULT_SECONDS)}


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
        return {
            "profile": self.profile,
            "fwhm_mm": self.fwhm_mm,
            "spacing_mm": self.spacing_mm,
            "fwhm_over_spacing": self.fwhm_over_spacing,
            "source": self.source,
            "estimate": self.estimate,
        }


def scan_profile(
    volume: Volume, plan: UpscalePlan, thickness_mm: float | None = None
) -> ScanProfile:
    """The scan's slice profile: given, from the header, or estimated from the image.

    A given or header thickness is a box of that width (what a slice thickness
    means for a 2D acquisition); otherwise the profile is estimated by
    :func:`mrisr.slice_profile.estimate_slice_profile`, and where that cannot
    measure (too little signal, too few slices) or its best width lies on the
    edge of the searched range (no minimum found: measured wrong on the spine
    fixtures), contiguous box slices are assumed, with a warning.

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
    from mrisr.slice_profile import FWHM_RANGE, estimate_slice_profile

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
    low, high = FWHM_RANGE
    if not low + BOUND_MARGIN < estimate.fwhm_over_spacing < high - BOUND_MARGIN:
        # The best match sits on the edge of the searched widths: no minimum was
        # found, which on small scans (the spine fixtures) means a wrong width,
        # and a wrong width makes the adapted model worse than none.
        log.warning(
            "slice profile estimate %.2f x the spacing lies on the edge of the searched range; "
            "assuming contiguous slices (pass --thickness if you know it)",
            estimate.fwhm_over_spacing,
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
        foreground = (slices > FOREGROUND_LEVEL).mean(axis=(1, 2))
        useful = np.flatnonzero(foreground >= MIN_SLICE_FOREGROUND)
        if len(useful) < 2:
            raise InputError(
                f"has {len(useful)} in-plane slice(s) with signal along axis {axis}",
                path=volume.source,
                expected="at least 2 (one to train on, one to check the adaptation on)",
                fix="upscale without --adapt",
            )
        held = useful[HELD_OUT_EVERY // 2 :: HELD_OUT_EVERY]
        self.held_out_slices = [int(i) for i in held]
        self.train_slices = [int(i) for i in useful if i not in set(held)]
        if not self.train_slices:  # two slices: one of each
            self.train_slices = [int(useful[0])]
            self.held_out_slices = [int(useful[-1])]
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


def check_adaptable(volume: Volume, plan: UpscalePlan) -> None:
    """Refuse, before any work, a scan too small to cut adaptation patches from.

    Raises:
        InputError: in-plane sides under :data:`MIN_PATCH` voxels, pairs with
            fewer than :data:`MIN_LR_ROWS` LR rows at the planned factor, or
            fewer than 2 slices.
    """
    axis = plan.axis
    in_plane = [volume.shape[a] for a in range(3) if a != axis]
    spacing = np.asarray(plan.spacing_in, float)
    finest = float(min(spacing[a] for a in range(3) if a != axis))
    smallest = min(in_plane)
    problem = None
    if smallest < MIN_PATCH:
        problem = f"its in-plane size {in_plane[0]} x {in_plane[1]} is under {MIN_PATCH} voxels"
    elif volume.shape[axis] < 2:
        problem = f"it has {volume.shape[axis]} slice along axis {axis}"
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
    if problem is not None:
        raise InputError(
            f"is too small to adapt a model to: {problem}",
            path=volume.source,
            expected=f"in-plane slices of at least {MIN_PATCH} x {MIN_PATCH} voxels spanning "
            f"at least {MIN_LR_ROWS} slice spacings, and 2 or more slices",
            fix="upscale without --adapt",
        )


# ---------------------------------------------------------------- adaptation


@dataclass
class AdaptationResult:
    """What :func:`adapt_model` returns.

    Attributes:
        model: the slice model to upscale with: the adapted copy when it
            improved the held-out PSNR, else the original model.
        kept: whether the adapted weights were kept.
        record: JSON-ready record (budget, steps, seconds, held-out PSNR
            before/after, kept, profile and its source, pairs).
    """

    model: SliceModel
    kept: bool
    record: dict[str, Any]


def check_model(model: Any) -> None:
    """Refuse a model that cannot be adapted (cubic interpolation, anything without a network).

    Raises:
        ConfigError: the model holds no trainable generator.
    """
    if getattr(model, "generator", None) is None or not hasattr(model, "description"):
        name = getattr(model, "name", type(model).__name__)
        raise ConfigError(
            f"model {name!r} has no network to adapt",
            expected="a trained model (bundled, run folder or .safetensors file)",
            fix="drop --adapt, or pass --model with a trained model (default: bundled)",
        )


def adapt_model(
    volume: Volume,
    model: GeneratorSliceModel,
    *,
    plan: UpscalePlan | None = None,
    profile: ScanProfile | None = None,
    settings: AdaptSettings | None = None,
    thickness_mm: float | None = None,
    progress: AdaptProgress | None = None,
    **budget: Any,
) -> AdaptationResult:
    """Fine-tune a copy of ``model`` on ``volume``'s own in-plane slices; keep it if it helps.

    Args:
        volume: the thick-slice scan (not modified).
        model: a :class:`mrisr.inference.GeneratorSliceModel` (not modified).
        plan: the scan's upscale plan; default :func:`mrisr.upscale.plan_upscale`.
        profile: its slice profile; default :func:`scan_profile` (given
            ``thickness_mm``, header, or estimated).
        settings: budget and seed (:class:`AdaptSettings`).
        thickness_mm: the slice thickness in mm, when known.
        progress: called with (done, total) steps, or (seconds, budget
            seconds) for a time budget.
        **budget: ``steps=``, ``seconds=``, ``seed=`` replacing ``settings``' fields.

    Returns:
        The :class:`AdaptationResult`.

    Raises:
        ConfigError: a model without a network, or a budget <= 0.
        InputError: a scan too small to cut patches from.
    """
    import torch

    from mrisr.training.step import build_learner, pixel_step

    check_model(model)
    settings = _settings(settings, budget)
    if plan is None:
        from mrisr.upscale import plan_upscale

        plan = plan_upscale(volume)
    check_adaptable(volume, plan)
    if profile is None:
        profile = scan_profile(volume, plan, thickness_mm)
    if profile.profile not in PROFILES:
        raise ConfigError(
            f"unknown slice profile {profile.profile!r}", expected=f"one of {PROFILES}"
        )
    pairs = InPlanePairs(volume, plan, profile, seed=settings.seed)
    started = time.perf_counter()
    learner = build_learner(
        _recipe(model.description),
        device=model.device,
        gan=False,
        ema_decay=0.999,
        seed=settings.seed,
    )
    learner.generator.load_state_dict(model.generator.state_dict())
    learner.ema.load_state_dict(model.generator.state_dict())
    held = [
        (_tensor(lr, learner.device), _tensor(hr, learner.device)) for lr, hr in pairs.held_out()
    ]
    before = held_out_psnr(model.generator, held)
    learner.generator.train()
    steps = 0
    limit = settings.budget
    train_start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - train_start
        if steps >= limit.get("steps", math.inf) or elapsed >= limit.get("seconds", math.inf):
            break
        lr, hr = pairs.batch(steps, BATCH_SIZE)
        losses = pixel_step(learner, _tensor(lr, learner.device), _tensor(hr, learner.device))
        steps += 1
        if progress is not None:
            if "steps" in limit:
                progress(steps, limit["steps"])
            else:
                spent = time.perf_counter() - train_start
                progress(min(int(spent), int(limit["seconds"])), int(math.ceil(limit["seconds"])))
        if steps % 50 == 0 and not math.isfinite(float(losses["pixel"])):
            break
    train_seconds = time.perf_counter() - train_start
    adapted = learner.ema.eval()
    finite = all(bool(torch.isfinite(p).all()) for p in adapted.parameters())
    after = held_out_psnr(adapted, held) if finite else -math.inf
    finite = finite and math.isfinite(after)
    kept = finite and after > before + KEEP_MARGIN_DB
    from mrisr.checkpoint import weights_sha256

    record = {
        "budget": limit,
        "steps": steps,
        "train_seconds": round(train_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "seed": settings.seed,
        "learning_rate": LEARNING_RATE,
        "batch_size": BATCH_SIZE,
        "weights": "ema",
        "held_out_psnr_before": before,
        "held_out_psnr_after": after if math.isfinite(after) else None,
        "held_out_gain_db": (after - before) if math.isfinite(after) else None,
        "kept": kept,
        "adapted_weights_sha256": weights_sha256(adapted.state_dict()),
        "reason": _reason(kept, finite, before, after),
        "slice_profile": profile.to_dict(),
        "pairs": pairs.describe(),
        "base_model": {
            "name": model.name,
            "weights_sha256": model.description.get("weights_sha256"),
        },
    }
    log.info("adaptation: %s", record["reason"])
    if not kept:
        return AdaptationResult(model, False, record)
    return AdaptationResult(_adapted_model(model, adapted, record), True, record)


def held_out_psnr(generator: Any, held: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """PSNR (dB, peak 1 in normalised intensities) of ``generator`` on held-out pairs.

    Args:
        generator: ``forward(lr (B, 1, rows, P), out_rows) -> (B, 1, out_rows, P)``.
        held: [(lr, hr), ...] batches.

    Returns:
        ``10 log10(1 / MSE)`` over every pixel of every batch.
    """
    import torch

    was_training = generator.training
    generator.eval()
    errors, count = 0.0, 0
    with torch.inference_mode():
        for lr, hr in held:
            out = generator(lr, hr.shape[-2]).float()
            errors += float(((out - hr) ** 2).sum())
            count += hr.numel()
    generator.train(was_training)
    mse = errors / max(count, 1)
    if not math.isfinite(mse):
        return -math.inf  # a diverged network: worse than anything
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def save_adapted(result: AdaptationResult, path: str | Path) -> Path:
    """Write the model ``result`` chose as a normal model file (``--model PATH`` then uses it).

    When the adaptation was not kept this is the original model's weights
    (the description says so).

    Args:
        result: from :func:`adapt_model`.
        path: a ``.safetensors`` file (replaced if it exists).

    Returns:
        The path written.

    Raises:
        ConfigError: non-finite weights, or a path that is not ``.safetensors``.
        OutputError: the file cannot be written.
    """
    import torch

    from mrisr.checkpoint import save_model

    model = result.model
    generator = model.generator  # type: ignore[attr-defined]
    if not all(bool(torch.isfinite(p).all()) for p in generator.state_dict().values()):
        raise ConfigError(
            "the adapted model has non-finite weights and was not saved",
            path=path,
            fix="adapt again with fewer steps, or use the original model",
        )
    description = dict(model.description)  # type: ignore[attr-defined]
    description["adaptation"] = result.record
    name = description["generator"]["name"]
    if not result.kept:
        log.warning("adaptation was not kept: %s holds the original model's weights", path)
    return save_model(path, generator.to("cpu"), name=name, description=description)


# ------------------------------------------------------------------- helpers


def _settings(settings: AdaptSettings | None, budget: dict[str, Any]) -> AdaptSettings:
    from dataclasses import replace

    base = settings if settings is not None else AdaptSettings()
    unknown = sorted(set(budget) - {"steps", "seconds", "seed"})
    if unknown:
        raise ConfigError(
            f"unknown adaptation setting(s) {', '.join(unknown)}",
            expected="steps, seconds, seed",
        )
    return replace(base, **budget) if budget else base


def _recipe(description: dict[str, Any]) -> Any:
    """A pixel-loss recipe for the model's own generator, at :data:`LEARNING_RATE`."""
    from mrisr.recipes import LossWeights, ResolvedRecipe

    betas = (description.get("training") or {}).get("betas") or (0.9, 0.99)
    return ResolvedRecipe(
        recipe=str(description.get("recipe") or "adapt"),
        generator=description["generator"]["name"],
        generator_kwargs=dict(description["generator"]["config"]),
        discriminator=None,
        discriminator_kwargs={},
        pixel_loss="l1",
        adversarial_loss=None,
        weights=LossWeights(),
        perceptual_layers={},
        perceptual_criterion="l1",
        lr_pretrain=LEARNING_RATE,
        lr_g=LEARNING_RATE,
        lr_d=LEARNING_RATE,
        betas=(float(betas[0]), float(betas[1])),
    )


def _tensor(array: np.ndarray, device: Any) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


def _reason(kept: bool, finite: bool, before: float, after: float) -> str:
    if not finite:
        return "training diverged (non-finite weights): kept the original model"
    change = f"held-out PSNR {before:.2f} -> {after:.2f} dB ({after - before:+.2f} dB)"
    if kept:
        return f"{change}: kept the adapted model"
    return f"{change}: no gain above {KEEP_MARGIN_DB:g} dB, kept the original model"


def _adapted_model(model: GeneratorSliceModel, adapted: Any, record: dict[str, Any]) -> Any:
    """A :class:`GeneratorSliceModel` running ``adapted``, described as an adaptation of ``model``."""
    import copy

    from mrisr.inference import GeneratorSliceModel

    description = dict(model.description)
    description["weights_sha256"] = record["adapted_weights_sha256"]
    description["adaptation"] = {
        k: record[k] for k in ("steps", "held_out_psnr_before", "held_out_psnr_after")
    }
    description["adapted_from"] = model.description.get("weights_sha256")
    return GeneratorSliceModel(
        copy.deepcopy(adapted),
        description,
        name=f"{model.name}+adapted",
        device=model.device,
        batch_size=model.batch_size,
        tile_cols=model.tile_cols,
        tile_overlap=model.tile_overlap,
    )


# ------------------------------------------------------------- upscale flow


def refuse_without_network(model: Any) -> None:
    """Refuse, before the scan is read, a ``--model`` that names cubic interpolation.

    Args:
        model: what :func:`mrisr.upscale.upscale_file` was given as ``model``.

    Raises:
        ConfigError: ``"cubic"`` (also inside a :class:`mrisr.models.ModelRequest`)
            or a loaded model without a network.
    """
    spec = getattr(model, "spec", model)
    if isinstance(spec, str) and spec.strip().lower() == "cubic":
        raise ConfigError(
            "--adapt needs a trained model, and --model cubic is interpolation",
            expected="a bundled model, a run folder or a .safetensors file",
            fix="drop --adapt, or leave --model out to adapt the bundled model",
        )
    if model is not None and not isinstance(model, (str, Path)) and not hasattr(model, "spec"):
        check_model(model)


def adapt_for_upscale(
    volume: Volume,
    plan: UpscalePlan,
    model: SliceModel,
    settings: AdaptSettings,
    *,
    thickness_mm: float | None = None,
    force: bool = False,
    progress: AdaptProgress | None = None,
) -> tuple[SliceModel, dict[str, Any]]:
    """The upscale flow's adaptation step: checks, :func:`adapt_model`, the optional model file.

    Args:
        volume: the loaded scan.
        plan: its plan.
        model: the chosen model.
        settings: budget, seed and save path.
        thickness_mm: the user's slice thickness (``--thickness``).
        force: allow a factor outside the model's range.
        progress: see :func:`adapt_model`.

    Returns:
        (the model to upscale with, the record for the sidecar).

    Raises:
        ConfigError: no network, a factor outside the model's range, non-finite weights to save.
        InputError: a scan too small to adapt on.
        OutputError: the model file cannot be written.
    """
    from mrisr.upscale import check_factor_range

    check_model(model)
    check_adaptable(volume, plan)
    check_factor_range(model, plan.factor, force=force)
    result = adapt_model(
        volume,
        model,  # type: ignore[arg-type]
        plan=plan,
        settings=settings,
        thickness_mm=thickness_mm,
        progress=progress,
    )
    record = dict(result.record)
    if settings.save_path is not None:
        record["saved_to"] = str(save_adapted(result, settings.save_path).resolve())
    return result.model, record
