"""A training configuration as a YAML file: :func:`load_config` and :func:`save_config`.

The settings themselves, their defaults and checks are :mod:`mrisr.config`;
this module only reads and writes them, naming the file in every error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrisr.errors import ConfigError

if TYPE_CHECKING:
    from mrisr.config import TrainConfig

__all__ = ["load_config", "save_config"]


def load_config(path: str | Path) -> TrainConfig:
    """Read a :class:`TrainConfig` from YAML; missing settings take their defaults.

    Raises:
        ConfigError: unreadable file, invalid YAML, a key given twice in one
            section (YAML would keep the last silently), unknown keys or bad
            values, the message naming the file (and the line, where there is one).
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
    repeated = _repeated_key(yaml.compose(text, Loader=yaml.SafeLoader))
    if repeated is not None:
        key, line, first = repeated
        raise ConfigError(
            f"sets {key} twice (line {line}; first on line {first}): YAML would keep the "
            "last one silently",
            path=path,
            expected="each setting once per section",
            fix=f"delete one of the two {key.rsplit('.', 1)[-1]}: lines, keeping the value you mean",
        )
    if values is not None and not isinstance(values, dict):
        raise ConfigError(
            f"holds a YAML {type(values).__name__}, not settings",
            path=path,
            expected="sections such as data:, model:, optim:, schedule:",
            fix="write settings as 'section:' lines with indented 'name: value' lines under "
            "them (e.g. data: then '  factor: 4'), as in the run's config.yaml",
        )
    try:
        return from_dict(TrainConfig, values if values is not None else {})
    except ConfigError as error:
        raise ConfigError(
            error.problem, path=path, expected=error.expected, fix=error.fix
        ) from None


def _repeated_key(node: Any, where: str = "") -> tuple[str, int, int] | None:
    """The first key given twice in one mapping of a composed YAML document, or None.

    Args:
        node: a ``yaml.Node`` (or None for an empty document).
        where: the dotted keys above ``node``.

    Returns:
        (dotted key, its line, the line of its first occurrence), lines from 1.
    """
    import yaml

    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = _repeated_key(item, f"{where}[{index}]")
            if found is not None:
                return found
    if not isinstance(node, yaml.MappingNode):
        return None
    first_lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue  # a merge key ("<<") may be overridden; a complex key is from_dict's to refuse
        key = f"{where}.{key_node.value}" if where else str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in first_lines:
            return key, line, first_lines[key]
        first_lines[key] = line
        found = _repeated_key(value_node, key)
        if found is not None:
            return found
    return None


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
