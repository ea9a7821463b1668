"""Files on disk, one owner: image formats, input validation, atomic writing, hashing.

- :mod:`mrisr.io.load_save`: ``load_volume``/``save_volume`` pick the format from the path.
- :mod:`mrisr.io.nibabel_formats`: NIfTI and MGH (nibabel).
- :mod:`mrisr.io.itk_formats`: NRRD and MetaImage (SimpleITK), and the one RAS <-> LPS conversion.
- :mod:`mrisr.io.dicom`: DICOM series, with the slice-position checks.
- :mod:`mrisr.io.validation`: what every input must satisfy (``validate_volume``).
- :mod:`mrisr.io.scans`: the scans that files, folders and glob patterns name (cohorts).
- :mod:`mrisr.io.files`: the one table of file endings, the only atomic writer,
  overwrite refusal and hasher, used for volumes, model files, sidecars and figures.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Where each name lives. Submodules load on first access (PEP 562): model
#: files need only :mod:`mrisr.io.files`, not nibabel.
_NAMES = {
    "load_volume": "mrisr.io.load_save",
    "save_volume": "mrisr.io.load_save",
    "output_format": "mrisr.io.load_save",
    "validate_volume": "mrisr.io.validation",
    "file_sha256": "mrisr.io.files",
    "write_atomic": "mrisr.io.files",
    "check_output": "mrisr.io.files",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'mrisr.io' has no attribute {name!r}")
