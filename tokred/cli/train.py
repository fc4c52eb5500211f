"""``tokred train``: fine-tune (or train from scratch) a retrieval model; one flag per
:class:`~tokred.training.config.TrainConfig` field."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from tokred.cli.args import existing_file, json_object, output_dir
from tokred.training import distributed as D
from tokred.training.config import RULES, TrainConfig
from tokred.training.loop import train

PATHS = {"out": output_dir, "init": existing_file, "bad_videos": existing_file}


def config_from_args(argv: list[str] | None) -> TrainConfig:
    """Parse ``tokred train`` flags into a :class:`TrainConfig` (one flag per field).

    Numbers are checked by the field's rule (:data:`~tokred.training.config.RULES`) and paths
    by :data:`PATHS` as they are parsed, so a bad value stops before anything is built.
    """
    ap = argparse.ArgumentParser(prog="tokred train", description=__doc__.splitlines()[0])
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = TrainConfig.__dataclass_fields__[f.name].default
        helptext = f"default: {default!r}" if default is not None else None
        if f.type in ("bool", "bool | None"):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif f.name == "reducer_options":
            ap.add_argument(flag, type=json_object, default=None, help="JSON, e.g. '{\"r\": 2}'")
        elif f.name == "betas":
            ap.add_argument(flag, type=json.loads, default=None, help="JSON, e.g. '[0.9, 0.98]'")
        else:
            typ = RULES.get(f.name) or PATHS.get(f.name) or str
            ap.add_argument(flag, type=typ, default=None, help=helptext)
    ns = {k: v for k, v in vars(ap.parse_args(argv)).items() if v is not None}
    ns.update({k: str(ns[k]) for k in PATHS if k in ns})
    return TrainConfig(**ns)


def main(argv: list[str] | None = None) -> int:
    """``tokred train``: fine-tune (or train from scratch) and write ``OUT/model.pt``."""
    cfg = config_from_args(argv)
    try:
        stats = train(cfg)
    finally:
        D.cleanup()
    if D.current().is_main and stats.get("checkpoint"):
        skipped = stats.get("skipped_videos")
        print(
            f"trained {stats['steps']} steps in {stats['wall_s']:.0f}s, loss {stats['loss']:.4f}"
            f"; checkpoint {stats['checkpoint']}"
            + (f"; {skipped} bad videos skipped" if skipped else "")
        )
    return 0
