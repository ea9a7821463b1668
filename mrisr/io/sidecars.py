"""A scan's JSON metadata: its own sidecar and, inside a BIDS dataset, the files it inherits.

Outside a BIDS dataset, the JSON file beside the image with the same stem
(``scan.nii.gz`` -> ``scan.json``, the dcm2niix convention) is the scan's
metadata. Inside one (a folder above the scan holds ``dataset_description.json``),
the BIDS inheritance principle applies (BIDS specification, "Common
principles: The Inheritance Principle"): a JSON file applies to the scan when

* it lies in the scan's folder or a folder above it, up to the dataset's top;
* its suffix is the scan's (``T2w``);
* each of its entities is one of the scan's, with the same label
  (``acq-ax_T2w.json`` applies to ``sub-01_acq-ax_run-1_T2w.nii.gz``).

Values from deeper folders replace those from above; the file beside the scan
is the deepest. The specification forbids two applicable files in one folder;
mrisr refuses them only when they disagree on a value it reads.

mrisr reads one value from this metadata: ``SliceThickness`` (mm).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mrisr.errors import InputError
from mrisr.io.files import stem

log = logging.getLogger(__name__)

#: The file that marks a BIDS dataset's top folder.
DATASET_DESCRIPTION = "dataset_description.json"


def slice_thickness(path: str | Path) -> float | None:
    """``SliceThickness`` (mm) of a scan from its JSON metadata, or None.

    Args:
        path: the image file (NIfTI or MGH).

    Returns:
        The value as a float, or None when no applicable file gives a number.

    Raises:
        InputError: two applicable files in one folder of a BIDS dataset give
            different slice thicknesses.
    """
    value = metadata(path, keys=("SliceThickness",)).get("SliceThickness")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        log.warning("%s: SliceThickness %r is not a number; ignored", path, value)
        return None


def metadata(path: str | Path, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The scan's merged JSON metadata (see the module docstring for which files apply).

    Args:
        path: the image file.
        keys: the keys checked for disagreement between two files of one
            folder; None: every key.

    Returns:
        The merged metadata; empty when no file applies. A file that cannot
        be read as a JSON object is skipped with a warning.

    Raises:
        InputError: two applicable files in one folder disagree on one of ``keys``.
    """
    path = Path(path)
    name = _entities(stem(path))
    root = _dataset_root(path)
    if root is None or name is None or "sub" not in name[0]:  # not a BIDS data file
        beside = path.with_name(stem(path) + ".json")
        return _read(beside) if beside.is_file() else {}
    entities, suffix = name
    folders = [path.parent, *path.parent.parents]
    folders = folders[: folders.index(root) + 1]
    merged: dict[str, Any] = {}
    for folder in reversed(folders):  # the top first: deeper files replace its values
        level: dict[str, Any] = {}
        applying: dict[str, Path] = {}
        for candidate in _applicable(folder, entities, suffix):
            values = _read(candidate)
            for key, value in values.items():
                if (keys is None or key in keys) and key in level and level[key] != value:
                    raise InputError(
                        f"has two metadata files in one folder that apply to it and disagree "
                        f"on {key}: {applying[key].name} ({level[key]!r}) and {candidate.name} "
                        f"({value!r})",
                        path=path,
                        expected="one applicable JSON file per folder (BIDS inheritance principle)",
                        fix="remove or rename one of them",
                    )
                level[key] = value
                applying.setdefault(key, candidate)
        merged.update(level)
    return merged


def _dataset_root(path: Path) -> Path | None:
    """The closest folder above ``path`` with a ``dataset_description.json``, or None."""
    for folder in path.parents:
        if (folder / DATASET_DESCRIPTION).is_file():
            return folder
    return None


def _entities(name: str) -> tuple[dict[str, str], str] | None:
    """``sub-01_acq-ax_T2w`` -> ({"sub": "01", "acq": "ax"}, "T2w"); None if not BIDS-like."""
    *pairs, suffix = name.split("_")
    entities = {}
    for pair in pairs:
        key, dash, label = pair.partition("-")
        if not (key and dash and label):
            return None
        entities[key] = label
    return (entities, suffix) if suffix else None


def _applicable(folder: Path, entities: dict[str, str], suffix: str) -> list[Path]:
    """The JSON files in ``folder`` that apply to a scan with these entities and suffix."""
    found = []
    try:
        candidates = sorted(folder.glob(f"*{suffix}.json"))
    except OSError:
        return []
    for candidate in candidates:
        name = _entities(candidate.name[: -len(".json")])
        if name is None or name[1] != suffix:
            continue
        if all(entities.get(key) == label for key, label in name[0].items()):
            found.append(candidate)
    # Fewer entities first: the more specific file of a folder is read last.
    return sorted(found, key=lambda candidate: candidate.name.count("_"))


def _read(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or {} with a warning when it is not one."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("%s: cannot be read as JSON metadata (%s); ignored", path, error)
        return {}
    if not isinstance(value, dict):
        log.warning("%s: is not a JSON object; ignored", path)
        return {}
    return value
