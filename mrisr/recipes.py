"""Training recipes: which generator, discriminator, losses and optimiser settings.

A recipe is a published super-resolution method adapted to mrisr's slices
(rows = thick axis, any factor, global cubic residual). ``RECIPES`` is a plain
dict from name to :class:`Recipe`; ``mrisr models`` lists it.

Every recipe trains in up to two stages (see :mod:`mrisr.training`):

1. pixel-loss warm-up (L1 or L2; plus the deep-supervision term of cascaded
   and recursive generators), giving the PSNR-oriented model;
2. a GAN stage started from stage 1, with the recipe's weighted pixel,
   adversarial, perceptual, feature-matching and texture losses. Recipes
   without an adversarial loss (SRCNN, FSRCNN, ESPCN, VDSR, DRCN) skip it.

Perceptual losses need pretrained VGG19 weights, which mrisr does not ship
or download. Each GAN recipe therefore has two sets of weights: ``weights``, used when
a perceptual network is given (``loss.perceptual_weights``), and
``weights_without_perceptual``, which replaces the perceptual term by feature
matching on the discriminator's features plus a Gram-matrix texture loss, so
that every recipe trains out of the box.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mrisr.config import LOSS_TERMS
from mrisr.errors import ConfigError

if TYPE_CHECKING:
    from mrisr.config import TrainConfig

#: Adversarial loss kinds (see :data:`mrisr.losses.ADVERSARIAL_LOSSES`).
ADVERSARIAL_KINDS: tuple[str, ...] = ("ragan", "lsragan", "gan")


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(
        {
            k: types.MappingProxyType(dict(v)) if isinstance(v, Mapping) else v
            for k, v in mapping.items()
        }
    )


@dataclass(frozen=True)
class LossWeights:
    """Weights of the training losses (0 = term unused).

    Attributes:
        pixel: pixel loss in the GAN stage (stage 1 uses the pixel loss with weight 1).
        adversarial: generator's adversarial loss.
        perceptual: VGG feature loss (only with a perceptual network).
        feature_matching: L1 between discriminator features of real and generated patches.
        texture: L1 between Gram matrices of those features (or of the VGG
            features when a perceptual network is given).
        intermediate: pixel loss of a cascade's intermediate outputs (RRGAN's
            half-way image, DRCN's recursions), both stages.
    """

    pixel: float = 1.0
    adversarial: float = 0.0
    perceptual: float = 0.0
    feature_matching: float = 0.0
    texture: float = 0.0
    intermediate: float = 0.0


@dataclass(frozen=True)
class Recipe:
    """One training method.

    Attributes:
        name: key in :data:`RECIPES`.
        title: one line for listings.
        generator: key in :data:`mrisr.networks.GENERATORS`; its sizes
            (``small``, ``full``) are the network's own (:attr:`generator_sizes`).
        discriminator: key in :data:`mrisr.networks.DISCRIMINATORS`, or None.
        pixel_loss: ``l1`` or ``l2``, both stages.
        adversarial_loss: ``ragan``, ``lsragan``, ``gan`` or None (no GAN stage).
        weights: loss weights with a perceptual network.
        weights_without_perceptual: loss weights without one.
        perceptual_layers: VGG19 layer -> weight (``conv5_4``: pre-activation,
            ``relu5_4``: post-activation).
        perceptual_criterion: ``l1`` or ``l2`` distance of the perceptual features.
        lr_pretrain: stage-1 generator learning rate.
        lr_pretrain_by_size: stage-1 learning rate for named sizes where it
            differs from ``lr_pretrain`` (short CPU runs of a small network).
        lr_g: GAN-stage generator learning rate.
        lr_d: discriminator learning rate.
        betas: Adam betas.
        stages: how the method trains, and how mrisr adapts it.
        citation: the paper.
    """

    name: str
    title: str
    generator: str
    pixel_loss: str
    # A recipe without a discriminator is pixel-loss only: no GAN stage.
    discriminator: str | None = None
    adversarial_loss: str | None = None
    weights: LossWeights = LossWeights()
    weights_without_perceptual: LossWeights = LossWeights()
    perceptual_layers: Mapping[str, float] = field(
        default_factory=lambda: types.MappingProxyType({"conv5_4": 1.0})
    )
    perceptual_criterion: str = "l1"
    lr_pretrain: float = 2e-4
    lr_pretrain_by_size: Mapping[str, float] = field(
        default_factory=lambda: types.MappingProxyType({})
    )
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    stages: str = ""
    citation: str = ""

    @property
    def generator_sizes(self) -> Mapping[str, Mapping[str, Any]]:
        """The generator's constructor settings per size, as the network states them."""
        from mrisr.networks import GENERATORS

        return GENERATORS[self.generator].sizes

    @property
    def discriminator_sizes(self) -> Mapping[str, Mapping[str, Any]]:
        """The discriminator's constructor settings per size (empty without one)."""
        from mrisr.networks import DISCRIMINATORS

        return DISCRIMINATORS[self.discriminator].sizes if self.discriminator else {}

    @property
    def has_gan_stage(self) -> bool:
        """Whether the recipe has an adversarial stage."""
        return self.adversarial_loss is not None and self.discriminator is not None


RECIPES: dict[str, Recipe] = {
    "esrgan": Recipe(
        name="esrgan",
        title="ESRGAN: RRDB generator, VGG-style discriminator, relativistic GAN (default)",
        generator="rrdbnet",
        discriminator="vgg",
        pixel_loss="l1",
        adversarial_loss="ragan",
        weights=LossWeights(pixel=1e-2, adversarial=5e-3, perceptual=1.0),
        weights_without_perceptual=LossWeights(
            pixel=1e-2, adversarial=5e-3, feature_matching=1.0, texture=1.0
        ),
        perceptual_layers=types.MappingProxyType({"conv5_4": 1.0}),
        # ESRGAN's 2e-4 suits its full network over a million steps. For the
        # small network's short CPU runs 1e-3 learns faster: after 300 steps on
        # ../shared/data/train it gave +0.52 dB over cubic on the validation crop
        # against +0.19 dB, and after 1000 steps +0.84 against +0.31 dB.
        lr_pretrain_by_size=types.MappingProxyType({"small": 1e-3}),
        stages=(
            "Stage 1: L1 (lr 2e-4; 1e-3 for --size small) gives the PSNR-oriented RRDB net. "
            "Stage 2 starts from it: "
            "L1 x 1e-2 + relativistic average GAN (BCE) x 5e-3 + VGG19 conv5_4 "
            "(pre-activation) L1 x 1, lr 1e-4 for G and D, Adam (0.9, 0.99), EMA 0.999. "
            "Without VGG weights the perceptual term becomes feature matching on the "
            "discriminator's features x 1 plus a Gram texture loss x 1 (mrisr's choice)."
        ),
        citation=(
            "Wang X. et al., ESRGAN: Enhanced Super-Resolution Generative Adversarial "
            "Networks, ECCV Workshops 2018."
        ),
    ),
    "srcnn": Recipe(
        name="srcnn",
        title="SRCNN 9-5-5, pixel loss only",
        generator="srcnn",
        pixel_loss="l2",
        stages="One stage: MSE on cubic-upsampled input (Adam instead of the paper's SGD).",
        citation=(
            "Dong C. et al., Image Super-Resolution Using Deep Convolutional Networks, "
            "IEEE TPAMI 2016 (ECCV 2014)."
        ),
    ),
    "fsrcnn": Recipe(
        name="fsrcnn",
        title="FSRCNN, pixel loss only",
        generator="fsrcnn",
        pixel_loss="l2",
        stages="One stage: MSE at low resolution with a rows-only sub-pixel output (Adam).",
        citation=(
            "Dong C., Loy C. C., Tang X., Accelerating the Super-Resolution Convolutional "
            "Neural Network, ECCV 2016."
        ),
    ),
    "espcn": Recipe(
        name="espcn",
        title="ESPCN sub-pixel CNN, pixel loss only",
        generator="espcn",
        pixel_loss="l2",
        stages="One stage: MSE (Adam).",
        citation=(
            "Shi W. et al., Real-Time Single Image and Video Super-Resolution Using an "
            "Efficient Sub-Pixel Convolutional Neural Network, CVPR 2016."
        ),
    ),
    "vdsr": Recipe(
        name="vdsr",
        title="VDSR 20-layer residual CNN, pixel loss only",
        generator="vdsr",
        pixel_loss="l2",
        stages="One stage: MSE on the residual to cubic interpolation (Adam, no clipping schedule).",
        citation=(
            "Kim J., Lee J. K., Lee K. M., Accurate Image Super-Resolution Using Very Deep "
            "Convolutional Networks, CVPR 2016."
        ),
    ),
    "drcn": Recipe(
        name="drcn",
        title="DRCN recursive CNN with recursive supervision, pixel loss only",
        generator="drcn",
        discriminator=None,
        pixel_loss="l2",
        adversarial_loss=None,
        weights=LossWeights(pixel=1.0, intermediate=1.0),
        weights_without_perceptual=LossWeights(pixel=1.0, intermediate=1.0),
        stages=(
            "One stage: MSE of the ensemble output plus, weighted by loss.intermediate, the mean "
            "MSE of every recursion's prediction (recursive supervision; a constant weight "
            "instead of the paper's decaying alpha)."
        ),
        citation=(
            "Kim J., Lee J. K., Lee K. M., Deeply-Recursive Convolutional Network for Image "
            "Super-Resolution, CVPR 2016."
        ),
    ),
    "srgan": Recipe(
        name="srgan",
        title="SRGAN: SRResNet generator, SRGAN discriminator, standard GAN",
        generator="srresnet",
        discriminator="srgan",
        pixel_loss="l2",
        adversarial_loss="gan",
        # SRGAN's VGG54 content loss is an MSE of post-activation conv5_4
        # features rescaled by 1 / 12.75**2 (about 0.006).
        weights=LossWeights(pixel=0.0, adversarial=1e-3, perceptual=0.006),
        weights_without_perceptual=LossWeights(pixel=1.0, adversarial=1e-3),
        perceptual_layers=types.MappingProxyType({"relu5_4": 1.0}),
        perceptual_criterion="l2",
        lr_pretrain=1e-4,
        lr_g=1e-4,
        lr_d=1e-4,
        betas=(0.9, 0.999),
        stages=(
            "Stage 1: MSE (SRResNet). Stage 2: VGG54 content loss (MSE of post-activation "
            "conv5_4 features x 0.006) + BCE adversarial x 1e-3; without VGG weights the "
            "content loss is the pixel MSE (the paper's SRGAN-MSE)."
        ),
        citation=(
            "Ledig C. et al., Photo-Realistic Single Image Super-Resolution Using a Generative "
            "Adversarial Network, CVPR 2017."
        ),
    ),
    "srlrgan-sn": Recipe(
        name="srlrgan-sn",
        title="Lightweight ShuffleNetV2 generator, SN-8 discriminator, least-squares relativistic GAN",
        generator="srlrgan",
        discriminator="sn8",
        pixel_loss="l1",
        adversarial_loss="lsragan",
        weights=LossWeights(pixel=1.0, adversarial=5e-3, perceptual=1.0, texture=1.0),
        weights_without_perceptual=LossWeights(
            pixel=1.0, adversarial=5e-3, feature_matching=1.0, texture=1.0
        ),
        stages=(
            "Stage 1: L1. Stage 2: content (L1) + feature (VGG conv5_4, or discriminator "
            "feature matching) + Gram texture + least-squares relativistic average adversarial "
            "loss, with a spectrally normalised discriminator."
        ),
        citation=(
            "Least-squares relativistic GAN: Jolicoeur-Martineau A., The relativistic "
            "discriminator: a key element missing from standard GAN, ICLR 2019; spectral "
            "normalisation: Miyato T. et al., ICLR 2018; generator units: Ma N. et al., "
            "ShuffleNet V2, ECCV 2018."
        ),
    ),
    "rrgan": Recipe(
        name="rrgan",
        title="Recursive residual cascade generator, PatchGAN discriminator, multi-cascade loss",
        generator="rrgan",
        discriminator="patch",
        pixel_loss="l1",
        adversarial_loss="ragan",
        weights=LossWeights(pixel=1e-2, adversarial=5e-3, perceptual=1.0, intermediate=0.5),
        weights_without_perceptual=LossWeights(
            pixel=1e-2, adversarial=5e-3, feature_matching=1.0, intermediate=0.5
        ),
        stages=(
            "Both stages supervise the cascade's intermediate image too (against the target "
            "block-averaged to its rows; weight loss.intermediate). Stage 2 adds a "
            "relativistic adversarial loss on a PatchGAN and a perceptual (or feature "
            "matching) term."
        ),
        citation=(
            "Recursive residual blocks: Tai Y. et al., Image Super-Resolution via Deep "
            "Recursive Residual Network, CVPR 2017; progressive cascade: Lai W.-S. et al., "
            "LapSRN, CVPR 2017; PatchGAN: Isola P. et al., CVPR 2017."
        ),
    ),
    "attn-srgan": Recipe(
        name="attn-srgan",
        title="Attention SRGAN (SE/CBAM blocks + window transformer), U-Net discriminator",
        generator="attn-srgan",
        discriminator="unet",
        pixel_loss="l1",
        adversarial_loss="gan",
        weights=LossWeights(pixel=1.0, adversarial=0.1, perceptual=1.0),
        weights_without_perceptual=LossWeights(
            pixel=1.0, adversarial=0.1, feature_matching=1.0, texture=1.0
        ),
        perceptual_layers=types.MappingProxyType(
            {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
        ),
        stages=(
            "Stage 1: L1 pre-training. Stage 2: L1 x 1 + perceptual (VGG19 conv1_2..conv5_4 "
            "pre-activation, Real-ESRGAN's layer weights) x 1 + per-pixel BCE adversarial x 0.1 "
            "on a spectrally normalised U-Net discriminator (model.discriminator: patch for a "
            "PatchGAN instead)."
        ),
        citation=(
            "Attention: Hu J. et al., Squeeze-and-Excitation Networks, CVPR 2018; Woo S. et al., "
            "CBAM, ECCV 2018; Liu Z. et al., Swin Transformer, ICCV 2021. Losses and U-Net "
            "discriminator: Wang X. et al., Real-ESRGAN, ICCV Workshops 2021."
        ),
    ),
}


@dataclass(frozen=True)
class ResolvedRecipe:
    """A recipe with a config's overrides applied: exactly what a run trains.

    Attributes:
        recipe: the recipe's name.
        generator: generator name.
        generator_kwargs: its constructor arguments.
        discriminator: discriminator name, or None when there is no GAN stage.
        discriminator_kwargs: its constructor arguments.
        pixel_loss: ``l1`` or ``l2``.
        adversarial_loss: adversarial loss kind, or None.
        weights: the loss weights in use.
        perceptual_layers: VGG layer weights (used only with a perceptual network).
        perceptual_criterion: ``l1`` or ``l2``.
        lr_pretrain: stage-1 generator learning rate.
        lr_g: GAN-stage generator learning rate.
        lr_d: discriminator learning rate.
        betas: Adam betas.
    """

    recipe: str
    generator: str
    generator_kwargs: Mapping[str, Any]
    discriminator: str | None
    discriminator_kwargs: Mapping[str, Any]
    pixel_loss: str
    adversarial_loss: str | None
    weights: LossWeights
    perceptual_layers: Mapping[str, float]
    perceptual_criterion: str
    lr_pretrain: float
    lr_g: float
    lr_d: float
    betas: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (for the run log and the model file)."""
        from dataclasses import asdict

        return {
            "recipe": self.recipe,
            "generator": {"name": self.generator, "kwargs": dict(self.generator_kwargs)},
            "discriminator": (
                {"name": self.discriminator, "kwargs": dict(self.discriminator_kwargs)}
                if self.discriminator
                else None
            ),
            "pixel_loss": self.pixel_loss,
            "adversarial_loss": self.adversarial_loss,
            "weights": asdict(self.weights),
            "perceptual_layers": dict(self.perceptual_layers),
            "perceptual_criterion": self.perceptual_criterion,
            "lr_pretrain": self.lr_pretrain,
            "lr_g": self.lr_g,
            "lr_d": self.lr_d,
            "betas": list(self.betas),
        }


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ConfigError: an unknown name, listing the known ones.
    """
    if name not in RECIPES:
        raise ConfigError(
            f"unknown recipe {name!r}",
            expected=f"one of {', '.join(RECIPES)}",
            fix="run `mrisr models` to list the recipes",
        )
    return RECIPES[name]


def generator_kwargs(recipe: Recipe, size: str, generator: str | None = None) -> dict[str, Any]:
    """Constructor kwargs of the generator a recipe trains at ``size``.

    The sizes are the network's own (:attr:`mrisr.networks.ConfiguredNetwork.sizes`),
    whichever generator a config picks.

    Raises:
        ConfigError: an unknown generator or size.
    """
    return _network_sizes("generator", generator or recipe.generator, size)


def _network_sizes(kind: str, name: str, size: str) -> dict[str, Any]:
    """A network's settings at a named size; ConfigError naming the choices otherwise."""
    from mrisr.networks import DISCRIMINATORS, GENERATORS

    table = GENERATORS if kind == "generator" else DISCRIMINATORS
    if name not in table:
        raise ConfigError(
            f"unknown {kind} {name!r}",
            expected=f"one of {', '.join(table)}",
            fix=f"set model.{kind} to one of them, or leave it unset",
        )
    return table[name].size_settings(size)


def resolve(config: TrainConfig, *, perceptual_available: bool) -> ResolvedRecipe:
    """Apply a config's model, loss and optimiser overrides to its recipe.

    Args:
        config: the training config.
        perceptual_available: whether a perceptual network will be used
            (selects the recipe's ``weights`` or ``weights_without_perceptual``).

    Returns:
        The :class:`ResolvedRecipe`.

    Raises:
        ConfigError: unknown recipe or network name.
    """
    recipe = get_recipe(config.model.recipe)
    model, loss, optim = config.model, config.loss, config.optim
    gen_name = model.generator or recipe.generator
    disc_name = model.discriminator or recipe.discriminator
    gen_kwargs = {
        **generator_kwargs(recipe, model.network_size, gen_name),
        **model.generator_kwargs,
    }
    disc_kwargs: dict[str, Any] = {}
    if disc_name is not None:
        disc_kwargs = {
            **_network_sizes("discriminator", disc_name, model.network_size),
            **model.discriminator_kwargs,
        }

    weights = recipe.weights if perceptual_available else recipe.weights_without_perceptual
    overrides = {
        name: getattr(loss, name) for name in LOSS_TERMS if getattr(loss, name) is not None
    }
    weights = replace(weights, **overrides)
    if not perceptual_available and weights.perceptual > 0:
        raise ConfigError(
            f"loss.perceptual is {weights.perceptual:g} but no perceptual network was given",
            fix="pass --perceptual-weights FILE (VGG19 weights), or set loss.perceptual to 0",
        )
    adversarial = recipe.adversarial_loss if disc_name is not None else None
    return ResolvedRecipe(
        recipe=recipe.name,
        generator=gen_name,
        generator_kwargs=_frozen(gen_kwargs),
        discriminator=disc_name if adversarial is not None else None,
        discriminator_kwargs=_frozen(disc_kwargs),
        pixel_loss=loss.pixel_kind or recipe.pixel_loss,
        adversarial_loss=adversarial,
        weights=weights,
        perceptual_layers=recipe.perceptual_layers,
        perceptual_criterion=recipe.perceptual_criterion,
        lr_pretrain=(
            optim.lr_pretrain
            if optim.lr_pretrain is not None
            else recipe.lr_pretrain_by_size.get(model.network_size, recipe.lr_pretrain)
        ),
        lr_g=optim.lr_g if optim.lr_g is not None else recipe.lr_g,
        lr_d=optim.lr_d if optim.lr_d is not None else recipe.lr_d,
        betas=tuple(optim.betas) if optim.betas is not None else recipe.betas,  # type: ignore[arg-type]
    )


#: Slice size (input rows, columns) on which :func:`describe_recipes` counts
#: MACs. Per output voxel the count does not depend on it: convolutions and
#: linear layers cost the same at every voxel, and windowed attention differs
#: by well under 0.01% between 16 x 16 and 64 x 64 slices, while the full-size
#: recursive networks take seconds on the larger slice.
COMPLEXITY_SLICE: tuple[int, int] = (16, 16)


def describe_recipes(
    *, factor: float = 4.0, sizes: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One JSON-ready row per recipe: its networks and, per size, the generator's cost.

    Each size's generator is built exactly as :func:`mrisr.training.train` would
    build it for a default config of that recipe and size (via
    :func:`resolve`), with random weights, and measured with
    :func:`mrisr.networks.count_parameters` and
    :func:`mrisr.networks.macs_per_output_voxel`. Imports torch.

    Args:
        factor: upsampling factor along the thick axis at which MACs are
            counted (>= 1; 4 in ``mrisr models``).
        sizes: network sizes to measure; default every size
            (:data:`mrisr.config.SIZES`: ``small``, ``full``).

    Returns:
        In the order of :data:`RECIPES`, dicts with ``name``, ``title``,
        ``generator``, ``discriminator`` (None without a GAN stage),
        ``pixel_loss``, ``adversarial_loss``, ``gan_stage`` (bool) and
        ``sizes``: ``{size: {"generator_kwargs": {...}, "parameters": int,
        "macs_per_output_voxel": float}}``.

    Raises:
        ConfigError: a factor below 1 or not finite, or an unknown size.
    """
    import math

    from mrisr.config import SIZES, ModelConfig, TrainConfig
    from mrisr.networks import build_generator, count_parameters, macs_per_output_voxel

    if (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not math.isfinite(factor)
        or factor < 1.0
    ):
        raise ConfigError(
            f"factor must be a number >= 1, got {factor!r}",
            fix="pass the thick-to-thin slice ratio, e.g. 4",
        )
    sizes = tuple(SIZES if sizes is None else sizes)
    in_rows, cols = COMPLEXITY_SLICE
    rows = []
    for recipe in RECIPES.values():
        measured: dict[str, dict[str, Any]] = {}
        for size in sizes:
            # ModelConfig refuses unknown sizes with a ConfigError naming the choices.
            config = TrainConfig(model=ModelConfig(recipe=recipe.name, size=size))
            plan = resolve(config, perceptual_available=False)
            generator = build_generator(plan.generator, **plan.generator_kwargs)
            measured[size] = {
                "generator_kwargs": dict(plan.generator_kwargs),
                "parameters": count_parameters(generator),
                "macs_per_output_voxel": macs_per_output_voxel(
                    generator, in_rows=in_rows, cols=cols, factor=float(factor)
                ),
            }
        rows.append(
            {
                "name": recipe.name,
                "title": recipe.title,
                "generator": recipe.generator,
                "discriminator": recipe.discriminator,
                "pixel_loss": recipe.pixel_loss,
                "adversarial_loss": recipe.adversarial_loss,
                "gan_stage": recipe.has_gan_stage,
                "sizes": measured,
            }
        )
    return rows
