"""The model a training run starts from: built for its weights (activation included), initialised
from ``init``, with the recipe's trainable parameters."""

from __future__ import annotations

import os

from tokred.retrieval import RetrievalModel, build_model
from tokred.training.config import TrainConfig
from tokred.training.optim import configure_trainable


def build_for_training(
    cfg: TrainConfig, device: str, activation: str | None = None, *, resuming: bool = False
) -> RetrievalModel:
    """Model for ``cfg``: built, initialised from ``cfg.init``, trainable set per ``cfg.mode``.

    ``activation`` (``quick_gelu``/``gelu``) overrides the config's (a resumed run keeps the one
    its ``last.pt`` was trained with); by default :func:`training_activation` decides.
    ``resuming``: ``last.pt`` replaces every weight, so ``pretrained`` and ``init`` are not read
    (they may have moved since the run started).
    """
    activation = activation or training_activation(cfg)
    pretrained = None if resuming else cfg.pretrained
    # a trusted legacy pickle is read here, unrestricted; the factory reads files safely only
    trusted = cfg.trust_pickle and pretrained is not None and os.path.isfile(pretrained)
    model = build_model(
        cfg.model, cfg.reducer, cfg.reducer_options, cfg.frames,
        None if trusted else pretrained, cfg.max_words, quick_gelu=activation == "quick_gelu",
    )
    if trusted:
        from tokred.backbones.weights import load_clip_weights

        load_clip_weights(model.clip, pretrained, trust_pickle=True)
    if cfg.init and not resuming:
        load_init(model, cfg.init, cfg.reducer, cfg.trust_pickle)
    if cfg.train_frames not in (None, cfg.frames) and any(True for _ in model.reducer.parameters()):
        raise ValueError(
            f"reducer {cfg.reducer!r} has parameters shaped for frames={cfg.frames}; "
            f"train it with train_frames={cfg.frames} (got {cfg.train_frames})"
        )
    if cfg.patch_dropout:
        from open_clip.transformer import PatchDropout

        model.clip.visual.patch_dropout = PatchDropout(cfg.patch_dropout)  # no parameters
    configure_trainable(model, cfg.mode, cfg.lora_rank, cfg.freeze_logit_scale)
    return model.to(device)


def training_activation(cfg: TrainConfig) -> str:
    """``quick_gelu`` or ``gelu`` for the run's model: ``cfg.quick_gelu`` if set, else what
    :func:`tokred.models.activation_for` says for ``cfg.model``, ``cfg.pretrained`` and
    ``cfg.init`` (an OpenAI / CLIP4Clip file means QuickGELU, a tokred checkpoint its meta's)."""
    from tokred.backbones.weights import activation_for

    return activation_for(cfg.model, cfg.pretrained, cfg.init, quick_gelu=cfg.quick_gelu,
                          trust_pickle=cfg.trust_pickle)


def load_init(model: RetrievalModel, path: str, reducer: str, trust_pickle: bool = False) -> None:
    """CLIP weights from ``path`` (any layout ``load_clip_weights`` reads) + matching reducer
    state. ``trust_pickle``: see :func:`tokred.backbones.weights.read_checkpoint`."""
    from tokred.backbones.weights import (
        extract_clip_state_dict,
        load_clip_state_dict,
        read_checkpoint,
    )

    obj = read_checkpoint(path, trust_pickle=trust_pickle)
    if not (isinstance(obj, dict) and "meta" in obj):  # not a tokred model.pt
        load_clip_state_dict(model.clip, extract_clip_state_dict(obj, path), path)
        return
    model.clip.load_state_dict(obj["model"])
    if obj.get("reducer") and obj["meta"].get("reducer") == reducer:
        model.reducer.load_state_dict(obj["reducer"])
