"""A training configuration as a YAML file: :func:`load_config` and :func:`save_config`.

The settings themselves, their defaults and checks are :mod:`mrisr.config`;
this module only reads and writes them, naming the file in every error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mrisr.errors import ConfigError

if TYPE_CHECKING:
    from mrisr.config import TrainConfig

__all__ = ["load_config", "save_config"]


def load_config(path: str | Path) -> TrainConfig:
    """Read a :class:`TrainConfig` from YAML; missing settings take their defaults.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown keys or bad values,
            the message naming the file.
    """
    import yaml

    from mrisr.config import TrainConfig, from_dict  # lazily: mrisr.config imports this module

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            f"cannot read config: {error.strerror or error}", path=path, fix="check the path"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            "is not a text file: a config is YAML text",
            path=path,
            fix="pass the run's config.yaml (or one written like benchmarks/default_model.yaml)",
        ) from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        what = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            f"is not valid YAML{line}: {what}",
            path=path,
            fix="indent with spaces, not tabs, and close every bracket and quote",
        ) from None
    if values is not None and not isinstance(values, dict):
        raise ConfigError(
            f"holds a YAML {type(values).__name__}, not settings",
            path=path,
            expected="sections such as data:, model:, optim:, schedule:",
        )
    try:
        return from_dict(TrainConfig, values if values is not None else {})
    except ConfigError as error:
        raise ConfigError(
            error.problem, path=path, expected=error.expected, fix=error.fix
        ) from None


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write ``config`` as YAML (every setting, defaults included); returns the path.

    The file is written atomically and replaces an existing one.

    Raises:
        OutputError: the folder does not exist, or the file cannot be written.
    """
    import yaml

    from mrisr.config import to_dict
    from mrisr.io.files import write_atomic

    path = Path(path)
    text = yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)
    write_atomic(path, lambda temporary: temporary.write_text(text), overwrite=True)
    return path
