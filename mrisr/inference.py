"""Running a trained generator on slice stacks.

:class:`GeneratorSliceModel` puts a generator behind the
:class:`mrisr.upscale.SliceModel` protocol: batched, on CPU or CUDA
(channels-last on CUDA), in float32 or bfloat16 autocast (``precision``), with wide
slices tiled along their columns.
Which model to run (bundled, run folder, file, cubic) is :mod:`mrisr.models`'s job.

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

from mrisr.checkpoint import find_model_file, load_model, model_sha256
from mrisr.device import check_precision_text, resolve_device, resolve_precision
from mrisr.errors import ConfigError, InputError
from mrisr.models import DEFAULT_BATCH_SIZE, DEFAULT_TILE_COLS

log = logging.getLogger(__name__)

#: Fraction of a tile shared with its neighbour.
DEFAULT_TILE_OVERLAP = 0.25
#: glibc's mmap and trim thresholds while a generator runs on CPU (bytes): see
#: :func:`keep_freed_memory`.
MALLOC_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc reuse freed feature maps instead of mapping fresh pages for each layer.

    A generator's feature maps on CPU are tens of MB each. glibc serves blocks
    above its mmap threshold (at most 32 MB by default) with fresh pages that
    the kernel zero-fills at first touch and unmaps again on ``free``, so every
    layer pays page faults: about a fifth of the CPU time of ``mrisr upscale``
    on a 256 x 256 x 64 scan went to them. Raising the mmap and trim thresholds
    (``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``, glibc's
    documented tunables) keeps freed blocks in the heap for reuse; the peak
    resident memory stays the same (measured). Process-wide, set once; skipped
    where the user set ``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES``, and
    off glibc (macOS, Windows, musl), where it does nothing.

    Returns:
        True when the thresholds were set by this call or an earlier one.
    """
    global _MALLOC_SET
    if _MALLOC_SET is None:
        _MALLOC_SET = _set_malloc_thresholds()
    return _MALLOC_SET


_MALLOC_SET: bool | None = None


def _set_malloc_thresholds() -> bool:
    """``mallopt`` both thresholds to :data:`MALLOC_THRESHOLD`; False where not glibc."""
    import ctypes
    import os
    import platform

    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    done = libc.mallopt(m_mmap_threshold, MALLOC_THRESHOLD) == 1
    done = libc.mallopt(m_trim_threshold, MALLOC_THRESHOLD) == 1 and done
    log.debug("glibc mmap/trim thresholds raised to %d bytes: %s", MALLOC_THRESHOLD, done)
    return done


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
        precision: ``"auto"``, ``"float32"`` or ``"bfloat16"`` (autocast: weights,
            inputs and outputs stay float32); see
            :func:`mrisr.device.resolve_precision`.

    Attributes:
        name: as given.
        factor_range: (low, high) factors the model was trained for.
        device: the torch device it runs on.
        precision: the arithmetic it runs in, ``"float32"`` or ``"bfloat16"``.

    Raises:
        ConfigError: a bad batch size, tile size, overlap, thread count, device
            or precision.
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
        batch_size: int = DEFAULT_BATCH_SIZE,
        tile_cols: int | None = DEFAULT_TILE_COLS,
        tile_overlap: float = DEFAULT_TILE_OVERLAP,
        threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"batch size must be a whole number >= 1, got {batch_size!r}",
                fix="pass --batch-size 1 or more (default 16; lower it to use less memory)",
            )
        if tile_cols is not None and (not isinstance(tile_cols, int) or tile_cols < 8):
            raise ConfigError(
                f"tile_cols must be None or a whole number >= 8, got {tile_cols!r}",
                fix=f"pass tile_cols={DEFAULT_TILE_COLS} (the default), another whole number "
                ">= 8, or None for no tiling",
            )
        if not 0.0 <= tile_overlap < 1.0:
            raise ConfigError(
                f"tile_overlap must be in [0, 1), got {tile_overlap!r}",
                fix=f"pass a fraction of the tile in [0, 1), e.g. {DEFAULT_TILE_OVERLAP} "
                "(the default)",
            )
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
        self.precision = resolve_precision(precision, self.device)
        if self.device.type == "cpu":
            keep_freed_memory()
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
            **options: ``batch_size``, ``tile_cols``, ``tile_overlap``, ``threads``,
                ``precision``.

        Raises:
            CheckpointError: the file is missing, unsafe, damaged or does not fit
                its architecture (see :func:`mrisr.checkpoint.load_model`).
            ConfigError: bad device or options.
        """
        check_precision_text(options.get("precision", "auto"))  # before reading weights
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

        Raises:
            InputError: a stack that is not 3D, or ``out_rows`` below the input rows.
            ConfigError: CUDA memory runs out even for one slice.
            RuntimeError: the generator returned the wrong shape.
        """
        stack = np.asarray(stack)
        if stack.ndim != 3 or 0 in stack.shape[1:]:
            raise InputError(
                f"slice stack has shape {stack.shape}",
                expected="(slices, rows, cols) with rows, cols >= 1",
                fix="pass the slices of a volume as mrisr.to_slice_stack gives them",
            )
        count, rows, cols = stack.shape
        if isinstance(out_rows, bool) or int(out_rows) != out_rows or out_rows < rows:
            raise InputError(
                f"out_rows is {out_rows!r}",
                expected=f"a whole number >= {rows}",
                fix=f"pass out_rows = the {rows} input rows times the factor, rounded",
            )
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
            "precision": "bfloat16 autocast" if self.precision == "bfloat16" else "float32",
            "batch_size": self.batch_size,
            "tile_cols": self.tile_cols,
            "tile_overlap": self.tile_overlap,
        }

    def __repr__(self) -> str:
        return (
            f"GeneratorSliceModel(name={self.name!r}, device={str(self.device)!r}, "
            f"precision={self.precision!r})"
        )

    # ----------------------------------------------------------------- private

    def _run(self, chunk: torch.Tensor, out_rows: int) -> torch.Tensor:
        """(b, H, W) float32 on the device -> (b, out_rows, W) float32 on the device."""
        low_precision = self.precision == "bfloat16"
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, torch.bfloat16, enabled=low_precision),
        ):
            if self.tile_cols is None or chunk.shape[-1] <= self.tile_cols:
                return self._predict(chunk, out_rows)
            # Imported only when tiling: MONAI takes seconds to import.
            from monai.inferers import sliding_window_inference

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
