"""The reducer contract: identity at every site unless a subclass says otherwise."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from tokred.spec import BackboneSpec
from tokred.state import TokenState


class TokenReducer(nn.Module):
    """Base class of every token reducer.

    The encoder calls, for each block ``layer`` (0-based)::

        s = reducer.pre_block(s, layer)              # before LN1 / attention
        attn_out, keys = attention(s)                 # + log(size) bias if prop_attn
        s = reducer.post_attn(s.replace(x=s.x + attn_out), layer, keys)
        s.x = s.x + mlp(s.x)

    Subclasses override the sites they need. State flows through arguments only: a reducer keeps
    no per-forward mutable state, so the same module is re-entrant and thread-safe.

    Attributes:
        prop_attn: if True the encoder adds ``log(size)`` of every key to the attention logits
            (proportional attention, ToMe).
        spec: the backbone spec given to :meth:`setup` (None before).
        presets: the papers' settings by tag, e.g. ``{"B6-4-49": {"layer": 6, ...}}``: the one
            source of every published setting (``create_reducer(name, preset=tag)``, or the
            spec ``"name.tag"``; see :mod:`tokred.registry`).
        paper: per backbone name, the tags of the settings its papers report
            (``tokred measure --reducer paper`` runs them).
    """

    prop_attn: bool = False
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    paper: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.spec: BackboneSpec | None = None

    def setup(self, spec: BackboneSpec) -> None:
        """Resolve schedules for ``spec`` and validate the configuration.

        Called by the encoder at construction and again whenever the clip length changes.
        Must raise ``ValueError`` naming the numbers when the configuration cannot apply.
        Must be idempotent: parameters created on an earlier call are kept.
        """
        self.spec = spec

    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        """Site 1: the block's input (residual stream, before LN1)."""
        return s

    def post_attn(self, s: TokenState, layer: int, keys: Tensor) -> TokenState:
        """Site 2: after the attention residual add, before LN2 / MLP.

        Args:
            s: state after ``x + attn(x)``.
            layer: block index.
            keys: ``[R, N, head_dim]`` attention keys averaged over heads (computed from LN1(x)).
        """
        return s

    def work_macs(self, trace) -> float:
        """Estimated multiply-adds per video of the reducer's own work (matching, clustering).

        Args:
            trace: the :class:`tokred.encoder.Trace` of a forward with this reducer.
        """
        return 0.0

    def diagnostics(self) -> dict[str, Any]:
        """Counters a run should record (e.g. degenerate cases met); never read by a forward."""
        return {}


class Chain(TokenReducer):
    """Several reducers applied in order at every site (e.g. CenterCLIP then ToMe)."""

    def __init__(self, *reducers: TokenReducer) -> None:
        super().__init__()
        if not reducers:
            raise ValueError("Chain needs at least one reducer")
        self.reducers = nn.ModuleList(reducers)

    @property
    def prop_attn(self) -> bool:  # type: ignore[override]
        return any(r.prop_attn for r in self.reducers)

    def setup(self, spec: BackboneSpec) -> None:
        super().setup(spec)
        for r in self.reducers:
            r.setup(spec)

    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        for r in self.reducers:
            s = r.pre_block(s, layer)
        return s

    def post_attn(self, s: TokenState, layer: int, keys: Tensor) -> TokenState:
        for i, r in enumerate(self.reducers):
            if i and s.tokens != keys.shape[1]:
                raise RuntimeError(
                    f"{type(self.reducers[i - 1]).__name__} changed the tokens after attention; "
                    f"a later reducer in the Chain cannot use the attention keys any more"
                )
            s = r.post_attn(s, layer, keys)
        return s

    def work_macs(self, trace) -> float:
        return sum(r.work_macs(trace) for r in self.reducers)

    def diagnostics(self) -> dict[str, Any]:
        return {k: v for r in self.reducers for k, v in r.diagnostics().items()}
