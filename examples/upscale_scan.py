"""Upscale one thick-slice scan to isotropic voxels and print what was done.

The Python equivalent of ``mrisr upscale scan.nii.gz --model cubic``: read a
scan, show the planned output grid, upscale it with a model, write
``<stem>_sr.nii.gz`` plus its JSON provenance sidecar, and summarise the
sidecar (the record a pipeline should keep beside the image).

Run from the repository root:

    python examples/upscale_scan.py                      # shared T2* spine scan, cubic
    python examples/upscale_scan.py scan.nii.gz --model fast --device cuda
    python examples/upscale_scan.py scan.nii.gz --model runs/x4 --factor 4 -o out.nii.gz

``--model`` takes ``cubic`` (interpolation; needs no weights), the name of a
bundled model (``mrisr models`` lists them), a training run folder or a
``.safetensors`` file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mrisr import CubicSliceModel, MrisrError, load_volume, plan_upscale, upscale_file
from mrisr.io.outputs import default_output_path

#: The project's shared real scans (../shared/data from the repository root);
#: set MRISR_SHARED_DATA to use another copy.
SHARED_DATA = Path(
    os.environ.get("MRISR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scan",
        nargs="?",
        type=Path,
        default=SHARED_DATA / "thick" / "spine_t2star_7.5mm.nii.gz",
        help="thick-slice scan: NIfTI, MGH, NRRD, MHA or a DICOM folder",
    )
    parser.add_argument("--model", default="cubic", help="cubic, a bundled name, run or file")
    parser.add_argument("--factor", type=float, help="upsampling factor (default: isotropic)")
    parser.add_argument("--axis", type=int, help="thick axis 0, 1 or 2 (default: detected)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output image (default: mrisr_examples/<stem>_sr.nii.gz in the current folder)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    # 1. Read the scan and look at the plan before spending any compute:
    #    thick axis (from the affine), factor and output grid.
    scan = load_volume(args.scan)
    plan = plan_upscale(scan, factor=args.factor, axis=args.axis)
    print(f"input   {args.scan}")
    print(f"        {scan.shape} voxels of {_mm(plan.spacing_in)} mm, thick axis {plan.axis}")
    print(f"plan    {plan.shape_out} voxels of {_mm(plan.spacing_out)} mm (x{plan.factor:.3g})")

    # 2. The slice model. Cubic interpolation needs no torch; anything else
    #    is a network, loaded (with torch) only when asked for.
    if args.model == "cubic":
        model = CubicSliceModel()
    else:
        from mrisr import load_slice_model

        model = load_slice_model(args.model, factor=plan.factor, device=args.device)

    # 3. Upscale and write atomically: image + sidecar, never over the input,
    #    refusing existing outputs unless --overwrite.
    # default_output_path names it as `mrisr upscale` does: <stem>_sr.nii.gz.
    output = args.output or Path("mrisr_examples") / default_output_path(args.scan).name
    output.parent.mkdir(parents=True, exist_ok=True)
    image, sidecar = upscale_file(
        args.scan,
        output,
        model=model,
        factor=plan.factor,
        axis=plan.axis,
        overwrite=args.overwrite,
    )

    # 4. The sidecar is plain JSON: what a pipeline should log or archive.
    record = json.loads(sidecar.read_text())
    print(f"wrote   {image}")
    print(f"        {sidecar}")
    print("sidecar summary")
    print(f"  model           {record['model']['name']} ({record['model'].get('kind', '')})")
    print(f"  axis, factor    {record['axis']}, x{record['effective_factor']:.4g}")
    print(f"  shape           {record['shape_in']} -> {record['shape_out']}")
    print(f"  spacing (mm)    {_mm(record['spacing_in_mm'])} -> {_mm(record['spacing_out_mm'])}")
    print(f"  fusion          {record['fusion']}")
    print(f"  input sha256    {record['input']['sha256'][:16]}...")
    print(f"  mrisr version   {record['mrisr_version']}")
    return 0


def _mm(spacing) -> str:
    return " x ".join(f"{s:.3g}" for s in spacing)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MrisrError as error:  # bad input, model or output: a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)  # the exit code `mrisr` itself uses for these
