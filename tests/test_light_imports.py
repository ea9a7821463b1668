"""What `mrisr upscale` imports: loading a generator must not pull in MONAI (seconds)."""

from __future__ import annotations

import subprocess
import sys

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
