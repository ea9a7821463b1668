"""What a training run carries between steps and across restarts, and its files.

Run folder (``config.out``)::

    config.yaml          the whole config, paths absolute (rewritten on resume)
    model.safetensors    EMA generator of the latest save; when the run is
                         complete, its final model (the GAN model when there
                         is a GAN stage, else the stage-1 model)
    model_psnr.safetensors  EMA generator at the end of stage 1, written only
                         when a GAN stage follows (the PSNR-oriented model)
    state.pt             everything --resume needs (weights-only torch file)
    log.jsonl            one JSON object per line: start, losses, validation, saves
    tensorboard/         curves, when tensorboard is installed and enabled

:func:`open_run` refuses a folder that already holds a run (without resume)
and reads the saved state (with it); :func:`save_state` and
:func:`restore_learner` write and read the :class:`~mrisr.training.step.Learner`
with the random generators; :class:`RunLog` appends to ``log.jsonl``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mrisr.config import TrainConfig, to_dict, with_overrides
from mrisr.config_file import load_config
from mrisr.errors import CheckpointError, ConfigError, OutputError
from mrisr.io.files import make_folder
from mrisr.training.step import Learner

if TYPE_CHECKING:
    from mrisr.recipes import ResolvedRecipe

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
PSNR_MODEL_FILE = "model_psnr.safetensors"
STATE_FILE = "state.pt"
LOG_FILE = "log.jsonl"

#: Settings that may change when a run is resumed (they do not change the maths).
RESUMABLE_CHANGES = (
    "out",
    "device",
    "threads",
    "compile",
    "tensorboard",
    "data.workers",
    "schedule.steps",
    "schedule.gan_steps",
    "schedule.val_every",
    "schedule.log_every",
    "schedule.save_every",
)


def open_run(config: TrainConfig, *, resume: bool, device: torch.device) -> dict[str, Any] | None:
    """Check the run folder, and on ``resume`` read its saved state.

    Args:
        config: the run's settings (``config.out`` set).
        resume: continue the run saved there.
        device: where the saved tensors go.

    Returns:
        The saved state (``resume``), else None.

    Raises:
        CheckpointError: resuming a folder without ``state.pt`` or
            ``config.yaml``, or with an unreadable state.
        ConfigError: resuming with changed settings that change the maths.
        OutputError: the folder holds a run and ``resume`` is off.
    """
    from mrisr.training.state_file import load_training_state

    run_dir = Path(str(config.out))
    if not resume:
        if (run_dir / STATE_FILE).exists() or (run_dir / MODEL_FILE).exists():
            raise OutputError(
                "already holds a training run",
                path=run_dir,
                fix="pass --resume to continue it, or choose another --out",
            )
        return None
    if not (run_dir / STATE_FILE).is_file():
        raise CheckpointError(
            f"has no {STATE_FILE} to resume from",
            path=run_dir,
            fix="check --out, or start the run without --resume",
        )
    state = load_training_state(run_dir / STATE_FILE, map_location=device)
    check_resumable(config, run_dir, state)
    return state


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with every path setting absolute, as a run's config.yaml stores them.

    Relative paths are read from the current folder (``~`` expanded): the run
    folder ``out``, ``data.volumes``, ``model.init_from`` (a model file or run
    folder; ``cubic`` and bundled names stay names) and
    ``loss.perceptual_weights`` (a file; ``monai:...`` stays). The run can
    then be resumed, with the command it prints, from any working folder.

    Args:
        config: the run's settings (not modified).

    Returns:
        A copy with those paths absolute (``config`` itself when none changes).
    """
    from mrisr.models import absolute_model_spec

    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().absolute()) if path else None

    weights = config.loss.perceptual_weights
    changes = {
        "out": absolute(config.out),
        "data.volumes": absolute(config.data.volumes),
        "model.init_from": absolute_model_spec(config.model.init_from)
        if config.model.init_from
        else None,
        "loss.perceptual_weights": weights
        if not weights or weights.startswith("monai:")
        else absolute(weights),
    }
    return with_overrides(config, changes)


def check_resumable(config: TrainConfig, run_dir: Path, state: Mapping[str, Any]) -> None:
    """Refuse to resume with settings that would change what was being trained.

    Raises:
        CheckpointError: the folder has no ``config.yaml``.
        ConfigError: a setting outside :data:`RESUMABLE_CHANGES` changed, or
            stage 1's length changed once it was under way.
    """
    saved_path = run_dir / CONFIG_FILE
    if not saved_path.is_file():
        raise CheckpointError(
            "has a state.pt but no config.yaml",
            path=run_dir,
            fix="restore config.yaml, or start a new run",
        )
    # A relative and an absolute path to the same folder are the same setting.
    saved, now = absolute_paths(load_config(saved_path)), absolute_paths(config)
    changed = [k for k in config_differences(saved, now) if k not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(
            f"cannot resume with changed settings: {', '.join(changed)}",
            path=saved_path,
            expected=f"only {', '.join(RESUMABLE_CHANGES)} may change on resume",
            fix="drop those options (the run's config.yaml is used), or start a new run",
        )
    _check_stage_1_length(run_dir, saved, config.schedule.steps, int(state["step"]))


def _check_stage_1_length(run_dir: Path, saved: TrainConfig, steps: int, step: int) -> None:
    """Refuse a new stage-1 length (``--steps``) that the saved ``step`` has already passed.

    While stage 1 runs its length may change (its learning-rate milestones
    move with it); once it has ended it cannot start again, and a length
    below the steps done cannot be reached.
    """
    before = saved.schedule.steps
    if steps == before or (step < before and step <= steps):
        return
    if step < before:
        raise ConfigError(
            f"the saved state is at step {step}, past the {steps} stage-1 steps asked for",
            path=run_dir,
            fix=f"pass --steps {step} or more (the run's own is {before})",
        )
    # A GAN stage follows: model_psnr.safetensors is stage 1's model; else model.safetensors.
    model = run_dir / (PSNR_MODEL_FILE if (run_dir / PSNR_MODEL_FILE).is_file() else MODEL_FILE)
    raise ConfigError(
        f"stage 1 of this run ended at step {before} (the saved state is at step {step}), its "
        f"learning rate decayed over {before} steps: it cannot become {steps} steps now",
        path=run_dir,
        expected=f"--steps {before} (or leaving --steps out) on --resume",
        fix=f"to train longer, start a new run from this run's stage-1 model with the same "
        f"settings: mrisr train --config {run_dir / CONFIG_FILE} --out NEW_RUN "
        f"--init-from {model} --steps {steps}; or drop --steps to resume as the run was "
        "(--gan-steps N adds or lengthens a GAN stage)",
    )


def adopt_init_network(config: TrainConfig) -> TrainConfig:
    """With ``model.init_from`` and no network settings of the run's own, take the model's.

    ``mrisr train --init-from fast-wide`` then fine-tunes that model without the
    user restating its generator and sizes; settings given explicitly win (and
    :func:`initialise_from_model` refuses them if they do not fit). A size given
    that is not the model's is refused here: taking the model's would train
    another size than asked for, silently.

    Args:
        config: the run's settings.

    Returns:
        ``config``, or a copy whose ``model.generator``, ``generator_kwargs`` and
        ``size`` are the init model's.

    Raises:
        ConfigError: an unknown model name, or a ``model.size`` (``--size``)
            other than the init model's.
        CheckpointError: the model file is missing or damaged.
    """
    from dataclasses import replace

    from mrisr.checkpoint import read_description
    from mrisr.models import model_location, names_cubic

    model = config.model
    source = model.init_from
    if not source or names_cubic(source) or model.generator or model.generator_kwargs:
        return config
    description = read_description(model_location(source))
    theirs = description.get("size")
    if model.size is not None and theirs is not None and model.size != theirs:
        raise ConfigError(
            f"--size {model.size} (model.size) does not match --init-from {source}: "
            f"that is a {theirs}-size model, and training starts from its network",
            fix=f"drop --size to take the model's size, pass --size {theirs}, or pass "
            f"--init-from a {model.size}-size model",
        )
    network = description["generator"]
    adopted = replace(
        model,
        generator=network["name"],
        generator_kwargs=dict(network.get("config") or {}),
        size=theirs or model.network_size,
    )
    return replace(config, model=adopted)


@dataclass(frozen=True)
class InitWeights:
    """A model's generator weights, checked to fit a run's network (``--init-from``).

    Attributes:
        weights: the generator's state dict.
        record: what the run's log records: the model's name or path, its
            file's SHA-256, its step and factor range.
    """

    weights: dict[str, Any]
    record: dict[str, Any]

    def apply(self, learner: Learner) -> None:
        """Start ``learner``'s generator and EMA from these weights."""
        learner.generator.load_state_dict(self.weights)
        learner.ema.load_state_dict(self.weights)


def init_weights(plan: ResolvedRecipe, source: str) -> InitWeights:
    """Read the model ``--init-from`` names and check it fits ``plan``'s generator.

    Called before the run folder is made, so a model that does not fit
    leaves nothing behind.

    Args:
        plan: the run's resolved recipe.
        source: ``model.init_from``: a bundled model's name or a model file.

    Returns:
        The :class:`InitWeights`.

    Raises:
        ConfigError: ``source`` is ``cubic`` or names a network other than this run's.
        CheckpointError: a model file that is missing or damaged.
    """
    from mrisr.models import load_slice_model
    from mrisr.networks import build_generator

    model = load_slice_model(source, device="cpu")
    generator = getattr(model, "generator", None)
    theirs = (getattr(model, "description", None) or {}).get("generator", {})
    ours = plan.generator
    if generator is None or theirs.get("name") != ours:
        raise ConfigError(
            f"cannot start training from {source!r}: it is not a {ours} generator",
            expected=f"a model file or bundled model whose generator is {ours}",
            fix="pass --init-from a model trained with the same recipe and size, or drop it",
        )
    weights = generator.state_dict()
    try:
        build_generator(plan.generator, **plan.generator_kwargs).load_state_dict(weights)
    except RuntimeError as error:
        raise ConfigError(
            f"cannot start training from {source!r}: its network's configuration "
            f"{theirs.get('config')} differs from this run's "
            f"({str(error).splitlines()[0][:200]})",
            fix="use the same --size and generator settings as that model, or drop --init-from",
        ) from error
    record = {
        "model": str(source),
        "sha256": model.file_sha256,
        "step": model.description.get("step"),
        "factor_range": model.description.get("factor_range"),
    }
    return InitWeights(weights=weights, record=record)


def initialise_from_model(learner: Learner, source: str) -> dict[str, Any]:
    """Start ``learner``'s generator and EMA from a model instead of cubic interpolation.

    :func:`init_weights` on the learner's recipe, then :meth:`InitWeights.apply`.

    Returns:
        :attr:`InitWeights.record`.

    Raises:
        ConfigError, CheckpointError: as :func:`init_weights`.
    """
    init = init_weights(learner.plan, source)
    init.apply(learner)
    return init.record


def restore_learner(
    learner: Learner, state: Mapping[str, Any], *, stage: str, steps_in_stage: int
) -> dict[str, float]:
    """Load a saved state into ``learner`` and restore the random generators.

    Args:
        learner: built as the saved run built it.
        state: from :func:`open_run`.
        stage: the stage the run continues in (the discriminator is loaded in ``gan``).
        steps_in_stage: steps already done in that stage (the EMA warm-up).

    Returns:
        The last validation metrics saved.
    """
    from mrisr.training.state_file import restore_rng_state

    learner.generator.load_state_dict(state["generator"])
    learner.ema.load_state_dict(state["ema"])
    learner.opt_g.load_state_dict(state["opt_g"])
    if stage == "gan" and learner.discriminator is not None:
        if state.get("discriminator") is not None:
            learner.discriminator.load_state_dict(state["discriminator"])
            learner.opt_d.load_state_dict(state["opt_d"])  # type: ignore[union-attr]
    learner.steps_in_stage = steps_in_stage
    restore_rng_state(state["rng"])
    return dict(state.get("validation") or {})


def save_state(
    path: Path,
    learner: Learner,
    *,
    step: int,
    stage: str,
    validation: Mapping[str, float],
    world: int,
    volumes: Mapping[str, Any] | None = None,
) -> None:
    """Write everything ``--resume`` needs to ``path`` (``state.pt``).

    ``volumes``: the run's ``training_data`` (``volumes``, ``held_out``), so
    that a resumed run can refuse a volumes folder that changed.

    Raises:
        OutputError: the file cannot be written.
    """
    from mrisr.training.state_file import capture_rng_state, save_training_state

    discriminator, opt_d = learner.discriminator, learner.opt_d
    save_training_state(
        path,
        {
            "step": step,
            "stage": stage,
            "generator": learner.generator.state_dict(),
            "ema": learner.ema.state_dict(),
            "opt_g": learner.opt_g.state_dict(),
            "discriminator": discriminator.state_dict() if discriminator is not None else None,
            "opt_d": opt_d.state_dict() if opt_d is not None else None,
            "rng": capture_rng_state(),
            "validation": dict(validation),
            "world_size": world,
            "volumes": {
                "training": list((volumes or {}).get("volumes") or []),
                "held_out": (volumes or {}).get("held_out"),
            },
        },
    )


def check_same_volumes(
    state: Mapping[str, Any], training: list[str], held_out: str | None, folder: Any
) -> None:
    """Refuse to resume on other volumes than the run began with.

    A file added to or removed from the volumes folder changes which volume
    is held out for validation (the last by name) and what is trained on:
    the resumed run would validate on what it trained on, or the reverse.

    Raises:
        ConfigError: the training volumes or the held-out one differ from the
            saved state's (states saved before this check carry none: not checked).
    """
    saved = state.get("volumes") or {}
    before, was_held = list(saved.get("training") or []), saved.get("held_out")
    if not before:
        return
    if before == list(training) and was_held == held_out:
        return
    added = sorted(set(training) - set(before))
    gone = sorted(set(before) - set(training))
    parts = [f"added {', '.join(added)}"] if added else []
    parts += [f"no longer there: {', '.join(gone)}"] if gone else []
    if was_held != held_out:
        parts.append(f"held out was {was_held}, would now be {held_out}")
    raise ConfigError(
        f"the volumes changed since the run began ({'; '.join(parts)})",
        path=folder,
        expected=f"the {len(before)} training volumes and the held-out one the run began with",
        fix="restore the volumes folder as it was (the run's log.jsonl lists them), or start a "
        "new run",
    )


def save_models(
    run_dir: Path,
    learner: Learner,
    description: Mapping[str, Any],
    *,
    stage: str,
    step: int,
    validation: Mapping[str, float],
    files: tuple[str, ...] = (MODEL_FILE,),
) -> None:
    """Write the EMA generator to each of ``files`` in ``run_dir``, describing the run at ``step``.

    Args:
        run_dir: the run folder.
        learner: whose EMA generator is written.
        description: the run's description (``stage``, ``step`` and
            ``validation`` are added).
        stage: ``psnr`` up to the end of stage 1, then ``gan``.
        step: steps done.
        validation: the last validation metrics.
        files: file names, e.g. ``model.safetensors`` and ``model_psnr.safetensors``.

    Raises:
        OutputError: a file cannot be written.
    """
    from mrisr.checkpoint import save_model

    for name in files:
        save_model(
            run_dir / name,
            learner.ema,
            name=learner.plan.generator,
            description={
                **description,
                "stage": stage,
                "step": step,
                "validation": dict(validation),
            },
        )


class RunLog:
    """``log.jsonl`` (and TensorBoard) writer; inert on ranks other than 0.

    Args:
        run_dir: the run folder (created).
        enabled: write anything at all (rank 0).
        tensorboard: also write TensorBoard curves, when installed.
        keep_until: on resume, the saved step: later lines are dropped; None
            for a fresh run (the file is started anew).
    """

    def __init__(
        self, run_dir: Path, *, enabled: bool, tensorboard: bool, keep_until: int | None
    ) -> None:
        self.path = run_dir / LOG_FILE
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        make_folder(run_dir, what="run folder")
        if keep_until is None:
            self.path.unlink(missing_ok=True)  # a fresh run: nothing saved to continue from
        elif self.path.exists():
            # Resuming: drop what was logged after the saved state, so the
            # curve continues without duplicated steps.
            kept = [
                line for line in self.path.read_text().splitlines() if _step_of(line) <= keep_until
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: curves go to log.jsonl only")
            else:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record (with the time) as a JSON line; scalars also to TensorBoard."""
        if not self.enabled:
            return
        with open(self.path, "a") as stream:
            stream.write(json.dumps({"time": round(time.time(), 3), **record}, default=str) + "\n")
        if self.writer is not None and record.get("event") in ("train", "validation"):
            prefix = "val" if record["event"] == "validation" else "train"
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{prefix}/{key}", value, int(record["step"]))

    def close(self) -> None:
        """Close the TensorBoard writer (the JSON lines are written as they come)."""
        if self.writer is not None:
            self.writer.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0


def config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Dotted names of the settings that differ between two configs."""
    flat_a, flat_b = _flatten(to_dict(a)), _flatten(to_dict(b))
    return sorted(k for k in set(flat_a) | set(flat_b) if flat_a.get(k) != flat_b.get(k))


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and key not in ("generator_kwargs", "discriminator_kwargs"):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
