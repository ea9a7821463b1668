"""Super-resolve a thick-slice scan into an isotropic volume (+ a JSON sidecar)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrisr.cli.common import console
from mrisr.device import DEVICE_HELP

NAME = "upscale"


def command(
    scan: Annotated[Path, typer.Argument(help="NIfTI, MGH, NRRD, MHA file or DICOM folder.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Output file; default <stem>_sr.nii.gz beside the input."
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
        bool | None,
        typer.Option(
            "--consistency/--no-consistency",
            help="Make the result's thick slices (box of the slice thickness) equal the input's; "
            "default: wherever the slice thickness allows it (the sidecar says when skipped).",
            show_default=False,
        ),
    ] = None,
    consistency_profile: Annotated[
        str,
        typer.Option(
            help="Slice profile of the consistency projection: mean (box) or gaussian "
            "(FWHM the slice thickness), when the scan's profile is known."
        ),
    ] = "mean",
    clip_range: Annotated[
        bool,
        typer.Option(
            "--clip-range/--no-clip-range",
            help="Keep the output within the input's intensity range, zero background at zero.",
        ),
    ] = True,
    disagreement: Annotated[
        bool,
        typer.Option(
            "--disagreement/--no-disagreement",
            help="Write <output>_disagreement beside the output: where the passes disagree.",
        ),
    ] = True,
    tta: Annotated[
        bool,
        typer.Option(help="Test-time augmentation: flipped passes too (4x the work)."),
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
) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from mrisr.models import ModelRequest
    from mrisr.upscale import UpscaleOptions, upscale_file

    # Loaded inside upscale_file, after the scan is planned: the default model
    # depends on the factor. "cubic" never imports torch.
    request = ModelRequest(model, device=device, threads=threads, batch_size=batch_size)
    options = UpscaleOptions(
        fusion=fusion,
        consistency=consistency,
        thickness_mm=thickness,
        force=force,
        clip_range=clip_range,
        disagreement=disagreement,
        tta=tta,
        consistency_profile=consistency_profile,  # type: ignore[arg-type]
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} slices"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"upscaling {scan.name}", total=None)
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
    from mrisr.io.outputs import disagreement_path

    console.print(f"wrote {written}")
    if disagreement:
        console.print(f"wrote {disagreement_path(written)}")
    console.print(f"wrote {sidecar}")
