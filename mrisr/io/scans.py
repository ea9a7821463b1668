"""Finding scans: the files, DICOM folders and glob patterns a user names, as a sorted list.

Used by :mod:`mrisr.cohort` for ``mrisr upscale a b c``, folders and
``'data/**/*.nii.gz'``. mrisr's own outputs are recognised by their sidecar,
so that a second run over a folder does not take the first run's results
for scans.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mrisr.errors import InputError
from mrisr.io.dicom_files import looks_like_dicom
from mrisr.io.files import (
    READ_FORMATS,
    READABLE,
    broken_link_target,
    refuse_empty_path,
    stem,
    suffix,
)
from mrisr.io.outputs import disagreement_path, sidecar_path

log = logging.getLogger(__name__)

#: Characters that make an argument a glob pattern (expanded by mrisr, not the shell).
GLOB_CHARACTERS = frozenset("*?[")
#: Endings of files found beside scans that do not make a folder a DICOM series.
_NOT_DICOM = frozenset({".json", ".tsv", ".txt", ".md", ".csv", ".bval", ".bvec", ".yaml", ".log"})


def expand_scans(paths: Iterable[str | Path]) -> list[Path]:
    """The scans that files, folders and glob patterns name, sorted and without repeats.

    * an existing file is a scan, as given (even an mrisr output);
    * a folder gives the image files in it and, recursively, in its
      sub-folders; a folder holding no image file but other files is one
      DICOM series. A folder holding image files beside DICOM files gives
      its image files (often the series converted in place by ``dcm2niix``),
      with a warning that names the folder and counts the DICOM files left
      out (:func:`_warn_unused_dicom`). mrisr's own outputs (an image whose
      JSON sidecar records ``mrisr_version``) and hidden files are left out,
      so that a second run
      over the same folder does not upscale the first run's results; a
      symbolic link named like an image whose target is missing is kept, so
      that it fails as its own scan, naming the link and its target;
    * a pattern with ``*``, ``?`` or ``[`` (quoted, so that the shell leaves
      it alone; ``**`` crosses folders) gives what it matches, each as above;
    * a path that does not exist is kept: it fails as its own scan, with
      upscale's message, without stopping the others.

    Args:
        paths: what the user named.

    Returns:
        Absolute paths, sorted by their text: the order shards are cut from.

    Raises:
        InputError: nothing was named, an empty path, a pattern matches
            nothing, or a folder holds no scan.
    """
    found: dict[str, Path] = {}
    unused: list[tuple[Path, int, list[Path]]] = []
    try:
        for item in paths:
            refuse_empty_path(str(item), expected=READABLE, names="no scan")
            text = os.path.expanduser(str(item))
            if GLOB_CHARACTERS & set(text) and not Path(text).exists():
                matches = sorted(glob.glob(text, recursive=True))
                scans = [
                    scan
                    for match in matches
                    for scan in _scans_in(Path(match), named=False, unused=unused)
                ]
                if not scans:
                    raise InputError(
                        "matches no scan",
                        path=text,
                        expected=READABLE,
                        fix="check the pattern (quote it so that mrisr, not the shell, expands it)",
                    )
            else:
                scans = _scans_in(Path(text), named=True, unused=unused)
            for scan in scans:
                absolute = scan.absolute()
                found[str(absolute)] = absolute
    finally:  # also before "holds no scan": the DICOM files may be what the user meant
        _warn_unused_dicom(unused)
    if not found:
        raise InputError("no scans were named", expected=READABLE, fix="name scans or folders")
    return [found[key] for key in sorted(found)]


def _scans_in(
    path: Path, *, named: bool, unused: list[tuple[Path, int, list[Path]]] | None = None
) -> list[Path]:
    """The scans one path stands for (see :func:`expand_scans`).

    ``unused``, when given, receives (folder, DICOM file count, image files)
    for each folder whose DICOM files are left out because it holds image files.
    """
    if not path.is_dir():
        if named:  # a file the user named is a scan, whatever made it
            return [path]
        image = suffix(path) in READ_FORMATS and not _is_mrisr_output(path)
        return [path] if image and (path.is_file() or _broken_link(path)) else []
    children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    files = [p for p in children if p.is_file()]
    images = [p for p in files if suffix(p) in READ_FORMATS]
    # A link to nothing named like an image is reported as a failed scan, not skipped.
    images += [p for p in children if suffix(p) in READ_FORMATS and _broken_link(p)]
    others = [p for p in files if suffix(p) not in READ_FORMATS and suffix(p) not in _NOT_DICOM]
    if not images and others:
        return [path]  # a folder of files in no image format: one DICOM series
    if unused is not None and images:
        dicom = sum(1 for p in others if looks_like_dicom(p))
        if dicom:
            unused.append((path, dicom, images))
    scans = [p for p in images if not _is_mrisr_output(p)]
    scans += [
        scan for p in children if p.is_dir() for scan in _scans_in(p, named=False, unused=unused)
    ]
    if named and not scans:
        raise InputError(
            "holds no scan",
            path=path,
            expected=READABLE + " (or folders of them), other than mrisr's own outputs",
            fix="check the folder, or name the scans themselves",
        )
    return scans


#: How many folders :func:`_warn_unused_dicom` names one by one.
_UNUSED_NAMED = 5


def _warn_unused_dicom(unused: list[tuple[Path, int, list[Path]]]) -> None:
    """Warn about DICOM files left out because image files share their folder.

    A folder with image files is searched for those only (the series is
    often beside its own conversion, written there by ``dcm2niix``); the
    warning says so, and how to upscale the series or silence the warning.
    """
    for folder, count, images in unused[:_UNUSED_NAMED]:
        files = "1 DICOM file" if count == 1 else f"{count} DICOM files"
        held = f"an image file ({images[0].name})"
        if len(images) > 1:
            held = f"{len(images)} image files ({images[0].name} and {len(images) - 1} more)"
        log.warning(
            "%s: %s not upscaled: the folder also holds %s, and only the image files of such "
            "a folder are scans. To upscale the DICOM series, move it into a folder of its own "
            "and pass that folder; to upscale the image files without this warning, name them "
            "(e.g. '%s')",
            folder,
            files,
            held,
            folder / f"*{suffix(images[0])}",
        )
    if len(unused) > _UNUSED_NAMED:
        log.warning(
            "%d more folders hold DICOM files beside image files, left out in the same way",
            len(unused) - _UNUSED_NAMED,
        )


def _broken_link(path: Path) -> bool:
    return broken_link_target(path) is not None


def _is_mrisr_output(path: Path) -> bool:
    """Whether ``path`` is an image mrisr wrote: an upscaled scan or its disagreement map.

    An upscaled scan's sidecar records ``mrisr_version``; a disagreement map has
    no sidecar of its own, but the sidecar of the scan it sits beside lists it.
    """
    recorded = _mrisr_record(sidecar_path(path))
    if recorded is not None:
        return True
    for image in _images_of_map(path):
        recorded = _mrisr_record(sidecar_path(image))
        listed = (recorded or {}).get("disagreement") or {}
        if isinstance(listed, dict) and Path(str(listed.get("file", ""))) == path.resolve():
            return True
    return False


def _mrisr_record(sidecar: Path) -> dict | None:
    """The provenance mrisr wrote in ``sidecar``, or None (missing, unreadable, someone else's)."""
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(recorded, dict) and "mrisr_version" in recorded and "input" in recorded:
        return recorded
    return None


def _images_of_map(path: Path) -> list[Path]:
    """The outputs whose disagreement map would be named ``path`` (see ``disagreement_path``)."""
    ending, name = suffix(path), stem(path)
    candidates = []
    if name.endswith("_disagreement"):
        candidates.append(path.parent / (name[: -len("_disagreement")] + ending))
    if "disagreement_" in name:  # BIDS: desc-<label>disagreement
        candidates.append(path.parent / (name.replace("disagreement_", "_", 1) + ending))
    # The one naming rule decides: only an image whose map would be named ``path``.
    return [c for c in candidates if disagreement_path(c) == path]


def is_single_scan(paths: Sequence[str | Path]) -> bool:
    """Whether the arguments name exactly one scan the way ``mrisr upscale scan`` always took it.

    One argument that is not a pattern and is a file, a DICOM series folder or
    a missing path (which then fails as it always did).
    """
    if len(paths) != 1 or GLOB_CHARACTERS & set(str(paths[0])):
        return False
    path = Path(paths[0]).expanduser()
    return not path.is_dir() or _scans_in(path, named=False) == [path]
