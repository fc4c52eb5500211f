"""Text-video retrieval on top of the video encoder: the model (CLIP text tower + reducing
video encoder), its loss, the metrics and the evaluation of a split."""

from tokred.retrieval.loss import contrastive_loss, similarity
from tokred.retrieval.model import (
    CaptionTokenizer,
    RetrievalModel,
    TextEncoder,
    build_model,
    truncate_tokens,
)

__all__ = [
    "CaptionTokenizer",
    "RetrievalModel",
    "TextEncoder",
    "build_model",
    "contrastive_loss",
    "similarity",
    "truncate_tokens",
]
