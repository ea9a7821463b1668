"""BIDS in, BIDS derivatives out: find a dataset's anatomical scans and name their results.

Discovery uses pybids (an optional extra: ``pip install "mrisr[bids]"``);
names follow the BIDS specification's derivatives rules, with the entity
order taken from the specification's own schema (bidsschematools, which
pybids installs):

* ``sub-01/ses-1/anat/sub-01_ses-1_acq-ax_run-1_T2w.nii.gz`` becomes
  ``OUT_DIR/sub-01/ses-1/anat/sub-01_ses-1_acq-ax_run-1_desc-sr_T2w.nii.gz``;
* its JSON sidecar holds mrisr's provenance plus ``Sources`` and
  ``SpatialReference`` (BIDS URIs of the raw scan: the result lies in the
  raw scan's world coordinates, on a finer grid);
* ``OUT_DIR/dataset_description.json`` says ``"DatasetType": "derivative"``
  with ``GeneratedBy`` and the raw dataset in ``SourceDatasets`` and
  ``DatasetLinks``.

Reference: BIDS specification, "Derivatives" (common data types and
metadata) and "Common principles: BIDS URI", https://bids-specification.readthedocs.io.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrisr.cohort import ScanJob
from mrisr.errors import ConfigError, InputError, OutputError
from mrisr.io.files import suffix
from mrisr.io.outputs import write_json_atomic

#: Anatomical suffixes looked for by default: the clinical thick-slice sequences.
DEFAULT_SUFFIXES = ("T2w", "FLAIR")
#: The ``desc`` label of mrisr's results.
DESC_LABEL = "sr"
#: The name the raw dataset has in BIDS URIs (``bids:raw:sub-01/anat/...``).
RAW_NAME = "raw"
#: Where the run summary goes inside a derivative dataset (listed in ``.bidsignore``).
LOG_FOLDER = "logs"
_NIFTI = (".nii", ".nii.gz")


def require_pybids() -> Any:
    """The ``bids`` package, or a clear error telling how to install it.

    Raises:
        ConfigError: pybids is not installed.
    """
    try:
        import bids
    except ImportError as error:
        raise ConfigError(
            "BIDS datasets need pybids, which is not installed",
            expected="the optional extra mrisr[bids]",
            fix='pip install "mrisr[bids]"',
        ) from error
    return bids


@dataclass(frozen=True)
class BidsScan:
    """One anatomical scan of a BIDS dataset.

    Attributes:
        path: the image file.
        relpath: its path inside the dataset, with ``/`` (for BIDS URIs).
        subject: the participant label (without ``sub-``).
        session: the session label, or None.
        suffix: e.g. ``"T2w"``.
    """

    path: Path
    relpath: str
    subject: str
    session: str | None
    suffix: str


def check_analysis_level(level: str) -> None:
    """Accept the BIDS-App analysis level ``participant``; mrisr has no group level.

    Raises:
        ConfigError: any other level.
    """
    if level != "participant":
        raise ConfigError(
            f"unknown analysis level {level!r}: mrisr works per scan and has no group level",
            expected="participant (or leave it out)",
            fix="run `mrisr bids BIDS_DIR OUT_DIR participant`",
        )


def read_dataset_description(root: str | Path) -> dict[str, Any]:
    """The ``dataset_description.json`` of a BIDS dataset; refuses a folder that is not one.

    Raises:
        InputError: ``root`` is not a folder, has no ``dataset_description.json``,
            or it is not a JSON object.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            "is not a folder", path=root, expected="a BIDS dataset folder", fix="check the path"
        )
    description = root / "dataset_description.json"
    if not description.is_file():
        raise InputError(
            "is not a BIDS dataset: it has no dataset_description.json",
            path=root,
            expected="the top folder of a BIDS dataset (dataset_description.json, sub-<label>/)",
            fix="pass the dataset's top folder, or run `mrisr upscale FOLDER` for plain folders",
        )
    try:
        data = json.loads(description.read_text())
    except (OSError, ValueError) as error:
        raise InputError(
            f"cannot be read as JSON: {error}", path=description, fix="repair the file"
        ) from error
    if not isinstance(data, dict):
        raise InputError("is not a JSON object", path=description, fix="repair the file")
    return data


def find_anatomical_scans(
    root: str | Path,
    *,
    participant_labels: Sequence[str] = (),
    session_labels: Sequence[str] = (),
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
) -> list[BidsScan]:
    """The dataset's anatomical NIfTI scans with the given suffixes, found by pybids.

    Args:
        root: the BIDS dataset's top folder.
        participant_labels: only these participants (``"01"`` or ``"sub-01"``); all by default.
        session_labels: only these sessions (``"1"`` or ``"ses-1"``); all by default.
        suffixes: BIDS suffixes, e.g. ``("T2w",)``.

    Returns:
        Scans sorted by path; derivatives (``derivatives/``) are not searched.

    Raises:
        ConfigError: pybids is missing.
        InputError: not a BIDS dataset, an unknown participant or session, or
            no scan matches.
    """
    bids = require_pybids()
    root = Path(root).absolute()
    read_dataset_description(root)
    try:
        # validate=False: pybids' bundled regex validator is older than the
        # specification; the dataset_description check above is the refusal.
        layout = bids.BIDSLayout(str(root), validate=False, derivatives=False)
    except Exception as error:  # pybids raises its own types for unreadable datasets
        raise InputError(
            f"cannot be indexed by pybids: {error}",
            path=root,
            expected="a BIDS dataset pybids can read",
            fix="check the dataset with the BIDS validator (bids-validator) and correct what "
            "it reports",
        ) from error
    query: dict[str, Any] = {
        "datatype": "anat",
        "suffix": list(suffixes),
        "extension": list(_NIFTI),
    }
    subjects = _labels(participant_labels, "sub-", layout.get_subjects(), "participant", root)
    sessions = _labels(session_labels, "ses-", layout.get_sessions(), "session", root)
    if subjects:
        query["subject"] = subjects
    if sessions:
        query["session"] = sessions
    found = sorted(layout.get(return_type="filename", **query))
    if not found:
        raise InputError(
            f"holds no anatomical scan with suffix {', '.join(suffixes)}"
            + (f" for participant(s) {', '.join(subjects)}" if subjects else ""),
            path=root,
            expected="sub-<label>/[ses-<label>/]anat/sub-<label>_..._<suffix>.nii[.gz]",
            fix="check --suffix and --participant-label",
        )
    return [_scan(Path(path), root) for path in found]


def _labels(
    given: Sequence[str], prefix: str, known: list[str], what: str, root: Path
) -> list[str]:
    """Labels without their prefix, each checked against the dataset's."""
    labels = [label[len(prefix) :] if label.startswith(prefix) else label for label in given]
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise InputError(
            f"has no {what} {', '.join(unknown)}",
            path=root,
            expected=f"one of {', '.join(sorted(known)) or '(none)'}",
            fix=f"check the {what} labels",
        )
    return labels


def _scan(path: Path, root: Path) -> BidsScan:
    entities, scan_suffix = parse_name(path.name, source=path)
    return BidsScan(
        path=path,
        relpath=path.relative_to(root).as_posix(),
        subject=entities["sub"],
        session=entities.get("ses"),
        suffix=scan_suffix,
    )


def parse_name(name: str, *, source: str | Path | None = None) -> tuple[dict[str, str], str]:
    """``sub-01_ses-1_T2w.nii.gz`` -> ({"sub": "01", "ses": "1"}, "T2w"), in file order.

    Args:
        name: the file name.
        source: the file, for messages (default ``name``).

    Raises:
        InputError: a part that is not ``key-label``, or no ``sub`` entity.
    """
    stem = name[: len(name) - len(suffix(name))]
    *pairs, scan_suffix = stem.split("_")
    entities = {}
    for pair in pairs:
        key, _, label = pair.partition("-")
        if not key or not label:
            raise InputError(
                f"has a name part {pair!r} that is not key-label",
                path=source or name,
                expected="sub-<label>[_ses-<label>][_<key>-<label>...]_<suffix>.nii[.gz]",
                fix="rename it as BIDS names scans: key-label parts joined by _, then the "
                "suffix (e.g. sub-01_ses-1_acq-ax_T2w.nii.gz)",
            )
        entities[key] = label
    if "sub" not in entities:
        raise InputError(
            "has no sub-<label> in its name",
            path=source or name,
            expected="sub-<label>[_ses-<label>][_<key>-<label>...]_<suffix>.nii[.gz]",
            fix="rename it to begin with its subject, as BIDS names scans: sub-01_T2w.nii.gz",
        )
    return entities, scan_suffix


@functools.cache
def entity_order() -> tuple[str, ...]:
    """The short entity keys (``sub``, ``ses``, ..., ``desc``) in the order BIDS names use.

    Read from the specification's schema (bidsschematools, a pybids dependency).
    """
    require_pybids()
    from bidsschematools.schema import load_schema

    schema = load_schema()
    return tuple(schema.objects.entities[name].name for name in schema.rules.entities)


def derivative_name(name: str, desc: str = DESC_LABEL) -> str:
    """The derivative file name of a raw scan: ``desc-<desc>`` added, entities in BIDS order.

    A name that already has a ``desc`` gets it extended (``desc-bias`` ->
    ``desc-biassr``), so that two derivatives never share a name.

    Raises:
        InputError: see :func:`parse_name`.
    """
    entities, scan_suffix = parse_name(name)
    entities["desc"] = entities.get("desc", "") + desc
    order = entity_order()
    # Keys the schema does not know keep their place before desc.
    rank = {key: index for index, key in enumerate(order)}
    keys = sorted(entities, key=lambda key: rank.get(key, rank["desc"] - 0.5))
    return "_".join([*(f"{key}-{entities[key]}" for key in keys), scan_suffix]) + ".nii.gz"


def derivative_jobs(scans: Sequence[BidsScan], out_dir: str | Path) -> list[ScanJob]:
    """One :class:`~mrisr.cohort.ScanJob` per scan: BIDS derivative path and sidecar fields.

    Args:
        scans: from :func:`find_anatomical_scans`.
        out_dir: the derivative dataset's top folder.

    Returns:
        Jobs writing ``out_dir/<same folders>/<derivative_name>``; their
        folders are created when a scan starts.
    """
    out_dir = Path(out_dir).absolute()
    jobs = []
    for scan in scans:
        folder = out_dir / Path(scan.relpath).parent
        uri = f"bids:{RAW_NAME}:{scan.relpath}"
        # REQUIRED for volumetric anatomical derivatives; mrisr strips nothing, so
        # the result is skull-stripped exactly when its input says it was.
        stripped = skull_stripped(scan.path)
        fields = {
            "Description": f"{scan.suffix} super-resolved along its thick-slice axis by mrisr",
            "Sources": [uri],
            "SpatialReference": uri,
            "SkullStripped": stripped,
        }
        output = folder / derivative_name(scan.path.name)
        # "bids::" is this (the derivative) dataset: the map describes the result beside it.
        result_uri = f"bids::{output.relative_to(out_dir).as_posix()}"
        map_fields = {
            "Description": MAP_DESCRIPTION,
            "Sources": [result_uri, uri],
            "SpatialReference": uri,
            "SkullStripped": stripped,
        }
        jobs.append(
            ScanJob(scan.path, output, fields, create_folder=True, map_sidecar_fields=map_fields)
        )
    return jobs


def skull_stripped(scan: Path) -> bool:
    """``SkullStripped`` of a scan's result: its input's (JSON metadata, with inheritance), else False.

    A raw scan is not skull-stripped; a scan from a derivative dataset says so
    in its metadata (BIDS derivatives, "Preprocessed or cleaned data").
    """
    from mrisr.io.sidecars import metadata

    return metadata(scan, keys=("SkullStripped",)).get("SkullStripped") is True


#: The ``Description`` of a disagreement map's sidecar.
MAP_DESCRIPTION = (
    "Disagreement map of the desc-sr result beside it: per voxel, the spread between "
    "mrisr's passes (the two planes that contain the thick axis, and flipped passes with "
    "test-time augmentation), pooled over a one-voxel neighbourhood, in the result's "
    "intensity units; high values mark where the result should not be trusted"
)


def check_output_dataset(raw_root: str | Path, out_dir: str | Path) -> None:
    """Refuse an output folder that would mix mrisr's results with another dataset.

    Refused: the raw dataset or a folder inside it other than a pipeline's
    folder under ``derivatives/`` (``derivatives/`` itself holds one folder per
    pipeline); a folder inside another dataset (an ancestor with a
    ``dataset_description.json``, other than the raw dataset above its
    ``derivatives/``); a folder holding a dataset that is not an mrisr
    derivative; an mrisr derivative made from another raw dataset.

    Raises:
        OutputError: as above.
    """
    raw, out = Path(raw_root).resolve(), Path(out_dir).resolve()
    derivatives = raw / "derivatives"
    if out == raw or (raw in out.parents and derivatives not in out.parents):
        raise OutputError(
            "is inside the raw dataset; mrisr never writes into its input"
            if out != derivatives
            else "is the raw dataset's derivatives/ folder, which holds one folder per pipeline",
            path=out_dir,
            expected="a folder outside it, or a folder of its own under its derivatives/ folder",
            fix=f"pass {derivatives / 'mrisr'}",
        )
    for ancestor in out.parents:
        if ancestor == raw:
            break  # under raw/derivatives/: the raw dataset is the one expected above
        if (ancestor / "dataset_description.json").is_file():
            raise OutputError(
                f"is inside another dataset ({ancestor} has a dataset_description.json)",
                path=out_dir,
                expected="a folder of its own, not inside another dataset",
                fix=f"choose a folder outside {ancestor}",
            )
    existing = out / "dataset_description.json"
    if not existing.is_file():
        return
    if not _is_ours(existing):
        raise OutputError(
            "holds another dataset (its dataset_description.json is not mrisr's derivative)",
            path=out_dir,
            expected="an empty folder or an earlier mrisr output",
            fix="choose another output folder",
        )
    made_from = _raw_of(existing)
    if made_from is not None and made_from != raw:
        raise OutputError(
            f"holds mrisr's derivative of another raw dataset ({made_from})",
            path=out_dir,
            expected=f"an empty folder or an earlier mrisr output of {raw}",
            fix="choose another output folder (one derivative dataset per raw dataset)",
        )


def _raw_of(description: Path) -> Path | None:
    """The raw dataset an mrisr derivative was made from, by its ``DatasetLinks``.

    A relative link (the derivative inside the raw dataset) is resolved from
    the derivative's folder, so that a dataset moved as a whole still matches.
    None when the link is missing or not a local folder.
    """
    from urllib.parse import unquote, urlparse

    try:
        link = json.loads(description.read_text())["DatasetLinks"][RAW_NAME]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(link, str):
        return None
    parsed = urlparse(link)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve()
    if parsed.scheme:
        return None  # a remote dataset: nothing to compare here
    return (description.parent / link).resolve()


def _is_ours(description: Path) -> bool:
    try:
        data = json.loads(description.read_text())
        return data.get("DatasetType") == "derivative" and any(
            item.get("Name") == "mrisr" for item in data.get("GeneratedBy", [])
        )
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def write_derivative_description(raw_root: str | Path, out_dir: str | Path) -> Path:
    """Write the derivative dataset's ``dataset_description.json`` and ``.bidsignore``.

    An earlier mrisr description is kept as it is (a resumed run).

    Returns:
        The description's path.

    Raises:
        OutputError: see :func:`check_output_dataset`, or a write failure.
    """
    from mrisr import __version__

    check_output_dataset(raw_root, out_dir)
    raw, out = Path(raw_root).absolute(), Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dataset_description.json"
    raw_name = read_dataset_description(raw).get("Name", raw.name)
    # Relative when the derivative lives inside the raw dataset, so both move together.
    inside = raw.resolve() in out.resolve().parents
    link = os.path.relpath(raw, out) if inside else raw.as_uri()
    description = {
        "Name": f"mrisr super-resolution of {raw_name}",
        "BIDSVersion": _bids_version(),
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "mrisr",
                "Version": __version__,
                "Description": "ESRGAN super-resolution of thick-slice MRI along the thick axis",
            }
        ],
        "SourceDatasets": [{"URL": raw.as_uri()}],
        "DatasetLinks": {RAW_NAME: link},
    }
    if not path.is_file():
        write_json_atomic(description, path)
    _ignore_logs(out / ".bidsignore")
    readme = out / "README.md"
    if not readme.exists():
        _write_text(readme, README.format(raw_name=raw_name, version=__version__))
    return path


def _ignore_logs(ignore: Path) -> None:
    """Make ``.bidsignore`` list the log folder, keeping whatever else it lists."""
    line = f"{LOG_FOLDER}/"
    try:
        text = ignore.read_text() if ignore.is_file() else ""
    except (OSError, UnicodeDecodeError) as error:
        raise OutputError(
            f"cannot be read: {error}", path=ignore, fix="repair or remove it"
        ) from error
    if line in (entry.strip() for entry in text.splitlines()):
        return
    _write_text(ignore, text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")


def _write_text(path: Path, text: str) -> None:
    from mrisr.io.files import write_atomic

    write_atomic(path, lambda temporary: temporary.write_text(text), overwrite=True)


#: The derivative dataset's README (RECOMMENDED by the specification), written once.
README = """# mrisr super-resolution of {raw_name}

Made by mrisr {version}: each anatomical thick-slice scan of the raw dataset
super-resolved along its thick-slice axis to (near) isotropic voxels.

- `sub-<label>/[ses-<label>/]anat/*_desc-sr_<suffix>.nii.gz`: the result, in
  the raw scan's world coordinates on a finer grid. Its JSON sidecar names the
  raw scan (`Sources`, `SpatialReference`) and records how it was made (model,
  options, the input's SHA-256, the residual against the measured slices).
- `*_desc-srdisagreement_<suffix>.nii.gz` (unless `--no-disagreement`): where
  the result should not be trusted: the spread between the model's passes, per
  voxel, in the image's intensity units, on the result's grid. Its JSON sidecar
  names the result it belongs to (`Sources`); the result's sidecar has its
  figures (`disagreement`). The suffix is the scan's, as BIDS names have no
  suffix for such maps.
- `logs/` (listed in `.bidsignore`): the runs' JSON summaries.
"""


def _bids_version() -> str:
    """The BIDS version of the schema the names were checked against."""
    require_pybids()
    from bidsschematools.schema import load_schema

    return str(load_schema().bids_version)
