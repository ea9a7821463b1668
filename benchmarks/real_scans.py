"""Regenerate docs/real_scans.md: the default model on real thick-slice scans, before and after.

Real thick-slice scans have no isotropic truth, so this shows pictures and
one no-reference check. Each scan in ../shared/data/thick/ is upscaled along
its thick axis by cubic B-spline interpolation and by the bundled model
``mrisr upscale`` picks for its isotropic factor (or ``--model``, at the
largest factor it covers where the isotropic one lies beyond its range). The figure shows the centre planes that
contain the thick axis: the input on the fine grid (nearest neighbour), cubic,
mrisr. The check: each result's thick slices are simulated again (a box
profile of the header's slice thickness) and compared with the input; a
faithful result reproduces its input (higher PSNR is better), without and
with the default data-consistency projection and range clip.

Usage::

    python benchmarks/real_scans.py            # writes docs/real_scans.md and docs/images/
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
THICK = REPO.parent / "shared" / "data" / "thick"
SCANS = (
    ("spine_t2star_7.5mm.nii.gz", "T2* cervical spine, 0.5 x 0.5 x 7.5 mm"),
    (
        "brain_pd_axial_7mm.nii.gz",
        "PD FSE axial brain; its DICOM series says 5 mm slices with 2 mm gaps, which this "
        "NIfTI conversion does not record, so its slices are taken as 7.07 mm thick",
    ),
    (
        "brain_flair_axial_4.4mm.nii.gz",
        "T2 FLAIR axial brain, 0.43 x 0.43 x 4.4 mm, fat-suppressed and mostly dark: 3.6 % of "
        "its voxels are non-zero, so the figure shows a few bright structures",
    ),
)


def resimulation_psnr(result, scan, plan, thickness_mm: float) -> float:
    """PSNR (dB) of the result's re-simulated thick slices against the input, on its range."""
    from mrisr.metrics import psnr
    from mrisr.simulate import apply_along_axis, slice_profile_matrix

    width = thickness_mm / plan.spacing_out[plan.axis]
    forward = slice_profile_matrix(plan.n_out, plan.n_in, thickness=width)
    again = apply_along_axis(forward, np.asarray(result.data, np.float64), plan.axis)
    truth = np.asarray(scan.data, np.float64)
    return psnr(again, truth, data_range=float(np.ptp(truth)))


def figure(path: Path, scan, results: dict, plan, title: str) -> None:
    """Planes containing the thick axis, radiological display: input (nearest), results, disagreement.

    Each plane is the slice holding the most signal (so a scan that is mostly
    background still shows its content); one grey window for all panels, from
    the input's 99.5th percentile of voxels above 1 % of its maximum. The last
    column is mrisr's disagreement map on its own colour scale (intensity units).
    """
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mrisr.figures import PLANES, DisplayGrid, label_edges, nearest_on_grid

    grid = DisplayGrid(plan.affine_out, np.asarray(plan.spacing_out))
    shown = {"input (thick)": nearest_on_grid(np.asarray(scan.data), plan.axis, plan.n_out)}
    shown.update({name: np.asarray(v.data) for name, v in results.items()})
    spread = results["mrisr"].meta.get("disagreement")
    if spread is not None:
        shown["mrisr disagreement"] = np.asarray(spread.data)
    data_in = np.asarray(scan.data, np.float64)
    low = float(data_in.min())
    high = float(np.percentile(data_in[data_in > low + 0.01 * np.ptp(data_in)], 99.5))
    thick = grid.ras_axis[plan.axis]
    planes = [(name, normal) for name, normal in PLANES if normal != thick]
    ras = {name: grid.to_ras(data) for name, data in shown.items()}
    reference = ras["input (thick)"]
    # Each row as tall as its planes are in mm, for panels 3.2 inches wide.
    heights = []
    for _, normal in planes:
        cols, rows = (a for a in range(3) if a != normal)
        extent = reference.shape[rows] * grid.spacing[rows]
        heights.append(3.2 * extent / (reference.shape[cols] * grid.spacing[cols]))
    fig = Figure(figsize=(3.2 * len(shown), sum(heights) + 1.6), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(
        len(planes), len(shown), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for row, (plane_name, normal) in enumerate(planes):
        others = tuple(a for a in range(3) if a != normal)
        index = int(np.argmax(np.abs(reference).sum(axis=others)))
        for column, (name, data) in enumerate(ras.items()):
            ax = axes[row, column]
            is_map = name.endswith("disagreement")
            image = ax.imshow(
                grid.plane(data, normal, index),
                cmap="magma" if is_map else "gray",
                vmin=0 if is_map else low,
                vmax=float(np.percentile(data, 99.9)) if is_map else high,
                origin="upper",
                aspect=grid.aspect(normal),
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            label_edges(ax, plane_name, fontsize=9)
            if row == 0:
                ax.set_title(name, fontsize=10)
            if column == 0:
                ax.set_ylabel(f"{plane_name} (slice {index})", fontsize=9)
            if is_map and row == len(planes) - 1:
                bar = fig.colorbar(image, ax=axes[:, column], location="bottom", shrink=0.9)
                bar.set_label("spread between passes (intensity)", fontsize=8)
    fig.suptitle("\n".join(textwrap.wrap(title, width=int(40 * len(shown)))), fontsize=10)
    fig.savefig(path, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=THICK)
    parser.add_argument("--model", default=None, help="model (default: the bundled default)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "real_scans.md")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()

    import torch

    from mrisr.consistency import slice_thickness
    from mrisr.interpolation import CubicSliceModel
    from mrisr.io import load_volume
    from mrisr.models import load_slice_model
    from mrisr.upscale import plan_upscale, upscale_volume

    if args.threads:
        torch.set_num_threads(args.threads)
    images = args.out.parent / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, sections, used = [], [], []
    for name, what in SCANS:
        scan = load_volume(args.data / name)
        isotropic = plan_upscale(scan)
        # As `mrisr upscale` with no options: the default model for this factor.
        model = load_slice_model(
            args.model, factor=isotropic.factor, device="cpu", threads=args.threads
        )
        used.append(model.name)
        high = model.factor_range[1] if model.factor_range else np.inf
        factor = min(isotropic.factor, high)
        plan = plan_upscale(scan, factor=factor)
        thickness = slice_thickness(scan, plan)["slice_thickness_mm"]
        results, seconds, fidelity, negative, residual = {}, {}, {}, {}, {}
        for label, method in (("cubic", CubicSliceModel()), ("mrisr", model)):
            start = time.perf_counter()
            raw = upscale_volume(
                scan,
                method,
                factor=factor,
                consistency=False,
                clip_range=False,
                disagreement=False,
            )
            results[label] = upscale_volume(scan, method, factor=factor)  # the default
            seconds[label] = time.perf_counter() - start
            fidelity[label] = (
                resimulation_psnr(raw, scan, plan, thickness),
                resimulation_psnr(results[label], scan, plan, thickness),
            )
            faithful = results[label].meta["upscale"]["faithfulness"]
            negative[label] = (
                float(np.mean(raw.data < 0)),
                float(np.mean(results[label].data < 0)),
            )
            residual[label] = (faithful["residual_before"], faithful["residual_after"])
        stem = name.removesuffix(".nii.gz")
        picture = images / f"real_{stem}.png"
        figure(
            picture, scan, results, plan, f"{name}: {what}; {factor:.3g}x along axis {plan.axis}"
        )
        spacing = " x ".join(f"{s:.3g}" for s in plan.spacing_in)
        out_spacing = " x ".join(f"{s:.3g}" for s in plan.spacing_out)
        rows.append(
            f"| {name} | {model.name} | {spacing} | {thickness:.3g} | {isotropic.factor:.3g} | "
            f"{factor:.3g} | "
            f"{out_spacing} | {fidelity['cubic'][0]:.2f} / {fidelity['cubic'][1]:.2f} | "
            f"{fidelity['mrisr'][0]:.2f} / {fidelity['mrisr'][1]:.2f} | "
            f"{residual['mrisr'][0]:.1e} / {residual['mrisr'][1]:.1e} | "
            f"{100 * negative['mrisr'][0]:.1f} / {100 * negative['mrisr'][1]:.1f} |"
        )
        sections += [f"### {name}", "", what + ".", "", f"![{stem}](images/{picture.name})", ""]
        print(rows[-1], flush=True)

    lines = [
        "# Real thick-slice scans",
        "",
        "Regenerated by `python benchmarks/real_scans.py` (CPU, "
        f"{torch.get_num_threads()} thread(s)) with the model(s) "
        f"{', '.join(f'`{m}`' for m in dict.fromkeys(used))}, as `mrisr upscale` picks them. These scans have "
        "no isotropic truth: the figures show planes that contain the thick axis "
        "(the slice holding the most signal), where thick slices look blocky. The scans "
        "come from ../shared/data/thick (see its README for sources and licences); none "
        "was used in training.",
        "",
        "Where the isotropic factor lies beyond the model's trained range, the largest "
        "factor it covers is used (as `mrisr upscale --factor` would need).",
        "",
        "Fidelity check: each result's thick slices are simulated again (box profile of "
        "the slice thickness) and compared with the input (PSNR in dB on the input's "
        "range; higher means the result explains its input better), without / with the "
        "default data-consistency projection and range clip (docs/faithfulness.md). The "
        "residual is the sidecar's: max |re-simulated - input| / input range, before / "
        "after. Negative voxels: % of the output below zero, without / with the range clip "
        "(the inputs have no negative values).",
        "",
        "The last column of each figure is the disagreement map written beside the output "
        "(`<stem>_sr_disagreement.nii.gz`): the spread between the two plane passes.",
        "",
        "| scan | model | voxel (mm) | thickness (mm) | isotropic factor | factor used "
        "| output voxel (mm) | re-sim. PSNR cubic | re-sim. PSNR mrisr | residual mrisr "
        "| negative voxels mrisr (%) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *sections,
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
