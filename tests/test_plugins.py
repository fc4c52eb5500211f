"""Reducers loaded from a local file for one run (``--plugin file.py``, ``plugins:``)."""

from __future__ import annotations

import textwrap

import pytest

from tokred import create_reducer, list_reducers
from tokred.plugins import load_plugin_file

PLUGIN = '''
from tokred import TokenReducer, register_reducer


@register_reducer("{name}")
class {cls}(TokenReducer):
    """Keeps every token (a test plugin)."""

    def __init__(self, every: int = 2) -> None:
        super().__init__()
        self.every = every
'''


def _write(tmp_path, name="file_plugin_keep", cls="FilePluginKeep"):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(PLUGIN.format(name=name, cls=cls)))
    return path


def test_a_file_plugin_registers_its_reducers_for_this_process(tmp_path):
    path = _write(tmp_path)
    assert load_plugin_file(path) == ["file_plugin_keep"]
    assert load_plugin_file(path) == ["file_plugin_keep"]  # idempotent
    assert "file_plugin_keep" in list_reducers()
    red = create_reducer("file_plugin_keep", every=3)
    assert red.every == 3


def test_a_file_plugin_cannot_take_a_built_in_name(tmp_path):
    path = _write(tmp_path, name="tome", cls="NotToMe")
    create_reducer("tome")  # the built-in is imported
    with pytest.raises(ValueError, match=r"tome.*already registered"):
        load_plugin_file(path)


@pytest.mark.parametrize("content, match", [
    ("x = 1\n", "registers no reducer"),
    ("raise RuntimeError('boom')\n", "failed to load: RuntimeError: boom"),
])
def test_bad_plugin_files_are_named(tmp_path, content, match):
    path = tmp_path / "bad.py"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_plugin_file(path)


def test_missing_plugin_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_plugin_file(tmp_path / "nope.py")
