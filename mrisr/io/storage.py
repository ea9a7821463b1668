"""How an output's voxels are stored: on-disk type and NIfTI scale factor, never clipping.

An upscaled scan is float32 by default (4 bytes a voxel). ``--dtype int16``
halves it and ``uint8`` quarters it; a super-resolved volume is not whole
numbers, so integer types are written with the NIfTI scale factor
(``value = stored * scl_slope + scl_inter``, NIfTI-1 standard, header fields
``scl_slope``/``scl_inter``) chosen from the data's own range, so that no value
is clipped and the rounding step is a tiny fraction of the range:

* ``int16``: ``scl_inter = 0`` and ``scl_slope = max |value| / 32767``, so zero
  (background) stays exactly zero and the sign is kept; step = ``scl_slope``.
* ``uint8``: for data >= 0, ``scl_inter = 0`` and ``scl_slope = max / 255``;
  data with negative values is mapped linearly from its minimum, with zero
  on a stored level (``scl_inter`` a whole multiple of ``-scl_slope``, at or
  below the minimum), so that zero voxels stay exactly zero; the sidecar
  records both.
* data that are already whole numbers inside the type's range are stored as
  they are (slope 1, intercept 0): exact.

MGH, NRRD and MetaImage have no scale factor; there, integer types are
refused for data they cannot hold exactly (:func:`check_output_dtype` refuses
them up front for super-resolved outputs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import ConfigError, OutputError

#: On-disk voxel types offered by ``mrisr upscale --dtype``.
OUTPUT_DTYPES: tuple[str, ...] = ("float32", "int16", "uint8")
#: Output formats with a scale factor in their header.
SCALED_FORMATS: tuple[str, ...] = ("nifti",)


@dataclass(frozen=True)
class Storage:
    """An output's on-disk voxel type and scaling: ``value = stored * slope + inter``.

    Attributes:
        dtype: numpy type name, e.g. ``"int16"``.
        slope: NIfTI ``scl_slope`` (1 for float types and exact integers).
        inter: NIfTI ``scl_inter``.
    """

    dtype: str
    slope: float = 1.0
    inter: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description for the provenance sidecar."""
        integer = np.dtype(self.dtype).kind in "iu"
        return {
            "dtype": self.dtype,
            "scl_slope": self.slope,
            "scl_inter": self.inter,
            # Largest difference between a value and what is stored for it.
            "max_rounding_error": self.slope / 2 if integer else 0.0,
        }

    def describe(self) -> str:
        """One line for the command line, e.g. ``int16, value = stored x 0.0123``."""
        if np.dtype(self.dtype).kind not in "iu" or (self.slope, self.inter) == (1.0, 0.0):
            return self.dtype
        text = f"{self.dtype}, value = stored x {self.slope:.4g}"
        if self.inter:
            text += f" {'-' if self.inter < 0 else '+'} {abs(self.inter):.4g}"
        return text


def output_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as a numpy type, refusing what mrisr cannot write (complex, bool, objects).

    Raises:
        ConfigError: not a real integer or floating-point type.
    """
    try:
        value = np.dtype(dtype)
    except TypeError:
        value = None
    if value is None or value.kind not in "iuf":
        raise ConfigError(
            f"cannot write voxels of type {dtype}",
            expected=f"one of {', '.join(OUTPUT_DTYPES)} (or another real numpy type)",
            fix="pass --dtype float32, int16 or uint8",
        )
    return value


def check_output_dtype(path: str | Path, dtype: Any, kind: str) -> np.dtype:
    """Refuse, before any work, an integer type for a format without a scale factor.

    A super-resolved volume is not whole numbers: MGH, NRRD and MetaImage
    would have to round it to whole intensity units.

    Args:
        path: the output file (for the message).
        dtype: the requested on-disk type.
        kind: the output format (``nifti``, ``mgh``, ``nrrd``, ``metaimage``).

    Returns:
        The numpy type.

    Raises:
        ConfigError: an unknown type.
        OutputError: an integer type for a format other than NIfTI.
    """
    value = output_dtype(dtype)
    if value.kind in "iu" and kind not in SCALED_FORMATS:
        raise OutputError(
            f"cannot hold {value.name} voxels faithfully: this format stores no scale factor, "
            "so the values would be rounded to whole numbers",
            path=path,
            expected="a NIfTI output (.nii, .nii.gz) for an integer --dtype",
            fix="name the output .nii.gz, or use --dtype float32",
        )
    return value


def choose_storage(data: np.ndarray, dtype: Any, kind: str, path: str | Path) -> Storage:
    """The storage of ``data`` as ``dtype`` in format ``kind``: see the module docstring.

    Args:
        data: the (X, Y, Z) voxels, finite.
        dtype: the on-disk type.
        kind: the output format.
        path: the output file (for messages).

    Returns:
        The :class:`Storage`.

    Raises:
        ConfigError: an unknown type.
        OutputError: integer values that a format without a scale factor cannot hold
            (not whole numbers, or outside the type's range).
    """
    value = output_dtype(dtype)
    if value.kind == "f":
        return Storage(value.name)
    info = np.iinfo(value)
    low, high = float(np.min(data)), float(np.max(data))
    exact = low >= info.min and high <= info.max and bool(np.all(np.mod(data, 1) == 0))
    if exact:
        return Storage(value.name)
    if kind not in SCALED_FORMATS:
        raise OutputError(
            f"holds values from {low:.6g} to {high:.6g} that {value.name} cannot store "
            "without a scale factor, which this format lacks",
            path=path,
            expected=f"whole numbers from {info.min} to {info.max}, or a NIfTI output",
            fix="name the output .nii.gz, or write float32",
        )
    if value.kind == "u" and low < 0:
        # Mapped linearly, low -> 0 and high -> info.max at most, with zero on a stored
        # level: a zero background (and every zero voxel) reads back as exactly zero.
        # One level is spared so that rounding zero's level up still fits high.
        first = (high - low) / (info.max - 1) if high > low else 1.0
        zero_level = math.ceil(-low / first)
        slope = max(first, high / (info.max - zero_level)) if high > 0 else first
        return Storage(value.name, float(slope), float(-zero_level * slope))
    span = max(abs(low), abs(high))  # zero stays exactly zero
    slope = span / info.max if span > 0 else 1.0
    return Storage(value.name, float(slope), 0.0)


def stored_values(data: np.ndarray, storage: Storage) -> np.ndarray:
    """``data`` as the integers (or floats) to write for ``storage``: a new array.

    The scaling covers the data's range, so clipping only absorbs the last
    rounding at the range's ends.
    """
    value = np.dtype(storage.dtype)
    if value.kind == "f":
        return np.asarray(data).astype(value, copy=True)
    info = np.iinfo(value)
    scaled = (np.asarray(data, np.float64) - storage.inter) / storage.slope
    return np.clip(np.rint(scaled), info.min, info.max).astype(value)
