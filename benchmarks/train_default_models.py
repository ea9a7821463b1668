"""Train mrisr's bundled default models and install them into mrisr/weights/.

One `mrisr train` run with ``benchmarks/default_model.yaml`` gives both models:

* ``fast``     the stage-1 (pixel-loss, PSNR-oriented) EMA generator: the default;
* ``fast-gan`` the same generator after the GAN stage (sharper, less faithful).

Volumes (from ../shared/data/train; see its README):

* trained on (TRAIN_VOLUMES): skull-stripped brains from six people and two
  templates, whole heads with skull from two vendors (Philips, United Imaging)
  and a lumbar spine. ``uih_umr770_t1gre_3d`` is stored at 1 x 0.5 x 0.5 mm but
  its in-plane 0.5 mm is the scanner's interpolation of a 1 mm acquisition:
  it is resampled to 1 mm isotropic (cubic B-spline, nibabel) before training;
* validated on during training (never trained on): mr_gd_t1;
* held out entirely (HELD_OUT): one whole head with skull (mne_ecog_t1_fs_1mm)
  and one skull-stripped brain (ds002748_sub-56_t1w_brain); never seen at all
  either: ixi002_t2 and the spine fixtures. benchmarks/report.py measures on these.

Usage (CPU, one thread; see docs/model_card.md for the measured time)::

    python benchmarks/train_default_models.py --out runs/default --init-from fast --threads 1
    python benchmarks/train_default_models.py --out runs/default --resume --install
    python benchmarks/train_default_models.py --out runs/default --device cuda --install

``--generator-kwargs '{"num_block": 1}'`` trains another size of the same
network (the capacity comparison of docs/model_card.md); ``--config`` another recipe.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from mrisr.io.files import write_atomic

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "benchmarks" / "default_model.yaml"
TRAIN_VOLUMES = (
    "ds002748_sub-02_t1w_brain.nii.gz",
    "ds002748_sub-09_t1w_brain.nii.gz",
    "fnndsc_eun_t1_1mm.nii.gz",
    "ixi002_t1.nii.gz",
    "mne_sample_brain.mgz",
    "mne_seeg_brain_fs_1mm.nii.gz",
    "mni152_t1_1mm_brain.nii.gz",
    "mni152_t2_1mm_brain.nii.gz",
    "niivue_fs_brainmask.mgz",
    "sct_lumbar_spine_t2_1mm.nii.gz",
    "studyforrest_t1w_0p7mm.nii.gz",
    "uih_umr770_t1gre_3d.nii.gz",
)
VALIDATION_VOLUME = "mr_gd_t1.nii.gz"
#: Kept out of training and validation: measured by benchmarks/report.py.
HELD_OUT = ("mne_ecog_t1_fs_1mm.nii.gz", "ds002748_sub-56_t1w_brain.nii.gz")
#: Volumes resampled to isotropic voxels of this size (mm) before training.
RESAMPLE_MM = {"uih_umr770_t1gre_3d.nii.gz": 1.0}


def link_volumes(data: Path, folder: Path) -> None:
    """Make ``folder`` hold the training and validation volumes only.

    Links to the shared files, except for :data:`RESAMPLE_MM` volumes, which
    are written there resampled (once).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_VOLUMES, VALIDATION_VOLUME):
        source = data / name
        if not source.is_file():
            sys.exit(f"{source}: missing; expected the shared training volumes (see its README)")
        target = folder / name
        if target.exists():
            continue
        if name in RESAMPLE_MM:
            resample(source, target, RESAMPLE_MM[name])
        else:
            target.symlink_to(source.resolve())


def resample(source: Path, target: Path, voxel_mm: float) -> None:
    """Write ``source`` resampled to isotropic ``voxel_mm`` voxels (cubic B-spline, nibabel)."""
    import nibabel as nib
    from nibabel.processing import resample_to_output

    image = resample_to_output(nib.load(str(source)), voxel_sizes=voxel_mm, order=3)
    write_atomic(target, lambda temporary: nib.save(image, str(temporary)))
    print(f"resampled {source.name} to {voxel_mm:g} mm: {image.shape}")


def recipe_with(config: Path, generator_kwargs: str | None, out: Path) -> Path:
    """``config``, or a copy beside the run with ``generator_kwargs`` (JSON) merged in."""
    if not generator_kwargs:
        return config
    recipe = yaml.safe_load(config.read_text())
    recipe["model"]["generator_kwargs"] = {
        **recipe["model"].get("generator_kwargs", {}),
        **json.loads(generator_kwargs),
    }
    derived = out.parent / f"{out.name}_recipe.yaml"
    derived.parent.mkdir(parents=True, exist_ok=True)
    derived.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return derived


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "train")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "default")
    parser.add_argument("--steps", type=int, help="stage-1 steps (default: the recipe's)")
    parser.add_argument("--gan-steps", type=int, help="GAN-stage steps (default: the recipe's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--config", type=Path, default=RECIPE, help="recipe YAML")
    parser.add_argument("--init-from", help="model to start from (e.g. fast)")
    parser.add_argument("--lr", type=float, help="stage-1 learning rate (default: the recipe's)")
    parser.add_argument("--generator-kwargs", help="JSON merged into the generator's settings")
    parser.add_argument("--install", action="store_true", help="copy the models to mrisr/weights")
    args = parser.parse_args()

    volumes = args.out.parent / f"{args.out.name}_volumes"
    link_volumes(args.data, volumes)
    command = [
        sys.executable, "-m", "mrisr", "train",
        "--config", str(recipe_with(args.config, args.generator_kwargs, args.out)),
        "--volumes", str(volumes),
        "--out", str(args.out),
        "--device", args.device,
    ]  # fmt: skip
    for option, value in (
        ("--steps", args.steps),
        ("--gan-steps", args.gan_steps),
        ("--threads", args.threads),
        ("--init-from", args.init_from),
        ("--lr", args.lr),
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
