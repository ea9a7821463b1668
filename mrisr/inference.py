"""Running trained generators on slice stacks, and choosing the model to run.

:class:`GeneratorSliceModel` puts a generator behind the
:class:`mrisr.upscale.SliceModel` protocol: batched, on CPU (float32) or CUDA
(bfloat16 autocast, channels-last), with wide slices tiled along their columns.
:func:`load_slice_model` turns what a user types after ``--model`` into a
slice model.

Tiling design: a generator changes the number of rows (thick axis) and never
the number of columns, so slices are tiled along columns only, with
overlapping tiles blended by a Gaussian weight (MONAI's
``sliding_window_inference``). The rows travel as channels of a 1D signal
over the columns, so MONAI sees input and output of the same spatial size and
never has to map tile borders through a non-integer row factor (its own 2D
zoom handling truncates ``H * (out_rows / H)`` and can lose a row, e.g. 11 ->
30 rows). Every tile holds all the rows of its slices, which are few in a
thick-slice scan.

This module imports torch; ``mrisr/__init__`` must not import it, so that the
command line starts fast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrisr.checkpoint import find_model_file, load_model, model_sha256, read_description
from mrisr.device import resolve_device
from mrisr.errors import CheckpointError, ConfigError, InputError
from mrisr.interpolation import CubicSliceModel

log = logging.getLogger(__name__)

#: Where bundled models live (package data): ``<name>.safetensors``.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Slices wider than this many columns are tiled; 256 covers most MRI matrices untiled.
DEFAULT_TILE_COLS = 256
#: Fraction of a tile shared with its neighbour.
DEFAULT_TILE_OVERLAP = 0.25
# Same tolerance as mrisr.upscale.check_factor_range, so a default model it picks is accepted.
_FACTOR_TOLERANCE = 0.05


class GeneratorSliceModel:
    """A trained generator behind the :class:`mrisr.upscale.SliceModel` protocol.

    Args:
        generator: network with ``forward(x: (B, 1, H, W), out_rows) -> (B, 1, out_rows, W)``.
        description: its model-file description (see :mod:`mrisr.checkpoint`).
        name: short name for logs and provenance; default the generator's name.
        path: the model file it came from, for provenance.
        file_sha256: sha256 of that file; computed from ``path`` when omitted.
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``).
        batch_size: slices per forward pass (halved automatically on CUDA
            out-of-memory).
        tile_cols: slices wider than this are tiled along columns; None never tiles.
        tile_overlap: fraction of a tile overlapping the next, in [0, 1).
        threads: CPU threads for torch (``torch.set_num_threads``, process-wide);
            None leaves torch's setting.

    Attributes:
        name: as given.
        factor_range: (low, high) factors the model was trained for.
        device: the torch device it runs on.
    """

    def __init__(
        self,
        generator: nn.Module,
        description: Mapping[str, Any],
        *,
        name: str | None = None,
        path: str | Path | None = None,
        file_sha256: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        tile_cols: int | None = DEFAULT_TILE_COLS,
        tile_overlap: float = DEFAULT_TILE_OVERLAP,
        threads: int | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        if tile_cols is not None and (not isinstance(tile_cols, int) or tile_cols < 8):
            raise ConfigError(f"tile_cols must be None or a whole number >= 8, got {tile_cols!r}")
        if not 0.0 <= tile_overlap < 1.0:
            raise ConfigError(f"tile_overlap must be in [0, 1), got {tile_overlap!r}")
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ConfigError(
                    f"threads must be a whole number >= 1, got {threads!r}",
                    fix="pass --threads 1 or more, or leave it out",
                )
            torch.set_num_threads(threads)
        self.description = dict(description)
        generator_info = self.description.get("generator", {})
        self.name = name or str(generator_info.get("name", type(generator).__name__))
        trained = self.description.get("factor_range")
        self.factor_range: tuple[float, float] | None = (
            (float(trained[0]), float(trained[1])) if trained else None
        )
        self.path = Path(path) if path is not None else None
        self.file_sha256 = file_sha256 or (model_sha256(self.path) if self.path else None)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.tile_cols = tile_cols
        self.tile_overlap = float(tile_overlap)
        self._cuda = self.device.type == "cuda"
        generator = generator.to(self.device).eval()
        if self._cuda:
            generator = generator.to(memory_format=torch.channels_last)
        self.generator = generator

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        name: str | None = None,
        device: str | torch.device = "auto",
        **options: Any,
    ) -> GeneratorSliceModel:
        """Load a model file or run folder (see :func:`mrisr.checkpoint.find_model_file`).

        Args:
            path: ``.safetensors`` model file or training run folder.
            name: display name; default the file's stem (or its folder's name
                for ``model.safetensors`` / ``best.safetensors``).
            device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            **options: ``batch_size``, ``tile_cols``, ``tile_overlap``, ``threads``.

        Raises:
            CheckpointError: the file is missing, unsafe, damaged or does not fit
                its architecture (see :func:`mrisr.checkpoint.load_model`).
            ConfigError: bad device or options.
        """
        file = find_model_file(path)
        torch_device = resolve_device(device)
        generator, description = load_model(file, device=torch_device)
        if name is None:
            name = file.parent.name if file.stem in ("model", "best") else file.stem
        return cls(generator, description, name=name, path=file, device=torch_device, **options)

    def upscale_slices(
        self,
        stack: np.ndarray,
        out_rows: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Upsample the rows of every slice.

        Args:
            stack: (N, H, W) normalised intensities; rows run along the thick axis.
            out_rows: output rows per slice, >= H.
            progress: called with (slices done, N) after each batch.

        Returns:
            (N, out_rows, W) float32 array.
        """
        stack = np.asarray(stack)
        if stack.ndim != 3 or 0 in stack.shape[1:]:
            raise InputError(
                f"slice stack has shape {stack.shape}",
                expected="(slices, rows, cols) with rows, cols >= 1",
            )
        count, rows, cols = stack.shape
        if isinstance(out_rows, bool) or int(out_rows) != out_rows or out_rows < rows:
            raise InputError(f"out_rows is {out_rows!r}", expected=f"a whole number >= {rows}")
        out_rows = int(out_rows)
        result = np.empty((count, out_rows, cols), dtype=np.float32)
        batch = self.batch_size
        start = 0
        while start < count:
            stop = min(start + batch, count)
            chunk = torch.from_numpy(np.ascontiguousarray(stack[start:stop], dtype=np.float32))
            try:
                result[start:stop] = self._run(chunk.to(self.device), out_rows).cpu().numpy()
            except torch.OutOfMemoryError:
                if not self._cuda or batch == 1:
                    raise ConfigError(
                        f"model {self.name!r} ran out of {self.device} memory on one "
                        f"{rows} x {cols} slice",
                        fix="pass a smaller tile size, or --device cpu",
                    ) from None
                # Retry the same slices with half the batch; results do not depend on it.
                torch.cuda.empty_cache()
                batch = max(1, batch // 2)
                log.warning("out of GPU memory: batch size lowered to %d", batch)
                continue
            start = stop
            if progress is not None:
                progress(stop, count)
        return result

    def describe(self) -> dict[str, Any]:
        """JSON-ready provenance: name, generator, recipe, hashes, factor range, device."""
        description = self.description
        return {
            "name": self.name,
            "kind": "generator",
            "generator": description.get("generator"),
            "recipe": description.get("recipe"),
            "factor_range": list(self.factor_range) if self.factor_range else None,
            "normalisation": description.get("normalisation"),
            "weights_sha256": description.get("weights_sha256"),
            "file_sha256": self.file_sha256,
            "path": str(self.path.resolve()) if self.path is not None else None,
            "trained_with_mrisr": description.get("mrisr_version"),
            "device": str(self.device),
            "precision": "bfloat16 autocast" if self._cuda else "float32",
            "batch_size": self.batch_size,
            "tile_cols": self.tile_cols,
            "tile_overlap": self.tile_overlap,
        }

    def __repr__(self) -> str:
        return f"GeneratorSliceModel(name={self.name!r}, device={str(self.device)!r})"

    # ----------------------------------------------------------------- private

    def _run(self, chunk: torch.Tensor, out_rows: int) -> torch.Tensor:
        """(b, H, W) float32 on the device -> (b, out_rows, W) float32 on the device."""
        from monai.inferers import sliding_window_inference

        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=self._cuda):
            if self.tile_cols is None or chunk.shape[-1] <= self.tile_cols:
                return self._predict(chunk, out_rows)
            # (b, H, W) is read as b signals of H channels over W columns: see the
            # module docstring for why rows ride as channels.
            return sliding_window_inference(
                chunk,
                roi_size=(self.tile_cols,),
                sw_batch_size=chunk.shape[0],
                predictor=self._predict,
                overlap=self.tile_overlap,
                mode="gaussian",
                out_rows=out_rows,
            )

    def _predict(self, tiles: torch.Tensor, out_rows: int) -> torch.Tensor:
        """(b, H, w) -> (b, out_rows, w) float32 through the generator."""
        x = tiles[:, None]
        if self._cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.generator(x, out_rows)
        expected = (x.shape[0], 1, out_rows, x.shape[-1])
        if tuple(y.shape) != expected:
            raise RuntimeError(
                f"generator {self.name!r} returned shape {tuple(y.shape)} for input "
                f"{tuple(x.shape)}, expected {expected}"
            )
        return y[:, 0].float()


def bundled_models() -> dict[str, Path]:
    """Models shipped with mrisr: name -> ``mrisr/weights/<name>.safetensors``."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {path.stem: path for path in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def default_model_path(factor: float | None) -> Path:
    """The bundled model to use for ``factor``.

    Rule: among bundled models whose factor range covers ``factor`` (with the
    5% tolerance of :func:`mrisr.upscale.check_factor_range`), the one with the
    narrowest range (the most specialised), ties by name. With ``factor`` None,
    the one with the widest range. GAN-stage models never become the default:
    they trade fidelity for sharpness, so users ask for them by name.

    Raises:
        ConfigError: no bundled model covers the factor.
    """
    descriptions = {}
    for name, path in bundled_models().items():
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
            (
                name
                for name, (low, high) in ranges.items()
                if low * (1 - _FACTOR_TOLERANCE) <= factor <= high * (1 + _FACTOR_TOLERANCE)
            ),
            key=lambda n: (ranges[n][1] - ranges[n][0], n),
        )
    if choices:
        log.info("using bundled model %r for factor %s", choices[0], factor)
        return bundled_models()[choices[0]]
    if ranges:
        shipped = "bundled models: " + ", ".join(
            f"{name} ({low:g}-{high:g}x)" for name, (low, high) in ranges.items()
        )
        lowest = min(low for low, _ in ranges.values())
        highest = max(high for _, high in ranges.values())
        nearest = lowest if factor is not None and factor < lowest else highest
        fix = f"pass --factor within a bundled model's range (e.g. --factor {nearest:g}), "
    else:
        shipped = (
            f"this installation ships no usable default model in {WEIGHTS_DIR} "
            f"({', '.join(descriptions) or 'none'}; GAN-stage models are used only by name)"
            if descriptions
            else f"this installation ships no bundled models (none in {WEIGHTS_DIR})"
        )
        fix = ""
    wanted = f"factor {factor:.3g}" if factor is not None else "any factor"
    raise ConfigError(
        f"no bundled model covers {wanted}; {shipped}",
        fix=fix
        + "use --model cubic, or --model path/to/model.safetensors (or a training run folder)",
    )


def load_slice_model(
    spec: str | Path | None,
    *,
    factor: float | None = None,
    device: str | torch.device = "auto",
    threads: int | None = None,
    batch_size: int = 16,
    tile_cols: int | None = DEFAULT_TILE_COLS,
) -> CubicSliceModel | GeneratorSliceModel:
    """The slice model a ``--model`` value names.

    Resolution, in order:

    1. ``"cubic"``: :class:`mrisr.interpolation.CubicSliceModel`.
    2. None: the bundled model covering ``factor`` (:func:`default_model_path`).
    3. A bundled model's name (a string without ``/`` naming
       ``mrisr/weights/<name>.safetensors``), e.g. ``"fast"``; write ``./fast``
       for a folder of that name.
    4. An existing path: a ``.safetensors`` file or a training run folder.

    Args:
        spec: as above.
        factor: the factor the scan will be upscaled by (picks the default model).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: CPU threads for torch; None leaves torch's setting.
        batch_size: slices per forward pass.
        tile_cols: slices wider than this are tiled along columns; None never tiles.

    Returns:
        A :class:`mrisr.upscale.SliceModel`.

    Raises:
        ConfigError: unknown name, no bundled model for ``factor``, bad device.
        CheckpointError: a model file that is missing, unsafe or damaged.
    """
    options = {
        "device": device,
        "threads": threads,
        "batch_size": batch_size,
        "tile_cols": tile_cols,
    }
    if isinstance(spec, str) and spec.strip().lower() == "cubic":
        return CubicSliceModel()
    if spec is None:
        return GeneratorSliceModel.from_file(default_model_path(factor), **options)
    bundled = bundled_models()
    if isinstance(spec, str) and spec in bundled:
        return GeneratorSliceModel.from_file(bundled[spec], **options)
    path = Path(spec)
    looks_like_path = (
        isinstance(spec, Path)
        or "/" in spec
        or "\\" in spec
        or path.suffix.lower() in (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
    )
    if not path.exists() and not looks_like_path:
        names = ", ".join(["cubic", *bundled]) if bundled else "cubic (no bundled models installed)"
        raise ConfigError(
            f"unknown model {spec!r}: not a bundled model name and no such file or folder",
            expected=f"one of {names}, a .safetensors file or a training run folder",
            fix="check the spelling or the path",
        )
    return GeneratorSliceModel.from_file(path, **options)
