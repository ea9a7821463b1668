"""Would a cohort run go faster with two scans computing at once in one process?

`mrisr upscale` runs one scan's network at a time over all torch threads.
Two shards in parallel beat that (docs/cohort_benchmark.md), so this script
measures the in-process alternative before anyone builds it: the same scans
(made as in ``benchmarks/cohort.py``) through
:func:`mrisr.upscale.upscale_volume` with the bundled model,

* ``one at a time``: one scan after another, ``torch.set_num_threads(T)``;
* ``T at once``: T Python threads, each upscaling its share of the scans,
  ``torch.set_num_threads(1)`` (the network's convolutions release the GIL);

plus one scan on one thread, to show how the network scales over T threads.
Reading and writing files are left out: only the computing is compared. The
modes alternate round by round so that other work on the machine slows both.
Run from the repository root::

    python benchmarks/cohort_concurrency.py             # 4 scans, 2 rounds, T = CPU count
    python benchmarks/cohort_concurrency.py --scans 6 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cohort import FACTOR, make_scans  # noqa: E402  (the cohort benchmark's scans)


def one_at_a_time(volumes: list, model, threads: int) -> float:
    import torch

    from mrisr.upscale import upscale_volume

    torch.set_num_threads(threads)
    start = time.perf_counter()
    for volume in volumes:
        upscale_volume(volume, model)
    return time.perf_counter() - start


def at_once(volumes: list, model, threads: int) -> float:
    import torch

    from mrisr.upscale import upscale_volume

    torch.set_num_threads(1)
    errors: list[BaseException] = []

    def work(share: list) -> None:
        try:
            for volume in share:
                upscale_volume(volume, model)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(volumes[k::threads],)) for k in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    from mrisr.io import load_volume
    from mrisr.models import choose_model

    with tempfile.TemporaryDirectory() as folder:
        volumes = [load_volume(path) for path in make_scans(Path(folder), args.scans)]
    model = choose_model(None, FACTOR)
    one_at_a_time(volumes[:1], model, args.threads)  # warm-up: first calls are slower
    modes = {
        "one at a time": one_at_a_time,
        f"{args.threads} at once": at_once,
    }
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_index in range(args.rounds):
        for mode, runner in modes.items():
            seconds[mode].append(runner(volumes, model, args.threads) / len(volumes))
            print(f"round {round_index + 1} {mode}: {seconds[mode][-1]:.2f} s per scan", flush=True)
    single = one_at_a_time(volumes[:1], model, 1)
    base = statistics.median(seconds["one at a time"])
    print()
    print(
        f"{len(volumes)} scans of 256 x 256 x 40 at {FACTOR:g}x, {args.threads} CPU threads, "
        f"median of {args.rounds} round(s)"
    )
    print()
    print("| mode | s per scan | speed-up over one at a time |")
    print("|---|---|---|")
    for mode, values in seconds.items():
        median = statistics.median(values)
        print(
            f"| {mode} ({'1 thread each' if 'once' in mode else f'{args.threads} threads'}) "
            f"| {median:.2f} | {base / median:.2f}x |"
        )
    print(f"| one scan on 1 thread | {single:.2f} | {base / single:.2f}x |")
    print()
    print(f"The network on {args.threads} threads runs {single / base:.2f}x as fast as on one.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
