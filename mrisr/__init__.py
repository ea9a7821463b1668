"""mrisr: super-resolution of thick-slice MRI into isotropic volumes.

The public API is what ``__all__`` lists; everything else may change.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("mrisr")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

from mrisr.errors import (
    CheckpointError,
    ConfigError,
    GeometryError,
    InputError,
    MrisrError,
    NotThickSliceError,
    OutputError,
)

#: Where each public name lives. Modules load on first access (PEP 562), so
#: ``import mrisr`` and ``mrisr --help`` stay fast and torch loads only when a
#: network, training or checkpoint name is used.
_PUBLIC_NAMES = {
    "TrainConfig": "mrisr.config",
    "load_config": "mrisr.config_file",
    "save_config": "mrisr.config_file",
    "EvaluationResult": "mrisr.evaluation",
    "evaluate": "mrisr.evaluation",
    "save_figure": "mrisr.figures",
    "fuse": "mrisr.fusion",
    "detect_thick_axis": "mrisr.geometry",
    "resampled_affine": "mrisr.geometry",
    "voxel_sizes": "mrisr.geometry",
    "Normalisation": "mrisr.intensity",
    "fit_normalisation": "mrisr.intensity",
    "CubicSliceModel": "mrisr.interpolation",
    "compare_volumes": "mrisr.metrics",
    "foreground_mask": "mrisr.metrics",
    "hfen": "mrisr.metrics",
    "nrmse": "mrisr.metrics",
    "psnr": "mrisr.metrics",
    "ssim": "mrisr.metrics",
    "simulate_thick_slices": "mrisr.simulate",
    "simulate_volume": "mrisr.simulate",
    "from_slice_stack": "mrisr.slices",
    "to_slice_stack": "mrisr.slices",
    "SliceModel": "mrisr.upscale",
    "UpscaleOptions": "mrisr.upscale",
    "UpscalePlan": "mrisr.upscale",
    "plan_upscale": "mrisr.upscale",
    "upscale_file": "mrisr.upscale",
    "upscale_volume": "mrisr.upscale",
    "upscale_many": "mrisr.cohort",
    "Volume": "mrisr.volume",
    "load_volume": "mrisr.io",
    "save_volume": "mrisr.io",
    "validate_volume": "mrisr.io",
    # These import torch (load_slice_model only for a network).
    "AdaptSettings": "mrisr.adapt",
    "AdaptationResult": "mrisr.adapt",
    "adapt_model": "mrisr.adapt",
    "GeneratorSliceModel": "mrisr.inference",
    "load_slice_model": "mrisr.models",
    "load_model": "mrisr.checkpoint",
    "save_model": "mrisr.checkpoint",
    "train": "mrisr.training",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC_NAMES:
        return getattr(import_module(_PUBLIC_NAMES[name]), name)
    raise AttributeError(f"module 'mrisr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "__version__",
    "AdaptSettings",
    "AdaptationResult",
    "CheckpointError",
    "ConfigError",
    "CubicSliceModel",
    "EvaluationResult",
    "GeneratorSliceModel",
    "GeometryError",
    "InputError",
    "MrisrError",
    "Normalisation",
    "NotThickSliceError",
    "OutputError",
    "SliceModel",
    "TrainConfig",
    "UpscaleOptions",
    "UpscalePlan",
    "Volume",
    "adapt_model",
    "compare_volumes",
    "detect_thick_axis",
    "evaluate",
    "fit_normalisation",
    "foreground_mask",
    "from_slice_stack",
    "fuse",
    "hfen",
    "load_config",
    "load_model",
    "load_slice_model",
    "load_volume",
    "nrmse",
    "plan_upscale",
    "psnr",
    "resampled_affine",
    "save_config",
    "save_figure",
    "save_model",
    "save_volume",
    "simulate_thick_slices",
    "simulate_volume",
    "ssim",
    "to_slice_stack",
    "train",
    "upscale_file",
    "upscale_many",
    "upscale_volume",
    "validate_volume",
    "voxel_sizes",
]
