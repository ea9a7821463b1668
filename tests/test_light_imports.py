"""Start-up and memory set-up of a CPU generator: no MONAI import (seconds), malloc thresholds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mrisr.models import bundled_models


def test_loading_a_generator_does_not_import_monai() -> None:
    path = bundled_models()["fast"]
    code = (
        "import sys\n"
        "from mrisr.inference import GeneratorSliceModel\n"
        "import numpy as np\n"
        f"model = GeneratorSliceModel.from_file({str(path)!r}, device='cpu')\n"
        "model.upscale_slices(np.zeros((1, 8, 32), np.float32), 24)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'monai'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert result.stdout.strip() == "[]"


def test_malloc_thresholds_are_left_to_a_user_who_set_them(monkeypatch):
    from mrisr import inference

    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert inference._set_malloc_thresholds() is False


def test_cpu_model_raises_malloc_thresholds_on_glibc():
    import platform

    from mrisr.inference import GeneratorSliceModel, keep_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    GeneratorSliceModel.from_file(bundled_models()["fast"], device="cpu")
    assert keep_freed_memory() is True
