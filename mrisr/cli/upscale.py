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
    adapt: Annotated[
        bool,
        typer.Option(
            help="Fine-tune the model on the scan's own in-plane slices first; kept only "
            "when it improves held-out in-plane patches."
        ),
    ] = False,
    adapt_seconds: Annotated[
        float | None, typer.Option(help="Adaptation time budget in seconds; default 90.")
    ] = None,
    adapt_steps: Annotated[
        int | None,
        typer.Option(help="Adaptation budget in steps (deterministic; overrides --adapt-seconds)."),
    ] = None,
    save_adapted: Annotated[
        Path | None,
        typer.Option(help="Write the adapted model to this .safetensors file (for --model)."),
    ] = None,
) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from mrisr.models import ModelRequest
    from mrisr.upscale import UpscaleOptions, upscale_file

    # Loaded inside upscale_file, after the scan is planned: the default model
    # depends on the factor. "cubic" never imports torch.
    request = ModelRequest(model, device=device, threads=threads, batch_size=batch_size)
    adapting = _adapt_settings(adapt, adapt_seconds, adapt_steps, save_adapted)
    options = UpscaleOptions(
        fusion=fusion, consistency=consistency, thickness_mm=thickness, force=force, adapt=adapting
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
        tuning = bar.add_task("adapting", total=None, visible=adapting is not None)
        unit = "steps" if adapt_steps is not None else "s"
        written, sidecar = upscale_file(
            scan,
            output,
            model=request,
            factor=factor,
            axis=axis,
            options=options,
            overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            adapt_progress=lambda done, total: bar.update(
                tuning, completed=done, total=total, description=f"adapting ({unit})"
            ),
        )
    console.print(f"wrote {written}\nwrote {sidecar}")
    if adapting is not None:
        _report_adaptation(sidecar)


def _adapt_settings(
    adapt: bool, seconds: float | None, steps: int | None, save: Path | None
) -> object | None:
    """The adaptation settings, or None; budget options without --adapt are refused."""
    from mrisr.errors import ConfigError

    if not adapt:
        given = [
            name
            for name, value in (
                ("--adapt-seconds", seconds),
                ("--adapt-steps", steps),
                ("--save-adapted", save),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} given without --adapt", fix="add --adapt, or drop them"
            )
        return None
    from mrisr.adapt import AdaptSettings

    return AdaptSettings(steps=steps, seconds=seconds, save_path=save)


def _report_adaptation(sidecar: Path) -> None:
    """One line on what the adaptation did, read back from the sidecar."""
    import json

    record = json.loads(sidecar.read_text()).get("adaptation", {})
    console.print(f"adaptation: {record.get('reason')} ({record.get('steps')} steps)")
    if record.get("saved_to"):
        console.print(f"wrote {record['saved_to']}")
