"""``python -m mrisr`` (and ``torchrun -m mrisr``): the same as the ``mrisr`` command."""

from mrisr.cli import app

app()
