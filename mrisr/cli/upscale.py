"""Super-resolve a thick-slice scan into an isotropic volume (+ a JSON sidecar)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mrisr.cli.common import progress_bar, say
from mrisr.device import DEVICE_HELP

NAME = "upscale"


def command(
    scans: Annotated[
        list[Path],
        typer.Argument(
            help="NIfTI, MGH, NRRD, MHA file or DICOM folder. Several scans, folders of scans "
            "or quoted globs ('data/**/*.nii.gz') run in one process: the model loads once, "
            "finished scans are skipped, a failed scan does not stop the others."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Output file; default <stem>_sr.nii.gz beside the input. With several scans "
            "-o is an output FOLDER (created when missing).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="'cubic', a bundled model name, a run folder or a .safetensors file; "
            "default: the bundled model for the scan's factor."
        ),
    ] = None,
    factor: Annotated[
        float | None, typer.Option(help="Upsampling factor; default: isotropic voxels.")
    ] = None,
    axis: Annotated[
        int | None, typer.Option(help="Thick axis 0, 1 or 2; default: detected.")
    ] = None,
    fusion: Annotated[str, typer.Option(help="Fusion of the two planes: mean or fba.")] = "mean",
    consistency: Annotated[
        bool,
        typer.Option(
            help="Make the result's thick slices (box of the slice thickness) equal the input's."
        ),
    ] = False,
    thickness: Annotated[
        float | None,
        typer.Option(
            help="Slice thickness in mm when it differs from the spacing (gaps, overlaps); "
            "default: the header's (DICOM, BIDS sidecar), else the spacing."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help=f"{DEVICE_HELP}.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for the network.")] = None,
    batch_size: Annotated[int, typer.Option(help="Slices per network batch.")] = 16,
    force: Annotated[
        bool, typer.Option(help="Allow a factor outside the model's trained range.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    dtype: Annotated[
        str,
        typer.Option(
            help="Output voxel type: float32, int16 or uint8 (NIfTI only; integers carry "
            "a scale factor chosen from the data's range, so nothing is clipped)."
        ),
    ] = "float32",
    shard: Annotated[
        str | None,
        typer.Option(
            help="K/N: only the K-th of N disjoint shares of the sorted scans (array jobs)."
        ),
    ] = None,
    summary: Annotated[
        Path | None,
        typer.Option(
            help="JSON summary of several scans; default mrisr_summary.json in the -o folder "
            "(else the current folder)."
        ),
    ] = None,
) -> None:
    from mrisr.cohort import distributed_env, is_single_scan
    from mrisr.io.outputs import named_path
    from mrisr.models import ModelRequest
    from mrisr.upscale import UpscaleOptions, upscale_file

    # Loaded inside upscale_file, after the scan is planned: the default model
    # depends on the factor. "cubic" never imports torch.
    request = ModelRequest(model, device=device, threads=threads, batch_size=batch_size)
    options = UpscaleOptions(
        fusion=fusion, consistency=consistency, thickness_mm=thickness, force=force, dtype=dtype
    )
    if shard is not None or distributed_env()[1] > 1 or not is_single_scan(scans):
        _many(scans, output, request, options, factor, axis, overwrite, shard, summary)
        return
    scan = scans[0]
    with progress_bar("slices") as bar:
        task = bar.add_task(f"upscaling {named_path(scan).name}", total=None)
        written, sidecar = upscale_file(
            scan,
            output,
            model=request,
            factor=factor,
            axis=axis,
            options=options,
            overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    say(f"wrote {written} ({_stored(written, sidecar)})\nwrote {sidecar}")


def _stored(image: Path, sidecar: Path) -> str:
    """``"29.6 MB, float32"``: the output's size on disk and how its voxels are stored."""
    import json

    from mrisr.io.storage import Storage

    record = json.loads(sidecar.read_text()).get("output_storage", {})
    storage = Storage(
        record.get("dtype", "float32"), record.get("scl_slope", 1.0), record.get("scl_inter", 0.0)
    )
    return f"{image.stat().st_size / 1e6:.3g} MB, {storage.describe()}"


def _many(
    scans: list[Path],
    output: Path | None,
    request: Any,
    options: Any,
    factor: float | None,
    axis: int | None,
    overwrite: bool,
    shard: str | None,
    summary: Path | None,
) -> None:
    """Several scans: the cohort path (mrisr.cohort), reported by mrisr.cli.cohort_report."""
    from mrisr.cli.cohort_report import run_and_report, summary_path
    from mrisr.cohort import parse_shard, scan_jobs

    shard_k_n = parse_shard(shard) if shard is not None else None
    jobs = scan_jobs(scans, output)
    summary = summary or summary_path(output or Path.cwd(), shard_k_n)
    settings = {"factor": factor, "axis": axis, "options": options, "overwrite": overwrite}
    run_and_report(jobs, request, shard=shard_k_n, summary=summary, **settings)
