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
from typing import Annotated

import typer

from mrisr.cli.common import console
from mrisr.device import DEVICE_HELP

NAME = "train"


def command(
    volumes: Annotated[
        Path | None,
        typer.Option(help="Folder of HR volumes (.nii, .nii.gz, .mgz, .mgh). [data.volumes]"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder to create (or continue with --resume). [out]")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", exists=True, dir_okay=False, help="YAML config; options override it."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from its state.pt.")
    ] = False,
    factor: Annotated[
        float | None,
        typer.Option(help="Factor to train for (and validate at); default 4. [data.factor]"),
    ] = None,
    factor_range: Annotated[
        tuple[float, float] | None,
        typer.Option(help="LO HI: draw a factor per batch from this range. [data.factor_range]"),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Stage-1 (pixel loss) steps. [schedule.steps]")
    ] = None,
    gan_steps: Annotated[
        int | None, typer.Option(help="GAN-stage steps; 0 = none. [schedule.gan_steps]")
    ] = None,
    recipe: Annotated[
        str | None, typer.Option(help="Recipe (see `mrisr models`); default esrgan. [model.recipe]")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Network size: small or full. [model.size]")
    ] = None,
    generator: Annotated[
        str | None, typer.Option(help="Generator overriding the recipe's. [model.generator]")
    ] = None,
    discriminator: Annotated[
        str | None,
        typer.Option(help="Discriminator overriding the recipe's. [model.discriminator]"),
    ] = None,
    val_volume: Annotated[
        str | None,
        typer.Option(help="Held-out volume name, auto (last by name) or none. [data.val_volume]"),
    ] = None,
    axes: Annotated[
        str | None, typer.Option(help="Thick axes to simulate, e.g. 0,1,2. [data.axes]")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Slice profile: mean or gaussian. [data.profile]")
    ] = None,
    patch_size: Annotated[
        int | None, typer.Option(help="HR patch side in voxels. [data.patch_size]")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Pairs per step (per process). [data.batch_size]")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="DataLoader worker processes. [data.workers]")
    ] = None,
    val_crop: Annotated[
        int | None, typer.Option(help="Validation cube side in voxels. [data.val_crop]")
    ] = None,
    perceptual_weights: Annotated[
        str | None,
        typer.Option(
            help="VGG19 weights (.safetensors or state dict), or monai:radimagenet_resnet50. "
            "[loss.perceptual_weights]"
        ),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Stage-1 learning rate. [optim.lr_pretrain]")
    ] = None,
    lr_g: Annotated[
        float | None, typer.Option(help="GAN-stage generator learning rate. [optim.lr_g]")
    ] = None,
    lr_d: Annotated[
        float | None, typer.Option(help="Discriminator learning rate. [optim.lr_d]")
    ] = None,
    ema_decay: Annotated[
        float | None, typer.Option(help="EMA decay of generator weights. [ema_decay]")
    ] = None,
    val_every: Annotated[
        int | None, typer.Option(help="Validate every N steps. [schedule.val_every]")
    ] = None,
    log_every: Annotated[
        int | None, typer.Option(help="Log losses every N steps. [schedule.log_every]")
    ] = None,
    save_every: Annotated[
        int | None, typer.Option(help="Save model and state every N steps. [schedule.save_every]")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. [seed]")] = None,
    device: Annotated[str | None, typer.Option(help=f"{DEVICE_HELP}. [device]")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch. [threads]")] = None,
    amp: Annotated[
        bool | None, typer.Option("--amp/--no-amp", help="bf16 autocast on CUDA. [amp]")
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="torch.compile the networks. [compile]"),
    ] = None,
    tensorboard: Annotated[
        bool | None,
        typer.Option(
            "--tensorboard/--no-tensorboard",
            help="TensorBoard curves when installed. [tensorboard]",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar or summary.")] = False,
) -> None:
    import logging

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from mrisr.config import TrainConfig, load_config, with_overrides
    from mrisr.errors import ConfigError
    from mrisr.training import CONFIG_FILE, TrainEvent, train

    if config is not None:
        base = load_config(config)
    elif resume and out is not None and (out / CONFIG_FILE).is_file():
        base = load_config(out / CONFIG_FILE)
    else:
        base = TrainConfig()
    if factor_range is not None and factor is None:
        factor = (factor_range[0] + factor_range[1]) / 2  # validate mid-range
    axes_value = None
    if axes is not None:
        try:
            axes_value = [int(a) for a in axes.replace(" ", "").split(",") if a]
        except ValueError:
            raise ConfigError(f"--axes must be axis numbers like 0,1,2, got {axes!r}") from None
    settings = with_overrides(
        base,
        {
            "data.volumes": str(volumes) if volumes is not None else None,
            "out": str(out) if out is not None else None,
            "data.factor": factor,
            "data.factor_range": factor_range,
            "schedule.steps": steps,
            "schedule.gan_steps": gan_steps,
            "model.recipe": recipe,
            "model.size": size,
            "model.generator": generator,
            "model.discriminator": discriminator,
            "data.val_volume": val_volume,
            "data.axes": axes_value,
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
        },
    )
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 reports
    if not quiet and rank == 0:
        logging.getLogger("mrisr").setLevel(logging.INFO)

    if quiet or rank != 0:
        train(settings, resume=resume)
        return

    last: dict[str, dict] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[losses]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("training", total=None, losses="")

        def report(event: TrainEvent) -> None:
            if event.kind == "start":
                bar.update(task, completed=event.step, total=event.total)
            elif event.kind == "step":
                bar.update(task, completed=event.step, description=f"stage {event.stage}")
            elif event.kind == "log":
                last["log"] = dict(event.values)
                keys = ("pixel", "adversarial", "discriminator", "patches_per_s")
                text = " ".join(
                    f"{k.replace('patches_per_s', 'patch/s')} {event.values[k]:.3g}"
                    for k in keys
                    if k in event.values
                )
                bar.update(task, losses=text)
            elif event.kind == "validation":
                last["validation"] = dict(event.values)
                v = event.values
                bar.console.print(
                    f"step {event.step}: PSNR {v['psnr']:.2f} dB (cubic {v['psnr_cubic']:.2f}), "
                    f"SSIM {v['ssim']:.4f} (cubic {v['ssim_cubic']:.4f})"
                )

        run_dir = train(settings, resume=resume, callback=report)
    rate = last.get("log", {}).get("patches_per_s")
    console.print(f"wrote {run_dir}" + (f"  ({rate:.1f} patches/s)" if rate else ""))
