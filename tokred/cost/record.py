"""The one cost record: what :func:`tokred.cost.measure.measure` returns, ``tokred measure``
writes (one JSON line each) and the sweep stores unchanged.

A record is a plain ``dict`` (JSON as it is) typed by :class:`CostRecord`; keys a measurement
did not run are absent. Every GMACs value is per video (per caption for text), FLOPs = 2 x MACs;
"mb" is MiB (2**20 bytes). Per-batch-size values are keyed by the batch size as a string (JSON
object keys). :func:`compare` is the one place speed-up, ideal speed-up, their ratio and the
suspect flag are computed; the speed-up is always paired (``none`` and the reducer timed in the
same interleaved rounds, :class:`tokred.cost.timing.PairedTiming`), never a ratio of two
separate timings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional, TypedDict

from tokred.cost.timing import PairedTiming

# A speed-up more than 10 % above its GMACs ideal is not believed: removing work cannot speed a
# forward up by more than the work removed, give or take cache effects, so such a number says
# the machine's speed changed under the measurement (or the measurement is broken).
SUSPECT_FACTOR = 1.1


class CostRecord(TypedDict, total=False):
    """One (backbone, reducer setting) measured; see the module docstring for units."""

    # what was measured
    model: str  # open_clip name, scale model or timm:NAME
    reducer: str
    options: dict  # the reducer's keyword options (presets resolved)
    preset: Optional[str]  # the preset tag the options amount to, if any
    frames: int
    precision: str
    activation: Optional[str]  # the MLP activation of the network (quick_gelu / gelu)
    spec: dict  # the backbone spec
    env: dict  # what the timings ran on: tokred.cost.timing.environment() and the clock
    provenance: dict  # tokred.plugins.run_provenance(): code, software, machine, command, plugins
    # analytic MACs from the token trace
    gmacs: float  # visual tower per video: patch embedding + blocks
    gflops: float
    readout_gmacs: float
    reducer_work_gmacs: float  # the reducer's own estimated work (matching, clustering)
    text_gmacs_per_caption: Optional[float]
    text_tokens: int
    tokens_out: int
    readout_tokens: int
    attn_tokens: list  # tokens per video entering attention, per layer
    mlp_tokens: list
    trace: dict
    trainable_params: int
    # fvcore's count of the actual forward
    fvcore_gmacs: float
    fvcore_layer_gmacs: float
    fvcore_rest_gmacs: float
    fvcore_other_gops: float
    fvcore_by_op: dict
    fvcore_unaccounted_ops: dict  # ops no handle classifies (should be empty)
    fvcore_uncounted_ops: dict  # iterative decompositions (SVD): arithmetic not counted
    fvcore_rel_diff: float  # fvcore / (analytic + readout + reducer work) - 1
    # inference throughput, per batch size (absolute: secondary to the paired speed-up)
    videos_per_s: dict
    videos_per_s_spread: dict  # half inter-quartile range / median
    timings: dict  # Timing.to_dict() per batch size
    paired_timings: dict  # PairedTiming.to_dict() per batch size: this against none, same rounds
    # activation memory: bytes saved for backward per video (full fine-tuning, LoRA)
    activation_mb_per_video_full: Optional[float]
    activation_mb_per_video_lora: Optional[float]
    activation_fixed_mb_full: float  # batch-independent saved bytes
    activation_fixed_mb_lora: float
    trainable_params_full: Optional[int]
    trainable_params_lora: Optional[int]
    full_unavailable: str  # why a mode could not be measured
    lora_unavailable: str
    # peak resident memory of fresh subprocesses (CPU) or peak allocated memory (CUDA)
    rss_batch: int
    rss_method: str
    peak_rss_mb_infer_full: float
    peak_rss_mb_train_full: float
    peak_rss_mb_train_lora: float
    cuda_batch: int
    cuda_peak_mb_infer: float
    cuda_peak_mb_train: float
    cuda_base_mb_infer: float
    cuda_base_mb_train: float
    # one training step (forward, backward, AdamW)
    train_step_mode: str  # "full" or "lora" (TempMe's recipe)
    train_step_s: float
    train_step_spread: float
    train_batch: int
    # time inside the reducer's own hooks (matching, merging, clustering)
    site_share: float  # of the forward time
    site_seconds: dict  # per video, by "pre_block@6" / "post_attn@3"
    site_batch: int
    # against the baseline (``none`` on the same model, same process): see compare()
    speedup: float  # median per-round ratio none time / this time, at the largest batch size
    speedup_low: float  # spread of the per-round ratios: see speedup_spread
    speedup_high: float
    speedup_spread: str  # "IQR" (quartiles, >= 5 rounds) or "min-max" (fewer rounds)
    speedup_rounds: int
    speedup_batch: int  # the batch size the speed-up is at
    ideal_speedup: float  # GMACs ratio
    ratio: float  # speedup / ideal_speedup
    speedup_suspect: bool  # speedup > SUSPECT_FACTOR x ideal_speedup: see is_suspect()
    train_step_ratio: float  # step time / the baseline's
    memory_ratio: float  # activation per video / the baseline's (the train-step mode's)


KEYS = frozenset(CostRecord.__annotations__)


def speed_fields(paired: Mapping[int, PairedTiming]) -> CostRecord:
    """The throughput keys of a record from one paired timing against none per batch size."""
    return CostRecord(
        videos_per_s={str(b): p.timing.per_second for b, p in paired.items()},
        videos_per_s_spread={str(b): p.timing.spread for b, p in paired.items()},
        timings={str(b): p.timing.to_dict() for b, p in paired.items()},
        paired_timings={str(b): p.to_dict() for b, p in paired.items()},
    )


def is_suspect(speedup: float, ideal: float) -> bool:
    """True when a measured speed-up is more than :data:`SUSPECT_FACTOR` x its GMACs ideal."""
    return speedup > SUSPECT_FACTOR * ideal


def compare(rec: CostRecord, base: CostRecord) -> CostRecord:
    """Speed-up, ideal speed-up (GMACs ratio), their ratio and the suspect flag of ``rec``
    against the baseline record ``base`` (``none`` on the same model).

    The speed-up is ``rec``'s own paired timing against none (``paired_timings``, timed in the
    same rounds), at the largest batch size; ``base`` gives the GMACs, and the training step and
    its activation memory when both have them. Keys whose inputs are missing are left out.
    """
    out = CostRecord(ideal_speedup=base["gmacs"] / rec["gmacs"])
    paired = rec.get("paired_timings") or {}
    if paired:
        big = max(paired, key=int)
        p = paired[big]
        out.update(speedup=p["speedup"], speedup_low=p["low"], speedup_high=p["high"],
                   speedup_spread=p["spread"], speedup_rounds=p["rounds"], speedup_batch=int(big))
        out["ratio"] = out["speedup"] / out["ideal_speedup"]
        out["speedup_suspect"] = is_suspect(out["speedup"], out["ideal_speedup"])
    if rec.get("train_step_s") and base.get("train_step_s"):
        out["train_step_ratio"] = rec["train_step_s"] / base["train_step_s"]
    key = f"activation_mb_per_video_{rec.get('train_step_mode', 'full')}"
    if rec.get(key) and base.get(key):
        out["memory_ratio"] = rec[key] / base[key]
    return out


def check_keys(rec: Mapping[str, Any]) -> CostRecord:
    """``rec`` as a :class:`CostRecord`.

    Raises:
        KeyError: a key outside the record type (written by another version, or a typo).
    """
    unknown = sorted(set(rec) - KEYS)
    if unknown:
        raise KeyError(f"not cost-record keys: {', '.join(unknown)}; the keys are defined once "
                       f"in tokred.cost.record.CostRecord")
    return CostRecord(**rec)


def append_jsonl(path: str | Path | None, records: Iterable[CostRecord]) -> None:
    """Append one JSON line per record to ``path`` (nothing when ``path`` is None; its
    directory is made when missing)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.writelines(json.dumps(check_keys(rec)) + "\n" for rec in records)


def read_jsonl(path: str | Path) -> list[CostRecord]:
    """The records of a JSON-lines file written by :func:`append_jsonl`."""
    with open(path) as f:
        return [check_keys(json.loads(line)) for line in f if line.strip()]
