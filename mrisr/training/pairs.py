"""Random (LR, HR) training pairs cut from high-resolution volumes.

From each high-resolution (HR) training volume mrisr cuts 2D patches that
cross a simulated thick axis, laid out as (rows, cols) = (thick axis, another
in-plane axis) exactly as at inference (:mod:`mrisr.slices`). The
low-resolution (LR) patch is made from the HR rows with the slice profile of
:func:`mrisr.simulate.simulate_thick_slices` (:func:`extract_pair`), so
training sees what inference will, with the degradations of
:mod:`mrisr.training.degrade` (profile, thickness, factor, noise, bias field,
gamma) drawn on top.

Batches are indexed by step: the pairs of step ``s`` on rank ``r`` depend only
on ``(seed, r, s)``. A resumed run therefore sees exactly the batches it would
have seen, any number of DataLoader workers gives the same stream, and every
DDP rank draws a different one (:class:`PairDataset`, :class:`StepSampler`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from mrisr.errors import ConfigError
from mrisr.geometry import round_half_up
from mrisr.simulate import slice_profile_matrix
from mrisr.slices import PAIR_KINDS
from mrisr.training.degrade import BatchDegradation, Degrader

if TYPE_CHECKING:
    from mrisr.training.data import TrainingVolume

#: Normalised intensity above which a pixel counts towards a patch's foreground.
FOREGROUND_LEVEL = 0.05
#: Tries at drawing a patch with enough foreground before taking the last one.
MAX_TRIES = 10


@lru_cache(maxsize=512)
def _profile(n_in: int, n_out: int, profile: str, thickness: float = 1.0) -> np.ndarray:
    """The (n_out, n_in) float32 profile matrix; ``thickness`` in slice spacings."""
    width = thickness * n_in / n_out
    matrix = slice_profile_matrix(n_in, n_out, profile=profile, thickness=width)  # type: ignore[arg-type]
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def pair_margin(rows_hr: int, rows_lr: int, thickness: float = 1.0) -> tuple[int, int]:
    """Extra HR and LR rows simulated on each side of a patch, then trimmed.

    The margin is a whole number of LR rows that spans a whole number of HR
    rows (so the LR grid of the padded window lines up with the patch's) and
    is wider than the slice profile, so the patch's edge rows are simulated
    exactly like interior ones.

    Args:
        rows_hr: HR rows of the patch.
        rows_lr: LR rows of the patch.
        thickness: slice thickness in slice spacings (box width or FWHM).

    Returns:
        (HR margin, LR margin) in rows.
    """
    g = math.gcd(rows_hr, rows_lr)
    unit_hr, unit_lr = rows_hr // g, rows_lr // g
    spacing = rows_hr / rows_lr
    # A box profile reaches thickness / 2 beyond a slice centre; a Gaussian of
    # FWHM `thickness` reaches ~1.3 thickness (3 sigma). Two thicknesses cover both.
    needed = math.ceil(2 * spacing * max(1.0, thickness)) + 1
    units = max(1, math.ceil(needed / unit_hr))
    return units * unit_hr, units * unit_lr


def _plane_window(
    data: np.ndarray,
    thick_axis: int,
    slice_axis: int,
    index: int,
    row_start: int,
    row_stop: int,
    col_start: int,
    col_stop: int,
) -> np.ndarray:
    """(rows, cols) = (thick axis, other axis) window of slice ``index``, zero outside the volume."""
    other = 3 - thick_axis - slice_axis
    n_rows, n_cols = data.shape[thick_axis], data.shape[other]
    window = np.zeros((row_stop - row_start, col_stop - col_start), np.float32)
    r0, r1 = max(row_start, 0), min(row_stop, n_rows)
    c0, c1 = max(col_start, 0), min(col_stop, n_cols)
    if r0 >= r1 or c0 >= c1 or not 0 <= index < data.shape[slice_axis]:
        return window
    where: list[Any] = [None, None, None]
    where[slice_axis] = index
    where[thick_axis] = slice(r0, r1)
    where[other] = slice(c0, c1)
    block = data[tuple(where)]
    if thick_axis > other:  # the remaining 2D block is (other, thick): put rows first
        block = block.T
    window[r0 - row_start : r1 - row_start, c0 - col_start : c1 - col_start] = block
    return window


def extract_pair(
    data: np.ndarray,
    thick_axis: int,
    slice_axis: int,
    index: int,
    row0: int,
    col0: int,
    rows_hr: int,
    cols: int,
    rows_lr: int,
    profile: str = "mean",
    thickness: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One (LR, HR) training pair from a volume, without other degradations.

    The HR patch is ``data`` itself: rows ``row0 .. row0 + rows_hr`` along
    ``thick_axis`` and columns ``col0 .. col0 + cols`` along the remaining
    axis, in slice ``index`` along ``slice_axis`` (zero outside the volume).
    The LR patch applies :func:`mrisr.simulate.slice_profile_matrix` to the
    rows of a window padded by :func:`pair_margin` and trims the margin, so
    where the whole window lies inside the volume and ``row0`` is a multiple
    of the effective factor ``rows_hr / rows_lr``, it equals the matching
    rows of :func:`mrisr.simulate.simulate_thick_slices` of the volume.

    Args:
        data: (X, Y, Z) normalised volume.
        thick_axis: the axis made thick (the rows).
        slice_axis: the axis indexing the 2D slices.
        index: slice number along ``slice_axis``.
        row0: first HR row (along ``thick_axis``).
        col0: first column (along the third axis).
        rows_hr: HR rows.
        cols: columns.
        rows_lr: LR rows (``round(rows_hr / factor)``).
        profile: ``"mean"`` or ``"gaussian"``.
        thickness: slice thickness (box width or FWHM) in slice spacings.

    Returns:
        (lr, hr): float32 arrays of shapes (rows_lr, cols) and (rows_hr, cols).

    Raises:
        ConfigError: ``rows_lr`` outside ``[1, rows_hr]``.
    """
    window, margins = _padded_window(
        data, thick_axis, slice_axis, index, row0, col0, rows_hr, cols, rows_lr, thickness
    )
    return _simulate(window, margins, rows_hr, rows_lr, profile, thickness)


def _padded_window(
    data: np.ndarray,
    thick_axis: int,
    slice_axis: int,
    index: int,
    row0: int,
    col0: int,
    rows_hr: int,
    cols: int,
    rows_lr: int,
    thickness: float,
) -> tuple[np.ndarray, tuple[int, int]]:
    """The HR patch with :func:`pair_margin` rows above and below, and the margins."""
    if not 1 <= rows_lr <= rows_hr:
        raise ConfigError(f"rows_lr must be in [1, rows_hr={rows_hr}], got {rows_lr}")
    m_hr, m_lr = pair_margin(rows_hr, rows_lr, thickness)
    window = _plane_window(
        data, thick_axis, slice_axis, index, row0 - m_hr, row0 + rows_hr + m_hr, col0, col0 + cols
    )
    return window, (m_hr, m_lr)


def _simulate(
    window: np.ndarray,
    margins: tuple[int, int],
    rows_hr: int,
    rows_lr: int,
    profile: str,
    thickness: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(lr, hr) of a padded window: the profile applied to its rows, margins trimmed."""
    m_hr, m_lr = margins
    matrix = _profile(rows_hr + 2 * m_hr, rows_lr + 2 * m_lr, profile, round(thickness, 4))
    lr = (matrix @ window)[m_lr : m_lr + rows_lr]
    hr = window[m_hr : m_hr + rows_hr]
    return np.ascontiguousarray(lr), np.ascontiguousarray(hr)


def lr_rows(rows_hr: int, factor: float) -> int:
    """LR rows of an HR patch at ``factor``: ``round(rows_hr / factor)``, at least 1."""
    return max(1, round_half_up(rows_hr / factor))


class PairDataset:
    """Batches of random (LR, HR) patch pairs, one batch per step index.

    A map-style dataset (``dataset[step]`` is the whole batch of that step):
    the factor, slice profile and thickness are drawn per batch
    (:meth:`Degrader.draw_batch`) so that all its LR patches have the same
    rows. Use it with ``DataLoader(dataset, batch_size=None,
    sampler=StepSampler(start, stop))``.

    Each pair: a volume, a (thick axis, slicing axis) kind among ``kinds``, a
    signal voxel of the volume (:attr:`TrainingVolume.centres`) to place the
    patch around; patches with less than ``min_foreground`` foreground are
    redrawn (up to :data:`MAX_TRIES` times). Then the degrader's gamma and
    bias field on the HR window, the slice profile (:func:`extract_pair`), and
    its Rician noise on the LR patch. Augmentation: random flips of rows and
    of columns, applied to LR and HR alike (the slice profile is symmetric, so
    a flipped pair is still a valid pair). Transposition is never used: it
    would move the thick axis out of the rows.

    Args:
        volumes: prepared training volumes.
        patch_size: HR rows and columns.
        factor_bounds: (low, high) factors; equal for a single factor. Ignored
            when ``degrader`` is given (it holds the factors).
        batch_size: pairs per batch.
        kinds: (thick axis, slicing axis) pairs to draw from.
        profile: slice profile (without a ``degrader``).
        min_foreground: least foreground fraction of an HR patch.
        seed: base seed.
        rank: DDP rank (each rank draws its own stream).
        degrader: the degradations to draw; None: the fixed ``profile`` at the
            spacing's thickness, factors uniform in ``factor_bounds``, no others.
    """

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        *,
        patch_size: int,
        factor_bounds: tuple[float, float] = (4.0, 4.0),
        batch_size: int,
        kinds: Sequence[tuple[int, int]] = PAIR_KINDS,
        profile: str = "mean",
        min_foreground: float = 0.3,
        seed: int = 0,
        rank: int = 0,
        degrader: Degrader | None = None,
    ) -> None:
        if not volumes:
            raise ConfigError("PairDataset needs at least one volume")
        if not kinds or any(k not in PAIR_KINDS for k in kinds):
            raise ConfigError(f"kinds must be among {PAIR_KINDS}, got {list(kinds)}")
        self.volumes = tuple(volumes)
        self.patch_size = int(patch_size)
        self.batch_size = int(batch_size)
        self.kinds = tuple(tuple(k) for k in kinds)
        self.min_foreground = float(min_foreground)
        self.seed = int(seed)
        self.rank = int(rank)
        if degrader is None:
            from mrisr.config import DataConfig

            factor_bounds = (float(factor_bounds[0]), float(factor_bounds[1]))
            degrader = Degrader(
                DataConfig(factor=factor_bounds[0], factor_range=factor_bounds, profile=profile)
            )
        self.degrader = degrader

    def __len__(self) -> int:
        # Steps are unbounded; the sampler decides which are drawn.
        return 2**62

    def rng(self, step: int) -> np.random.Generator:
        """The generator of step ``step`` on this rank."""
        return np.random.default_rng([self.seed, self.rank, int(step)])

    def batch_arrays(self, step: int) -> tuple[np.ndarray, np.ndarray, float]:
        """The pairs of ``step`` as numpy arrays.

        Returns:
            (lr (B, 1, rows_lr, P), hr (B, 1, P, P), effective factor P / rows_lr).
        """
        rng = self.rng(step)
        size = self.patch_size
        batch = self.degrader.draw_batch(rng)
        rows_lr = lr_rows(size, batch.factor)
        lr = np.empty((self.batch_size, 1, rows_lr, size), np.float32)
        hr = np.empty((self.batch_size, 1, size, size), np.float32)
        for i in range(self.batch_size):
            lr[i, 0], hr[i, 0] = self._pair(rng, rows_lr, batch)
        return lr, hr, size / rows_lr

    def __getitem__(self, step: int) -> dict[str, Any]:
        """``{"lr": (B, 1, rows_lr, P), "hr": (B, 1, P, P), "factor": float, "step": int}`` tensors."""
        import torch

        lr, hr, factor = self.batch_arrays(step)
        return {
            "lr": torch.from_numpy(lr),
            "hr": torch.from_numpy(hr),
            "factor": factor,
            "step": step,
        }

    def _pair(
        self, rng: np.random.Generator, rows_lr: int, batch: BatchDegradation
    ) -> tuple[np.ndarray, np.ndarray]:
        size = self.patch_size
        for _ in range(MAX_TRIES):
            volume = self.volumes[rng.integers(len(self.volumes))]
            thick, cut = self.kinds[rng.integers(len(self.kinds))]
            other = 3 - thick - cut
            centre = volume.centres[rng.integers(len(volume.centres))]
            # The chosen voxel lands anywhere in the patch; patches stay inside
            # the volume where it is big enough (zero padding otherwise).
            row0 = _place(
                int(centre[thick]) - int(rng.integers(size)), size, volume.data.shape[thick]
            )
            col0 = _place(
                int(centre[other]) - int(rng.integers(size)), size, volume.data.shape[other]
            )
            window, margins = _padded_window(
                volume.data, thick, cut, int(centre[cut]), row0, col0, size, size, rows_lr,
                batch.thickness,
            )  # fmt: skip
            patch = window[margins[0] : margins[0] + size]
            if np.mean(patch > FOREGROUND_LEVEL) >= self.min_foreground:
                break
        window = self.degrader.object_changes(window, rng)
        lr, hr = _simulate(window, margins, size, rows_lr, batch.profile, batch.thickness)
        lr = self.degrader.acquisition_noise(lr, volume.signal, rng)
        if rng.random() < 0.5:
            lr, hr = lr[::-1], hr[::-1]
        if rng.random() < 0.5:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        return lr, hr


def _place(start: int, size: int, length: int) -> int:
    """Clamp a patch start so the patch lies inside [0, length) when it fits."""
    if length <= size:
        return (length - size) // 2
    return min(max(start, 0), length - size)


class StepSampler:
    """Yields step indices ``start, start + 1, ..., stop - 1`` for :class:`PairDataset`.

    Every DDP rank uses the same steps; the dataset's ``rank`` makes their
    pairs differ, so no DistributedSampler is needed.
    """

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = int(start), int(stop)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def make_loader(dataset: PairDataset, start: int, stop: int, *, workers: int = 0) -> Any:
    """A DataLoader over steps ``start .. stop - 1`` of ``dataset`` (batches are pre-made)."""
    from torch.utils.data import DataLoader

    from mrisr.training.interrupt import ignore_stop_signals

    return DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=None,
        sampler=StepSampler(start, stop),
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        # Ctrl-C stops the run after a step (the main process saves): workers must not die on it.
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )
