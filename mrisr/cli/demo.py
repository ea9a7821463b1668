"""See what mrisr does in one command: a shipped real scan, made thick, upscaled, measured.

Takes a T2-weighted brain crop shipped with mrisr (never used in training),
simulates thick slices, upscales them with cubic interpolation and with the
bundled model, prints PSNR/SSIM/HFEN/NRMSE and writes a figure and the volumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrisr.cli import options as opt
from mrisr.cli.common import console, output
from mrisr.cli.options import non_empty_path, refuse_ineffective
from mrisr.device import DEVICE_HELP

NAME = "demo"


def command(
    out: Annotated[
        Path,
        typer.Option(parser=non_empty_path, help="Folder for demo.png and the volumes."),
    ] = Path("mrisr_demo"),
    factor: Annotated[float, typer.Option(help="Thick-slice factor to simulate.")] = 4.0,
    model: Annotated[
        str | None,
        typer.Option(help="Model to show; default: the bundled model for the factor."),
    ] = None,
    device: Annotated[str, typer.Option(help=f"{DEVICE_HELP}.")] = "auto",
    threads: opt.Threads = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier demo's files.")] = False,
) -> None:
    from mrisr.demo import run_demo
    from mrisr.evaluation import rich_table
    from mrisr.models import load_slice_model

    refuse_ineffective(command, {"model": model, "device": device, "threads": threads})
    network = load_slice_model(model, factor=factor, device=device, threads=threads)
    with console.status(f"simulating {factor:g}x thick slices and upscaling"):
        result = run_demo(out, network, factor=factor, overwrite=overwrite)
    output.print(rich_table(result.evaluation, title="mrisr demo"))
    console.print(f"model: {network.name}  ({network.describe().get('path', 'cubic')})")
    console.print(f"wrote {result.figure}")
    for path in result.volumes:
        console.print(f"wrote {path}")
