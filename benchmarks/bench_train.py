"""How fast does the ESRGAN recipe's generator train and upscale, at each size?

For the ``small`` and ``full`` generators of the ``esrgan`` recipe (``full`` is
ESRGAN's 23 RRDBs x 64 channels), and a custom size given as JSON, measures:

* training throughput, in patches per second, of one stage-1 step (forward,
  L1 loss, backward, Adam step, EMA update) and of one GAN step (the same
  generator step plus the recipe's adversarial, feature-matching and texture
  terms against its VGG-style discriminator, then the discriminator's step),
  on 64 x 64 high-resolution patches (16 x 64 low-resolution inputs, factor
  4), batch 16: ``--warmup`` untimed steps, then ``--steps`` timed ones. The
  networks, losses and loss weights are the ones :func:`mrisr.training.train`
  builds (:func:`mrisr.recipes.resolve`, :mod:`mrisr.losses`), and the step is
  its own (:mod:`mrisr.training.step`). The patches are random: the cost does not depend on
  the voxel values, and drawing real pairs (:class:`mrisr.training.pairs.PairDataset`)
  is left out so that the network is what is timed;
* upscale time and peak memory of a 256 x 256 x 64 scan at 4x through
  :func:`mrisr.upscale.upscale_volume` with a
  :class:`mrisr.inference.GeneratorSliceModel` (random weights: the cost does
  not depend on them), against cubic interpolation
  (:class:`mrisr.interpolation.CubicSliceModel`) on the same volume in the
  same run. Each row runs in a fresh subprocess: one untimed warm-up on a tiny
  crop (imports, kernel set-up), then ``--repeats`` timed runs; memory is the
  child's peak resident set (``VmHWM``: interpreter, torch and the input
  volume included), its growth over the timed runs, and on CUDA
  ``torch.cuda.max_memory_allocated``.

On CUDA the training steps are timed in float32 and with bfloat16 autocast
(what ``mrisr train`` does there), and upscaling uses bfloat16 autocast (what
:class:`GeneratorSliceModel` always does on CUDA); ``--compile`` adds rows with
``torch.compile``. On CPU everything is float32.

The volume: the central 64 axial slices of the held-out IXI002 T2, labelled
as 5 mm slices, exactly as in ``bench_cubic.py`` (synthetic when the shared
data is absent). ``full`` on one CPU core needs about 10 s per training step
and (extrapolated) over 20 minutes for that volume; ``--quick`` times ``full`` on a central crop
(``--quick-shape``, default 64 x 64 x 16, 1/64 of the voxels) and says so in
the table, next to a linear extrapolation to the whole volume. Run from the
repository root::

    python benchmarks/bench_train.py [--device cpu] [--threads 1] [--sizes small,full]
        [--quick] [--repeats 3] [--generator-kwargs JSON] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_cubic import build_input  # same volume as the cubic benchmark

from mrisr.config import ModelConfig, TrainConfig
from mrisr.device import resolve_device
from mrisr.inference import GeneratorSliceModel
from mrisr.interpolation import CubicSliceModel
from mrisr.io import load_volume
from mrisr.networks import build_generator, count_parameters, macs_per_output_voxel
from mrisr.recipes import ResolvedRecipe, resolve
from mrisr.training.step import build_learner, gan_step, pixel_step
from mrisr.upscale import upscale_volume
from mrisr.volume import Volume

RECIPE = "esrgan"
SHAPE = (256, 256, 64)
FACTOR = 4
AXIS = 2
PATCH = 64
BATCH = 16
WARMUP_SHAPE = (32, 32, 8)


# ------------------------------------------------------------------ networks


def plan_for(size: str, custom: dict[str, Any] | None) -> ResolvedRecipe:
    """The esrgan recipe resolved as ``mrisr train`` would for ``size``.

    ``custom`` is the ``small`` size with ``--generator-kwargs`` on top (as
    ``model.generator_kwargs`` in a training config).
    """
    model = ModelConfig(
        recipe=RECIPE,
        size="small" if size == "custom" else size,
        generator_kwargs=custom if size == "custom" else {},
    )
    return resolve(TrainConfig(model=model), perceptual_available=False)


def time_training(
    plan: ResolvedRecipe,
    *,
    gan: bool,
    device: torch.device,
    bf16: bool,
    compile_: bool,
    warmup: int,
    steps: int,
) -> list[float]:
    """Seconds of each of ``steps`` timed training steps (after ``warmup`` untimed ones).

    The step is the library's own (:func:`mrisr.training.step.pixel_step` or
    :func:`~mrisr.training.step.gan_step` on a :func:`~mrisr.training.step.build_learner`).
    """
    learner = build_learner(plan, device=device, gan=gan, amp=bf16, compile=compile_, seed=0)
    step = gan_step if gan else pixel_step
    if gan:
        learner.start_gan_stage()
    learner.set_learning_rates("gan" if gan else "psnr")
    hr = torch.rand(BATCH, 1, PATCH, PATCH, device=device)
    lr = torch.rand(BATCH, 1, PATCH // FACTOR, PATCH, device=device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step(learner, lr, hr)
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(learner, lr, hr)
        sync()
        times.append(time.perf_counter() - start)
    return times


# ------------------------------------------------------------------ upscaling


def crop_volume(volume: Volume, shape: tuple[int, int, int]) -> Volume:
    """The central ``shape`` voxels of ``volume`` (:meth:`Volume.crop`: they stay in place in mm)."""
    starts = [(n - m) // 2 for n, m in zip(volume.shape, shape, strict=True)]
    if any(s < 0 for s in starts):
        raise SystemExit(f"crop {shape} is larger than the volume {volume.shape}")
    return volume.crop(tuple(slice(s, s + m) for s, m in zip(starts, shape, strict=True)))


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB) since it started its program.

    ``VmHWM`` of ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` is no use
    in a subprocess, because Linux carries the parent's peak over into it at
    ``exec`` (a child of a 6 GiB parent reports 6 GiB).
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise SystemExit("/proc/self/status has no VmHWM line: peak memory needs Linux")


def child(spec: dict[str, Any]) -> None:
    """One upscale row, in its own process; prints one JSON line."""
    if spec["threads"] is not None:
        torch.set_num_threads(spec["threads"])
    device = resolve_device(spec["device"])
    volume = crop_volume(load_volume(spec["path"]), tuple(spec["shape"]))
    if spec["model"] == "cubic":
        model: Any = CubicSliceModel()
    else:
        generator = build_generator(spec["generator"], **spec["generator_kwargs"])
        if spec["compile"]:
            generator = torch.compile(generator)
        model = GeneratorSliceModel(
            generator,
            {"factor_range": [FACTOR, FACTOR]},
            name=spec["model"],
            device=device,
            batch_size=spec["batch_size"],
            # The table's precision column: bfloat16 autocast on CUDA, float32 on CPU.
            precision="auto" if device.type == "cuda" else "float32",
        )
    cuda = device.type == "cuda" and spec["model"] != "cubic"

    def run(volume: Volume) -> None:
        upscale_volume(volume, model, factor=FACTOR, axis=AXIS)
        if cuda:
            torch.cuda.synchronize(device)

    run(crop_volume(volume, WARMUP_SHAPE))
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_rss_mib()
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        run(volume)
        times.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "times": times,
                "maxrss_mib": peak_rss_mib(),
                "maxrss_before_mib": before,
                "gpu_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
            }
        )
    )


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter with the BLAS thread count pinned too."""
    env = dict(os.environ)
    if spec["threads"] is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(spec["threads"])
    process = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if process.returncode != 0:
        raise SystemExit(f"upscale row {spec['model']} failed:\n{process.stderr}")
    return json.loads(process.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ tables


def table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    """A Markdown table with padded columns (readable as printed text too)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                str(c).rjust(w) if i in right else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def ratio_text(ratio: float) -> str:
    return f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.1f}"


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return " x ".join(str(n) for n in shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch and BLAS CPU threads")
    parser.add_argument(
        "--sizes", default="small,full", help="comma-separated sizes of the esrgan generator"
    )
    parser.add_argument(
        "--generator-kwargs",
        help='JSON generator settings for an extra "custom" size, on top of small\'s, '
        'e.g. \'{"num_feat": 32, "num_block": 2, "num_grow_ch": 16, "num_hr_feat": 16}\'',
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed upscale runs (default 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps (default 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    parser.add_argument(
        "--full-cpu-steps",
        default="1,2",
        help="warm-up,timed training steps for full on CPU, where a step takes tens of seconds "
        "(default 1,2)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="time the full size's upscale on a central crop (--quick-shape), 1 run",
    )
    parser.add_argument("--quick-shape", default="64,64,16", help="crop for --quick (x,y,z)")
    parser.add_argument("--compile", action="store_true", help="on CUDA, add torch.compile rows")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per upscale forward")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    custom = json.loads(args.generator_kwargs) if args.generator_kwargs else None
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if custom is not None:
        sizes.append("custom")
    quick_shape = tuple(int(n) for n in args.quick_shape.split(","))
    full_warmup, full_steps = (int(n) for n in args.full_cpu_steps.split(","))
    precisions = [("float32", False, False)]
    from mrisr.device import resolve_precision

    if resolve_precision("auto", device) == "bfloat16":  # a GPU, or a CPU with native bf16
        precisions.append(("bf16 autocast", True, False))
    if cuda:
        if args.compile:
            precisions.append(("bf16 + compile", True, True))

    plans = {size: plan_for(size, custom) for size in sizes}
    train_rows: list[list[str]] = []
    for size, plan in plans.items():
        generator = build_generator(plan.generator, **plan.generator_kwargs)
        params = count_parameters(generator)
        macs = macs_per_output_voxel(generator, in_rows=16, cols=16, factor=FACTOR)
        slow = size == "full" and not cuda
        warmup, steps = (full_warmup, full_steps) if slow else (args.warmup, args.steps)
        for stage, gan in (("stage 1 (L1)", False), ("GAN (G + D)", True)):
            for precision, bf16, compile_ in precisions:
                print(f"training {size} {stage} {precision} ...", file=sys.stderr, flush=True)
                times = time_training(
                    plan,
                    gan=gan,
                    device=device,
                    bf16=bf16,
                    compile_=compile_,
                    warmup=warmup,
                    steps=steps,
                )
                median = statistics.median(times)
                train_rows.append(
                    [
                        size,
                        f"{params:,}",
                        f"{macs:,.0f}",
                        stage,
                        precision,
                        f"{warmup} + {steps}",
                        f"{median:.3f}",
                        f"{BATCH / median:,.1f}",
                    ]
                )

    upscale_rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="mrisr-bench-") as tmp:
        path, origin = build_input(Path(tmp))
        measured: dict[tuple[int, ...], float] = {}

        def upscale_row(
            label: str, model: str, shape: tuple[int, ...], repeats: int, **extra: Any
        ) -> dict[str, Any]:
            print(f"upscaling {label} on {shape_text(shape)} ...", file=sys.stderr, flush=True)
            spec = {
                "path": str(path),
                "shape": list(shape),
                "model": model,
                "device": str(device),
                "threads": args.threads,
                "repeats": repeats,
                "batch_size": args.batch_size,
                "compile": False,
                "generator": None,
                "generator_kwargs": {},
                **extra,
            }
            return run_child(spec)

        def add(
            label: str, precision: str, shape: tuple[int, ...], result: dict, note: str
        ) -> None:
            times = result["times"]
            reference = measured.get(shape)
            upscale_rows.append(
                [
                    label,
                    shape_text(shape),
                    precision,
                    str(len(times)),
                    f"{min(times):.3f}",
                    f"{statistics.median(times):.3f}",
                    ratio_text(min(times) / reference) if reference else "1.0",
                    f"{result['maxrss_mib']:,.0f}",
                    f"{result['maxrss_mib'] - result['maxrss_before_mib']:,.0f}",
                    f"{result['gpu_peak_mib']:,.0f}" if result["gpu_peak_mib"] is not None else "-",
                    note,
                ]
            )

        shapes = {
            size: (quick_shape if (args.quick and size == "full") else SHAPE) for size in sizes
        }
        for shape in dict.fromkeys(shapes.values()):
            result = upscale_row("cubic", "cubic", shape, args.repeats)
            measured[shape] = min(result["times"])
            add("cubic", "float32 matmul", shape, result, "reference")
        for size, plan in plans.items():
            shape = shapes[size]
            quick = shape != SHAPE
            repeats = 1 if quick else args.repeats
            generator_spec = {
                "generator": plan.generator,
                "generator_kwargs": dict(plan.generator_kwargs),
            }
            note = ""
            if quick:
                scale = (SHAPE[0] * SHAPE[1] * SHAPE[2]) / (shape[0] * shape[1] * shape[2])
                note = "--quick crop"
            # upscale_row runs bf16 autocast on CUDA and float32 on CPU.
            result = upscale_row(size, size, shape, repeats, **generator_spec)
            if quick:
                estimate = min(result["times"]) * scale
                note += f"; x{scale:g} voxels: ~{estimate:,.0f} s for {shape_text(SHAPE)} (extrapolated)"
            add(size, "bf16 autocast" if cuda else "float32", shape, result, note)
            if cuda and args.compile:
                result = upscale_row(size, size, shape, repeats, compile=True, **generator_spec)
                add(size, "bf16 + compile", shape, result, "first call per shape compiles")

    threads = args.threads if args.threads is not None else torch.get_num_threads()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cpu = f"{os.cpu_count()} logical cores (load {load}), torch threads {threads}"
    gpu = torch.cuda.get_device_name(device) if cuda else "none"
    header_lines = [
        f"date: {datetime.date.today().isoformat()}; device: {device} ({gpu}); cpu: {cpu}; "
        f"torch {torch.__version__}; {platform.python_implementation()} {platform.python_version()}",
        f"recipe {RECIPE}; training: batch {BATCH} of {PATCH} x {PATCH} HR patches "
        f"({PATCH // FACTOR} x {PATCH} LR), factor {FACTOR}, random patches, median step; "
        f"upscale: {FACTOR}x along axis {AXIS}, input {origin}",
    ]
    if custom is not None:
        header_lines.append(f"custom = small with {json.dumps(custom)}")
    train_table = table(
        [
            "size",
            "params",
            "MACs/voxel",
            "step",
            "precision",
            "warm-up + timed",
            "s/step",
            "patches/s",
        ],
        train_rows,
        right={1, 2, 5, 6, 7},
    )
    upscale_table = table(
        [
            "model",
            "volume",
            "precision",
            "runs",
            "min s",
            "median s",
            "x cubic",
            "peak RSS MiB",
            "growth MiB",
            "GPU MiB",
            "note",
        ],
        upscale_rows,
        right={3, 4, 5, 6, 7, 8, 9},
    )
    text = "\n".join(
        [
            *header_lines,
            "",
            "Training throughput:",
            "",
            train_table,
            "",
            "Upscale (each row a fresh process; peak RSS includes the interpreter, torch and the "
            "input; growth: over the timed runs, after a warm-up on a 32 x 32 x 8 crop):",
            "",
            upscale_table,
            "",
        ]
    )
    print()
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
        print(f"wrote {args.markdown}", file=sys.stderr)


if __name__ == "__main__":
    main()
