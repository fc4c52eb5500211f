"""Training a retrieval model: configuration, the loop (full / LoRA / scratch, AMP, DDP via
torchrun, resumable), the clip cache, checkpoints, optimiser and schedule, precision, LoRA and
the distributed helpers.

``TrainConfig`` and ``train`` are re-exported lazily, so that importing a submodule (e.g.
:mod:`tokred.training.distributed`, which the retrieval loss uses) does not import the loop.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {"RECIPES": "config", "TrainConfig": "config", "train": "loop"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"tokred.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'tokred.training' has no attribute {name!r}")
