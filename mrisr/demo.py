"""The demo: a real scan shipped with mrisr, made thick, upscaled by cubic and by mrisr.

The scan is a crop of a T2-weighted brain volume held out of the bundled
models' training (see ``mrisr/data/README.md``), so the numbers are honest.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mrisr.errors import OutputError
from mrisr.evaluation import EvaluationResult, evaluate, save_figure
from mrisr.interpolation import CubicSliceModel
from mrisr.io import load_volume, save_volume
from mrisr.io.files import check_folder_creatable, make_folder
from mrisr.upscale import SliceModel
from mrisr.volume import Volume

#: The shipped demo volume (112 x 128 x 40 voxels of 0.94 x 0.94 x 1.25 mm).
DEMO_VOLUME = "ixi002_t2_crop.nii.gz"


def demo_volume_path() -> Path:
    """Path of the shipped demo volume inside the installed package."""
    return Path(str(resources.files("mrisr") / "data" / DEMO_VOLUME))


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced.

    Attributes:
        evaluation: metrics and volumes of every method.
        figure: the PNG written (absolute path).
        volumes: the NIfTI files written (thick input, each result, truth; absolute paths).
    """

    evaluation: EvaluationResult
    figure: Path
    volumes: list[Path]


def run_demo(
    out_dir: str | Path,
    model: SliceModel,
    *,
    factor: float = 4.0,
    axis: int = 2,
    overwrite: bool = False,
) -> DemoResult:
    """Simulate a thick-slice scan from the demo volume, upscale it, measure, draw.

    Args:
        out_dir: folder for the figure and volumes (created; must be empty
            unless ``overwrite``).
        model: the network to show beside cubic interpolation.
        factor: thick-slice factor to simulate.
        axis: axis made thick (2 is axial for this scan).
        overwrite: allow replacing an earlier demo's files.

    Returns:
        The :class:`DemoResult`.

    Raises:
        OutputError: ``out_dir`` already holds files (without ``overwrite``).
        ConfigError: a factor outside the model's trained range (see
            :func:`mrisr.evaluation.evaluate`).
    """
    out = Path(out_dir)
    check_folder_creatable(out, what="demo folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(
            "already holds files", path=out, fix="pass --overwrite or another --out folder"
        )
    truth = load_volume(demo_volume_path())
    result = evaluate(
        truth,
        axis=axis,
        factor=factor,
        models={"cubic": CubicSliceModel(), "mrisr": model},
    )
    make_folder(out, what="demo folder")
    figure = save_figure(out / "demo.png", result, overwrite=overwrite)
    volumes = [
        _save(result.thick, out / f"thick_x{factor:g}.nii.gz", overwrite),
        *(_save(v, out / f"{name}.nii.gz", overwrite) for name, v in result.results.items()),
        _save(result.truth, out / "truth.nii.gz", overwrite),
    ]
    return DemoResult(evaluation=result, figure=Path(figure).absolute(), volumes=volumes)


def _save(volume: Volume, path: Path, overwrite: bool) -> Path:
    # The demo's volumes derive from the packaged file; never point back at it.
    return save_volume(Volume(volume.data, volume.affine, volume.header), path, overwrite=overwrite)
