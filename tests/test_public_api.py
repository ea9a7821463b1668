"""The public API: every name in __all__ resolves, and importing mrisr stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

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


def _volume(shape=(12, 12, 12)):
    data = np.random.default_rng(0).random(shape).astype(np.float32) + 1
    return mrisr.Volume(data, np.eye(4))


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: mrisr.resampled_affine(np.eye(4), 3, 4, 8), "axis must be 0, 1 or 2"),
        (lambda: mrisr.resampled_affine(np.eye(4), 2, 0, 8), "slice counts must be positive"),
        (lambda: mrisr.psnr(_volume(), _volume(), data_range=0), "data_range must be a positive"),
        (lambda: mrisr.ssim(_volume(), _volume(), win_size=4), "SSIM window must be an odd"),
        (lambda: mrisr.foreground_mask(_volume(), fraction=1.5), "fraction must be in [0, 1)"),
        (lambda: mrisr.foreground_mask(_volume(), dilation=-1), "dilation must be >= 0"),
        (lambda: mrisr.psnr(np.zeros((0, 3, 3)), np.zeros((0, 3, 3))), "cannot compare empty"),
        (lambda: _volume().crop((slice(0, 2), slice(None))), "box must be three slices"),
        (
            lambda: _volume().crop((slice(4, 2), slice(None), slice(None))),
            "box selects no voxel (or steps) along axis 0 (12 voxels)",
        ),
        (lambda: mrisr.to_slice_stack(np.zeros((4, 4, 4)), 2, 2), "two different axes"),
        (
            lambda: mrisr.upscale_volume(
                _volume((12, 12, 4)), mrisr.CubicSliceModel(), factor=2, fusoin="fba"
            ),
            "unknown upscale option(s) fusoin",
        ),
    ],
)
def test_bad_arguments_to_the_public_api_are_refused_with_the_fix(call, words):
    with pytest.raises(mrisr.MrisrError) as caught:
        call()
    assert isinstance(caught.value, ValueError)  # as before: callers catching ValueError still do
    message = str(caught.value)
    assert words in message and "Fix:" in message, message
