"""Text-video retrieval model: CLIP text tower + the token-reducing video encoder, InfoNCE.

The text side follows CLIP4Clip: captions of at most ``max_words`` tokens (32, including SOT
and EOT) on a 77-position CLIP; the positional embedding is sliced ``[:max_words]`` and the
causal mask ``[:max_words, :max_words]``; the feature is read at the EOT (argmax) position.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import OpenCLIPVisual
from .distributed import gather_features, share_grad
from .encoder import VideoEncoder
from .reducer import TokenReducer

log = logging.getLogger(__name__)


class CaptionTokenizer:
    """open_clip's BPE tokenizer at context 77, truncated to ``max_words`` with EOT kept last.

    Results are memoised per caption string (training draws the same captions every epoch).
    """

    def __init__(self, max_words: int = 32, context_length: int = 77) -> None:
        if not 2 <= max_words <= context_length:
            raise ValueError(f"max_words must be in [2, {context_length}], got {max_words}")
        self.max_words, self.context_length = max_words, context_length
        self._cache: dict[str, Tensor] = {}

    def __call__(self, captions: Sequence[str]) -> Tensor:
        """``n`` captions -> int64 tokens ``[n, max_words]`` (EOT is each row's maximum)."""
        todo = [c for c in dict.fromkeys(captions) if c not in self._cache]
        if todo:
            for c, row in zip(
                todo, truncate_tokens(_tokenize(todo, self.context_length), self.max_words)
            ):
                self._cache[c] = row
        return (
            torch.stack([self._cache[c] for c in captions])
            if captions
            else torch.zeros(0, self.max_words, dtype=torch.long)
        )


def _tokenize(captions: list[str], context_length: int) -> Tensor:
    import open_clip

    return open_clip.tokenize(captions, context_length=context_length)


def truncate_tokens(tokens: Tensor, max_words: int) -> Tensor:
    """Cut ``[n, 77]`` tokens to ``[n, max_words]``; a cut row gets EOT as its last token.

    EOT is the largest token id (49407), so ``argmax`` finds it, as in CLIP.
    """
    eot = int(tokens.max()) if tokens.numel() else 0
    out = tokens[:, :max_words].clone()
    cut = tokens.argmax(dim=-1) >= max_words  # EOT fell outside the window
    out[cut, -1] = eot
    return out


class TextEncoder(nn.Module):
    """The text tower of an open_clip ``CLIP`` run at ``max_words`` positions (CLIP4Clip).

    Args:
        clip: an open_clip ``CLIP`` model (its text modules are used by reference).
        max_words: caption length including SOT and EOT.
    """

    def __init__(self, clip: nn.Module, max_words: int = 32) -> None:
        super().__init__()
        if getattr(clip, "text_pool_type", "argmax") != "argmax":
            raise ValueError(f"text tower pools with {clip.text_pool_type!r}; need 'argmax' (EOT)")
        if max_words > clip.positional_embedding.shape[0]:
            raise ValueError(
                f"max_words={max_words} exceeds the text context "
                f"{clip.positional_embedding.shape[0]}"
            )
        self.clip, self.max_words = clip, max_words

    def forward(self, tokens: Tensor) -> Tensor:
        """``[n, L]`` tokens (``L <= max_words``) -> L2-normalised text features ``[n, D]``."""
        c = self.clip
        n_ctx = tokens.shape[1]
        x = c.token_embedding(tokens)  # [n, L, C]
        x = x + c.positional_embedding[:n_ctx].to(x.dtype)
        mask = c.attn_mask[:n_ctx, :n_ctx] if c.attn_mask is not None else None
        x = c.ln_final(c.transformer(x, attn_mask=mask))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # [n, C] at EOT
        if isinstance(c.text_projection, nn.Linear):
            x = c.text_projection(x)
        elif c.text_projection is not None:
            x = x @ c.text_projection
        return F.normalize(x, dim=-1)


class RetrievalModel(nn.Module):
    """CLIP text tower + :class:`VideoEncoder` (with its reducer) + logit scale.

    ``forward(video, tokens)`` returns ``(text [n, D], video [B, D], logit_scale)`` with L2-
    normalised features; the loss is computed outside (see :func:`contrastive_loss`) so DDP can
    wrap this module.

    Attributes:
        clip: the open_clip model (its state dict is the checkpoint's ``model`` entry).
        video: the video encoder over ``clip.visual``.
        text: the text encoder over ``clip``'s text tower.
    """

    def __init__(
        self,
        clip: nn.Module,
        reducer: TokenReducer | None = None,
        frames: int = 12,
        max_words: int = 32,
        name: str = "clip",
    ) -> None:
        super().__init__()
        self.clip = clip
        self.video = VideoEncoder(OpenCLIPVisual(clip.visual, name=name), reducer, frames)
        self.text = TextEncoder(clip, max_words)
        self.tokenizer = CaptionTokenizer(max_words)

    @property
    def reducer(self) -> TokenReducer:
        return self.video.reducer

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.text(tokens)

    def encode_video(self, video: Tensor) -> Tensor:
        return self.video(video)

    def forward(self, video: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.text(tokens), self.video(video), self.clip.logit_scale.exp()

    def model_state(self) -> dict[str, dict[str, Tensor]]:
        """``{"model": clip state, "reducer": reducer state}`` (no duplicated shared weights)."""
        return {"model": self.clip.state_dict(), "reducer": self.reducer.state_dict()}

    def load_model_state(self, state: dict, strict: bool = True) -> None:
        """Inverse of :meth:`model_state`; a missing ``reducer`` entry keeps the reducer's init."""
        self.clip.load_state_dict(state["model"], strict=strict)
        if state.get("reducer"):
            self.reducer.load_state_dict(state["reducer"], strict=strict)


def build_model(
    model_name: str = "scale-B32",
    reducer: str | TokenReducer | None = "none",
    reducer_options: dict | None = None,
    frames: int = 12,
    pretrained: str | None = None,
    max_words: int = 32,
    quick_gelu: bool | None = None,
    **clip_kw,
) -> RetrievalModel:
    """A :class:`RetrievalModel` from a CLIP name and a registered reducer name + options.

    ``quick_gelu``: the MLP activation (None: :func:`tokred.models.activation_for` decides from
    the name and ``pretrained``); ``clip_kw`` go to :func:`tokred.models.create_clip`.
    """
    from .models import create_clip
    from .registry import create_reducer

    if isinstance(reducer, str):
        reducer = create_reducer(reducer, **(reducer_options or {}))
    clip = create_clip(model_name, pretrained, quick_gelu=quick_gelu, **clip_kw)
    return RetrievalModel(clip, reducer, frames, max_words, name=model_name)


def similarity(text: Tensor, video: Tensor, logit_scale: Tensor | float = 1.0) -> Tensor:
    """``logit_scale * cos``: ``[n, D] x [m, D]`` normalised features -> ``[n, m]``."""
    return logit_scale * text @ video.t()


def contrastive_loss(text: Tensor, video: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE over the global batch: mean of t2v and v2t cross-entropy.

    Features are gathered from every rank (:func:`gather_features`); the logit scale's gradient
    is shared (:func:`share_grad`). The returned value is the global-batch loss, identical on
    every rank; multiply it by the world size before ``backward`` under DDP (see
    :mod:`tokred.distributed`). ``text[i]`` matches ``video[i]``.
    """
    if text.shape[0] != video.shape[0]:
        raise ValueError(f"need one caption per video, got {text.shape[0]} and {video.shape[0]}")
    t, v = gather_features(text), gather_features(video)  # [world*b, D]
    logits = similarity(t.float(), v.float(), share_grad(logit_scale).float())  # [N, N]
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


# CLIP4Clip / CenterCLIP keep the input embeddings frozen during full fine-tuning.
FROZEN_EMBEDDINGS = (
    "visual.conv1.",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.ln_pre.",
    "token_embedding.",
    "positional_embedding",
)


def configure_trainable(
    model: RetrievalModel, mode: str, lora_rank: int = 8, freeze_logit_scale: bool = False
) -> int:
    """Set ``requires_grad`` per training recipe; returns the number of trainable parameters.

    Args:
        model: the retrieval model (LoRA, if any, is added to ``model.clip`` in place).
        mode: ``full`` (all but :data:`FROZEN_EMBEDDINGS`), ``lora`` (LoRA on qkv of both
            towers + the reducer's parameters), ``scratch`` (everything).
        lora_rank: LoRA rank for ``mode="lora"``.
        freeze_logit_scale: keep the temperature fixed (TempMe's recipe).
    """
    if mode == "lora":
        from .lora import apply_lora, mark_only_trainable

        apply_lora(model.clip, rank=lora_rank)
        mark_only_trainable(model.clip, extra=model.reducer.parameters())
    else:
        for name, p in model.clip.named_parameters():
            p.requires_grad_(mode == "scratch" or not name.startswith(FROZEN_EMBEDDINGS))
        for p in model.reducer.parameters():
            p.requires_grad_(True)
    model.clip.logit_scale.requires_grad_(not freeze_logit_scale and mode != "lora")
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("%s: %d trainable parameters", mode, n)
    return n


def make_optimizer(
    model: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no decay on gains, biases, embeddings of rank < 2 and
    the logit scale (open_clip's grouping)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if plain else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("no trainable parameters: check the training mode / LoRA set-up")
    groups = [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-6)


class WarmupCosine:
    """LR factor: linear warm-up over steps, then cosine to zero over steps or a time budget.

    Warm-up always counts steps (``warmup * total_steps`` of them: stability needs steps, not
    seconds). The cosine's progress is ``step / total_steps``, or, with ``budget_s``, the
    larger of that and the elapsed fraction of the budget, so a slow (or shared) machine still
    anneals fully by the deadline. Step-based progress is deterministic; time-based progress is
    not (a resumed run continues the clock from the checkpoint's ``elapsed``).
    """

    def __init__(self, total_steps: int, warmup: float, budget_s: float | None = None) -> None:
        self.total, self.budget_s = total_steps, budget_s
        self.warm = max(1, int(round(warmup * total_steps))) if warmup > 0 else 0
        self.elapsed, self._t0 = 0.0, None

    def clock(self) -> float:
        """Seconds of training so far (starts on the first call, continues after a resume)."""
        if self._t0 is None:
            self._t0 = time.perf_counter() - self.elapsed
        return time.perf_counter() - self._t0

    def pause(self) -> None:
        """Fold the running clock into ``elapsed`` (call before ``state_dict``)."""
        if self._t0 is not None:
            self.elapsed, self._t0 = self.clock(), None

    def set_elapsed(self, seconds: float) -> None:
        self.elapsed, self._t0 = seconds, None

    def time_fraction(self) -> float:
        return self.clock() / self.budget_s if self.budget_s else 0.0

    def __call__(self, step: int) -> float:
        ramp = (step + 1) / self.warm if step < self.warm else 1.0
        w = self.warm / self.total
        progress = max(step / self.total, self.time_fraction())
        return min(ramp, _cosine((progress - w) / (1 - w)) if progress > w else 1.0)


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(
    optimizer, total_steps: int, warmup: float, budget_s: float | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LR schedule :class:`WarmupCosine` (``warmup`` is a fraction of the steps)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup, budget_s))
