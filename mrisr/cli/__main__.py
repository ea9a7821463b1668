"""``python -m mrisr.cli``: the same as the ``mrisr`` command."""

from mrisr.cli import app

app()
