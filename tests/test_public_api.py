"""The public API: every name in __all__ resolves, and importing mrisr stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import mrisr


def test_every_public_name_resolves():
    missing = [name for name in mrisr.__all__ if getattr(mrisr, name, None) is None]
    assert missing == []


def test_importing_mrisr_or_its_cli_does_not_import_torch():
    code = "import sys, mrisr, mrisr.cli; print('torch' in sys.modules, 'monai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_unknown_names_raise_attribute_error():
    try:
        mrisr.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_public_functions_are_functions_even_after_their_modules_are_imported():
    # A public name that matched a submodule's name would be shadowed by the
    # module as soon as anything imported it (mrisr.train once was).
    code = (
        "import inspect, mrisr.training, mrisr.evaluation, mrisr.cli.train\n"
        "from mrisr import train, evaluate, upscale_volume\n"
        "print(all(inspect.isfunction(f) for f in (train, evaluate, upscale_volume)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["True"], result.stderr
    assert not [n for n in mrisr.__all__ if inspect.ismodule(getattr(mrisr, n))]
