"""Train a small model from Python on a folder of volumes, then upscale a scan with it.

The Python equivalent of ``mrisr train --volumes DIR --out RUN ...`` followed by
``mrisr upscale scan.nii.gz --model RUN``. Settings are frozen dataclasses
(``mrisr.config``): build one section per concern, validated on construction.
The defaults train for a few seconds on CPU, enough to see the whole loop
work; for a useful model raise --steps to thousands (and --size full on a GPU).

Run from the repository root:

    python examples/train_quick_model.py                           # shared fixtures, 30 steps
    python examples/train_quick_model.py --volumes my_hr_dir/ --steps 5000 --device cuda \\
        --scan thick_scan.nii.gz --factor 5

The run folder holds config.yaml (rerun or resume with
``mrisr train --config RUN/config.yaml --resume``), model.safetensors (a
self-describing model file), state.pt and log.jsonl.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mrisr import MrisrError, TrainConfig, load_slice_model, train, upscale_file
from mrisr.config import DataConfig, ModelConfig, ScheduleConfig
from mrisr.io.outputs import default_output_path
from mrisr.training import TrainEvent

#: The project's shared real scans (../shared/data from the repository root);
#: set MRISR_SHARED_DATA to use another copy.
SHARED_DATA = Path(
    os.environ.get("MRISR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--volumes",
        type=Path,
        default=SHARED_DATA / "fixtures",
        help="folder of high-resolution volumes (.nii, .nii.gz, .mgz); the last by name "
        "is held out for validation",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("mrisr_examples") / "quick_run",
        help="run folder to create (must not hold a run yet)",
    )
    parser.add_argument(
        "--scan",
        type=Path,
        default=SHARED_DATA / "thick" / "spine_t2star_7.5mm.nii.gz",
        help="thick-slice scan to upscale with the trained model",
    )
    parser.add_argument("--factor", type=float, default=4.0, help="factor to train for and use")
    parser.add_argument("--steps", type=int, default=30, help="training steps (pixel loss)")
    parser.add_argument("--recipe", default="esrgan", help="recipe (see `mrisr models`)")
    parser.add_argument("--size", default="small", help="network size: small or full")
    parser.add_argument("--patch-size", type=int, default=32, help="HR patch side in voxels")
    parser.add_argument("--batch-size", type=int, default=4, help="patch pairs per step")
    parser.add_argument("--val-crop", type=int, default=32, help="validation cube side in voxels")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    # 1. The settings, one frozen dataclass per section. Anything left out
    #    takes its default (and loss/optimiser values the recipe's own).
    config = TrainConfig(
        data=DataConfig(
            volumes=str(args.volumes),
            val_volume="auto",  # hold out the last volume by name for validation
            factor=args.factor,
            patch_size=args.patch_size,
            batch_size=args.batch_size,
            val_crop=args.val_crop,
        ),
        model=ModelConfig(recipe=args.recipe, size=args.size),
        schedule=ScheduleConfig(
            steps=args.steps,
            gan_steps=0,  # stage 1 only: the PSNR-oriented model
            val_every=0,  # validate once, at the end
            log_every=max(1, args.steps // 5),
            save_every=0,  # save once, at the end
        ),
        out=str(args.out),
        device=args.device,
        threads=args.threads,
        tensorboard=False,
    )

    # 2. Train, reporting progress through the callback (rank 0 only).
    def report(event: TrainEvent) -> None:
        if event.kind == "log":
            print(f"  step {event.step}/{event.total}: pixel loss {event.values['pixel']:.4f}")
        elif event.kind == "validation":
            v = event.values
            print(
                f"  validation: PSNR {v['psnr']:.2f} dB (cubic {v['psnr_cubic']:.2f}), "
                f"SSIM {v['ssim']:.3f} (cubic {v['ssim_cubic']:.3f})"
            )

    print(f"training {args.recipe}/{args.size} at x{args.factor:g} on {args.volumes}")
    run_dir = train(config, callback=report)
    print(f"wrote {run_dir}")

    # 3. The run folder is a model: load it like any other and upscale a scan.
    #    Its factor range is what it was trained for, so upscale at that factor.
    model = load_slice_model(run_dir, factor=args.factor, device=args.device)
    low, high = model.factor_range
    print(f"model {model.name}: trained for x{low:g}" + (f"-{high:g}" if high > low else ""))
    output = Path(run_dir) / default_output_path(args.scan).name  # <stem>_sr.nii.gz
    image, sidecar = upscale_file(args.scan, output, model=model, factor=args.factor)
    print(f"wrote {image}\n      {sidecar}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MrisrError as error:  # bad data, settings or output: a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)  # the exit code `mrisr` itself uses for these
