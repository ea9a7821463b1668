"""Train mrisr's bundled default models and install them into mrisr/weights/.

One `mrisr train` run with ``benchmarks/default_model.yaml`` gives both models:

* ``fast``     the stage-1 (pixel-loss, PSNR-oriented) EMA generator: the default;
* ``fast-gan`` the same generator after the GAN stage (sharper, less faithful).

Volumes (from ../shared/data/train; see its README):

* trained on: ixi002_t1, mne_sample_brain, niivue_fs_brainmask,
  mni152_t1_1mm_brain, mni152_t2_1mm_brain;
* validated on during training (never trained on): mr_gd_t1;
* never seen in training at all: ixi002_t2 (the demo volume is a crop of it)
  and the spine fixtures. benchmarks/report.py measures on these and mr_gd_t1.

Usage (CPU; about 1.5 hours on one core with the recipe's 40,000 + 1,500 steps)::

    python benchmarks/train_default_models.py --out runs/default --install
    python benchmarks/train_default_models.py --out runs/default --resume --install
    python benchmarks/train_default_models.py --out runs/default --device cuda --install
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from mrisr.io.files import write_atomic

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "benchmarks" / "default_model.yaml"
TRAIN_VOLUMES = (
    "ixi002_t1.nii.gz",
    "mne_sample_brain.mgz",
    "niivue_fs_brainmask.mgz",
    "mni152_t1_1mm_brain.nii.gz",
    "mni152_t2_1mm_brain.nii.gz",
)
VALIDATION_VOLUME = "mr_gd_t1.nii.gz"


def link_volumes(data: Path, folder: Path) -> None:
    """Make ``folder`` hold links to the training and validation volumes only."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_VOLUMES, VALIDATION_VOLUME):
        source = data / name
        if not source.is_file():
            sys.exit(f"{source}: missing; expected the shared training volumes (see its README)")
        link = folder / name
        if not link.exists():
            link.symlink_to(source.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "train")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "default")
    parser.add_argument("--steps", type=int, help="stage-1 steps (default: the recipe's)")
    parser.add_argument("--gan-steps", type=int, help="GAN-stage steps (default: the recipe's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--install", action="store_true", help="copy the models to mrisr/weights")
    args = parser.parse_args()

    volumes = args.out.parent / f"{args.out.name}_volumes"
    link_volumes(args.data, volumes)
    command = [
        sys.executable, "-m", "mrisr", "train",
        "--config", str(RECIPE),
        "--volumes", str(volumes),
        "--out", str(args.out),
        "--device", args.device,
    ]  # fmt: skip
    for option, value in (
        ("--steps", args.steps),
        ("--gan-steps", args.gan_steps),
        ("--threads", args.threads),
    ):
        if value is not None:
            command += [option, str(value)]
    if args.resume:
        command.append("--resume")
    subprocess.run(command, check=True)

    if args.install:
        weights = REPO / "mrisr" / "weights"
        weights.mkdir(exist_ok=True)
        stage1 = args.out / "model_psnr.safetensors"
        final = args.out / "model.safetensors"
        if stage1.is_file():
            install(stage1, weights / "fast.safetensors")
            install(final, weights / "fast-gan.safetensors")
        else:
            install(final, weights / "fast.safetensors")
        print(f"installed the models in {weights}")


def install(source: Path, target: Path) -> None:
    """Copy under a temporary name, then rename: an interrupted copy leaves no half model."""
    write_atomic(target, lambda temporary: shutil.copyfile(source, temporary), overwrite=True)


if __name__ == "__main__":
    main()
