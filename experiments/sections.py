"""The sections of a sweep config turned into trials: ``cost``, ``quality``, ``provenance``.

Each section lists reducers as ``{name, preset, options, sweep}``: ``preset`` is one of the
reducer's presets (the papers' settings; also written ``name: centerclip.B6-4-49``),
``options`` are fixed keyword arguments over the preset's, ``sweep`` maps an option to the list
of values to try (a grid over all swept options). A preset is resolved here to its options, so
trials (and their ids) do not depend on how an entry was written. Every number is checked with
the CLI's rules; every error is a :class:`ConfigError` naming where the value came from
(``file:line``, or the override that set it).
"""

from __future__ import annotations

import itertools
from typing import Any

from tokred.cli.args import NONNEG_INT, POSITIVE_INT, Rule

from .schema import (
    COST_KEYS,
    DATA_KEYS,
    PROVENANCE_KEYS,
    QUALITY_KEYS,
    RECIPE_KEYS,
    REDUCER_KEYS,
    RUN_KEYS,
    SYNTH_KEYS,
)
from .schema import check_keys as _check_keys
from .trial import Trial, make_trial
from .validate import (
    check_data_files,
    check_data_paths,
    check_precision,
    check_recipe,
    check_reducer,
    resolve_preset,
)
from .yamlconf import ConfigError, Located

DEFAULT_MODEL = "scale-B32"  # of the quality and provenance sections

def reducer_points(loc: Located, where: tuple) -> list[tuple[str, dict, str]]:
    """Expand ``reducers`` at ``where`` into ``(name, options, file:line)`` points."""
    return [(n, o, line) for n, o, line, _ in reducer_entries(loc, where)]


def reducer_entries(loc: Located, where: tuple) -> list[tuple[str, dict, str, dict]]:
    """Like :func:`reducer_points`, plus the entry itself (its ``modes`` / ``finetune``).

    A point's options are the entry's preset's, then its ``options``, then one combination of
    its ``sweep`` values, each over the one before.
    """
    entries = _get(loc, where)
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{loc.where(*where)}: 'reducers' must be a non-empty list of reducer "
                          f"names or {{name, preset, options, sweep}} mappings")
    points: list[tuple[str, dict, str, dict]] = []
    for i, entry in enumerate(entries):
        at = where + (i,)
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{loc.where(*at)}: a reducer entry needs 'name' (e.g. "
                              f"{{name: tome, sweep: {{r: [2, 3]}}}}), got {entry!r}")
        _check_keys(loc, at, entry, REDUCER_KEYS, "reducer entry", ConfigError)
        name, preset = resolve_preset(entry["name"], entry.get("preset"),
                                      loc.where(*at, "preset" if "preset" in entry else "name"),
                                      ConfigError)
        for part, example in (("options", "options: {r: 2}"), ("sweep", "sweep: {r: [2, 3]}")):
            if not isinstance(entry.get(part) or {}, dict):
                raise ConfigError(f"{loc.where(*at, part)}: '{part}' of a reducer entry must be a "
                                  f"mapping such as {example}, got {entry[part]!r}")
        fixed = {**preset, **(entry.get("options") or {})}
        sweep = entry.get("sweep") or {}
        for key, values in sweep.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{loc.where(*at, 'sweep', key)}: sweep values of {key!r} must "
                                  f"be a non-empty list, e.g. {key}: [{values!r}]")
        keys = list(sweep)
        for combo in itertools.product(*(sweep[k] for k in keys)):
            points.append((name, {**fixed, **dict(zip(keys, combo))}, loc.where(*at), entry))
    return points


def _number(loc: Located, where: tuple, value: Any, rule: Rule) -> int | float:
    """``value`` checked by ``rule`` (:mod:`tokred.cli.args`, as the CLI and TrainConfig check
    theirs), or a :class:`ConfigError` naming its line."""
    try:
        return rule.check(value, str(where[-1]) if where else "value")
    except ValueError as err:
        raise ConfigError(f"{loc.where(*where)}: {err}") from None


def seed_of(loc: Located) -> int:
    return _number(loc, ("seed",), loc.data.get("seed", 0), NONNEG_INT)


def _seeded_data(data: dict, seed: int) -> dict:
    """The quality ``data`` section with the top-level ``seed`` in the synthetic benchmark's
    options unless they set their own. Seed 0 is the generator's default and is not written,
    so configs from before this rule keep their trial ids and cached data."""
    synth = data.get("synth") or {}
    if not seed or data.get("kind", "synth") != "synth" or "seed" in synth:
        return data
    return {**data, "synth": {**synth, "seed": seed}}


def _get(loc: Located, where: tuple) -> Any:
    node = loc.data
    for k in where:
        node = node[k]
    return node


def _section(loc: Located, name: str, allowed: dict) -> dict | None:
    sec = loc.data.get(name)
    if sec is None:
        return None
    if not isinstance(sec, dict):
        raise ConfigError(f"{loc.where(name)}: '{name}' must be a mapping")
    _check_keys(loc, (name,), sec, allowed, f"'{name}' section", ConfigError)
    return sec


def _cost_base(loc: Located, at: tuple, run: dict, merged: dict) -> dict:
    """The settings of cost run ``run`` (at ``at``) with the section's defaults ``merged``
    in, every number checked (its line: the run's key, else the section's)."""

    def where(key: str) -> tuple:
        return at + (key,) if key in run else ("cost", key)

    sizes = merged.get("batch_sizes", [1])
    if not isinstance(sizes, list) or not sizes:
        raise ConfigError(f"{loc.where(*where('batch_sizes'))}: batch_sizes must be a non-empty "
                          f"list of positive integers, e.g. [1, 4]; got {sizes!r}")
    return {
        "backbone": run["backbone"],
        "weights": merged.get("weights", "random"),
        "frames": _number(loc, where("frames"), merged.get("frames", 12), POSITIVE_INT),
        "batch_sizes": [_number(loc, where("batch_sizes"), b, POSITIVE_INT) for b in sizes],
        "repeats": _number(loc, where("repeats"), merged.get("repeats", 3), POSITIVE_INT),
        "warmup": _number(loc, where("warmup"), merged.get("warmup", 1), NONNEG_INT),
        "memory": _flag(loc, where("memory"), merged.get("memory", True)),
        "fvcore": _flag(loc, where("fvcore"), merged.get("fvcore", True)),
        # only when set, so existing trial ids do not change
        **({"clock": _clock(loc, where("clock"), merged["clock"])} if "clock" in merged else {}),
    }


def _clock(loc: Located, where: tuple, value: Any) -> str:
    """``value`` as one of :data:`tokred.cost.measure.CLOCKS`, or a :class:`ConfigError`."""
    from tokred.cost.measure import CLOCKS

    if not isinstance(value, str) or value not in CLOCKS:
        raise ConfigError(f"{loc.where(*where)}: clock must be one of {sorted(CLOCKS)} (wall: "
                          f"elapsed time; cpu: process CPU time, for 1-thread runs on a shared "
                          f"machine), got {value!r}")
    return value


def cost_trials(loc: Located) -> list[Trial]:
    sec = _section(loc, "cost", COST_KEYS)
    if sec is None:
        return []
    defaults = {k: v for k, v in sec.items() if k != "runs"}
    trials = []
    for i, run in enumerate(sec.get("runs") or []):
        at = ("cost", "runs", i)
        _check_keys(loc, at, run, RUN_KEYS, "cost run", ConfigError)
        if "backbone" not in run:
            raise ConfigError(f"{loc.where(*at)}: a cost run needs 'backbone' (e.g. ViT-B-32)")
        merged = {**{k: v for k, v in defaults.items() if k in RUN_KEYS}, **run}
        base = _cost_base(loc, at, run, merged)
        where = at + ("reducers",) if "reducers" in run else ("cost", "reducers")
        for name, options, line in reducer_points(loc, where):
            check_reducer(name, options, base["backbone"], base["frames"], line, ConfigError)
            trials.append(make_trial("cost", {**base, "reducer": name, "options": options}))
    return trials


MODES = ("training_free", "finetuned")


def _modes(loc: Located, where: tuple, modes: list, line: str | None = None) -> list[str]:
    bad = [m for m in modes if m not in MODES] if isinstance(modes, list) else [modes]
    if bad or not modes:
        raise ConfigError(f"{line or loc.where(*where)}: modes must be a non-empty list of "
                          f"{' / '.join(MODES)}, got {modes!r}")
    return modes


def quality_trials(loc: Located, preflight: bool = True) -> tuple[list[Trial], set[str]]:
    """The quality trials, and the ids of the fine-tunes whose checkpoints are kept."""
    sec = _section(loc, "quality", QUALITY_KEYS)
    if sec is None:
        return [], set()
    data = sec.get("data") or {}
    _check_quality_keys(loc, sec)
    keep_all = _flag(loc, ("quality", "keep_checkpoints"), sec.get("keep_checkpoints", False))
    check_data_paths(loc, sec, ConfigError, files=preflight)
    modes = _modes(loc, ("quality", "modes"), sec.get("modes", list(MODES)))
    model = sec.get("model", DEFAULT_MODEL)
    frames = _number(loc, ("quality", "frames"), sec.get("frames", 12), POSITIVE_INT)
    if not sec.get("weights"):
        check_recipe(sec.get("base") or {}, "none", {}, model, frames,
                     loc.where("quality", "base") if "base" in sec else loc.where("quality"),
                     ConfigError)
        if preflight:
            check_precision(sec.get("base") or {}, _recipe_line(loc, ("quality", "base"), ()),
                            ConfigError)
    seed = seed_of(loc)
    common = {
        "model": model, "weights": sec.get("weights"), "frames": frames,
        "data": _seeded_data(data, seed), "base": sec.get("base") or {},
        "split": sec.get("split", "test"), "seed": seed,
    }
    trials, keep = [], set()
    for name, options, line, entry in reducer_entries(loc, ("quality", "reducers")):
        check_reducer(name, options, model, frames, line, ConfigError)
        own = entry.get("finetune") or {}
        _check_keys(loc, (), own, RECIPE_KEYS, f"finetune of entry at {line}", ConfigError)
        recipe = {**(sec.get("finetune") or {}), **own}
        kept = _keep(loc, sec, entry, keep_all)
        recipe.pop("keep_checkpoints", None)  # not a setting: it changes no result, nor ids
        for mode in _modes(loc, (), entry["modes"], line) if "modes" in entry else modes:
            if mode == "finetuned":
                check_recipe(recipe, name, options, model, frames, line, ConfigError)
                if preflight:
                    check_precision(recipe, _recipe_line(loc, ("quality", "finetune"),
                                                         _entry_at(sec, entry), own), ConfigError)
            extra = {"finetune": recipe} if mode == "finetuned" else {}
            trials.append(make_trial("quality", {**common, **extra, "mode": mode,
                                                 "reducer": name, "options": options}))
            if mode == "finetuned" and kept:
                keep.add(trials[-1].id)
    if preflight:  # this machine and these files: the datasets are opened before any trial
        trains = not sec.get("weights") or any(t.settings["mode"] == "finetuned" for t in trials)
        check_data_files(loc, sec, [common["split"]] + (["train"] if trains else []),
                         ConfigError)
    return trials, keep


def _check_quality_keys(loc: Located, sec: dict) -> None:
    """The keys of ``quality.data`` (and its ``synth`` options) and of the section's recipes."""
    data = sec.get("data") or {}
    _check_keys(loc, ("quality", "data"), data, DATA_KEYS, "'quality.data'", ConfigError)
    _check_keys(loc, ("quality", "data", "synth"), data.get("synth") or {}, SYNTH_KEYS,
                "'quality.data.synth'", ConfigError)
    for part in ("base", "finetune"):
        if part in sec:
            _check_keys(loc, ("quality", part), sec[part] or {}, RECIPE_KEYS,
                        f"'quality.{part}' recipe", ConfigError)
    if "keep_checkpoints" in (sec.get("base") or {}):
        raise ConfigError(f"{loc.where('quality', 'base', 'keep_checkpoints')}: the base "
                          f"model's checkpoint is always kept (it is the cache every trial "
                          f"starts from); remove keep_checkpoints from quality.base")


def _keep(loc: Located, sec: dict, entry: dict, default: bool) -> bool:
    """``keep_checkpoints`` of an entry's fine-tune: its own ``finetune``'s, else
    ``quality.finetune``'s, else ``default`` (``quality.keep_checkpoints``)."""
    own = (_entry_at(sec, entry), entry.get("finetune") or {})
    for at, recipe in (own, (("quality", "finetune"), sec.get("finetune") or {})):
        if at and "keep_checkpoints" in recipe:
            return _flag(loc, at + ("keep_checkpoints",), recipe["keep_checkpoints"])
    return default


def _flag(loc: Located, where: tuple, value: Any) -> bool:
    """``value`` as a true/false setting, or a :class:`ConfigError` naming its line."""
    if not isinstance(value, bool):
        raise ConfigError(f"{loc.where(*where)}: {where[-1]} must be true or false, got "
                          f"{value!r}")
    return value


def _entry_at(sec: dict, entry: dict) -> tuple:
    """Config path of a reducer entry of the quality section (found by identity)."""
    i = next((i for i, e in enumerate(sec["reducers"]) if e is entry), None)
    return () if i is None else ("quality", "reducers", i, "finetune")


def _recipe_line(loc: Located, section: tuple, entry: tuple, own: dict | None = None) -> str:
    """file:line of the ``precision`` / ``device`` a recipe takes (the entry's own or the
    section's), else of the recipe itself."""
    if entry and own and ("precision" in own or "device" in own):
        return loc.where(*entry, "precision" if "precision" in own else "device")
    return loc.where(*section, "precision")


def provenance_trials(loc: Located, cost_only: bool) -> list[Trial]:
    """The provenance trials. ``weights: base`` runs the quality section's base model (the one
    its trials use, trained at the quality section's frames); the pictures keep the provenance
    section's own frames, and its model must be the quality section's."""
    sec = _section(loc, "provenance", PROVENANCE_KEYS)
    if sec is None or (cost_only and sec.get("weights") == "base"):
        return []
    model = sec.get("model", DEFAULT_MODEL)
    frames = _number(loc, ("provenance", "frames"), sec.get("frames", 12), POSITIVE_INT)
    weights = sec.get("weights", "random")
    if weights not in ("random", "base"):
        raise ConfigError(f"{loc.where('provenance', 'weights')}: weights must be 'random' or "
                          f"'base' (the quality section's trained base model), got {weights!r}")
    base_of = _quality_base(loc, sec, model) if weights == "base" else None
    trials = []
    for name, options, line in reducer_points(loc, ("provenance", "reducers")):
        check_reducer(name, options, model, frames, line, ConfigError)
        settings = {"model": model, "frames": frames, "weights": weights,
                    "reducer": name, "options": options}
        if base_of is not None:
            settings["base_of"] = base_of
        trials.append(make_trial("provenance", settings))
    return trials


def _quality_base(loc: Located, sec: dict, model: str) -> dict:
    """The cache key of the quality section's base model (:func:`.quality.base_key`, as its
    trials build it), for provenance ``weights: base`` on ``model``."""
    from .quality import base_key

    if "quality" not in loc.data:
        raise ConfigError(f"{loc.where('provenance', 'weights')}: weights: base needs a quality "
                          f"section (its base model); use weights: random")
    q = loc.data["quality"]
    q_model = q.get("model", DEFAULT_MODEL)
    if model != q_model:
        at = ("provenance", "model") if "model" in sec else ("provenance", "weights")
        raise ConfigError(f"{loc.where(*at)}: weights: base runs the quality section's base "
                          f"model, a {q_model}, but the provenance model is {model}; set "
                          f"provenance.model: {q_model}, or use weights: random for a "
                          f"{model} with random weights")
    seed = seed_of(loc)
    return base_key({"model": q_model, "weights": q.get("weights"),
                     "frames": _number(loc, ("quality", "frames"), q.get("frames", 12),
                                       POSITIVE_INT),
                     "data": _seeded_data(q.get("data") or {}, seed),
                     "base": q.get("base") or {}, "seed": seed})
