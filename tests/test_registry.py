"""Registry: decorator, entry points, errors with close matches."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tokred
from tokred import TokenReducer, create_reducer, list_reducers, register_reducer
from tokred.registry import _REGISTRY, GROUP


def test_builtins_are_declared_as_entry_points():
    from importlib.metadata import entry_points

    declared = {ep.name for ep in entry_points(group=GROUP)}
    assert {"none", "tome", "centerclip", "tempme", "pooling", "sparse"} <= declared
    assert set(declared) <= set(list_reducers())


def test_list_reducers_imports_no_plugin():
    code = ("import sys, tokred; names = tokred.list_reducers(); "
            "print(sorted(m for m in sys.modules if m == 'methods' or m.startswith('methods.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_create_loads_plugin_through_entry_point():
    r = create_reducer("tome", r=3)
    assert type(r).__module__ == "tokred_methods.tome" and r.r == 3


def test_unknown_reducer_suggests_close_matches():
    with pytest.raises(KeyError, match=r"unknown reducer 'tomee'.*Did you mean 'tome'.*Available: .*none"):
        create_reducer("tomee")


def test_unknown_option_names_valid_ones():
    with pytest.raises(TypeError, match=r"unknown option 'rr' for reducer 'tome'.*'r'.*Valid options: r, inflection, prop_attn"):
        create_reducer("tome", rr=2)


def test_duplicate_name_raises():
    @register_reducer("test-dup")
    class A(TokenReducer):
        pass

    try:
        with pytest.raises(ValueError, match="already registered"):
            @register_reducer("test-dup")
            class B(TokenReducer):
                pass
    finally:
        _REGISTRY.pop("test-dup")


def test_register_requires_a_reducer_class():
    with pytest.raises(TypeError, match="TokenReducer subclass"):
        register_reducer("x")(object)


def test_cli_list_shows_options(capsys):
    from tokred.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tome" in out and "r=2" in out
    assert main(["lst"]) == 2


def test_public_api():
    for name in tokred.__all__:
        assert hasattr(tokred, name)
