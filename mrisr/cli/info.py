"""Show a scan's geometry, its detected thick axis and the planned output grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrisr.cli.common import output
from mrisr.cli.options import non_empty_path

NAME = "info"


def command(
    scan: Annotated[
        Path,
        typer.Argument(parser=non_empty_path, help="NIfTI, MGH, NRRD, MHA file or DICOM folder."),
    ],
    factor: Annotated[
        float | None, typer.Option(help="Planned factor; default: isotropic voxels.")
    ] = None,
    axis: Annotated[
        int | None, typer.Option(help="Thick axis 0, 1 or 2; default: detected.")
    ] = None,
    spacing: Annotated[
        float | None,
        typer.Option(
            "--spacing", metavar="MM", help="Planned isotropic output spacing in mm (see upscale)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    import json

    import numpy as np
    from rich.markup import escape

    from mrisr.errors import naming_input
    from mrisr.io import load_volume
    from mrisr.io.nibabel_formats import form_disagreement
    from mrisr.upscale import plan_upscale

    volume = load_volume(scan)
    with naming_input(scan):
        plan = plan_upscale(volume, factor=factor, axis=axis, spacing_mm=spacing)
    facts = {
        "path": str(scan),
        "format": volume.meta.get("format"),
        "on_disk_dtype": volume.meta.get("dtype"),
        "qform_code": volume.meta.get("qform_code"),
        "sform_code": volume.meta.get("sform_code"),
        "qform_sform_disagreement": form_disagreement(volume),
        "intensity_range": [float(np.min(volume.data)), float(np.max(volume.data))],
        "affine": np.round(volume.affine, 6).tolist(),
        **plan.to_dict(),
    }
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    mm = " x ".join
    output.print(f"[bold]{escape(str(scan))}[/]  ({facts['format']}, {facts['on_disk_dtype']})")
    output.print(f"  shape        {mm(str(n) for n in plan.shape_in)}")
    output.print(f"  voxel (mm)   {mm(f'{s:.4g}' for s in plan.spacing_in)}")
    output.print(f"  thick axis   {plan.axis}")
    output.print(f"  form codes   qform {facts['qform_code']}, sform {facts['sform_code']}")
    if facts["qform_sform_disagreement"]:
        gap = facts["qform_sform_disagreement"]
        output.print(
            f"  [yellow]qform and sform disagree[/] by up to {gap['max_shift_mm']:.3g} mm and "
            f"{gap['rotation_deg']:.3g} degrees; mrisr uses the sform (code {gap['sform_code']}) "
            "and writes both, each moved to the new grid (ITK, ANTs and ITK-SNAP may read the qform)"
        )
    if plan.resamples_in_plane:
        output.print(
            f"  in-plane     area average to {mm(str(n) for n in plan.shape_grid)} voxels "
            f"(--spacing {plan.spacing_mm:g})"
        )
    output.print(
        f"  upscale plan factor {plan.factor:.4g} (effective {plan.effective_factor:.4g}) -> "
        f"{mm(str(n) for n in plan.shape_out)} voxels of "
        f"{mm(f'{s:.4g}' for s in plan.spacing_out)} mm"
    )
