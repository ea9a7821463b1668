"""Command-line options that several commands share, each spelled once.

``mrisr upscale``, ``mrisr bids`` and ``mrisr evaluate`` take the same model,
device and upscale settings; their help texts and defaults live here, so the
commands cannot drift apart. Each alias is a typer ``Annotated`` type.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mrisr.device import DEVICE_HELP, PRECISION_HELP

if TYPE_CHECKING:
    from mrisr.upscale import UpscaleOptions


def non_empty_path(text: str | Path) -> Path:
    """A path option's or argument's value as a Path, refusing an empty one.

    ``Path("")`` is ``Path(".")``: an empty value (``-o "$OUT"`` with ``OUT``
    unset) would silently mean the current folder: train into it, write
    outputs there, or upscale every scan in it. Every path parameter of the
    command line is parsed by this function (``parser=``).

    Raises:
        typer.BadParameter: an empty (or all-blank) value, or a name longer than
            file systems allow (:data:`NAME_MAX` bytes per file or folder name,
            which would otherwise fail as a bare OSError wherever the path is
            first touched); the command line prints it with the option's name
            and exits with code 2, before any work.
    """
    if isinstance(text, Path):  # a default, already a path
        return text
    if not text.strip():
        raise typer.BadParameter(
            f"{text!r} is empty: an empty path would silently mean the current folder. "
            "Fix: give a file or folder name (. for the current folder), or leave the "
            "option out for its default"
        )
    path = Path(text)
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            raise typer.BadParameter(
                f"has a name of {size} bytes ({part[:40]}...), longer than the {NAME_MAX} "
                "bytes file systems allow for one file or folder name. Fix: shorten it"
            )
    return path


#: The longest file or folder name (bytes) of the common file systems (ext4, XFS, APFS, NTFS).
NAME_MAX = 255


Model = Annotated[
    str | None,
    typer.Option(
        help="'cubic', a bundled model name, a run folder or a .safetensors file; "
        "default: the bundled model for each scan's factor."
    ),
]
Factor = Annotated[float | None, typer.Option(help="Upsampling factor; default: isotropic voxels.")]
Spacing = Annotated[
    float | None,
    typer.Option(
        "--spacing",
        metavar="MM",
        help="Isotropic output voxels of MM mm instead of the in-plane spacing: the in-plane "
        "axes are area-averaged down to MM, the thick axis super-resolved to MM (field of "
        "view kept). Not with --factor.",
        show_default=False,
    ),
]
Axis = Annotated[int | None, typer.Option(help="Thick axis 0, 1 or 2; default: detected.")]
Fusion = Annotated[str, typer.Option(help="Fusion of the two planes: mean or fba.")]
Consistency = Annotated[
    bool | None,
    typer.Option(
        "--consistency/--no-consistency",
        help="Make the result's thick slices (box of the slice thickness) equal the input's; "
        "default: wherever the slice thickness allows it (the sidecar, where one is written, says when skipped).",
        show_default=False,
    ),
]
ConsistencyProfile = Annotated[
    str,
    typer.Option(
        help="Slice profile of the consistency projection: mean (box) or gaussian "
        "(FWHM the slice thickness), when the scan's profile is known."
    ),
]
ClipRange = Annotated[
    bool,
    typer.Option(
        "--clip-range/--no-clip-range",
        help="Keep the output within the input's intensity range, zero background at zero.",
    ),
]
Disagreement = Annotated[
    bool,
    typer.Option(
        "--disagreement/--no-disagreement",
        help="Write the disagreement map beside the output (<stem>_disagreement, or "
        "desc-<label>disagreement for a BIDS name): where the passes disagree.",
    ),
]
Tta = Annotated[
    bool, typer.Option(help="Test-time augmentation: flipped passes too (4x the work).")
]
Thickness = Annotated[
    float | None,
    typer.Option(
        help="Slice thickness in mm when it differs from the spacing (gaps, overlaps); "
        "default: the header's (DICOM, BIDS sidecar), else the spacing."
    ),
]
Device = Annotated[str, typer.Option(help=f"{DEVICE_HELP}.")]
Threads = Annotated[int | None, typer.Option(help="CPU threads for the network.")]
Precision = Annotated[
    str,
    typer.Option(
        help=f"Network arithmetic: {PRECISION_HELP}. auto: bfloat16 on a GPU or a CPU with "
        "native bfloat16 (about 2x faster there), else float32."
    ),
]
BatchSize = Annotated[int, typer.Option(help="Slices per network batch.")]
Force = Annotated[bool, typer.Option(help="Allow a factor outside the model's trained range.")]
Dtype = Annotated[
    str,
    typer.Option(
        help="Output voxel type: float32, int16 or uint8 (NIfTI only; integers carry "
        "a scale factor chosen from the data's range, so nothing is clipped)."
    ),
]
Shard = Annotated[
    str | None,
    typer.Option(help="K/N: only the K-th of N disjoint shares of the sorted scans (array jobs)."),
]
Summary = Annotated[
    Path | None,
    typer.Option(
        parser=non_empty_path,
        help="JSON summary (scan, status, seconds, output, error) of the run; default "
        "mrisr_summary.json in the -o folder (else the current folder), and with one scan and "
        "-o FILE, in FILE's folder.",
    ),
]


#: Command parameters named otherwise than their :class:`~mrisr.upscale.UpscaleOptions` field.
_FIELD_OF_PARAMETER = {"thickness": "thickness_mm"}


def upscale_options(arguments: dict[str, Any], **given: Any) -> UpscaleOptions:
    """The :class:`~mrisr.upscale.UpscaleOptions` a command's parameters spell.

    Every parameter named like a field (``fusion``, ``consistency``, ``tta``...;
    ``thickness`` for ``thickness_mm``) is taken, so a new field needs no new
    line in each command.

    Args:
        arguments: the command's parameters (its ``locals()`` at the start).
        **given: fields set by the command itself (they win over ``arguments``).

    Returns:
        The options.

    Raises:
        ConfigError: a value the options refuse (an unknown fusion, dtype, profile).
    """
    from mrisr.upscale import UpscaleOptions

    names = {f.name for f in fields(UpscaleOptions)}
    chosen = {_FIELD_OF_PARAMETER.get(k, k): v for k, v in arguments.items()}
    settings = {k: v for k, v in chosen.items() if k in names and k not in given}
    return UpscaleOptions(**settings, **given)


#: Options only a network uses (cubic interpolation runs none): parameter -> flag.
_NETWORK_ONLY = {
    "device": "--device",
    "threads": "--threads",
    "precision": "--precision",
    "batch_size": "--batch-size",
    "force": "--force",
}


def refuse_ineffective(
    command: Callable[..., Any],
    arguments: dict[str, Any],
    *,
    networks: Sequence[str | None] | None = None,
    without_network: str = "with --model cubic",
) -> None:
    """Refuse, before any work, options that the other options given make ineffective.

    An option is "given" when its value differs from the command's default.

    Args:
        command: the command function (its signature holds the defaults).
        arguments: the command's parameters (its ``locals()`` at the start).
        networks: the ``--model`` values that will run; default
            ``[arguments["model"]]``. Only ``"cubic"`` values (or none) mean
            that no network runs.
        without_network: how the message says that no network runs.

    Raises:
        ConfigError: ``--device``, ``--threads``, ``--precision``,
            ``--batch-size`` or ``--force`` given where only cubic interpolation
            runs (it has no network and no trained factor range), or
            ``--consistency-profile`` other than ``mean`` with ``--no-consistency``.
    """
    from mrisr.errors import ConfigError
    from mrisr.models import names_cubic

    defaults = {
        name: parameter.default for name, parameter in inspect.signature(command).parameters.items()
    }
    specs = [arguments.get("model")] if networks is None else list(networks)
    if all(names_cubic(spec) for spec in specs):
        given = [
            flag if isinstance(arguments[name], bool) else f"{flag} {arguments[name]}"
            for name, flag in _NETWORK_ONLY.items()
            if name in arguments and not _same(arguments[name], defaults.get(name))
        ]
        if given:
            flags = ", ".join(text.split()[0] for text in given)
            raise ConfigError(
                f"{', '.join(given)} {'has' if len(given) == 1 else 'have'} no effect "
                f"{without_network}: cubic interpolation runs no network and takes any factor",
                fix=f"drop {flags}, or choose a network with --model (a bundled model's name, "
                "a training run folder or a .safetensors file)",
            )
    profile = arguments.get("consistency_profile")
    if arguments.get("consistency") is False and profile is not None and not _same(profile, "mean"):
        raise ConfigError(
            f"--consistency-profile {profile} has no effect with --no-consistency: it is the "
            "slice profile of the consistency projection, which --no-consistency turns off",
            fix="drop --consistency-profile, or drop --no-consistency",
        )


def _same(value: Any, default: Any) -> bool:
    """Whether an option's value is its default (text compared without case or spaces)."""
    if isinstance(value, str) and isinstance(default, str):
        return value.strip().lower() == default.strip().lower()
    return value == default
