"""The training loop: pixel-loss warm-up, GAN stage, EMA, AMP, DDP, resume, logging.

Read top to bottom, :func:`run_training` does:

1. processes: one, or one per GPU/CPU worker under ``torchrun`` (DDP);
2. the whole configuration checked (:func:`check_config`: recipe, sizes,
   loss combinations, perceptual weights read), the run folder checked or,
   on ``resume``, its saved state read (a run already at its last step ends
   here, its folder untouched);
3. the networks built (:func:`mrisr.training.step.build_learner`: the recipe's
   generator, starting as cubic interpolation, its EMA, for the GAN stage a
   discriminator) and run once on a dummy batch, so that nothing fails after
   the first step for a reason known before it;
4. data: volumes found, one held out for :class:`~mrisr.training.validation.Validation`,
   a stream of random (LR, HR) patch pairs;
5. the loop over steps ``0 .. steps + gan_steps``:

   * stage 1 (``steps``): :func:`~mrisr.training.step.pixel_step` at ``lr_pretrain``;
   * stage 2 (``gan_steps``, recipes with an adversarial loss): the generator
     restarts from the stage-1 EMA weights with fresh Adam states and
     :func:`~mrisr.training.step.gan_step` trains it against the discriminator;

   validating, logging and saving every so many steps (files: :mod:`mrisr.training.state`).

Under DDP (``torchrun --nproc-per-node N -m mrisr train ...``) each process
draws its own pairs (``data.batch_size`` per process), gradients are averaged,
and only rank 0 validates, logs and writes files.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mrisr.config import PROFILES, TrainConfig, to_dict
from mrisr.config_file import save_config
from mrisr.device import resolve_device
from mrisr.errors import ConfigError, OutputError, naming_input
from mrisr.io.files import check_folder_creatable, make_folder
from mrisr.recipes import ResolvedRecipe
from mrisr.training.data import TrainingData, load_training_data
from mrisr.training.interrupt import StopSignals, TrainingInterrupted
from mrisr.training.pairs import lr_rows, make_loader
from mrisr.training.state import (
    CONFIG_FILE,
    MODEL_FILE,
    PSNR_MODEL_FILE,
    STATE_FILE,
    InitWeights,
    RunLog,
    absolute_paths,
    adopt_init_network,
    check_same_volumes,
    init_weights,
    open_run,
    restore_learner,
    save_models,
    save_state,
)
from mrisr.training.step import Learner, build_learner, check_learner, training_step
from mrisr.training.validation import Validation, check_crop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainEvent:
    """What :func:`train` reports to its ``callback`` (rank 0 only).

    Attributes:
        kind: ``start``, ``step``, ``log``, ``validation``, ``save``, ``interrupted``
            (a stop signal came; the state was saved), ``end``, or ``finished``
            alone (resuming a run that had already finished: nothing trained or
            written; ``values["model"]`` is its model file).
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
        resume: continue the run in ``config.out`` from its ``state.pt``; a run
            already at its last step is left untouched (a ``finished`` event).
        callback: called with a :class:`TrainEvent` on rank 0 (progress bars).

    Returns:
        The run folder.

    Raises:
        ConfigError: settings that cannot train (checked before the first step).
        InputError: no usable training volume.
        CheckpointError: an unreadable perceptual-weights file or saved state.
        OutputError: the run folder already holds a run (without ``resume``), or
            is (inside) the volumes folder.
        TrainingInterrupted: SIGINT (Ctrl-C) or SIGTERM came; the current step
            was finished and a resumable state saved in the run folder.
    """
    return run_training(config, resume=resume, callback=callback).run_dir


def run_training(
    config: TrainConfig,
    *,
    resume: bool = False,
    callback: Callable[[TrainEvent], None] | None = None,
) -> TrainResult:
    """:func:`train`, returning the trained networks as well (tests, notebooks).

    Raises:
        ConfigError, InputError, CheckpointError, OutputError, TrainingInterrupted:
            as :func:`train`.
    """
    procs = _Processes.start(config.device)
    try:
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        with ExitStack() as stack:
            return _train(config, procs, stack, resume=resume, callback=callback)
    finally:
        procs.stop()


def _train(
    config: TrainConfig,
    procs: _Processes,
    stack: ExitStack,
    *,
    resume: bool,
    callback: Callable[[TrainEvent], None] | None,
) -> TrainResult:
    device, main = procs.device, procs.rank == 0
    emit = callback if (callback is not None and main) else _ignore

    # ----------------------------------------- 2. configuration and run folder
    # Paths absolute: config.yaml, the resume command and init_from work from any folder.
    config = adopt_init_network(absolute_paths(config))
    plan, perceptual = check_config(config)
    # Read and checked before the run folder exists: a model that does not fit leaves nothing.
    init = (
        init_weights(plan, config.model.init_from)
        if config.model.init_from and not resume
        else None
    )
    run_dir = Path(str(config.out))
    saved = open_run(config, resume=resume, device=device)
    start = int(saved["step"]) if saved else 0
    with naming_input(run_dir):  # a resumed run's own steps: name its folder
        schedule = Schedule.of(config, plan, start)

    # ---------------------------------------------------------------- 3. networks
    learner, last_val = _networks(config, plan, perceptual, schedule, procs, saved, init)
    if saved is not None and start == schedule.total:
        # Resuming a finished run: nothing to train, and its folder is left as it is.
        model = {"model": str(run_dir / MODEL_FILE)}
        emit(TrainEvent("finished", start, start, schedule.stage(start - 1), model))
        return TrainResult(run_dir, learner.generator, learner.ema, start, last_val)

    # -------------------------------------------------------------------- 4. data
    data = load_training_data(config.data, seed=config.seed, rank=procs.rank)
    if saved is not None:  # the folder's volumes may have changed since the run began
        check_same_volumes(saved, data.names, data.held_out_name, config.data.volumes)
    validation = _validation(config, data) if main else None
    data.held_out = None  # the validation keeps its own crop
    description = describe_run(config, plan, data, procs.world)
    run_log = _start_log(config, procs, plan, data, schedule, start=start, resume=resume)
    emit(TrainEvent("start", start, schedule.total, schedule.stage(start)))

    # -------------------------------------------------------------------- 5. loop
    meter = _LossMeter()
    step, total = start, schedule.total
    stop = stack.enter_context(StopSignals())  # Ctrl-C / SIGTERM: finish the step, save, stop
    for batch in make_loader(data.dataset, start, total, workers=config.data.workers):
        step = int(batch["step"])
        stage = schedule.stage(step)
        if stage == "gan" and step == schedule.steps:
            if main and not (run_dir / PSNR_MODEL_FILE).exists():
                # A GAN stage added on resume: keep the stage-1 model before it is replaced.
                save_models(
                    run_dir,
                    learner,
                    description,
                    stage="psnr",
                    step=step,
                    validation=last_val,
                    files=(PSNR_MODEL_FILE,),
                )
            learner.start_gan_stage()
        learner.set_learning_rates(stage, schedule.decay(step))
        lr = batch["lr"].to(device, non_blocking=True)
        hr = batch["hr"].to(device, non_blocking=True)
        meter.add(training_step(learner, lr, hr, stage), patches=hr.shape[0] * procs.world)
        done = step + 1
        emit(TrainEvent("step", done, total, stage))
        if done % config.schedule.log_every == 0 or done in (schedule.steps, total):
            values = meter.take(done)
            values["lr"] = learner.opt_g.param_groups[0]["lr"]
            values["factor"] = float(batch["factor"])
            values["patches_per_s"] = values.pop("patches") / max(values.pop("seconds"), 1e-9)
            run_log.write({"event": "train", "step": done, "stage": stage, **values})
            emit(TrainEvent("log", done, total, stage, values))
        stage_end = done in (schedule.steps, total)
        if validation is not None and (stage_end or _every(done, config.schedule.val_every)):
            last_val = validation(learner.ema, device)
            run_log.write({"event": "validation", "step": done, "stage": stage, **last_val})
            emit(TrainEvent("validation", done, total, stage, last_val))
        saving = stage_end or _every(done, config.schedule.save_every)
        # Under DDP asking every rank is an all-reduce (a GPU sync): only on steps all
        # ranks agree on, so a stop comes at most log_every steps late.
        poll = procs.world == 1 or saving or _every(done, config.schedule.log_every)
        stopping = poll and stop.requested(procs.world)
        if main and (saving or stopping):
            _save(run_dir, learner, description, schedule, done, last_val, procs.world)
            run_log.write({"event": "save", "step": done, "stage": stage})
            emit(TrainEvent("save", done, total, stage, {"path": str(run_dir / MODEL_FILE)}))
        step = done
        if stopping and done < total:
            number = stop.received or signal.SIGTERM
            run_log.write({"event": "interrupted", "step": done, "signal": int(number)})
            emit(TrainEvent("interrupted", done, total, stage, {"signal": int(number)}))
            run_log.close()
            raise TrainingInterrupted(run_dir, done, number)

    procs.barrier()
    run_log.write({"event": "end", "step": step, "validation": last_val})
    run_log.close()
    emit(TrainEvent("end", step, total, "gan" if step > schedule.steps else "psnr", last_val))
    return TrainResult(
        run_dir=run_dir,
        generator=learner.generator,
        ema=learner.ema,
        step=step,
        validation=last_val,
    )


# ------------------------------------------------------------ configuration


def check_config(config: TrainConfig) -> tuple[ResolvedRecipe, nn.Module | None]:
    """Check everything about a run that can be checked before reading data or training.

    Resolves the recipe (names, sizes, loss weights), refuses combinations
    that would only fail later (GAN patches below the discriminators'
    minimum, a texture loss on MONAI's perceptual network, a validation crop
    too small for the factor) and builds the perceptual loss (reading its
    weights file).

    Args:
        config: the run's settings.

    Returns:
        (the resolved recipe, the perceptual loss module or None).

    Raises:
        ConfigError: a missing ``out`` or ``data.volumes``, an unknown name, or
            settings that cannot train together.
        OutputError: ``out`` is a file, or is (inside) the volumes folder.
        CheckpointError: the perceptual weights cannot be read (or MONAI's
            network is not cached).
    """
    from mrisr.losses import build_perceptual_loss
    from mrisr.networks.discriminators import MIN_PATCH
    from mrisr.recipes import resolve

    if config.out is None:
        raise ConfigError(
            "no run folder given", fix="pass --out RUN_DIR (or set out: in the config)"
        )
    check_folder_creatable(str(config.out), what="run folder")  # before minutes of loading
    if config.data.volumes is None:
        raise ConfigError("no training volumes given", fix="pass --volumes DIR (or data.volumes)")
    check_out_beside_volumes(config.out, config.data.volumes)
    spec = config.loss.perceptual_weights
    plan = resolve(config, perceptual_available=spec is not None)
    gan = config.schedule.gan_steps > 0 and plan.adversarial_loss is not None
    if gan and config.data.patch_size < MIN_PATCH:
        raise ConfigError(
            f"data.patch_size {config.data.patch_size} is below the discriminators' minimum {MIN_PATCH}",
            fix=f"use --patch-size {MIN_PATCH} or more, or --gan-steps 0",
        )
    if gan and spec is not None and str(spec).startswith("monai:") and plan.weights.texture > 0:
        raise ConfigError(
            f"recipe {plan.recipe}'s texture loss (weight {plan.weights.texture:g}) needs VGG "
            f"features, and MONAI's perceptual network ({spec}) does not expose any",
            expected="VGG19 weights for --perceptual-weights, or loss.texture 0",
            fix="pass --perceptual-weights VGG19_FILE, set loss.texture: 0, or --gan-steps 0",
        )
    if config.data.val_volume != "none":
        check_crop(config.data.val_crop, config.data.factor)
    perceptual = None
    if spec:
        perceptual = build_perceptual_loss(spec, plan.perceptual_layers, plan.perceptual_criterion)
    return plan, perceptual


def check_out_beside_volumes(out: str, volumes: str) -> None:
    """Refuse a run folder that is the training volumes folder or lies inside it.

    The run's files (config, models, state, log) would be mixed with the
    training data the folder is read for, and a run folder named like a
    volume (``vols/x.nii.gz``) passes for one. Symbolic links are followed.

    Raises:
        OutputError: ``out`` is ``volumes`` or under it.
    """
    from mrisr.io.files import stem

    run, folder = Path(out).expanduser().resolve(), Path(volumes).expanduser().resolve()
    if run != folder and folder not in run.parents:
        return
    where = (
        "is the --volumes folder itself"
        if run == folder
        else f"is inside the --volumes folder {folder}"
    )
    name = stem(run) if run != folder else "run"
    raise OutputError(
        f"{where}: a run folder there mixes the run's files with the training volumes",
        path=out,
        expected="a run folder outside the folder of training volumes",
        fix=f"choose an --out outside {folder}, e.g. --out {folder.parent / 'runs' / name}",
    )


@dataclass(frozen=True)
class Schedule:
    """Which stage a step is in, and its learning-rate decay.

    Attributes:
        steps: stage-1 steps.
        total: steps of the whole run.
        gan: whether a GAN stage follows stage 1.
        milestones: stage-1 decay milestones (fractions of the stage).
        gan_milestones: GAN-stage decay milestones.
        gamma: the factor applied at each milestone passed.
    """

    steps: int
    total: int
    gan: bool
    milestones: tuple[float, ...]
    gan_milestones: tuple[float, ...]
    gamma: float

    @classmethod
    def of(cls, config: TrainConfig, plan: ResolvedRecipe, start: int = 0) -> Schedule:
        """The schedule of ``config`` for ``plan``, checked against a resumed ``start`` step.

        Raises:
            ConfigError: ``start`` lies past the configured steps.
        """
        gan_steps = config.schedule.gan_steps
        gan = gan_steps > 0 and plan.adversarial_loss is not None
        if gan_steps > 0 and not gan:
            log.warning("recipe %s has no GAN stage: ignoring gan_steps=%d", plan.recipe, gan_steps)
        steps = config.schedule.steps
        total = steps + (gan_steps if gan else 0)
        if start > total:
            raise ConfigError(
                f"the saved state is at step {start}, past the {total} steps configured "
                f"({steps} of stage 1, {total - steps} of the GAN stage)",
                # Stage 1's length is checked on resume: only the GAN stage can be short here.
                fix=f"pass --gan-steps {start - steps} or more (the GAN stage steps already run)",
            )
        optim = config.optim
        return cls(steps, total, gan, optim.milestones, optim.gan_milestones, optim.gamma)

    def stage(self, step: int) -> str:
        """``gan`` for GAN-stage steps (0-based), else ``psnr``."""
        return "gan" if (self.gan and step >= self.steps) else "psnr"

    def in_stage(self, step: int) -> int:
        """Steps done in its stage before step ``step``."""
        return step - self.steps if self.stage(step) == "gan" else step

    def decay(self, step: int) -> float:
        """Learning-rate factor of step ``step``: ``gamma`` per milestone passed in its stage."""
        gan = self.stage(step) == "gan"
        length = self.total - self.steps if gan else self.steps
        milestones = self.gan_milestones if gan else self.milestones
        return self.gamma ** sum(self.in_stage(step) >= m * length for m in milestones)


def describe_run(
    config: TrainConfig, plan: ResolvedRecipe, data: TrainingData, world: int
) -> dict[str, Any]:
    """The model files' description of a run (without stage, step and validation)."""
    from mrisr.checkpoint import DEFAULT_NORMALISATION

    return {
        "recipe": plan.recipe,
        "size": config.model.network_size,
        "factor_range": list(config.data.factor_bounds),
        "normalisation": dict(DEFAULT_NORMALISATION),
        "training_data": {
            "volumes": data.names,
            "held_out": data.held_out_name,
            "pair_kinds": [list(k) for k in data.kinds],
            "profile": config.data.profile,
            "degradations": {
                name: getattr(config.data, name)
                for name in (
                    "factor_focus",
                    "thickness_range",
                    "noise_snr",
                    "bias_field",
                    "gamma_range",
                    "degrade_fraction",
                )
            },
            "patch_size": config.data.patch_size,
            "batch_size": config.data.batch_size,
            "processes": world,
            "spacing_note": "training volumes treated as isotropic",
        },
        "training": plan.to_dict(),
        "init_from": config.model.init_from,
        "seed": config.seed,
    }


# ------------------------------------------------------------------ helpers


def _save(
    run_dir: Path,
    learner: Learner,
    description: dict[str, Any],
    schedule: Schedule,
    done: int,
    validation: dict[str, float],
    world: int,
) -> None:
    """Write the model file(s) and the resumable state after step ``done``."""
    saved_stage = "gan" if done > schedule.steps else "psnr"
    stage_1_model = done == schedule.steps and schedule.gan
    save_models(
        run_dir,
        learner,
        description,
        stage=saved_stage,
        step=done,
        validation=validation,
        files=(PSNR_MODEL_FILE, MODEL_FILE) if stage_1_model else (MODEL_FILE,),
    )
    save_state(
        run_dir / STATE_FILE,
        learner,
        step=done,
        stage=saved_stage,
        validation=validation,
        world=world,
        volumes=description["training_data"],
    )


def _networks(
    config: TrainConfig,
    plan: ResolvedRecipe,
    perceptual: nn.Module | None,
    schedule: Schedule,
    procs: _Processes,
    saved: Mapping[str, Any] | None,
    init: InitWeights | None,
) -> tuple[Learner, dict[str, float]]:
    """The run's networks, from ``init`` or the ``saved`` state; the last validation saved."""
    start = int(saved["step"]) if saved is not None else 0
    finished = saved is not None and start == schedule.total  # no step to run: no dummy batch
    learner = _learner(config, plan, perceptual, schedule, procs, check=not finished)
    if init is not None:
        init.apply(learner)
        log.info("generator starts from %s", init.record)
    if saved is None:
        return learner, {}
    last_val = restore_learner(
        learner, saved, stage=schedule.stage(start), steps_in_stage=schedule.in_stage(start)
    )
    return learner, last_val


def _learner(
    config: TrainConfig,
    plan: ResolvedRecipe,
    perceptual: nn.Module | None,
    schedule: Schedule,
    procs: _Processes,
    *,
    check: bool = True,
) -> Learner:
    """The run's networks, built and (``check``) run once on a dummy batch of the configured patches."""
    learner = build_learner(
        plan,
        device=procs.device,
        gan=schedule.gan,
        perceptual=perceptual,
        amp=config.amp,
        compile=config.compile,
        distributed=procs.world > 1,
        ema_decay=config.ema_decay,
        grad_clip=config.optim.grad_clip,
        weight_decay=config.optim.weight_decay,
        seed=config.seed,  # identical initial weights on every rank
    )
    patch = config.data.patch_size
    if check:
        check_learner(
            learner, patch_size=patch, rows_lr=lr_rows(patch, config.data.factor_bounds[1])
        )
    return learner


def _validation(config: TrainConfig, data: TrainingData) -> Validation | None:
    """The held-out volume's validation, or None without one."""
    if data.held_out is None:
        return None
    return Validation(
        data.held_out,
        factor=config.data.factor,
        axes=config.data.axes,
        # A mixed profile is validated with the box, the profile runs are compared on.
        profile=config.data.profile if config.data.profile in PROFILES else "mean",
        crop=config.data.val_crop,
        batch_size=max(config.data.batch_size, 16),
    )


def _start_log(
    config: TrainConfig,
    procs: _Processes,
    plan: ResolvedRecipe,
    data: TrainingData,
    schedule: Schedule,
    *,
    start: int,
    resume: bool,
) -> RunLog:
    """Write ``config.yaml``, open ``log.jsonl`` and log the start (or resume) of the run."""
    run_dir, main = Path(str(config.out)), procs.rank == 0
    if main:
        make_folder(run_dir, what="run folder")
        save_config(config, run_dir / CONFIG_FILE)
    run_log = RunLog(
        run_dir, enabled=main, tensorboard=config.tensorboard, keep_until=start if resume else None
    )
    run_log.write(
        {
            "event": "resume" if resume else "start",
            "step": start,
            "total": schedule.total,
            "device": str(procs.device),
            "processes": procs.world,
            "training_volumes": data.names,
            "held_out": data.held_out_name,
            "resolved": plan.to_dict(),
            "config": to_dict(config),
        }
    )
    return run_log


class _LossMeter:
    """Loss sums since the last log line, kept on the device (no GPU wait per step)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.steps = 0
        self.patches = 0
        self.start = time.perf_counter()

    def add(self, losses: Mapping[str, Tensor], *, patches: int) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        self.steps += 1
        self.patches += patches

    def take(self, step: int) -> dict[str, float]:
        """Mean losses, ``patches`` and ``seconds`` of the interval; starts the next one.

        Raises:
            ConfigError: a loss is not finite (the run diverged).
        """
        values = {key: float(value) / self.steps for key, value in self.sums.items()}
        if not all(math.isfinite(v) for v in values.values()):
            raise ConfigError(
                f"training diverged: non-finite loss at step {step} ({values})",
                fix="lower the learning rates (optim.lr_pretrain / lr_g / lr_d) or the loss weights",
            )
        values["patches"] = float(self.patches)
        values["seconds"] = time.perf_counter() - self.start
        self._reset()
        return values


def _every(step: int, interval: int) -> bool:
    return bool(interval) and step % interval == 0


def _ignore(event: TrainEvent) -> None:
    del event  # rank > 0, or no callback: nobody listens


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
