"""The ``mrisr`` command line: one small module per command.

Commands parse their options, call the public API and report. Heavy imports
(torch, monai) happen inside the command functions so that ``mrisr --help``
answers at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mrisr.cli import bids, demo, evaluate, info, models, simulate, train, upscale
from mrisr.cli.common import run_reporting_errors

app = typer.Typer(
    name="mrisr",
    help="Super-resolve thick-slice MRI into isotropic volumes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from mrisr import __version__

        typer.echo(f"mrisr {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print mrisr's version."
        ),
    ] = False,
) -> None:
    """Super-resolve thick-slice MRI into isotropic volumes."""


for module in (info, simulate, upscale, bids, evaluate, train, models, demo):
    app.command(name=module.NAME, help=module.__doc__)(run_reporting_errors(module.command))

__all__ = ["app"]
