"""Reducer registry: ``@register_reducer`` plus discovery through entry points, and presets.

Built-in reducers and third-party packages use the same entry-point group
(``tokred.reducers``): the entry point gives the address, the decorator gives the name.
``list_reducers()`` reads entry-point metadata only and imports no plugin.

Presets are the papers' settings, declared on each reducer class (``TokenReducer.presets``):
``create_reducer("centerclip", preset="B6-4-49")`` or the spec ``"centerclip.B6-4-49"``; explicit
options override a preset's. They are the one source of every published setting for measure,
the sweep configs, the published-numbers table and the tests.
"""

from __future__ import annotations

import difflib
import inspect
from importlib import metadata
from typing import Any, Callable

from tokred.reducer import TokenReducer

GROUP = "tokred.reducers"
_REGISTRY: dict[str, type[TokenReducer]] = {}


class UnknownReducerError(KeyError):
    """No reducer (or preset) of that name; the message lists close matches and the choices."""


class ReducerOptionError(TypeError):
    """A reducer was given an option it does not take; the message names the valid ones."""


def register_reducer(name: str) -> Callable[[type[TokenReducer]], type[TokenReducer]]:
    """Class decorator registering a :class:`TokenReducer` under ``name``.

    A name belongs to one class: the one registered first, and if an installed entry point
    declares the name, the class it points to, whatever the import order (a plugin imported
    before the built-ins cannot take over ``tome``).

    Raises:
        ValueError: another class holds ``name``, naming both classes and their packages.
    """

    def decorate(cls: type[TokenReducer]) -> type[TokenReducer]:
        if not (isinstance(cls, type) and issubclass(cls, TokenReducer)):
            raise TypeError(f"@register_reducer({name!r}) must decorate a TokenReducer subclass")
        old = _REGISTRY.get(name)
        if old is not None and _qualname(old) != _qualname(cls):
            raise ValueError(f"reducer name {name!r} is already registered by {_origin(old)}; "
                             f"{_origin(cls)} must use another name")
        ep = _entry_points().get(name)
        if ep is not None and (ep.module, ep.attr) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"reducer name {name!r} belongs to {ep.value} (distribution "
                             f"{_dist(ep)}, entry-point group {GROUP!r}); {_origin(cls)} must "
                             f"use another name")
        _REGISTRY[name] = cls
        cls.reducer_name = name
        return cls

    return decorate


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def distribution_of(cls: type) -> str | None:
    """The installed distribution that provides ``cls``'s top-level package, or None."""
    dists = metadata.packages_distributions().get(cls.__module__.split(".")[0])
    return dists[0] if dists else None


def _origin(cls: type) -> str:
    """``module.Class (distribution NAME)`` for messages about a name clash."""
    top = cls.__module__.split(".")[0]
    dist = distribution_of(cls) or f"none: module {top!r} is not installed"
    return f"{_qualname(cls)} (distribution {dist})"


def _dist(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)  # Python >= 3.10
    return dist.name if dist is not None else "?"


def _entry_points() -> dict[str, metadata.EntryPoint]:
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):
        other = found.get(ep.name)
        if other is not None and other.value != ep.value:
            raise ValueError(
                f"two installed distributions declare reducer {ep.name!r} in entry-point group "
                f"{GROUP!r}: {_dist(other)} ({other.value}) and {_dist(ep)} ({ep.value}); "
                f"uninstall one or rename its reducer"
            )
        found[ep.name] = ep
    return found


def list_reducers() -> list[str]:
    """Names of all available reducers (registered or declared), sorted; imports no plugin."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_reducer_class(name: str) -> type[TokenReducer]:
    """The class registered under ``name``, importing its plugin module if needed.

    Raises:
        UnknownReducerError: unknown name, with close matches and the available list.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    eps = _entry_points()
    if name not in eps:
        available = list_reducers()
        close = difflib.get_close_matches(name, available, n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownReducerError(
            f"unknown reducer {name!r}.{hint} Available: {', '.join(available)}. "
            f"Third-party reducers are found through the entry-point group {GROUP!r}."
        )
    cls = eps[name].load()
    if name not in _REGISTRY:
        raise ValueError(
            f"entry point {name!r} = {eps[name].value} loaded {cls!r}, which is not registered "
            f"under that name; decorate it with @register_reducer({name!r})"
        )
    return _REGISTRY[name]


def reducer_options(name: str) -> dict[str, Any]:
    """The keyword options of reducer ``name`` with their defaults."""
    sig = inspect.signature(get_reducer_class(name).__init__)
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in list(sig.parameters.values())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"centerclip.B6-4-49"`` -> ``("centerclip", "B6-4-49")``; ``"tome"`` -> ``("tome", None)``."""
    name, dot, tag = spec.partition(".")
    return name, (tag if dot else None)


def reducer_presets(name: str) -> dict[str, dict[str, Any]]:
    """The presets (tag -> options) of reducer ``name``."""
    return dict(get_reducer_class(split_spec(name)[0]).presets)


def paper_presets(name: str, backbone: str) -> list[str]:
    """Tags of the settings the papers report for reducer ``name`` on ``backbone``."""
    return list(get_reducer_class(name).paper.get(backbone, ()))


def resolve_options(name: str, preset: str | None = None, **options: Any) -> tuple[str, dict]:
    """``(reducer name, options)`` for a name or ``name.tag`` spec, a preset and overrides.

    Raises:
        UnknownReducerError: unknown reducer or preset (naming the available presets and close
            matches), or a spec and a preset that disagree.
    """
    name, tag = split_spec(name)
    if tag is not None and preset is not None and tag != preset:
        raise UnknownReducerError(f"reducer spec {name}.{tag} and preset={preset!r} disagree; "
                                  f"give one")
    tag = tag if tag is not None else preset
    if tag is None:
        return name, dict(options)
    presets = get_reducer_class(name).presets
    if tag not in presets:
        close = difflib.get_close_matches(tag, list(presets), n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownReducerError(f"reducer {name!r} has no preset {tag!r}.{hint} Presets: "
                       f"{', '.join(presets) or '(none)'}")
    return name, {**presets[tag], **options}


def preset_of(name: str, options: dict[str, Any]) -> str | None:
    """The tag of the preset ``options`` amount to (defaults filled in), or None."""
    try:
        cls = get_reducer_class(name)
        defaults = reducer_options(name)
    except (KeyError, ValueError, ImportError):
        return None
    full = _plain({**defaults, **options})
    for tag, opts in cls.presets.items():
        if _plain({**defaults, **opts}) == full:
            return tag
    return None


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """Tuples as lists, so ``(8, 9, 10)`` (a default) equals ``[8, 9, 10]`` (from YAML)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def create_reducer(name: str, preset: str | None = None, **options: Any) -> TokenReducer:
    """Instantiate reducer ``name`` (or ``"name.tag"``) with a preset and keyword ``options``.

    Raises:
        UnknownReducerError: unknown reducer or preset (a ``KeyError``).
        ReducerOptionError: unknown option, naming the valid ones and close matches (a
            ``TypeError``).
    """
    name, options = resolve_options(name, preset, **options)
    cls = get_reducer_class(name)
    valid = reducer_options(name)
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ReducerOptionError(
                f"unknown option {key!r} for reducer {name!r}.{hint} "
                f"Valid options: {', '.join(valid) or '(none)'}"
            )
    return cls(**options)
