"""Training slice super-resolution models.

* :mod:`mrisr.training.step`: one batch in, losses out (pixel and GAN stages);
* :mod:`mrisr.training.state`: what a run carries, its files, resume;
* :mod:`mrisr.training.loop`: :func:`train` / :func:`run_training`, read top to bottom;
* :mod:`mrisr.training.interrupt`: Ctrl-C / SIGTERM stop a run after a step, saved;
* :mod:`mrisr.training.data`: volumes, the held-out split, paired patches;
* :mod:`mrisr.training.validation`: the held-out volume judged by :func:`mrisr.evaluation.evaluate`.
"""

from mrisr.training.interrupt import TrainingInterrupted
from mrisr.training.loop import (
    Schedule,
    TrainEvent,
    TrainResult,
    check_config,
    run_training,
    train,
)
from mrisr.training.state import (
    CONFIG_FILE,
    LOG_FILE,
    MODEL_FILE,
    PSNR_MODEL_FILE,
    RESUMABLE_CHANGES,
    STATE_FILE,
)
from mrisr.training.step import (
    CascadeForward,
    Learner,
    build_learner,
    check_learner,
    gan_step,
    pixel_step,
    training_step,
)

__all__ = [
    "CONFIG_FILE",
    "LOG_FILE",
    "MODEL_FILE",
    "PSNR_MODEL_FILE",
    "RESUMABLE_CHANGES",
    "STATE_FILE",
    "CascadeForward",
    "Learner",
    "Schedule",
    "TrainEvent",
    "TrainResult",
    "TrainingInterrupted",
    "build_learner",
    "check_config",
    "check_learner",
    "gan_step",
    "pixel_step",
    "run_training",
    "train",
    "training_step",
]
