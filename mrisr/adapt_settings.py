"""How much per-scan adaptation may train, with what seed, and where its model goes.

:class:`AdaptSettings` is what ``mrisr upscale --adapt`` (``--adapt-steps``,
``--adapt-seconds``, ``--save-adapted``) and
``UpscaleOptions(adapt=AdaptSettings(...))`` pass to :mod:`mrisr.adapt`. It
checks itself when made, before any scan is read; it imports no torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrisr.errors import ConfigError

__all__ = [
    "DEFAULT_SECONDS",
    "MAX_SECONDS",
    "MAX_SEED",
    "MAX_STEPS",
    "AdaptSettings",
    "check_model_suffix",
]

#: Training budget when neither steps nor seconds are given (about 1-2 minutes on
#: 2 CPU cores with the bundled model; see docs/adaptation.md).
DEFAULT_SECONDS = 90.0
#: Most steps a budget may ask for: about 10 minutes on 2 CPU cores (750 steps took
#: 25-54 s in docs/adaptation.md), 13x the largest budget measured there, where
#: 750 steps already gained little over 150 on brains and lost on spines.
#: A larger number is a typo or a misunderstanding that would run for hours or days.
MAX_STEPS = 10_000
#: Most seconds a budget may ask for: one hour, 40x the default.
MAX_SECONDS = 3600.0
#: Largest seed: what torch.manual_seed takes.
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class AdaptSettings:
    """How much to adapt, and what to keep.

    Attributes:
        steps: training steps (deterministic); not together with ``seconds``.
        seconds: training time in seconds; default :data:`DEFAULT_SECONDS`
            when ``steps`` is not given either.
        seed: seeds the pairs drawn and torch: a whole number from 0 to
            :data:`MAX_SEED`.
        save_path: where to write the adapted model (a ``.safetensors`` file),
            or None; stored as an absolute :class:`~pathlib.Path` (``~``
            expanded, relative to the current folder when made).

    Raises:
        ConfigError: a budget that is not a number, of zero or less, over
            :data:`MAX_STEPS` steps or :data:`MAX_SECONDS` seconds, or given
            both in steps and in seconds; a seed that is not a whole number
            from 0 to :data:`MAX_SEED`; a save path that is not a
            ``.safetensors`` path.
    """

    steps: int | None = None
    seconds: float | None = None
    seed: int = 0
    save_path: Path | None = None

    def __post_init__(self) -> None:
        _check_budget(self.steps, self.seconds)
        if (
            isinstance(self.seed, (bool, np.bool_))
            or not isinstance(self.seed, (int, np.integer))
            or not 0 <= self.seed <= MAX_SEED
        ):
            raise ConfigError(
                f"adaptation seed must be a whole number from 0 to 2**64 - 1, got {self.seed!r}",
                fix="pass seed=0 (the default) or another whole number >= 0, e.g. seed=1",
            )
        if self.save_path is not None and not isinstance(self.save_path, (str, os.PathLike)):
            raise ConfigError(
                f"save_path must be a file path or None, got {self.save_path!r}",
                fix='pass save_path="protocol.safetensors" (--save-adapted protocol.safetensors)',
            )
        if self.save_path is not None:
            check_model_suffix(self.save_path)
            # Absolute, as the sidecar records it (options.adapt.save_path beside
            # adaptation.saved_to): the file the settings name wherever they are read.
            object.__setattr__(self, "save_path", Path(self.save_path).expanduser().absolute())

    @property
    def budget(self) -> dict[str, Any]:
        """``{"steps": n}`` or ``{"seconds": s}``: the budget in force."""
        if self.steps is not None:
            return {"steps": int(self.steps)}
        return {"seconds": float(self.seconds if self.seconds is not None else DEFAULT_SECONDS)}


def _check_budget(steps: Any, seconds: Any) -> None:
    """Refuse a budget :class:`AdaptSettings` cannot run (see there)."""
    if steps is not None and seconds is not None:
        raise ConfigError(
            f"adaptation budget given both in steps ({steps!r}) and in seconds ({seconds!r}): "
            "it has one budget",
            fix="pass steps= or seconds=, not both (--adapt-steps or --adapt-seconds)",
        )
    number = (int, float, np.integer, np.floating)
    if steps is not None and (
        isinstance(steps, (bool, np.bool_))
        or not isinstance(steps, number)
        or int(steps) != steps
        or steps < 1
    ):
        raise ConfigError(
            f"adaptation budget must be at least 1 step, got {steps!r}",
            fix="pass --adapt-steps 1 or more (steps=1 or more in the API), or leave it out",
        )
    if steps is not None and steps > MAX_STEPS:
        raise ConfigError(
            f"adaptation budget of {steps} steps is over the limit of {MAX_STEPS:,} "
            "(about 10 minutes on 2 CPU cores; docs/adaptation.md measured 150 and 750)",
            fix=f"pass --adapt-steps {MAX_STEPS} or fewer (steps= in the API; a few hundred is "
            "typical), or leave it out for the default time budget",
        )
    if seconds is not None and (
        isinstance(seconds, (bool, np.bool_))
        or not isinstance(seconds, number)
        or not (math.isfinite(seconds) and seconds > 0)
    ):
        raise ConfigError(
            f"adaptation budget must be a positive number of seconds, got {seconds!r}",
            fix="pass --adapt-seconds > 0 (seconds= in the API), or leave it out",
        )
    if seconds is not None and seconds > MAX_SECONDS:
        raise ConfigError(
            f"adaptation budget of {seconds:g} seconds is over the limit of "
            f"{MAX_SECONDS:g} (one hour)",
            fix=f"pass --adapt-seconds {MAX_SECONDS:g} or less (seconds= in the API; the "
            f"default is {DEFAULT_SECONDS:g}), or leave it out",
        )


def check_model_suffix(path: str | Path) -> None:
    """Refuse a model file name that is not ``.safetensors``.

    Raises:
        ConfigError: see above.
    """
    if Path(path).suffix != ".safetensors":
        raise ConfigError(
            "is not a .safetensors path",
            path=path,
            expected="a model file name ending in .safetensors",
            fix="name it e.g. --save-adapted protocol.safetensors "
            '(save_path="protocol.safetensors" in the API)',
        )
