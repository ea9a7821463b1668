"""Turn a thick-slice DICOM series into an isotropic NIfTI volume, with provenance.

Reads one DICOM series from a folder (SimpleITK's GDCM reader: slices sorted
by position, uneven spacing and mixed series refused), prints what the headers
say about the slices (spacing, thickness, gaps), writes the series as NIfTI,
upscales it along its thick axis and writes the result beside a JSON record of
what was done. The in-memory API is used step by step here so that a pipeline
can insert its own checks between them; ``mrisr upscale dicom_folder/`` does
the same in one command.

Run from the repository root:

    python examples/dicom_to_isotropic.py                         # shared PD brain series
    python examples/dicom_to_isotropic.py /data/study/series_5 --model fast --out results/
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mrisr import (
    CubicSliceModel,
    MrisrError,
    load_volume,
    plan_upscale,
    save_volume,
    upscale_volume,
)
from mrisr.io.files import check_output
from mrisr.io.outputs import write_json_atomic

#: The project's shared real scans (../shared/data from the repository root);
#: set MRISR_SHARED_DATA to use another copy.
SHARED_DATA = Path(
    os.environ.get("MRISR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "series",
        nargs="?",
        type=Path,
        default=SHARED_DATA / "thick" / "brain_pd_axial_7mm_dicom",
        help="folder holding one DICOM series",
    )
    parser.add_argument("--model", default="cubic", help="cubic, a bundled name, run or file")
    parser.add_argument("--factor", type=float, help="upsampling factor (default: isotropic)")
    parser.add_argument("--out", type=Path, default=Path("mrisr_examples"), help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    # 1. Read the series. Geometry comes from ImagePositionPatient and
    #    ImageOrientationPatient and is converted to NIfTI's RAS+ convention.
    scan = load_volume(args.series)
    meta = scan.meta
    print(f"series  {args.series}: {meta.get('n_files')} files, UID {meta.get('series_uid')}")
    print(f"        {scan.shape} voxels of {_mm(scan.spacing)} mm")
    # Slice spacing (centre to centre) and slice thickness may differ: a gap
    # or an overlap between slices. Both are recorded.
    for key, label in (
        ("slice_spacing_mm", "slice spacing (positions)"),
        ("slice_thickness_mm", "slice thickness (0018,0050)"),
        ("spacing_between_slices_mm", "spacing between slices (0018,0088)"),
    ):
        if key in meta:
            print(f"        {label}: {meta[key]:.4g} mm")
    if "slice_gap_range_mm" in meta:
        low, high = meta["slice_gap_range_mm"]
        print(f"        position steps between slices: {low:.4g} to {high:.4g} mm")

    # 2. Refuse existing outputs before writing any, so a refusal leaves nothing
    #    behind. Then keep the thick series as NIfTI too, in its stored voxel
    #    type (int16 for most DICOM): what downstream tools can read.
    name = args.series.name
    thick_path = args.out / f"{name}.nii.gz"
    image_path = args.out / f"{name}_iso.nii.gz"
    record_path = args.out / f"{name}_iso.json"
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (thick_path, image_path, record_path):
        check_output(path, overwrite=args.overwrite, inputs=[args.series])
    thick_path = save_volume(
        scan,
        thick_path,
        overwrite=args.overwrite,
        dtype=meta.get("dtype", "float32"),
    )
    print(f"wrote   {thick_path}")

    # 3. Plan, then upscale along the thick axis (detected from the affine).
    plan = plan_upscale(scan, factor=args.factor)
    print(f"plan    {plan.shape_out} voxels of {_mm(plan.spacing_out)} mm (x{plan.factor:.3g})")
    if args.model == "cubic":
        model = CubicSliceModel()
    else:
        from mrisr import load_slice_model  # brings torch: only for networks

        model = load_slice_model(args.model, factor=plan.factor, device=args.device)
    result = upscale_volume(scan, model, plan=plan)

    # 4. Write the volume (float32) and a provenance record beside it, each
    #    through a temporary file renamed into place.
    image_path = save_volume(result, image_path, overwrite=args.overwrite)
    record = {
        "input": {"dicom_folder": str(args.series.resolve()), **_jsonable(meta)},
        "output": str(image_path),
        **result.meta["upscale"],
    }
    try:
        write_json_atomic(record, record_path, overwrite=args.overwrite)
    except BaseException:
        image_path.unlink(missing_ok=True)  # no image without its record
        raise
    print(f"wrote   {image_path}\n        {record_path}")
    return 0


def _mm(spacing) -> str:
    return " x ".join(f"{s:.3g}" for s in spacing)


def _jsonable(meta: dict) -> dict:
    """The DICOM facts worth keeping: plain numbers and strings only."""
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, tuple, list))}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MrisrError as error:  # bad input, model or output: a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)  # the exit code `mrisr` itself uses for these
