"""Training data: the volumes, the held-out split, and the pair stream made from them.

The volumes are found, checked, normalised as inference normalises a scan,
and reduced to where their signal is (:func:`prepare_volume`); the random
(LR, HR) pairs cut from them are :mod:`mrisr.training.pairs`' job, with the
degradations of :mod:`mrisr.training.degrade`.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.config import DataConfig
from mrisr.errors import ConfigError, InputError
from mrisr.intensity import Normalisation, fit_normalisation
from mrisr.io.files import (
    BROKEN_LINK_FIX,
    READ_FORMATS,
    broken_link_target,
    require_existing,
    stem,
    suffix,
)
from mrisr.slices import PAIR_KINDS
from mrisr.training.degrade import Degrader
from mrisr.training.pairs import FOREGROUND_LEVEL, PairDataset
from mrisr.volume import Volume

log = logging.getLogger(__name__)

#: File endings of training volumes.
VOLUME_SUFFIXES: tuple[str, ...] = tuple(
    ending for ending, kind in READ_FORMATS.items() if kind in ("nifti", "mgh")
)
#: Signal voxels kept per volume as patch centres (a random subset).
MAX_CENTRES = 200_000
#: Largest ratio of a training volume's coarsest to finest voxel size.
MAX_ANISOTROPY = 1.3
#: Beyond this ratio of coarsest to finest voxel size a refused volume is a
#: thick-slice scan, which resampling cannot make into truth; up to it, one
#: to resample to its coarsest spacing (1 x 0.5 x 0.5 mm -> 1 mm isotropic).
THICK_SLICE_RATIO = 2.0


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
    """A file named like a volume, or a broken symbolic link named like one (to be reported)."""
    return suffix(path) in VOLUME_SUFFIXES and (
        path.is_file() or broken_link_target(path) is not None
    )


def find_volumes(folder: str | Path, *, allow_anisotropic: bool = False) -> list[Path]:
    """The readable training volumes in a folder, sorted by name.

    Files whose header cannot be read (or that are not 3D), and symbolic links
    whose target is missing, are skipped with a WARNING naming them (and the
    link's target); voxel data is read later by
    :func:`load_training_volumes`. Only headers are read, so an anisotropic
    volume is refused before anything is loaded.

    Args:
        folder: folder of .nii, .nii.gz, .mgz or .mgh files (not searched recursively).
        allow_anisotropic: keep volumes more than :data:`MAX_ANISOTROPY` times anisotropic.

    Returns:
        Sorted list of paths.

    Raises:
        InputError: the folder does not exist, holds no image file (the
            message says what it holds), holds no readable volume (the message
            lists each file skipped and why), or holds anisotropic volumes
            (without ``allow_anisotropic``).
    """
    folder = require_existing(
        folder, expected="a folder of training volumes", fix="pass --volumes DIR", kind="folder"
    )
    candidates = sorted(p for p in folder.iterdir() if _is_volume_file(p))
    if not candidates:
        raise InputError(
            f"holds no image file to train on: {_contents(folder)}",
            path=folder,
            expected=f"3D images ending in {', '.join(VOLUME_SUFFIXES)} in the folder itself "
            "(sub-folders are not searched)",
            fix="pass --volumes the folder that holds the volumes",
        )
    readable, spacings, skipped = [], {}, []
    for path in candidates:
        image, reason = _read_header(path)
        if image is None:
            fix = f"; fix: {BROKEN_LINK_FIX}" if path.is_symlink() and not path.exists() else ""
            log.warning("skipping %s: %s%s", path, reason, fix)
            skipped.append(f"{path.name} ({reason})")
            continue
        readable.append(path)
        spacings[path] = np.sqrt((np.asarray(image.affine)[:3, :3] ** 2).sum(axis=0))
    if not readable:
        raise InputError(
            f"holds no readable volume ({len(candidates)} candidate file(s), each skipped: "
            f"{'; '.join(skipped)})",
            path=folder,
            expected=f"3D images ending in {', '.join(VOLUME_SUFFIXES)}",
            fix="replace or remove the files named, or pass --volumes a folder of readable 3D "
            "volumes",
        )
    if not allow_anisotropic:
        check_isotropic(folder, spacings)
    return readable


def _read_header(path: Path) -> tuple[Any, str]:
    """(the image, "") with its header read, or (None, why it is skipped)."""
    import nibabel as nib

    target = broken_link_target(path)
    if target is not None:
        return None, f"a broken symbolic link (its target {target} does not exist)"
    try:
        image = nib.load(str(path))
        shape = image.shape
    except Exception as error:  # nibabel raises many types for damaged files
        return None, f"unreadable: {str(error).splitlines()[0][:200]}"
    if len(shape) < 3 or (len(shape) > 3 and any(n != 1 for n in shape[3:])):
        return None, f"not a 3D volume: shape {tuple(shape)}"
    return image, ""


def _contents(folder: Path, most: int = 8) -> str:
    """What a folder without image files holds, for the message: names, folders marked ``/``."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return f"it holds only {', '.join(names[:most])}{more}"


def check_isotropic(folder: Path, spacings: dict[Path, np.ndarray]) -> None:
    """Refuse volumes whose voxels are more than :data:`MAX_ANISOTROPY` times anisotropic.

    The advice depends on the volume. A fine but mildly anisotropic one (its
    coarsest spacing at most :data:`THICK_SLICE_RATIO` times its finest, e.g.
    1 x 0.5 x 0.5 mm) becomes good truth when resampled to isotropic voxels of
    its coarsest spacing. A thick-slice scan (0.9 x 0.9 x 7 mm) cannot:
    resampling interpolates, it does not bring back the detail between its
    slices; it is what a trained model upscales, not what one learns from.

    Args:
        folder: the training folder (for the message).
        spacings: each volume's (3,) voxel sizes in mm.

    Raises:
        InputError: naming every such volume, its spacing and what to do with it.
    """
    bad = {
        path: sizes
        for path, sizes in spacings.items()
        if sizes.min() <= 0 or sizes.max() / sizes.min() > MAX_ANISOTROPY
    }
    if not bad:
        return
    valid = {p: sizes for p, sizes in bad.items() if sizes.min() > 0}
    # To two decimals: a header's 1.0000025 x 0.5 x 0.5 mm is twice, not more.
    thick = {
        p for p, sizes in valid.items() if round(sizes.max() / sizes.min(), 2) > THICK_SLICE_RATIO
    }
    fine = [p for p in valid if p not in thick]

    def advice(path: Path, sizes: np.ndarray) -> str:
        if path in thick:
            return "a thick-slice scan: resampling cannot add the detail its slices lack"
        if path in fine:
            return f"resample to {sizes.max():.3g} mm isotropic"
        return "not a valid voxel size: check its header"

    listed = "; ".join(
        f"{path.name} ({' x '.join(f'{s:.3g}' for s in sizes)} mm: {advice(path, sizes)})"
        for path, sizes in bad.items()
    )
    fixes = []
    if thick:
        fixes.append(
            "move the thick-slice scans out of the folder (they are what a trained model "
            "upscales: mrisr upscale SCAN) and train on thin-slice 3D volumes"
        )
    if fine:
        coarse = max(float(bad[p].max()) for p in fine)
        fixes.append(
            f"resample {'each of the others' if thick else 'each'} to isotropic voxels of its "
            "coarsest spacing (e.g. nibabel.processing.resample_to_output(image, "
            f"voxel_sizes={coarse:.3g}), or mri_convert --voxsize {coarse:.3g} {coarse:.3g} "
            f"{coarse:.3g})"
        )
    fixes.append(
        "or pass --allow-anisotropic (data.allow_anisotropic: true) to train on them as if "
        "isotropic"
        + (" (a thick-slice scan would teach the network its own blur)" if thick else "")
    )
    raise InputError(
        f"holds {len(bad)} volume(s) too anisotropic to serve as high-resolution truth: {listed}",
        path=folder,
        expected="high-resolution volumes with near-isotropic voxels (at most "
        f"{MAX_ANISOTROPY:g} times longer along one axis than another), such as 1 mm 3D scans",
        fix="; ".join(fixes),
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
        centres: (N, 3) int32 coordinates of signal voxels (above the volume's
            Otsu threshold) to centre patches on.
        signal: mean normalised intensity of those voxels: what a noise level's
            signal-to-noise ratio refers to.
        file_shape: (X, Y, Z) voxels of the file, before the crop (for messages).
    """

    name: str
    data: np.ndarray = field(repr=False)
    normalisation: Normalisation
    spacing: tuple[float, float, float]
    centres: np.ndarray = field(repr=False)
    signal: float = 1.0
    file_shape: tuple[int, ...] = ()


def signal_mask(data: np.ndarray) -> np.ndarray:
    """Voxels that hold signal: above Otsu's threshold (SimpleITK), else above the foreground level.

    Whole-head scans have large backgrounds of noise and air that a fixed low
    level counts as foreground; Otsu's threshold (Otsu, IEEE SMC 1979) splits
    the histogram into background and signal per volume. Where it finds
    nothing (a nearly constant image), the fixed level
    (:data:`mrisr.training.pairs.FOREGROUND_LEVEL`) decides.

    Args:
        data: (X, Y, Z) normalised voxels.

    Returns:
        (X, Y, Z) bool mask.
    """
    import SimpleITK as sitk

    otsu = sitk.OtsuThresholdImageFilter()
    otsu.Execute(sitk.GetImageFromArray(np.asarray(data, np.float32)))
    mask = data > max(float(otsu.GetThreshold()), FOREGROUND_LEVEL)
    return mask if mask.any() else data > FOREGROUND_LEVEL


def prepare_volume(volume: Volume, name: str, *, seed: int = 0, margin: int = 8) -> TrainingVolume:
    """Normalise a volume as inference does and find where its signal is.

    Args:
        volume: the HR volume.
        name: for logs and run summaries.
        seed: picks the subset of signal voxels kept as patch centres.
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
            fix="remove it from the training volumes, or check that it holds an image",
        )
    box = tuple(
        slice(max(int(where[0]) - margin, 0), min(int(where[-1]) + margin + 1, data.shape[ax]))
        for ax in range(3)
        for where in [np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != ax)))]
    )
    data = np.ascontiguousarray(data[box])
    signal = signal_mask(data)
    centres = np.argwhere(signal).astype(np.int32)
    if len(centres) > MAX_CENTRES:
        rng = np.random.default_rng([seed, len(centres)])
        centres = centres[np.sort(rng.choice(len(centres), MAX_CENTRES, replace=False))]
    spacing = tuple(float(s) for s in volume.spacing)
    return TrainingVolume(
        name=name,
        data=data,
        normalisation=normalisation,
        spacing=spacing,  # type: ignore[arg-type]
        centres=centres,
        signal=float(data[signal].mean()),
        file_shape=tuple(int(n) for n in volume.data.shape),
    )


def load_training_volumes(paths: Sequence[Path], *, seed: int = 0) -> list[TrainingVolume]:
    """Load, normalise and crop training volumes; unreadable ones are skipped with a WARNING.

    Raises:
        InputError: none could be loaded.
    """
    volumes, skipped = [], []
    for path in paths:
        try:
            volume = read_volume(path)
            prepared = prepare_volume(volume, volume_name(path), seed=seed)
        except (InputError, OSError, ValueError, EOFError) as error:
            log.warning("skipping %s: %s", path, error)
            why = error.problem if isinstance(error, InputError) else str(error)
            skipped.append(
                f"{path.name} ({why.splitlines()[0][:200] if why else type(error).__name__})"
            )
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
            f"none of the {len(paths)} training volume(s) could be loaded: {'; '.join(skipped)}",
            path=paths[0].parent if paths else None,
            fix="replace or remove the volumes named, or pass --volumes a folder of usable ones",
        )
    return volumes


def check_patch_fits(
    volumes: Sequence[TrainingVolume],
    patch_size: int,
    kinds: Sequence[tuple[int, int]] = PAIR_KINDS,
    *,
    folder: str | Path | None = None,
) -> None:
    """Refuse a patch side larger than a training volume: its patches would be zero padding.

    Patches are cut from each volume as :func:`prepare_volume` left it (cropped
    to its signal plus a margin), ``patch_size`` voxels along the thick axis
    (rows) and along the remaining in-plane axis (columns) of each pair kind;
    where the volume is shorter, :class:`~mrisr.training.pairs.PairDataset`
    pads with zeros. The rows simulated beyond the patch for the slice profile
    are not part of the limit (zero beyond the volume's edge, as at any edge).

    Args:
        volumes: the prepared training volumes.
        patch_size: ``data.patch_size``.
        kinds: the (thick axis, slicing axis) kinds drawn.
        folder: the volumes folder, for the message.

    Raises:
        ConfigError: naming the smallest volume, its shapes and the largest patch side that fits.
    """
    used = sorted({axis for thick, cut in kinds for axis in (thick, 3 - thick - cut)})

    def side(volume: TrainingVolume) -> int:
        return min(volume.data.shape[axis] for axis in used)

    smallest = min(volumes, key=side)
    limit = side(smallest)
    if patch_size <= limit:
        return
    cropped = " x ".join(str(n) for n in smallest.data.shape)
    whole = " x ".join(str(n) for n in smallest.file_shape) or cropped
    raise ConfigError(
        f"--patch-size {patch_size} (data.patch_size) is larger than the training volumes: the "
        f"smallest, {smallest.name} ({whole} voxels, {cropped} around its signal, where patches "
        f"are cut): its patches would reach past its edges into zero padding",
        path=folder,
        expected=f"a patch side of at most {limit} voxels",
        fix=f"pass --patch-size {limit} or less, or train on larger volumes",
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
        ConfigError: a held-out name that is not among the volumes, or a
            patch size larger than a training volume (:func:`check_patch_fits`).
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
    check_patch_fits(volumes, settings.patch_size, kinds, folder=settings.volumes)
    dataset = PairDataset(
        volumes,
        patch_size=settings.patch_size,
        batch_size=settings.batch_size,
        kinds=kinds,
        min_foreground=settings.min_foreground,
        seed=seed,
        rank=rank,
        degrader=Degrader(settings),
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
