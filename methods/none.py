"""The no-op baseline: CLIP4Clip meanP with every token kept."""

from __future__ import annotations

from tokred import TokenReducer, register_reducer


@register_reducer("none")
class NoReduction(TokenReducer):
    """Keeps every token at every site (the reference every reducer is compared with)."""
