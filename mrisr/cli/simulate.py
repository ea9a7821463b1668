"""Simulate a thick-slice scan from a high-resolution volume."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrisr.cli.common import say
from mrisr.cli.options import non_empty_path

NAME = "simulate"


def command(
    volume_path: Annotated[
        Path,
        typer.Argument(metavar="VOLUME", parser=non_empty_path, help="High-resolution volume."),
    ],
    axis: Annotated[int, typer.Option(help="Axis made thick: 0, 1 or 2.")],
    factor: Annotated[float, typer.Option(help="Thick / thin spacing ratio (> 1).")],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", parser=non_empty_path, help="Output file (.nii.gz...)."),
    ],
    profile: Annotated[str, typer.Option(help="Slice profile: mean or gaussian.")] = "mean",
    thickness: Annotated[
        float | None, typer.Option(help="Slice thickness in mm; default: the slice spacing.")
    ] = None,
    gap: Annotated[float | None, typer.Option(help="Gap between slices in mm.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    from mrisr.errors import naming_input
    from mrisr.io import load_volume, output_format, save_volume
    from mrisr.io.files import check_output, check_writable
    from mrisr.simulate import simulate_volume

    # The output is checked before the volume is read (it may be large).
    output_format(output)
    check_output(output, overwrite=overwrite, inputs=[volume_path])
    check_writable(output)
    volume = load_volume(volume_path)
    with naming_input(volume_path):
        thick = simulate_volume(
            volume, axis, factor, profile=profile, thickness_mm=thickness, gap_mm=gap
        )
    written = save_volume(thick, output, overwrite=overwrite)
    spacing = " x ".join(f"{s:.4g}" for s in thick.spacing)
    shape = " x ".join(str(n) for n in thick.shape)
    say(f"wrote {written}: {shape} voxels of {spacing} mm")
