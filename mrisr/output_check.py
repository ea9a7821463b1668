"""Sanity checks on what a model produces, before anything is written.

A diverged training run leaves a model file whose description and hashes are
valid but whose weights are NaN or huge; run as is, it yields an all-NaN
volume or values of 1e31 that would be written out silently. These checks
refuse both: on the network's fused output before a volume is saved, and on
the weights before a model file is saved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import CheckpointError

#: The output may leave the input's intensity range by this many times the
#: range on either side (sharpening overshoots; 1e31 does not).
RANGE_MARGIN = 10.0

_RETRAIN = (
    "the model's training probably diverged: use another model (e.g. --model cubic or a bundled "
    "one), or retrain from an earlier checkpoint with a lower learning rate"
)


def check_model_output(
    output: np.ndarray,
    reference: np.ndarray,
    model: Any,
    source: str | Path | None,
    to_input: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Refuse a model output that is not finite or far outside the input's intensities.

    Args:
        output: the fused network output (normalised units), any shape.
        reference: the normalised input it was computed from.
        model: the slice model (its ``name`` and ``describe()["path"]`` are named).
        source: the scan, for the message.
        to_input: maps normalised values back to the input's units, for the message.

    Raises:
        CheckpointError: the output holds NaN or Inf, or values beyond
            :data:`RANGE_MARGIN` times the input's range outside its min/max.
    """
    to_input = to_input or (lambda values: values)
    finite = np.isfinite(output)
    low, high = float(np.min(reference)), float(np.max(reference))
    span = (high - low) or 1.0
    bounds = (low - RANGE_MARGIN * span, high + RANGE_MARGIN * span)
    if finite.all():
        worst_low, worst_high = float(output.min()), float(output.max())
        if worst_low >= bounds[0] and worst_high <= bounds[1]:
            return
        shown = to_input(np.array([worst_low, worst_high, low, high], dtype=np.float64))
        problem = (
            f"produced absurd values, from {shown[0]:.4g} to {shown[1]:.4g}, for an input whose "
            f"intensities lie in [{shown[2]:.4g}, {shown[3]:.4g}]"
        )
    else:
        bad = int(output.size - np.count_nonzero(finite))
        problem = f"produced {bad:,} non-finite voxels (NaN or Inf) out of {output.size:,}" + (
            ", all of them" if bad == output.size else ""
        )
    description = model.describe() if hasattr(model, "describe") else {}
    path = description.get("path") if isinstance(description, dict) else None
    raise CheckpointError(
        f"model {getattr(model, 'name', type(model).__name__)!r} {problem} when upscaling "
        f"{source or 'the scan'}; nothing was written",
        path=path or source,
        expected=f"finite values within {RANGE_MARGIN:g} x the input's intensity range of it",
        fix=_RETRAIN,
    )


def check_finite_weights(tensors: Mapping[str, Any], path: str | Path) -> None:
    """Refuse to save a model whose weights hold NaN or Inf.

    Args:
        tensors: name -> torch tensor, as about to be written.
        path: the model file, for the message.

    Raises:
        CheckpointError: some floating-point tensor holds a non-finite value.
    """
    import torch

    bad = {
        name: int((~torch.isfinite(tensor)).sum())
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    }
    if bad:
        names = ", ".join(f"{name} ({count:,})" for name, count in list(bad.items())[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(
            f"cannot be saved as a model: {len(bad)} weight tensors hold NaN or Inf values: "
            f"{names}{more}",
            path=path,
            expected="finite weights",
            fix="training diverged: resume from an earlier checkpoint with a lower learning rate "
            "(or gradient clipping), or use the last good model file",
        )
