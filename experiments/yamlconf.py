"""YAML with line numbers: every mapping key and list item keeps its 1-based line (from
``yaml.compose`` node marks) so config errors can name ``file:line``; ``KEY.PATH=VALUE``
overrides applied to the document before it is read, each error inside one naming the
override instead of a line; ``${VAR:-default}`` expansion for paths.

An override edits the composed node tree, so it means what editing the file at that path
means: one that reaches into a node shared through an anchor (``&name`` / ``*name``) changes it
everywhere it is used, as editing the anchor would.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_NULL = "tag:yaml.org,2002:null"


class ConfigError(ValueError):
    """A config problem found before any trial starts (message names the line and the fix)."""


@dataclass
class Located:
    """A parsed YAML document plus the line (1-based) of every mapping key and list item.

    Attributes:
        data: the document as Python values (overrides applied).
        lines: config path (keys and list indices) -> line in the file.
        path: the file.
        origins: config path -> the override (``KEY.PATH=VALUE``) that set it.
        node: the composed document (overrides applied), for :meth:`text`.
    """

    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)
    path: str = "<config>"
    origins: dict[tuple, str] = field(default_factory=dict)
    node: yaml.Node | None = None

    def where(self, *keys: Any) -> str:
        """Where the value at ``keys`` comes from: ``override K=V`` when an override set it (or
        a part of it), else ``file:line`` of the deepest known prefix of ``keys``."""
        for n in range(len(keys), -1, -1):
            if keys[:n] in self.origins:
                return f"override {self.origins[keys[:n]]}"
        inner = [text for at, text in self.origins.items() if at[: len(keys)] == keys]
        if keys and inner:
            return "override " + ", ".join(dict.fromkeys(inner))
        for n in range(len(keys), -1, -1):
            if keys[:n] in self.lines:
                return f"{self.path}:{self.lines[keys[:n]]}"
        return self.path

    def text(self) -> str:
        """The document as YAML (overrides applied; comments are not kept, anchors are)."""
        return yaml.serialize(self.node, Dumper=yaml.SafeDumper)


def _to_python(node: yaml.Node, path: tuple, loc: Located, marks: dict[int, str],
               origin: str | None = None) -> Any:
    origin = marks.get(id(node), origin)
    if origin is not None:
        loc.origins.setdefault(path, origin)
    elif node.start_mark is not None:
        loc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for k_node, v_node in node.value:
            key = _scalar(k_node)
            if key in out:
                first = loc.lines.get(path + (key,))
                raise ConfigError(f"{_place(k_node, origin)}: duplicate key {key!r}"
                                  + (f" (first at line {first})" if first else "")
                                  + "; keep only one")
            if origin is None and k_node.start_mark is not None:
                loc.lines[path + (key,)] = k_node.start_mark.line + 1
            out[key] = _to_python(v_node, path + (key,), loc, marks, origin)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, path + (i,), loc, marks, origin) for i, v in enumerate(node.value)]
    return _scalar(node)


def _place(node: yaml.Node, origin: str | None) -> str:
    if origin is not None:
        return f"override {origin}"
    return f"line {node.start_mark.line + 1}"


def _scalar(node: yaml.Node) -> Any:
    if node.tag == _STR:
        return node.value
    return yaml.safe_load(yaml.serialize(node))


def load_yaml(path: str | Path, overrides: Sequence[str] = ()) -> Located:
    """Parse ``path`` keeping the line of every key (``yaml.compose`` node marks), with
    ``overrides`` (``KEY.PATH=VALUE`` each, see :func:`apply_override`) applied in order."""
    text = Path(path).read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if node is None:
        raise ConfigError(f"{path} is empty; see experiments/configs/smoke.yaml for an example")
    marks: dict[int, str] = {}
    for item in overrides:
        marks.update(apply_override(node, item))
    loc = Located(None, {}, str(path), {}, node)
    try:
        loc.data = _to_python(node, (), loc, marks)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return loc


def parse_override(item: str) -> tuple[tuple, yaml.Node]:
    """``"quality.base.max_steps=20"`` -> ``(("quality", "base", "max_steps"), node of 20)``.

    The value is YAML (``20``, ``0.5``, ``true``, ``[1, 4]``, ``{r: 2}``, text); a path part
    made of digits is a list index (``cost.runs.0.repeats=2``).

    Raises:
        ConfigError: no ``=``, an empty path part, or a value that is not valid YAML.
    """
    key, sep, value = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"override {item!r} must look like key.path=value, e.g. "
                          f"quality.base.max_steps=20 or cost.runs.0.repeats=2")
    try:
        node = yaml.compose(value, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item}: the value is not valid YAML ({err}); quote "
                          f"text with special characters") from None
    if node is None:  # `key=`: null, as `key:` in the file
        node = yaml.ScalarNode(_NULL, "")
    return tuple(int(p) if p.isdigit() else p for p in parts), node


def apply_override(root: yaml.Node, item: str) -> dict[int, str]:
    """Set the value at an override's path in the composed document ``root``, in place.

    Mappings missing on the way are created (their keys are checked like the file's when the
    config is read); list items must exist. Returns ``{id(node): item}`` of the nodes the
    override made, so errors inside them name it.

    Raises:
        ConfigError: the path runs through a value that is not a mapping or list, or indexes
            a list item that does not exist.
    """
    path, value = parse_override(item)
    made = {id(value): item}
    node, at = root, ()
    for i, part in enumerate(path):
        child = value if i == len(path) - 1 else None  # the last part takes the value
        if isinstance(node, yaml.SequenceNode):
            if not isinstance(part, int) or not 0 <= part < len(node.value):
                n = len(node.value)
                raise ConfigError(f"override {item}: {_dotted(at)} is a list of {n} "
                                  f"item{'s' if n != 1 else ''}; index it with 0..{n - 1}")
            if child is not None:
                node.value[part] = child
            node = node.value[part]
        elif isinstance(node, yaml.MappingNode):
            node = _mapping_child(node, str(part), child, made, item)
        else:
            raise ConfigError(f"override {item}: {_dotted(at) or 'the document'} is "
                              f"{_scalar(node)!r}, not a mapping; override {_dotted(at)}=... "
                              f"itself")
        at += (part,)
    return made


def _mapping_child(node: yaml.MappingNode, key: str, child: yaml.Node | None,
                   made: dict[int, str], item: str) -> yaml.Node:
    """The value of ``key`` in ``node``, replaced by ``child`` when given; a missing key is
    added (an empty mapping when no ``child``)."""
    for i, (k_node, v_node) in enumerate(node.value):
        if str(_scalar(k_node)) == key:
            if child is None and v_node.tag != _NULL:
                return v_node
            if child is None:  # `key:` (null) in the file becomes a mapping, as `key: {...}`
                child = yaml.MappingNode(_MAP, [])
                made[id(child)] = item
            node.value[i] = (k_node, child)
            return child
    new = yaml.MappingNode(_MAP, []) if child is None else child
    made[id(new)] = item
    node.value.append((yaml.ScalarNode(_STR, key), new))
    return new


def _dotted(path: tuple) -> str:
    return ".".join(map(str, path))


def expand_env(value: Any) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in strings, recursively."""
    if isinstance(value, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    return value
