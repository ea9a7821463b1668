"""How much does mrisr's pipeline cost over plain cubic interpolation?

Builds one 256 x 256 x 64 thick-slice volume and upscales it 4x along its
thick axis with the cubic model, timing:

* ``scipy.ndimage.zoom(data, (1, 1, 4), order=3, grid_mode=True,
  mode="reflect")`` on the voxels in memory: the reference;
* the same with loading and saving the .nii.gz (an end-to-end script);
* ``upscale_volume`` in memory, and its stages ``load_volume`` and ``save_volume``;
* ``upscale_file`` in this process (load, upscale, save, sidecar);
* ``mrisr upscale --model cubic`` as a subprocess (interpreter start, imports,
  the same work).

Each is run once untimed (traced for peak memory: tracemalloc in process,
``ru_maxrss`` for the subprocess), then ``--repeats`` times; the table shows
min and median seconds and the ratio of each min to scipy's. The target is a
ratio below 1.5 for ``upscale_file``.

The volume: the central 64 axial slices of the held-out IXI002 T2
(``../shared/data/train/ixi002_t2.nii.gz``, 256 x 256 x 130 at 0.94 x 0.94 x
1.25 mm), labelled as 5 mm slices so that it looks like the thick scans users
bring; a smooth synthetic volume of the same size when the shared data is
absent. Run from the repository root::

    python benchmarks/bench_cubic.py [--repeats 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mrisr.interpolation import CubicSliceModel
from mrisr.io import load_volume, save_volume
from mrisr.upscale import upscale_file, upscale_volume

SHAPE = (256, 256, 64)
FACTOR = 4
AXIS = 2
SHARED_DATA = Path(
    os.environ.get(
        "MRISR_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)


def build_input(folder: Path) -> tuple[Path, str]:
    """Write the benchmark volume as int16 .nii.gz; return (path, where it came from)."""
    source = SHARED_DATA / "train" / "ixi002_t2.nii.gz"
    if source.is_file():
        image = nib.load(source)
        data = np.asanyarray(image.dataobj)
        start = (data.shape[2] - SHAPE[2]) // 2
        data = data[: SHAPE[0], : SHAPE[1], start : start + SHAPE[2]]
        affine = image.affine.copy()
        affine[:3, 3] += affine[:3, 2] * start  # keep the kept slices in place...
        affine[:3, 2] *= 5.0 / np.linalg.norm(affine[:3, 2])  # ...then call them 5 mm thick
        origin = f"{source.name}, slices {start}-{start + SHAPE[2] - 1}"
    else:
        rng = np.random.default_rng(0)
        data = ndimage.gaussian_filter(rng.random(SHAPE), (3, 3, 1)) * 4000
        affine = np.diag([0.9375, 0.9375, 5.0, 1.0])
        origin = "synthetic (shared data not found)"
    path = folder / "thick.nii.gz"
    image = nib.Nifti1Image(np.asarray(data, np.int16), affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    nib.save(image, path)
    return path, origin


def timed(run: Callable[[], object], repeats: int) -> tuple[list[float], float]:
    """(seconds of each timed run, peak traced MiB of one untimed warm-up run)."""
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times, peak


def timed_subprocess(command: list[str], repeats: int) -> tuple[list[float], float]:
    """(wall seconds of each timed run, max resident MiB of the warm-up run's process)."""

    def once() -> tuple[float, float]:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all).
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()}")
        process.stderr.close()
        return seconds, usage.ru_maxrss / 1024  # kB on Linux

    _, peak = once()
    return [once()[0] for _ in range(repeats)], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (default 3)")
    parser.add_argument(
        "--profile", action="store_true", help="also print cProfile's top calls of upscale_file"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mrisr-bench-") as tmp:
        folder = Path(tmp)
        path, origin = build_input(folder)
        volume = load_volume(path)
        data = volume.data
        model = CubicSliceModel()
        out_scipy, out_file, out_cli = (
            folder / f"{name}.nii.gz" for name in ("scipy", "file", "cli")
        )
        out_stage = folder / "stage.nii.gz"
        upscaled = upscale_volume(volume, model, factor=FACTOR, axis=AXIS)

        def scipy_zoom() -> np.ndarray:
            return ndimage.zoom(data, (1, 1, FACTOR), order=3, grid_mode=True, mode="reflect")

        def scipy_end_to_end() -> None:
            image = nib.load(path)
            voxels = np.asarray(image.dataobj, np.float32)
            zoomed = ndimage.zoom(voxels, (1, 1, FACTOR), order=3, grid_mode=True, mode="reflect")
            nib.save(nib.Nifti1Image(zoomed, image.affine), out_scipy)

        rows: list[tuple[str, Callable[[], tuple[list[float], float]], str]] = [
            ("scipy zoom (in memory)", lambda: timed(scipy_zoom, args.repeats), "traced"),
            ("scipy load+zoom+save", lambda: timed(scipy_end_to_end, args.repeats), "traced"),
            (
                "upscale_volume (in memory)",
                lambda: timed(
                    lambda: upscale_volume(volume, model, factor=FACTOR, axis=AXIS), args.repeats
                ),
                "traced",
            ),
            (
                "  stage: load_volume",
                lambda: timed(lambda: load_volume(path), args.repeats),
                "traced",
            ),
            (
                "  stage: save_volume .nii.gz",
                lambda: timed(
                    lambda: save_volume(upscaled, out_stage, overwrite=True), args.repeats
                ),
                "traced",
            ),
            (
                "upscale_file (in process)",
                lambda: timed(
                    lambda: upscale_file(
                        path, out_file, model=model, factor=FACTOR, axis=AXIS, overwrite=True
                    ),
                    args.repeats,
                ),
                "traced",
            ),
            (
                "mrisr upscale (subprocess)",
                lambda: timed_subprocess(
                    [
                        sys.executable,
                        "-m",
                        "mrisr",
                        "upscale",
                        str(path),
                        "-o",
                        str(out_cli),
                        "--model",
                        "cubic",
                        "--factor",
                        str(FACTOR),
                        "--axis",
                        str(AXIS),
                        "--overwrite",
                    ],
                    args.repeats,
                ),
                "maxrss",
            ),
            (
                "  of which: start-up (mrisr --help)",
                lambda: timed_subprocess([sys.executable, "-m", "mrisr", "--help"], args.repeats),
                "maxrss",
            ),
        ]
        results = []
        for name, run, memory_kind in rows:
            print(f"timing {name.strip()} ...", file=sys.stderr, flush=True)
            times, peak = run()
            results.append((name, times, peak, memory_kind))

        # Same numbers from both: the pipeline is the interpolation, not an approximation of it.
        difference = np.abs(upscaled.data - scipy_zoom()).max() / np.abs(data).max()

        reference = min(results[0][1])
        print()
        print(f"input: {origin}; {'x'.join(map(str, SHAPE))} -> {FACTOR}x along axis {AXIS}")
        print(f"cpu: {os.cpu_count()} logical cores; {args.repeats} timed runs per row")
        print(f"max |upscale_volume - scipy zoom| / max |input| = {difference:.1e}")
        print()
        header = f"| {'what':<36} | {'min s':>7} | {'median s':>8} | {'ratio/scipy':>11} | {'peak MiB':>14} |"
        print(header)
        print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
        for name, times, peak, memory_kind in results:
            ratio = min(times) / reference
            print(
                f"| {name:<36} | {min(times):7.3f} | {statistics.median(times):8.3f} | "
                f"{ratio:11.2f} | {peak:7.0f} {memory_kind:<6} |"
            )
        by_name = {name.strip(): min(times) for name, times, _, _ in results}
        target = by_name["upscale_file (in process)"] / reference
        verdict = "meets" if target < 1.5 else "MISSES"
        print(f"\nupscale_file / scipy zoom = {target:.2f}: {verdict} the target ratio < 1.5")

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            upscale_file(path, out_file, model=model, factor=FACTOR, axis=AXIS, overwrite=True)
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(20)
            print(text.getvalue())


if __name__ == "__main__":
    main()
