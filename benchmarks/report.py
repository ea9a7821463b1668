"""Regenerate docs/benchmarks.md: quality of the bundled models against cubic, and speed.

Quality: thick slices are simulated (block mean) from held-out real volumes
along each axis at 2x and 4x (--factors); cubic B-spline interpolation and each
bundled model upscale them back with the defaults of ``mrisr upscale``; PSNR,
SSIM and HFEN are measured inside the truth's foreground mask
(mrisr.evaluation). Volumes larger than --crop voxels along an axis are cut to
their central --crop voxels first, to keep the run within half an hour on two
cores. None of these volumes was trained on:

* ixi002_t2        T2w brain, skull-stripped (0.94 x 0.94 x 1.25 mm)
* mr_gd_t1         contrast-enhanced T1w brain, skull-stripped; the training
                   run's validation volume (monitored, never trained on)
* ds002748_sub-56  T1w brain, skull-stripped, a person not trained on
* mne_ecog_t1      whole head with skull (FreeSurfer-conformed T1), held out
* spine_t1w_1mm    T1w cervical spine with neck tissue
* spine_t2_1mm     T2w cervical spine with neck tissue

``--baseline NAME=FILE`` adds a model file (say, the previous release's
``fast``) as another column, measured in the same run.

Speed: upscaling a 256 x 256 x 64 scan (the central 64 slices of ixi002_t2,
labelled 0.94 x 0.94 x 5 mm) 4x along the slices, cubic and each model, each
in a fresh process (median of --repeats timed runs after one untimed run;
peak resident memory of that process).

Usage::

    python benchmarks/report.py                       # writes docs/benchmarks.md
    python benchmarks/report.py --quick --out /tmp/b.md   # spine volumes, axis 2, factor 4
    python benchmarks/report.py --baseline previous=old/fast.safetensors
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from bench_train import peak_rss_mib  # VmHWM: ru_maxrss would carry the parent's peak

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
HELD_OUT = {
    "ixi002_t2": "train/ixi002_t2.nii.gz",
    "mr_gd_t1": "train/mr_gd_t1.nii.gz",
    "ds002748_sub-56": "train/ds002748_sub-56_t1w_brain.nii.gz",
    "mne_ecog_t1": "train/mne_ecog_t1_fs_1mm.nii.gz",
    "spine_t1w_1mm": "fixtures/spine_t1w_1mm.nii.gz",
    "spine_t2_1mm": "fixtures/spine_t2_1mm.nii.gz",
}
#: The groups the targets are stated for.
GROUPS = {
    "brains": ("ixi002_t2", "mr_gd_t1", "ds002748_sub-56"),
    "whole head": ("mne_ecog_t1",),
    "spine": ("spine_t1w_1mm", "spine_t2_1mm"),
}
SPEED_VOLUME = "train/ixi002_t2.nii.gz"
SPEED_SPACING_MM = (0.9375, 0.9375, 5.0)


def speed_volume(data_dir: Path):
    """The 256 x 256 x 64 speed scan: central 64 slices of ixi002_t2 as 5 mm slices."""
    from mrisr.io import load_volume
    from mrisr.volume import Volume

    hr = load_volume(data_dir / SPEED_VOLUME)
    start = (hr.shape[2] - 64) // 2
    data = np.ascontiguousarray(hr.data[:, :, start : start + 64], dtype=np.float32)
    return Volume(data, np.diag([*SPEED_SPACING_MM, 1.0]), None)


def time_in_this_process(method: str, data_dir: Path, repeats: int, threads: int | None) -> dict:
    """Run in a child process: upscale the speed scan with ``method``; seconds and peak RSS."""
    from mrisr.models import load_slice_model
    from mrisr.upscale import upscale_volume

    volume = speed_volume(data_dir)
    model = load_slice_model(method, factor=4.0, device="cpu", threads=threads)
    seconds = []
    for run in range(repeats + 1):
        start = time.perf_counter()
        result = upscale_volume(volume, model, factor=4.0, axis=2)
        if run:  # the first run warms caches and the allocator
            seconds.append(time.perf_counter() - start)
    return {
        "method": method,
        "shape_in": list(volume.shape),
        "shape_out": list(result.shape),
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def measure_speed(methods: list[str], data_dir: Path, repeats: int, threads: int | None) -> list:
    """Each method timed in a fresh interpreter, so peak memory is its own."""
    rows = []
    for method in methods:
        command = [
            sys.executable, __file__, "--speed-child", method,
            "--data", str(data_dir), "--repeats", str(repeats),
        ]  # fmt: skip
        if threads:
            command += ["--threads", str(threads)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def central_crop(volume, size: int):
    """``volume`` cut to its central ``size`` voxels along every longer axis (affine kept right)."""
    starts = [max((n - size) // 2, 0) for n in volume.shape]
    stops = [start + min(n, size) for start, n in zip(starts, volume.shape, strict=True)]
    return volume.crop(tuple(slice(a, b) for a, b in zip(starts, stops, strict=True)))


def measure_quality(
    models: dict, volumes: dict[str, Path], axes: list[int], factors: list[float], crop: int
) -> list[dict]:
    """One row per (volume, axis, factor): each method's PSNR, SSIM, HFEN."""
    from mrisr.evaluation import evaluate
    from mrisr.io import load_volume
    from mrisr.models import covers_factor

    rows = []
    for name, path in volumes.items():
        truth = central_crop(load_volume(path), crop)
        for axis in axes:
            for factor in factors:
                # A model is measured only where its trained range covers the factor
                # (as `mrisr upscale` would use it); other cells read "-".
                covering = {
                    m: model
                    for m, model in models.items()
                    if model.factor_range is None or covers_factor(model.factor_range, factor)
                }
                result = evaluate(truth, axis=axis, factor=factor, models=covering)
                metrics = result.to_dict()
                rows.append({"volume": name, "axis": axis, "factor": factor, **metrics})
                gains = ", ".join(
                    f"{m} {metrics[m]['psnr'] - metrics['cubic']['psnr']:+.2f} dB"
                    for m in covering
                    if m != "cubic"
                )
                print(f"{name} axis {axis} x{factor:g}: {gains}", flush=True)
    return rows


def quality_table(rows: list[dict], methods: list[str]) -> list[str]:
    models = [m for m in methods if m != "cubic"]
    head = ["volume", "axis", "factor", "PSNR cubic"]
    head += [f"PSNR {m} (gain)" for m in models]
    head += ["SSIM cubic", *(f"SSIM {m}" for m in models)]
    head += ["HFEN cubic", *(f"HFEN {m}" for m in models)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        c = row["cubic"]
        cells = [row["volume"], str(row["axis"]), f"{row['factor']:g}", f"{c['psnr']:.2f}"]
        cells += [
            f"{row[m]['psnr']:.2f} ({row[m]['psnr'] - c['psnr']:+.2f})" if m in row else "-"
            for m in models
        ]
        cells += [
            f"{c['ssim']:.4f}",
            *(f"{row[m]['ssim']:.4f}" if m in row else "-" for m in models),
        ]
        cells += [
            f"{c['hfen']:.4f}",
            *(f"{row[m]['hfen']:.4f}" if m in row else "-" for m in models),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_table(rows: list[dict], methods: list[str]) -> list[str]:
    """Mean gain over cubic per factor, over every volume and axis."""
    models = [m for m in methods if m != "cubic"]
    lines = [
        "| model | factor | cases | mean PSNR gain (dB) | min | max | SSIM better | HFEN better |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        for factor in sorted({r["factor"] for r in rows}):
            sel = [r for r in rows if r["factor"] == factor and model in r]
            if not sel:
                continue
            gains = [r[model]["psnr"] - r["cubic"]["psnr"] for r in sel]
            ssim_up = sum(r[model]["ssim"] > r["cubic"]["ssim"] for r in sel)
            hfen_down = sum(r[model]["hfen"] < r["cubic"]["hfen"] for r in sel)
            lines.append(
                f"| {model} | {factor:g} | {len(sel)} | {statistics.mean(gains):+.2f} | "
                f"{min(gains):+.2f} | {max(gains):+.2f} | {ssim_up}/{len(sel)} | "
                f"{hfen_down}/{len(sel)} |"
            )
    return lines


def group_table(rows: list[dict], methods: list[str]) -> list[str]:
    """Mean PSNR gain over cubic per volume group (:data:`GROUPS`), factor and model."""
    models = [m for m in methods if m != "cubic"]
    factors = sorted({r["factor"] for r in rows})
    head = ["group", "factor", *(f"{m} mean gain (dB)" for m in models)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, names in GROUPS.items():
        for factor in factors:
            sel = [r for r in rows if r["volume"] in names and r["factor"] == factor]
            if not sel:
                continue
            cells = [group, f"{factor:g}"]
            cells += [
                f"{statistics.mean(r[m]['psnr'] - r['cubic']['psnr'] for r in sel):+.2f}"
                if all(m in r for r in sel)
                else "-"
                for m in models
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def speed_table(rows: list[dict]) -> list[str]:
    base = statistics.median(rows[0]["seconds"])
    lines = [
        "| method | median s | min s | x cubic | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        median = statistics.median(row["seconds"])
        lines.append(
            f"| {row['method']} | {median:.2f} | {min(row['seconds']):.2f} | "
            f"{median / base:.1f} | {row['peak_rss_mib']:.0f} |"
        )
    return lines


def model_lines(methods: list[str], files: dict[str, Path]) -> list[str]:
    from mrisr.checkpoint import read_description
    from mrisr.models import bundled_models

    lines = []
    for name in methods:
        if name == "cubic":
            continue
        d = read_description(files.get(name) or bundled_models()[name])
        data = d.get("training_data", {})
        lines.append(
            f"- `{name}`: {d.get('recipe')} recipe, stage {d.get('stage')}, step {d.get('step')}, "
            f"factors {d['factor_range'][0]:g}-{d['factor_range'][1]:g}, trained on "
            f"{', '.join(data.get('volumes', []))}; validated on {data.get('held_out')}."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--models", nargs="+", help="bundled model names (default: all)")
    parser.add_argument("--factors", nargs="+", type=float, default=[2.0, 4.0])
    parser.add_argument("--crop", type=int, default=192, help="central crop per axis (voxels)")
    parser.add_argument(
        "--baseline", action="append", default=[], help="NAME=FILE: a model file to compare"
    )
    parser.add_argument("--axes", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per speed row")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="spine volumes, axis 2, factor 4")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON here")
    parser.add_argument("--speed-child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.speed_child:
        result = time_in_this_process(args.speed_child, args.data, args.repeats, args.threads)
        print(json.dumps(result))
        return

    import torch

    from mrisr.interpolation import CubicSliceModel
    from mrisr.models import bundled_models, load_slice_model

    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models or sorted(bundled_models())
    if not names:
        sys.exit("no bundled models installed: run benchmarks/train_default_models.py --install")
    models = {"cubic": CubicSliceModel()}
    for name in names:
        models[name] = load_slice_model(name, device="cpu", threads=args.threads)
    files = {}
    for spec in args.baseline:
        name, _, path = spec.partition("=")
        files[name] = Path(path)
        models[name] = load_slice_model(path, device="cpu", threads=args.threads)
    methods = list(models)
    volumes = {n: args.data / p for n, p in HELD_OUT.items()}
    axes, factors = args.axes, args.factors
    if args.quick:
        volumes = {n: p for n, p in volumes.items() if n.startswith("spine")}
        axes, factors = [2], [4.0]
    missing = [str(p) for p in volumes.values() if not p.is_file()]
    if missing:
        sys.exit(f"missing held-out volumes: {', '.join(missing)} (see --data)")

    started = time.perf_counter()
    quality = measure_quality(models, volumes, axes, factors, args.crop)
    speed = measure_speed(
        [m if m not in files else str(files[m]) for m in methods],
        args.data,
        args.repeats,
        args.threads,
    )
    names_of = {str(path): name for name, path in files.items()}
    for row in speed:
        row["method"] = names_of.get(row["method"], row["method"])
    minutes = (time.perf_counter() - started) / 60

    command = " ".join(["python benchmarks/report.py", *sys.argv[1:]])
    threads = args.threads or torch.get_num_threads()
    lines = [
        "# Benchmarks",
        "",
        f"Regenerated by `{command}` on {date.today().isoformat()} "
        f"({platform.machine()}, {threads} CPU thread(s), torch {torch.__version__}, "
        f"{minutes:.0f} minutes). Every figure below was produced by that run.",
        "",
        "## Models",
        "",
        *model_lines(methods, files),
        "",
        "## Quality on held-out volumes",
        "",
        "Thick slices are simulated by block mean from each volume along the axis "
        "and factor given; each method upscales them back to the original grid "
        "with the defaults of `mrisr upscale` (mean fusion of the two planes that "
        "contain the thick axis, data consistency, range clip). PSNR and SSIM "
        "use the truth's intensity range; all metrics are computed inside the "
        f"truth's foreground mask, on the central {args.crop} voxels per axis at most. "
        "HFEN: lower is better. None of these volumes was trained on (mr_gd_t1 was "
        "the training run's validation volume).",
        "",
        "Mean PSNR gain over cubic per group of volumes (every axis):",
        "",
        *group_table(quality, methods),
        "",
        "Mean over volumes and axes:",
        "",
        *summary_table(quality, methods),
        "",
        "Every case:",
        "",
        *quality_table(quality, methods),
        "",
        "## Speed and memory (CPU)",
        "",
        "Upscaling a 256 x 256 x 64 scan 4x (to 256 x 256 x 256), in memory "
        f"(no file I/O), median of {args.repeats} runs after one untimed run, each "
        "method in a fresh process; peak RSS includes the interpreter, torch and "
        "the volumes.",
        "",
        *speed_table(speed),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    if args.json:
        args.json.write_text(json.dumps({"quality": quality, "speed": speed}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
