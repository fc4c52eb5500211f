"""``tokred list``: every reducer with its options, presets and the package (or plugin file) it
comes from."""

from __future__ import annotations

import argparse
import json
from importlib import metadata

from tokred.cli.args import HelpFormatter, add_plugin_flag


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tokred list", formatter_class=HelpFormatter,
                                 description="list the available reducers: options with "
                                 "defaults, presets (the papers' settings)\nand the package or "
                                 "plugin file that provides each")
    ap.add_argument("--format", choices=("text", "json"), default="text",
                    help="text for people, or one JSON document for tools")
    # the spelling before --format; kept for one release
    ap.add_argument("--json", action="store_const", const="json", dest="format",
                    help=argparse.SUPPRESS)
    add_plugin_flag(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    """``tokred list``: print every registered reducer (plugins from ``--plugin`` included)."""
    from tokred.plugins import load_plugin_files
    from tokred.registry import list_reducers

    args = parser().parse_args(argv)
    load_plugin_files(args.plugin)
    rows = [describe(name) for name in list_reducers()]
    if args.format == "json":
        print(json.dumps(rows, indent=1, default=str))
        return 0
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<12} <cannot load: {r['error']}>")
            continue
        opts = ", ".join(f"{k}={v!r}" for k, v in r["options"].items())
        print(f"{r['name']:<12} {opts}  [{r['source']}]")
        for tag, values in r["presets"].items():
            print(f"{'':<14}.{tag}: {', '.join(f'{k}={v!r}' for k, v in values.items())}")
    return 0


def describe(name: str) -> dict:
    """One reducer as plain data; a broken plugin is reported, it does not hide the others."""
    from tokred.registry import get_reducer_class, reducer_options

    try:
        cls = get_reducer_class(name)
        return {"name": name, "options": reducer_options(name), "presets": dict(cls.presets),
                "paper": {k: list(v) for k, v in cls.paper.items()},
                "source": source(cls)}
    except Exception as err:  # a broken plugin: report it, list the rest
        return {"name": name, "error": f"{type(err).__name__}: {err}"}


def source(cls: type) -> str:
    """``distribution version (module)`` of the class, e.g. ``tokred 0.1.0 (tokred_methods.tome)``,
    or ``plugin file /path/x.py`` for a reducer loaded with ``--plugin``."""
    from tokred.plugins import plugin_file_of

    path = plugin_file_of(cls.__module__)
    if path is not None:
        return f"plugin file {path}"
    from tokred.registry import distribution_of

    dist = distribution_of(cls) or cls.__module__.split(".")[0]
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        version = "?"
    return f"{dist} {version} ({cls.__module__})"
