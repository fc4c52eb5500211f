"""Text-video retrieval model: CLIP text tower + the token-reducing video encoder, InfoNCE.

The text side follows CLIP4Clip: captions of at most ``max_words`` tokens (32, including SOT
and EOT) on a 77-position CLIP; the positional embedding is sliced ``[:max_words]`` and the
causal mask ``[:max_words, :max_words]``; the feature is read at the EOT (argmax) position.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokred.backbones import OpenCLIPVisual
from tokred.encoder import VideoEncoder
from tokred.reducer import TokenReducer

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
    from tokred.models import create_clip
    from tokred.registry import create_reducer

    if isinstance(reducer, str):
        reducer = create_reducer(reducer, **(reducer_options or {}))
    clip = create_clip(model_name, pretrained, quick_gelu=quick_gelu, **clip_kw)
    return RetrievalModel(clip, reducer, frames, max_words, name=model_name)


