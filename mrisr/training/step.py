"""One training step: a batch of (LR, HR) patches in, the losses out.

:class:`Learner` bundles what a step changes: the generator, its exponential
moving average (EMA), the discriminator of the GAN stage, their Adam
optimisers, and the losses of the recipe (:class:`mrisr.recipes.ResolvedRecipe`).
:func:`build_learner` makes one from a resolved recipe (no run folder, no
config file, no DDP needed: CPU works); :func:`check_learner` runs the networks
once on a dummy batch so that a configuration that cannot train fails before
the first step.

Two steps, as ESRGAN's ``optimize_parameters``:

* :func:`pixel_step` (stage 1, the warm-up): pixel loss (plus a cascade's
  intermediate outputs), a generator step, the EMA update;
* :func:`gan_step` (stage 2): the generator step with the recipe's weighted
  pixel, perceptual, relativistic adversarial, feature-matching and texture
  losses against the discriminator, then a discriminator step on the same
  (detached) generated patches, then the EMA update.

Both clip gradients when asked and run under bf16 autocast when ``amp`` is
set and the hardware has bfloat16 (GPUs, with channels-last memory, and CPUs
with AVX512-BF16 or AMX). They return the losses as detached
0-dim tensors on the device: turning each into a float every step would make
the GPU wait for the CPU every step, so callers convert them when they log.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from mrisr.device import resolve_precision
from mrisr.errors import ConfigError
from mrisr.losses import (
    ADVERSARIAL_LOSSES,
    AdversarialLoss,
    feature_matching_loss,
    pixel_loss,
    texture_loss,
)
from mrisr.recipes import ResolvedRecipe

#: Stage names: the pixel-loss warm-up and the adversarial stage.
STAGES = ("psnr", "gan")


class CascadeForward(nn.Module):
    """The generator's training forward: final image plus deep-supervision outputs.

    RRGAN's intermediate image (``forward_with_intermediate``) and DRCN's
    per-recursion predictions (``forward_recursions``) are returned as
    ``aux``; for other generators ``aux`` is empty. Wrapping this, rather
    than the generator, in DDP keeps every output inside DDP's forward.

    Args:
        generator: the generator being trained.
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: Tensor, out_rows: int) -> tuple[Tensor, list[Tensor]]:
        """(B, 1, H, W) -> ((B, 1, out_rows, W), list of (B, 1, rows_i, W))."""
        g = self.generator
        if hasattr(g, "forward_with_intermediate"):
            final, intermediate = g.forward_with_intermediate(x, out_rows)
            return final, [intermediate]
        if hasattr(g, "forward_recursions") and hasattr(g, "ensemble_logits"):
            predictions = g.forward_recursions(x, out_rows)
            # DRCN's output is the softmax-weighted mean of its recursions;
            # rebuilding it here saves running the network twice.
            w = torch.softmax(g.ensemble_logits, dim=0)
            final = sum(
                (wi * p for wi, p in zip(w, predictions, strict=True)),
                torch.zeros_like(predictions[0]),
            )
            return final, predictions
        return g(x, out_rows), []


@dataclass
class Learner:
    """What a training step updates, and how.

    Attributes:
        plan: the resolved recipe (networks, losses, weights, learning rates).
        generator: the generator being trained (raw weights).
        ema: its exponential moving average (what model files hold); no gradients.
        g_forward: what the step calls for the generator: :class:`CascadeForward`
            of ``generator``, possibly DDP-wrapped and compiled.
        discriminator: the GAN stage's discriminator, or None without one.
        d_forward: what the step calls for the discriminator's own update
            (possibly DDP-wrapped and compiled), or None.
        opt_g: the generator's Adam.
        opt_d: the discriminator's Adam, or None.
        perceptual: the perceptual loss module, or None.
        adversarial: the adversarial loss pair, or None without a GAN stage.
        device: where the networks live.
        amp: bf16 autocast on (see :func:`build_learner`); channels-last memory
            too on CUDA.
        ema_decay: the EMA's decay once warmed up.
        grad_clip: largest gradient norm of each network (0 = no clipping).
        weight_decay: Adam's weight decay (for the optimisers made anew).
        steps_in_stage: steps done in the current stage (warms the EMA up).
    """

    plan: ResolvedRecipe
    generator: nn.Module
    ema: nn.Module
    g_forward: nn.Module
    discriminator: nn.Module | None
    d_forward: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    perceptual: nn.Module | None
    adversarial: AdversarialLoss | None
    device: torch.device
    amp: bool
    ema_decay: float = 0.999
    grad_clip: float = 0.0
    weight_decay: float = 0.0
    steps_in_stage: int = 0

    def autocast(self) -> Any:
        """bf16 autocast on the learner's device with ``amp``; a no-op context otherwise."""
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def channels_last(self) -> bool:
        """Channels-last batches: faster under bf16 on recent GPUs, not on CPUs."""
        return self.amp and self.device.type == "cuda"

    def start_gan_stage(self) -> None:
        """Stage 2 starts from the stage-1 EMA weights, with a fresh generator Adam."""
        self.generator.load_state_dict(self.ema.state_dict())
        self.opt_g = _adam(self.generator, self.plan.lr_g, self.plan, self.weight_decay)
        self.steps_in_stage = 0

    def set_learning_rates(self, stage: str, decay: float = 1.0) -> None:
        """The stage's learning rates (the recipe's) times ``decay``."""
        g_rate = self.plan.lr_g if stage == "gan" else self.plan.lr_pretrain
        _set_lr(self.opt_g, g_rate * decay)
        if stage == "gan" and self.opt_d is not None:
            _set_lr(self.opt_d, self.plan.lr_d * decay)


def build_learner(
    plan: ResolvedRecipe,
    *,
    device: torch.device | str = "cpu",
    gan: bool = True,
    perceptual: nn.Module | None = None,
    amp: bool = True,
    compile: bool = False,
    distributed: bool = False,
    ema_decay: float = 0.999,
    grad_clip: float = 0.0,
    weight_decay: float = 0.0,
    seed: int | None = 0,
) -> Learner:
    """Networks, EMA, optimisers and losses of a resolved recipe.

    The generator starts as cubic interpolation (its last layer zeroed); the
    generator Adam is at the stage-1 rate.

    Args:
        plan: from :func:`mrisr.recipes.resolve`.
        device: where to put the networks.
        gan: build the GAN stage (discriminator, its Adam, the adversarial
            loss) when the recipe has one.
        perceptual: the perceptual loss (see :func:`mrisr.losses.build_perceptual_loss`).
        amp: bf16 autocast where the hardware has bfloat16 (a GPU that supports
            it, a CPU with AVX512-BF16 or AMX: :func:`mrisr.device.resolve_precision`),
            about 1.5x faster steps on such a CPU; channels-last memory on CUDA.
            Elsewhere float32.
        compile: ``torch.compile`` the forward passes.
        distributed: wrap the forward passes in DistributedDataParallel (the
            process group must be initialised).
        ema_decay: the EMA's decay.
        grad_clip: largest gradient norm per network (0 = off).
        weight_decay: Adam's weight decay.
        seed: seeds torch before the networks are made (identical initial
            weights on every DDP rank); None leaves torch's generator alone.

    Returns:
        The :class:`Learner`.

    Raises:
        ConfigError: a network name or setting its class does not accept.
    """
    from mrisr.networks import build_discriminator, build_generator, zero_last_layer

    device = torch.device(device)
    if seed is not None:
        torch.manual_seed(seed)
    generator = zero_last_layer(build_generator(plan.generator, **plan.generator_kwargs)).to(device)
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    with_gan = gan and plan.adversarial_loss is not None and plan.discriminator is not None
    discriminator = None
    if with_gan:
        discriminator = build_discriminator(plan.discriminator, **plan.discriminator_kwargs)  # type: ignore[arg-type]
        discriminator = discriminator.to(device)
    bf16 = amp and resolve_precision("auto", device) == "bfloat16"
    if bf16 and device.type == "cuda":  # channels-last: faster convolutions under bf16 on GPUs
        for net in (generator, ema, discriminator):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    g_forward: nn.Module = CascadeForward(generator)
    d_forward: nn.Module | None = discriminator
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        g_forward = DistributedDataParallel(g_forward, device_ids=ids)
        if discriminator is not None:
            d_forward = DistributedDataParallel(discriminator, device_ids=ids)
    if compile:
        g_forward = torch.compile(g_forward)  # type: ignore[assignment]
        if d_forward is not None:
            d_forward = torch.compile(d_forward)  # type: ignore[assignment]
    return Learner(
        plan=plan,
        generator=generator,
        ema=ema,
        g_forward=g_forward,
        discriminator=discriminator,
        d_forward=d_forward,
        opt_g=_adam(generator, plan.lr_pretrain, plan, weight_decay),
        opt_d=_adam(discriminator, plan.lr_d, plan, weight_decay) if discriminator else None,
        perceptual=perceptual.to(device) if perceptual is not None else None,
        adversarial=ADVERSARIAL_LOSSES[plan.adversarial_loss] if with_gan else None,  # type: ignore[index]
        device=device,
        amp=bf16,
        ema_decay=ema_decay,
        grad_clip=grad_clip,
        weight_decay=weight_decay,
    )


def check_learner(learner: Learner, *, patch_size: int, rows_lr: int) -> None:
    """Run every network of a step once on a dummy batch, without changing anything.

    A generator that cannot take ``rows_lr`` rows, a discriminator that
    cannot take ``patch_size`` patches or a perceptual loss without the
    features the texture loss needs fails here, before the first step, rather
    than after a whole stage. Networks run in eval mode and without gradients
    (spectral normalisation and batch statistics are left as they are).

    Args:
        learner: from :func:`build_learner`.
        patch_size: HR patch side (rows and columns).
        rows_lr: the fewest LR rows a batch will have (at the largest factor).

    Raises:
        ConfigError: a network or loss that cannot run on such patches.
    """
    lr = torch.zeros(1, 1, rows_lr, patch_size, device=learner.device)
    hr = torch.zeros(1, 1, patch_size, patch_size, device=learner.device)
    nets = [learner.generator, learner.discriminator, learner.perceptual]
    modes = [net.training for net in nets if net is not None]
    try:
        for net in nets:
            if net is not None:
                net.eval()
        with torch.no_grad():
            _dry_run(learner, lr, hr)
    except (RuntimeError, ValueError, NotImplementedError) as error:
        raise ConfigError(
            f"the {learner.plan.recipe} recipe's networks cannot train on {patch_size} x "
            f"{patch_size} patches ({rows_lr} LR rows): {str(error).splitlines()[0][:300]}",
            expected="networks and losses that accept the configured patches",
            fix="change data.patch_size, the factor, or the network settings",
        ) from error
    finally:
        for net, mode in zip([n for n in nets if n is not None], modes, strict=True):
            net.train(mode)


def _dry_run(learner: Learner, lr: Tensor, hr: Tensor) -> None:
    fake, _ = CascadeForward(learner.generator)(lr, hr.shape[-2])
    if fake.shape != hr.shape:
        raise ValueError(f"the generator gave {tuple(fake.shape)}, expected {tuple(hr.shape)}")
    if learner.discriminator is None:
        return
    learner.discriminator(hr)
    weights = learner.plan.weights
    if weights.feature_matching > 0 or weights.texture > 0:
        learner.discriminator.features(hr)
    if learner.perceptual is not None and weights.perceptual > 0:
        learner.perceptual(fake, hr)
    if learner.perceptual is not None and weights.texture > 0:
        learner.perceptual.features(hr)


def pixel_step(learner: Learner, lr: Tensor, hr: Tensor) -> dict[str, Tensor]:
    """One stage-1 step: pixel loss, generator update, EMA update.

    Args:
        learner: from :func:`build_learner` (its learning rates as set).
        lr: (B, 1, rows_lr, P) low-resolution patches on ``learner.device``.
        hr: (B, 1, P, P) matching high-resolution patches.

    Returns:
        Detached 0-dim loss tensors: ``pixel``, ``intermediate`` (cascades
        only) and ``generator`` (the loss minimised).
    """
    return _step(learner, lr, hr, "psnr")


def gan_step(learner: Learner, lr: Tensor, hr: Tensor) -> dict[str, Tensor]:
    """One stage-2 step: generator update against the discriminator, its update, EMA update.

    Args:
        learner: from :func:`build_learner` with a discriminator.
        lr: (B, 1, rows_lr, P) low-resolution patches on ``learner.device``.
        hr: (B, 1, P, P) matching high-resolution patches.

    Returns:
        Detached 0-dim loss tensors: ``pixel``, ``adversarial``,
        ``generator``, ``discriminator``, ``d_real`` and ``d_fake`` (mean
        sigmoid of the logits), and ``perceptual``, ``feature_matching``,
        ``texture``, ``intermediate`` when they are used.

    Raises:
        ConfigError: the learner has no GAN stage.
    """
    if learner.discriminator is None or learner.adversarial is None:
        raise ConfigError(
            f"recipe {learner.plan.recipe} was built without a GAN stage",
            fix="build the learner with gan=True and a recipe that has a discriminator",
        )
    return _step(learner, lr, hr, "gan")


def training_step(learner: Learner, lr: Tensor, hr: Tensor, stage: str) -> dict[str, Tensor]:
    """:func:`pixel_step` for stage ``psnr``, :func:`gan_step` for ``gan``.

    Raises:
        ConfigError: an unknown stage, or ``gan`` without a GAN stage.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown training stage {stage!r}", expected=f"one of {STAGES}")
    return gan_step(learner, lr, hr) if stage == "gan" else pixel_step(learner, lr, hr)


def _step(learner: Learner, lr: Tensor, hr: Tensor, stage: str) -> dict[str, Tensor]:
    if learner.channels_last:
        lr = lr.contiguous(memory_format=torch.channels_last)
        hr = hr.contiguous(memory_format=torch.channels_last)
    losses, fake = _generator_update(learner, lr, hr, stage)
    if stage == "gan":
        losses.update(_discriminator_update(learner, hr, fake))
    # EMA, warmed up so that short runs are not dominated by the initial weights.
    learner.steps_in_stage += 1
    done = learner.steps_in_stage
    ema_update(learner.ema, learner.generator, min(learner.ema_decay, (1 + done) / (10 + done)))
    return {key: value.detach().float() for key, value in losses.items()}


def _generator_update(
    learner: Learner, lr: Tensor, hr: Tensor, stage: str
) -> tuple[dict[str, Tensor], Tensor]:
    plan, weights = learner.plan, learner.plan.weights
    with learner.autocast():
        fake, aux = learner.g_forward(lr, hr.shape[-2])
    fake = fake.float()
    losses = {"pixel": pixel_loss(fake, hr, plan.pixel_loss)}
    g_loss = losses["pixel"] * (weights.pixel if stage == "gan" else 1.0)
    if aux:
        losses["intermediate"] = sum(
            (pixel_loss(a.float(), _resize_rows(hr, a.shape[-2]), plan.pixel_loss) for a in aux),
            torch.zeros((), device=hr.device),
        ) / len(aux)
        g_loss = g_loss + weights.intermediate * losses["intermediate"]
    if stage == "gan":
        adversarial = _adversarial_terms(learner, fake, hr)
        losses.update(adversarial)
        for key, value in adversarial.items():
            g_loss = g_loss + getattr(weights, key) * value
    losses["generator"] = g_loss
    learner.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    _clip(learner.generator, learner.grad_clip)
    learner.opt_g.step()
    return losses, fake


def _adversarial_terms(learner: Learner, fake: Tensor, hr: Tensor) -> dict[str, Tensor]:
    """The generator's GAN-stage terms (unweighted), keyed by their :class:`LossWeights` name."""
    weights, perceptual = learner.plan.weights, learner.perceptual
    # gan_step checked that the GAN stage was built.
    discriminator = cast(nn.Module, learner.discriminator)
    adversarial = cast(AdversarialLoss, learner.adversarial)
    discriminator.requires_grad_(False)
    terms: dict[str, Tensor] = {}
    if perceptual is not None and weights.perceptual > 0:
        terms["perceptual"] = perceptual(fake, hr)
    with learner.autocast():
        fake_logits = discriminator(fake).float()
        with torch.no_grad():
            real_logits = discriminator(hr).float()
    terms["adversarial"] = adversarial.generator(real_logits, fake_logits)
    texture_from_perceptual = perceptual is not None and hasattr(perceptual, "features")
    if weights.feature_matching > 0 or (weights.texture > 0 and not texture_from_perceptual):
        with learner.autocast():
            fake_feats = [f.float() for f in discriminator.features(fake)]
            with torch.no_grad():
                real_feats = [f.float() for f in discriminator.features(hr)]
        if weights.feature_matching > 0:
            terms["feature_matching"] = feature_matching_loss(real_feats, fake_feats)
        if weights.texture > 0 and not texture_from_perceptual:
            terms["texture"] = texture_loss(real_feats, fake_feats)
    if weights.texture > 0 and texture_from_perceptual:
        with torch.no_grad():
            real_features = perceptual.features(hr)  # type: ignore[union-attr]
        terms["texture"] = texture_loss(real_features, perceptual.features(fake))  # type: ignore[union-attr]
    return terms


def _discriminator_update(learner: Learner, hr: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """The discriminator's step on real and (detached) generated patches."""
    # gan_step checked that the GAN stage was built.
    discriminator = cast(nn.Module, learner.discriminator)
    adversarial = cast(AdversarialLoss, learner.adversarial)
    d_forward = cast(nn.Module, learner.d_forward)
    opt_d = cast(torch.optim.Optimizer, learner.opt_d)
    discriminator.requires_grad_(True)
    with learner.autocast():
        logits = d_forward(torch.cat([hr, fake.detach().to(hr.dtype)])).float()
    real_logits, fake_logits = logits.split(hr.shape[0])
    d_loss = adversarial.discriminator(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    _clip(discriminator, learner.grad_clip)
    opt_d.step()
    return {
        "discriminator": d_loss,
        "d_real": torch.sigmoid(real_logits).mean(),
        "d_fake": torch.sigmoid(fake_logits).mean(),
    }


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for weights; buffers are copied."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def _adam(
    net: nn.Module, rate: float, plan: ResolvedRecipe, weight_decay: float
) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.parameters(), lr=rate, betas=plan.betas, weight_decay=weight_decay)


def _resize_rows(hr: Tensor, rows: int) -> Tensor:
    """HR patches averaged along rows to ``rows`` rows with the box slice profile."""
    if rows == hr.shape[-2]:
        return hr
    matrix = torch.from_numpy(_box_profile(hr.shape[-2], rows)).to(hr.device)
    return torch.einsum("oh,bchw->bcow", matrix, hr.float())


@functools.lru_cache(maxsize=64)
def _box_profile(n_in: int, n_out: int) -> np.ndarray:
    """:func:`mrisr.simulate.slice_profile_matrix` as float32, built once per size (every step asks)."""
    from mrisr.simulate import slice_profile_matrix

    return slice_profile_matrix(n_in, n_out).astype(np.float32)


def _set_lr(optimizer: torch.optim.Optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate


def _clip(net: nn.Module, max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)
