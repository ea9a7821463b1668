"""Stopping a training run on Ctrl-C or a scheduler's SIGTERM without losing its work.

A cluster scheduler sends SIGTERM before it preempts a job, and Ctrl-C sends
SIGINT. Python's default would end the run mid-step (SIGINT) or at once
(SIGTERM), losing everything since the last save. :class:`StopSignals` instead
notes the signal; the training loop finishes the current step, saves a
resumable state and raises :class:`TrainingInterrupted`, which the command
line turns into a message (where the state is, how to resume) and the
conventional exit code 128 + signal number (130 for SIGINT, 143 for SIGTERM).

A second Ctrl-C while the state is being written is not swallowed: it
interrupts at once, as Python would (the state file is written atomically, so
the previous one stays intact).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: The signals that stop a run cleanly.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by a signal after saving a resumable state.

    A KeyboardInterrupt, so that ``except Exception`` blocks do not swallow it.

    Attributes:
        run_dir: the run folder.
        step: steps done (the saved state's step).
        signal_number: the signal received (``signal.SIGINT`` or ``signal.SIGTERM``).
        exit_code: 128 + the signal number (130, 143), the shells' convention.
    """

    def __init__(self, run_dir: Path, step: int, signal_number: int) -> None:
        self.run_dir = Path(run_dir)
        self.step = int(step)
        self.signal_number = int(signal_number)
        self.exit_code = 128 + self.signal_number
        super().__init__(
            f"{signal.Signals(self.signal_number).name}: training stopped after step "
            f"{self.step}; state saved in {self.run_dir}"
        )

    def resume_command(self) -> str:
        """The command that continues the run."""
        return f"mrisr train --config {self.run_dir / 'config.yaml'} --resume"


class StopSignals:
    """While active, SIGINT and SIGTERM only request a stop (see the module docstring).

    Use as a context manager around the training loop; the previous handlers
    come back on exit. Outside the main thread (where Python cannot set
    handlers) it does nothing and signals act as usual.

    Attributes:
        received: the first stop signal's number, or None.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._note)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _note(self, number: int, frame: FrameType | None) -> None:
        del frame
        if self.received is None:
            self.received = number
            again = "press Ctrl-C again" if number == signal.SIGINT else "send it again"
            log.warning(
                "%s received: stopping after this step and saving the state (%s to stop at once)",
                signal.Signals(number).name,
                again,
            )
            # A second signal of this kind acts at once, as it would without this handler.
            previous = self._previous.get(number)
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)

    def requested(self, world: int = 1) -> bool:
        """Whether a stop signal came; under DDP, whether it came to any process.

        Every rank must stop after the same step, or the others would wait
        forever in the next gradient all-reduce.
        """
        flag = self.received is not None
        if world <= 1:
            return flag
        import torch
        import torch.distributed as dist

        backend = dist.get_backend()
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else None
        tensor = torch.tensor([float(flag)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers leave SIGINT/SIGTERM to the main process.

    Ctrl-C reaches every process of the terminal's group; workers that died on
    it would make the main process fail instead of saving its state.
    """
    del worker_id
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
