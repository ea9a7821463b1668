"""Time ``mrisr upscale`` as a user runs it: a fresh process that reads, upscales and writes.

Two scans:

* a 256 x 256 x 64 float32 NIfTI, 1 x 1 x 4 mm (``mne_sample_brain`` with 4 mm
  slices simulated along its third axis), upscaled 4x to 256 x 256 x 256;
* the real 512 x 512 x 32 T2 FLAIR, 0.43 x 0.43 x 4.4 mm, at its default
  (isotropic) factor of about 10x.

For each, three figures measured in turn in the same run (run 1 of each, then
run 2 of each...), so that drift of a shared machine hits them alike:

* ``end to end``: ``python -m mrisr upscale SCAN -o OUT`` with all defaults in a
  new process: imports, reading, model loading, upscaling, data consistency,
  writing the ``.nii.gz``, the disagreement map and the JSON sidecar;
* ``end to end, float32``: the same with ``--precision float32`` (the
  default, ``auto``, runs the network in bfloat16 on CPUs with native
  bfloat16; on others the two rows are the same arithmetic);
* ``in memory``: :func:`mrisr.upscale.upscale_volume` alone, timed inside a
  new process after the scan and the model are loaded;
* ``cubic``: the end-to-end command with ``--model cubic`` (the yardstick:
  the same reading and writing, interpolation instead of the network).

Where no bundled model covers a scan's factor, the commands name the widest-range
bundled model and pass ``--force`` (the table says so). Seconds are wall-clock
medians and minima over the runs; ``x cubic`` is the median over the cubic
command's median; peak RSS is the process's largest resident set (the whole
process, so the in-memory row includes reading and loading).

Usage::

    python benchmarks/end_to_end.py            # 3 runs, writes docs/end_to_end.md
    python benchmarks/end_to_end.py --quick    # 1 run
    python benchmarks/end_to_end.py --runs 5 --cases 256x64 --output -
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MRISR_SHARED_DATA", REPO.parent / "shared" / "data"))
TRAIN_BRAIN = SHARED / "train" / "mne_sample_brain.mgz"
FLAIR = SHARED / "thick" / "brain_flair_axial_4.4mm.nii.gz"
DEFAULT_OUTPUT = REPO / "docs" / "end_to_end.md"

#: Runs one command as its only child: its wall seconds and peak resident set (the
#: children's accounting covers just that child), as JSON on the last stderr line.
TIMER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:]).returncode
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(json.dumps({"seconds": seconds, "peak_kib": peak, "code": code}), file=sys.stderr)
"""

#: Runs inside a fresh process: load scan and model, then time upscale_volume alone.
IN_MEMORY = """
import json, sys, time
from mrisr.io import load_volume
from mrisr.models import load_slice_model
from mrisr.upscale import plan_upscale, upscale_volume
volume = load_volume(sys.argv[1])
plan = plan_upscale(volume)
model = load_slice_model(sys.argv[2] if sys.argv[2] != "-" else None, factor=plan.factor)
start = time.perf_counter()
upscale_volume(volume, model, plan=plan, force=sys.argv[3] == "force")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


@dataclass
class Case:
    """One scan to time."""

    label: str
    path: Path
    factor: float
    model: str | None  # a --model value, or None for the default
    force: bool


@dataclass
class Row:
    """Timings of one figure of one case."""

    case: str
    what: str
    seconds: list[float]
    peak_mb: list[float]


def make_256x64(folder: Path) -> Path:
    """The 256 x 256 x 64 scan, 1 x 1 x 4 mm, float32 NIfTI, in ``folder``."""
    import nibabel as nib
    import numpy as np

    from mrisr.io import load_volume
    from mrisr.simulate import simulate_volume

    thick = simulate_volume(load_volume(TRAIN_BRAIN), 2, 4.0)
    path = folder / "thick256x64.nii.gz"
    nib.save(nib.Nifti1Image(thick.data.astype(np.float32), thick.affine), path)
    return path


def plan_case(label: str, path: Path) -> Case:
    """The scan's default factor, and the model options a user needs for it.

    The bundled models' factor ranges are read through :mod:`mrisr.models`:
    with a model covering the factor, all defaults; otherwise the widest-range
    bundled model with ``--force``.
    """
    from mrisr.errors import ConfigError
    from mrisr.io import load_volume
    from mrisr.models import default_model_path
    from mrisr.upscale import plan_upscale

    factor = plan_upscale(load_volume(path)).factor
    try:
        default_model_path(factor)
        return Case(label, path, factor, None, False)
    except ConfigError:
        return Case(label, path, factor, default_model_path(None).stem, True)


def upscale_command(case: Case, output: Path, *, cubic: bool = False) -> list[str]:
    """The ``mrisr upscale`` command a user types for ``case``."""
    command = [sys.executable, "-m", "mrisr", "upscale", str(case.path), "-o", str(output)]
    command += ["--overwrite"]
    if cubic:
        return [*command, "--model", "cubic"]
    if case.model is not None:
        command += ["--model", case.model]
    return [*command, "--force"] if case.force else command


def measure(cases: list[Case], runs: int, folder: Path) -> list[Row]:
    """Every figure of every case, ``runs`` times, interleaved."""
    rows = {
        (case.label, what): Row(case.label, what, [], [])
        for case in cases
        for what in ("end to end", "end to end, float32", "in memory", "cubic")
    }
    for run in range(runs):
        for case in cases:
            output = _output(case, folder)
            commands = {
                "end to end": upscale_command(case, output),
                "end to end, float32": [
                    *upscale_command(case, folder / f"float32_{output.name}"),
                    "--precision",
                    "float32",
                ],
                "in memory": [
                    sys.executable,
                    "-c",
                    IN_MEMORY,
                    str(case.path),
                    case.model or "-",
                    "force" if case.force else "",
                ],
                "cubic": upscale_command(case, folder / f"cubic_{output.name}", cubic=True),
            }
            for what, command in commands.items():
                seconds, peak, stdout = _run(command)
                if what == "in memory":
                    seconds = json.loads(stdout.strip().splitlines()[-1])["seconds"]
                row = rows[(case.label, what)]
                row.seconds.append(seconds)
                row.peak_mb.append(peak)
                print(f"run {run + 1}/{runs} {case.label} {what}: {seconds:.1f} s", flush=True)
    return list(rows.values())


def _run(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of one command, run under :data:`TIMER`.

    Raises:
        RuntimeError: the command failed.
    """
    done = subprocess.run(
        [sys.executable, "-c", TIMER, *command], capture_output=True, text=True, cwd=REPO
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    if done.returncode or report["code"]:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return report["seconds"], report["peak_kib"] / 1024, done.stdout


def _output(case: Case, folder: Path) -> Path:
    """Where the default command writes ``case``'s output."""
    return folder / f"{case.path.name.split('.')[0]}_sr.nii.gz"


def output_sizes(cases: list[Case], folder: Path) -> list[str]:
    """Sizes of the files the default command wrote, one line per case."""
    lines = []
    for case in cases:
        output = _output(case, folder)
        stem = output.name.removesuffix(".nii.gz")
        files = [output, folder / f"{stem}_disagreement.nii.gz", folder / f"{stem}.json"]
        sizes = ", ".join(
            f"`{f.name.replace(stem, '<out>')}` {f.stat().st_size / 1e6:.1f} MB"
            for f in files
            if f.exists()
        )
        lines.append(f"- {case.label}: {sizes}")
    return lines


def table(rows: list[Row], cases: list[Case], runs: int) -> str:
    """The markdown section."""
    from mrisr.device import cpu_has_native_bfloat16

    cubic = {row.case: statistics.median(row.seconds) for row in rows if row.what == "cubic"}
    lines = [
        "| scan | figure | median s | min s | x cubic | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        median = statistics.median(row.seconds)
        lines.append(
            f"| {row.case} | {row.what} | {median:.1f} | {min(row.seconds):.1f} | "
            f"{median / cubic[row.case]:.2f} | {max(row.peak_mb):.0f} |"
        )
    notes = []
    for case in cases:
        model = case.model or "the default bundled model"
        force = " with `--force` (no bundled model covers it yet)" if case.force else ""
        notes.append(f"- {case.label}: factor {case.factor:.3g}, {model}{force}")
    cores = os.cpu_count()
    return "\n".join(
        [
            "## End to end: `mrisr upscale` as a user runs it",
            "",
            "Regenerate with `python benchmarks/end_to_end.py` "
            f"({runs} run{'s' if runs != 1 else ''} each; `--quick` for one). "
            f"Measured on {cores} CPU cores ({platform.machine()}, Python "
            f"{platform.python_version()}), shared with other jobs: compare the "
            "ratios, measured in the same run, more than the seconds.",
            "",
            "*end to end*: a new `python -m mrisr upscale` process with all defaults "
            "(reading, model, upscaling, data consistency, writing the `.nii.gz`, the "
            "disagreement map and the sidecar); *end to end, float32*: the same with "
            "`--precision float32`; *in memory*: `upscale_volume` alone (default "
            "precision); *cubic*: the same command with `--model cubic`.",
            "",
            f"Native bfloat16 on this CPU (what `--precision auto` runs): "
            f"{'yes' if cpu_has_native_bfloat16() else 'no'}.",
            "",
            *lines,
            "",
            *notes,
            "",
            "Files written:",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse options, measure, print the table and write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each figure (default 3)")
    parser.add_argument("--quick", action="store_true", help="one run of each figure")
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=("256x64", "flair"),
        default=["256x64", "flair"],
        help="which scans (default both)",
    )
    parser.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        help="markdown file to write, or - for none (default docs/end_to_end.md)",
    )
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="mrisr-e2e-") as temporary:
        folder = Path(temporary)
        cases = []
        if "256x64" in args.cases:
            cases.append(plan_case("256x256x64, 1x1x4 mm, 4x", make_256x64(folder)))
        if "flair" in args.cases:
            cases.append(plan_case("512x512x32 FLAIR, 0.43x0.43x4.4 mm", FLAIR))
        rows = measure(cases, runs, folder)
        section = table(rows, cases, runs) + "\n".join(output_sizes(cases, folder)) + "\n"
    print()
    print(section)
    if args.output != "-":
        Path(args.output).write_text("# End-to-end speed\n\n" + section.split("\n", 2)[2])
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
