"""mrisr: super-resolution of thick-slice MRI into isotropic volumes.

The public API is what ``__all__`` lists; everything else may change.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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
    OutputError,
)
from mrisr.fusion import fuse
from mrisr.geometry import detect_thick_axis, resampled_affine, voxel_sizes
from mrisr.intensity import Normalisation, fit_normalisation
from mrisr.interpolation import CubicSliceModel
from mrisr.simulate import simulate_thick_slices, simulate_volume
from mrisr.slices import from_slice_stack, to_slice_stack
from mrisr.upscale import SliceModel, UpscalePlan, plan_upscale, upscale_file, upscale_volume
from mrisr.volume import Volume

__all__ = [
    "__version__",
    "CheckpointError",
    "ConfigError",
    "CubicSliceModel",
    "GeometryError",
    "InputError",
    "MrisrError",
    "Normalisation",
    "OutputError",
    "SliceModel",
    "UpscalePlan",
    "Volume",
    "detect_thick_axis",
    "fit_normalisation",
    "from_slice_stack",
    "fuse",
    "plan_upscale",
    "resampled_affine",
    "simulate_thick_slices",
    "simulate_volume",
    "to_slice_stack",
    "upscale_file",
    "upscale_volume",
    "voxel_sizes",
]
