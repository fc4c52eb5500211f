"""Shared fixtures: random-weight backbones built once per session (no network)."""

from __future__ import annotations

import pytest
import torch

from tokred.backbones import OpenCLIPVisual
from tokred.models import create_clip


def _model(name: str):
    torch.manual_seed(0)
    return create_clip(name).eval()


@pytest.fixture(scope="session")
def clip_b32():
    """Random-init open_clip ViT-B-32 CLIP."""
    return _model("ViT-B-32")


@pytest.fixture(scope="session")
def clip_b16():
    return _model("ViT-B-16")


@pytest.fixture(scope="session")
def clip_scale():
    """The embedded ViT-B/32 scale model (12 blocks, 7x7 grid, 56 px)."""
    return _model("scale-B32")


@pytest.fixture(scope="session")
def b32(clip_b32):
    return OpenCLIPVisual(clip_b32.visual, "ViT-B-32")


@pytest.fixture(scope="session")
def b16(clip_b16):
    return OpenCLIPVisual(clip_b16.visual, "ViT-B-16")


@pytest.fixture(scope="session")
def scale(clip_scale):
    return OpenCLIPVisual(clip_scale.visual, "scale-B32")
