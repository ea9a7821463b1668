"""GPU recipe: CUDA tests, the full-size ESRGAN generator trained, timed, judged, installed.

One run on one GPU, sized for under 10 minutes on one H200 (estimated: not yet run on one):

1. ``cuda_tests``  the suite's CUDA tests (``pytest -k cuda``), pass/fail recorded;
2. ``compile``     a few training steps eager and under ``torch.compile`` (bf16 autocast),
                   to decide whether compiling pays within the training budget;
3. ``train``       ``benchmarks/default_model.yaml`` (the bundled models' data, degradations,
                   factors and held-out volume; volumes from train_default_models.py) with
                   the generator at ``--size full`` (ESRGAN's 23 RRDBs of 64 channels),
                   steps sized to ``--minutes`` and stopped there at the latest;
4. ``upscale``     a 256 x 256 x 64 scan upscaled 4x (256-cube output) by cubic, the
                   bundled ``fast`` and the new model: in memory and end to end through
                   ``mrisr upscale`` in a fresh process;
5. ``evaluate``    the new model against ``fast`` and cubic on report.py's held-out volumes
                   (report.measure_quality); it is installed into mrisr/weights/ as
                   ``--install-name`` only when its mean PSNR gain over cubic beats fast's,
                   and never when the install would make it the default model.

Every figure goes to ``--out``/gpu_recipe.json and .md (rewritten after each stage, so a
run stopped by a time limit keeps what finished) and, in GPU mode, to docs/gpu_recipe.md.

``--smoke`` runs the same stages on the CPU in well under a minute: tiny crops of the
spine fixtures stand in for the training volumes (under the training list's names), a
small generator trains a few steps, the upscale is timed on a small scan, the held-out
set is the spine fixtures, the CUDA tests are skipped and installing goes to a folder in
``--out``. tests/test_gpu_recipe.py runs it, so the recipe cannot rot.

Usage::

    python benchmarks/gpu_recipe.py                          # GPU: ../shared/data/train
    python benchmarks/gpu_recipe.py --data .gpu_data/train --minutes 3
    python benchmarks/gpu_recipe.py --smoke --out /tmp/gpu_smoke
    python benchmarks/gpu_recipe.py --pack-data .gpu_data    # copy the volumes to carry
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from report import HELD_OUT, measure_quality, speed_volume
from train_default_models import (
    RECIPE,
    TRAIN_VOLUMES,
    VALIDATION_VOLUME,
    install,
    link_volumes,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "gpu_recipe.md"
STAGES = ("cuda_tests", "compile", "train", "upscale", "evaluate")
#: The upscale-speed scan: 256 x 256 x 64 at 4x gives a 256-cube output.
SPEED_FACTOR = 4.0
SMOKE_SPEED_SHAPE = (48, 48, 12)
SMOKE_CROP = 40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU mode: every stage, tiny sizes")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "train")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_recipe")
    parser.add_argument("--minutes", type=float, default=2.0, help="training time budget")
    parser.add_argument(
        "--factors", nargs="+", type=float, default=[4.0], help="evaluation factors (all 3 axes)"
    )
    parser.add_argument("--size", default=None, help="generator size (default full; smoke small)")
    parser.add_argument("--generator-kwargs", type=json.loads, default={}, help="JSON overrides")
    parser.add_argument("--batch", type=int, help="patches per step (default 64; smoke 2)")
    parser.add_argument("--lr", type=float, help="stage-1 learning rate (default: the recipe's)")
    parser.add_argument("--gan-steps", type=int, default=0, help="GAN-stage steps after stage 1")
    parser.add_argument("--steps", type=int, help="stage-1 steps (default: sized to --minutes)")
    parser.add_argument("--workers", type=int, help="data-loader processes (default: cores - 2)")
    parser.add_argument(
        "--compile",
        choices=("probe", "on", "off"),
        default="probe",
        help="probe: time a few steps with and without torch.compile and use it if it pays",
    )
    parser.add_argument("--probe-seconds", type=float, default=90, help="limit of the probe")
    parser.add_argument("--repeats", type=int, help="timed in-memory upscales (3; smoke 1)")
    parser.add_argument("--install-name", default="full", help="bundled name of the new model")
    parser.add_argument(
        "--install-margin", type=float, default=0.0, help="dB the new model must beat fast by"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=STAGES, help="stages to skip")
    parser.add_argument("--pack-data", type=Path, help="copy the volumes a run needs here; exit")
    parser.add_argument(
        "--unpack-model", nargs=2, type=Path, metavar=("PARTS", "FILE"), help="join parts; exit"
    )
    parser.add_argument("--probe-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = args.size or ("small" if args.smoke else "full")
    args.batch = args.batch or (2 if args.smoke else 64)
    args.repeats = args.repeats or (1 if args.smoke else 3)
    if args.workers is None:
        args.workers = 0 if args.smoke else max(0, min(8, (os.cpu_count() or 2) - 2))
    return args


# ------------------------------------------------------------------ results


class Results:
    """The run's figures, written as JSON and markdown after every stage."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.data: dict[str, Any] = {
            "mode": "smoke" if args.smoke else "gpu",
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                "cpu_cores": os.cpu_count(),
            },
            "stages": {},
        }

    def run(self, name: str, stage: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one stage, record its figures (or its error) and its seconds, save."""
        start = time.perf_counter()
        if name in self.args.skip:
            record = {"status": "skipped", "reason": "--skip"}
        else:
            try:
                record = {"status": "ok", **stage()}
            except Exception as error:  # one broken stage must not hide the others' figures
                traceback.print_exc()
                record = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        record["seconds"] = round(time.perf_counter() - start, 2)
        self.data["stages"][name] = record
        print(f"[{name}] {record['status']} in {record['seconds']:.1f} s", flush=True)
        self.save()
        return record

    def save(self) -> None:
        from mrisr.io.files import write_atomic

        self.data["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        text = json.dumps(self.data, indent=1)
        out = self.args.out
        write_atomic(out / "gpu_recipe.json", lambda t: t.write_text(text), overwrite=True)
        markdown = "\n".join(markdown_report(self.data)) + "\n"
        write_atomic(out / "gpu_recipe.md", lambda t: t.write_text(markdown), overwrite=True)
        if not self.args.smoke:
            write_atomic(DOC, lambda t: t.write_text(markdown), overwrite=True)


def skip(reason: str) -> dict[str, Any]:
    """A stage's record when it cannot run here."""
    return {"status": "skipped", "reason": reason}


# ------------------------------------------------------------- 1. CUDA tests


def stage_cuda_tests(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """``pytest -k cuda`` over the suite; counts read from its JUnit XML."""
    if device != "cuda":
        return skip("no CUDA device" + (" (smoke mode)" if args.smoke else ""))
    xml = args.out / "cuda_tests.xml"
    command = [
        sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider",
        "--continue-on-collection-errors", f"--junitxml={xml}", str(REPO / "tests"),
    ]  # fmt: skip
    env = {**os.environ, "MRISR_SHARED_DATA": str(args.data.resolve().parent)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    (args.out / "cuda_tests.log").write_text(done.stdout + done.stderr)
    print(done.stdout[-1500:], flush=True)
    suite = ElementTree.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases, uncollected = [], []
    for case in suite.iter("testcase"):
        error = case.find("error")
        if error is not None and error.get("message") == "collection failure":
            # Modules importing what the GPU image lacks (SimpleITK, pybids) hold no CUDA test.
            uncollected.append(f"{case.get('name')}: {(error.text or '').strip().splitlines()[-1]}")
            continue
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            if case.find(kind) is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    counts["errors"] = sum(c["outcome"] == "error" for c in cases)
    if counts["failed"] or counts["errors"] or not counts["passed"]:
        raise RuntimeError(f"CUDA tests: {counts} (exit {done.returncode}); see cuda_tests.log")
    return {"exit_code": done.returncode, **counts, "uncollected": uncollected, "cases": cases}


# ------------------------------------------------------------ 2. compile probe


def probe_child(spec: dict[str, Any]) -> None:
    """In a child process: seconds per stage-1 step, eager then compiled; one JSON line each."""
    import torch

    from mrisr.recipes import resolve
    from mrisr.training.step import build_learner, pixel_step

    config = spec_config(spec)
    plan = resolve(config, perceptual_available=False)
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    patch, batch = config.data.patch_size, config.data.batch_size
    rows = patch // 4  # factor 4: the LR input keeps the columns, a quarter of the rows
    for compiled in (False, True) if spec["compile"] else (False,):
        learner = build_learner(plan, device=device, gan=False, amp=cuda, compile=compiled, seed=0)
        learner.set_learning_rates("psnr")
        hr = torch.rand(batch, 1, patch, patch, device=device)
        lr = torch.rand(batch, 1, rows, patch, device=device)
        seconds = []
        for _ in range(spec["steps"] + 2):
            start = time.perf_counter()
            pixel_step(learner, lr, hr)
            if cuda:
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
        step = statistics.median(seconds[2:])
        row = {"compile": compiled, "first_step_s": seconds[0], "step_s": step}
        print(json.dumps(row), flush=True)


def stage_compile(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Seconds per step eager and compiled (child process, time-limited), and the choice."""
    spec = {"smoke": args.smoke, "size": args.size, "kwargs": args.generator_kwargs}
    spec |= {"batch": args.batch, "device": device, "steps": 3 if args.smoke else 10}
    spec["compile"] = args.compile == "probe" and device == "cuda"
    command = [sys.executable, __file__, "--probe-child", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.probe_seconds)
        output, timed_out = done.stdout, False
        if done.returncode:
            print(done.stderr[-4000:], file=sys.stderr)
    except subprocess.TimeoutExpired as expired:
        output, timed_out = expired.stdout or "", True
        output = output.decode() if isinstance(output, bytes) else output
    rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    eager = next((r for r in rows if not r["compile"]), None)
    if eager is None:
        raise RuntimeError("the eager training steps did not run; see the error above")
    compiled = next((r for r in rows if r["compile"]), None)
    budget = args.minutes * 60
    use = args.compile == "on"
    if args.compile == "probe" and compiled is not None:
        # Compiling pays when the time it saves over the budget exceeds its warm-up
        # (counted twice: the training run compiles again, partly from inductor's cache).
        saved = budget * (1 - compiled["step_s"] / eager["step_s"])
        use = saved > 2 * compiled["first_step_s"]
    reason = {
        "on": "--compile on",
        "off": "--compile off",
        "probe": "not probed on CPU"
        if not spec["compile"]
        else f"compile warm-up over --probe-seconds {args.probe_seconds:g}"
        if timed_out
        else "saves more than twice its warm-up"
        if use
        else "does not save twice its warm-up",
    }[args.compile]
    return {"eager": eager, "compiled": compiled, "use_compile": use, "reason": reason}


def spec_config(spec: dict[str, Any]):
    """The training config of the probe: the recipe at the run's size and batch."""
    from mrisr.config import with_overrides
    from mrisr.config_file import load_config

    config = load_config(RECIPE)
    return with_overrides(
        config,
        {
            "model.size": spec["size"],
            "model.generator_kwargs": spec["kwargs"],
            "data.batch_size": spec["batch"],
            "data.patch_size": smoke_patch(config) if spec["smoke"] else None,
        },
    )


def smoke_patch(config) -> int:
    """The smallest patch the recipe's largest factor allows, at least 32 voxels."""
    return max(32, int(np.ceil(2 * config.data.max_factor)))


# ------------------------------------------------------------------ 3. train


def smoke_volumes(folder: Path, fixtures: Path) -> Path:
    """Tiny stand-ins for the training volumes: crops of the spine fixtures under their names.

    Every name of train_default_models' list gets a ``SMOKE_CROP``-cube crop of a spine
    fixture (alternating), so that the real volume list and linking code run unchanged.
    """
    from mrisr.io import load_volume, save_volume

    sources = [load_volume(fixtures / n) for n in ("spine_t1w_1mm.nii.gz", "spine_t2_1mm.nii.gz")]
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate((*TRAIN_VOLUMES, VALIDATION_VOLUME)):
        volume = sources[index % 2]
        start = [(n - SMOKE_CROP) // 2 for n in volume.shape]
        crop = volume.crop(tuple(slice(s, s + SMOKE_CROP) for s in start))
        if not (folder / name).exists():
            save_volume(crop, folder / name, dtype=np.float32)
    return folder


def train_config(args: argparse.Namespace, volumes: Path, run_dir: Path, compile_: bool):
    """default_model.yaml with the GPU run's size, batch, steps and device."""
    from mrisr.config import with_overrides
    from mrisr.config_file import load_config

    config = load_config(RECIPE)
    steps = args.steps
    overrides = {
        "data.volumes": str(volumes),
        "out": str(run_dir),
        "model.size": args.size,
        "model.generator_kwargs": args.generator_kwargs,
        "data.batch_size": args.batch,
        "data.workers": args.workers,
        "optim.lr_pretrain": args.lr,
        "schedule.steps": steps,
        "schedule.gan_steps": args.gan_steps,
        "schedule.val_every": max(1, steps // 4),
        "schedule.save_every": 0,
        "schedule.log_every": max(1, min(100, steps // 20)),
        "device": "cpu" if args.smoke else "cuda",
        "amp": True,
        "compile": compile_,
        "tensorboard": False,
    }
    if args.smoke:
        overrides |= {"data.patch_size": smoke_patch(config), "data.val_crop": 32, "threads": 2}
    return with_overrides(config, overrides)


def stage_train(args: argparse.Namespace, probe: dict[str, Any]) -> dict[str, Any]:
    """Train with the recipe; stop at the time budget at the latest (a saved, usable model)."""
    from mrisr.checkpoint import read_description
    from mrisr.training import (
        LOG_FILE,
        MODEL_FILE,
        PSNR_MODEL_FILE,
        TrainingInterrupted,
        run_training,
    )

    run_dir = args.out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run each time: the figures belong to this run
    if args.smoke:
        data = smoke_volumes(args.out / "smoke_volumes", args.data.parent / "fixtures")
    else:
        data = args.data
    volumes = args.out / "volumes"
    if volumes.exists():
        shutil.rmtree(volumes)  # links of an earlier volume list must not linger
    link_volumes(data, volumes)
    step_s = (probe.get("compiled") if probe.get("use_compile") else probe.get("eager")) or {}
    if args.steps is None and args.smoke:
        args.steps = 4
    elif args.steps is None and "step_s" in step_s:
        # Pair drawing and validation add to the probe's pure step time: aim at 70 % of it.
        args.steps = max(100, int(0.7 * args.minutes * 60 / step_s["step_s"]))
    elif args.steps is None:
        args.steps = 10**6  # no step time measured: the time budget alone ends the run
    config = train_config(args, volumes, run_dir, bool(probe.get("use_compile")))
    budget = args.minutes * 60
    started = time.perf_counter()
    stopped = {"early": False}

    def callback(event) -> None:
        # Past the budget, stop like Ctrl-C: the loop finishes the step and saves.
        if event.kind == "step" and time.perf_counter() - started > budget and not stopped["early"]:
            stopped["early"] = True
            signal.raise_signal(signal.SIGINT)

    try:
        result = run_training(config, callback=callback)
        step, validation = result.step, result.validation
    except TrainingInterrupted as interrupted:
        step, validation = interrupted.step, {}
    seconds = time.perf_counter() - started
    model = run_dir / (PSNR_MODEL_FILE if (run_dir / PSNR_MODEL_FILE).is_file() else MODEL_FILE)
    log = [json.loads(line) for line in (run_dir / LOG_FILE).read_text().splitlines()]
    rates = [e["patches_per_s"] for e in log if e.get("event") == "train"]
    checks = [e for e in log if e.get("event") == "validation"]
    description = read_description(model)
    return {
        "model": str(model),
        "size": args.size,
        "parameters": description.get("parameters"),
        "factor_range": description.get("factor_range"),
        "volumes": sorted(p.name for p in volumes.iterdir()),
        "held_out": config.data.val_volume,
        "batch": args.batch,
        "patch": config.data.patch_size,
        "compile": config.compile,
        "amp": config.amp,
        "steps_planned": args.steps,
        "steps_done": step,
        "stopped_at_budget": stopped["early"],
        "train_seconds": round(seconds, 1),
        "patches_per_s": round(statistics.median(rates), 1) if rates else None,
        "validation": validation or (checks[-1] if checks else {}),
    }


# ---------------------------------------------------------------- 4. upscale


def speed_scan(args: argparse.Namespace):
    """The 256 x 256 x 64 scan of report.py; in smoke mode a small crop of a spine fixture."""
    if not args.smoke:
        return speed_volume(args.data.parent)
    from mrisr.io import load_volume
    from mrisr.volume import Volume

    truth = load_volume(args.data.parent / "fixtures" / "spine_t2_1mm.nii.gz")
    x, y, z = SMOKE_SPEED_SHAPE
    data = np.ascontiguousarray(truth.data[:x, :y, : z * 4 : 4], dtype=np.float32)
    return Volume(data, np.diag([1.0, 1.0, 4.0, 1.0]), None)


def stage_upscale(args: argparse.Namespace, device: str, model_file: str | None) -> dict[str, Any]:
    """Seconds to upscale the speed scan 4x: in memory (min of repeats) and via `mrisr upscale`."""
    import torch

    from mrisr.io import save_volume
    from mrisr.models import load_slice_model
    from mrisr.upscale import upscale_volume

    volume = speed_scan(args)
    scan = args.out / "speed_scan.nii.gz"
    save_volume(volume, scan, overwrite=True)
    methods = {"cubic": "cubic", "fast": "fast"}
    if model_file:
        methods["new"] = model_file
    rows = []
    for name, spec in methods.items():
        model = load_slice_model(spec, factor=SPEED_FACTOR, device=device)
        seconds = []
        for run in range(args.repeats + 1):
            start = time.perf_counter()
            result = upscale_volume(volume, model, factor=SPEED_FACTOR, axis=2)
            if device == "cuda":
                torch.cuda.synchronize()
            if run:  # the first run warms caches, the allocator and cuDNN's choices
                seconds.append(time.perf_counter() - start)
        del model
        output = args.out / f"speed_{name}_sr.nii.gz"
        command = [
            sys.executable, "-m", "mrisr", "upscale", str(scan), "-o", str(output),
            "--model", spec, "--factor", f"{SPEED_FACTOR:g}", "--overwrite",
        ]  # fmt: skip
        if spec != "cubic":  # cubic runs no network: mrisr refuses --device with it
            command += ["--device", device]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        end_to_end = time.perf_counter() - start
        rows.append(
            {
                "method": name,
                "shape_in": list(volume.shape),
                "shape_out": list(result.shape),
                "in_memory_s": [round(s, 4) for s in seconds],
                "in_memory_min_s": round(min(seconds), 4),
                "end_to_end_s": round(end_to_end, 3),
            }
        )
        print(f"  upscale {name}: {min(seconds):.3f} s in memory, {end_to_end:.2f} s end to end")
    cubic = rows[0]
    for row in rows:
        row["x_cubic_in_memory"] = round(row["in_memory_min_s"] / cubic["in_memory_min_s"], 2)
        row["x_cubic_end_to_end"] = round(row["end_to_end_s"] / cubic["end_to_end_s"], 2)
    return {"device": device, "factor": SPEED_FACTOR, "rows": rows}


# --------------------------------------------------------------- 5. evaluate


@contextmanager
def weights_dir(folder: Path):
    """mrisr.models reads bundled models from ``folder`` meanwhile (the default-model rule)."""
    import mrisr.models

    saved = mrisr.models.WEIGHTS_DIR
    mrisr.models.WEIGHTS_DIR = folder
    try:
        yield
    finally:
        mrisr.models.WEIGHTS_DIR = saved


def held_out(args: argparse.Namespace) -> dict[str, Path]:
    """report.py's held-out volumes (only the spine fixtures in smoke mode)."""
    volumes = {name: args.data.parent / path for name, path in HELD_OUT.items()}
    if args.smoke:
        volumes = {n: p for n, p in volumes.items() if n.startswith("spine")}
    return volumes


def stage_evaluate(args: argparse.Namespace, device: str, model_file: str) -> dict[str, Any]:
    """Gain over cubic of fast and the new model on the held-out volumes; install if it wins."""
    from mrisr.interpolation import CubicSliceModel
    from mrisr.models import WEIGHTS_DIR, load_slice_model

    models = {
        "cubic": CubicSliceModel(),
        "fast": load_slice_model("fast", device=device),
        "new": load_slice_model(model_file, device=device),
    }
    axes, factors = ([2], [4.0]) if args.smoke else ([0, 1, 2], args.factors)
    rows = measure_quality(models, held_out(args), axes, factors, crop=192)
    summary = {}
    for name in ("fast", "new"):
        gains = [r[name]["psnr"] - r["cubic"]["psnr"] for r in rows]
        summary[name] = {
            "mean_psnr_gain_db": round(statistics.mean(gains), 3),
            "min_psnr_gain_db": round(min(gains), 3),
            "ssim_better": sum(r[name]["ssim"] > r["cubic"]["ssim"] for r in rows),
            "hfen_better": sum(r[name]["hfen"] < r["cubic"]["hfen"] for r in rows),
            "per_factor_db": {
                f"{f:g}": round(
                    statistics.mean(
                        r[name]["psnr"] - r["cubic"]["psnr"] for r in rows if r["factor"] == f
                    ),
                    3,
                )
                for f in factors
            },
        }
    margin = summary["new"]["mean_psnr_gain_db"] - summary["fast"]["mean_psnr_gain_db"]
    target = args.out / "weights" if args.smoke else WEIGHTS_DIR
    decision = install_if_better(args, Path(model_file), target, margin)
    return {
        "axes": axes,
        "factors": factors,
        "volumes": sorted(held_out(args)),
        "cases": len(rows),
        "summary": summary,
        "new_minus_fast_db": round(margin, 3),
        **decision,
        "rows": rows,
    }


def install_if_better(
    args: argparse.Namespace, model: Path, target: Path, margin: float
) -> dict[str, Any]:
    """Install ``model`` as ``--install-name`` when it beats fast, unless it would become default."""
    from mrisr.models import WEIGHTS_DIR

    if margin <= args.install_margin:
        return {
            "installed": False,
            "install_reason": f"new - fast = {margin:+.3f} dB, not above {args.install_margin:g}",
        }
    target.mkdir(parents=True, exist_ok=True)
    if target != WEIGHTS_DIR:  # a smoke run decides against a copy of the bundled models
        for path in WEIGHTS_DIR.glob("*.safetensors"):
            install(path, target / path.name)
    installed = target / f"{args.install_name}.safetensors"
    install(model, installed)
    defaults: dict[str, str | None] = {}
    try:
        with weights_dir(target):
            # A model this size would make every CPU upscale slow: it stays a by-name model.
            for factor in (None, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0):
                defaults[str(factor)] = default_path_name(factor)
    finally:
        if installed.name in defaults.values() or len(defaults) < 9:
            installed.unlink()  # refused, or the check itself failed: no half decision
    if installed.name in defaults.values():
        return {
            "installed": False,
            "install_reason": f"would become the default model ({defaults}); left out",
        }
    return {
        "installed": True,
        "install_path": str(installed),
        "sha256": hashlib.sha256(installed.read_bytes()).hexdigest(),
        "parts": pack_model(installed, args.out / "model_parts"),
        "defaults_after_install": defaults,
        "install_reason": f"new - fast = {margin:+.3f} dB above {args.install_margin:g}",
    }


def default_path_name(factor: float | None) -> str | None:
    """File name of the bundled default model for ``factor``; None where none covers it."""
    from mrisr.errors import ConfigError
    from mrisr.models import default_model_path

    try:
        return default_model_path(factor).name
    except ConfigError:
        return None


# ------------------------------------------------------------------ reports


def summary_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) pairs of every stage, for the printed table and the markdown."""
    stages = data["stages"]
    rows = [("mode", data["mode"]), ("gpu", str(data["machine"]["gpu"]))]
    rows.append(("torch", data["machine"]["torch"]))
    for name in STAGES:
        stage = stages.get(name)
        if stage is None:
            rows.append((name, "not run"))
            continue
        note = stage.get("reason") or stage.get("error") or ""
        rows.append((name, f"{stage['status']} ({stage['seconds']:.1f} s) {note}".strip()))
    tests = stages.get("cuda_tests", {})
    if "passed" in tests:
        counts = "{passed}/{failed}/{skipped}".format(**tests)
        rows.append(("cuda tests passed/failed/skipped", counts))
        rows.append(("test modules not importable", str(len(tests.get("uncollected", [])))))
    probe = stages.get("compile", {})
    for kind in ("eager", "compiled"):
        if probe.get(kind):
            r = probe[kind]
            rows.append((f"step s, {kind}", f"{r['step_s']:.4f} (first {r['first_step_s']:.1f})"))
    train = stages.get("train", {})
    for key in ("size", "parameters", "batch", "compile", "steps_done", "train_seconds"):
        if key in train:
            rows.append((f"train {key}", str(train[key])))
    if train.get("patches_per_s") is not None:
        rows.append(("train patches/s", f"{train['patches_per_s']:.0f}"))
    for row in stages.get("upscale", {}).get("rows", []):
        rows.append(
            (
                f"upscale {row['method']} {'x'.join(map(str, row['shape_out']))}",
                f"{row['in_memory_min_s']:.3f} s in memory ({row['x_cubic_in_memory']:g}x cubic), "
                f"{row['end_to_end_s']:.2f} s end to end ({row['x_cubic_end_to_end']:g}x cubic)",
            )
        )
    evaluation = stages.get("evaluate", {})
    for name, figures in evaluation.get("summary", {}).items():
        rows.append(
            (
                f"{name}: mean PSNR gain over cubic",
                f"{figures['mean_psnr_gain_db']:+.2f} dB (min {figures['min_psnr_gain_db']:+.2f}; "
                f"SSIM better {figures['ssim_better']}/{evaluation['cases']}, "
                f"HFEN better {figures['hfen_better']}/{evaluation['cases']})",
            )
        )
    if "installed" in evaluation:
        rows.append(("installed", f"{evaluation['installed']}: {evaluation['install_reason']}"))
    return rows


def markdown_report(data: dict[str, Any]) -> list[str]:
    lines = [
        "# GPU recipe",
        "",
        f"Written by `python benchmarks/{data['command']}` ({data['mode']} mode), started "
        f"{data['started']}, last stage {data.get('finished', '-')}; "
        f"{data['machine']['gpu'] or 'no GPU'}, torch {data['machine']['torch']}, "
        f"{data['machine']['cpu_cores']} CPU cores. Every figure below comes from that run; "
        "the JSON beside it holds each case.",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in summary_rows(data)),
    ]
    evaluation = data["stages"].get("evaluate", {})
    if evaluation.get("rows"):
        lines += ["", "Each held-out case (PSNR dB; gain over cubic):", ""]
        lines += ["| volume | axis | factor | cubic | fast | new |", "|---|---|---|---|---|---|"]
        for r in evaluation["rows"]:
            c = r["cubic"]["psnr"]
            lines.append(
                f"| {r['volume']} | {r['axis']} | {r['factor']:g} | {c:.2f} | "
                f"{r['fast']['psnr']:.2f} ({r['fast']['psnr'] - c:+.2f}) | "
                f"{r['new']['psnr']:.2f} ({r['new']['psnr'] - c:+.2f}) |"
            )
    return lines


def print_table(data: dict[str, Any]) -> None:
    rows = summary_rows(data)
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


# ---------------------------------------------------------------- carrying


def pack_data(data: Path, folder: Path) -> None:
    """Copy the training, validation and held-out volumes into ``folder`` (train/, fixtures/).

    The device machine sees only the repository: this folder (git-ignored) travels with it.
    """
    with tempfile.TemporaryDirectory() as links:
        link_volumes(data, Path(links))
        names = [p.name for p in Path(links).iterdir()]
        for name in names:
            target = folder / "train" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile((Path(links) / name).resolve(), target)
    for path in HELD_OUT.values():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data.parent / path, target)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(
        f"{folder}: {len(names)} training volumes and {len(HELD_OUT)} held-out, {total / 2**20:.1f} MiB"
    )


#: Files that come back from the device machine are at most 16 MiB each.
PART_BYTES = 15 * 2**20


def pack_model(model: Path, folder: Path) -> list[str]:
    """Split ``model`` into compressed parts of at most ``PART_BYTES`` in ``folder``.

    A full-size model (about 64 MiB of float32) exceeds what a device run may send back;
    its bytes regrouped by position in each 4-byte float (sign and exponent together)
    compress to about 85 %, which fits. ``--unpack-model`` reverses it and checks sha256.
    """
    raw = model.read_bytes()
    words = np.frombuffer(raw + b"\0" * (-len(raw) % 4), np.uint8).reshape(-1, 4)
    head = f"{len(raw)} {hashlib.sha256(raw).hexdigest()}\n".encode()
    stream = head + zlib.compress(words.T.tobytes(), 6)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, start in enumerate(range(0, len(stream), PART_BYTES)):
        names.append(f"{model.stem}.part{index:02d}")
        (folder / names[-1]).write_bytes(stream[start : start + PART_BYTES])
    return names


def unpack_model(folder: Path, target: Path) -> None:
    """Join the parts ``pack_model`` wrote in ``folder`` into ``target`` (sha256 checked)."""
    from mrisr.io.files import write_atomic

    stream = b"".join(p.read_bytes() for p in sorted(folder.glob("*.part[0-9][0-9]")))
    head, _, body = stream.partition(b"\n")
    size, digest = head.decode().split()
    words = np.frombuffer(zlib.decompress(body), np.uint8).reshape(4, -1).T
    raw = words.tobytes()[: int(size)]
    if hashlib.sha256(raw).hexdigest() != digest:
        sys.exit(f"{folder}: the joined parts do not match the model's sha256 {digest}")
    write_atomic(target, lambda temporary: temporary.write_bytes(raw), overwrite=False)
    print(f"wrote {target} ({len(raw) / 2**20:.1f} MiB, sha256 {digest})")


# -------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.probe_child:
        probe_child(json.loads(args.probe_child))
        return {}
    if args.pack_data:
        pack_data(args.data, args.pack_data)
        return {}
    if args.unpack_model:
        unpack_model(*args.unpack_model)
        return {}
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if not args.smoke and device != "cuda":
        sys.exit("no CUDA device: the GPU recipe needs one (or pass --smoke for the CPU mode)")
    if not args.data.is_dir():
        sys.exit(f"{args.data}: no such folder (see --data)")
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(args)
    results.run("cuda_tests", lambda: stage_cuda_tests(args, device))
    probe = results.run("compile", lambda: stage_compile(args, device))
    train = results.run("train", lambda: stage_train(args, probe))
    model = train.get("model")
    results.run("upscale", lambda: stage_upscale(args, device, model))
    if model:
        results.run("evaluate", lambda: stage_evaluate(args, device, model))
    else:
        results.data["stages"]["evaluate"] = skip("no trained model") | {"seconds": 0.0}
        results.save()
    print_table(results.data)
    print(f"\nwrote {args.out / 'gpu_recipe.json'}" + ("" if args.smoke else f" and {DOC}"))
    return results.data


if __name__ == "__main__":
    main()
