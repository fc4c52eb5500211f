"""Mixed precision: the one autocast helper every training, evaluation and cost path uses."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a device or its type, e.g. "cpu").

    ``fp32`` is a no-op context; ``bf16`` autocasts to bfloat16 (CPU or CUDA); ``fp16``
    autocasts to float16 and needs CUDA (training pairs it with a GradScaler).

    Raises:
        ValueError: unknown precision, or fp16 on a device other than CUDA (use bf16 there).
    """
    dev = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError(f"fp16 autocast needs a CUDA device (and a GradScaler in training), got "
                         f"{dev}; on a CPU use precision bf16 or fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=dev.type, dtype=dtype)
