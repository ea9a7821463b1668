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
(:func:`mrisr.slice_profile.estimate_slice_profile`). The budget, seed and
save path are :class:`mrisr.adapt_settings.AdaptSettings` (re-exported here).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.adapt_pairs import InPlanePairs, ScanProfile, check_adaptable, scan_profile
from mrisr.adapt_settings import (
    DEFAULT_SECONDS,
    MAX_SECONDS,
    MAX_SEED,
    MAX_STEPS,
    AdaptSettings,
    check_model_suffix,
)
from mrisr.consistency import through_plane_residual
from mrisr.errors import ConfigError, OutputError
from mrisr.simulate import check_profile
from mrisr.volume import Volume

if TYPE_CHECKING:
    import torch

    from mrisr.inference import GeneratorSliceModel
    from mrisr.models import ModelRequest
    from mrisr.upscale import SliceModel, UpscalePlan

__all__ = [
    "DEFAULT_SECONDS",
    "MAX_SECONDS",
    "MAX_SEED",
    "MAX_STEPS",
    "AdaptSettings",
    "AdaptationResult",
    "InPlanePairs",
    "ScanProfile",
    "adapt_model",
    "adapt_for_upscale",
    "check_adaptable",
    "check_model",
    "check_save_path",
    "held_out_psnr",
    "refuse_without_network",
    "save_adapted",
    "scan_profile",
    "through_plane_residual",
]

log = logging.getLogger(__name__)

#: Adam learning rate of the fine-tuning (measured: see docs/adaptation.md).
LEARNING_RATE = 1e-4
#: Pairs per step.
BATCH_SIZE = 8
#: Adapted weights are kept only when they raise the held-out PSNR by more than this (dB).
KEEP_MARGIN_DB = 0.01
#: Adapted weights are kept only when they lower the through-plane residual by at
#: least this fraction. A tie is not enough: on spine_t2_1mm (4x along axis 0, 600
#: steps) a network that matched the residual (0.00424 -> 0.00422) lost 0.25 dB,
#: while every adaptation that gained cut it by 10 % or more. It lowers the risk and
#: does not bound it: with the current `fast`, one adaptation cut the residual by 18 %
#: and lost 0.31 dB (docs/adaptation.md).
THROUGH_PLANE_MARGIN = 0.05

#: Called with (done, total) while adapting: steps, or whole seconds for a time budget.
AdaptProgress = Callable[[int, int], None]


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
        original: the model adapted from (:func:`save_adapted` never writes
            over its file).
    """

    model: SliceModel
    kept: bool
    record: dict[str, Any]
    original: SliceModel | None = None


def check_model(model: Any) -> None:
    """Refuse a model that cannot be adapted (cubic interpolation, anything without a network).

    Raises:
        ConfigError: the model holds no trainable generator.
    """
    if getattr(model, "generator", None) is None or not hasattr(model, "description"):
        name = getattr(model, "name", None)
        shown = repr(name) if isinstance(name, str) else f"{model!r} ({type(model).__name__})"
        raise ConfigError(
            f"model {shown} has no network to adapt",
            expected="a trained model (bundled, run folder or .safetensors file)",
            fix="drop --adapt (adapt=None), or adapt a trained model: leave --model out for the "
            "bundled one (model=None), or pass --model fast, a run folder or a .safetensors "
            "file (model='fast' or the path in the API)",
        )


def adapt_model(
    volume: Volume,
    model: GeneratorSliceModel | ModelRequest | str | Path | None,
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
        model: a :class:`mrisr.inference.GeneratorSliceModel` (not modified),
            a :class:`mrisr.models.ModelRequest` or a ``--model`` value
            (``"fast"``, a model file or run folder; see
            :func:`mrisr.models.choose_model`); None: the bundled model for
            the planned factor.
        plan: the scan's upscale plan; default :func:`mrisr.upscale.plan_upscale`.
        profile: its slice profile; default :func:`scan_profile` (given
            ``thickness_mm``, header, or estimated).
        settings: budget and seed (:class:`AdaptSettings`).
        thickness_mm: the slice thickness in mm, when known.
        progress: called with (done, total) steps, or (seconds, budget
            seconds) for a time budget.
        **budget: ``steps=``, ``seconds=``, ``seed=`` replacing ``settings``' fields
            (a ``steps`` or ``seconds`` given replaces the settings' budget).

    Returns:
        The :class:`AdaptationResult`.

    Raises:
        ConfigError: a model without a network, or settings
            :class:`AdaptSettings` refuses.
        InputError: a scan too small to cut patches from.
        CheckpointError: a model file that is missing, unsafe or damaged.
    """
    from mrisr.models import choose_model
    from mrisr.training.step import build_learner, pixel_step

    settings = _settings(settings, budget)
    if plan is None:
        from mrisr.upscale import plan_upscale

        plan = plan_upscale(volume)
    model = choose_model(model, plan.factor)  # type: ignore[assignment]
    check_model(model)
    check_adaptable(volume, plan)
    if profile is None:
        profile = scan_profile(volume, plan, thickness_mm)
    check_profile(profile.profile)
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
    kept, finite, after, through = _judge(model, adapted, held, before, volume, plan, thickness_mm)
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
        "through_plane_residual": through,
        "kept": kept,
        "adapted_weights_sha256": weights_sha256(adapted.state_dict()),
        "reason": _reason(kept, finite, before, after, through),
        "slice_profile": profile.to_dict(),
        "pairs": pairs.describe(),
        "base_model": {
            "name": model.name,
            "weights_sha256": model.description.get("weights_sha256"),
        },
    }
    log.info("adaptation: %s", record["reason"])
    if not kept:
        return AdaptationResult(model, False, record, model)
    return AdaptationResult(_adapted_model(model, adapted, record), True, record, model)


def _judge(
    model: GeneratorSliceModel,
    adapted: Any,
    held: list[tuple[torch.Tensor, torch.Tensor]],
    before: float,
    volume: Volume,
    plan: UpscalePlan,
    thickness_mm: float | None,
) -> tuple[bool, bool, float, dict[str, float] | None]:
    """Keep the adapted network? (kept, finite, held-out PSNR after, through-plane residuals)."""
    import torch

    finite = all(bool(torch.isfinite(p).all()) for p in adapted.parameters())
    after = held_out_psnr(adapted, held) if finite else -math.inf
    finite = finite and math.isfinite(after)
    if not (finite and after > before + KEEP_MARGIN_DB):
        return False, finite, after, None
    # The held-out pairs are made with the same slice profile as the training
    # pairs, so a wrong profile passes that check; the measured thick slices
    # are the one through-plane truth there is (docs/adaptation.md).
    through = {
        "before": through_plane_residual(model, volume, plan, thickness_mm),
        "after": through_plane_residual(_running(model, adapted), volume, plan, thickness_mm),
    }
    kept = through["after"] <= (1.0 - THROUGH_PLANE_MARGIN) * through["before"]
    return kept, finite, after, through


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


def save_adapted(result: AdaptationResult, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the model ``result`` chose as a normal model file (``--model PATH`` then uses it).

    When the adaptation was not kept this is the original model's weights
    (the description says so, and a warning is logged once it is written).

    Args:
        result: from :func:`adapt_model`.
        path: a ``.safetensors`` file; never the model adapted from, nor a
            bundled model's file.
        overwrite: replace an existing file (as ``save_volume``'s).

    Returns:
        The absolute path written.

    Raises:
        ConfigError: non-finite weights, or a path that is not ``.safetensors``.
        OutputError: the path is the model file adapted from, exists (without
            ``overwrite``), or cannot be written.
    """
    import torch

    from mrisr.checkpoint import save_model

    path = check_save_path(path, result.original, result.model, overwrite=overwrite)
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
    # save_model stores CPU copies; moving the generator itself would break it for upscaling on GPU.
    written = save_model(path, generator, name=name, description=description)
    if not result.kept:
        log.warning("adaptation was not kept: %s holds the original model's weights", written)
    return written


def check_save_path(path: str | Path, *models: Any, overwrite: bool) -> Path:
    """Refuse, before any work, a path the adapted model must not be written to.

    Args:
        path: the ``.safetensors`` file asked for (``--save-adapted``).
        *models: the models adapted from: loaded models, ``--model`` values,
            :class:`mrisr.models.ModelRequest` or None (the bundled default).
        overwrite: allow replacing an existing file that is not an input.

    Returns:
        The absolute path.

    Raises:
        ConfigError: a path that is not ``.safetensors``.
        OutputError: the file of one of ``models`` or of a bundled model (inputs,
            never written over), an existing file without ``overwrite``, a
            folder, or a missing folder.
    """
    from mrisr.io.files import check_output, same_file

    check_model_suffix(path)
    target = Path(path).expanduser().absolute()
    bundled, files = _model_files(models)
    for source in [*files, *bundled]:
        if same_file(target, source):
            what = "a bundled model's file" if source in bundled else "the model file adapted from"
            where = "" if source.absolute() == target else f" {source.absolute()}"
            raise OutputError(
                f"is {what}{where}: an input, and mrisr never writes over its input",
                path=target,
                expected="a new .safetensors path for the adapted model",
                fix="pass another --save-adapted path (save_path= in the API), e.g. "
                f"{target.name.removesuffix('.safetensors')}_adapted.safetensors",
            )
    return check_output(target, overwrite=overwrite)


def _model_files(models: tuple[Any, ...]) -> tuple[list[Path], list[Path]]:
    """(every bundled model's file, the files ``models`` read that can be found)."""
    from mrisr.checkpoint import find_model_file
    from mrisr.errors import MrisrError
    from mrisr.models import bundled_models, model_location, names_cubic

    files: list[Path] = []
    for model in models:
        spec = getattr(model, "spec", model)
        if getattr(model, "path", None) is not None:
            files.append(Path(model.path))
        elif isinstance(spec, (str, Path)) and not names_cubic(spec):
            try:  # a model that cannot be found fails when it is loaded, saying why
                files.append(find_model_file(model_location(spec)))
            except MrisrError:
                pass
    return list(bundled_models().values()), files


# ------------------------------------------------------------------- helpers


def _settings(settings: AdaptSettings | None, budget: dict[str, Any]) -> AdaptSettings:
    from dataclasses import replace

    if settings is not None and not isinstance(settings, AdaptSettings):
        raise ConfigError(
            f"settings must be an AdaptSettings or None, got {settings!r}",
            fix="pass settings=AdaptSettings(steps=200), or steps=, seconds=, seed= alone",
        )
    base = settings if settings is not None else AdaptSettings()
    unknown = sorted(set(budget) - {"steps", "seconds", "seed"})
    if unknown:
        raise ConfigError(
            f"unknown adaptation setting(s) {', '.join(unknown)}",
            expected="steps, seconds, seed",
            fix="pass steps=, seconds= or seed= (or settings=AdaptSettings(...))",
        )
    if "steps" in budget or "seconds" in budget:  # a budget given replaces the settings' one
        budget = {"steps": None, "seconds": None, **budget}
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


def _reason(
    kept: bool, finite: bool, before: float, after: float, through: dict[str, float] | None
) -> str:
    if not finite:
        return "training diverged (non-finite weights): kept the original model"
    change = f"held-out PSNR {before:.2f} -> {after:.2f} dB ({after - before:+.2f} dB)"
    if kept and through is not None:
        return (
            f"{change}, and the measured slices are reproduced better (through-plane "
            f"residual {through['before']:.2e} -> {through['after']:.2e}): kept the adapted model"
        )
    if kept:
        return f"{change}: kept the adapted model"
    if through is not None:
        return (
            f"{change}, but the output does not agree better with the measured slices "
            f"(through-plane residual {through['before']:.2e} -> {through['after']:.2e}, "
            f"{THROUGH_PLANE_MARGIN:.0%} lower needed): kept the original model"
        )
    return f"{change}: no gain above {KEEP_MARGIN_DB:g} dB, kept the original model"


def _running(
    model: GeneratorSliceModel, generator: Any, description: dict[str, Any] | None = None
) -> Any:
    """``generator`` run the way ``model`` runs (device, batches, tiles, precision).

    ``description`` replaces ``model``'s (default: ``model``'s own).
    """
    from mrisr.inference import GeneratorSliceModel

    return GeneratorSliceModel(
        generator,
        model.description if description is None else description,
        name=f"{model.name}+adapted",
        device=model.device,
        batch_size=model.batch_size,
        tile_cols=model.tile_cols,
        tile_overlap=model.tile_overlap,
        precision=model.precision,
    )


def _adapted_model(model: GeneratorSliceModel, adapted: Any, record: dict[str, Any]) -> Any:
    """A :class:`GeneratorSliceModel` running ``adapted``, described as an adaptation of ``model``."""
    import copy

    description = dict(model.description)
    description["weights_sha256"] = record["adapted_weights_sha256"]
    description["adaptation"] = {
        k: record[k] for k in ("steps", "held_out_psnr_before", "held_out_psnr_after")
    }
    description["adapted_from"] = model.description.get("weights_sha256")
    return _running(model, copy.deepcopy(adapted), description)


# ------------------------------------------------------------- upscale flow


def refuse_without_network(model: Any) -> None:
    """Refuse, before the scan is read, a ``--model`` that names cubic interpolation.

    Args:
        model: what :func:`mrisr.upscale.upscale_file` was given as ``model``.

    Raises:
        ConfigError: ``"cubic"`` (also inside a :class:`mrisr.models.ModelRequest`)
            or a loaded model without a network.
    """
    from mrisr.models import names_cubic

    spec = getattr(model, "spec", model)
    if names_cubic(spec):
        raise ConfigError(
            "--adapt needs a trained model, and --model cubic is interpolation",
            expected="a bundled model, a run folder or a .safetensors file",
            fix="drop --adapt (adapt=None in the API), or leave --model out (model=None) to "
            "adapt the bundled model",
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
    overwrite: bool = False,
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
        overwrite: replace an existing model file at ``settings.save_path``.
        progress: see :func:`adapt_model`.

    Returns:
        (the model to upscale with, the record for the sidecar: :func:`adapt_model`'s
        and ``saved_to``, the absolute path of the model file written or None).

    Raises:
        ConfigError: no network, a factor outside the model's range, non-finite weights
            to save; each naming the scan (``volume.source``).
        InputError: a scan too small to adapt on.
        OutputError: the model file cannot be written.
    """
    from mrisr.errors import naming_input
    from mrisr.upscale import check_factor_range

    # Errors about the model or settings name the scan, as upscale_volume's do.
    with naming_input(volume.source):
        # Before the minutes of adapting (upscale_volume checks it again, cheaply).
        check_factor_range(model, plan.factor, force=force)
        result = adapt_model(
            volume,
            model,  # type: ignore[arg-type]
            plan=plan,
            settings=settings,
            thickness_mm=thickness_mm,
            progress=progress,
        )
    record = {**result.record, "saved_to": None}
    if settings.save_path is not None:
        saved = save_adapted(result, settings.save_path, overwrite=overwrite)
        record["saved_to"] = str(saved)  # absolute, as options.adapt.save_path
    return result.model, record
