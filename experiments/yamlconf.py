"""YAML with line numbers: every mapping key and list item keeps its 1-based line (from
``yaml.compose`` node marks) so config errors can name ``file:line``; ``${VAR:-default}``
expansion for paths."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A config problem found before any trial starts (message names the line and the fix)."""


@dataclass
class Located:
    """A parsed YAML document plus the line (1-based) of every mapping key and list item."""

    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)
    path: str = "<config>"

    def where(self, *keys: Any) -> str:
        """``file:line`` of the deepest known prefix of ``keys``."""
        for n in range(len(keys), -1, -1):
            if keys[:n] in self.lines:
                return f"{self.path}:{self.lines[keys[:n]]}"
        return self.path


def _to_python(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for k_node, v_node in node.value:
            key = _scalar(k_node)
            if key in out:
                raise ConfigError(f"line {k_node.start_mark.line + 1}: duplicate key {key!r} "
                                  f"(first at line {lines[path + (key,)]}); keep only one")
            lines[path + (key,)] = k_node.start_mark.line + 1
            out[key] = _to_python(v_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, path + (i,), lines) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if node.tag == "tag:yaml.org,2002:str":
        return node.value
    return yaml.safe_load(yaml.serialize(node))


def load_yaml(path: str | Path) -> Located:
    """Parse ``path`` keeping the line of every key (``yaml.compose`` node marks)."""
    text = Path(path).read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if node is None:
        raise ConfigError(f"{path} is empty; see experiments/configs/smoke.yaml for an example")
    lines: dict[tuple, int] = {}
    try:
        return Located(_to_python(node, (), lines), lines, str(path))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def expand_env(value: Any) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in strings, recursively."""
    if isinstance(value, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    return value
