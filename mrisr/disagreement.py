"""Where the result should not be trusted: the spread between independent passes of the model.

mrisr super-resolves a scan twice, once in each plane that contains the thick
axis, and fuses the two. Where the two planes (and, with test-time
augmentation, flipped copies of each plane's slices) agree, the model's
answer does not depend on how it was asked; where they disagree, it invents
more. The per-voxel standard deviation across those passes is the
disagreement map, saved beside the output (the ensemble-spread idea of
Lakshminarayanan et al., "Simple and scalable predictive uncertainty
estimation using deep ensembles", NeurIPS 2017, and of test-time augmentation,
Wang et al., "Aleatoric uncertainty estimation with test-time augmentation
for medical image segmentation", Neurocomputing 2019). In NIfTI the map is
stored as int16 with a scale factor (:data:`mrisr.io.outputs.EXTRA_DTYPE`):
within 1/65534 of its maximum, and about a ninth of the float32 file's size.

Flips: a slice stack is (N, rows, cols) with rows along the thick axis;
flipping rows and/or columns, running the model and flipping back gives
another pass on the same grid (the field-of-view-aligned grid is symmetric
under flips, see docs/geometry.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Flips of a slice stack: (flip rows, flip columns). The first is no flip.
NO_FLIP: tuple[tuple[bool, bool], ...] = ((False, False),)
TTA_FLIPS: tuple[tuple[bool, bool], ...] = (
    (False, False),
    (False, True),
    (True, False),
    (True, True),
)


def flips_for(tta: bool) -> tuple[tuple[bool, bool], ...]:
    """The flips of each plane's stack: all four with test-time augmentation, else none."""
    return TTA_FLIPS if tta else NO_FLIP


def flip_stack(stack: np.ndarray, flip: tuple[bool, bool]) -> np.ndarray:
    """Flip an (N, rows, cols) stack along rows and/or columns; its own inverse.

    Args:
        stack: (N, rows, cols) slices.
        flip: (flip rows, flip columns).

    Returns:
        A contiguous copy (or ``stack`` itself when nothing is flipped).
    """
    axes = tuple(axis for axis, wanted in zip((1, 2), flip, strict=True) if wanted)
    return np.ascontiguousarray(np.flip(stack, axes)) if axes else stack


def spread(passes: Sequence[np.ndarray]) -> np.ndarray:
    """Per-voxel standard deviation across same-shape passes (population, ddof 0).

    For two passes this is ``|a - b| / 2``.

    Args:
        passes: two or more (X, Y, Z) arrays on the same grid.

    Returns:
        (X, Y, Z) float32 array, >= 0, in the passes' units.

    Raises:
        ValueError: fewer than two passes, or passes of different shapes.
    """
    if len(passes) < 2:
        raise ValueError(f"a spread needs at least two passes, got {len(passes)}")
    shape = np.shape(passes[0])
    if any(np.shape(p) != shape for p in passes):
        raise ValueError(f"passes differ in shape: {[np.shape(p) for p in passes]}")
    if len(passes) == 2:
        # The common case (two planes, no TTA): one subtraction instead of
        # float64 sums, about 10x faster on a 256 x 256 x 160 output.
        first, second = (np.asarray(p, np.float32) for p in passes)
        difference = np.subtract(first, second)
        np.abs(difference, out=difference)
        difference *= np.float32(0.5)
        return difference
    # Running sums keep memory at two volumes however many passes there are.
    total = np.zeros(shape, np.float64)
    squares = np.zeros(shape, np.float64)
    for values in passes:
        values = np.asarray(values, np.float64)
        total += values
        squares += values * values
    mean = total / len(passes)
    variance = np.maximum(squares / len(passes) - mean * mean, 0.0)
    return np.sqrt(variance).astype(np.float32)


def summary(disagreement: np.ndarray, value_range: float) -> dict[str, float]:
    """Numbers for the sidecar: mean, 99th percentile and maximum, also as fractions of the range.

    Args:
        disagreement: the map, in intensity units.
        value_range: the input's intensity range (max - min), for the fractions.

    Returns:
        ``{"mean", "p99", "max", "mean_fraction", "p99_fraction"}``.
    """
    values = np.asarray(disagreement, np.float64)
    mean, p99, top = float(values.mean()), float(np.percentile(values, 99)), float(values.max())
    scale = value_range if value_range > 0 else 1.0
    return {
        "mean": mean,
        "p99": p99,
        "max": top,
        "mean_fraction": mean / scale,
        "p99_fraction": p99 / scale,
    }
