"""The training loop: pixel-loss warm-up, GAN stage, EMA, AMP, DDP, resume, logging.

Read top to bottom, :func:`run_training` does:

1. processes: one, or one per GPU/CPU worker under ``torchrun`` (DDP);
2. the run folder: ``config.yaml`` written, or on ``resume`` the saved state read;
3. data: volumes found, one held out, a stream of random (LR, HR) patch pairs;
4. models: the recipe's generator (starting as cubic interpolation), its
   exponential moving average (EMA), and for the GAN stage a discriminator;
5. the loop over steps ``0 .. steps + gan_steps``:

   * stage 1 (``steps``): pixel loss only, Adam at ``lr_pretrain``;
   * stage 2 (``gan_steps``, recipes with an adversarial loss): the generator
     restarts from the stage-1 EMA weights with fresh Adam states and trains
     against the discriminator with the recipe's weighted losses (ESRGAN's
     ``optimize_parameters``: a generator step, then a discriminator step);

   validating, logging and saving every so many steps.

Run folder (``config.out``)::

    config.yaml          the whole config (rewritten on resume)
    model.safetensors    EMA generator of the latest save; when the run is
                         complete, its final model (the GAN model when there
                         is a GAN stage, else the stage-1 model)
    model_psnr.safetensors  EMA generator at the end of stage 1, written only
                         when a GAN stage follows (the PSNR-oriented model)
    state.pt             everything --resume needs (weights-only torch file)
    log.jsonl            one JSON object per line: start, losses, validation, saves
    tensorboard/         curves, when tensorboard is installed and enabled

Under DDP (``torchrun --nproc-per-node N -m mrisr train ...``) each process
draws its own pairs (``data.batch_size`` per process), gradients are averaged,
and only rank 0 validates, logs and writes files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mrisr.config import TrainConfig, config_differences, load_config, save_config, to_dict
from mrisr.device import resolve_device
from mrisr.errors import CheckpointError, ConfigError, InputError, OutputError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
PSNR_MODEL_FILE = "model_psnr.safetensors"
STATE_FILE = "state.pt"
LOG_FILE = "log.jsonl"

#: Settings that may change when a run is resumed (they do not change the maths).
RESUMABLE_CHANGES = (
    "out",
    "device",
    "threads",
    "compile",
    "tensorboard",
    "data.workers",
    "schedule.steps",
    "schedule.gan_steps",
    "schedule.val_every",
    "schedule.log_every",
    "schedule.save_every",
)


@dataclass(frozen=True)
class TrainEvent:
    """What :func:`train` reports to its ``callback`` (rank 0 only).

    Attributes:
        kind: ``start``, ``step``, ``log``, ``validation``, ``save`` or ``end``.
        step: steps done so far.
        total: steps of the whole run.
        stage: ``psnr`` (stage 1) or ``gan``.
        values: losses and rates (``log``), metrics (``validation``), file (``save``).
    """

    kind: str
    step: int
    total: int
    stage: str
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What :func:`run_training` leaves behind.

    Attributes:
        run_dir: the run folder.
        generator: the trained generator (raw weights, not the EMA).
        ema: the EMA generator (what the model files hold).
        step: steps done.
        validation: the last validation metrics (empty without a held-out volume).
    """

    run_dir: Path
    generator: nn.Module
    ema: nn.Module
    step: int
    validation: dict[str, float]


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    callback: Callable[[TrainEvent], None] | None = None,
) -> Path:
    """Train a slice super-resolution model; see the module docstring.

    Args:
        config: all settings (``config.out`` and ``config.data.volumes`` are required).
        resume: continue the run in ``config.out`` from its ``state.pt``.
        callback: called with a :class:`TrainEvent` on rank 0 (progress bars).

    Returns:
        The run folder.
    """
    return run_training(config, resume=resume, callback=callback).run_dir


def run_training(
    config: TrainConfig,
    *,
    resume: bool = False,
    callback: Callable[[TrainEvent], None] | None = None,
) -> TrainResult:
    """:func:`train`, returning the trained networks as well (tests, notebooks)."""
    # ---------------------------------------------------------- 1. processes
    procs = _Processes.start(config.device)
    try:
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        return _run(config, procs, resume=resume, callback=callback)
    finally:
        procs.stop()


def _run(
    config: TrainConfig,
    procs: _Processes,
    *,
    resume: bool,
    callback: Callable[[TrainEvent], None] | None,
) -> TrainResult:
    from torch.nn.parallel import DistributedDataParallel

    from mrisr.checkpoint import (
        DEFAULT_NORMALISATION,
        capture_rng_state,
        load_training_state,
        restore_rng_state,
        save_model,
        save_training_state,
    )
    from mrisr.data import (
        PairDataset,
        Validator,
        find_volumes,
        load_training_volumes,
        make_loader,
        read_volume,
        split_validation,
        volume_name,
    )
    from mrisr.losses import (
        ADVERSARIAL_LOSSES,
        build_perceptual_loss,
        feature_matching_loss,
        pixel_loss,
        texture_loss,
    )
    from mrisr.networks import build_discriminator, build_generator, zero_last_layer
    from mrisr.networks.discriminators import MIN_PATCH
    from mrisr.recipes import resolve
    from mrisr.slices import PAIR_KINDS

    device, main = procs.device, procs.rank == 0
    emit = callback if (callback is not None and main) else (lambda event: None)

    # ------------------------------------------------------- 2. run folder
    if config.out is None:
        raise ConfigError(
            "no run folder given", fix="pass --out RUN_DIR (or set out: in the config)"
        )
    if config.data.volumes is None:
        raise ConfigError("no training volumes given", fix="pass --volumes DIR (or data.volumes)")
    run_dir = Path(config.out)
    state: dict[str, Any] | None = None
    if resume:
        if not (run_dir / STATE_FILE).is_file():
            raise CheckpointError(
                f"has no {STATE_FILE} to resume from",
                path=run_dir,
                fix="check --out, or start the run without --resume",
            )
        state = load_training_state(run_dir / STATE_FILE, map_location=device)
        _check_resumable(config, run_dir, state)
    elif (run_dir / STATE_FILE).exists() or (run_dir / MODEL_FILE).exists():
        raise OutputError(
            "already holds a training run",
            path=run_dir,
            fix="pass --resume to continue it, or choose another --out",
        )
    start_step = int(state["step"]) if state else 0

    # ------------------------------------------------------------- 3. data
    all_paths = find_volumes(config.data.volumes)
    while True:
        train_paths, val_path = split_validation(all_paths, config.data.val_volume)
        try:
            held_out = read_volume(val_path) if val_path is not None else None
            break
        except (InputError, OSError, ValueError, EOFError) as error:
            # As for training volumes: skip an unreadable one, unless it was asked for by name.
            if config.data.val_volume != "auto" or len(all_paths) < 2:
                raise
            log.warning("skipping %s: %s", val_path, error)
            all_paths = [p for p in all_paths if p != val_path]
    volumes = load_training_volumes(train_paths, seed=config.seed)
    kinds = [kind for kind in PAIR_KINDS if kind[0] in config.data.axes]
    dataset = PairDataset(
        volumes,
        patch_size=config.data.patch_size,
        factor_bounds=config.data.factor_bounds,
        batch_size=config.data.batch_size,
        kinds=kinds,
        profile=config.data.profile,
        min_foreground=config.data.min_foreground,
        seed=config.seed,
        rank=procs.rank,
    )
    validator = None
    if main and held_out is not None:
        validator = Validator(
            held_out,
            factor=config.data.factor,
            axes=config.data.axes,
            profile=config.data.profile,
            crop=config.data.val_crop,
            batch_size=max(config.data.batch_size, 16),
        )
    held_out = None  # the validator keeps its own crop
    log.info(
        "training on %s; validating on %s",
        ", ".join(v.name for v in volumes),
        volume_name(val_path) if val_path else "nothing",
    )

    # ----------------------------------------------------------- 4. models
    perceptual = None
    if config.loss.perceptual_weights:
        from mrisr.recipes import get_recipe

        recipe = get_recipe(config.model.recipe)
        perceptual = build_perceptual_loss(
            config.loss.perceptual_weights, recipe.perceptual_layers, recipe.perceptual_criterion
        ).to(device)
    plan = resolve(config, perceptual_available=perceptual is not None)
    weights = plan.weights
    gan = config.schedule.gan_steps > 0 and plan.adversarial_loss is not None
    if config.schedule.gan_steps > 0 and not gan:
        log.warning(
            "recipe %s has no GAN stage: ignoring gan_steps=%d",
            plan.recipe,
            config.schedule.gan_steps,
        )
    if gan and config.data.patch_size < MIN_PATCH:
        raise ConfigError(
            f"data.patch_size {config.data.patch_size} is below the discriminators' minimum {MIN_PATCH}",
            fix=f"use --patch-size {MIN_PATCH} or more, or --gan-steps 0",
        )
    steps = config.schedule.steps
    total = steps + (config.schedule.gan_steps if gan else 0)
    if start_step > total:
        raise ConfigError(
            f"the saved state is at step {start_step}, past the {total} steps configured",
            fix="raise --steps/--gan-steps to continue training",
        )

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    generator = zero_last_layer(build_generator(plan.generator, **plan.generator_kwargs)).to(device)
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    discriminator = None
    if gan:
        discriminator = build_discriminator(plan.discriminator, **plan.discriminator_kwargs).to(
            device
        )
    cuda_amp = device.type == "cuda" and config.amp
    if cuda_amp:  # channels-last makes convolutions faster under bf16 on recent GPUs
        for net in (generator, ema, discriminator):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if cuda_amp
        else contextlib.nullcontext
    )

    # What the loop calls: DDP-wrapped (and optionally compiled) forward passes.
    g_forward: nn.Module = CascadeForward(generator)
    d_forward: nn.Module | None = discriminator
    if procs.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        g_forward = DistributedDataParallel(g_forward, device_ids=ids)
        if discriminator is not None:
            d_forward = DistributedDataParallel(discriminator, device_ids=ids)
    if config.compile:
        g_forward = torch.compile(g_forward)
        if d_forward is not None:
            d_forward = torch.compile(d_forward)

    def new_adam(net: nn.Module, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            net.parameters(), lr=lr, betas=plan.betas, weight_decay=config.optim.weight_decay
        )

    in_gan = start_step >= steps and gan
    opt_g = new_adam(generator, plan.lr_g if in_gan else plan.lr_pretrain)
    opt_d = new_adam(discriminator, plan.lr_d) if discriminator is not None else None
    last_val: dict[str, float] = {}
    if state is not None:
        generator.load_state_dict(state["generator"])
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        if in_gan and discriminator is not None and state.get("discriminator") is not None:
            discriminator.load_state_dict(state["discriminator"])
            opt_d.load_state_dict(state["opt_d"])  # type: ignore[union-attr]
        restore_rng_state(state["rng"])
        last_val = dict(state.get("validation") or {})
    adversarial = ADVERSARIAL_LOSSES[plan.adversarial_loss] if gan else None

    description = {
        "recipe": plan.recipe,
        "size": config.model.size,
        "factor_range": list(config.data.factor_bounds),
        "normalisation": dict(DEFAULT_NORMALISATION),
        "training_data": {
            "volumes": [v.name for v in volumes],
            "held_out": volume_name(val_path) if val_path else None,
            "pair_kinds": [list(k) for k in kinds],
            "profile": config.data.profile,
            "patch_size": config.data.patch_size,
            "batch_size": config.data.batch_size,
            "processes": procs.world,
            "spacing_note": "training volumes treated as isotropic",
        },
        "training": plan.to_dict(),
        "seed": config.seed,
    }

    def save_ema(path: Path, stage: str, step: int) -> None:
        save_model(
            path,
            ema,
            name=plan.generator,
            description={**description, "stage": stage, "step": step, "validation": last_val},
        )

    def save_state(step: int) -> None:
        save_training_state(
            run_dir / STATE_FILE,
            {
                "step": step,
                "stage": "gan" if step > steps else "psnr",
                "generator": generator.state_dict(),
                "ema": ema.state_dict(),
                "opt_g": opt_g.state_dict(),
                "discriminator": discriminator.state_dict() if discriminator is not None else None,
                "opt_d": opt_d.state_dict() if opt_d is not None else None,
                "rng": capture_rng_state(),
                "validation": last_val,
                "world_size": procs.world,
            },
        )

    def validate(step: int, stage: str) -> None:
        nonlocal last_val
        if validator is None:
            return
        last_val = validator(ema, device)
        logger.write({"event": "validation", "step": step, "stage": stage, **last_val})
        emit(TrainEvent("validation", step, total, stage, last_val))

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / CONFIG_FILE)
    logger = _RunLog(
        run_dir,
        enabled=main,
        tensorboard=config.tensorboard,
        keep_until=start_step if resume else None,
    )
    logger.write(
        {
            "event": "resume" if resume else "start",
            "step": start_step,
            "total": total,
            "device": str(device),
            "processes": procs.world,
            "training_volumes": [v.name for v in volumes],
            "held_out": volume_name(val_path) if val_path else None,
            "resolved": plan.to_dict(),
            "config": to_dict(config),
        }
    )
    emit(TrainEvent("start", start_step, total, "gan" if in_gan else "psnr"))

    # ------------------------------------------------------------- 5. loop
    loader = make_loader(dataset, start_step, total, workers=config.data.workers)
    sums: dict[str, Tensor] = {}
    interval_start, interval_steps = time.perf_counter(), 0
    step = start_step
    for batch in loader:
        step = int(batch["step"])
        stage = "gan" if (gan and step >= steps) else "psnr"
        if stage == "gan" and step == steps:
            if main and not (run_dir / PSNR_MODEL_FILE).exists():
                # A GAN stage added on resume: keep the stage-1 model before it is replaced.
                save_ema(run_dir / PSNR_MODEL_FILE, "psnr", steps)
            # Stage 2 starts from the stage-1 EMA weights, with fresh Adam states.
            generator.load_state_dict(ema.state_dict())
            opt_g = new_adam(generator, plan.lr_g)
        stage_step = step - steps if stage == "gan" else step
        stage_len = total - steps if stage == "gan" else steps
        milestones = config.optim.gan_milestones if stage == "gan" else config.optim.milestones
        decay = config.optim.gamma ** sum(stage_step >= m * stage_len for m in milestones)
        _set_lr(opt_g, (plan.lr_g if stage == "gan" else plan.lr_pretrain) * decay)

        lr_batch = batch["lr"].to(device, non_blocking=True)
        hr = batch["hr"].to(device, non_blocking=True)
        if cuda_amp:
            lr_batch = lr_batch.contiguous(memory_format=torch.channels_last)
            hr = hr.contiguous(memory_format=torch.channels_last)
        rows = hr.shape[-2]
        losses: dict[str, Tensor] = {}

        # Generator step.
        with autocast():
            fake, aux = g_forward(lr_batch, rows)
        fake = fake.float()
        pixel = pixel_loss(fake, hr, plan.pixel_loss)
        losses["pixel"] = pixel
        g_loss = pixel * (weights.pixel if stage == "gan" else 1.0)
        if aux:
            inter = sum(
                (
                    pixel_loss(a.float(), _resize_rows(hr, a.shape[-2]), plan.pixel_loss)
                    for a in aux
                ),
                torch.zeros((), device=device),
            ) / len(aux)
            losses["intermediate"] = inter
            g_loss = g_loss + weights.intermediate * inter
        if stage == "gan":
            discriminator.requires_grad_(False)
            if perceptual is not None and weights.perceptual > 0:
                losses["perceptual"] = perceptual(fake, hr)
                g_loss = g_loss + weights.perceptual * losses["perceptual"]
            with autocast():
                fake_logits = discriminator(fake).float()
                with torch.no_grad():
                    real_logits = discriminator(hr).float()
            losses["adversarial"] = adversarial.generator(real_logits, fake_logits)
            g_loss = g_loss + weights.adversarial * losses["adversarial"]
            texture_from_vgg = perceptual is not None and hasattr(perceptual, "features")
            if weights.feature_matching > 0 or (weights.texture > 0 and not texture_from_vgg):
                with autocast():
                    fake_feats = [f.float() for f in discriminator.features(fake)]
                    with torch.no_grad():
                        real_feats = [f.float() for f in discriminator.features(hr)]
                if weights.feature_matching > 0:
                    losses["feature_matching"] = feature_matching_loss(real_feats, fake_feats)
                    g_loss = g_loss + weights.feature_matching * losses["feature_matching"]
                if weights.texture > 0 and not texture_from_vgg:
                    losses["texture"] = texture_loss(real_feats, fake_feats)
                    g_loss = g_loss + weights.texture * losses["texture"]
            if weights.texture > 0 and texture_from_vgg:
                with torch.no_grad():
                    real_vgg = perceptual.features(hr)  # type: ignore[union-attr]
                losses["texture"] = texture_loss(real_vgg, perceptual.features(fake))  # type: ignore[union-attr]
                g_loss = g_loss + weights.texture * losses["texture"]
        losses["generator"] = g_loss
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        _clip(generator, config.optim.grad_clip)
        opt_g.step()

        # Discriminator step, on the same generated patches (detached).
        if stage == "gan":
            discriminator.requires_grad_(True)
            _set_lr(opt_d, plan.lr_d * decay)  # type: ignore[arg-type]
            with autocast():
                logits = d_forward(torch.cat([hr, fake.detach().to(hr.dtype)])).float()  # type: ignore[misc]
            real_logits, fake_logits = logits.split(hr.shape[0])
            d_loss = adversarial.discriminator(real_logits, fake_logits)  # type: ignore[union-attr]
            losses["discriminator"] = d_loss
            losses["d_real"] = torch.sigmoid(real_logits).mean()
            losses["d_fake"] = torch.sigmoid(fake_logits).mean()
            opt_d.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            d_loss.backward()
            _clip(discriminator, config.optim.grad_clip)
            opt_d.step()  # type: ignore[union-attr]

        # EMA, warmed up so that short runs are not dominated by the initial weights.
        done_in_stage = stage_step + 1
        _ema_update(
            ema, generator, min(config.ema_decay, (1 + done_in_stage) / (10 + done_in_stage))
        )

        # Bookkeeping.
        done = step + 1
        interval_steps += 1
        for key, value in losses.items():
            sums[key] = sums.get(key, torch.zeros((), device=device)) + value.detach().float()
        emit(TrainEvent("step", done, total, stage))
        if done % config.schedule.log_every == 0 or done == total or done == steps:
            elapsed = time.perf_counter() - interval_start
            values = {k: float(v) / interval_steps for k, v in sums.items()}
            if not all(math.isfinite(v) for v in values.values()):
                raise ConfigError(
                    f"training diverged: non-finite loss at step {done} ({values})",
                    fix="lower the learning rates (optim.lr_pretrain / lr_g / lr_d) or the loss weights",
                )
            values["lr"] = opt_g.param_groups[0]["lr"]
            values["factor"] = float(batch["factor"])
            values["patches_per_s"] = (
                interval_steps * hr.shape[0] * procs.world / max(elapsed, 1e-9)
            )
            logger.write({"event": "train", "step": done, "stage": stage, **values})
            emit(TrainEvent("log", done, total, stage, values))
            sums, interval_start, interval_steps = {}, time.perf_counter(), 0
        stage_end = done == steps or done == total
        every = config.schedule.val_every
        if stage_end or (every and done % every == 0):
            validate(done, stage)
        every = config.schedule.save_every
        if main and (stage_end or (every and done % every == 0)):
            if done == steps and gan:
                save_ema(run_dir / PSNR_MODEL_FILE, "psnr", done)
            save_ema(run_dir / MODEL_FILE, stage, done)
            save_state(done)
            logger.write({"event": "save", "step": done, "stage": stage})
            emit(TrainEvent("save", done, total, stage, {"path": str(run_dir / MODEL_FILE)}))
        step = done

    procs.barrier()
    logger.write({"event": "end", "step": step, "validation": last_val})
    logger.close()
    emit(TrainEvent("end", step, total, "gan" if (gan and step > steps) else "psnr", last_val))
    return TrainResult(
        run_dir=run_dir, generator=generator, ema=ema, step=step, validation=last_val
    )


# ----------------------------------------------------------------- helpers


class CascadeForward(nn.Module):
    """The generator's training forward: final image plus deep-supervision outputs.

    RRGAN's intermediate image (``forward_with_intermediate``) and DRCN's
    per-recursion predictions (``forward_recursions``) are returned as
    ``aux``; for other generators ``aux`` is empty. Wrapping this, rather
    than the generator, in DDP keeps every output inside DDP's forward.

    Args:
        generator: the generator being trained.
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: Tensor, out_rows: int) -> tuple[Tensor, list[Tensor]]:
        """(B, 1, H, W) -> ((B, 1, out_rows, W), list of (B, 1, rows_i, W))."""
        g = self.generator
        if hasattr(g, "forward_with_intermediate"):
            final, intermediate = g.forward_with_intermediate(x, out_rows)
            return final, [intermediate]
        if hasattr(g, "forward_recursions") and hasattr(g, "ensemble_logits"):
            predictions = g.forward_recursions(x, out_rows)
            # DRCN's output is the softmax-weighted mean of its recursions;
            # rebuilding it here saves running the network twice.
            w = torch.softmax(g.ensemble_logits, dim=0)
            final = sum(
                (wi * p for wi, p in zip(w, predictions, strict=True)),
                torch.zeros_like(predictions[0]),
            )
            return final, predictions
        return g(x, out_rows), []


def _resize_rows(hr: Tensor, rows: int) -> Tensor:
    """HR patches averaged along rows to ``rows`` rows with the box slice profile."""
    from mrisr.simulate import slice_profile_matrix

    if rows == hr.shape[-2]:
        return hr
    matrix = torch.from_numpy(slice_profile_matrix(hr.shape[-2], rows)).to(hr.device, torch.float32)
    return torch.einsum("oh,bchw->bcow", matrix, hr.float())


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _clip(net: nn.Module, max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for weights; buffers are copied."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def _check_resumable(config: TrainConfig, run_dir: Path, state: Mapping[str, Any]) -> None:
    """Refuse to resume with settings that would change what was being trained."""
    saved_path = run_dir / CONFIG_FILE
    if not saved_path.is_file():
        raise CheckpointError(
            "has a state.pt but no config.yaml",
            path=run_dir,
            fix="restore config.yaml, or start a new run",
        )
    saved = load_config(saved_path)
    changed = [k for k in config_differences(saved, config) if k not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(
            f"cannot resume with changed settings: {', '.join(changed)}",
            path=saved_path,
            expected=f"only {', '.join(RESUMABLE_CHANGES)} may change on resume",
            fix="drop those options (the run's config.yaml is used), or start a new run",
        )
    step = int(state["step"])
    if config.schedule.steps != saved.schedule.steps and (
        step >= saved.schedule.steps or step > config.schedule.steps
    ):
        raise ConfigError(
            f"the saved state is at step {step}: stage 1 ({saved.schedule.steps} steps) "
            f"cannot become {config.schedule.steps} steps now",
            fix=f"keep --steps {saved.schedule.steps}",
        )


class _RunLog:
    """``log.jsonl`` (and TensorBoard) writer; inert on ranks other than 0."""

    def __init__(
        self, run_dir: Path, *, enabled: bool, tensorboard: bool, keep_until: int | None
    ) -> None:
        self.path = run_dir / LOG_FILE
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if keep_until is None:
            self.path.unlink(missing_ok=True)  # a fresh run: nothing saved to continue from
        elif self.path.exists():
            # Resuming: drop what was logged after the saved state, so the
            # curve continues without duplicated steps.
            kept = [
                line for line in self.path.read_text().splitlines() if _step_of(line) <= keep_until
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: curves go to log.jsonl only")
            else:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as stream:
            stream.write(json.dumps({"time": round(time.time(), 3), **record}, default=str) + "\n")
        if self.writer is not None and record.get("event") in ("train", "validation"):
            prefix = "val" if record["event"] == "validation" else "train"
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{prefix}/{key}", value, int(record["step"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0


@dataclass
class _Processes:
    """This process's place in a (possibly single-process) DDP job."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @classmethod
    def start(cls, device_setting: str) -> _Processes:
        """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK and join the process group."""
        import torch.distributed as dist

        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        device = resolve_device(device_setting, local if world > 1 else None)
        owns = False
        if world > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(
                "nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world
            )
            owns = True
        return cls(rank=rank, world=world, device=device, owns_group=owns)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def stop(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
