"""What ends a training run early and what it reports per step: Ctrl-C (stop after the step and
save), ``stop_at_step``, the ``time_limit`` safety stop, the progress bar and ``train_log.jsonl``.

Every stop is decided on rank 0 and broadcast, so all ranks stop at the same step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time

from tokred.training import distributed as D
from tokred.training.config import TrainConfig

log = logging.getLogger(__name__)


def report_step(bar, log_file, step: int, epoch: int, loss: float, lr: float) -> None:
    """One step on the progress bar and in ``train_log.jsonl``."""
    if bar:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
    if log_file:
        log_file.write(json.dumps({"step": step, "epoch": epoch, "loss": loss, "lr": lr}) + "\n")


@contextlib.contextmanager
def graceful_interrupt():
    """While training: the first Ctrl-C asks to stop after the current step (and save); a
    second one interrupts at once. Yields a one-element list, true once interrupted."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be set in the main thread
        return

    def handler(signum, frame) -> None:
        flag[0] = True
        signal.signal(signal.SIGINT, previous)
        log.warning("Ctrl-C: stopping after this step and saving last.pt (Ctrl-C again to "
                    "stop at once, without saving)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupted(flag: list) -> str | None:
    # every rank stops at the same step (each received the signal at its own moment)
    return "interrupted" if D.broadcast_scalar(float(flag[0])) else None


def stop_requested(cfg, step: int, total: int) -> str | None:
    if cfg.stop_at_step is not None and step >= cfg.stop_at_step and step < total:
        return f"stop_at_step={cfg.stop_at_step}"
    return None


def time_up(cfg: TrainConfig, t0: float, step: int, total: int) -> str | None:
    """The safety stop: ``time_limit`` minutes of this run's steps are spent before the end."""
    if not cfg.time_limit or step >= total:
        return None
    # rank 0 decides, so every rank stops at the same step
    if D.broadcast_scalar(time.perf_counter() - t0 >= 60 * cfg.time_limit):
        log.warning("time_limit=%gmin reached at step %d of %d: training stopped short of its "
                    "schedule (results are not the configured recipe)", cfg.time_limit, step, total)
        return f"time_limit={cfg.time_limit:g}min"
    return None


def progress_bar(info: D.DistInfo, total: int, step: int):
    if not info.is_main:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True)
