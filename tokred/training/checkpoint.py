"""Checkpoints: atomic writes, RNG state, the model's meta (its identity), resume facts."""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from tokred.retrieval import RetrievalModel
from tokred.training.config import RESUME_FREE, TrainConfig

log = logging.getLogger(__name__)


def save_checkpoint(state: dict, path: Path) -> Path:
    """Write atomically: a temporary file in the same directory, fsynced, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, trust_pickle: bool = False) -> dict:
    """A tokred checkpoint (``last.pt`` / ``model.pt``), loaded with ``weights_only=True``.

    tokred stores only tensors and plain Python values (see :func:`rng_state`), so its own
    files never need ``trust_pickle``; files from older versions (numpy RNG state) do.
    """
    from tokred.backbones.weights import read_checkpoint

    return read_checkpoint(path, trust_pickle=trust_pickle)


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states as tensors and plain values, so that a
    checkpoint holding them loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),  # (version, tuple of ints, None): plain values
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Inverse of :func:`rng_state` (also reads the numpy tuple older checkpoints stored)."""
    random.setstate(tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def last_state(cfg: TrainConfig, out: Path) -> dict | None:
    """``last.pt`` of the run in ``out`` when resuming (None: not resuming, or none yet).

    Raises:
        ValueError: ``last.pt`` was written with other settings (:func:`check_resume`).
    """
    last = out / "last.pt"
    if not cfg.resume:
        return None
    if not last.is_file():
        log.warning("--resume: no %s yet; starting from step 0", last)
        return None
    ck = load_checkpoint(last, cfg.trust_pickle)
    check_resume(cfg, ck.get("config") or {}, last)
    return ck


def check_resume(cfg: TrainConfig, saved: dict, last: Path) -> None:
    """Refuse to resume ``last`` with settings other than those it was trained with.

    Fields in :data:`~tokred.training.config.RESUME_FREE` (threads, device, time limit, ...)
    may change; paths compare by the file they name. A ``saved`` config without a field
    (an older tokred) counts as its default.

    Raises:
        ValueError: naming every differing field with both values.
    """
    want, defaults = asdict(cfg), asdict(TrainConfig())
    diff = [f"{k}={_norm(k, saved.get(k, defaults[k]))!r} -> {_norm(k, v)!r}"
            for k, v in want.items()
            if k not in RESUME_FREE and _norm(k, saved.get(k, defaults[k])) != _norm(k, v)]
    if diff:
        raise ValueError(
            f"--resume: {last} was trained with other settings ({'; '.join(diff)}). Resume "
            f"with the settings it was written with, or start a fresh run: another --out, or "
            f"drop --resume to overwrite it"
        )


PATH_FIELDS = ("root", "video_root", "init", "pretrained", "bad_videos")


def _norm(key: str, value):
    """A config value as compared on resume: lists as tuples, paths resolved."""
    if isinstance(value, list):
        return tuple(value)
    if key in PATH_FIELDS and isinstance(value, str) and os.path.exists(value):
        return os.path.realpath(value)
    return value


def open_train_log(path: Path, step: int):
    """``train_log.jsonl`` for appending from ``step`` on: a fresh run starts an empty log, a
    resumed one keeps the lines up to the step it resumes at (a killed run may have logged
    steps after its last save, which are trained again now)."""
    kept = []
    if step and path.is_file():
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)
    return path.open("a", buffering=1)


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
    from tokred.training.build import training_activation

    try:  # what this config alone would build; its init/pretrained files may have moved since
        expected = training_activation(cfg)
    except (OSError, ValueError):
        expected = act
    if act != expected:
        log.warning("resuming with %s, the activation %s was trained with", act, out / "last.pt")
    return act


def checkpoint_meta(cfg: TrainConfig, model: RetrievalModel) -> dict:
    """What rebuilding the model needs (``activation`` is read off the built network), and the
    ``provenance`` of the run that trained it (:func:`tokred.plugins.run_provenance`)."""
    from tokred.backbones.weights import activation_of
    from tokred.plugins import run_provenance

    return {
        "model": cfg.model,
        "activation": activation_of(model.clip),
        "reducer": cfg.reducer,
        "reducer_options": cfg.reducer_options,
        "frames": cfg.frames,
        "max_words": cfg.max_words,
        "mode": cfg.mode,
        "lora_rank": cfg.lora_rank if cfg.mode == "lora" else None,
        "provenance": run_provenance(next(model.parameters()).device, seed=cfg.seed),
    }


def save_final(model: RetrievalModel, cfg: TrainConfig, out: Path, stats: dict) -> Path:
    """``model.pt``: plain CLIP weights (LoRA folded into a copy) + reducer state + meta.

    The meta's ``provenance`` is also put in ``stats`` (what :func:`tokred.training.train`
    returns), so the run's statistics name what produced them wherever they are kept.
    """
    state = model.model_state()
    if cfg.mode == "lora":
        import copy

        from tokred.training.lora import fold_lora

        clip = copy.deepcopy(model.clip)
        fold_lora(clip)
        state["model"] = clip.state_dict()
    meta = dict(checkpoint_meta(cfg, model), lora_rank=None, steps=stats["steps"])
    stats["provenance"] = meta["provenance"]
    return save_checkpoint({**state, "meta": meta}, out / "model.pt")
