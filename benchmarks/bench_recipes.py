"""Train every recipe for the same budget and compare them with cubic on held-out volumes.

For each recipe of :data:`mrisr.recipes.RECIPES` (or ``--recipes``), trains one
run with :func:`mrisr.training.run_training` on the shared training volumes, all
with the same settings: the size (``--size``), stage-1 steps (``--steps``),
GAN-stage steps (``--gan-steps``, recipes with an adversarial loss only),
batch, patch, seed, factors 2-4 drawn per batch, all three thick axes. Then,
on central crops (``--crop`` voxels a side, around the foreground:
:func:`mrisr.evaluation.central_crop`) of two volumes never trained on, for each
factor (``--factors``) and thick axis (``--axes``), runs
:func:`mrisr.evaluation.evaluate` (simulate thick slices, upscale both planes,
fuse, PSNR/SSIM/HFEN inside the foreground mask) with cubic interpolation and
every trained model. GAN recipes give two models: the stage-1 (pixel loss)
one, ``model_psnr.safetensors``, and the final GAN one, shown as
``<recipe> +gan``.

Also reported per model: trainable parameters
(:func:`mrisr.networks.count_parameters`), multiply-accumulates per output
voxel at 4x (:func:`mrisr.networks.macs_per_output_voxel` on a 16 x 16
slice, as ``mrisr models``), the training stage's time and median patches/s
(from the run's ``log.jsonl``: pair drawing and saves included, volume
loading not), and the upscale time of the first held-out crop made thick at
4x along axis 2 (min of ``--repeats`` runs of
:func:`mrisr.upscale.upscale_volume`, after one untimed run).

Volumes (``../shared/data/train``, the split of ``train_default_models.py``):
trained on ixi002_t1, mne_sample_brain, niivue_fs_brainmask,
mni152_t1_1mm_brain and mni152_t2_1mm_brain; evaluated on ixi002_t2 and
mr_gd_t1, which no run sees. Run from the repository root::

    python benchmarks/bench_recipes.py [--size small] [--steps 300] [--gan-steps 100]
        [--batch-size 8] [--patch-size 48] [--device cpu] [--threads 1]
        [--recipes esrgan,srcnn] [--out runs/bench] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from train_default_models import TRAIN_VOLUMES  # the same split as the bundled models

from mrisr.config import DataConfig, ModelConfig, ScheduleConfig, TrainConfig
from mrisr.evaluation import central_crop, evaluate
from mrisr.inference import GeneratorSliceModel
from mrisr.interpolation import CubicSliceModel
from mrisr.io import load_volume
from mrisr.networks import count_parameters, macs_per_output_voxel
from mrisr.recipes import RECIPES
from mrisr.simulate import simulate_volume
from mrisr.training import LOG_FILE, MODEL_FILE, PSNR_MODEL_FILE, run_training
from mrisr.upscale import upscale_volume
from mrisr.volume import Volume

SHARED_DATA = Path(
    os.environ.get(
        "MRISR_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)
HELD_OUT = ("ixi002_t2.nii.gz", "mr_gd_t1.nii.gz")
METRIC_KEYS = ("psnr", "ssim", "hfen")
TIMING_FACTOR = 4.0
TIMING_AXIS = 2


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def float_list(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def link_training_volumes(data: Path, folder: Path) -> None:
    """``folder`` holding links to the training volumes only (nothing held out is there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in TRAIN_VOLUMES:
        source = data / name
        if not source.is_file():
            raise SystemExit(f"{source}: missing; expected the shared training volumes")
        link = folder / name
        if not link.exists():
            link.symlink_to(source.resolve())


def finished(run_dir: Path) -> bool:
    """Whether a run folder holds a run that ended (its log's last record is ``end``)."""
    log_path = run_dir / LOG_FILE
    if not (run_dir / MODEL_FILE).is_file() or not log_path.is_file():
        return False
    lines = log_path.read_text().splitlines()
    return bool(lines) and json.loads(lines[-1]).get("event") == "end"


def train_recipe(name: str, args: argparse.Namespace, volumes: Path, run_dir: Path) -> bool:
    """Train one recipe into ``run_dir``; False when ``--reuse`` kept a finished run there."""
    if args.reuse and finished(run_dir):
        print(f"reusing {run_dir}", file=sys.stderr, flush=True)
        return False
    low, high = args.factor_range
    config = TrainConfig(
        data=DataConfig(
            volumes=str(volumes),
            val_volume="none",
            factor=high,
            factor_range=(low, high),
            axes=(0, 1, 2),
            patch_size=args.patch_size,
            batch_size=args.batch_size,
        ),
        model=ModelConfig(recipe=name, size=args.size),
        schedule=ScheduleConfig(
            steps=args.steps,
            gan_steps=args.gan_steps if RECIPES[name].has_gan_stage else 0,
            val_every=0,
            log_every=25,
            save_every=0,
        ),
        out=str(run_dir),
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        tensorboard=False,
    )
    print(f"training {name} ...", file=sys.stderr, flush=True)
    run_training(config)
    return True


def log_summary(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per stage (``psnr``, ``gan``): logged seconds and median patches/s, from log.jsonl.

    A stage's time runs from the ``start`` record (volumes loaded, networks
    built) or the previous stage's last save to the stage's last save, so it
    includes that stage's drawing of pairs and its model and state saves.
    """
    records = [json.loads(line) for line in (run_dir / LOG_FILE).read_text().splitlines()]
    start = next(r["time"] for r in records if r.get("event") in ("start", "resume"))
    summary: dict[str, dict[str, float]] = {}
    for stage in ("psnr", "gan"):
        saves = [r["time"] for r in records if r.get("event") == "save" and r["stage"] == stage]
        rates = [
            r["patches_per_s"]
            for r in records
            if r.get("event") == "train" and r.get("stage") == stage and "patches_per_s" in r
        ]
        if saves:
            summary[stage] = {"s": saves[-1] - start, "patches_per_s": statistics.median(rates)}
            start = saves[-1]
    return summary


def load_models(
    name: str, run_dir: Path, args: argparse.Namespace
) -> dict[str, GeneratorSliceModel]:
    """The run's models: the stage-1 one, and the GAN one when there is a GAN stage."""
    options = {"device": args.device, "threads": args.threads, "batch_size": 32}
    if (run_dir / PSNR_MODEL_FILE).is_file():
        return {
            name: GeneratorSliceModel.from_file(run_dir / PSNR_MODEL_FILE, name=name, **options),
            f"{name} +gan": GeneratorSliceModel.from_file(
                run_dir / MODEL_FILE, name=f"{name} +gan", **options
            ),
        }
    return {name: GeneratorSliceModel.from_file(run_dir / MODEL_FILE, name=name, **options)}


def time_upscale(model: Any, thick: Volume, repeats: int) -> float:
    """Min seconds of ``repeats`` upscales of ``thick`` (after one untimed run)."""
    upscale_volume(thick, model, factor=TIMING_FACTOR, axis=TIMING_AXIS)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        upscale_volume(thick, model, factor=TIMING_FACTOR, axis=TIMING_AXIS)
        times.append(time.perf_counter() - start)
    return min(times)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """Markdown table, first column left-aligned, the rest right-aligned, padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", help="comma-separated subset (default: all, in RECIPES order)")
    parser.add_argument("--size", default="small", choices=("small", "full"))
    parser.add_argument("--steps", type=int, default=300, help="stage-1 steps (default 300)")
    parser.add_argument(
        "--gan-steps", type=int, default=100, help="GAN-stage steps of GAN recipes (default 100)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=48)
    parser.add_argument("--factor-range", type=float_list, default=(2.0, 4.0), help="low,high")
    parser.add_argument("--factors", type=float_list, default=(2.0, 4.0), help="evaluated")
    parser.add_argument("--axes", type=int_list, default=(0, 1, 2), help="thick axes evaluated")
    parser.add_argument("--crop", type=int, default=96, help="held-out cube side in voxels")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed upscales of the crop")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "train")
    parser.add_argument(
        "--out", type=Path, help="folder for the run folders (default: a temporary one, removed)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="evaluate runs already complete in --out instead of training them again",
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    names = [n.strip() for n in args.recipes.split(",")] if args.recipes else list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    held_out = [args.data / name for name in HELD_OUT]
    for path in held_out:
        if not path.is_file():
            raise SystemExit(f"{path}: missing; expected the shared held-out volumes")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mrisr-recipes-") as tmp:
        out = args.out if args.out is not None else Path(tmp)
        volumes = out / "volumes"
        link_training_volumes(args.data, volumes)

        # ---- train
        runs: dict[str, dict[str, Any]] = {}
        for name in names:
            run_dir = out / name
            trained = train_recipe(name, args, volumes, run_dir)
            runs[name] = {"dir": run_dir, "trained": trained, **log_summary(run_dir)}
        train_seconds = time.perf_counter() - started

        # ---- models and their costs
        models: dict[str, Any] = {"cubic": CubicSliceModel()}
        recipe_of: dict[str, str] = {"cubic": "-"}
        for name in names:
            for label, model in load_models(name, runs[name]["dir"], args).items():
                models[label] = model
                recipe_of[label] = name
        crops = {
            path.name.split(".")[0]: central_crop(load_volume(path), args.crop) for path in held_out
        }
        first = next(iter(crops.values()))
        thick = simulate_volume(first, TIMING_AXIS, TIMING_FACTOR)
        cost: dict[str, dict[str, float]] = {}
        for label, model in models.items():
            print(f"timing {label} ...", file=sys.stderr, flush=True)
            seconds = time_upscale(model, thick, args.repeats)
            if label == "cubic":
                cost[label] = {"params": 0, "macs": float("nan"), "upscale_s": seconds}
                continue
            cost[label] = {
                "params": count_parameters(model.generator),
                "macs": macs_per_output_voxel(
                    model.generator, in_rows=16, cols=16, factor=TIMING_FACTOR
                ),
                "upscale_s": seconds,
            }

        # ---- evaluate: every (volume, factor, axis), all models at once
        scores: dict[tuple[str, float], dict[str, list[dict[str, float]]]] = {}
        for volume_name, crop in crops.items():
            for factor in args.factors:
                for axis in args.axes:
                    print(
                        f"evaluating on {volume_name}, {factor:g}x along axis {axis} ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    result = evaluate(crop, axis=axis, factor=factor, models=models)
                    cell = scores.setdefault((volume_name, factor), {})
                    for label, row in result.metrics.items():
                        cell.setdefault(label, []).append(row)
    total_seconds = time.perf_counter() - started

    def mean(label: str, factor: float, key: str, volume: str | None = None) -> float:
        values = [
            row[key]
            for (vol, f), cell in scores.items()
            if f == factor and (volume is None or vol == volume)
            for row in cell[label]
        ]
        return float(np.mean(values))

    # ---- summary: means over volumes and axes
    header = ["model", "params", "MACs/voxel", "train s", "patches/s", "upscale s"]
    for factor in args.factors:
        header += [
            f"{factor:g}x PSNR",
            f"{factor:g}x dPSNR",
            f"{factor:g}x SSIM",
            f"{factor:g}x HFEN",
        ]
    rows = []
    for label in models:
        c = cost[label]
        run = runs.get(recipe_of[label])
        stage = run.get("gan" if label.endswith("+gan") else "psnr") if run else None
        row = [
            label,
            f"{c['params']:,}" if label != "cubic" else "-",
            f"{c['macs']:,.0f}" if label != "cubic" else "-",
            f"{stage['s']:.0f}" if stage else "-",
            f"{stage['patches_per_s']:.0f}" if stage else "-",
            f"{c['upscale_s']:.3f}",
        ]
        for factor in args.factors:
            psnr = mean(label, factor, "psnr")
            row += [
                f"{psnr:.2f}",
                f"{psnr - mean('cubic', factor, 'psnr'):+.2f}",
                f"{mean(label, factor, 'ssim'):.4f}",
                f"{mean(label, factor, 'hfen'):.4f}",
            ]
        rows.append(row)
    summary = markdown_table(header, rows)

    # ---- per held-out volume
    details = []
    for volume_name in crops:
        header = ["model"]
        for factor in args.factors:
            header += [f"{factor:g}x PSNR", f"{factor:g}x SSIM", f"{factor:g}x HFEN"]
        rows = []
        for label in models:
            row = [label]
            for factor in args.factors:
                row += [
                    f"{mean(label, factor, 'psnr', volume_name):.2f}",
                    f"{mean(label, factor, 'ssim', volume_name):.4f}",
                    f"{mean(label, factor, 'hfen', volume_name):.4f}",
                ]
            rows.append(row)
        details.append(f"{volume_name} ({args.crop}^3 crop):\n\n" + markdown_table(header, rows))

    threads = args.threads if args.threads is not None else torch.get_num_threads()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    axes = ", ".join(str(a) for a in args.axes)
    gan_names = [n for n in names if RECIPES[n].has_gan_stage]
    lines = [
        f"date: {datetime.date.today().isoformat()}; device {args.device}; "
        f"{os.cpu_count()} logical cores (load at end {load}), torch threads {threads}; "
        f"torch {torch.__version__}",
        f"budget per recipe: size {args.size}, {args.steps} stage-1 steps"
        + (f" + {args.gan_steps} GAN steps ({', '.join(gan_names)})" if gan_names else "")
        + f", batch {args.batch_size} of {args.patch_size} x {args.patch_size} patches, "
        f"factors {args.factor_range[0]:g}-{args.factor_range[1]:g}, axes 0, 1, 2, seed {args.seed}",
        f"trained on: {', '.join(n.split('.')[0] for n in TRAIN_VOLUMES)}; "
        f"held out: {', '.join(crops)} (central {args.crop}^3 crops)",
        f"metrics: mean over held-out volumes and thick axes {axes}; foreground mask; "
        "dPSNR = PSNR - cubic's; PSNR/SSIM higher is better, HFEN lower",
        f"upscale s: {first.shape[0]}^3 crop of {next(iter(crops))} made {TIMING_FACTOR:g}x thick "
        f"along axis {TIMING_AXIS}, min of {args.repeats}; train s and patches/s: the stage's "
        "time and median rate in log.jsonl (pair drawing and saves included; the +gan row is "
        "the GAN stage alone, after its stage 1)",
        f"wall time: training {train_seconds / 60:.1f} min, all {total_seconds / 60:.1f} min",
    ]
    reused = [name for name in names if not runs[name]["trained"]]
    if reused:
        lines.append(
            f"reused finished runs of an earlier invocation (--reuse): {', '.join(reused)}"
        )
    text = "\n".join([*lines, "", summary, "", *("\n\n".join(details),), ""])
    print()
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
        print(f"wrote {args.markdown}", file=sys.stderr)


if __name__ == "__main__":
    main()
