"""Every training setting as frozen, typed dataclasses; YAML only reads and writes them.

A :class:`TrainConfig` is made of sections that mirror the YAML file::

    data:      where the volumes are, the held-out one, factors, axes, patches
    model:     recipe, size and optional generator/discriminator overrides
    loss:      loss weights (None = the recipe's value)
    optim:     Adam settings (None = the recipe's value) and learning-rate milestones
    schedule:  steps of each stage and how often to validate, log and save
    (top level) ema_decay, seed, device, amp, compile, threads, out, tensorboard

Loss and optimiser fields left at ``None`` take the recipe's value
(:mod:`mrisr.recipes`); :func:`mrisr.training.train` records the resolved values in
the run folder. Every dataclass validates itself on construction and raises
:class:`~mrisr.errors.ConfigError`, so a config built in Python is checked
exactly like one read from YAML. Configs are never mutated: use
:func:`dataclasses.replace` or :func:`with_overrides` to make a changed copy.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from mrisr.device import DEVICE_HELP, check_device_text
from mrisr.errors import ConfigError

Size = Literal["small", "full"]
#: Network size names. What each size means is stated by each network class
#: (``mrisr.networks.ConfiguredNetwork.sizes``; ``full`` is the paper's network).
SIZES: tuple[str, ...] = ("small", "full")
#: The network size of a run that names none (and starts from no model).
DEFAULT_SIZE = "small"
PROFILES: tuple[str, ...] = ("mean", "gaussian")
#: ``data.profile`` values: a fixed profile, or ``mixed`` (either, drawn per batch).
TRAINING_PROFILES: tuple[str, ...] = (*PROFILES, "mixed")
#: The weighted loss terms, the fields of :class:`LossConfig` and of
#: :class:`mrisr.recipes.LossWeights`.
LOSS_TERMS: tuple[str, ...] = (
    "pixel",
    "adversarial",
    "perceptual",
    "feature_matching",
    "texture",
    "intermediate",
)


class FrozenDict(dict):
    """A dict that refuses changes, so that frozen configs stay frozen all the way down.

    Unlike ``types.MappingProxyType`` it pickles (DataLoader workers and
    spawned DDP processes receive configs by pickling).
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "config mappings are read-only; build a new config instead, e.g. with "
            "mrisr.config.with_overrides(config, {'model.generator_kwargs': {...}})"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((k, repr(v)) for k, v in self.items())))


def _frozen_mapping(value: Mapping[str, Any] | None) -> FrozenDict:
    """A read-only copy of ``value``."""
    return FrozenDict(value or {})


#: The ``mrisr train`` option of each setting that has one; messages name both
#: (``--patch-size (data.patch_size)``), whichever the user set it with.
CLI_OPTIONS: dict[str, str] = {
    **{
        key: "--" + key.rsplit(".", 1)[-1].replace("_", "-")
        for key in (
            "data.volumes data.val_volume data.factor data.factor_range data.axes data.profile "
            "data.patch_size data.batch_size data.workers data.val_crop data.allow_anisotropic "
            "model.recipe model.size model.generator model.discriminator model.init_from "
            "loss.perceptual_weights optim.lr_g optim.lr_d schedule.steps schedule.gan_steps "
            "schedule.val_every schedule.log_every schedule.save_every out ema_decay seed device "
            "threads amp compile tensorboard"
        ).split()
    },
    "optim.lr_pretrain": "--lr",
}


def _named(where: str) -> str:
    """A setting as messages name it: ``--patch-size (data.patch_size)``, or its key alone."""
    option = CLI_OPTIONS.get(where.split("[")[0])
    return f"{option} ({where})" if option else where


def _check_range(
    section: str,
    name: str,
    value: float,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ConfigError unless ``low <= value <= high`` (open ends where asked)."""
    name = _named(name if section == "config" else f"{section}.{name}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or too_low
        or too_high
    ):
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ConfigError(
            f"{name} must be in {left}{low:g}, {high:g}{right}, got {value!r}",
            fix=f"set {name} inside that range",
        )


def _check_path_text(section: str, name: str, value: Any) -> None:
    """Refuse an empty path: read as a path it would silently be the current folder."""
    name = _named(name if section == "config" else f"{section}.{name}")
    if isinstance(value, str) and not value.strip():
        raise ConfigError(
            f"{name} is an empty path: it names no file or folder (read as a path it would be "
            "the current folder)",
            fix=f"give {name} a file or folder name (. for the current folder), or leave it out",
        )


def _check_choice(section: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    name = _named(f"{section}.{name}")
    if value not in choices:
        raise ConfigError(
            f"{name} must be one of {', '.join(choices)}, got {value!r}",
            fix=f"set {name} to one of them",
        )


@dataclass(frozen=True)
class DataConfig:
    """Training data and how pairs are cut from it.

    Attributes:
        volumes: folder of high-resolution volumes (.nii, .nii.gz, .mgz, .mgh).
        val_volume: file name (or stem) of the volume held out for validation;
            ``"auto"``: the last one alphabetically; ``"none"``: keep none out.
        factor: thick/thin spacing ratio trained for, and the validation factor.
        factor_range: (low, high) to draw a factor per batch uniformly from
            instead of the single ``factor``; ``factor`` must lie inside it.
        axes: thick axes to simulate (0, 1, 2); each gives two pair kinds.
        profile: slice profile of the simulation, ``mean`` (box), ``gaussian``,
            or ``mixed`` (one of the two drawn per batch; validation uses ``mean``).
        patch_size: high-resolution patch side in voxels (rows = thick axis).
        batch_size: pairs per step per process.
        workers: DataLoader worker processes (0 = in the training process).
        min_foreground: least fraction of foreground pixels in an HR patch;
            mostly-background patches are redrawn.
        val_crop: side in voxels of the central cube of the held-out volume
            used for validation (small keeps validation fast).
        allow_anisotropic: train on volumes whose voxels are more than 1.3x
            anisotropic (treated as isotropic); by default they are refused,
            since their coarse axis is no high-resolution truth.
        factor_focus: (low, high) sub-range of ``factor_range`` drawn more
            often: a batch's factor is uniform in it with probability
            ``focus_weight``, else log-uniform over the whole range. None:
            uniform over the range.
        focus_weight: that probability.
        thickness_range: (low, high) slice thickness (box width or Gaussian
            FWHM) as a multiple of the slice spacing, drawn per batch; below 1
            leaves gaps, above 1 overlaps. None: the spacing (1).
        noise_snr: (low, high) signal-to-noise ratio of Rician noise added to
            the LR patch (the volume's mean signal above its Otsu threshold /
            noise sigma), drawn per pair. None: no noise.
        bias_field: largest coefficient of MONAI's smooth polynomial bias field
            (``RandBiasField``), applied to the HR window before simulation, so
            LR and HR share it. 0: none.
        gamma_range: (low, high) intensity gamma (MONAI ``RandAdjustContrast``),
            applied like the bias field. None: none.
        degrade_fraction: fraction of pairs that get each of noise, bias field
            and gamma (independently), so that clean pairs stay in every batch.
    """

    volumes: str | None = None
    val_volume: str = "auto"
    factor: float = 4.0
    factor_range: tuple[float, float] | None = None
    axes: tuple[int, ...] = (0, 1, 2)
    profile: str = "mean"
    patch_size: int = 64
    batch_size: int = 16
    workers: int = 0
    min_foreground: float = 0.3
    val_crop: int = 64
    allow_anisotropic: bool = False
    factor_focus: tuple[float, float] | None = None
    focus_weight: float = 0.5
    thickness_range: tuple[float, float] | None = None
    noise_snr: tuple[float, float] | None = None
    bias_field: float = 0.0
    gamma_range: tuple[float, float] | None = None
    degrade_fraction: float = 0.5

    def __post_init__(self) -> None:
        _check_range("data", "factor", self.factor, 1.0, 32.0, low_open=True)
        if self.factor_range is not None:
            if len(self.factor_range) != 2:
                raise ConfigError(
                    f"{_named('data.factor_range')} must be [low, high], "
                    f"got {list(self.factor_range)!r}",
                    fix="set data.factor_range to two factors, the smaller first, e.g. [2, 6] "
                    "(--factor-range 2 6)",
                )
            low, high = self.factor_range
            _check_range("data", "factor_range[0]", low, 1.0, 32.0, low_open=True)
            _check_range("data", "factor_range[1]", high, 1.0, 32.0, low_open=True)
            if low > high:
                raise ConfigError(
                    f"{_named('data.factor_range')} must be [low, high] with low <= high, "
                    f"got [{low:g}, {high:g}]",
                    fix="swap the two values",
                )
            if not low <= self.factor <= high:
                raise ConfigError(
                    f"{_named('data.factor')} {self.factor:g} (the validation factor) is outside "
                    f"{_named('data.factor_range')} [{low:g}, {high:g}]",
                    fix="set --factor (data.factor) inside the range",
                )
        if (
            not self.axes
            or any(a not in (0, 1, 2) for a in self.axes)
            or len(set(self.axes)) != len(self.axes)
        ):
            raise ConfigError(
                f"{_named('data.axes')} must be distinct thick axes out of 0, 1, 2, "
                f"got {list(self.axes)!r}",
                fix="e.g. --axes 0,1,2 (axes: [0, 1, 2])",
            )
        _check_path_text("data", "volumes", self.volumes)
        _check_choice("data", "profile", self.profile, TRAINING_PROFILES)
        _check_range("data", "patch_size", self.patch_size, 8, 1024)
        if self.patch_size < 2 * self.max_factor:
            raise ConfigError(
                f"{_named('data.patch_size')} {self.patch_size} leaves fewer than 2 "
                f"low-resolution rows at factor {self.max_factor:g}",
                fix=f"use a patch size of at least {math.ceil(2 * self.max_factor)}",
            )
        _check_range("data", "batch_size", self.batch_size, 1, 65536)
        _check_range("data", "workers", self.workers, 0, 256)
        _check_range("data", "min_foreground", self.min_foreground, 0.0, 1.0)
        _check_range("data", "val_crop", self.val_crop, 8, 4096)
        self._check_degradations()

    def _check_degradations(self) -> None:
        """Refuse degradation settings outside their meaningful ranges."""
        for name, value, low, high in (
            ("factor_focus", self.factor_focus, 1.0, 32.0),
            ("thickness_range", self.thickness_range, 0.1, 4.0),
            ("noise_snr", self.noise_snr, 1.0, 10_000.0),
            ("gamma_range", self.gamma_range, 0.1, 10.0),
        ):
            if value is None:
                continue
            if len(value) != 2 or value[0] > value[1]:
                raise ConfigError(
                    f"data.{name} must be [low, high] with low <= high, got {list(value)!r}",
                    fix=f"set data.{name} to two numbers, the smaller first",
                )
            _check_range("data", f"{name}[0]", value[0], low, high)
            _check_range("data", f"{name}[1]", value[1], low, high)
        if self.factor_focus is not None:
            low, high = self.factor_bounds
            if not low <= self.factor_focus[0] <= self.factor_focus[1] <= high:
                raise ConfigError(
                    f"data.factor_focus {list(self.factor_focus)} is not inside the factors "
                    f"trained for [{low:g}, {high:g}]",
                    fix="set data.factor_range to cover it, or narrow data.factor_focus",
                )
        _check_range("data", "focus_weight", self.focus_weight, 0.0, 1.0)
        _check_range("data", "bias_field", self.bias_field, 0.0, 1.0)
        _check_range("data", "degrade_fraction", self.degrade_fraction, 0.0, 1.0)

    @property
    def factor_bounds(self) -> tuple[float, float]:
        """(low, high) factors trained for: the range, or (factor, factor)."""
        if self.factor_range is None:
            return (float(self.factor), float(self.factor))
        return (float(self.factor_range[0]), float(self.factor_range[1]))

    @property
    def max_factor(self) -> float:
        """Largest factor any batch may use."""
        return self.factor_bounds[1]


@dataclass(frozen=True)
class ModelConfig:
    """Which networks to train.

    Attributes:
        recipe: name in :data:`mrisr.recipes.RECIPES` (``esrgan`` by default).
        size: ``small`` (fast, for CPUs and tests) or ``full`` (the paper's size);
            None (the default): the ``init_from`` model's size, else
            :data:`DEFAULT_SIZE`. A size given with ``init_from`` must be the
            model's (see :attr:`network_size`).
        generator: generator name overriding the recipe's (see ``mrisr models``).
        generator_kwargs: constructor arguments overriding the size's.
        discriminator: discriminator name overriding the recipe's.
        discriminator_kwargs: constructor arguments overriding the recipe's.
        init_from: a model to start the generator (and its EMA) from instead
            of cubic interpolation: a bundled model's name or a model file
            (``mrisr train --init-from fast``: fine-tune the default model on
            your data). Its network and configuration must match this run's.
    """

    recipe: str = "esrgan"
    size: str | None = None
    generator: str | None = None
    generator_kwargs: Mapping[str, Any] = field(default_factory=dict)
    discriminator: str | None = None
    discriminator_kwargs: Mapping[str, Any] = field(default_factory=dict)
    init_from: str | None = None

    def __post_init__(self) -> None:
        # Recipe and network names are checked against their tables in
        # mrisr.recipes.resolve so that this module stays free of torch.
        if not isinstance(self.recipe, str) or not self.recipe:
            raise ConfigError(
                f"model.recipe must be a recipe name, got {self.recipe!r}",
                fix="run `mrisr models` to list them",
            )
        if self.size is not None:
            _check_choice("model", "size", self.size, SIZES)
        _check_path_text("model", "init_from", self.init_from)
        object.__setattr__(self, "generator_kwargs", _frozen_mapping(self.generator_kwargs))
        object.__setattr__(self, "discriminator_kwargs", _frozen_mapping(self.discriminator_kwargs))

    @property
    def network_size(self) -> str:
        """The size the networks are built at: :attr:`size`, or :data:`DEFAULT_SIZE` when unset."""
        return self.size if self.size is not None else DEFAULT_SIZE


@dataclass(frozen=True)
class LossConfig:
    """Loss weights; ``None`` takes the recipe's value.

    Attributes:
        pixel: weight of the pixel loss in the GAN stage (stage 1 is pixel loss only).
        pixel_kind: ``l1`` or ``l2``.
        adversarial: weight of the adversarial loss.
        perceptual: weight of the VGG perceptual loss (used only with weights).
        feature_matching: weight of discriminator feature matching.
        texture: weight of the Gram-matrix texture loss.
        intermediate: weight of the pixel loss on a cascade's intermediate output.
        perceptual_weights: VGG19 weights file (.safetensors or a state dict),
            or ``monai:radimagenet_resnet50`` for MONAI's cached network.
    """

    pixel: float | None = None
    pixel_kind: str | None = None
    adversarial: float | None = None
    perceptual: float | None = None
    feature_matching: float | None = None
    texture: float | None = None
    intermediate: float | None = None
    perceptual_weights: str | None = None

    def __post_init__(self) -> None:
        for name in LOSS_TERMS:
            value = getattr(self, name)
            if value is not None:
                _check_range("loss", name, value, 0.0, 1e6)
        if self.pixel_kind is not None:
            _check_choice("loss", "pixel_kind", self.pixel_kind, ("l1", "l2"))
        _check_path_text("loss", "perceptual_weights", self.perceptual_weights)


@dataclass(frozen=True)
class OptimConfig:
    """Adam and its step-wise learning-rate decay (ESRGAN's).

    Attributes:
        lr_pretrain: generator learning rate in stage 1 (default: the recipe's; esrgan 1e-3 small, 2e-4 full).
        lr_g: generator learning rate in the GAN stage (ESRGAN: 1e-4).
        lr_d: discriminator learning rate (ESRGAN: 1e-4).
        betas: Adam betas (ESRGAN: 0.9, 0.99).
        weight_decay: Adam weight decay (ESRGAN: 0).
        milestones: fractions of stage 1 after which its rate is multiplied by ``gamma``.
        gan_milestones: the same for the GAN stage.
        gamma: the factor applied at each milestone.
        grad_clip: clip the gradient norm of each network to this (0 = off).
    """

    lr_pretrain: float | None = None
    lr_g: float | None = None
    lr_d: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float = 0.0
    milestones: tuple[float, ...] = (0.5, 0.75)
    gan_milestones: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75)
    gamma: float = 0.5
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lr_pretrain", "lr_g", "lr_d"):
            value = getattr(self, name)
            if value is not None:
                _check_range("optim", name, value, 0.0, 1.0, low_open=True)
        if self.betas is not None:
            if len(self.betas) != 2:
                raise ConfigError(
                    f"optim.betas must be [beta1, beta2], got {list(self.betas)!r}",
                    fix="set optim.betas to two numbers in [0, 1), e.g. [0.9, 0.99]",
                )
            _check_range("optim", "betas[0]", self.betas[0], 0.0, 1.0, high_open=True)
            _check_range("optim", "betas[1]", self.betas[1], 0.0, 1.0, high_open=True)
        _check_range("optim", "weight_decay", self.weight_decay, 0.0, 1.0)
        for name in ("milestones", "gan_milestones"):
            values = getattr(self, name)
            for value in values:
                _check_range("optim", name, value, 0.0, 1.0, low_open=True, high_open=True)
            if list(values) != sorted(values):
                raise ConfigError(
                    f"optim.{name} must increase, got {list(values)!r}",
                    fix=f"list optim.{name} as increasing fractions of the stage, e.g. [0.5, 0.75]",
                )
        _check_range("optim", "gamma", self.gamma, 0.0, 1.0, low_open=True)
        _check_range("optim", "grad_clip", self.grad_clip, 0.0, 1e6)


@dataclass(frozen=True)
class ScheduleConfig:
    """How long each stage runs and how often to look at it.

    Attributes:
        steps: stage-1 steps (pixel-loss warm-up, the PSNR-oriented model).
        gan_steps: GAN-stage steps after stage 1 (0 = no GAN stage).
        val_every: validate every this many steps (and always at the end; 0 = only then).
        log_every: write losses to log.jsonl every this many steps.
        save_every: write state.pt and model.safetensors every this many steps
            (and always at the end of each stage; 0 = only then).
    """

    steps: int = 10000
    gan_steps: int = 10000
    val_every: int = 1000
    log_every: int = 50
    save_every: int = 1000

    def __post_init__(self) -> None:
        _check_range("schedule", "steps", self.steps, 1, 1e9)
        _check_range("schedule", "gan_steps", self.gan_steps, 0, 1e9)
        _check_range("schedule", "val_every", self.val_every, 0, 1e9)
        _check_range("schedule", "log_every", self.log_every, 1, 1e9)
        _check_range("schedule", "save_every", self.save_every, 0, 1e9)
        for name in ("steps", "gan_steps", "val_every", "log_every", "save_every"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(
                    f"schedule.{name} must be an integer, got {getattr(self, name)!r}",
                    fix=_fix(f"schedule.{name}"),
                )


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`mrisr.training.train` needs.

    Attributes:
        data: see :class:`DataConfig`.
        model: see :class:`ModelConfig`.
        loss: see :class:`LossConfig`.
        optim: see :class:`OptimConfig`.
        schedule: see :class:`ScheduleConfig`.
        out: run folder (created; config, models, state and log go there).
        ema_decay: decay of the exponential moving average of generator weights.
        seed: seed of every random choice (data, initial weights).
        device: auto, cpu, cuda or cuda:N (under torchrun: the local GPU).
        amp: bf16 autocast where the hardware has bfloat16 (GPUs, with
            channels-last memory; CPUs with AVX512-BF16 or AMX); float32 elsewhere.
        compile: wrap the networks in torch.compile.
        threads: CPU threads for torch (None: torch's default).
        tensorboard: also write TensorBoard curves when tensorboard is installed.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    out: str | None = None
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    threads: int | None = None
    tensorboard: bool = True

    def __post_init__(self) -> None:
        _check_range("config", "ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        _check_path_text("config", "out", self.out)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(
                f"seed must be an integer >= 0, got {self.seed!r}", fix="pass --seed 0 or more"
            )
        try:
            check_device_text(self.device)
        except ConfigError as error:  # named as the setting; the fix is the device check's
            raise ConfigError(
                f"device must be {DEVICE_HELP}, got {self.device!r}", fix=error.fix
            ) from None
        if self.threads is not None:
            _check_range("config", "threads", self.threads, 1, 1024)


# ---------------------------------------------------------------------------
# dict <-> dataclass, with type checks and unknown keys rejected
# ---------------------------------------------------------------------------


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (lists for tuples, dicts for mappings) of a config dataclass."""
    result: dict[str, Any] = {}
    for f in fields(config):
        result[f.name] = _plain(getattr(config, f.name))
    return result


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def from_dict(cls: type, values: Mapping[str, Any], *, section: str = "config") -> Any:
    """Build config dataclass ``cls`` from a nested mapping.

    Lists become tuples, ints are accepted for floats, missing keys take their
    defaults, unknown keys and wrong types raise :class:`ConfigError`.

    Args:
        cls: a config dataclass (e.g. :class:`TrainConfig`).
        values: nested mapping as read from YAML.
        section: name used in error messages.

    Returns:
        A new instance of ``cls``.

    Raises:
        ConfigError: ``values`` is not a mapping, has unknown keys, or a value of the
            wrong type or range.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{section} must be a mapping of settings, got {type(values).__name__}",
            fix="write it as `key: value` lines",
        )
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(k if section == 'config' else f'{section}.{k}' for k in unknown)}",
            expected=f"{'top-level settings' if section == 'config' else 'settings of ' + section}: "
            f"{', '.join(sorted(known))}",
            fix="check the spelling, or remove them",
        )
    kwargs = {
        name: _convert(hints[name], value, f"{section}.{name}" if section != "config" else name)
        for name, value in values.items()
    }
    return cls(**kwargs)


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type ``hint`` and convert YAML types (list -> tuple...)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, section=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, where)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{where} must be one of {', '.join(map(str, args))}, got {value!r}",
                fix=_fix(where),
            )
        return value
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}", fix=_fix(where))
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}", fix=_fix(where))
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}", fix=_fix(where))
        return float(value)
    if hint is str:
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}", fix=_fix(where))
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}", fix=_fix(where))
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise ConfigError(
                f"{where} must be a list of {len(args)} values, got {list(value)!r}",
                fix=_fix(where),
            )
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if origin in (Mapping, dict, typing.Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}", fix=_fix(where))
        return dict(value)
    raise ConfigError(f"{where}: unsupported setting type {hint!r}")  # pragma: no cover


def with_overrides(config: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted settings replaced, e.g. ``{"data.factor": 4}``.

    Values go through the same conversion and validation as YAML values;
    ``None`` values are skipped (an option that was not given).

    Args:
        config: the base config (not modified).
        overrides: mapping of ``"section.name"`` or top-level ``"name"`` to values.

    Returns:
        A new :class:`TrainConfig`.

    Raises:
        ConfigError: an unknown dotted setting, or a value the config refuses.
    """
    merged = to_dict(config)
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, name = key.split(".")
        target = merged
        for parent in parents:
            if parent not in target or not isinstance(target[parent], dict):
                raise ConfigError(
                    f"unknown config section {parent!r} in {key!r}",
                    expected=f"one of {', '.join(k for k, v in merged.items() if isinstance(v, dict))}",
                    fix="name a setting as section.name, e.g. data.factor, or a top-level "
                    "name such as seed",
                )
            target = target[parent]
        target[name] = _plain(value)
    return from_dict(TrainConfig, merged)


def _fix(where: str) -> str:
    """The fix of a setting of the wrong type: where to correct it."""
    option = CLI_OPTIONS.get(where.split("[")[0])
    return f"correct {where} in the YAML config" + (f" (or {option})" if option else "")
