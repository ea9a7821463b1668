"""What every command shares: turning mrisr's errors into a message and an exit code."""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from mrisr.errors import MrisrError

#: The width results are laid out for when stdout is not a terminal: as wide as they need.
PIPED_WIDTH = 1000

#: Messages and progress go to stderr, so that a command's results alone reach stdout.
console = Console(stderr=True)
#: A command's results (facts, tables): stdout, so that `mrisr info scan | less` works.
#: Piped or redirected, lines are never wrapped (rich would wrap at 80 columns, cutting
#: values in two for grep and scripts) and tables get the width they need.
output = Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH, soft_wrap=True)

#: Exit code for input, geometry, config and output errors.
EXIT_USER_ERROR = 2
#: Exit codes after Ctrl-C and SIGTERM: 128 + the signal number, the shells' convention.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def run_reporting_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: an :class:`MrisrError` prints ``error: <message>`` and exits 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        root = logging.getLogger()
        if not root.handlers:  # as logging.basicConfig, but through the one console
            root.addHandler(ConsoleHandler())
            root.setLevel(logging.WARNING)
        try:
            with terminate_as_interrupt():
                return command(*args, **kwargs)
        except KeyboardInterrupt as interrupt:
            exit_code = getattr(interrupt, "exit_code", EXIT_INTERRUPTED)
            console.print(
                ("terminated" if exit_code == EXIT_TERMINATED else "interrupted")
                + ": files that were not complete were removed; those reported as "
                "written above are whole",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(exit_code) from None
        except MrisrError as error:
            # The message is text, not markup: "[low, high]" must not vanish.
            console.print(
                f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler pre-empting a job), raised like Ctrl-C so cleanup runs."""

    exit_code = EXIT_TERMINATED


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM raises :class:`Terminated` in the main thread.

    Python's default ends the process at once, skipping the ``finally`` blocks
    that remove half-written temporary files; raised as an exception, SIGTERM
    gets the cleanup Ctrl-C gets. A handler someone else installed (training
    installs its own, :mod:`mrisr.training.interrupt`) is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def raise_terminated(number: int, frame: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ConsoleHandler(logging.Handler):
    """Log records printed through :data:`console`, as ``LEVEL: message``.

    Going through the same rich console as the progress bars, a log line is
    printed above a live bar instead of colliding with it; when stderr is not a
    terminal, both are plain lines.
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            console.print(text, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # a logging handler never raises (as logging.StreamHandler)
            self.handleError(record)


def say(text: str) -> None:
    """Print a result line (``wrote PATH``) to :data:`console`, as text, not markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def progress_bar(unit: str, *extra: Any, transient: bool = True, disable: bool = False) -> Any:
    """A rich progress bar on :data:`console` that never shows ``0/None``.

    While a task's total is unknown it shows a spinner and the elapsed time;
    once known, ``done/total unit`` and the time remaining.

    Args:
        unit: what is counted (``"slices"``, ``"steps"``).
        *extra: more rich columns, placed after the count.
        transient: remove the bar when done.
        disable: draw nothing (e.g. when stderr is not a terminal and the
            caller prints plain lines instead).

    Returns:
        A ``rich.progress.Progress`` (use it as a context manager).
    """
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Count(ProgressColumn):
        def render(self, task: Any) -> Text:
            if task.total is None:
                return Text("")
            return Text(f"{int(task.completed)}/{int(task.total)} {unit}")

    class Timing(ProgressColumn):
        def __init__(self) -> None:
            super().__init__()
            self.elapsed, self.remaining = TimeElapsedColumn(), TimeRemainingColumn()

        def render(self, task: Any) -> Any:
            return (self.elapsed if task.total is None else self.remaining).render(task)

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        Count(),
        *extra,
        Timing(),
        console=console,
        transient=transient,
        disable=disable,
    )
