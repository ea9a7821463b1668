"""Cubic B-spline interpolation along the thick axis: the classical slice model.

It is the baseline every network is measured against and the first model
behind the :class:`mrisr.upscale.SliceModel` interface.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage


@lru_cache(maxsize=64)
def cubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Cubic B-spline interpolation from ``n_in`` to ``n_out`` samples as a matrix.

    Sample ``i`` of the output sits at input coordinate
    ``(i + 0.5) * n_in / n_out - 0.5`` (field-of-view aligned, as in
    :mod:`mrisr.geometry`); the spline is prefiltered and mirrored at the edges
    (half-sample symmetric). Interpolation is linear in the data, so
    interpolating the identity gives the (n_out, n_in) matrix, read-only.
    """
    coordinates = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    identity = np.eye(n_in)
    rows = np.stack(
        [
            ndimage.map_coordinates(identity[:, j], coordinates[None], order=3, mode="reflect")
            for j in range(n_in)
        ],
        axis=1,
    )
    rows.flags.writeable = False
    return rows


class CubicSliceModel:
    """Cubic B-spline interpolation of each slice's rows.

    Implements the :class:`mrisr.upscale.SliceModel` protocol.
    """

    name = "cubic"
    factor_range: tuple[float, float] | None = None

    def upscale_slices(
        self, stack: np.ndarray, out_rows: int, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """(N, rows, cols) float32 -> (N, out_rows, cols) float32; one step, so no progress."""
        matrix = cubic_matrix(stack.shape[1], out_rows).astype(np.float32)
        # (out_rows, rows) @ (N, rows, cols) broadcasts over N; BLAS-backed, unlike einsum.
        return np.matmul(matrix, stack.astype(np.float32, copy=False))

    def describe(self) -> dict[str, Any]:
        """Provenance description."""
        return {"name": self.name, "kind": "cubic B-spline, reflect boundary"}
