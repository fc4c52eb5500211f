"""Reducers from a local Python file, for one run, without packaging them.

``load_plugin_file("my_reducer.py")`` imports the file as a module of its own; its
``@register_reducer`` decorators register its classes in the running process exactly as an
entry point's module would, with the same checks (a name already taken by another class, a
built-in or an installed plugin is refused, naming both). Nothing is installed or persisted;
:func:`loaded_plugins` lists the files loaded in this process with their SHA-256, which the
commands record in their provenance (a result names the exact plugin code it ran).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from tokred.registry import _REGISTRY

# resolved path -> {"path", "sha256", "reducers", "module"}, in load order
_LOADED: dict[str, dict] = {}


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
    digest = _sha256(p)  # of the code about to run
    before = set(_REGISTRY)
    module = _import(p, name)
    added = sorted(set(_REGISTRY) - before) or _names_of(module)
    if not added:
        raise ValueError(f"plugin {p} registers no reducer; decorate a TokenReducer subclass "
                         "with @tokred.register_reducer('name')")
    resolved = str(p.resolve())
    _LOADED[resolved] = {"path": resolved, "sha256": digest, "reducers": added,
                         "module": name}
    return added


def load_plugin_files(paths: list[str | Path] | None) -> dict[str, list[str]]:
    """:func:`load_plugin_file` for each of ``paths`` (None: none); ``{path: reducer names}``."""
    return {str(path): load_plugin_file(path) for path in paths or []}


def loaded_plugins() -> list[dict]:
    """The plugin files loaded in this process: ``{"path", "sha256", "reducers", "module"}``
    each (resolved path; the SHA-256 of the file as it was imported), in load order."""
    return [dict(info) for info in _LOADED.values()]


def plugin_file_of(module: str) -> str | None:
    """The file a plugin module name (``cls.__module__``) was loaded from, else None."""
    return next((info["path"] for info in _LOADED.values() if info["module"] == module), None)


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


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


def run_provenance(device: Any = "cpu", argv: list[str] | None = None,
                   plugin_files: list[str] | None = None, **extra: Any) -> dict:
    """:func:`tokred.env.provenance` (code, software, machine, command line, ``extra`` such as
    ``seed``) with ``plugins``: the plugin files loaded in this process, each with its SHA-256
    (:func:`loaded_plugins`); only those of ``plugin_files`` when given (a sweep's own, in a
    process that may have loaded others). Every record tokred writes carries this as
    ``provenance``."""
    from tokred.env import provenance

    plugins = loaded_plugins()
    if plugin_files is not None:
        mine = {str(Path(p).resolve()) for p in plugin_files}
        plugins = [p for p in plugins if p["path"] in mine]
    return provenance(device, argv, plugins=plugins, **extra)
