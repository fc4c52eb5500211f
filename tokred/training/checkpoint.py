"""Checkpoints: atomic writes, RNG state, the model's meta (its identity), resume facts."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from tokred.retrieval import (
    RetrievalModel,
)
from tokred.training.build import training_activation
from tokred.training.config import TrainConfig

log = logging.getLogger(__name__)


def save_checkpoint(state: dict, path: Path) -> Path:
    """Write atomically: a temporary file in the same directory, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def last_state(cfg: TrainConfig, out: Path) -> dict | None:
    """``last.pt`` of the run in ``out`` when resuming (None: not resuming, or none yet)."""
    last = out / "last.pt"
    if not cfg.resume:
        return None
    if not last.is_file():
        log.warning("--resume: no %s yet; starting from step 0", last)
        return None
    return load_checkpoint(last)


def resume_activation(cfg: TrainConfig, ck: dict | None, out: Path) -> str | None:
    """The activation ``last.pt`` was trained with (None: not resuming).

    Raises:
        ValueError: ``cfg.quick_gelu`` asks for the other one.
    """
    if ck is None:
        return None
    from tokred.backbones.weights import meta_activation

    meta = dict(ck.get("meta") or {})
    meta.setdefault("pretrained", (ck.get("config") or {}).get("pretrained"))
    act = meta_activation(meta, str(out / "last.pt"))
    if cfg.quick_gelu is not None and (act == "quick_gelu") != cfg.quick_gelu:
        raise ValueError(f"{out / 'last.pt'} was trained with {act}; resume it without "
                         f"quick_gelu={cfg.quick_gelu} or start a new run directory")
    if act != training_activation(cfg):
        log.warning("resuming with %s, the activation %s was trained with", act, out / "last.pt")
    return act


def checkpoint_meta(cfg: TrainConfig, model: RetrievalModel) -> dict:
    """What rebuilding the model needs; ``activation`` is read off the built network."""
    from tokred.backbones.weights import activation_of

    return {
        "model": cfg.model,
        "activation": activation_of(model.clip),
        "reducer": cfg.reducer,
        "reducer_options": cfg.reducer_options,
        "frames": cfg.frames,
        "max_words": cfg.max_words,
        "mode": cfg.mode,
        "lora_rank": cfg.lora_rank if cfg.mode == "lora" else None,
    }


def save_final(model: RetrievalModel, cfg: TrainConfig, out: Path, stats: dict) -> Path:
    """``model.pt``: plain CLIP weights (LoRA folded into a copy) + reducer state + meta."""
    state = model.model_state()
    if cfg.mode == "lora":
        import copy

        from tokred.training.lora import fold_lora

        clip = copy.deepcopy(model.clip)
        fold_lora(clip)
        state["model"] = clip.state_dict()
    meta = dict(checkpoint_meta(cfg, model), lora_rank=None, steps=stats["steps"])
    return save_checkpoint({**state, "meta": meta}, out / "model.pt")
