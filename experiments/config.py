"""Sweep configs: find, load (YAML with line numbers), override, validate, expand into trials.

A config has a ``cost`` section (GMACs, tokens, memory, throughput; random weights are enough),
a ``quality`` section (retrieval after training-free insertion and after fine-tuning) and a
``provenance`` section; :mod:`.sections` turns each into trials. Every error is raised as
:class:`ConfigError` before any trial runs, naming the file and line (or the ``KEY=VALUE``
override that set the value) and the fix.

``KEY.PATH=VALUE`` overrides (``tokred sweep --config X quality.base.max_steps=20``) change the
document before it is read, so they are validated, and change trials and ids, exactly as the
same edit of the file would; the effective config is what a run saves as ``OUT/config.yaml``.
A config's ``plugins:`` (and ``--plugin``) load reducers from local files before any reducer is
checked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .schema import TOP_KEYS
from .schema import check_keys as _check_keys
from .sections import cost_trials, provenance_trials, quality_trials, seed_of
from .trial import Trial
from .yamlconf import ConfigError, Located, apply_override, expand_env, load_yaml

__all__ = ["ConfigError", "SweepConfig", "find_config", "load_config", "load_yaml"]
CONFIGS = Path(__file__).with_name("configs")  # the shipped configs (package data)


@dataclass
class SweepConfig:
    """A validated config: its name, source, raw sections and expanded trials.

    Attributes:
        overrides: the ``KEY=VALUE`` overrides applied to the file, in order.
        plugins: absolute paths of the plugin files loaded for it (``plugins:`` and
            ``--plugin``).
        text: the effective YAML (overrides applied, plugin paths absolute) when it differs
            from the file; None: the file itself is the effective config.
        keep: ids of the fine-tune trials whose checkpoints are kept (``keep_checkpoints``).
    """

    name: str
    path: str
    raw: dict
    trials: list[Trial]
    label: str = ""
    overrides: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    text: str | None = None
    keep: frozenset[str] = frozenset()


def find_config(name: str | Path) -> Path:
    """The config file ``name`` names: a path, else a shipped config's bare name (``smoke``,
    ``default``, with or without ``.yaml``) from the installed package.

    Raises:
        FileNotFoundError: neither, naming the shipped configs (with a close match).
    """
    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIGS / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.name == str(name) and shipped.is_file():
        return shipped
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    import difflib

    close = difflib.get_close_matches(path.stem, names, n=1)
    what = "is a directory, not a file" if path.is_dir() else "does not exist"
    raise FileNotFoundError(f"config {str(name)!r} {what} and is not a shipped config"
                            + (f"; did you mean {close[0]!r}?" if close else "")
                            + f" Shipped configs: {', '.join(names)} (in {CONFIGS})")


def load_config(path: str | Path, cost_only: bool = False, preflight: bool = True,
                overrides: Sequence[str] = (), plugins: Sequence[str | Path] = ()) -> SweepConfig:
    """Load, validate and expand ``path``; raises :class:`ConfigError` on any problem.

    ``overrides``: ``KEY.PATH=VALUE`` items applied to the document first
    (:func:`~.yamlconf.apply_override`). ``plugins``: plugin files (``--plugin``) loaded with
    the config's own ``plugins:`` before any reducer is checked. ``preflight``: also check what
    depends on this machine and the files on it, before any trial: the weights file exists,
    every training recipe's precision can run on the device it trains on (fp16 needs CUDA),
    and every quality dataset's split files read and videos are present. The report turns it
    off: it only needs the trials, perhaps on another machine than the one that ran them.
    """
    loc = load_yaml(path, overrides)
    if not isinstance(loc.data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with cost:/quality: sections")
    loc.data = expand_env(loc.data)
    _check_keys(loc, (), loc.data, TOP_KEYS, "top level", ConfigError)
    seed_of(loc)
    files = _load_plugins(loc, Path(path).parent, plugins)
    trials, keep = cost_trials(loc), set()
    if not cost_only:
        quality, keep = quality_trials(loc, preflight)
        trials += quality
    trials += provenance_trials(loc, cost_only)
    if not trials:
        raise ConfigError(f"{path}: no trials; add a cost: or quality: section with reducers")
    ids = [t.id for t in trials]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        titles = sorted({t.title for t in trials if t.id in dup})
        raise ConfigError(f"{path}: the same trial is listed twice: {titles}; remove duplicates")
    return SweepConfig(str(loc.data.get("name", Path(path).stem)), str(path), loc.data,
                       trials, str(loc.data.get("label", "")), list(overrides), files,
                       _effective_text(loc, overrides, files), frozenset(keep))


def _load_plugins(loc: Located, here: Path, extra: Sequence[str | Path]) -> list[str]:
    """Load the config's ``plugins:`` (relative to its directory ``here``) and ``extra``
    (``--plugin``, relative to the working directory); their absolute paths, in order."""
    from tokred.plugins import load_plugin_file

    listed = loc.data.get("plugins") or []
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise ConfigError(f"{loc.where('plugins')}: plugins must be a list of .py file paths "
                          f"(relative to the config file), got {listed!r}")
    found = [(here / p, loc.where("plugins", i)) for i, p in enumerate(listed)]
    found += [(Path(p), f"--plugin {p}") for p in extra]
    files: list[str] = []
    for file, where in found:
        try:
            load_plugin_file(file)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
        files.append(str(file.resolve()))
    return list(dict.fromkeys(files))


def _effective_text(loc: Located, overrides: Sequence[str], files: list[str]) -> str | None:
    """The YAML a run saves when it differs from the file: overrides applied and every plugin
    path absolute (``OUT/config.yaml`` lives elsewhere and must load the same plugins)."""
    listed = loc.data.get("plugins") or []
    if not overrides and files == listed:
        return None
    if files:
        apply_override(loc.node, f"plugins={json.dumps(files)}")
    return loc.text()
