"""The training state file behind ``--resume``, and the random generators' states it holds.

Training state (optimiser, scheduler, EMA, step counters, RNG states) is a
``torch.save`` file that is always read back with ``weights_only=True``; it may
hold only tensors, numbers, strings, None and lists/tuples/dicts of them, so
resuming never executes code from the file. It is written through
:func:`mrisr.io.files.write_atomic`: a crash mid-write leaves the previous
state intact.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.checkpoint import FORMAT_VERSION
from mrisr.errors import CheckpointError, ConfigError
from mrisr.io.files import require_existing, write_atomic

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TRAINING_STATE_FORMAT = "mrisr-training-state"


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write the state ``--resume`` needs, atomically, in a weights-only-loadable form.

    numpy arrays become tensors and numpy scalars Python numbers (use
    :func:`capture_rng_state` for RNG states). The written file is checked to
    load with ``torch.load(weights_only=True)`` before it replaces the old one,
    so a state that could not be resumed is refused now, not hours later.

    Args:
        path: target file (``.pt`` by convention); an existing file is replaced.
        state: str-keyed dict of tensors, numbers, strings, None and
            lists/tuples/dicts of them (optimizer/scheduler ``state_dict()``,
            EMA weights, step counters, RNG states...).

    Returns:
        The path written.

    Raises:
        ConfigError: ``state`` holds an object weights-only loading refuses.
        OutputError: the folder does not exist, or the file cannot be written.
    """
    import torch

    path = Path(path)
    payload = {
        "format": TRAINING_STATE_FORMAT,
        "format_version": FORMAT_VERSION,
        "state": _weights_only_friendly(dict(state)),
    }

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as stream:
            torch.save(payload, stream)
        try:
            # mmap: checks every pickled object without reading the tensor data.
            torch.load(temporary, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # UnpicklingError and friends name the offending type
            raise ConfigError(
                f"training state cannot be loaded back with weights_only=True ({error})",
                path=path,
                expected="tensors, numbers, strings, None and lists/tuples/dicts of them",
                fix="store state_dict()s and plain values; convert other objects first",
            ) from error

    write_atomic(path, write, overwrite=True)
    return path


def load_training_state(
    path: str | Path, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a file written by :func:`save_training_state`, executing nothing from it.

    Args:
        path: the training state file.
        map_location: where tensors go.

    Returns:
        The state dict as it was saved (numpy arrays come back as tensors).

    Raises:
        CheckpointError: missing, truncated or foreign file.
    """
    import torch

    path = require_existing(
        path, expected="a training state file", error=CheckpointError, kind="file"
    )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncation, foreign pickles: several exception types
        raise CheckpointError(
            f"cannot be read as a training state ({type(error).__name__}: {str(error)[:300]})",
            path=path,
            expected="a complete file written by mrisr.training.state_file.save_training_state",
            fix="resume from an earlier state file, or start the run again",
        ) from error
    if not (isinstance(payload, dict) and payload.get("format") == TRAINING_STATE_FORMAT):
        raise CheckpointError(
            "is not an mrisr training state",
            path=path,
            expected="a file written by mrisr.training.state_file.save_training_state",
            fix="pass the run's training state file",
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"has training state format {payload['format_version']}, newer than this "
            f"mrisr reads ({FORMAT_VERSION})",
            path=path,
            fix="upgrade mrisr",
        )
    return payload["state"]


def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy-global and Python ``random`` RNG states.

    Returns:
        A dict that :func:`save_training_state` stores as it is and
        :func:`restore_rng_state` puts back.
    """
    import torch

    legacy = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": legacy[0],
            "keys": torch.from_numpy(legacy[1].astype(np.int64)),
            "pos": int(legacy[2]),
            "has_gauss": int(legacy[3]),
            "cached_gaussian": float(legacy[4]),
        },
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back RNG states captured by :func:`capture_rng_state`.

    CUDA states are restored when CUDA is available with the same device count,
    and skipped with a warning otherwise (e.g. resuming a GPU run on CPU).
    """
    import torch

    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    legacy = state["numpy"]
    np.random.set_state(
        (
            legacy["bit_generator"],
            np.asarray(legacy["keys"].cpu().numpy(), dtype=np.uint32),
            legacy["pos"],
            legacy["has_gauss"],
            legacy["cached_gaussian"],
        )
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = state.get("cuda")
    if cuda is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([s.to("cpu", torch.uint8) for s in cuda])
        else:
            log.warning("CUDA RNG state not restored: it was saved for %d GPU(s)", len(cuda))


def _weights_only_friendly(value: Any) -> Any:
    """numpy arrays -> tensors, numpy scalars -> Python numbers, recursively."""
    import torch

    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        items = ((key, _weights_only_friendly(item)) for key, item in value.items())
        # OrderedDict stays one (model state dicts); defaultdict & co. become dicts.
        return OrderedDict(items) if isinstance(value, OrderedDict) else dict(items)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_weights_only_friendly(item) for item in value)
    return value
