"""Cost of RRDB generator sizes on this CPU: parameters and seconds per forward pass.

Each size of ESRGAN's RRDB net (mrisr.networks.rrdbnet.RRDBNet) runs one
untimed and three timed forward passes on 16 slices of 64 x 256 at 4x (one
batch of ``mrisr upscale``'s default size for a 256-wide scan with 64 thick
slices); ``fast`` is the 2-block row. A 256 x 256 x 64 scan at 4x needs 32
such batches (16 per plane, two planes), printed as the last column.

Usage::

    python benchmarks/capacity.py [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mrisr.networks.complexity import count_parameters
from mrisr.networks.rrdbnet import RRDBNet

BASE = dict(num_feat=32, num_block=2, num_grow_ch=16, num_hr_feat=16, col_unshuffle=2)
SIZES = {
    "1 block of 32": dict(BASE, num_block=1),
    "2 blocks of 24": dict(BASE, num_feat=24, num_grow_ch=12),
    "2 blocks of 32 (fast)": BASE,
    "3 blocks of 32": dict(BASE, num_block=3),
    "2 blocks of 48": dict(BASE, num_feat=48, num_grow_ch=24),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = torch.randn(16, 1, 64, 256)
    print(
        "| size | parameters | s per batch (median of 3) | x fast | s per 256x256x64 scan at 4x |"
    )
    print("|---|---|---|---|---|")
    rows = {}
    for name, settings in SIZES.items():
        net = RRDBNet(upsample=4, **settings).eval()
        times = []
        with torch.no_grad():
            for run in range(4):
                start = time.perf_counter()
                net(batch, 256)
                if run:
                    times.append(time.perf_counter() - start)
        rows[name] = (count_parameters(net), statistics.median(times))
    base = rows["2 blocks of 32 (fast)"][1]
    for name, (parameters, seconds) in rows.items():
        print(
            f"| {name} | {parameters:,} | {seconds:.2f} | {seconds / base:.2f} | {32 * seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
