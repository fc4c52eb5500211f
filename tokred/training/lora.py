"""Low-rank adapters (LoRA, Hu et al., ICLR 2022) on the fused qkv projection of CLIP towers.

open_clip's blocks use ``nn.MultiheadAttention``, whose fused ``in_proj_weight`` is read directly
by its forward (and by :func:`tokred.backbones.mha_attention`), so adapters that wrap ``nn.Linear``
modules do not reach it (open_clip #585, peft #761). Here the weight itself is parametrised with
:func:`torch.nn.utils.parametrize.register_parametrization`: every reader of
``attn.in_proj_weight`` sees ``W + B @ A``, i.e. ``qkv = W x + b + B (A x)``, with ``W`` frozen.

Usage (TempMe's recipe: rank 8 on the 24 attention layers of ViT-B/32 and its text tower)::

    params = apply_lora(clip, rank=8)                       # B = 0: the model is unchanged
    n = mark_only_trainable(clip, extra=reducer.parameters())
    ...train...
    fold_lora(clip)                                          # plain weights for inference

Apply LoRA after loading pretrained weights: the parametrised weight is stored under
``attn.parametrizations.in_proj_weight.original`` until :func:`fold_lora`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

log = logging.getLogger(__name__)

WEIGHT = "in_proj_weight"


class LoRAWeight(nn.Module):
    """Parametrisation ``W -> W + B @ A`` of a fused ``[3*width, width]`` qkv weight.

    Args:
        out_features: rows of ``W`` (``3 * width``).
        in_features: columns of ``W`` (``width``).
        rank: adapter rank ``r``.
        device, dtype: of the adapter matrices (those of ``W``).

    ``A [r, in]`` is Kaiming-uniform (a = sqrt(5), as ``nn.Linear``), ``B [out, r]`` zeros, so
    the adapted model starts equal to the original; no scaling, no dropout.
    """

    def __init__(self, out_features: int, in_features: int, rank: int,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"LoRA rank must be a positive int, got {rank!r}")
        self.A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def forward(self, weight: Tensor) -> Tensor:
        return weight + (self.B @ self.A).to(weight.dtype)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, out={self.B.shape[0]}, in={self.A.shape[1]}"


def add_lora(attn: nn.MultiheadAttention, rank: int = 8) -> list[nn.Parameter]:
    """Put a rank-``rank`` adapter on one ``nn.MultiheadAttention``'s fused in-projection.

    Returns:
        The adapter parameters ``[A, B]``.

    Raises:
        ValueError: the module has separate q/k/v weights or already carries LoRA.
    """
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
        raise ValueError(f"LoRA needs an nn.MultiheadAttention with a fused in_proj_weight, got "
                         f"{type(attn).__name__}")
    if _lora_of(attn) is not None:
        raise ValueError("this attention already carries a LoRA adapter; fold_lora() it first")
    w = attn.in_proj_weight
    lora = LoRAWeight(w.shape[0], w.shape[1], rank, device=w.device, dtype=w.dtype)
    parametrize.register_parametrization(attn, WEIGHT, lora)
    return [lora.A, lora.B]


def tower_attentions(model: nn.Module, tower: str) -> list[nn.MultiheadAttention]:
    """The attention modules of ``tower`` (``"visual"`` or ``"text"``) of an open_clip model.

    Raises:
        ValueError: unknown tower, or a tower that is not a transformer of
            ``nn.MultiheadAttention`` blocks (e.g. a ModifiedResNet or an HF text tower).
    """
    if tower == "visual":
        trunk = getattr(getattr(model, "visual", None), "transformer", None)
    elif tower == "text":
        text = getattr(model, "text", model)  # CustomTextCLIP keeps the tower in model.text
        trunk = getattr(text, "transformer", None)
    else:
        raise ValueError(f"unknown tower {tower!r}; choose from 'visual', 'text'")
    blocks = getattr(trunk, "resblocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no open_clip transformer in its {tower} "
                         f"tower (expected .resblocks); LoRA here supports open_clip ViT/text towers")
    attns = [getattr(b, "attn", None) for b in blocks]
    bad = [i for i, a in enumerate(attns) if not isinstance(a, nn.MultiheadAttention)]
    if bad:
        raise ValueError(f"{tower} blocks {bad} do not use nn.MultiheadAttention "
                         f"({type(attns[bad[0]]).__name__}); LoRA cannot be placed on them")
    return attns


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    towers: Sequence[str] = ("visual", "text"),
    layers: Iterable[int] | None = None,
) -> list[nn.Parameter]:
    """Add rank-``rank`` adapters to the qkv projection of chosen blocks of an open_clip CLIP.

    Args:
        model: an open_clip ``CLIP`` (or ``CustomTextCLIP`` with an open_clip text transformer).
        rank: adapter rank.
        towers: which towers to adapt.
        layers: 0-based block indices adapted in every chosen tower; None = all blocks.

    Returns:
        The new adapter parameters (A and B of every adapted layer), trainable.

    Raises:
        ValueError: a layer index out of range for a tower, or an unsupported tower.
    """
    if isinstance(towers, str):
        towers = (towers,)
    chosen = None if layers is None else sorted(set(layers))
    targets: list[nn.MultiheadAttention] = []
    for tower in towers:  # validate every tower before touching any
        attns = tower_attentions(model, tower)
        idx = range(len(attns)) if chosen is None else chosen
        bad = [i for i in idx if not 0 <= i < len(attns)]
        if bad:
            raise ValueError(f"LoRA layers {bad} out of range for the {tower} tower "
                             f"(blocks 0..{len(attns) - 1})")
        targets += [attns[i] for i in idx]
    busy = [i for i, a in enumerate(targets) if _lora_of(a) is not None]
    if busy:
        raise ValueError(f"{len(busy)} of the chosen attention layers already carry a LoRA "
                         f"adapter; fold_lora() the model first or choose other layers")
    params: list[nn.Parameter] = []
    for attn in targets:
        params += add_lora(attn, rank)
    log.info("LoRA rank %d on %s: %d adapters, %d parameters", rank, ",".join(towers),
             len(params) // 2, sum(p.numel() for p in params))
    return params


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All LoRA adapter parameters (A and B) found in ``model``."""
    found: dict[int, nn.Parameter] = {}
    for m in model.modules():
        if isinstance(m, LoRAWeight):
            for p in (m.A, m.B):
                found[id(p)] = p
    return list(found.values())


def count_trainable(*modules: nn.Module | Iterable[nn.Parameter]) -> int:
    """Elements of the distinct parameters with ``requires_grad`` in modules or parameter lists."""
    seen: dict[int, nn.Parameter] = {}
    for m in modules:
        for p in (m.parameters() if isinstance(m, nn.Module) else m):
            if p.requires_grad:
                seen[id(p)] = p
    return sum(p.numel() for p in seen.values())


def mark_only_trainable(model: nn.Module, extra: Iterable[nn.Parameter] = ()) -> int:
    """Freeze every parameter of ``model`` except its LoRA adapters and ``extra``.

    Args:
        model: the model (its LoRA adapters stay trainable).
        extra: further parameters to train (e.g. TempMe's temporal embeddings), inside or
            outside ``model``.

    Returns:
        The number of trainable parameter elements (model and extra, each counted once).
    """
    extra = list(extra)
    keep = {id(p) for p in lora_parameters(model)} | {id(p) for p in extra}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    for p in extra:
        p.requires_grad_(True)
    return count_trainable(model, extra)


def fold_lora(model: nn.Module) -> None:
    """Merge every adapter into its weight (``W <- W + B @ A``) and remove the parametrisations.

    The folded weight keeps the ``requires_grad`` flag of the original ``W``; state-dict keys
    return to open_clip's own (``attn.in_proj_weight``).

    Raises:
        ValueError: an ``in_proj_weight`` carries other parametrisations besides LoRA.
    """
    folded = 0
    for m in list(model.modules()):
        lora = _lora_of(m)
        if lora is None:
            continue
        chain = m.parametrizations[WEIGHT]
        if len(chain) != 1:
            raise ValueError(f"{type(m).__name__}.{WEIGHT} has {len(chain)} parametrisations; "
                             f"fold_lora only removes a lone LoRA adapter")
        with torch.no_grad():
            parametrize.remove_parametrizations(m, WEIGHT, leave_parametrized=True)
        folded += 1
    log.info("folded %d LoRA adapters into their weights", folded)


def _lora_of(module: nn.Module) -> LoRAWeight | None:
    if not parametrize.is_parametrized(module, WEIGHT):
        return None
    return next((p for p in module.parametrizations[WEIGHT] if isinstance(p, LoRAWeight)), None)
