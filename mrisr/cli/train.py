"""Train a slice super-resolution model on high-resolution volumes.

Simulates thick slices along each axis of the volumes in --volumes, trains on
the cross-plane (LR, HR) patch pairs (stage 1: pixel loss; stage 2: GAN) and
writes a run folder: config.yaml, model.safetensors (use it with
`mrisr upscale --model RUN`), model_psnr.safetensors (stage-1 model, when a
GAN stage runs), state.pt (for --resume) and log.jsonl. Every option is also
a setting of the YAML config (--config); options given here override it.
For several GPUs: torchrun --nproc-per-node N -m mrisr train ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mrisr.cli.common import console, progress_bar, say
from mrisr.cli.options import non_empty_path
from mrisr.device import DEVICE_HELP

if TYPE_CHECKING:
    from mrisr.config import TrainConfig

NAME = "train"


def _option(kind: Any, help: str) -> Any:
    """An optional option of type ``kind`` (None: the config's value); a path may not be empty."""
    if kind is Path:
        return Annotated[kind | None, typer.Option(parser=non_empty_path, help=help)]
    return Annotated[kind | None, typer.Option(help=help)]


def _switch(flags: str, help: str) -> Any:
    return Annotated[bool | None, typer.Option(flags, help=help)]


# One alias per option: its type and help (the config key in brackets).
Volumes = _option(Path, "Folder of HR volumes (.nii, .nii.gz, .mgz, .mgh). [data.volumes]")
Out = _option(Path, "Run folder to create (or continue with --resume). [out]")
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", exists=True, dir_okay=False, help="YAML config; options override it."),
]
Resume = Annotated[bool, typer.Option(help="Continue the run in --out from its state.pt.")]
Factor = _option(float, "Factor to train for (and validate at); default 4. [data.factor]")
FactorRange = _option(
    tuple[float, float], "LO HI: draw a factor per batch from this range. [data.factor_range]"
)
Steps = _option(int, "Stage-1 (pixel loss) steps. [schedule.steps]")
GanSteps = _option(int, "GAN-stage steps; 0 = none. [schedule.gan_steps]")
Recipe = _option(str, "Recipe (see `mrisr models`); default esrgan. [model.recipe]")
Size = _option(str, "Network size: small or full. [model.size]")
Generator = _option(str, "Generator overriding the recipe's. [model.generator]")
Discriminator = _option(str, "Discriminator overriding the recipe's. [model.discriminator]")
ValVolume = _option(str, "Held-out volume name, auto (last by name) or none. [data.val_volume]")
Axes = _option(str, "Thick axes to simulate, e.g. 0,1,2. [data.axes]")
Profile = _option(str, "Slice profile: mean, gaussian or mixed (drawn per batch). [data.profile]")
InitFrom = _option(
    str,
    "Start the generator from this model (bundled name or file) instead of cubic "
    "interpolation: fine-tune it on your volumes. [model.init_from]",
)
PatchSize = _option(int, "HR patch side in voxels. [data.patch_size]")
BatchSize = _option(int, "Pairs per step (per process). [data.batch_size]")
Workers = _option(int, "DataLoader worker processes. [data.workers]")
ValCrop = _option(int, "Validation cube side in voxels. [data.val_crop]")
PerceptualWeights = _option(
    str,
    "VGG19 weights (.safetensors or state dict), or monai:radimagenet_resnet50. "
    "[loss.perceptual_weights]",
)
Lr = _option(float, "Stage-1 learning rate. [optim.lr_pretrain]")
LrG = _option(float, "GAN-stage generator learning rate. [optim.lr_g]")
LrD = _option(float, "Discriminator learning rate. [optim.lr_d]")
EmaDecay = _option(float, "EMA decay of generator weights. [ema_decay]")
ValEvery = _option(int, "Validate every N steps. [schedule.val_every]")
LogEvery = _option(int, "Log losses every N steps. [schedule.log_every]")
SaveEvery = _option(int, "Save model and state every N steps. [schedule.save_every]")
Seed = _option(int, "Random seed. [seed]")
Device = _option(str, f"{DEVICE_HELP}. [device]")
Threads = _option(int, "CPU threads for torch. [threads]")
Amp = _switch("--amp/--no-amp", "bf16 autocast where the GPU or CPU has bfloat16. [amp]")
Compile = _switch("--compile/--no-compile", "torch.compile the networks. [compile]")
Tensorboard = _switch(
    "--tensorboard/--no-tensorboard", "TensorBoard curves when installed. [tensorboard]"
)
AllowAnisotropic = _switch(
    "--allow-anisotropic/--no-allow-anisotropic",
    "Train on volumes more than 1.3x anisotropic, as if isotropic. [data.allow_anisotropic]",
)
Quiet = Annotated[bool, typer.Option(help="No progress bar or summary.")]


def command(
    volumes: Volumes = None,
    out: Out = None,
    config: ConfigFile = None,
    resume: Resume = False,
    factor: Factor = None,
    factor_range: FactorRange = None,
    steps: Steps = None,
    gan_steps: GanSteps = None,
    recipe: Recipe = None,
    size: Size = None,
    init_from: InitFrom = None,
    generator: Generator = None,
    discriminator: Discriminator = None,
    val_volume: ValVolume = None,
    axes: Axes = None,
    profile: Profile = None,
    patch_size: PatchSize = None,
    batch_size: BatchSize = None,
    workers: Workers = None,
    val_crop: ValCrop = None,
    perceptual_weights: PerceptualWeights = None,
    lr: Lr = None,
    lr_g: LrG = None,
    lr_d: LrD = None,
    ema_decay: EmaDecay = None,
    val_every: ValEvery = None,
    log_every: LogEvery = None,
    save_every: SaveEvery = None,
    seed: Seed = None,
    device: Device = None,
    threads: Threads = None,
    amp: Amp = None,
    compile: Compile = None,
    tensorboard: Tensorboard = None,
    allow_anisotropic: AllowAnisotropic = None,
    quiet: Quiet = False,
) -> None:
    import logging

    from mrisr.training import STATE_FILE, TrainingInterrupted, train

    if factor_range is not None and factor is None:
        factor = (factor_range[0] + factor_range[1]) / 2  # validate mid-range
    overrides = {
        "data.volumes": str(volumes) if volumes is not None else None,
        "out": str(out) if out is not None else None,
        "data.factor": factor,
        "data.factor_range": factor_range,
        "schedule.steps": steps,
        "schedule.gan_steps": gan_steps,
        "model.recipe": recipe,
        "model.size": size,
        "model.init_from": init_from,
        "model.generator": generator,
        "model.discriminator": discriminator,
        "data.val_volume": val_volume,
        "data.axes": _axes(axes),
        "data.profile": profile,
        "data.patch_size": patch_size,
        "data.batch_size": batch_size,
        "data.workers": workers,
        "data.val_crop": val_crop,
        "loss.perceptual_weights": perceptual_weights,
        "optim.lr_pretrain": lr,
        "optim.lr_g": lr_g,
        "optim.lr_d": lr_d,
        "ema_decay": ema_decay,
        "schedule.val_every": val_every,
        "schedule.log_every": log_every,
        "schedule.save_every": save_every,
        "seed": seed,
        "device": device,
        "threads": threads,
        "amp": amp,
        "compile": compile,
        "tensorboard": tensorboard,
        "data.allow_anisotropic": allow_anisotropic,
    }
    settings = _settings(config, resume=resume, out=out, overrides=overrides)
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 reports
    try:
        if quiet or rank != 0:
            train(settings, resume=resume)
            return
        logging.getLogger("mrisr").setLevel(logging.INFO)
        _train_with_progress(settings, resume=resume)
    except TrainingInterrupted as stop:
        if rank == 0:
            say(
                f"interrupted: saved the state after step {stop.step} in "
                f"{stop.run_dir / STATE_FILE}\nresume with: {stop.resume_command()}"
            )
        raise typer.Exit(stop.exit_code) from None


def _axes(text: str | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]``; None stays None (the config's value)."""
    from mrisr.errors import ConfigError

    if text is None:
        return None
    try:
        return [int(a) for a in text.replace(" ", "").split(",") if a]
    except ValueError:
        raise ConfigError(
            f"--axes must be axis numbers like 0,1,2, got {text!r}",
            expected="thick axes out of 0, 1, 2, separated by commas",
            fix="pass e.g. --axes 0,1,2 (all three, the default) or --axes 2",
        ) from None


def _settings(
    config: Path | None, *, resume: bool, out: Path | None, overrides: dict[str, Any]
) -> TrainConfig:
    """The run's config: --config (or, on --resume, the run's own), then the options given."""
    from mrisr.config import TrainConfig, with_overrides
    from mrisr.config_file import load_config
    from mrisr.errors import CheckpointError, ConfigError
    from mrisr.training import CONFIG_FILE

    if config is not None:
        base = load_config(config)
    elif resume:  # the run's own settings; a folder without them is not a run
        if out is None:
            raise ConfigError("--resume needs the run folder", fix="pass --out RUN_DIR")
        if not (out / CONFIG_FILE).is_file():
            raise CheckpointError(
                f"has no {CONFIG_FILE}: not a training run to resume",
                path=out,
                expected=f"a run folder made by mrisr train ({CONFIG_FILE}, state.pt)",
                fix="check --out, or start the run without --resume",
            )
        base = load_config(out / CONFIG_FILE)
    else:
        base = TrainConfig()
    # train() stores the paths absolute, so that --resume works from any folder.
    return with_overrides(base, overrides)


def _train_with_progress(settings: TrainConfig, *, resume: bool) -> None:
    """Train with a progress bar, a line per validation and a closing summary.

    On a terminal, a live bar (log lines print above it, through the same
    console); piped or redirected, a plain line per logged step instead.
    """
    from rich.progress import TextColumn

    from mrisr.training import TrainEvent, train

    last: dict[str, dict] = {}
    live = console.is_terminal
    losses = TextColumn("{task.fields[losses]}", markup=False)
    bar = progress_bar("steps", losses, transient=False, disable=not live)
    task: list[Any] = []  # added at the start event, once the total is known
    with bar:

        def report(event: TrainEvent) -> None:
            # Only draws: what to draw comes from the event.
            if event.kind == "start":
                task.append(
                    bar.add_task("training", total=event.total, completed=event.step, losses="")
                )
                if not live:
                    say(f"training: steps {event.step + 1}-{event.total}")
            elif event.kind == "step" and task:
                bar.update(task[0], completed=event.step, description=f"stage {event.stage}")
            elif event.kind == "log":
                last["log"] = dict(event.values)
                if task:
                    bar.update(task[0], losses=_losses_text(event.values))
                if not live:
                    say(
                        f"step {event.step}/{event.total} ({event.stage}): {_losses_text(event.values)}"
                    )
            elif event.kind == "validation":
                say(_validation_text(event.step, event.values))
            elif event.kind == "finished":
                last["finished"] = {"model": event.values["model"], "step": event.step}

        run_dir = train(settings, resume=resume, callback=report)
    if "finished" in last:
        say(_finished_text(run_dir, **last["finished"]))
        return
    rate = last.get("log", {}).get("patches_per_s")
    say(f"wrote {run_dir}" + (f"  ({rate:.1f} patches/s)" if rate else ""))


def _finished_text(run_dir: Path, model: str, step: int) -> str:
    """What resuming a run that had already finished says (nothing was trained or written)."""
    return (
        f"{run_dir}: the run is already finished (step {step} of {step}); nothing to resume, "
        f"nothing changed.\nits model: {model} (mrisr upscale --model {run_dir})\n"
        f"to train on: --resume --gan-steps N adds or lengthens a GAN stage, or a new run "
        f"starts from this model: mrisr train --config {run_dir / 'config.yaml'} "
        f"--out NEW_RUN --init-from {model} --steps N"
    )


def _losses_text(values: Any) -> str:
    keys = ("pixel", "adversarial", "discriminator", "patches_per_s")
    return " ".join(
        f"{k.replace('patches_per_s', 'patch/s')} {values[k]:.3g}" for k in keys if k in values
    )


def _validation_text(step: int, v: Any) -> str:
    return (
        f"step {step}: PSNR {v['psnr']:.2f} dB (cubic {v['psnr_cubic']:.2f}), "
        f"SSIM {v['ssim']:.4f} (cubic {v['ssim_cubic']:.4f})"
    )
