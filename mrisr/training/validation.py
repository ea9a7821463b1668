"""Validation during training: :func:`mrisr.evaluation.evaluate` on the held-out volume.

The held-out volume is normalised as for training (the fixed range 1 of the
normalised intensities is then the metrics' range) and cut to a central cube
(:func:`mrisr.evaluation.central_crop`, ``data.val_crop`` voxels). For each
thick axis, :func:`~mrisr.evaluation.evaluate` simulates it at the validation
factor, upscales it (both planes, mean fusion) and compares inside the
foreground mask; the metrics are averaged over the axes. Cubic interpolation,
the baseline, is scored once; the generator at every validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mrisr.errors import ConfigError
from mrisr.evaluation import central_crop, evaluate
from mrisr.intensity import fit_normalisation
from mrisr.volume import Volume


def check_crop(crop: int, factor: float) -> None:
    """Refuse a validation cube too small to hold two thick slices at ``factor``.

    Raises:
        ConfigError: fewer than two thick slices would remain.
    """
    if math.floor(crop / factor) < 2:
        raise ConfigError(
            f"validation crop of {crop} voxels is too small for factor {factor:g}",
            expected=f"data.val_crop of at least {math.ceil(2 * factor)}",
            fix="raise data.val_crop",
        )


class Validation:
    """PSNR/SSIM of a generator, and of cubic interpolation, on a held-out volume.

    Args:
        volume: the held-out HR volume.
        factor: the validation factor.
        axes: thick axes to simulate.
        profile: slice profile.
        crop: cube side in voxels.
        batch_size: slices per generator call.

    Raises:
        ConfigError: the cube (``crop``, or the volume where smaller) is too
            small for the factor.
    """

    def __init__(
        self,
        volume: Volume,
        *,
        factor: float,
        axes: Sequence[int] = (0, 1, 2),
        profile: str = "mean",
        crop: int = 64,
        batch_size: int = 16,
    ) -> None:
        from mrisr.interpolation import CubicSliceModel

        normalisation = fit_normalisation(volume.data)
        self.reference = central_crop(volume.with_data(normalisation.apply(volume.data)), crop)
        self.factor = float(factor)
        self.axes = tuple(axes)
        self.profile = profile
        self.batch_size = batch_size
        for axis in self.axes:
            if (
                self.reference.shape[axis] < crop
                and math.floor(self.reference.shape[axis] / self.factor) < 2
            ):  # the volume itself is the limit: no crop setting can help
                raise ConfigError(
                    f"is {' x '.join(map(str, volume.shape))} voxels: too thin along axis "
                    f"{axis} to validate at {self.factor:g}x (two thick slices need "
                    f"{math.ceil(2 * self.factor)} voxels)",
                    path=volume.source,
                    expected="a held-out volume of at least that size along each validated axis",
                    fix="name another held-out volume with --val-volume, or move this one out "
                    "of the folder",
                )
            check_crop(self.reference.shape[axis], self.factor)
        self.cubic = self._scores(CubicSliceModel())

    def _scores(self, model: Any) -> dict[str, float]:
        rows = [
            evaluate(
                self.reference,
                axis=axis,
                factor=self.factor,
                models={"model": model},
                profile=self.profile,  # type: ignore[arg-type]
                data_range=1.0,
                force=True,
            ).metrics["model"]
            for axis in self.axes
        ]
        return {key: float(np.mean([row[key] for row in rows])) for key in ("psnr", "ssim")}

    def __call__(
        self, generator: nn.Module, device: torch.device | str = "cpu"
    ) -> dict[str, float]:
        """Metrics of ``generator`` (run in eval mode; its weights are not changed).

        Returns:
            ``psnr``, ``ssim`` (the generator), ``psnr_cubic``, ``ssim_cubic``,
            and ``psnr_gain`` (dB over cubic).
        """
        from mrisr.inference import GeneratorSliceModel

        model = GeneratorSliceModel(
            generator,
            {"factor_range": [self.factor, self.factor]},
            name="validation",
            device=device,
            batch_size=self.batch_size,
            # float32 everywhere: which checkpoint is best must not depend on
            # whether this CPU has native bfloat16.
            precision="float32",
        )
        scores = self._scores(model)
        return {
            **scores,
            "psnr_cubic": self.cubic["psnr"],
            "ssim_cubic": self.cubic["ssim"],
            "psnr_gain": scores["psnr"] - self.cubic["psnr"],
        }
