"""Upscale a BIDS dataset's anatomical scans into a BIDS derivative dataset (needs pybids)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrisr.device import DEVICE_HELP

NAME = "bids"


def command(
    bids_dir: Annotated[Path, typer.Argument(help="The BIDS dataset's top folder.")],
    out_dir: Annotated[
        Path,
        typer.Argument(help="The derivative dataset, e.g. BIDS_DIR/derivatives/mrisr."),
    ],
    participant_label: Annotated[
        list[str] | None,
        typer.Option(help="Only this participant (01 or sub-01); repeat for several."),
    ] = None,
    session_label: Annotated[
        list[str] | None, typer.Option(help="Only this session (1 or ses-1); repeatable.")
    ] = None,
    suffix: Annotated[
        list[str] | None,
        typer.Option(help="Anatomical suffix to upscale; repeatable. Default: T2w and FLAIR."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="'cubic', a bundled model name, a run folder or a .safetensors file; "
            "default: the bundled model for each scan's factor."
        ),
    ] = None,
    factor: Annotated[
        float | None, typer.Option(help="Upsampling factor; default: isotropic voxels.")
    ] = None,
    fusion: Annotated[str, typer.Option(help="Fusion of the two planes: mean or fba.")] = "mean",
    consistency: Annotated[
        bool, typer.Option(help="Make the result's thick slices equal the input's.")
    ] = False,
    device: Annotated[str, typer.Option(help=f"{DEVICE_HELP}.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for the network.")] = None,
    batch_size: Annotated[int, typer.Option(help="Slices per network batch.")] = 16,
    force: Annotated[
        bool, typer.Option(help="Allow a factor outside the model's trained range.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Redo scans already done.")] = False,
    shard: Annotated[
        str | None,
        typer.Option(help="K/N: only the K-th of N disjoint shares of the scans (array jobs)."),
    ] = None,
) -> None:
    from mrisr.bids import (
        DEFAULT_SUFFIXES,
        LOG_FOLDER,
        check_output_dataset,
        derivative_jobs,
        find_anatomical_scans,
        write_derivative_description,
    )
    from mrisr.cli.cohort_report import run_and_report, summary_path
    from mrisr.cohort import distributed_env, parse_shard
    from mrisr.models import ModelRequest
    from mrisr.upscale import UpscaleOptions

    shard_k_n = parse_shard(shard) if shard is not None else None
    options = UpscaleOptions(fusion=fusion, consistency=consistency, force=force)
    scans = find_anatomical_scans(
        bids_dir,
        participant_labels=participant_label or (),
        session_labels=session_label or (),
        suffixes=suffix or DEFAULT_SUFFIXES,
    )
    check_output_dataset(bids_dir, out_dir)
    if distributed_env()[0] == 0:  # one writer of the dataset's description
        write_derivative_description(bids_dir, out_dir)
    logs = Path(out_dir) / LOG_FOLDER
    logs.mkdir(parents=True, exist_ok=True)
    run_and_report(
        derivative_jobs(scans, out_dir),
        ModelRequest(model, device=device, threads=threads, batch_size=batch_size),
        shard=shard_k_n,
        summary=summary_path(logs, shard_k_n),
        factor=factor,
        options=options,
        overwrite=overwrite,
    )
