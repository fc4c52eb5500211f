"""Reducers from a local Python file, for one run, without packaging them.

``load_plugin_file("my_reducer.py")`` imports the file as a module of its own; its
``@register_reducer`` decorators register its classes in the running process exactly as an
entry point's module would, with the same checks (a name already taken by another class, a
built-in or an installed plugin is refused, naming both). Nothing is installed or persisted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tokred.registry import _REGISTRY


def load_plugin_file(path: str | Path) -> list[str]:
    """Import ``path`` and return the reducer names it registered (sorted).

    Loading the same file twice in one process is a no-op (the module is kept by its resolved
    path).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a ``.py`` file, it registers no reducer, or it fails to import (the
            error names the file and the cause, e.g. a reducer name that is already taken).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"plugin file {str(path)!r} does not exist; pass the path of a "
                                "Python file that defines @register_reducer classes")
    if p.suffix != ".py":
        raise ValueError(f"plugin {str(path)!r} is not a .py file")
    name = _module_name(p)
    if name in sys.modules:
        return _names_of(sys.modules[name])
    before = set(_REGISTRY)
    module = _import(p, name)
    added = sorted(set(_REGISTRY) - before) or _names_of(module)
    if not added:
        raise ValueError(f"plugin {p} registers no reducer; decorate a TokenReducer subclass "
                         "with @tokred.register_reducer('name')")
    return added


def _module_name(p: Path) -> str:
    digest = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:10]
    return f"tokred_plugin_{p.stem}_{digest}"


def _import(p: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import plugin {p}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ValueError(f"plugin {p} failed to load: {type(err).__name__}: {err}") from err
    return module


def _names_of(module: ModuleType) -> list[str]:
    return sorted(n for n, cls in _REGISTRY.items() if cls.__module__ == module.__name__)
