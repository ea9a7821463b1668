"""Measure a model against cubic interpolation on a scan whose truth you know.

Takes a high-resolution (near-isotropic) volume, simulates a thick-slice scan
from it along one axis, upscales that with cubic interpolation and with each
model, and prints PSNR / SSIM / HFEN / NRMSE against the original inside a
foreground mask. Use it to check a model on your own site's data before
trusting it in a pipeline.

Run from the repository root:

    python examples/evaluate_against_cubic.py                     # shared T2 spine, 4x, axis 2
    python examples/evaluate_against_cubic.py hr.nii.gz --model runs/x4 --factor 4 --axis 0
    python examples/evaluate_against_cubic.py hr.nii.gz --model fast --json metrics.json

Without ``--model`` the bundled model for the factor is compared when one is
installed (``mrisr models``), otherwise cubic alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mrisr import ConfigError, CubicSliceModel, MrisrError, load_volume

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
        default=SHARED_DATA / "fixtures" / "spine_t2_1mm.nii.gz",
        help="high-resolution volume: the truth",
    )
    parser.add_argument("--axis", type=int, default=2, help="axis to make thick (0, 1, 2)")
    parser.add_argument("--factor", type=float, default=4.0, help="thick-to-thin slice ratio")
    parser.add_argument(
        "--model",
        action="append",
        help="bundled name, run folder or .safetensors file; repeat for several",
    )
    parser.add_argument("--profile", default="mean", help="simulated slice profile: mean, gaussian")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", type=Path, help="also write {method: metrics} to this file")
    parser.add_argument("--figure", type=Path, help="also draw planes and error maps (PNG)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier JSON/figure")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # markdown_table is a helper of mrisr.evaluation, where evaluate() lives.
    from mrisr import evaluate, save_figure
    from mrisr.evaluation import check_figure_path, markdown_table
    from mrisr.io.files import check_output
    from mrisr.io.outputs import write_json_atomic

    # 0. Refuse unusable outputs before any work (and never the input itself).
    if args.figure is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        check_figure_path(args.figure, overwrite=args.overwrite)
    for output in (args.json, args.figure):
        if output is not None:
            check_output(output, overwrite=args.overwrite, inputs=[args.scan])
    truth = load_volume(args.scan)

    # 1. The models: cubic is always the baseline row; --model adds networks
    #    (None: the bundled model for the factor, when one is installed).
    models = {"cubic": CubicSliceModel()}
    from mrisr import load_slice_model  # brings torch

    for spec in args.model or [None]:
        try:
            model = load_slice_model(spec, factor=args.factor, device=args.device)
        except ConfigError as error:
            if spec is not None:
                raise
            print(f"note: comparing cubic alone: {error}", file=sys.stderr)
            continue
        models[model.name if model.name not in models else str(spec)] = model

    # 2. Simulate thick slices along --axis, upscale with each model, compare
    #    with the truth on one intensity range and one foreground mask.
    result = evaluate(
        truth,
        axis=args.axis,
        factor=args.factor,
        models=models,
        profile=args.profile,
    )

    # 3. Report: PSNR, SSIM higher is better; HFEN, NRMSE lower is better.
    print(f"{args.scan}: {truth.shape} -> thick {result.thick.shape} -> upscaled back")
    print(markdown_table(result))
    # Both written through a temporary file and renamed: never half a file.
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(result.to_dict(), args.json, overwrite=args.overwrite)
        print(f"wrote {args.json}")
    if args.figure is not None:
        save_figure(args.figure, result, overwrite=args.overwrite)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MrisrError as error:  # bad input, model or output: a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)  # the exit code `mrisr` itself uses for these
