"""How much does one process for many scans save over one process per scan?

Makes N thick-slice scans of 256 x 256 x 40 (4 mm slices, 1 x 1 mm in plane)
and upscales them with the command line three ways, interleaved round by
round so that a machine shared with other work slows all three alike:

* ``one call``: ``mrisr upscale s01 s02 ... -o DIR`` (model loaded once, the
  next scan read while this one computes);
* ``separate calls``: ``mrisr upscale sNN -o DIR/sNN_sr.nii.gz`` once per scan
  (a shell loop: interpreter start, torch import and model load every time);
* ``2 shards in parallel``: ``--shard 1/2`` and ``--shard 2/2`` as two
  processes at once, each with half the CPU threads (an array job on one node).

The table gives wall seconds, seconds per scan and the speed-up over separate
calls (target: one call at least 1.5x faster per scan). The scans: 160-slice
windows (a different one per scan) of the 1 mm FreeSurfer brain of the MNE
"sample" subject (``../shared/data/train/mne_sample_brain.mgz``, 256^3),
averaged into 4 mm slices with :func:`mrisr.simulate_volume`; a smooth
synthetic volume of the same size when the shared data is absent. Run from
the repository root::

    python benchmarks/cohort.py                       # 20 scans, the default model
    python benchmarks/cohort.py --scans 4 --rounds 1  # a quicker look
    python benchmarks/cohort.py --model cubic         # what the process overhead is alone
    python benchmarks/cohort.py --markdown docs/cohort_benchmark.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mrisr import Volume, load_volume, save_volume, simulate_volume

SHARED_DATA = Path(
    os.environ.get(
        "MRISR_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)
SOURCE = SHARED_DATA / "train" / "mne_sample_brain.mgz"
#: Thin slices per scan before averaging into 4 mm ones: 160 / 4 = 40.
THIN_SLICES, FACTOR = 160, 4
MODES = ("one call", "separate calls", "2 shards in parallel")


def make_scans(folder: Path, count: int) -> list[Path]:
    """``count`` scans of 256 x 256 x 40, each from another window of the source."""
    if SOURCE.exists():
        source = load_volume(SOURCE)
    else:  # a smooth volume of the same size, so that the script runs anywhere
        grid = np.mgrid[0:256, 0:256, 0:256].astype(np.float32) / 40.0
        data = np.sin(grid[0]) * np.cos(grid[1]) + np.sin(grid[2] * 1.3) + 2
        source = Volume(data.astype(np.float32), np.eye(4))
    paths = []
    spare = source.shape[2] - THIN_SLICES
    for index in range(count):
        start = (index * 7) % (spare + 1)
        window = source.crop((slice(0, 256), slice(0, 256), slice(start, start + THIN_SLICES)))
        thick = simulate_volume(window, 2, FACTOR)
        path = folder / f"s{index + 1:02d}.nii.gz"
        save_volume(thick, path)
        paths.append(path)
    return paths


def mrisr(*args: object, threads: int) -> list[str]:
    """The command line of ``mrisr ...`` run with this interpreter.

    ``--threads`` only for a network: mrisr refuses it with ``--model cubic``.
    """
    command = [sys.executable, "-m", "mrisr", *map(str, args)]
    return command if "cubic" in command else [*command, "--threads", str(threads)]


def quiet(command: list[str]) -> subprocess.Popen:
    """Start a command; its messages are shown only when it fails (exit code 3 included)."""
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    _, errors = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(process.args)} failed:\n{errors}")


def run_one_call(scans: list[Path], out: Path, model: list[str], threads: int) -> None:
    finish(quiet(mrisr("upscale", *scans, "-o", out, *model, threads=threads)))


def run_separate(scans: list[Path], out: Path, model: list[str], threads: int) -> None:
    out.mkdir()
    for scan in scans:
        target = out / scan.name.replace(".nii.gz", "_sr.nii.gz")
        finish(quiet(mrisr("upscale", scan, "-o", target, *model, threads=threads)))


def run_shards(scans: list[Path], out: Path, model: list[str], threads: int) -> None:
    half = max(1, threads // 2)
    shards = [
        quiet(mrisr("upscale", *scans, "-o", out, "--shard", f"{k}/2", *model, threads=half))
        for k in (1, 2)
    ]
    for shard in shards:
        finish(shard)


RUNNERS = {"one call": run_one_call, "separate calls": run_separate}
RUNNERS["2 shards in parallel"] = run_shards


def measure(scans: list[Path], work: Path, model: list[str], rounds: int) -> dict[str, list[float]]:
    """Wall seconds of each mode, ``rounds`` times, the modes interleaved within each round."""
    threads = os.cpu_count() or 1
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_index in range(rounds):
        for mode in MODES:
            out = work / f"{mode.replace(' ', '_')}_{round_index}"
            start = time.perf_counter()
            RUNNERS[mode](scans, out, model, threads)
            seconds[mode].append(time.perf_counter() - start)
            produced = len(list(out.glob("*_sr.nii.gz")))
            if produced != len(scans):
                raise RuntimeError(f"{mode}: {produced} outputs for {len(scans)} scans")
            shutil.rmtree(out)
            print(f"round {round_index + 1} {mode}: {seconds[mode][-1]:.1f} s", flush=True)
    return seconds


def table(seconds: dict[str, list[float]], count: int) -> str:
    separate = statistics.median(seconds["separate calls"]) / count
    rows = [
        "| mode | scans | wall s (median) | s per scan | speed-up over separate calls |",
        "|---|---|---|---|---|",
    ]
    for mode in MODES:
        wall = statistics.median(seconds[mode])
        rows.append(
            f"| {mode} | {count} | {wall:.1f} | {wall / count:.2f} | {separate / (wall / count):.2f}x |"
        )
    one, shards = (statistics.median(seconds[m]) for m in ("one call", "2 shards in parallel"))
    rows.append("")
    rows.append(f"2 shards in parallel against 1: {one / shards:.2f}x faster.")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=20, help="number of scans (default 20)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the three modes")
    parser.add_argument("--model", default=None, help="--model value; default the bundled one")
    parser.add_argument(
        "--markdown", type=Path, help="write the page (e.g. docs/cohort_benchmark.md)"
    )
    args = parser.parse_args()
    model = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory(prefix="mrisr-cohort-") as folder:
        work = Path(folder)
        (work / "scans").mkdir()
        scans = make_scans(work / "scans", args.scans)
        seconds = measure(scans, work, model, args.rounds)
    text = table(seconds, args.scans)
    print(text)
    if args.markdown:
        command = "python benchmarks/cohort.py " + " ".join(sys.argv[1:])
        page = (
            "# Cohorts: one process for many scans\n\n"
            f"Generated by `{command}` on {platform.machine()} with {os.cpu_count()} CPU "
            f"threads, CPU only, model: {args.model or 'bundled default'}; {args.rounds} "
            "round(s), the three modes interleaved. The machine may be shared with other "
            "work: compare the rows of one table, not tables of different runs.\n\n"
            f"{args.scans} scans of 256 x 256 x 40 (4 mm slices), each upscaled 4x to 256 x 256 x 160.\n\n"
            f"{text}\n"
        )
        args.markdown.write_text(page)


if __name__ == "__main__":
    main()
