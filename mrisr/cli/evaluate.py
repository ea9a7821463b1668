"""Measure models on a high-resolution scan: simulate thick slices, upscale, compare (PSNR, SSIM, HFEN, NRMSE).

The scan is cropped along --axis to a whole number of thick slices, made thick
by --factor, upscaled by cubic interpolation (always, as the baseline) and by
each --model, and compared with the original inside a foreground mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrisr.cli import options as opt
from mrisr.cli.common import console, output
from mrisr.device import DEVICE_HELP

NAME = "evaluate"


def command(
    scan: Annotated[
        Path,
        typer.Argument(
            parser=opt.non_empty_path, help="High-resolution (near-isotropic) scan: the truth."
        ),
    ],
    axis: Annotated[int, typer.Option(help="Axis to make thick: 0, 1 or 2.")] = 2,
    factor: Annotated[float, typer.Option(help="Thick-to-thin slice ratio (> 1).")] = 4.0,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="Model to evaluate besides cubic: a bundled model name, a run folder or a "
            ".safetensors file. Repeat for several."
        ),
    ] = None,
    profile: Annotated[
        str, typer.Option(help="Simulated slice profile: mean or gaussian.")
    ] = "mean",
    fusion: opt.Fusion = "mean",
    consistency: opt.Consistency = None,
    clip_range: opt.ClipRange = True,
    tta: opt.Tta = False,
    mask: Annotated[
        bool, typer.Option("--mask/--no-mask", help="Compare inside a foreground mask only.")
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {method: {psnr, ssim, hfen, nrmse}} on stdout.")
    ] = False,
    figure: Annotated[
        Path | None,
        typer.Option(
            parser=opt.non_empty_path,
            help="Write a PNG of the centre planes, error and disagreement maps here.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help=f"{DEVICE_HELP} (networks).")] = "auto",
    threads: opt.Threads = None,
    precision: opt.Precision = "auto",
    force: opt.Force = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing figure.")] = False,
) -> None:
    from mrisr.device import check_precision_text
    from mrisr.errors import naming_input
    from mrisr.evaluation import check_figure_path, evaluate, rich_table, save_figure
    from mrisr.interpolation import CubicSliceModel
    from mrisr.io import load_volume
    from mrisr.upscale import UpscaleOptions

    check_precision_text(precision)  # before any work, even when only cubic runs
    opt.refuse_ineffective(
        command,
        {"device": device, "threads": threads, "precision": precision, "force": force},
        networks=model or [],
        without_network="when only cubic interpolation runs (no network --model)",
    )
    if figure is not None:
        check_figure_path(figure, overwrite=overwrite)
    volume = load_volume(scan)

    models = {"cubic": CubicSliceModel()}
    for spec in model or []:
        if spec == "cubic":
            continue  # already the baseline row
        # Imported only when a network is asked for: it brings torch.
        from mrisr.models import load_slice_model

        loaded = load_slice_model(
            spec, factor=factor, device=device, threads=threads, precision=precision
        )
        name = loaded.name if loaded.name not in models else spec
        models[name] = loaded

    status = console.status(f"evaluating {', '.join(models)} at {factor:g}x along axis {axis}")
    with status, naming_input(scan):
        result = evaluate(
            volume,
            axis=axis,
            factor=factor,
            models=models,
            profile=profile,  # type: ignore[arg-type]
            fusion=fusion,  # type: ignore[arg-type]
            mask=mask,
            force=force,
            options=UpscaleOptions(consistency=consistency, clip_range=clip_range, tta=tta),
        )
        if figure is not None:
            save_figure(figure, result, overwrite=overwrite)

    if as_json:
        typer.echo(result.to_json())
    else:
        output.print(rich_table(result))
    if figure is not None:
        console.print(f"wrote {figure}")
