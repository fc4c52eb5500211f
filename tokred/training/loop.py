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

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from tokred.retrieval import RetrievalModel, contrastive_loss
from tokred.training import distributed as D
from tokred.training.build import build_for_training
from tokred.training.cache import FIX, make_dataset
from tokred.training.checkpoint import (
    checkpoint_meta,
    last_state,
    open_train_log,
    restore_rng,
    resume_activation,
    rng_state,
    save_checkpoint,
    save_final,
)
from tokred.training.config import TrainConfig
from tokred.training.control import (
    graceful_interrupt,
    interrupted,
    progress_bar,
    report_step,
    stop_requested,
    time_up,
)
from tokred.training.optim import make_optimizer, make_scheduler
from tokred.training.precision import autocast

log = logging.getLogger(__name__)


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
        # one context over forward and backward: DDP's no_sync() is a single-use context manager
        with model.no_sync() if not sync else contextlib.nullcontext():
            with autocast(device.type, cfg.precision):
                text, vid, scale = model(video, tokens)
                loss = contrastive_loss(text, vid, scale)
            scaled = loss * info.world / len(batches)
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


def _clamp_logit_scale(model: nn.Module) -> None:
    clip = getattr(model, "module", model).clip
    with torch.no_grad():
        clip.logit_scale.clamp_(0, math.log(100))  # CLIP's cap on the temperature


def train(cfg: TrainConfig, split=None, clips: torch.Tensor | None = None) -> dict:
    """Train per ``cfg``; returns ``{"checkpoint", "last", "steps", "loss", "wall_s",
    "trainable_params", ...}``.

    Every video the run will use is decoded before the first step when the clips are cached
    (a bad one stops the run there, or is left out with ``skip_errors``); uncached batches are
    decoded before their step. A run stopped by Ctrl-C (after the current step) or by a video
    that cannot be decoded saves ``last.pt`` first, then raises.

    Args:
        cfg: the run configuration.
        split: an already loaded training :class:`~tokred.data.Split` (skips reading ``cfg.root``).
        clips: pre-decoded frames of ``split`` (see :func:`make_dataset`).

    Raises:
        ValueError: ``cfg.resume`` with a ``last.pt`` written with other settings.
        VideoDecodeError: a video the run needs cannot be decoded (without ``skip_errors``).
        KeyboardInterrupt: interrupted (``last.pt`` holds the last finished step).
    """
    info = D.init_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last = last_state(cfg, out)  # read first: a resumed run keeps the activation it trained with
    model = build_for_training(cfg, info.device, resume_activation(cfg, last, out),
                               resuming=last is not None)
    ds = make_dataset(cfg, model.video.backbone.spec.image_size, split, clips)
    if cfg.skip_errors:
        ds.preload()  # every clip first, so the bad ones are left out of every epoch alike
    local = _local_batch(cfg, info, len(ds))
    steps_per_epoch = len(ds) // (local * info.world) // cfg.grad_accum
    total = cfg.max_steps or max(1, int(cfg.epochs * steps_per_epoch))
    optimizer = make_optimizer(model, cfg.lr, cfg.betas, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, total, cfg.warmup)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    run = _Run(cfg, info, model, model, optimizer, scheduler, scaler, out)
    step = _maybe_resume(run, last)  # before DDP wraps the model: DDP broadcasts rank 0's weights
    del last  # copied into model and optimizer; not held for the whole run
    # before the clock starts (a time limit is spent on steps) and before step 1 (a bad video
    # stops the run with nothing trained)
    ds.preload(videos_used(len(ds), local, info, cfg, step, total, steps_per_epoch))
    run.ddp = _wrap(model, info)
    stats = _loop(run, ds, local, steps_per_epoch, total, step)
    stats["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if info.is_main:
        stats["checkpoint"] = str(save_final(model, cfg, out, stats))
    D.barrier()
    return stats


def videos_used(n: int, local: int, info: D.DistInfo, cfg: TrainConfig, step: int, total: int,
                steps_per_epoch: int) -> set[int]:
    """Dataset positions this rank's batches touch from ``step`` to ``total``."""
    used: set[int] = set()
    while step < total and len(used) < n:
        epoch, offset = divmod(step, steps_per_epoch)
        batches = epoch_batches(n, local, info, cfg.seed, epoch)[offset * cfg.grad_accum :]
        steps = min(len(batches) // cfg.grad_accum, total - step)
        for batch in batches[: steps * cfg.grad_accum]:
            used.update(batch)
        step += steps
    return used


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
    loss: float = math.nan  # of the last step done; resumed from last.pt


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
    run.loss = float(ck.get("loss", math.nan))
    log.info("resumed %s at step %d", last, ck["step"])
    return int(ck["step"])


def _loop(run: _Run, ds, local: int, steps_per_epoch: int, total: int, step: int) -> dict:
    from tokred.data import VideoDecodeError, collate

    cfg, info, model, scheduler, out = run.cfg, run.info, run.model, run.scheduler, run.out
    t0, losses, stopped, first = time.perf_counter(), [], None, step
    replaced: set[int] = set()
    bar = progress_bar(info, total, step)
    log_file = open_train_log(out / "train_log.jsonl", step) if info.is_main else None
    with graceful_interrupt() as interrupt:
        try:
            while step < total and stopped is None:
                epoch, offset = divmod(step, steps_per_epoch)
                ds.set_epoch(epoch)
                batches = epoch_batches(len(ds), local, info, cfg.seed, epoch)
                batches = batches[offset * cfg.grad_accum :]
                loader = torch.utils.data.DataLoader(
                    ds, batch_sampler=batches, collate_fn=collate, num_workers=cfg.num_workers
                )
                it = iter(loader)
                for _ in range(len(batches) // cfg.grad_accum):
                    micro = [next(it) for _ in range(cfg.grad_accum)]  # decoded before the step
                    replaced.update(v for b in micro for r in b["replaced"] for v in r)
                    loss = train_step(run.ddp, micro, run.optimizer, run.scaler, cfg, info,
                                      model.tokenizer)
                    scheduler.step()
                    step += 1
                    losses.append(loss)
                    run.loss = loss
                    report_step(bar, log_file, step, epoch, loss, scheduler.get_last_lr()[0])
                    stopped = (stop_requested(cfg, step, total) or time_up(cfg, t0, step, total)
                               or interrupted(interrupt))
                    if stopped or (cfg.save_every and step % cfg.save_every == 0) or step == total:
                        _save_last(run, step)
                    if stopped or step >= total:
                        break
        except VideoDecodeError as err:  # raised while fetching: the last step is complete
            raise _stopped_by_video(err, run, step, first) from None
        finally:
            if bar:
                bar.close()
            if log_file:
                log_file.close()
    if stopped == "interrupted":
        log.warning("interrupted at step %d of %d; %s saved, --resume continues", step, total,
                    out / "last.pt")
        raise KeyboardInterrupt
    skipped = ds.skipped + [ds.base.split.videos[v].id for v in sorted(replaced)]
    if skipped:
        log.warning("skip_errors: %d undecodable videos skipped: %s", len(skipped),
                    ", ".join(skipped[:20]))
    return {
        "last": str(out / "last.pt"),
        "steps": step,
        "total_steps": total,
        "loss": run.loss,  # a resumed run with no step left: the loss it ended with
        "losses": losses,
        "wall_s": time.perf_counter() - t0,
        "stopped": stopped,
        "skipped_videos": len(skipped),
        "skipped_ids": skipped,
        "world_size": info.world,
        "config": asdict(cfg),
    }


def _stopped_by_video(err: Exception, run: _Run, step: int, first: int) -> Exception:
    """The error of a batch that could not be decoded, after saving the steps done so far."""
    from tokred.data import VideoDecodeError

    saved = ""
    if step > first:
        _save_last(run, step)
        saved = f"; {run.out / 'last.pt'} holds step {step} (--resume continues)"
    return VideoDecodeError(f"{err}\nTraining stopped before step {step + 1}{saved}. To train "
                            f"on: {FIX}")


def _save_last(run: _Run, step: int) -> None:
    if not run.info.is_main:
        return
    state = run.model.model_state()
    state.update(
        optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(),
        scaler=run.scaler.state_dict() if run.scaler else None,
        step=step,
        loss=run.loss,
        rng=rng_state(),
        meta=checkpoint_meta(run.cfg, run.model),
        config=asdict(run.cfg),
    )
    save_checkpoint(state, run.out / "last.pt")


