"""Self-describing model files.

A model file is one ``.safetensors`` file: the generator's weights (float32,
CPU, contiguous) plus, under the safetensors metadata key ``"mrisr"``, a JSON
description that is enough to rebuild the generator and to use it correctly:

.. code-block:: json

    {
      "format": "mrisr-model",
      "format_version": 1,
      "generator": {"name": "<a key of mrisr.networks.GENERATORS>", "config": {...}},
      "recipe": "...",
      "factor_range": [2.0, 6.0],
      "axis_convention": "rows = thick axis",
      "normalisation": {"method": "percentile", "low_percentile": 0.5, "high_percentile": 99.5},
      "training_data": {...},
      "mrisr_version": "0.1.0",
      "created": "2026-01-01T00:00:00+00:00",
      "parameters": 16697987,
      "weights_sha256": "<hex>"
    }

Any further JSON-able keys the trainer passes (step, metrics...) are kept.
Loading never runs code from the file: pickled PyTorch files are refused
before they are opened, and safetensors holds nothing but tensors.

Model files are written through :func:`mrisr.io.files.write_atomic`, so a
crash mid-write leaves the previous file intact. The training state behind
``--resume`` is :mod:`mrisr.training.state_file`'s.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.errors import CheckpointError, ConfigError
from mrisr.io.files import file_sha256, require_existing, write_atomic

if TYPE_CHECKING:  # torch is imported inside the functions: `mrisr models` stays fast
    import torch
    from torch import nn

log = logging.getLogger(__name__)

#: Safetensors metadata key holding the JSON description.
METADATA_KEY = "mrisr"
#: Value of the description's ``"format"`` key.
MODEL_FORMAT = "mrisr-model"
#: Newest description layout this code writes and reads.
FORMAT_VERSION = 1
#: How slices are laid out for the generator: it upsamples the rows.
AXIS_CONVENTION = "rows = thick axis"
#: File name load_model looks for first in a run folder.
MODEL_FILENAME = "model.safetensors"
#: File name load_model looks for second in a run folder.
BEST_FILENAME = "best.safetensors"
#: What inference does to intensities (see :func:`mrisr.intensity.fit_normalisation`).
DEFAULT_NORMALISATION: dict[str, Any] = {
    "method": "percentile",
    "low_percentile": 0.5,
    "high_percentile": 99.5,
}
#: Description keys save_model computes itself (values passed in are replaced).
RESERVED_KEYS = (
    "format",
    "format_version",
    "generator",
    "axis_convention",
    "mrisr_version",
    "created",
    "parameters",
    "weights_sha256",
)

# File names that torch.save/pickle conventionally use.
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")
# A safetensors header is a few kB; this bound refuses absurd lengths before reading them.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_CONVERT_HINT = (
    "if you trust where it came from, convert it with "
    '`python -c "from mrisr.checkpoint import convert_torch_checkpoint; '
    "convert_torch_checkpoint('{path}', 'model.safetensors', name='<generator>', "
    "config={{...}}, description={{'factor_range': [2, 6]}})\"` "
    "(reads it with torch.load(weights_only=True))"
)


# --------------------------------------------------------------------- hashes


def model_sha256(path: str | Path) -> str:
    """sha256 (hex) of a model file's bytes: the model hash provenance records.

    Raises:
        InputError: the file does not exist.
    """
    return file_sha256(path)


def weights_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) of named tensors: names, dtypes, shapes and raw bytes, in name order.

    Independent of the file layout, so it identifies the weights themselves:
    the same weights saved twice (other description, other time) hash the same.
    """
    import torch

    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().to("cpu").contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- model files


def save_model(
    path: str | Path, generator: nn.Module, *, name: str, description: Mapping[str, Any]
) -> Path:
    """Write a generator and its description to one ``.safetensors`` file, atomically.

    Args:
        path: target ``.safetensors`` file, or an existing folder (then
            ``<folder>/model.safetensors``). An existing file is replaced.
        generator: the network; a DistributedDataParallel or ``torch.compile``
            wrapper is unwrapped. It must have a JSON-able ``config`` dict of
            its constructor arguments, so that ``GENERATORS[name](**config)``
            rebuilds it.
        name: its key in :data:`mrisr.networks.GENERATORS`.
        description: what the trainer knows. ``factor_range`` ([low, high]
            thick-slice factors trained for) is required; ``recipe``,
            ``normalisation`` (default :data:`DEFAULT_NORMALISATION`) and
            ``training_data`` (a summary dict) are recorded; other JSON-able
            keys are kept as they are. :data:`RESERVED_KEYS` are recomputed,
            so the description of a loaded model may be passed back in.

    Returns:
        The path written.

    Raises:
        ConfigError: unknown generator name, wrong class for it, missing or
            non-JSON config, bad factor range, or a description that is not JSON.
        CheckpointError: weights holding NaN or Inf (a diverged run).
        OutputError: the folder does not exist, or the file cannot be written.
    """
    from safetensors.torch import save_file

    from mrisr import __version__
    from mrisr.output_check import check_finite_weights

    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILENAME
    if path.suffix != ".safetensors":
        raise ConfigError(
            "is not a .safetensors path",
            path=path,
            expected="a file name ending in .safetensors",
            fix="name the model file e.g. model.safetensors",
        )
    generator = _unwrap(generator)
    built_by = _generator_class(name, path)
    if not isinstance(generator, built_by):
        raise ConfigError(
            f"generator is a {type(generator).__name__}, but {name!r} builds {built_by.__name__}",
            path=path,
            fix="pass the name the generator was built with",
        )
    config = _checked_config(generator, built_by, path)

    tensors = {key: _storable(value) for key, value in generator.state_dict().items()}
    check_finite_weights(tensors, path)  # a diverged run must not become a model file
    record = {key: value for key, value in description.items() if key not in RESERVED_KEYS}
    record.update(
        {
            "format": MODEL_FORMAT,
            "format_version": FORMAT_VERSION,
            "generator": {"name": name, "config": config},
            "recipe": description.get("recipe"),
            "factor_range": list(_checked_factor_range(description.get("factor_range"), path)),
            "axis_convention": AXIS_CONVENTION,
            "normalisation": description.get("normalisation") or dict(DEFAULT_NORMALISATION),
            "training_data": description.get("training_data") or {},
            "mrisr_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "parameters": int(sum(p.numel() for p in generator.parameters())),
            "weights_sha256": weights_sha256(tensors),
        }
    )
    try:
        text = json.dumps(record, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"description cannot be written as JSON ({error})",
            path=path,
            expected="str, number, bool, None, list and dict values only",
            fix="convert the offending value (e.g. a Path or numpy number) first",
        ) from error

    def write(temporary: Path) -> None:
        save_file(tensors, str(temporary), metadata={METADATA_KEY: text})

    write_atomic(path, write, overwrite=True)
    log.info("saved model %s (%s, %d tensors)", path, name, len(tensors))
    return path


def read_description(path: str | Path) -> dict[str, Any]:
    """The JSON description of a model file, without loading weights or torch.

    Args:
        path: a ``.safetensors`` model file or a run folder (see :func:`find_model_file`).

    Returns:
        The validated description dict.

    Raises:
        CheckpointError: missing, pickled, truncated or corrupt file; no or
            invalid ``"mrisr"`` metadata; a newer format version.
    """
    path = find_model_file(path)
    header = _read_header(path)
    return _parse_description(header.get("__metadata__"), path)


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    generators: Mapping[str, type[nn.Module]] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a generator from a model file alone and load its weights strictly.

    Nothing in the file is executed: pickled PyTorch files are refused before
    they are parsed.

    Args:
        path: a ``.safetensors`` file or a run folder (see :func:`find_model_file`).
        device: where the generator goes (``"cpu"``, ``"cuda:0"``...).
        generators: name -> class table; default :data:`mrisr.networks.GENERATORS`.

    Returns:
        (generator in eval mode on ``device``, its description dict).

    Raises:
        CheckpointError: missing file; pickled file; truncated or corrupt file;
            no or invalid description; unknown generator name; a config the
            generator class does not accept; weights that differ from their
            recorded hash or do not fit the architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = find_model_file(path)
    header = _read_header(path)
    description = _parse_description(header.get("__metadata__"), path)
    table = _generator_table() if generators is None else generators
    name = description["generator"]["name"]
    config = description["generator"]["config"]
    if name not in table:
        raise CheckpointError(
            f"names generator {name!r}, which this mrisr does not know",
            path=path,
            expected=f"one of {sorted(table)}",
            fix="upgrade mrisr to the version that wrote it "
            f"({description.get('mrisr_version', 'unknown')}), or use another model",
        )
    try:
        generator = table[name](**config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"generator {name!r} cannot be built from the recorded config {config} ({error})",
            path=path,
            expected=f"keyword arguments of {table[name].__name__}",
            fix="use the mrisr version that wrote the file "
            f"({description.get('mrisr_version', 'unknown')})",
        ) from error
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"is not a readable safetensors file ({error})",
            path=path,
            expected="a complete file written by mrisr.checkpoint.save_model",
            fix="copy or download the file again",
        ) from error
    if weights_sha256(tensors) != description["weights_sha256"]:
        raise CheckpointError(
            "its weights do not match the sha256 recorded in its description "
            "(corrupted or edited after saving)",
            path=path,
            fix="copy or download the file again",
        )
    _check_fit(generator, tensors, name, path)
    generator.load_state_dict(tensors, strict=True)
    generator.eval()
    generator.to(device)
    return generator, description


def find_model_file(path: str | Path) -> Path:
    """The model file a path stands for.

    A file is itself. In a run folder the rule is: ``model.safetensors``, else
    ``best.safetensors``, else the most recently modified ``*.safetensors``
    directly in the folder (ties: the last name in sorted order).

    Raises:
        CheckpointError: the path does not exist, or the folder holds no
            ``.safetensors`` file.
    """
    path = require_existing(
        path,
        expected="a .safetensors model file or a training run folder",
        error=CheckpointError,
    )
    if not path.is_dir():
        return path
    for candidate in (MODEL_FILENAME, BEST_FILENAME):
        if (path / candidate).is_file():
            return path / candidate
    found = sorted(path.glob("*.safetensors"))
    if found:
        return max(found, key=lambda file: (file.stat().st_mtime, file.name))
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    raise CheckpointError(
        "holds no .safetensors model file"
        + (f" (only pickled files: {', '.join(pickled[:5])})" if pickled else ""),
        path=path,
        expected=f"{MODEL_FILENAME}, {BEST_FILENAME} or another *.safetensors in the folder",
        fix="pass the model file itself, or the folder a training run wrote",
    )


def convert_torch_checkpoint(
    source: str | Path,
    destination: str | Path,
    *,
    name: str,
    config: Mapping[str, Any],
    description: Mapping[str, Any],
) -> Path:
    """Convert a ``torch.save`` state dict you trust into a self-describing model file.

    The source is read with ``torch.load(weights_only=True)``, which refuses
    anything but tensors and plain containers. A dict holding the weights
    under ``params_ema``, ``params``, ``state_dict``, ``model`` or
    ``generator`` (BasicSR, Lightning, nanoGPT layouts) is unpacked, and
    ``module.`` / ``_orig_mod.`` key prefixes are removed.

    Args:
        source: the ``.pt`` / ``.pth`` file.
        destination: the ``.safetensors`` file to write.
        name: generator name in :data:`mrisr.networks.GENERATORS`.
        config: its constructor keyword arguments.
        description: as for :func:`save_model` (``factor_range`` required).

    Returns:
        The path written.

    Raises:
        CheckpointError: the source is missing, unreadable, or its tensors do not fit
            the named generator.
        ConfigError: an unknown generator name or configuration.
    """
    import torch

    source = require_existing(
        source, expected="a torch state dict file", error=CheckpointError, kind="file"
    )
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for unreadable files
        raise CheckpointError(
            f"cannot be read as a weights-only torch file ({error})",
            path=source,
            expected="a state dict saved with torch.save",
            fix="re-save the plain state_dict() of the network",
        ) from error
    for key in ("params_ema", "params", "state_dict", "model", "generator"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    state = {_strip_prefixes(key): value for key, value in dict(loaded).items()}
    generator = _generator_class(name, source)(**config)
    _check_fit(generator, state, name, source)
    generator.load_state_dict(state, strict=True)
    return save_model(destination, generator, name=name, description=description)


# ------------------------------------------------------------------- helpers


def _generator_class(name: str, path: Path) -> type[nn.Module]:
    """The class :data:`mrisr.networks.GENERATORS` builds ``name`` with; the one refusal of a name.

    Raises:
        ConfigError: a name the table does not hold (``path``: the model concerned).
    """
    generators = _generator_table()
    if name not in generators:
        raise ConfigError(
            f"unknown generator name {name!r}",
            path=path,
            expected=f"one of {', '.join(sorted(generators))}",
            fix="pass as name= the GENERATORS key the generator was built with",
        )
    return generators[name]


def _generator_table() -> Mapping[str, type[nn.Module]]:
    """:data:`mrisr.networks.GENERATORS`, imported when first needed."""
    try:
        from mrisr.networks import GENERATORS
    except ImportError as error:
        raise CheckpointError(
            f"mrisr.networks.GENERATORS cannot be imported ({error})",
            fix="reinstall mrisr (pip install -e .)",
        ) from error
    return GENERATORS


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain network inside DistributedDataParallel / torch.compile wrappers."""
    from torch import nn

    while True:
        # _orig_mod: torch.compile; module: DistributedDataParallel / DataParallel.
        inner = getattr(module, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(module, "module", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _checked_config(generator: nn.Module, cls: type, path: Path) -> dict[str, Any]:
    """The generator's JSON-able constructor kwargs, checked against the constructor."""
    config = getattr(generator, "config", None)
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"{type(generator).__name__} has no `config` dict",
            path=path,
            expected="generator.config = its constructor keyword arguments",
            fix="set self.config in the generator's __init__",
        )
    try:
        config = json.loads(json.dumps(dict(config)))
        inspect.signature(cls).bind(**config)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"{type(generator).__name__}.config {dict(config)} cannot rebuild it ({error})",
            path=path,
            expected="JSON-able keyword arguments of its constructor",
            fix="keep self.config equal to the constructor's arguments",
        ) from error
    return config


def _checked_factor_range(value: Any, path: Path) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"description factor_range is {value!r}",
            path=path,
            expected="[low, high], the thick-slice factors the model was trained for",
            fix="pass description={'factor_range': [low, high], ...}",
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and 1.0 <= low <= high):
        raise ConfigError(
            f"description factor_range [{low}, {high}] is not a range of factors",
            path=path,
            expected="1 <= low <= high",
            fix="pass description={'factor_range': [low, high], ...} with the smaller factor "
            "first, both at least 1",
        )
    return low, high


def _storable(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU, contiguous, unshared copy; floating point becomes float32."""
    import torch

    tensor = tensor.detach().to("cpu")
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    # clone: safetensors refuses tensors sharing storage (tied weights, views).
    return tensor.contiguous().clone()


def _read_header(path: Path) -> dict[str, Any]:
    """Parse a safetensors header, refusing pickles, truncation and corruption."""
    if not path.is_file():
        raise CheckpointError("is not a file", path=path, fix="pass a .safetensors model file")
    size = path.stat().st_size
    corrupt = CheckpointError(
        f"is truncated or not a safetensors file ({size} bytes)",
        path=path,
        expected="a complete .safetensors file written by mrisr.checkpoint.save_model",
        fix="copy or download the file again",
    )
    with open(path, "rb") as stream:
        start = stream.read(9)
        if len(start) < 9:
            raise corrupt
        # By content first; by name only when the content is not a safetensors header.
        if _looks_pickled(start) or (
            path.suffix.lower() in _PICKLE_SUFFIXES and start[8:9] != b"{"
        ):
            raise CheckpointError(
                "is a pickled PyTorch file (torch.save); mrisr never unpickles model "
                "files because unpickling can run arbitrary code",
                path=path,
                expected="a .safetensors file written by mrisr.checkpoint.save_model",
                fix=_CONVERT_HINT.format(path=path),
            )
        length = int.from_bytes(start[:8], "little")
        if length <= 0 or length > _MAX_HEADER_BYTES or 8 + length > size:
            raise corrupt
        stream.seek(8)
        try:
            header = json.loads(stream.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise corrupt from None
    if not isinstance(header, dict):
        raise corrupt
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    # safetensors files end exactly where the last tensor's data does.
    if 8 + length + max(ends, default=0) != size:
        raise corrupt
    return header


def _looks_pickled(start: bytes) -> bool:
    """torch.save zip archives and raw pickles (protocol 2-5) by their first bytes."""
    if start.startswith(b"PK\x03\x04"):
        return True
    # A safetensors length can start with 0x80 too; its JSON header then starts with "{".
    return len(start) >= 2 and start[0] == 0x80 and 2 <= start[1] <= 5 and start[8:9] != b"{"


def _parse_description(metadata: Any, path: Path) -> dict[str, Any]:
    """Validate the ``"mrisr"`` metadata JSON of a model file."""
    fix = "this file was not written by mrisr.checkpoint.save_model; use a model mrisr trained"
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise CheckpointError(
            f"has no {METADATA_KEY!r} description in its safetensors metadata",
            path=path,
            expected="the JSON description mrisr.checkpoint.save_model writes",
            fix=fix,
        )
    try:
        description = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"its {METADATA_KEY!r} metadata is not valid JSON ({error})", path=path, fix=fix
        ) from error
    problems = []
    if not isinstance(description, dict):
        problems.append("the description is not a JSON object")
        description = {}
    elif description.get("format") != MODEL_FORMAT:
        problems.append(f"format is {description.get('format')!r}, not {MODEL_FORMAT!r}")
    version = description.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"has description format {version}, newer than this mrisr reads ({FORMAT_VERSION})",
            path=path,
            fix=f"upgrade mrisr to {description.get('mrisr_version', 'a newer version')}",
        )
    if not isinstance(version, int):
        problems.append(f"format_version is {version!r}")
    generator = description.get("generator")
    if not (
        isinstance(generator, dict)
        and isinstance(generator.get("name"), str)
        and isinstance(generator.get("config"), dict)
    ):
        problems.append(f"generator is {generator!r}, not {{'name': str, 'config': dict}}")
    factor_range = description.get("factor_range")
    if not (
        isinstance(factor_range, list)
        and len(factor_range) == 2
        and all(isinstance(v, (int, float)) for v in factor_range)
        and 1 <= factor_range[0] <= factor_range[1]
    ):
        problems.append(f"factor_range is {factor_range!r}, not [low, high]")
    if not isinstance(description.get("weights_sha256"), str):
        problems.append("weights_sha256 is missing")
    if problems:
        raise CheckpointError(
            f"has an invalid {METADATA_KEY!r} description: {'; '.join(problems)}",
            path=path,
            expected="the JSON description mrisr.checkpoint.save_model writes",
            fix=fix,
        )
    return description


def _check_fit(
    generator: nn.Module, tensors: Mapping[str, torch.Tensor], name: str, path: Path
) -> None:
    """Refuse weights that do not fit the architecture, listing a few differences."""
    expected = {key: tuple(value.shape) for key, value in generator.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in tensors.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or mismatched):
        return

    def few(keys: list[str], show: Callable[[str], str] = str) -> str:
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        return ", ".join(show(k) for k in keys[:3]) + more

    parts = []
    if missing:
        parts.append(f"missing {len(missing)} tensor(s): {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s): {few(unexpected)}")
    if mismatched:
        parts.append(
            f"{len(mismatched)} shape mismatch(es): "
            + few(mismatched, lambda k: f"{k} {list(found[k])} vs {list(expected[k])}")
        )
    raise CheckpointError(
        f"its weights do not fit generator {name!r}: {'; '.join(parts)}",
        path=path,
        expected=f"the tensors of {name!r} built from the recorded config",
        fix="use the file as it was saved, or one written for this architecture",
    )
