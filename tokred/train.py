"""Fine-tuning a retrieval model: full / LoRA / from scratch, AMP, DDP via torchrun, resumable.

Recipes (``mode``):
- ``full``: CenterCLIP / CLIP4Clip: everything trains except the patch conv, class and visual
  positional embeddings, ``ln_pre``, token embedding and text positional embedding.
  Defaults lr 5e-6, AdamW (0.9, 0.98), wd 0.2.
- ``lora``: TempMe: LoRA on the fused qkv of every attention layer (both towers) plus the
  reducer's own parameters (TempMe's temporal embeddings); the rest, logit scale included,
  frozen. Defaults lr 6e-4, AdamW (0.9, 0.999), wd 0.2.
- ``scratch``: random init, every parameter trains (the scale model). Defaults lr 2e-3,
  AdamW (0.9, 0.98), wd 0.2.

Launch on N processes with ``torchrun --nproc_per_node N -m tokred.cli train ...``; the batch
size is global (split over ranks and accumulation steps) and N ranks give the update of one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import distributed as D
from .retrieval import (
    RetrievalModel,
    build_model,
    configure_trainable,
    contrastive_loss,
    make_optimizer,
    make_scheduler,
)

log = logging.getLogger(__name__)

RECIPES = {  # mode -> (lr, betas)
    "full": (5e-6, (0.9, 0.98)),
    "lora": (6e-4, (0.9, 0.999)),
    "scratch": (2e-3, (0.9, 0.98)),
}


@dataclass
class TrainConfig:
    """Everything a training run needs (the CLI maps one flag to each field).

    Attributes:
        data: dataset kind (``msrvtt``, ``msvd``, ``csv``, ...; see ``tokred.data.READERS``).
        root: annotation directory; ``video_root`` defaults to ``root/videos``.
        out: run directory (``last.pt`` for resuming, ``model.pt`` final, ``train_log.jsonl``).
        model / pretrained / init: CLIP name, open_clip tag or file, and an optional checkpoint
            to start from (CLIP4Clip layouts or a tokred ``model.pt``; its reducer state is
            loaded when it was trained with the same reducer).
        quick_gelu: the MLP activation, QuickGELU (True) or GELU (False); None lets
            :func:`tokred.models.activation_for` decide from ``model``/``pretrained``/``init``
            (QuickGELU for OpenAI-family weights). Recorded in the checkpoints' ``meta``.
        reducer / reducer_options: registered reducer name and its keyword options.
        mode: ``full``, ``lora`` or ``scratch`` (see module doc); lr/betas default per mode.
        frames / train_frames: frames the reducer is set up for, and frames sampled per training
            video (default ``frames``; fewer is fine for frame-count invariant meanP).
        frame_pool: decode (and cache) this many frames per training video and draw
            ``train_frames`` of them every epoch, one at random from each of ``train_frames``
            equal segments (TSN-style temporal jitter). None: decode exactly ``train_frames``
            frames, the same every epoch (CLIP4Clip).
        batch_size: global batch (over ranks and accumulation steps).
        epochs / max_steps: length; ``max_steps`` (optimizer steps) wins when set.
        warmup: warm-up fraction of the steps (then cosine to zero).
        patch_dropout: fraction of each frame's patch tokens dropped at random in training
            (FLIP, Li et al. 2023; open_clip's ``PatchDropout``): a step costs about
            ``1 - patch_dropout`` as much, evaluation keeps every patch. Reducer ``none`` only
            (the others' schedules count patches); the scale model's base training uses 0.5.
        precision: ``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast + GradScaler, CUDA only).
        cache / skip_errors: decode every training clip once before training and keep it in
            memory (float16, up to :func:`cache_limit`); with ``skip_errors`` undecodable
            videos found then are named and left out instead of stopping the run.
        stop_at_step: stop (after saving) at this step as if interrupted; for resume tests.
        time_budget: minutes; training ends at ``max_steps`` or when the budget is spent,
            whichever comes first, and the LR schedule follows the same progress (so it anneals
            fully by the deadline; runs that hit the budget are not bit-reproducible).
    """

    data: str = "msrvtt"
    root: str = "data/msrvtt"
    split: str = "train"
    video_root: str | None = None
    out: str = "runs/train"
    model: str = "scale-B32"
    pretrained: str | None = None
    init: str | None = None
    quick_gelu: bool | None = None
    reducer: str = "none"
    reducer_options: dict = field(default_factory=dict)
    mode: str = "full"
    lora_rank: int = 8
    frames: int = 12
    train_frames: int | None = None
    sampling: str = "uniform"
    frame_pool: int | None = None
    max_words: int = 32
    batch_size: int = 128
    grad_accum: int = 1
    epochs: float = 5.0
    max_steps: int | None = None
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float = 0.2
    warmup: float = 0.1
    grad_clip: float | None = 1.0
    patch_dropout: float = 0.0
    precision: str = "fp32"
    freeze_logit_scale: bool | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    cache: bool = True
    skip_errors: bool = False
    save_every: int = 0
    resume: bool = False
    stop_at_step: int | None = None
    time_budget: float | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in RECIPES:
            raise ValueError(f"mode must be one of {sorted(RECIPES)}, got {self.mode!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.frame_pool is not None and self.frame_pool < (self.train_frames or self.frames):
            raise ValueError(
                f"frame_pool={self.frame_pool} must be at least train_frames "
                f"({self.train_frames or self.frames}): the pool is what frames are drawn from"
            )
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ValueError(f"patch_dropout must be in [0, 1), got {self.patch_dropout}")
        if self.patch_dropout and self.reducer != "none":
            raise ValueError(
                f"patch_dropout={self.patch_dropout} needs reducer 'none' (got "
                f"{self.reducer!r}, whose schedule counts every patch); set patch_dropout=0"
            )
        self.lr = RECIPES[self.mode][0] if self.lr is None else self.lr
        self.betas = tuple(self.betas or RECIPES[self.mode][1])
        if self.freeze_logit_scale is None:
            self.freeze_logit_scale = self.mode == "lora"


def build_for_training(
    cfg: TrainConfig, device: str, activation: str | None = None
) -> RetrievalModel:
    """Model for ``cfg``: built, initialised from ``cfg.init``, trainable set per ``cfg.mode``.

    ``activation`` (``quick_gelu``/``gelu``) overrides the config's (a resumed run keeps the one
    its ``last.pt`` was trained with); by default :func:`training_activation` decides.
    """
    activation = activation or training_activation(cfg)
    model = build_model(
        cfg.model, cfg.reducer, cfg.reducer_options, cfg.frames, cfg.pretrained, cfg.max_words,
        quick_gelu=activation == "quick_gelu",
    )
    if cfg.init:
        load_init(model, cfg.init, cfg.reducer)
    if cfg.train_frames not in (None, cfg.frames) and any(True for _ in model.reducer.parameters()):
        raise ValueError(
            f"reducer {cfg.reducer!r} has parameters shaped for frames={cfg.frames}; "
            f"train it with train_frames={cfg.frames} (got {cfg.train_frames})"
        )
    if cfg.patch_dropout:
        from open_clip.transformer import PatchDropout

        model.clip.visual.patch_dropout = PatchDropout(cfg.patch_dropout)  # no parameters
    configure_trainable(model, cfg.mode, cfg.lora_rank, cfg.freeze_logit_scale)
    return model.to(device)


def training_activation(cfg: TrainConfig) -> str:
    """``quick_gelu`` or ``gelu`` for the run's model: ``cfg.quick_gelu`` if set, else what
    :func:`tokred.models.activation_for` says for ``cfg.model``, ``cfg.pretrained`` and
    ``cfg.init`` (an OpenAI / CLIP4Clip file means QuickGELU, a tokred checkpoint its meta's)."""
    from .models import activation_for

    return activation_for(cfg.model, cfg.pretrained, cfg.init, quick_gelu=cfg.quick_gelu)


def load_init(model: RetrievalModel, path: str, reducer: str) -> None:
    """CLIP weights from ``path`` (any layout ``load_clip_weights`` reads) + matching reducer state."""
    from .checkpoint import extract_clip_state_dict, load_clip_state_dict, read_checkpoint

    obj = read_checkpoint(path)
    if not (isinstance(obj, dict) and "meta" in obj):  # not a tokred model.pt
        load_clip_state_dict(model.clip, extract_clip_state_dict(obj), path)
        return
    model.clip.load_state_dict(obj["model"])
    if obj.get("reducer") and obj["meta"].get("reducer") == reducer:
        model.reducer.load_state_dict(obj["reducer"])


def _train_split(cfg: TrainConfig):
    from .data import load_split

    return load_split(cfg.data, cfg.root, cfg.split, cfg.video_root)


class _Memo(torch.utils.data.Dataset):
    """Training items over the usable videos, clips kept as float16 (the whole frame pool).

    A clip not given up front is decoded at its first fetch and kept. The caption (and, with a
    frame pool, the frames) are drawn per epoch. Every fetch, first or not, returns float16-
    rounded frames (exact resumes). ``index``: the videos to train on (default: all).
    """

    def __init__(self, base, clips=None, index: list[int] | None = None) -> None:
        self.base = base
        if clips is None:
            clips = {}
        self.frames = dict(clips) if isinstance(clips, dict) else dict(enumerate(clips))
        self.index = index if index is not None else list(range(len(base)))

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def preload(self) -> None:
        """Decode every clip not held yet (batched); drop the videos the source skips."""
        t0, split = time.perf_counter(), self.base.split
        todo = [v for v in self.index if v not in self.frames]
        if not todo:
            return
        self.frames.update(self.base.source.clips(videos=todo))
        bad = [split.videos[v].id for v in self.index if v not in self.frames]
        if bad:
            log.warning("skip_errors: leaving out %d undecodable training videos: %s", len(bad),
                        ", ".join(bad[:20]) + (" ..." if len(bad) > 20 else ""))
        self.index = [v for v in self.index if v in self.frames]
        log.info("decoded %d training clips in %.0fs", len(todo), time.perf_counter() - t0)

    def __getitem__(self, i: int) -> dict:
        v = self.index[i]
        if v not in self.frames:
            self.frames[v] = self.base.source.frames(v).to(torch.float16)
        c = self.base.caption_for(v)
        return {
            "frames": self.base.pick(v, self.frames[v]).float(),
            "caption": self.base.split.captions[c],
            "video_index": v,
            "caption_index": c,
        }


def make_dataset(
    cfg: TrainConfig, image_size: int, split=None, clips: torch.Tensor | None = None
) -> torch.utils.data.Dataset:
    """The training dataset: one caption drawn per video per epoch.

    ``clips``: pre-decoded float16 ``[V, T, 3, S, S]`` frames of ``split`` (see
    :func:`tokred.evaluate.load_videos`), used instead of decoding. Without them and with
    ``cfg.cache`` (and no DataLoader workers) clips are kept in memory as float16 once decoded
    (:func:`train` decodes them all before the first step when the run covers the data or
    ``cfg.skip_errors`` is set), unless they would exceed :func:`cache_limit`; then they are
    decoded every epoch. ``cfg.skip_errors`` needs the cached path: undecodable videos are
    found in that first pass, named in a warning and left out (the same on every rank).
    """
    from .data import TrainDataset, check_files

    split = split if split is not None else _train_split(cfg)
    check_files(split)  # every missing video named before any step runs
    pool = cfg.frame_pool or cfg.train_frames or cfg.frames
    ds = TrainDataset(
        split,
        seed=cfg.seed,
        num_frames=pool,
        image_size=image_size,
        sampling=cfg.sampling,
        take=(cfg.train_frames or cfg.frames) if cfg.frame_pool else None,
        skip_errors=cfg.skip_errors,
    )
    if clips is not None:
        want = (len(split.videos), pool)
        if tuple(clips.shape[:2]) != want:
            raise ValueError(f"clips {tuple(clips.shape)} do not match (videos, frames) = {want}")
        return _Memo(ds, clips)
    why = _no_cache_reason(cfg, len(split.videos) * pool * 3 * image_size**2 * 2)
    if why and cfg.skip_errors:
        raise ValueError(f"skip_errors needs the cached first pass over the videos ({why}); "
                         "fix or remove the bad videos instead (their ids are in the error)")
    if why:
        log.info("training clips not cached (%s): decoded every epoch", why)
        return ds
    return _Memo(ds)


def _no_cache_reason(cfg: TrainConfig, need: int) -> str | None:
    """Why the training clips (``need`` bytes as float16) are not kept in memory, or None."""
    if not cfg.cache:
        return "cache=False"
    if cfg.num_workers:
        return f"num_workers={cfg.num_workers}"
    if need > cache_limit():
        return f"{need / 2**30:.1f} GiB of clips > the {cache_limit() / 2**30:.1f} GiB limit"
    return None


def cache_limit() -> int:
    """Bytes of decoded training clips kept in memory: a quarter of RAM, at most 8 GiB."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return min(8 * 2**30, ram // 4)


def epoch_batches(
    n: int, local_batch: int, info: D.DistInfo, seed: int, epoch: int
) -> list[list[int]]:
    """This rank's batches of one epoch: a seeded permutation split rank-major, drop_last."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    global_batch = local_batch * info.world
    out = []
    for s in range(0, n - global_batch + 1, global_batch):
        chunk = perm[s : s + global_batch]
        out.append(chunk[info.rank * local_batch : (info.rank + 1) * local_batch])
    return out


def train_step(
    model: nn.Module,
    batches: list[dict],
    optimizer,
    scaler,
    cfg: TrainConfig,
    info: D.DistInfo,
    tokenizer,
) -> float:
    """One optimizer step over ``len(batches)`` accumulation micro-batches; returns the mean loss.

    The loss is the global-batch InfoNCE (features gathered over ranks); it is multiplied by the
    world size (DDP averages gradients) and divided by the accumulation steps.
    """
    optimizer.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    total = 0.0
    for i, batch in enumerate(batches):
        video = batch["frames"].to(device, non_blocking=True)
        tokens = tokenizer(batch["caption"]).to(device)
        sync = i == len(batches) - 1 or not hasattr(model, "no_sync")
        ctx = model.no_sync() if not sync else _null()
        with ctx, autocast(device.type, cfg.precision):
            text, vid, scale = model(video, tokens)
            loss = contrastive_loss(text, vid, scale)
        scaled = loss * info.world / len(batches)
        with ctx:
            (scaler.scale(scaled) if scaler else scaled).backward()
        total += float(loss.detach()) / len(batches)
    if scaler:
        scaler.unscale_(optimizer)
    if cfg.grad_clip:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    _clamp_logit_scale(model)
    return total


def _null():
    return contextlib.nullcontext()


def autocast(device_type: str, precision: str):
    """Autocast context for ``precision`` (fp32: none; fp16 on CPU is refused: use bf16)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device_type != "cuda":
        raise ValueError("precision='fp16' needs CUDA (GradScaler); on CPU use precision='bf16'")
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type, dtype=dtype)


def save_checkpoint(state: dict, path: Path) -> Path:
    """Write atomically: a temporary file in the same directory, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _clamp_logit_scale(model: nn.Module) -> None:
    clip = getattr(model, "module", model).clip
    with torch.no_grad():
        clip.logit_scale.clamp_(0, math.log(100))  # CLIP's cap on the temperature


def train(cfg: TrainConfig, split=None, clips: torch.Tensor | None = None) -> dict:
    """Train per ``cfg``; returns ``{"checkpoint", "last", "steps", "loss", "wall_s", ...}``.

    Args:
        cfg: the run configuration.
        split: an already loaded training :class:`~tokred.data.Split` (skips reading ``cfg.root``).
        clips: pre-decoded frames of ``split`` (see :func:`make_dataset`).
    """
    info = D.init_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last = _last_state(cfg, out)  # read first: a resumed run keeps the activation it trained with
    model = build_for_training(cfg, info.device, _resume_activation(cfg, last, out))
    ds = make_dataset(cfg, model.video.backbone.spec.image_size, split, clips)
    if isinstance(ds, _Memo) and (cfg.skip_errors or cfg.max_steps is None
                                  or cfg.max_steps * cfg.batch_size >= len(ds)):
        ds.preload()  # before the clock starts: a time budget is spent on steps
    local = _local_batch(cfg, info, len(ds))
    steps_per_epoch = len(ds) // (local * info.world) // cfg.grad_accum
    total = cfg.max_steps or max(1, int(cfg.epochs * steps_per_epoch))
    optimizer = make_optimizer(model, cfg.lr, cfg.betas, cfg.weight_decay)
    budget = 60 * cfg.time_budget if cfg.time_budget else None
    scheduler = make_scheduler(optimizer, total, cfg.warmup, budget)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    run = _Run(cfg, info, model, model, optimizer, scheduler, scaler, out)
    step = _maybe_resume(run, last)  # before DDP wraps the model: DDP broadcasts rank 0's weights
    del last  # copied into model and optimizer; not held for the whole run
    run.ddp = _wrap(model, info)
    stats = _loop(run, ds, local, steps_per_epoch, total, step)
    if info.is_main:
        stats["checkpoint"] = str(_save_final(model, cfg, out, stats))
    D.barrier()
    return stats


def _local_batch(cfg: TrainConfig, info: D.DistInfo, n: int) -> int:
    per = info.world * cfg.grad_accum
    if cfg.batch_size % per:
        raise ValueError(f"batch_size={cfg.batch_size} must divide by world_size*grad_accum={per}")
    if cfg.batch_size > n:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {n} training videos")
    return cfg.batch_size // per


def _wrap(model: nn.Module, info: D.DistInfo) -> nn.Module:
    if not info.distributed:
        return model
    ids = [torch.device(info.device).index] if info.device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


@dataclass
class _Run:
    """The objects one training run threads through its loop, resume and checkpoints."""

    cfg: TrainConfig
    info: D.DistInfo
    model: RetrievalModel
    ddp: nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    out: Path


def _last_state(cfg: TrainConfig, out: Path) -> dict | None:
    """``last.pt`` of the run in ``out`` when resuming (None: not resuming, or none yet)."""
    last = out / "last.pt"
    if not cfg.resume:
        return None
    if not last.is_file():
        log.warning("--resume: no %s yet; starting from step 0", last)
        return None
    return load_checkpoint(last)


def _resume_activation(cfg: TrainConfig, ck: dict | None, out: Path) -> str | None:
    """The activation ``last.pt`` was trained with (None: not resuming).

    Raises:
        ValueError: ``cfg.quick_gelu`` asks for the other one.
    """
    if ck is None:
        return None
    from .models import meta_activation

    meta = dict(ck.get("meta") or {})
    meta.setdefault("pretrained", (ck.get("config") or {}).get("pretrained"))
    act = meta_activation(meta, str(out / "last.pt"))
    if cfg.quick_gelu is not None and (act == "quick_gelu") != cfg.quick_gelu:
        raise ValueError(f"{out / 'last.pt'} was trained with {act}; resume it without "
                         f"quick_gelu={cfg.quick_gelu} or start a new run directory")
    if act != training_activation(cfg):
        log.warning("resuming with %s, the activation %s was trained with", act, out / "last.pt")
    return act


def _maybe_resume(run: _Run, ck: dict | None) -> int:
    """Restore model, optimizer, scheduler, scaler and RNG state from ``last.pt`` (``ck``)."""
    model, optimizer, scheduler, scaler = run.model, run.optimizer, run.scheduler, run.scaler
    last = run.out / "last.pt"
    if ck is None:
        return 0
    model.load_model_state(ck)
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    if scaler and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    restore_rng(ck["rng"])
    log.info("resumed %s at step %d", last, ck["step"])
    return int(ck["step"])


def _loop(run: _Run, ds, local: int, steps_per_epoch: int, total: int, step: int) -> dict:
    from .data import collate

    cfg, info, model, scheduler, out = run.cfg, run.info, run.model, run.scheduler, run.out

    t0, losses, stopped = time.perf_counter(), [], None
    bar = _progress(info, total, step)
    log_file = (out / "train_log.jsonl").open("a", buffering=1) if info.is_main else None
    while step < total and stopped is None:
        epoch, offset = divmod(step, steps_per_epoch)
        ds.set_epoch(epoch)
        batches = epoch_batches(len(ds), local, info, cfg.seed, epoch)[offset * cfg.grad_accum :]
        loader = torch.utils.data.DataLoader(
            ds, batch_sampler=batches, collate_fn=collate, num_workers=cfg.num_workers
        )
        it = iter(loader)
        for _ in range(len(batches) // cfg.grad_accum):
            micro = [next(it) for _ in range(cfg.grad_accum)]
            loss = train_step(run.ddp, micro, run.optimizer, run.scaler, cfg, info, model.tokenizer)
            _sync_clock(scheduler, info)
            scheduler.step()
            step += 1
            losses.append(loss)
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if log_file:
                log_file.write(
                    json.dumps(
                        {
                            "step": step,
                            "epoch": epoch,
                            "loss": loss,
                            "lr": scheduler.get_last_lr()[0],
                        }
                    )
                    + "\n"
                )
            stopped = _should_stop(cfg, step, total) or _budget_spent(scheduler, step, total)
            if stopped or (cfg.save_every and step % cfg.save_every == 0) or step == total:
                _save_last(run, step)
            if stopped or step >= total:
                break
    if bar:
        bar.close()
    if log_file:
        log_file.close()
    wall = time.perf_counter() - t0
    return {
        "last": str(out / "last.pt"),
        "steps": step,
        "total_steps": total,
        "loss": losses[-1] if losses else float("nan"),
        "losses": losses,
        "wall_s": wall,
        "stopped": stopped,
        "world_size": info.world,
        "config": asdict(cfg),
    }


def _should_stop(cfg, step: int, total: int) -> str | None:
    if cfg.stop_at_step is not None and step >= cfg.stop_at_step and step < total:
        return f"stop_at_step={cfg.stop_at_step}"
    return None


def _budget_spent(scheduler, step: int, total: int) -> str | None:
    sched = scheduler.lr_lambdas[0]
    # rank 0 decides, so every rank stops at the same step
    if sched.budget_s and step < total and D.broadcast_scalar(sched.time_fraction() >= 1.0):
        log.info("time budget %.0fs spent at step %d of %d", sched.budget_s, step, total)
        return f"time_budget={sched.budget_s / 60:g}min"
    return None


def _progress(info: D.DistInfo, total: int, step: int):
    if not info.is_main:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True)


def _meta(cfg: TrainConfig, model: RetrievalModel) -> dict:
    """What rebuilding the model needs; ``activation`` is read off the built network."""
    from .models import activation_of

    return {
        "model": cfg.model,
        "activation": activation_of(model.clip),
        "reducer": cfg.reducer,
        "reducer_options": cfg.reducer_options,
        "frames": cfg.frames,
        "max_words": cfg.max_words,
        "mode": cfg.mode,
        "lora_rank": cfg.lora_rank if cfg.mode == "lora" else None,
    }


def _sync_clock(scheduler, info: D.DistInfo) -> None:
    """Under DDP every rank follows rank 0's clock (same LR, same stop step on all ranks)."""
    sched = scheduler.lr_lambdas[0]
    if sched.budget_s and info.distributed:
        sched.set_elapsed(D.broadcast_scalar(sched.clock()))


def _save_last(run: _Run, step: int) -> None:
    if not run.info.is_main:
        return
    run.scheduler.lr_lambdas[0].pause()  # the clock's elapsed time goes into the state dict
    state = run.model.model_state()
    state.update(
        optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(),
        scaler=run.scaler.state_dict() if run.scaler else None,
        step=step,
        rng=rng_state(),
        meta=_meta(run.cfg, run.model),
        config=asdict(run.cfg),
    )
    save_checkpoint(state, run.out / "last.pt")


def _save_final(model: RetrievalModel, cfg: TrainConfig, out: Path, stats: dict) -> Path:
    """``model.pt``: plain CLIP weights (LoRA folded into a copy) + reducer state + meta."""
    state = model.model_state()
    if cfg.mode == "lora":
        import copy

        from .lora import fold_lora

        clip = copy.deepcopy(model.clip)
        fold_lora(clip)
        state["model"] = clip.state_dict()
    meta = dict(_meta(cfg, model), lora_rank=None, steps=stats["steps"])
    return save_checkpoint({**state, "meta": meta}, out / "model.pt")


def config_from_args(argv: list[str] | None) -> TrainConfig:
    """Parse ``tokred train`` flags into a :class:`TrainConfig` (one flag per field)."""
    ap = argparse.ArgumentParser(prog="tokred train", description=__doc__.splitlines()[0])
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = TrainConfig.__dataclass_fields__[f.name]
        if f.type in ("bool", "bool | None"):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif f.name in ("reducer_options", "betas"):
            ap.add_argument(flag, type=json.loads, default=None, help="JSON, e.g. '{\"r\": 2}'")
        else:
            typ = {"int": int, "float": float}.get(f.type.split(" |")[0], str)
            ap.add_argument(
                flag,
                type=typ,
                default=None,
                help=f"default: {default.default!r}" if default.default is not None else None,
            )
    ns = {k: v for k, v in vars(ap.parse_args(argv)).items() if v is not None}
    return TrainConfig(**ns)


def main(argv: list[str] | None = None) -> int:
    """``tokred train``: fine-tune (or train from scratch) and write ``OUT/model.pt``."""
    cfg = config_from_args(argv)
    try:
        stats = train(cfg)
    finally:
        D.cleanup()
    if D.current().is_main and stats.get("checkpoint"):
        print(
            f"trained {stats['steps']} steps in {stats['wall_s']:.0f}s, loss {stats['loss']:.4f}"
            f"; checkpoint {stats['checkpoint']}"
        )
    return 0
