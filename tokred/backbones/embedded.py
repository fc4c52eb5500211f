"""Embedded CLIP architectures: small enough to train from scratch on a CPU."""

from __future__ import annotations

# Small CLIPs with the depth (12 blocks) and 7x7 patch grid of ViT-B/32, so every paper schedule
# (ToMe r=2, CenterCLIP B6-4,49, TempMe 8-9-10 / 2-2-3) applies unchanged; narrow enough to train
# from scratch on a CPU. Not OpenAI weights: results on them are labelled "scale model".
EMBEDDED_MODELS: dict[str, dict] = {
    "scale-B32": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 56, "patch_size": 8, "width": 128, "layers": 12, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
    },
}
