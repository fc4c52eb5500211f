"""``tokred train``: fine-tune (or train from scratch) a retrieval model; one flag per
:class:`~tokred.training.config.TrainConfig` field."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from tokred.training import distributed as D
from tokred.training.config import TrainConfig
from tokred.training.loop import train


def config_from_args(argv: list[str] | None) -> TrainConfig:
    """Parse ``tokred train`` flags into a :class:`TrainConfig` (one flag per field)."""
    ap = argparse.ArgumentParser(prog="tokred train", description=__doc__.splitlines()[0])
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = TrainConfig.__dataclass_fields__[f.name]
        if f.type in ("bool", "bool | None"):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif f.name in ("reducer_options", "betas"):
            ap.add_argument(flag, type=json.loads, default=None, help="JSON, e.g. '{\"r\": 2}'")
        else:
            typ = {"int": int, "float": float}.get(f.type.split(" |")[0], str)
            ap.add_argument(
                flag,
                type=typ,
                default=None,
                help=f"default: {default.default!r}" if default.default is not None else None,
            )
    ns = {k: v for k, v in vars(ap.parse_args(argv)).items() if v is not None}
    return TrainConfig(**ns)


def main(argv: list[str] | None = None) -> int:
    """``tokred train``: fine-tune (or train from scratch) and write ``OUT/model.pt``."""
    cfg = config_from_args(argv)
    try:
        stats = train(cfg)
    finally:
        D.cleanup()
    if D.current().is_main and stats.get("checkpoint"):
        print(
            f"trained {stats['steps']} steps in {stats['wall_s']:.0f}s, loss {stats['loss']:.4f}"
            f"; checkpoint {stats['checkpoint']}"
        )
    return 0
