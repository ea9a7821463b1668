"""Upscale a BIDS dataset's anatomical scans into a BIDS derivative dataset (needs pybids)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrisr.cli import options as opt

NAME = "bids"


def command(
    bids_dir: Annotated[
        Path, typer.Argument(parser=opt.non_empty_path, help="The BIDS dataset's top folder.")
    ],
    out_dir: Annotated[
        Path,
        typer.Argument(
            parser=opt.non_empty_path,
            help="The derivative dataset, e.g. BIDS_DIR/derivatives/mrisr.",
        ),
    ],
    analysis_level: Annotated[
        str,
        typer.Argument(
            help="The BIDS-App analysis level: participant (the only one; it may be left out)."
        ),
    ] = "participant",
    participant_label: Annotated[
        list[str] | None,
        typer.Option(
            "--participant-label",
            "--participant_label",
            help="Only this participant (01 or sub-01); repeat for several.",
        ),
    ] = None,
    session_label: Annotated[
        list[str] | None,
        typer.Option(
            "--session-label",
            "--session_label",
            help="Only this session (1 or ses-1); repeatable.",
        ),
    ] = None,
    suffix: Annotated[
        list[str] | None,
        typer.Option(help="Anatomical suffix to upscale; repeatable. Default: T2w and FLAIR."),
    ] = None,
    model: opt.Model = None,
    factor: opt.Factor = None,
    spacing: opt.Spacing = None,
    fusion: opt.Fusion = "mean",
    consistency: opt.Consistency = None,
    consistency_profile: opt.ConsistencyProfile = "mean",
    clip_range: opt.ClipRange = True,
    disagreement: opt.Disagreement = True,
    tta: opt.Tta = False,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    precision: opt.Precision = "auto",
    batch_size: opt.BatchSize = 16,
    force: opt.Force = False,
    overwrite: Annotated[bool, typer.Option(help="Redo scans already done.")] = False,
    shard: opt.Shard = None,
    summary: Annotated[
        Path | None,
        typer.Option(
            parser=opt.non_empty_path,
            help="JSON summary of the run; default OUT_DIR/logs/mrisr_summary[_sub-X][_ses-Y]"
            "[_SUFFIX][_shard-K-of-N].json, named after the selection so that runs for other "
            "participants do not replace it.",
        ),
    ] = None,
) -> None:
    arguments = dict(locals())
    from mrisr.bids import (
        DEFAULT_SUFFIXES,
        LOG_FOLDER,
        check_analysis_level,
        check_output_dataset,
        derivative_jobs,
        find_anatomical_scans,
        write_derivative_description,
    )
    from mrisr.cli.cohort_report import run_and_report, summary_path
    from mrisr.models import ModelRequest
    from mrisr.shards import distributed_env, parse_shard

    check_analysis_level(analysis_level)
    shard_k_n = parse_shard(shard) if shard is not None else None
    options = opt.upscale_options(arguments)
    # Made (and its precision checked) before anything is written to OUT_DIR.
    request = ModelRequest(
        model, device=device, threads=threads, batch_size=batch_size, precision=precision
    )
    opt.refuse_ineffective(command, arguments)
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
        request,
        shard=shard_k_n,
        summary=summary or _summary_name(summary_path(logs, shard_k_n), arguments),
        factor=factor,
        spacing_mm=spacing,
        options=options,
        overwrite=overwrite,
    )


def _summary_name(default: Path, arguments: dict) -> Path:
    """``mrisr_summary_sub-01_T1w.json``: one summary per selection (participant jobs run apart)."""
    from mrisr.bids import DEFAULT_SUFFIXES

    parts = [f"sub-{label.removeprefix('sub-')}" for label in arguments["participant_label"] or ()]
    parts += [f"ses-{label.removeprefix('ses-')}" for label in arguments["session_label"] or ()]
    suffixes = list(arguments["suffix"] or ())
    if set(suffixes) != set(DEFAULT_SUFFIXES):  # the default selection keeps the plain name
        parts += suffixes
    if not parts:
        return default
    stem, _, shard = default.stem.partition("_shard-")
    name = "_".join([stem, *parts]) + (f"_shard-{shard}" if shard else "")
    return default.with_name(name + default.suffix)
