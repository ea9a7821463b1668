"""Other maps than the disagreement map: does any track the true error better?

The disagreement map (spread of the two plane passes, pooled over a one-voxel
Gaussian neighbourhood, :func:`mrisr.disagreement.pooled_spread`) reaches a
Spearman rank correlation with the true absolute error of about 0.47 on the
held-out brains but only about 0.23 on the T1w spine fixture
(docs/faithfulness.md). This script measures parameter-free candidates
computed from the same thick scan and the same output, on the same held-out
volumes (central crops, box profile, contiguous slices, 2x and 4x along each
axis), so a better one would show before it is built:

* ``map``: the disagreement map as shipped (pooled spread, sigma 1 voxel);
* ``spread, sigma 2``: the same spread pooled over a wider neighbourhood;
* ``through-plane gradient``: the output's gradient along the thick axis,
  pooled like the map (error concentrates on edges that cross the slices);
* ``local std``: the output's deviation from its own Gaussian-smoothed copy,
  pooled (texture of any orientation);
* ``network minus cubic``: how far the network moved from cubic interpolation,
  pooled (where it invents detail);
* ``map x local std``: the geometric mean of the map and the local std;
* ``reference``: the root-mean-square true error of each voxel's neighbours,
  which no map computed from the thick scan has (see faithfulness.py).

Nothing is fitted: every candidate is a fixed function of the output, the
passes and cubic, so the held-out volumes only measure.

Usage::

    python benchmarks/map_candidates.py                       # prints the table
    python benchmarks/map_candidates.py --markdown docs/map_candidates.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faithfulness import VOLUMES, _neighbours_error, _spearman  # noqa: E402

FACTORS = (2.0, 4.0)
CANDIDATES = (
    "map",
    "spread, sigma 2",
    "through-plane gradient",
    "local std",
    "network minus cubic",
    "map x local std",
    "reference",
)


def _pooled(values: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """sqrt(G_sigma * values^2): the local root-mean-square, as the map pools."""
    from scipy.ndimage import gaussian_filter

    squared = np.square(values.astype(np.float32))
    return np.sqrt(np.maximum(gaussian_filter(squared, sigma, mode="nearest", truncate=3.0), 0))


def candidates(output, passes, cubic, shipped_map, error, axis) -> dict[str, np.ndarray]:
    """Every candidate map for one case, on the output's grid."""
    from scipy.ndimage import gaussian_filter

    from mrisr.disagreement import spread

    local_std = _pooled(output - gaussian_filter(output, 1.0, mode="nearest"))
    return {
        "map": shipped_map,
        "spread, sigma 2": _pooled(spread(passes), 2.0),
        "through-plane gradient": _pooled(np.gradient(output, axis=axis)),
        "local std": local_std,
        "network minus cubic": _pooled(output - cubic),
        "map x local std": np.sqrt(shipped_map * local_std),
        "reference": _neighbours_error(error),
    }


class _KeepPasses:
    """While active, upscale_volume's plane passes are kept (``["passes"]``)."""

    def __enter__(self) -> dict:
        import mrisr.upscale as upscale

        self.kept: dict = {}
        self.real = upscale.pooled_spread

        def pooled_and_kept(passes, *args, **kwargs):
            self.kept["passes"] = [np.asarray(p, np.float32) for p in passes]
            return self.real(passes, *args, **kwargs)

        upscale.pooled_spread = pooled_and_kept
        return self.kept

    def __exit__(self, *exc) -> None:
        import mrisr.upscale as upscale

        upscale.pooled_spread = self.real


def case(truth_full, axis: int, factor: float, network, cubic_model) -> dict[str, float]:
    """Rank correlation of each candidate with the default output's true error, one case."""
    from mrisr.evaluation import crop_to_whole_slices
    from mrisr.metrics import foreground_mask
    from mrisr.simulate import simulate_volume
    from mrisr.upscale import upscale_volume

    truth, _ = crop_to_whole_slices(truth_full, axis, factor)
    thick = simulate_volume(truth, axis, factor, profile="mean", gap_mm=0.0)
    mask = foreground_mask(truth.data)
    with _KeepPasses() as kept:
        result = upscale_volume(thick, network, factor=factor, axis=axis, force=True)
    cubic = upscale_volume(
        thick, cubic_model, factor=factor, axis=axis, force=True, consistency=False
    ).data.astype(np.float32)
    output = result.data.astype(np.float32)
    error = np.abs(output - np.asarray(truth.data, np.float32))
    maps = candidates(output, kept["passes"], cubic, result.meta["disagreement"].data, error, axis)
    return {name: _spearman(values[mask], error[mask]) for name, values in maps.items()}


def table(rows: list[dict]) -> str:
    """Mean (min) rho per volume and candidate, as markdown."""
    volumes = list(dict.fromkeys(r["volume"] for r in rows))
    lines = [
        "| candidate | " + " | ".join(volumes) + " |",
        "|---|" + "---:|" * len(volumes),
    ]
    for name in CANDIDATES:
        cells = []
        for volume in volumes:
            values = np.array([r[name] for r in rows if r["volume"] == volume])
            cells.append(f"{values.mean():.2f} ({values.min():.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from mrisr.evaluation import central_crop
    from mrisr.interpolation import CubicSliceModel
    from mrisr.io import load_volume
    from mrisr.models import load_slice_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crop", type=int, default=40, help="cube side of the crops (voxels)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    network = {f: load_slice_model(None, factor=f, device="cpu") for f in FACTORS}
    rows = []
    for volume, path in VOLUMES.items():
        if not path.exists():
            print(f"skipped {volume}: {path} not found")
            continue
        truth = central_crop(load_volume(path), args.crop)
        for factor in FACTORS:
            for axis in (0, 1, 2):
                rho = case(truth, axis, factor, network[factor], CubicSliceModel())
                rows.append({"volume": volume, "factor": factor, "axis": axis, **rho})
                print(
                    f"{volume} {factor}x axis {axis}: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in rho.items()),
                    flush=True,
                )
    text = table(rows)
    print(text)
    if args.markdown:
        args.markdown.write_text(
            PAGE.format(crop=args.crop, cases=len(rows) // max(1, len(VOLUMES)), table=text)
        )
        print(f"wrote {args.markdown}")


PAGE = """# Candidates for the disagreement map

Generated by `python benchmarks/map_candidates.py --crop {crop} --markdown
docs/map_candidates.md`: held-out volumes (central {crop}-voxel crops), thick
slices simulated with a box profile, contiguous, at 2x and 4x along each
axis ({cases} cases per volume), upscaled by the bundled default model with
the default post-processing. Each cell: Spearman rank correlation between the
candidate and the true absolute error over foreground voxels, mean over the
cases (lowest case in brackets). The candidates are described in the script's
docstring; none is fitted to these volumes. `reference` is what a map would
reach if it knew the true error of each voxel's neighbours.

{table}
"""


if __name__ == "__main__":
    main()
