"""Accuracy of slice-profile estimation on simulated thick-slice scans with known profiles.

Simulates thick slices with :func:`mrisr.simulate.simulate_volume` from real
thin-slice volumes (the spine fixtures and two brains of ../shared/data/train),
along each axis, at factors 3 and 5, with box ("mean") and Gaussian profiles
of FWHM 0.7 (a gap), 1.0 and 1.5 times the slice spacing, then estimates the
profile with :func:`mrisr.slice_profile.estimate_slice_profile` (with the
family given, and without) and prints truth against estimate.

    python benchmarks/slice_profile_estimation.py             # about 3 minutes on 2 cores
    python benchmarks/slice_profile_estimation.py --quick     # spine volumes only
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from mrisr.io import load_volume
from mrisr.simulate import simulate_volume
from mrisr.slice_profile import estimate_slice_profile, rms_width
from mrisr.volume import Volume

#: The shared real volumes; override with MRISR_SHARED_DATA (as the tests do).
DATA = Path(
    os.environ.get(
        "MRISR_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)

#: (file under ../shared/data, crop box) pairs: central crops keep the run short.
VOLUMES = {
    "spine_t1w": ("fixtures/spine_t1w_1mm.nii.gz", None),
    "spine_t2": ("fixtures/spine_t2_1mm.nii.gz", None),
    "ixi002_t2": ("train/ixi002_t2.nii.gz", (slice(48, 208), slice(48, 208), slice(15, 115))),
    "mr_gd_t1": ("train/mr_gd_t1.nii.gz", (slice(18, 158), slice(24, 164), slice(12, 132))),
}
PROFILES = ("mean", "gaussian")
RATIOS = (0.7, 1.0, 1.5)


def load(name: str) -> Volume:
    """The named volume, cropped."""
    path, box = VOLUMES[name]
    volume = load_volume(DATA / path)
    return volume.crop(box) if box is not None else volume


def run(names: list[str], factors: tuple[float, ...]) -> list[dict]:
    """Estimate every case; one row per case."""
    rows = []
    for name in names:
        volume = load(name)
        for axis in range(3):
            for factor in factors:
                for profile in PROFILES:
                    for ratio in RATIOS:
                        thick = simulate_volume(volume, axis, factor, profile=profile)
                        spacing = float(thick.meta["slice_spacing_mm"])
                        thick = simulate_volume(
                            volume, axis, factor, profile=profile, thickness_mm=ratio * spacing
                        )
                        start = time.perf_counter()
                        guess = estimate_slice_profile(thick, axis=axis)
                        seconds = time.perf_counter() - start
                        known = estimate_slice_profile(thick, axis=axis, profile=profile)
                        truth_rms = rms_width(profile, ratio * spacing)
                        rows.append(
                            {
                                "volume": name,
                                "axis": axis,
                                "factor": factor,
                                "profile": profile,
                                "ratio": ratio,
                                "guess": guess,
                                "known": known,
                                "error": known.fwhm_over_spacing / ratio - 1,
                                "rms_error": guess.rms_width_mm / truth_rms - 1,
                                "seconds": seconds,
                            }
                        )
    return rows


def print_table(rows: list[dict]) -> None:
    """Per-case rows, then summaries by true profile and FWHM ratio."""
    print("FWHM error: family given; RMS-width error and family: family estimated too.\n")
    print(
        "| volume | axis | factor | truth | FWHM (family given) | error | guess | RMS error | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        guess = row["guess"]
        print(
            f"| {row['volume']} | {row['axis']} | {row['factor']:g} | "
            f"{row['profile']} {row['ratio']:.2f} | {row['known'].fwhm_over_spacing:.2f} | "
            f"{100 * row['error']:+.0f} % | {guess.profile} {guess.fwhm_over_spacing:.2f} | "
            f"{100 * row['rms_error']:+.0f} % | {row['seconds']:.2f} |"
        )
    print()
    print(
        "| volume | cases | FWHM error median / 90th pct / max | RMS error median / max "
        "| family right |"
    )
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(r["volume"] for r in rows):
        for ratios in ((0.7,), (1.0, 1.5)):
            group = [r for r in rows if r["volume"] == name and r["ratio"] in ratios]
            errors = 100 * np.abs([r["error"] for r in group])
            rms = 100 * np.abs([r["rms_error"] for r in group])
            right = sum(r["guess"].profile == r["profile"] for r in group)
            label = "gap 0.7" if ratios == (0.7,) else "FWHM 1, 1.5"
            print(
                f"| {name} {label} | {len(group)} | {np.median(errors):.0f} / "
                f"{np.percentile(errors, 90):.0f} / {errors.max():.0f} % | "
                f"{np.median(rms):.0f} / {rms.max():.0f} % | {right}/{len(group)} |"
            )
    print(f"\nslowest estimate (both families): {max(r['seconds'] for r in rows):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="spine volumes, factor 4 only")
    args = parser.parse_args()
    names = ["spine_t1w", "spine_t2"] if args.quick else list(VOLUMES)
    factors = (4.0,) if args.quick else (3.0, 5.0)
    print_table(run(names, factors))


if __name__ == "__main__":
    main()
