"""Retrieval evaluation: t2v / v2t R@1/5/10, MdR, MnR, R-Sum over every caption of a split.

The similarity matrix ``[captions, videos]`` is saved (``sim.npz``, see
:func:`tokred.retrieval.metrics.save_similarity`) so post-processing such as DSL or QB-Norm can be applied
offline and reported as a separately labelled extra. On the synthetic benchmark the metrics are
also broken down per caption type, with the time-reversed twin-pair accuracy.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from tokred.retrieval import RetrievalModel, build_model
from tokred.retrieval.metrics import (
    metrics_of_ranks,
    rank_summary,
    save_similarity,
    t2v_ranks,
    v2t_ranks,
)

log = logging.getLogger(__name__)


def load_model(
    path: str | Path,
    reducer: str | None = None,
    reducer_options: dict | None = None,
    frames: int | None = None,
    device: str = "cpu",
    *,
    model_name: str | None = None,
    quick_gelu: bool | None = None,
    max_words: int | None = None,
    trust_pickle: bool = False,
) -> RetrievalModel:
    """A :class:`RetrievalModel` from a checkpoint file, optionally with another reducer.

    ``path`` is a tokred ``model.pt`` (``meta`` names the model, reducer and activation) or a
    CLIP checkpoint for zero-shot evaluation: an OpenAI state dict or TorchScript archive, or a
    CLIP4Clip-family ``pytorch_model.bin.N`` (``clip.`` keys, possibly under ``module.`` /
    ``state_dict``). The CLIP weights always load; a tokred checkpoint's reducer state loads
    only when ``reducer`` is None or names the reducer it was trained with (training-free
    evaluation otherwise).

    Args:
        path: the checkpoint file.
        reducer / reducer_options: evaluate with this reducer (CLIP files: default ``none``).
        frames: frames per video (default: the checkpoint's, 12 for CLIP files).
        device: torch device string.
        model_name: CLIP architecture of a file without meta (inferred from the weights' shapes
            when None and possible: ViT-B-32, ViT-B-16, ViT-L-14, the scale models).
        quick_gelu: override the activation (default: the checkpoint's meta; QuickGELU for
            CLIP files, which are all OpenAI-family).
        max_words: caption length (default: the checkpoint's; 32 as CLIP4Clip for CLIP files).
        trust_pickle: load a file holding arbitrary Python objects unrestricted (it can run
            code; see :func:`tokred.backbones.weights.read_checkpoint`).

    Raises:
        ValueError: a file that cannot be read safely or at all, a CLIP file whose
            architecture is neither given nor inferable, or ``model_name`` contradicting a
            tokred checkpoint's meta.
    """
    from tokred.backbones.weights import (
        extract_clip_state_dict,
        infer_clip_name,
        load_clip_state_dict,
        meta_activation,
        read_checkpoint,
        weights_activation,
    )

    ck = read_checkpoint(path, trust_pickle=trust_pickle)
    meta = ck.get("meta") if isinstance(ck, dict) else None
    if not meta:
        sd = extract_clip_state_dict(ck, str(path))
        name = model_name or infer_clip_name(sd)
        if name is None:
            raise ValueError(
                f"{path} is a CLIP checkpoint without tokred meta and its weights fit no known "
                f"architecture; name it with --model NAME (load_model(model_name=...)), e.g. "
                f"ViT-B-32 or ViT-B-16"
            )
        act = (weights_activation(ck, str(path)) if quick_gelu is None
               else "quick_gelu" if quick_gelu else "gelu")
        model = build_model(name, reducer or "none", reducer_options, frames or 12,
                            max_words=max_words or 32, quick_gelu=act == "quick_gelu")
        load_clip_state_dict(model.clip, sd, str(path))
        log.info("%s: CLIP checkpoint loaded as %s (%s), zero-shot", path, name, act)
        return model.to(device).eval()
    if model_name is not None and model_name != meta["model"]:
        raise ValueError(f"{path} holds a {meta['model']} model, not {model_name!r}; drop "
                         f"--model (a tokred checkpoint names its model)")
    act = (meta_activation(meta, str(path)) if quick_gelu is None
           else "quick_gelu" if quick_gelu else "gelu")
    same = reducer is None or reducer == meta["reducer"]
    model = build_model(
        meta["model"],
        reducer or meta["reducer"],
        meta["reducer_options"] if reducer is None else reducer_options,
        frames or meta["frames"],
        max_words=max_words or meta["max_words"],
        quick_gelu=act == "quick_gelu",
    )
    model.clip.load_state_dict(ck["model"])
    if same and ck.get("reducer"):
        model.reducer.load_state_dict(ck["reducer"])
    return model.to(device).eval()


def load_videos(
    split, frames: int, image_size: int, sampling: str = "uniform", chunk: int = 128
) -> torch.Tensor:
    """Every video of ``split`` decoded and preprocessed: float16 ``[V, T, 3, S, S]``.

    Preprocessing runs on ``chunk`` videos at once (one resize call over all their frames),
    several times faster than clip by clip; the values equal per-clip preprocessing.
    """
    from tokred.data import FrameSource, check_files

    check_files(split)
    src = FrameSource(split, num_frames=frames, image_size=image_size, sampling=sampling)
    clips = src.clips(chunk=chunk)
    return torch.stack([clips[v] for v in range(len(split.videos))])


@torch.no_grad()
def embed_split(
    model: RetrievalModel,
    captions: list[str],
    videos: torch.Tensor,
    batch_size: int = 64,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Text ``[C, D]`` and video ``[V, D]`` features (float32, L2-normalised)."""
    from tokred.training.precision import autocast

    model.eval()
    device = next(model.parameters()).device
    text, vid = [], []
    with autocast(device.type, precision):
        for s in range(0, len(captions), batch_size * 4):
            tokens = model.tokenizer(captions[s : s + batch_size * 4]).to(device)
            text.append(model.encode_text(tokens).float())
        for s in range(0, len(videos), batch_size):
            vid.append(model.encode_video(videos[s : s + batch_size].to(device).float()).float())
    return torch.cat(text).cpu(), torch.cat(vid).cpu()


def evaluate(
    model: RetrievalModel | str | Path,
    split,
    *,
    reducer: str | None = None,
    reducer_options: dict | None = None,
    frames: int | None = None,
    videos: torch.Tensor | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
    out: str | Path | None = None,
    synth_meta=None,
    dataset: str | None = None,
) -> dict:
    """Evaluate text-video retrieval on ``split``.

    Args:
        model: a :class:`RetrievalModel` or the path of a tokred ``model.pt``.
        split: the evaluation :class:`~tokred.data.Split` (every caption is a query).
        reducer / reducer_options: evaluate the checkpoint with this reducer instead (only when
            ``model`` is a path).
        frames: frames per video (default: the model's, e.g. the checkpoint's).
        videos: pre-decoded ``[V, T, 3, S, S]`` frames (from :func:`load_videos`) to skip decoding.
        out: directory for ``sim.npz`` and ``metrics.json`` (the returned metrics plus the run's
            ``provenance``, :func:`tokred.env.provenance`); nothing written when None.
        synth_meta: :class:`~tokred.data.SynthMeta` for per-type metrics and twin accuracy.
        dataset: label stored in the results (``"synthetic"`` whenever ``synth_meta`` is given).

    Returns:
        Plain dict: the metrics of :func:`tokred.retrieval.metrics.retrieval_metrics`, chance levels,
        ``num_captions``, ``num_videos``, ``eval_s``, and with ``synth_meta`` ``per_type`` and
        ``twin_accuracy``.
    """
    check_split(split, synth_meta, videos)
    if not isinstance(model, torch.nn.Module):
        model = load_model(model, reducer, reducer_options, frames)
    if videos is None:
        videos = load_videos(split, frames or model.video.reducer.spec.frames,
                             model.video.backbone.spec.image_size)
    t0 = time.perf_counter()
    text, vid = embed_split(model, split.captions, videos, batch_size, precision)
    sim = text @ vid.t()  # [C, V] cosine; the logit scale does not change ranks
    res = _metrics(sim, np.asarray(split.caption_video), synth_meta)
    res.update(
        eval_s=time.perf_counter() - t0,
        frames=videos.shape[1],
        split=split.name,
        reducer=model.reducer.__class__.__name__,
        dataset="synthetic" if synth_meta is not None else (dataset or split.name),
    )
    if out is not None:
        from tokred.plugins import run_provenance

        _write(Path(out), sim, split, res, run_provenance(next(model.parameters()).device))
    return res


def check_split(split, synth_meta=None, videos: torch.Tensor | None = None) -> None:
    """Refuse, before any video is encoded, an evaluation that could only fail at the end.

    Raises:
        ValueError: an empty split, pre-decoded ``videos`` of another length, or ``synth_meta``
            of another caption list (it describes the synthetic test split only).
    """
    if not split.videos or not split.captions:
        raise ValueError(f"{split.name}: nothing to evaluate ({len(split.videos)} videos, "
                         f"{len(split.captions)} captions)")
    if videos is not None and len(videos) != len(split.videos):
        raise ValueError(f"{len(videos)} pre-decoded videos for the {len(split.videos)} of "
                         f"{split.name}; decode them from this split (load_videos)")
    if synth_meta is not None and len(synth_meta.types) != len(split.captions):
        raise ValueError(f"the synthetic benchmark's annotations describe {len(synth_meta.types)} "
                         f"test captions, {split.name} has {len(split.captions)}: per-type "
                         f"metrics apply to its test split only; evaluate split 'test' or pass "
                         f"no synth_meta")


def _metrics(sim: torch.Tensor, caption_video: np.ndarray, synth_meta) -> dict:
    from tokred.retrieval.stats import bootstrap

    t2v, v2t = t2v_ranks(sim, caption_video), v2t_ranks(sim, caption_video)  # ranked once
    res = metrics_of_ranks(t2v, v2t)
    # per-query ranks (paired tests between reducers on the same queries) and 95 % intervals
    res["ranks"] = {"t2v": t2v.astype(int).tolist(), "v2t": v2t.astype(int).tolist()}
    res["ci"] = {m: [i.low, i.high] for m, i in bootstrap(t2v, v2t).items()}
    n_vid = sim.shape[1]
    res.update({f"chance_R@{k}": 100.0 * min(k, n_vid) / n_vid for k in (1, 5, 10)})
    res.update(num_captions=int(sim.shape[0]), num_videos=int(n_vid))
    if synth_meta is not None:
        res["per_type"] = per_type_metrics(sim, caption_video, synth_meta.types, (t2v, v2t))
        from tokred.retrieval.metrics import twin_accuracy

        res["twin_accuracy"] = twin_accuracy(sim, synth_meta.twin_pairs)
        res["twin_pairs"] = len(synth_meta.twin_pairs)
    return res


def per_type_metrics(sim: torch.Tensor, caption_video: np.ndarray, types: list[str],
                     ranks: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """t2v metrics of each caption type's queries against all videos, and v2t of the videos
    whose captions are all of that type (``ranks``: the (t2v, v2t) ranks of ``sim``, if
    already computed)."""
    if len(types) != sim.shape[0]:
        raise ValueError(
            f"{len(types)} caption types for {sim.shape[0]} captions; is synth_meta "
            f"from the same synthetic test split?"
        )
    t2v, v2t = ranks or (t2v_ranks(sim, caption_video), v2t_ranks(sim, caption_video))
    kinds = np.asarray(types)
    out = {}
    for kind in dict.fromkeys(types):
        rows = kinds == kind
        vids = np.unique(caption_video[rows])
        own = [v for v in vids if set(kinds[caption_video == v]) == {kind}]
        out[kind] = {
            "count": int(rows.sum()),
            **rank_summary(t2v[rows], "t2v"),
            **rank_summary(v2t[own], "v2t"),
        }
    return out


def _write(out: Path, sim: torch.Tensor, split, res: dict, prov: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_similarity(
        out / "sim.npz",
        sim,
        split.caption_video,
        {k: res[k] for k in ("dataset", "split", "reducer", "frames")},
    )
    (out / "metrics.json").write_text(json.dumps({**res, "provenance": prov}, indent=1))


def format_metrics(res: dict) -> str:
    """One-block text summary (labelled SYNTHETIC on the synthetic benchmark)."""
    tag = "SYNTHETIC " if res.get("dataset") == "synthetic" else ""
    lines = [
        f"{tag}{res.get('split', '')} ({res['num_captions']} captions, "
        f"{res['num_videos']} videos, {res['frames']} frames each; chance R@1 "
        f"{res['chance_R@1']:.2f}%)"
    ]
    for d in ("t2v", "v2t"):
        lines.append(
            f"  {d}: R@1 {res[f'{d}_R@1']:.1f}  R@5 {res[f'{d}_R@5']:.1f}  "
            f"R@10 {res[f'{d}_R@10']:.1f}  MdR {res[f'{d}_MdR']:.1f}  MnR {res[f'{d}_MnR']:.1f}"
        )
    lines.append(f"  R-Sum (t2v+v2t R@1/5/10) {res['rsum']:.1f}")
    for kind, m in res.get("per_type", {}).items():
        lines.append(
            f"  {tag}{kind:<10} n={m['count']:<4} t2v R@1 {m['t2v_R@1']:.1f}  "
            f"R@5 {m['t2v_R@5']:.1f}  R@10 {m['t2v_R@10']:.1f}"
        )
    if res.get("twin_pairs"):
        lines.append(
            f"  {tag}twin-pair accuracy {100 * res['twin_accuracy']:.1f}% "
            f"({res['twin_pairs']} pairs; 50% = order-blind)"
        )
    return "\n".join(lines)


