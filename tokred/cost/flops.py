"""fvcore cross-check of the analytic MACs, with every multiply-add op of the encoder counted.

fvcore calls one multiply-add one "flop": its totals are MACs (FLOPs = 2 x MACs). Out of the box
it skips ``aten::scaled_dot_product_attention`` (the attention of :mod:`tokred.backbones` and of
timm) and, in eval under ``no_grad``/``inference_mode``, the whole fused
``aten::_native_multi_head_attention`` of ``nn.MultiheadAttention`` (qkv and output projections
included): open_clip's ViT-B/32 then reads 35.4 instead of 52.9 GMACs. The handles below count
them, plus the other contractions a reducer may run (``cdist``, ``baddbmm``, the fused SDPA
kernels).

What is counted as MACs: contractions only (linear, matmul/bmm/einsum, convolution, attention
``QK^T`` and ``AV``, distances), one per multiply-add. Everything else (layer norm, softmax,
GELU, bias adds, the ``1/sqrt(d)`` scaling, residual adds, norms and means) touches each element
a constant number of times; it is counted apart as ``other`` (fvcore's 5 per element for an
affine layer norm, 1 per output element otherwise), never mixed into the MACs. That split is
the whole difference to fvcore's default count with attention written as plain matmuls, 52.97
GMACs for open_clip ViT-B/32 x 12 frames: 52.90 contractions of the blocks and patch embedding
(the analytic count) + 0.005 for the CLIP projection of the 12 CLS tokens + 0.060 for 26 layer
norms over 600 tokens at 5 "flops" per element. The ``1/sqrt(d)`` scaling, softmax and bias adds
are counted by neither.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# Ops that multiply-accumulate (reported as MACs).
CONTRACTIONS = frozenset({
    "aten::linear", "aten::addmm", "aten::matmul", "aten::mm", "aten::bmm", "aten::einsum",
    "aten::_convolution", "aten::baddbmm", "aten::cdist", "aten::scaled_dot_product_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
    "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_flash_attention",
    "aten::_native_multi_head_attention",
})
# A constant amount of arithmetic per element (reported apart as "other").
ELEMENTWISE = frozenset({
    "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_", "aten::div",
    "aten::div_", "aten::gelu", "aten::silu", "aten::sigmoid", "aten::tanh", "aten::exp",
    "aten::log", "aten::sqrt", "aten::rsqrt", "aten::pow", "aten::neg", "aten::reciprocal",
    "aten::softmax", "aten::log_softmax", "aten::clamp_min", "aten::clamp_max", "aten::where",
    "aten::linalg_vector_norm", "aten::norm", "aten::frobenius_norm", "aten::mean", "aten::sum",
    "aten::layer_norm", "aten::abs", "aten::square", "aten::lt", "aten::le", "aten::ne",
    "aten::min", "aten::amin", "aten::amax", "aten::argmin", "aten::argmax", "aten::cumsum",
    "aten::quick_gelu", "aten::erf", "aten::fill_", "aten::any", "aten::all", "aten::sub_",
    "aten::minimum", "aten::maximum", "aten::max_other", "aten::clamp_", "aten::masked_fill_",
})
# Data movement and bookkeeping: no arithmetic.
NO_ARITHMETIC = frozenset({
    "aten::sort", "aten::argsort", "aten::topk", "aten::scatter_reduce", "aten::scatter",
    "aten::scatter_add", "aten::scatter_", "aten::index_select", "aten::take_along_dim",
    "aten::expand_as", "aten::repeat", "aten::masked_select", "aten::item", "aten::zero_",
    "aten::unflatten", "aten::movedim", "aten::clone", "aten::new_ones", "aten::ones_like",
    "aten::empty_like", "aten::randperm", "aten::lift_fresh", "aten::alias", "aten::tile",
    "aten::flip", "aten::repeat_interleave", "aten::_unique2", "aten::unique_dim",
    "aten::diagonal", "aten::fill_diagonal_", "aten::eye", "aten::sign", "aten::floor",
    "aten::tensor", "aten::scalar_tensor", "aten::logical_not", "aten::logical_and",
    "aten::__iand__", "aten::__ior__", "aten::__or__", "aten::__xor__", "aten::logical_or",
    "aten::embedding", "aten::diag_embed",
})
# Decompositions whose arithmetic depends on convergence: no fixed MAC count, so neither fvcore
# nor this module counts them (a reducer's ``work_macs`` estimates them); named apart as
# ``uncounted``, never mistaken for an op that escaped the handles.
ITERATIVE = frozenset({"aten::linalg_svd", "aten::_linalg_svd", "aten::linalg_eigh",
                       "aten::_linalg_eigh", "aten::linalg_eig"})


LAYER_OPS = frozenset({
    "linear", "conv", "scaled_dot_product_attention", "_native_multi_head_attention",
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
})


def _with_inplace(ops: frozenset) -> frozenset:
    """The ops and their in-place variants (``aten::sqrt`` -> also ``aten::sqrt_``)."""
    return ops | {op + "_" for op in ops if not op.endswith("_")}


ELEMENTWISE = _with_inplace(ELEMENTWISE)
NO_ARITHMETIC = _with_inplace(NO_ARITHMETIC)


def _shape(v: Any) -> list[int]:
    return v.type().sizes()


def sdpa_macs(inputs: list, outputs: list) -> int:
    """``softmax(Q K^T) V``: ``L*S*E`` for the scores plus ``L*S*Ev`` for the values, per head."""
    q, k, v = (_shape(x) for x in inputs[:3])
    heads = prod(q[:-2])
    return heads * q[-2] * k[-2] * (q[-1] + v[-1])


def native_mha_macs(inputs: list, outputs: list) -> int:
    """Fused ``nn.MultiheadAttention``: q/k/v projections + attention + output projection."""
    q, k, v = (_shape(x) for x in inputs[:3])
    e = q[-1]
    rows = prod(q[:-1])  # batch * L
    kv_rows = prod(k[:-1])
    length, source = q[-2], k[-2]
    batch = rows // length
    proj = rows * e * e + 2 * kv_rows * e * e + rows * e * e
    return proj + 2 * batch * length * source * e


def cdist_macs(inputs: list, outputs: list) -> int:
    """Pairwise distances ``[..., P, M] x [..., R, M]``: one multiply-add per coordinate pair."""
    a, b = _shape(inputs[0]), _shape(inputs[1])
    return prod(a[:-1]) * b[-2] * a[-1]


def baddbmm_macs(inputs: list, outputs: list) -> int:
    """``beta * C + alpha * A @ B`` with ``A [n, c, t]``, ``B [n, t, d]``."""
    n, c, t = _shape(inputs[1])
    return n * c * t * _shape(inputs[2])[-1]


def _elementwise(inputs: list, outputs: list) -> int:
    """One operation per element of the larger of the first input and the output."""
    sizes = [prod(_shape(outputs[0]))]
    try:
        sizes.append(prod(_shape(inputs[0])))
    except (AttributeError, RuntimeError, TypeError):
        pass
    return max(sizes)


def _layer_norm(inputs: list, outputs: list) -> int:
    return prod(_shape(inputs[0])) * 5  # fvcore's convention for an affine norm


@dataclass
class FvcoreCount:
    """fvcore's count of one forward, split into MACs and other arithmetic (per call, not per video).

    Attributes:
        macs: multiply-adds of contractions (what the analytic formula counts).
        other: elementwise arithmetic (norms, softmax, activations, adds), not MACs.
        by_op: MACs per operator name (fvcore's short names: ``linear``, ``conv``, ...).
        other_by_op: the ``other`` count per operator.
        unaccounted: ops fvcore saw that no handle or list here classifies (should be empty).
        uncounted: calls of :data:`ITERATIVE` decompositions seen (arithmetic not counted).
    """

    macs: int
    other: int
    by_op: dict[str, int] = field(default_factory=dict)
    other_by_op: dict[str, int] = field(default_factory=dict)
    unaccounted: dict[str, int] = field(default_factory=dict)
    uncounted: dict[str, int] = field(default_factory=dict)

    @property
    def layer_macs(self) -> int:
        """MACs of the ops the ViT layers use (linear, convolution, attention kernels).

        The adapters compute patch embedding, qkv/output projections, attention and MLPs with
        these ops only, while reducers (matching, distances, medoid updates) and the CLIP
        readout ``x @ proj`` use matmul-family ops: this is the count to hold against the
        analytic formula. (A timm classifier head is a linear layer and lands here too.)
        """
        return sum(v for k, v in self.by_op.items() if k in LAYER_OPS)

    @property
    def rest_macs(self) -> int:
        """Contractions outside :attr:`layer_macs`: the reducer's work and a matmul readout."""
        return self.macs - self.layer_macs


def _short(op: str) -> str:
    """fvcore's key for an op in ``by_operator`` (namespace dropped)."""
    return op.split("::", 1)[-1]


def count_macs(model: nn.Module, inputs: tuple[Tensor, ...]) -> FvcoreCount:
    """Trace ``model(*inputs)`` with fvcore and count every multiply-add.

    Runs under whatever grad mode the caller set (use ``torch.inference_mode()`` and ``eval()``
    to see the inference path, where fused kernels are taken).

    Args:
        model: the module to trace (e.g. a :class:`~tokred.encoder.VideoEncoder`).
        inputs: positional inputs of its forward.

    Returns:
        An :class:`FvcoreCount`; ``unaccounted`` names ops that no handle covers (logged).
    """
    from fvcore.nn import FlopCountAnalysis

    contraction_handles = {
        "aten::scaled_dot_product_attention": sdpa_macs,
        "aten::_scaled_dot_product_flash_attention_for_cpu": sdpa_macs,
        "aten::_scaled_dot_product_attention_math": sdpa_macs,
        "aten::_scaled_dot_product_efficient_attention": sdpa_macs,
        "aten::_scaled_dot_product_flash_attention": sdpa_macs,
        "aten::_native_multi_head_attention": native_mha_macs,
        "aten::cdist": cdist_macs,
        "aten::baddbmm": baddbmm_macs,
    }
    fa = FlopCountAnalysis(model, inputs)
    fa.set_op_handle(**contraction_handles)
    fa.set_op_handle(**{op: _elementwise for op in ELEMENTWISE})
    fa.set_op_handle(**{"aten::layer_norm": _layer_norm, "aten::group_norm": _layer_norm})
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    fa.tracer_warnings("none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_op = dict(fa.by_operator())
    contraction_names = {_short(op) for op in CONTRACTIONS} | {"conv"}
    macs = {k: v for k, v in by_op.items() if k in contraction_names}
    other = {k: v for k, v in by_op.items() if k not in contraction_names}
    unsupported = fa.unsupported_ops()
    unaccounted = {op: n for op, n in unsupported.items()
                   if op not in NO_ARITHMETIC and op not in ITERATIVE}
    if unaccounted:
        log.warning("fvcore saw ops that no handle classifies (not counted): %s", unaccounted)
    uncounted = {op: n for op, n in unsupported.items() if op in ITERATIVE}
    return FvcoreCount(sum(macs.values()), sum(other.values()), macs, other, unaccounted,
                       uncounted)


class _Traced(nn.Module):
    """``encoder.forward`` that also fills a token trace (one forward for both counts)."""

    def __init__(self, encoder: nn.Module, trace) -> None:
        super().__init__()
        self.encoder, self.trace = encoder, trace

    def forward(self, video: Tensor) -> Tensor:
        from tokred.encoder import mean_pool

        return mean_pool(self.encoder.encode_frames(video, self.trace))


def _plain_ints(trace) -> None:
    """Token counts recorded under the JIT tracer are traced 0-d tensors: make them ints."""
    trace.layers[:] = [
        dataclasses.replace(r, **{f.name: int(getattr(r, f.name)) for f in dataclasses.fields(r)})
        for r in trace.layers
    ]
    trace.out_seqs, trace.out_tokens = int(trace.out_seqs), int(trace.out_tokens)


def fvcore_video_macs(encoder: nn.Module, frames: int, batch: int = 1, trace=None) -> FvcoreCount:
    """fvcore's count for one inference forward of a video encoder, divided per video.

    The encoder is traced on random input in eval mode under ``torch.inference_mode`` (the path
    whose fused kernels fvcore misses without the handles above); its train/eval mode is
    restored afterwards. An empty :class:`~tokred.encoder.Trace` passed as ``trace`` is filled
    by the same forward.
    """
    spec = encoder.backbone.spec
    p = next(encoder.parameters())
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch, frames, 3, spec.image_size, spec.image_size, generator=g)
    was_training = encoder.training
    encoder.eval()
    model = encoder if trace is None else _Traced(encoder, trace)
    try:
        with torch.inference_mode():
            c = count_macs(model, (video.to(p.device, p.dtype),))
    finally:
        encoder.train(was_training)
    if trace is not None:
        _plain_ints(trace)
    return FvcoreCount(
        c.macs // batch, c.other // batch,
        {k: v // batch for k, v in c.by_op.items()},
        {k: v // batch for k, v in c.other_by_op.items()},
        c.unaccounted,
        c.uncounted,
    )
