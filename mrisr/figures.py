"""Figures a radiologist reads at a glance: named planes, orientation letters, colour bars.

Whatever the file's voxel order, every plane is shown in the standard
radiological display: the volume is first reoriented to RAS with
:mod:`nibabel.orientations` (``io_orientation`` of the affine, the nearest
axes for oblique scans), then axial and coronal planes show the patient's
right on the viewer's left, axial with anterior at the top, coronal and
sagittal with superior at the top, sagittal with anterior on the left.
Orientation letters sit on each panel's edges and each row is named
(sagittal, coronal, axial). Drawn with matplotlib's Agg canvas (no window,
no global pyplot state) and written through :func:`mrisr.io.files.write_atomic`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from mrisr.errors import OutputError
from mrisr.io.files import check_output, write_atomic

if TYPE_CHECKING:
    from mrisr.evaluation import EvaluationResult

#: Rows of the figures: (name, RAS axis normal to the plane).
PLANES = (("sagittal", 0), ("coronal", 1), ("axial", 2))
#: Letters on the (left, right, top, bottom) edges of each plane, radiological display.
EDGE_LETTERS = {
    "sagittal": ("A", "P", "S", "I"),
    "coronal": ("R", "L", "S", "I"),
    "axial": ("R", "L", "A", "P"),
}
#: The anatomical direction of each RAS axis, for captions.
RAS_DIRECTIONS = ("left-right", "posterior-anterior", "inferior-superior")


def nearest_on_grid(thick: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Show thick slices on the fine grid: each fine slice copies the thick slice it lies in.

    Args:
        thick: (X, Y, Z) thick-slice voxels with ``n_in`` slices along ``axis``.
        axis: the thick axis.
        n_out: fine slices along ``axis``.

    Returns:
        A new array with ``n_out`` slices along ``axis``; fine slice ``i``
        (centre at ``(i + 0.5) / n_out`` of the field of view) copies thick
        slice ``floor((i + 0.5) * n_in / n_out)``.
    """
    n_in = thick.shape[axis]
    source = np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(int)
    return np.take(thick, np.minimum(source, n_in - 1), axis=axis)


class DisplayGrid:
    """How an (X, Y, Z) array on ``affine`` maps to RAS display order.

    Args:
        affine: (4, 4) voxel-to-world matrix (RAS+, mm).
        spacing: (3,) voxel sizes in mm along the array axes.
    """

    def __init__(self, affine: np.ndarray, spacing: np.ndarray) -> None:
        ornt = io_orientation(np.asarray(affine, np.float64))
        self.transform = ornt_transform(ornt, axcodes2ornt("RAS"))
        #: RAS axis of each array axis.
        self.ras_axis = [int(a) for a in ornt[:, 0]]
        self.spacing = np.empty(3)
        for array_axis, ras in enumerate(self.ras_axis):
            self.spacing[ras] = float(spacing[array_axis])

    def to_ras(self, data: np.ndarray) -> np.ndarray:
        """The array reordered and flipped so its axes run L->R, P->A, I->S."""
        return apply_orientation(np.asarray(data), self.transform)

    def plane(self, ras_data: np.ndarray, normal: int, index: int) -> np.ndarray:
        """The 2D plane through ``index`` along RAS axis ``normal``, for imshow(origin="upper").

        Rows run superior to inferior (anterior to posterior for axial),
        columns from the patient's right (anterior, sagittal) to left.
        """
        plane = np.take(ras_data, index, axis=normal)
        return plane.T[::-1, ::-1]

    def aspect(self, normal: int) -> float:
        """imshow aspect of a plane: its row height over its column width, in mm."""
        cols, rows = (a for a in range(3) if a != normal)  # see :meth:`plane`: transposed
        return float(self.spacing[rows] / self.spacing[cols])


def label_edges(ax: Any, plane: str, fontsize: float = 7) -> None:
    """Orientation letters on the four edges of an image panel."""
    left, right, top, bottom = EDGE_LETTERS[plane]
    style = {
        "color": "yellow",
        "fontsize": fontsize,
        "fontweight": "bold",
        "transform": ax.transAxes,
    }
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)


def check_figure_path(path: str | Path, *, overwrite: bool = False) -> None:
    """Refuse a figure path whose folder is missing, or that exists without ``overwrite``.

    Called before evaluating, so that a bad path fails before minutes of work.

    Raises:
        OutputError: the folder is missing, the path is a folder or exists
            (without ``overwrite``), or it does not end in .png.
    """
    path = Path(path)
    check_output(path, overwrite=overwrite)
    if path.suffix.lower() != ".png":
        raise OutputError(
            f"has the extension {path.suffix or '(none)'!r}",
            path=path,
            expected="a .png file",
            fix="name the figure e.g. evaluation.png",
        )


def save_figure(
    path: str | Path,
    result: EvaluationResult,
    *,
    overwrite: bool = False,
    error_fraction: float = 0.25,
    dpi: int = 100,
) -> Path:
    """Write a PNG of the centre planes: input, each method, truth, each |error|, each disagreement.

    Rows: sagittal, coronal and axial planes through the centre, in the
    radiological display orientation (see the module docstring), with
    orientation letters. Columns: the thick input on the fine grid by nearest
    neighbour (its blockiness visible), each method's result titled with its
    PSNR, the truth, ``|result - truth|`` per method, and the disagreement map
    of each method whose two planes disagree at all (cubic interpolation gives
    the same answer in both planes). Images share one grey window (the truth's
    minimum to minimum + ``L``); error and disagreement maps share one colour
    scale (0 to ``error_fraction * L``), with a colour bar in intensity units.

    Args:
        path: output PNG file.
        result: an :class:`mrisr.evaluation.EvaluationResult`.
        overwrite: replace an existing file.
        error_fraction: top of the error colour scale, as a fraction of ``L``.
        dpi: resolution; each panel is 2.2 inches wide.

    Returns:
        The output path.

    Raises:
        OutputError: the file exists (without ``overwrite``), its folder is
            missing, or it cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mrisr.evaluation import caption

    path = Path(path)
    check_figure_path(path, overwrite=overwrite)
    truth = np.asarray(result.truth.data, np.float64)
    grid = DisplayGrid(result.truth.affine, result.truth.spacing)
    low, top = float(truth.min()), float(truth.min()) + result.data_range
    thick_shown = nearest_on_grid(
        np.asarray(result.thick.data), result.axis, truth.shape[result.axis]
    )
    panels = [(f"input ({result.factor:g}x thick)", thick_shown, "image")]
    for method, volume in result.results.items():
        panels.append(
            (f"{method}\nPSNR {result.metrics[method]['psnr']:.2f} dB", volume.data, "image")
        )
    panels.append(("truth", truth, "image"))
    for method, volume in result.results.items():
        panels.append(
            (f"|{method} - truth|", np.abs(np.asarray(volume.data, np.float64) - truth), "error")
        )
    for method, volume in result.results.items():
        spread = volume.meta.get("disagreement")
        if spread is not None and float(np.max(spread.data)) > 0:
            panels.append((f"{method}\ndisagreement", spread.data, "error"))

    figure = Figure(figsize=(2.2 * len(panels), 2.2 * 3 + 1.4), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(3, len(panels), squeeze=False)
    thick_ras = grid.ras_axis[result.axis]
    for column, (title, data, kind) in enumerate(panels):
        ras = grid.to_ras(data)
        for row, (plane, normal) in enumerate(PLANES):
            ax = axes[row, column]
            image = ax.imshow(
                grid.plane(ras, normal, ras.shape[normal] // 2),
                cmap="gray" if kind == "image" else "magma",
                vmin=low if kind == "image" else 0.0,
                vmax=top if kind == "image" else error_fraction * result.data_range,
                origin="upper",
                aspect=grid.aspect(normal),
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            label_edges(ax, plane)
            if row == 0:
                ax.set_title(title, fontsize=8)
            if column == 0:
                ax.set_ylabel(
                    plane + (" (contains thick axis)" if normal != thick_ras else ""), fontsize=8
                )
        if kind == "error":
            bar = figure.colorbar(image, ax=axes[:, column], location="bottom", shrink=0.9)
            bar.ax.tick_params(labelsize=7)
            bar.set_label("intensity", fontsize=7)
    direction = RAS_DIRECTIONS[thick_ras]
    text = f"thick along array axis {result.axis} ({direction}); " + caption(result)
    figure.suptitle("\n".join(textwrap.wrap(text, width=int(22 * len(panels)))), fontsize=8)
    write_atomic(
        path, lambda temporary: figure.savefig(temporary, format="png"), overwrite=overwrite
    )
    return path
