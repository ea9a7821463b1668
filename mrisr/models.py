"""Choosing and loading the slice model a user names: bundled, run folder, model file, cubic.

One place answers "which model?" for ``mrisr upscale``, ``mrisr models``,
``mrisr evaluate``, ``mrisr demo`` and the Python API:

* :data:`WEIGHTS_DIR` and :func:`bundled_models`: the models shipped with mrisr;
* :func:`default_model_path`: the bundled model for a factor;
* :func:`load_slice_model`: what a ``--model`` value names, loaded
  (:func:`model_location`: where a network one points);
* :class:`ModelRequest`: a ``--model`` value and its run options, loaded once
  the factor is known (the upscale flow plans first, then loads);
* :data:`FACTOR_TOLERANCE` and :func:`covers_factor`: the one rule for whether
  a model's trained factor range covers a factor.

This module does not import torch: cubic interpolation and the listings stay
fast; a network's file is loaded through :mod:`mrisr.inference` (torch) only
when one is asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrisr.errors import CheckpointError, ConfigError
from mrisr.interpolation import CubicSliceModel

if TYPE_CHECKING:
    from mrisr.inference import GeneratorSliceModel
    from mrisr.upscale import SliceModel

log = logging.getLogger(__name__)

#: Where bundled models live (package data): ``<name>.safetensors``.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: A model serves factors up to this fraction beyond its trained range: a
#: 4.44x scan is fine for a model trained on 2-4.5x.
FACTOR_TOLERANCE = 0.05
#: Slices per forward pass of a network.
DEFAULT_BATCH_SIZE = 16
#: Slices wider than this many columns are tiled; 256 covers most MRI matrices untiled.
DEFAULT_TILE_COLS = 256
#: File endings that make a ``--model`` value a path even when nothing exists there.
_MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def names_cubic(spec: object) -> bool:
    """Whether a ``--model`` value names cubic interpolation (``"cubic"``, any case, spaces ignored)."""
    return isinstance(spec, str) and spec.strip().lower() == "cubic"


def covers_factor(factor_range: tuple[float, float], factor: float) -> bool:
    """Whether a model trained on ``factor_range`` serves ``factor``.

    Args:
        factor_range: (lowest, highest) thick-slice factor trained for.
        factor: the factor asked for.

    Returns:
        True when ``factor`` lies in the range widened by :data:`FACTOR_TOLERANCE`.
    """
    low, high = factor_range
    return low * (1 - FACTOR_TOLERANCE) <= factor <= high * (1 + FACTOR_TOLERANCE)


def bundled_models() -> dict[str, Path]:
    """Models shipped with mrisr: name -> ``mrisr/weights/<name>.safetensors``."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {path.stem: path for path in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def describe_bundled() -> list[dict[str, Any]]:
    """What each bundled model file says about itself, for ``mrisr models``.

    Returns:
        One dict per bundled model, by name: ``name``, ``path``, ``recipe``,
        ``size``, ``generator``, ``factor_range``, ``stage``, ``step``,
        ``validation``, ``parameters``, ``mrisr_version``, ``created``; an
        unreadable file gives ``{"name", "path", "error"}`` instead, so that one
        damaged file does not hide the others.
    """
    from mrisr.checkpoint import read_description

    rows = []
    for name, path in bundled_models().items():
        try:
            description = read_description(path)
        except CheckpointError as error:
            rows.append({"name": name, "path": str(path), "error": str(error)})
            continue
        rows.append(
            {
                "name": name,
                "path": str(path),
                "recipe": description.get("recipe"),
                "size": description.get("size"),
                "generator": description["generator"]["name"],
                "factor_range": description["factor_range"],
                "stage": description.get("stage"),
                "step": description.get("step"),
                "validation": description.get("validation") or None,
                "parameters": description.get("parameters"),
                "mrisr_version": description.get("mrisr_version"),
                "created": description.get("created"),
            }
        )
    return rows


def default_model_path(factor: float | None) -> Path:
    """The bundled model to use for ``factor``.

    Rule: among bundled models whose factor range covers ``factor``
    (:func:`covers_factor`), the one with the narrowest range (the most
    specialised), ties by name. With ``factor`` None, the one with the widest
    range. GAN-stage models never become the default: they trade fidelity for
    sharpness, so users ask for them by name.

    Args:
        factor: the factor the scan will be upscaled by, or None.

    Returns:
        The bundled model file.

    Raises:
        ConfigError: no bundled model covers the factor.
    """
    from mrisr.checkpoint import read_description

    bundled = bundled_models()
    descriptions = {}
    for name, path in bundled.items():
        try:
            descriptions[name] = read_description(path)
        except CheckpointError as error:  # one damaged file must not hide the others
            log.warning("skipping bundled model %s: %s", name, error)
    ranges = {
        name: tuple(description["factor_range"])
        for name, description in descriptions.items()
        if description.get("stage") != "gan"
    }
    if factor is None:
        choices = sorted(ranges, key=lambda n: (-(ranges[n][1] - ranges[n][0]), n))
    else:
        choices = sorted(
            (name for name, trained in ranges.items() if covers_factor(trained, factor)),
            key=lambda n: (ranges[n][1] - ranges[n][0], n),
        )
    if choices:
        log.info("using bundled model %r for factor %s", choices[0], factor)
        return bundled[choices[0]]
    raise ConfigError(
        f"no bundled model covers {_wanted(factor)}; {_shipped(ranges, descriptions)}",
        fix=_nearest_factor_fix(ranges, factor)
        + "use --model cubic, or --model path/to/model.safetensors (or a training run folder)",
    )


def _wanted(factor: float | None) -> str:
    return f"factor {factor:.3g}" if factor is not None else "any factor"


def _shipped(ranges: dict[str, tuple], descriptions: dict[str, Any]) -> str:
    """What this installation ships, for the no-default-model message."""
    if ranges:
        return "bundled models: " + ", ".join(
            f"{name} ({low:g}-{high:g}x)" for name, (low, high) in ranges.items()
        )
    if descriptions:
        return (
            f"this installation ships no usable default model in {WEIGHTS_DIR} "
            f"({', '.join(descriptions)}; GAN-stage models are used only by name)"
        )
    return f"this installation ships no bundled models (none in {WEIGHTS_DIR})"


def _nearest_factor_fix(ranges: dict[str, tuple], factor: float | None) -> str:
    """``"pass --factor within ... (e.g. --factor 6), "`` or nothing without usable models."""
    if not ranges:
        return ""
    lowest = min(low for low, _ in ranges.values())
    highest = max(high for _, high in ranges.values())
    nearest = lowest if factor is not None and factor < lowest else highest
    return f"pass --factor within a bundled model's range (e.g. --factor {nearest:g}), "


def load_slice_model(
    spec: str | Path | None,
    *,
    factor: float | None = None,
    device: Any = "auto",
    threads: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    tile_cols: int | None = DEFAULT_TILE_COLS,
    precision: str = "auto",
) -> CubicSliceModel | GeneratorSliceModel:
    """The slice model a ``--model`` value names.

    Resolution, in order:

    1. ``"cubic"``: :class:`mrisr.interpolation.CubicSliceModel` (no torch).
    2. None: the bundled model covering ``factor`` (:func:`default_model_path`).
    3. A bundled model's name (a string without ``/`` naming
       ``mrisr/weights/<name>.safetensors``), e.g. ``"fast"``; write ``./fast``
       for a folder of that name.
    4. An existing path: a ``.safetensors`` file or a training run folder.

    Args:
        spec: as above.
        factor: the factor the scan will be upscaled by (picks the default model).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``
            (see :func:`mrisr.device.resolve_device`).
        threads: CPU threads for torch; None leaves torch's setting.
        batch_size: slices per forward pass.
        tile_cols: slices wider than this are tiled along columns; None never tiles.
        precision: ``"auto"``, ``"float32"`` or ``"bfloat16"`` (see
            :func:`mrisr.device.resolve_precision`); cubic ignores it.

    Returns:
        A :class:`mrisr.upscale.SliceModel`.

    Raises:
        ConfigError: unknown name, no bundled model for ``factor``, bad device,
            precision or options.
        CheckpointError: a model file that is missing, unsafe or damaged.
    """
    from mrisr.device import check_precision_text

    precision = check_precision_text(precision)  # refused even for cubic, which ignores it
    if names_cubic(spec):
        return CubicSliceModel()
    from mrisr.inference import GeneratorSliceModel

    options = {"device": device, "threads": threads, "batch_size": batch_size}
    options.update(tile_cols=tile_cols, precision=precision)
    if spec is None:
        return GeneratorSliceModel.from_file(default_model_path(factor), **options)
    return GeneratorSliceModel.from_file(model_location(spec), **options)


def check_not_empty(spec: str | Path | None) -> None:
    """Refuse an empty ``--model`` value: as a path it would silently be the current folder.

    Raises:
        ConfigError: ``spec`` is an empty or blank string.
    """
    if isinstance(spec, str) and not spec.strip():
        raise ConfigError(
            "--model is empty: an empty path names no model, and would silently be read as "
            "the current folder (a run folder there)",
            fix="name a model (cubic, a bundled model's name, a run folder or a .safetensors "
            "file), or leave --model out for the bundled default",
        )


def _names_a_path(spec: str | Path) -> bool:
    """Whether a ``--model`` value is a path: not cubic, not a bundled name, and there or path-like."""
    if isinstance(spec, Path):
        return True
    if names_cubic(spec) or spec in bundled_models():
        return False
    path = Path(spec)
    return path.exists() or "/" in spec or "\\" in spec or path.suffix.lower() in _MODEL_SUFFIXES


def absolute_model_spec(spec: str) -> str:
    """A ``--model`` (or ``--init-from``) value with its path made absolute; names unchanged.

    A run's config.yaml stores it this way, so that the run still finds the
    model when resumed from another working folder. ``cubic``, a bundled
    model's name and an unknown name (which :func:`model_location` refuses)
    are kept as they are; ``~`` is expanded.

    Args:
        spec: the value as given.

    Returns:
        The value, a path made absolute from the current folder.
    """
    if not spec.strip() or not _names_a_path(spec):
        return spec
    return str(Path(spec).expanduser().absolute())


def model_location(spec: str | Path) -> Path:
    """Where a network ``--model`` value points: a bundled model's file, or the path itself.

    Args:
        spec: a bundled name (``"fast"``), a model file or a run folder.

    Returns:
        The path (not checked further: loading says what is wrong with it).

    Raises:
        ConfigError: an empty value, or a name that is neither a bundled model
            nor an existing path and does not look like one.
    """
    check_not_empty(spec)
    bundled = bundled_models()
    if isinstance(spec, str) and spec in bundled:
        return bundled[spec]
    path = Path(spec)
    if not _names_a_path(spec):
        names = ", ".join(["cubic", *bundled]) if bundled else "cubic (no bundled models installed)"
        raise ConfigError(
            f"unknown model {spec!r}: not a bundled model name and no such file or folder",
            expected=f"one of {names}, a .safetensors file or a training run folder",
            fix="check the spelling or the path",
        )
    return path


@dataclass(frozen=True)
class ModelRequest:
    """A ``--model`` value and how to run it, loaded once the factor is known.

    The default model depends on the scan's factor, so the upscale flow plans
    the scan first and then calls :meth:`load`.

    Attributes:
        spec: what :func:`load_slice_model` takes: ``"cubic"``, a bundled
            name, a run folder or model file, or None for the default model.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: CPU threads for torch; None leaves torch's setting.
        batch_size: slices per forward pass.
        tile_cols: slices wider than this are tiled; None never tiles.
        precision: ``"auto"``, ``"float32"`` or ``"bfloat16"``.

    Raises:
        ConfigError: an empty ``spec`` or an unknown precision (checked when made,
            before any scan is read).
    """

    spec: str | Path | None = None
    device: str = "auto"
    threads: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    tile_cols: int | None = DEFAULT_TILE_COLS
    precision: str = "auto"

    def __post_init__(self) -> None:
        from mrisr.device import check_precision_text

        check_not_empty(self.spec)
        object.__setattr__(self, "precision", check_precision_text(self.precision))

    def load(self, factor: float | None) -> CubicSliceModel | GeneratorSliceModel:
        """The slice model, the default one chosen for ``factor``.

        Raises:
            ConfigError: see :func:`load_slice_model`.
            CheckpointError: see :func:`load_slice_model`.
        """
        return load_slice_model(
            self.spec,
            factor=factor,
            device=self.device,
            threads=self.threads,
            batch_size=self.batch_size,
            tile_cols=self.tile_cols,
            precision=self.precision,
        )


def choose_model(model: SliceModel | ModelRequest | str | Path | None, factor: float) -> SliceModel:
    """The slice model to run at ``factor``: ``model`` itself, or the one it names.

    Args:
        model: a loaded :class:`mrisr.upscale.SliceModel` (returned as it is),
            a :class:`ModelRequest`, or a ``--model`` value (see
            :func:`load_slice_model`; None: the bundled model for ``factor``).
        factor: the planned factor.

    Returns:
        The slice model.

    Raises:
        ConfigError: see :func:`load_slice_model`.
        CheckpointError: see :func:`load_slice_model`.
    """
    if isinstance(model, ModelRequest):
        return model.load(factor)
    if model is None or isinstance(model, (str, Path)):
        return load_slice_model(model, factor=factor)
    return model
