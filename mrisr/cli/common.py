"""What every command shares: turning mrisr's errors into a message and an exit code."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from mrisr.errors import MrisrError

#: Messages and progress go to stderr, so that a command's results alone reach stdout.
console = Console(stderr=True)
#: A command's results (facts, tables): stdout, so that `mrisr info scan | less` works.
output = Console()

#: Exit code for input, geometry, config and output errors.
EXIT_USER_ERROR = 2


def run_reporting_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: an :class:`MrisrError` prints ``error: <message>`` and exits 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
        try:
            return command(*args, **kwargs)
        except MrisrError as error:
            console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper
