"""Reducer specs as typed on a command line: ``name``, ``name:key=value,...``, ``name.tag`` (a
preset), ``name.tag:key=value`` (options over a preset), ``name.paper`` (the papers' settings of
that reducer for the backbone) and ``paper`` (``none`` and every registered reducer's papers'
settings). Values are YAML (``r=2``, ``prop_attn=false``, ``merge_layers=8-9-10`` for reducers
that take the dash form).
"""

from __future__ import annotations

from typing import NamedTuple

from tokred.registry import get_reducer_class, list_reducers, resolve_options, split_spec

PAPER = "paper"  # the reserved tag/spec that expands to the papers' settings
BASELINE = "none"


class ReducerSpec(NamedTuple):
    """A reducer setting to measure: the label it was asked by, the name and full options."""

    label: str
    name: str
    options: dict


def parse_reducer(text: str) -> tuple[str, dict]:
    """``"tome:r=2,prop_attn=false"`` -> ``("tome", {"r": 2, "prop_attn": False})``.

    A preset tag (``"centerclip.B6-3-49"``, ``"tempme.r2:r=3"``) is resolved, explicit options
    over the preset's.

    Raises:
        ValueError: an option without ``=``.
        KeyError: unknown reducer or preset, naming the available presets.
    """
    import yaml

    head, _, rest = text.partition(":")
    opts = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"reducer option {item!r} in {text!r} must be key=value")
        opts[key.strip()] = yaml.safe_load(value)
    name, tag = split_spec(head.strip())
    if tag is None:
        return name, opts
    return resolve_options(f"{name}.{tag}", **opts)


def paper_specs(name: str, model: str, options: dict | None = None) -> list[ReducerSpec]:
    """The papers' settings of reducer ``name`` on ``model`` (``options`` over each).

    Raises:
        KeyError: the papers report no setting of ``name`` on ``model``, naming those they do.
    """
    cls = get_reducer_class(name)
    tags = cls.paper.get(model, ())
    if not tags:
        raise KeyError(f"{name}.{PAPER}: no paper setting of {name!r} on {model!r}; the papers "
                       f"report it on: {', '.join(cls.paper) or '(none)'}. Name a preset "
                       f"instead ({', '.join(cls.presets) or 'none'})")
    return [ReducerSpec(f"{name}.{t}", *resolve_options(f"{name}.{t}", **(options or {})))
            for t in tags]


def reducer_specs(texts: list[str], model: str) -> list[ReducerSpec]:
    """The settings ``texts`` ask for on ``model``, the baseline ``none`` first.

    ``none`` is added when no spec names it: every speed-up is measured against it. ``paper``
    takes every registered reducer the papers report on ``model`` (timm models: ToMe only).
    """
    out: list[ReducerSpec] = []
    for text in texts:
        if text == PAPER:
            out += [s for n in list_reducers() if n != BASELINE and _has_paper(n, model)
                    for s in paper_specs(n, model)]
            continue
        head, _, rest = text.partition(":")
        name, tag = split_spec(head.strip())
        if tag == PAPER:
            out += paper_specs(name, model, parse_reducer(f"{name}:{rest}")[1])
        else:
            out.append(ReducerSpec(text, *parse_reducer(text)))
    if not any(s.name == BASELINE and not s.options for s in out):
        out.insert(0, ReducerSpec(BASELINE, BASELINE, {}))
    return out


def _has_paper(name: str, model: str) -> bool:
    try:
        return bool(get_reducer_class(name).paper.get(model))
    except (ImportError, KeyError, ValueError):  # a broken plugin must not hide the others
        return False
