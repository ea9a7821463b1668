"""Training data: volumes, the held-out split, random paired patches.

From each high-resolution (HR) training volume mrisr cuts 2D patches that
cross a simulated thick axis, laid out as (rows, cols) = (thick axis, another
in-plane axis) exactly as at inference (:mod:`mrisr.slices`). The low-resolution
(LR) patch is made from the HR rows with the same slice profile as
:func:`mrisr.simulate.simulate_thick_slices` (:func:`extract_pair`), so training
sees what inference will.

Batches are indexed by step: the pairs of step ``s`` on rank ``r`` depend only
on ``(seed, r, s)``. A resumed run therefore sees exactly the batches it would
have seen, any number of DataLoader workers gives the same stream, and every
DDP rank draws a different one (:class:`PairDataset`, :class:`StepSampler`).

Spacing: training volumes are treated as if their voxels were isotropic. The
bundled training set is 1 mm or close to it (IXI002 T1 is 1.2 x 0.94 x
0.94 mm); such mild anisotropy only blurs the "thin" target a little along
one axis, so volumes are not resampled; :func:`load_training_volumes` logs the
spacing of any volume more than 10 % anisotropic. A volume more than
:data:`MAX_ANISOTROPY` times anisotropic (a 1 x 1 x 4 mm scan) is no
high-resolution truth: :func:`find_volumes` refuses it, naming it, unless
``data.allow_anisotropic`` says otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.config import DataConfig
from mrisr.errors import ConfigError, InputError
from mrisr.geometry import round_half_up
from mrisr.intensity import Normalisation, fit_normalisation
from mrisr.io.files import READ_FORMATS, require_existing, stem, suffix
from mrisr.simulate import slice_profile_matrix
from mrisr.slices import PAIR_KINDS
from mrisr.volume import Volume

log = logging.getLogger(__name__)

#: File endings of training volumes.
VOLUME_SUFFIXES: tuple[str, ...] = tuple(
    ending for ending, kind in READ_FORMATS.items() if kind in ("nifti", "mgh")
)
#: Normalised intensity above which a voxel counts as foreground.
FOREGROUND_LEVEL = 0.05
#: Foreground voxels kept per volume as patch centres (a random subset).
MAX_CENTRES = 200_000
#: Tries at drawing a patch with enough foreground before taking the last one.
MAX_TRIES = 10
#: Largest ratio of a training volume's coarsest to finest voxel size.
MAX_ANISOTROPY = 1.3


# ------------------------------------------------------------------ volumes


def read_volume(path: str | Path) -> Volume:
    """Load one volume (validated): the single place where training reads image files.

    Raises:
        InputError: the file is missing, damaged or not a usable 3D volume.
    """
    from mrisr.io import load_volume

    return load_volume(path)


def volume_name(path: str | Path) -> str:
    """File name without its image ending (``ixi002_t1.nii.gz`` -> ``ixi002_t1``)."""
    return stem(path)


def _is_volume_file(path: Path) -> bool:
    return path.is_file() and suffix(path) in VOLUME_SUFFIXES


def find_volumes(folder: str | Path, *, allow_anisotropic: bool = False) -> list[Path]:
    """The readable training volumes in a folder, sorted by name.

    Files whose header cannot be read (or that are not 3D) are skipped with a
    WARNING naming them; voxel data is read later by
    :func:`load_training_volumes`. Only headers are read, so an anisotropic
    volume is refused before anything is loaded.

    Args:
        folder: folder of .nii, .nii.gz, .mgz or .mgh files (not searched recursively).
        allow_anisotropic: keep volumes more than :data:`MAX_ANISOTROPY` times anisotropic.

    Returns:
        Sorted list of paths.

    Raises:
        InputError: the folder does not exist, holds no readable volume, or
            holds anisotropic volumes (without ``allow_anisotropic``).
    """
    import nibabel as nib

    folder = require_existing(
        folder, expected="a folder of training volumes", fix="pass --volumes DIR", kind="folder"
    )
    candidates = sorted(p for p in folder.iterdir() if _is_volume_file(p))
    readable, spacings = [], {}
    for path in candidates:
        try:
            image = nib.load(str(path))
            shape = image.shape
        except Exception as error:  # nibabel raises many types for damaged files
            log.warning("skipping %s: unreadable (%s)", path, str(error).splitlines()[0][:200])
            continue
        if len(shape) < 3 or (len(shape) > 3 and any(n != 1 for n in shape[3:])):
            log.warning("skipping %s: not a 3D volume (shape %s)", path, tuple(shape))
            continue
        readable.append(path)
        spacings[path] = np.sqrt((np.asarray(image.affine)[:3, :3] ** 2).sum(axis=0))
    if not readable:
        raise InputError(
            f"holds no readable volume ({len(candidates)} candidate file(s))",
            path=folder,
            expected=f"3D images ending in {', '.join(VOLUME_SUFFIXES)}",
            fix="check the folder; see the warnings above for skipped files",
        )
    if not allow_anisotropic:
        check_isotropic(folder, spacings)
    return readable


def check_isotropic(folder: Path, spacings: dict[Path, np.ndarray]) -> None:
    """Refuse volumes whose voxels are more than :data:`MAX_ANISOTROPY` times anisotropic.

    Args:
        folder: the training folder (for the message).
        spacings: each volume's (3,) voxel sizes in mm.

    Raises:
        InputError: naming every such volume, its spacing and the isotropic
            size to resample it to.
    """
    bad = {
        path: sizes
        for path, sizes in spacings.items()
        if sizes.min() <= 0 or sizes.max() / sizes.min() > MAX_ANISOTROPY
    }
    if not bad:
        return
    listed = "; ".join(
        f"{path.name} ({' x '.join(f'{s:.3g}' for s in sizes)} mm: resample to "
        f"{sizes.max():.3g} mm isotropic)"
        for path, sizes in bad.items()
    )
    raise InputError(
        f"holds {len(bad)} volume(s) too anisotropic to serve as high-resolution truth: {listed}",
        path=folder,
        expected=f"voxels at most {MAX_ANISOTROPY:g} times longer along one axis than another",
        fix="resample each to isotropic voxels of its coarsest spacing first (e.g. "
        "nibabel.processing.resample_to_output(image, voxel_sizes=1), or "
        "mri_convert --voxsize 1 1 1), move it out of the folder, or pass "
        "--allow-anisotropic (data.allow_anisotropic: true) to train on it as if isotropic",
    )


def split_validation(
    paths: Sequence[Path], val_volume: str = "auto"
) -> tuple[list[Path], Path | None]:
    """Hold one volume out for validation.

    Args:
        paths: the training volumes (as from :func:`find_volumes`).
        val_volume: file name or name without ending; ``"auto"``: the last
            one alphabetically (when there are at least two); ``"none"``: none.

    Returns:
        (training paths, held-out path or None).

    Raises:
        ConfigError: the named volume is not among ``paths``, or holding it
            out leaves nothing to train on.
    """
    paths = sorted(paths, key=lambda p: p.name)
    if val_volume == "none":
        return list(paths), None
    if val_volume == "auto":
        if len(paths) < 2:
            log.warning("only one training volume: validating on a volume that is also trained on")
            return list(paths), paths[0]
        return list(paths[:-1]), paths[-1]
    matches = [p for p in paths if val_volume in (p.name, volume_name(p))]
    if not matches:
        raise ConfigError(
            f"validation volume {val_volume!r} is not among the training volumes",
            expected=f"one of {', '.join(volume_name(p) for p in paths)}, auto or none",
            fix="pass --val-volume with one of those names",
        )
    held = matches[0]
    rest = [p for p in paths if p != held]
    if not rest:
        raise ConfigError(
            f"holding out {held.name} leaves no volume to train on",
            fix="add volumes or pass --val-volume none",
        )
    return rest, held


@dataclass(frozen=True)
class TrainingVolume:
    """A normalised HR volume ready for patch sampling.

    Attributes:
        name: file name without ending.
        data: (X, Y, Z) float32 normalised voxels, cropped to the foreground's
            bounding box plus a margin.
        normalisation: the map applied (as inference fits it).
        spacing: (3,) voxel sizes in mm of the file.
        centres: (N, 3) int32 foreground voxel coordinates to centre patches on.
    """

    name: str
    data: np.ndarray = field(repr=False)
    normalisation: Normalisation
    spacing: tuple[float, float, float]
    centres: np.ndarray = field(repr=False)


def prepare_volume(volume: Volume, name: str, *, seed: int = 0, margin: int = 8) -> TrainingVolume:
    """Normalise a volume as inference does and find where its foreground is.

    Args:
        volume: the HR volume.
        name: for logs and run summaries.
        seed: picks the subset of foreground voxels kept as patch centres.
        margin: voxels of background kept around the foreground's bounding box.

    Returns:
        A :class:`TrainingVolume` (the input is not modified).

    Raises:
        InputError: the volume has no foreground.
    """
    normalisation = fit_normalisation(volume.data)
    data = normalisation.apply(volume.data)
    foreground = data > FOREGROUND_LEVEL
    if not foreground.any():
        raise InputError(
            f"volume {name} has no voxel above the background level",
            path=volume.source,
            expected="an image with some contrast",
        )
    lows = [
        max(
            int(np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != ax)))[0])
            - margin,
            0,
        )
        for ax in range(3)
    ]
    highs = [
        min(
            int(np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != ax)))[-1])
            + margin
            + 1,
            data.shape[ax],
        )
        for ax in range(3)
    ]
    box = tuple(slice(lo, hi) for lo, hi in zip(lows, highs, strict=True))
    data = np.ascontiguousarray(data[box])
    centres = np.argwhere(foreground[box]).astype(np.int32)
    if len(centres) > MAX_CENTRES:
        rng = np.random.default_rng([seed, len(centres)])
        centres = centres[np.sort(rng.choice(len(centres), MAX_CENTRES, replace=False))]
    spacing = tuple(float(s) for s in volume.spacing)
    return TrainingVolume(
        name=name, data=data, normalisation=normalisation, spacing=spacing, centres=centres
    )  # type: ignore[arg-type]


def load_training_volumes(paths: Sequence[Path], *, seed: int = 0) -> list[TrainingVolume]:
    """Load, normalise and crop training volumes; unreadable ones are skipped with a WARNING.

    Raises:
        InputError: none could be loaded.
    """
    volumes = []
    for path in paths:
        try:
            volume = read_volume(path)
            prepared = prepare_volume(volume, volume_name(path), seed=seed)
        except (InputError, OSError, ValueError, EOFError) as error:
            log.warning("skipping %s: %s", path, error)
            continue
        spacing = np.asarray(prepared.spacing)
        if spacing.max() / spacing.min() > 1.1:
            log.info(
                "%s has voxels of %s mm; treated as isotropic for training",
                prepared.name,
                " x ".join(f"{s:.3g}" for s in spacing),
            )
        volumes.append(prepared)
    if not volumes:
        raise InputError(
            f"none of the {len(paths)} training volume(s) could be loaded",
            path=paths[0].parent if paths else None,
            fix="see the warnings above for why each was skipped",
        )
    return volumes


# -------------------------------------------------------------------- pairs


@lru_cache(maxsize=256)
def _profile(n_in: int, n_out: int, profile: str) -> np.ndarray:
    matrix = slice_profile_matrix(n_in, n_out, profile=profile).astype(np.float32)  # type: ignore[arg-type]
    matrix.flags.writeable = False
    return matrix


def pair_margin(rows_hr: int, rows_lr: int) -> tuple[int, int]:
    """Extra HR and LR rows simulated on each side of a patch, then trimmed.

    The margin is a whole number of LR rows that spans a whole number of HR
    rows (so the LR grid of the padded window lines up with the patch's) and
    is wider than the slice profile, so the patch's edge rows are simulated
    exactly like interior ones.

    Returns:
        (HR margin, LR margin) in rows.
    """
    g = math.gcd(rows_hr, rows_lr)
    unit_hr, unit_lr = rows_hr // g, rows_lr // g
    spacing = rows_hr / rows_lr
    # A box profile reaches spacing / 2 rows beyond a slice centre; a Gaussian
    # of FWHM `spacing` reaches ~1.3 spacing (3 sigma). Two spacings cover both.
    needed = math.ceil(2 * spacing) + 1
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
) -> tuple[np.ndarray, np.ndarray]:
    """One (LR, HR) training pair from a volume.

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

    Returns:
        (lr, hr): float32 arrays of shapes (rows_lr, cols) and (rows_hr, cols).

    Raises:
        ConfigError: ``rows_lr`` outside ``[1, rows_hr]``.
    """
    if not 1 <= rows_lr <= rows_hr:
        raise ConfigError(f"rows_lr must be in [1, rows_hr={rows_hr}], got {rows_lr}")
    m_hr, m_lr = pair_margin(rows_hr, rows_lr)
    window = _plane_window(
        data, thick_axis, slice_axis, index, row0 - m_hr, row0 + rows_hr + m_hr, col0, col0 + cols
    )
    matrix = _profile(rows_hr + 2 * m_hr, rows_lr + 2 * m_lr, profile)
    lr = (matrix @ window)[m_lr : m_lr + rows_lr]
    hr = window[m_hr : m_hr + rows_hr]
    return np.ascontiguousarray(lr), np.ascontiguousarray(hr)


def draw_factor(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A factor uniform in ``bounds`` (the low bound itself when they are equal)."""
    low, high = bounds
    return float(low) if high <= low else float(rng.uniform(low, high))


def lr_rows(rows_hr: int, factor: float) -> int:
    """LR rows of an HR patch at ``factor``: ``round(rows_hr / factor)``, at least 1."""
    return max(1, round_half_up(rows_hr / factor))


class PairDataset:
    """Batches of random (LR, HR) patch pairs, one batch per step index.

    A map-style dataset (``dataset[step]`` is the whole batch of that step):
    the factor is drawn per batch so that all its LR patches have the same
    rows. Use it with ``DataLoader(dataset, batch_size=None,
    sampler=StepSampler(start, stop))``.

    Each pair: a volume, a (thick axis, slicing axis) kind among ``kinds``, a
    foreground voxel to place the patch around, then :func:`extract_pair`;
    patches with less than ``min_foreground`` foreground are redrawn (up to
    :data:`MAX_TRIES` times). Augmentation: random flips of rows and of
    columns, applied to LR and HR alike (the slice profile is symmetric, so
    a flipped pair is still a valid pair). Transposition is never used: it
    would move the thick axis out of the rows.

    Args:
        volumes: prepared training volumes.
        patch_size: HR rows and columns.
        factor_bounds: (low, high) factors; equal for a single factor.
        batch_size: pairs per batch.
        kinds: (thick axis, slicing axis) pairs to draw from.
        profile: slice profile.
        min_foreground: least foreground fraction of an HR patch.
        seed: base seed.
        rank: DDP rank (each rank draws its own stream).
    """

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        *,
        patch_size: int,
        factor_bounds: tuple[float, float],
        batch_size: int,
        kinds: Sequence[tuple[int, int]] = PAIR_KINDS,
        profile: str = "mean",
        min_foreground: float = 0.3,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if not volumes:
            raise ConfigError("PairDataset needs at least one volume")
        if not kinds or any(k not in PAIR_KINDS for k in kinds):
            raise ConfigError(f"kinds must be among {PAIR_KINDS}, got {list(kinds)}")
        self.volumes = tuple(volumes)
        self.patch_size = int(patch_size)
        self.factor_bounds = (float(factor_bounds[0]), float(factor_bounds[1]))
        self.batch_size = int(batch_size)
        self.kinds = tuple(tuple(k) for k in kinds)
        self.profile = profile
        self.min_foreground = float(min_foreground)
        self.seed = int(seed)
        self.rank = int(rank)

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
        rows_lr = lr_rows(size, draw_factor(rng, self.factor_bounds))
        lr = np.empty((self.batch_size, 1, rows_lr, size), np.float32)
        hr = np.empty((self.batch_size, 1, size, size), np.float32)
        for i in range(self.batch_size):
            lr[i, 0], hr[i, 0] = self._pair(rng, rows_lr)
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

    def _pair(self, rng: np.random.Generator, rows_lr: int) -> tuple[np.ndarray, np.ndarray]:
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
            lr, hr = extract_pair(
                volume.data,
                thick,
                cut,
                int(centre[cut]),
                row0,
                col0,
                size,
                size,
                rows_lr,
                self.profile,
            )
            if np.mean(hr > FOREGROUND_LEVEL) >= self.min_foreground:
                break
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


# ----------------------------------------------------------- the whole set


@dataclass
class TrainingData:
    """What a run trains and validates on.

    Attributes:
        dataset: the stream of (LR, HR) batches.
        names: the training volumes' names.
        held_out: the held-out volume (whole), or None.
        held_out_name: its name, or None.
        kinds: the (thick axis, slicing axis) kinds drawn.
    """

    dataset: PairDataset
    names: list[str]
    held_out: Volume | None
    held_out_name: str | None
    kinds: list[tuple[int, int]]


def load_training_data(settings: DataConfig, *, seed: int = 0, rank: int = 0) -> TrainingData:
    """Find the volumes, hold one out, load the rest and make the pair stream.

    An unreadable held-out volume chosen automatically is skipped (the next
    one is held out), as unreadable training volumes are.

    Args:
        settings: the config's ``data`` section (``volumes`` set).
        seed: the run's seed.
        rank: this process's DDP rank (each draws its own pairs).

    Returns:
        The :class:`TrainingData`.

    Raises:
        InputError: no readable volume, or a held-out volume named in the
            settings that cannot be read.
        ConfigError: a held-out name that is not among the volumes.
    """
    all_paths = find_volumes(str(settings.volumes), allow_anisotropic=settings.allow_anisotropic)
    while True:
        train_paths, val_path = split_validation(all_paths, settings.val_volume)
        try:
            held_out = read_volume(val_path) if val_path is not None else None
            break
        except (InputError, OSError, ValueError, EOFError) as error:
            # As for training volumes: skip an unreadable one, unless it was asked for by name.
            if settings.val_volume != "auto" or len(all_paths) < 2:
                raise
            log.warning("skipping %s: %s", val_path, error)
            all_paths = [p for p in all_paths if p != val_path]
    volumes = load_training_volumes(train_paths, seed=seed)
    kinds = [kind for kind in PAIR_KINDS if kind[0] in settings.axes]
    dataset = PairDataset(
        volumes,
        patch_size=settings.patch_size,
        factor_bounds=settings.factor_bounds,
        batch_size=settings.batch_size,
        kinds=kinds,
        profile=settings.profile,
        min_foreground=settings.min_foreground,
        seed=seed,
        rank=rank,
    )
    held_out_name = volume_name(val_path) if val_path is not None else None
    log.info(
        "training on %s; validating on %s",
        ", ".join(v.name for v in volumes),
        held_out_name or "nothing",
    )
    return TrainingData(
        dataset=dataset,
        names=[v.name for v in volumes],
        held_out=held_out,
        held_out_name=held_out_name,
        kinds=kinds,
    )
