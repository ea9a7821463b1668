"""The one parser of ``--device`` and ``--precision`` values: where and how networks run.

Every command, config and API call that takes a device goes through this
module: :func:`check_device_text` checks the spelling without importing torch
(configs are validated at start-up, before torch is loaded) and
:func:`resolve_device` turns the text into a ``torch.device``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mrisr.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: What a ``--device`` option accepts, for help texts and error messages.
DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def check_device_text(text: str) -> str:
    """Check that ``text`` spells a device, without importing torch.

    Args:
        text: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (any case,
            surrounding blanks ignored).

    Returns:
        The value in its normal form (stripped, lower case).

    Raises:
        ConfigError: any other value.
    """
    normal = str(text).strip().lower()
    index = normal[5:] if normal.startswith("cuda:") else ""
    if normal in ("auto", "cpu", "cuda") or index.isdigit():
        return normal
    raise ConfigError(
        f"unknown device {text!r}",
        expected=DEVICE_HELP,
        fix="pass --device auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N "
        "(N: the GPU's index)",
    )


def resolve_device(spec: str | torch.device, local_rank: int | None = None) -> torch.device:
    """The torch device a ``--device`` value names.

    Args:
        spec: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``
            or ``"cuda:N"``; or a ``torch.device``.
        local_rank: under torchrun, this process's ``LOCAL_RANK``: ``"cuda"`` and
            ``"auto"`` then mean that GPU. ``None`` for a single process.

    Returns:
        The device.

    Raises:
        ConfigError: an unknown value; CUDA asked for where torch sees no GPU;
            a GPU index that does not exist; or an explicit ``cuda:N`` under
            torchrun, which would put every process on one GPU.
    """
    import torch

    text = check_device_text(str(spec))
    if text == "auto":
        if not torch.cuda.is_available():
            log.info("no CUDA GPU available: running on CPU")
            return torch.device("cpu")
        text = "cuda"
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {text!r} was asked for, but torch sees no CUDA GPU",
            expected="a machine with an NVIDIA GPU and a CUDA build of torch",
            fix="pass --device cpu (or auto)",
        )
    if text == "cuda":
        return torch.device("cuda", local_rank) if local_rank is not None else torch.device("cuda")
    if local_rank is not None:
        raise ConfigError(
            f"device {text!r} would put every torchrun process on one GPU",
            expected="each process on the GPU of its LOCAL_RANK",
            fix="pass --device cuda (or auto) under torchrun",
        )
    device = torch.device(text)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"device {text!r} does not exist: torch sees {count} GPU(s)",
            expected=f"cuda:0 to cuda:{count - 1}",
            fix="pass an existing GPU index, or --device auto",
        )
    return device


# ------------------------------------------------------------------ precision

#: What a ``--precision`` option accepts, for help texts and error messages.
PRECISION_HELP = "auto, float32 or bfloat16"
PRECISIONS = ("auto", "float32", "bfloat16")


def check_precision_text(text: str) -> str:
    """Check that ``text`` names a precision, without importing torch.

    Args:
        text: ``"auto"``, ``"float32"`` or ``"bfloat16"`` (any case, blanks ignored).

    Returns:
        The value in its normal form.

    Raises:
        ConfigError: any other value.
    """
    normal = str(text).strip().lower()
    if normal in PRECISIONS:
        return normal
    raise ConfigError(
        f"unknown precision {text!r}",
        expected=PRECISION_HELP,
        fix="pass --precision auto (or float32 for bit-for-bit float32 arithmetic)",
    )


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX tiles).

    On such CPUs oneDNN's bfloat16 convolutions do about twice the work per
    cycle of float32 ones; on others bfloat16 is emulated and slower than float32.
    """
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    # torch.cpu's probes are private, so a torch without them counts as "no".
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(spec: str, device: torch.device) -> str:
    """The arithmetic a network runs in on ``device``: ``"float32"`` or ``"bfloat16"``.

    ``"auto"`` is bfloat16 autocast on a GPU and on a CPU with native
    bfloat16 (:func:`cpu_has_native_bfloat16`), else float32. Autocast keeps
    the weights, the inputs and the outputs in float32 and runs convolutions
    in bfloat16; over 36 held-out cases at 2x, 4x and 8x it moved PSNR by
    -0.0012 to +0.0045 dB against float32 (docs/precision.md). A GPU without
    bfloat16 support (before NVIDIA Ampere) runs float32.

    Args:
        spec: ``"auto"``, ``"float32"`` or ``"bfloat16"``.
        device: where the network runs.

    Returns:
        ``"float32"`` or ``"bfloat16"``.

    Raises:
        ConfigError: an unknown value.
    """
    text = check_precision_text(spec)
    if text != "auto":
        return text
    if device.type == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if device.type == "cpu" and cpu_has_native_bfloat16() else "float32"
