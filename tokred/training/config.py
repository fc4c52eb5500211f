"""The configuration of a training run: one field per ``tokred train`` flag, checked on creation."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from tokred.cli.args import (
    FRACTION,
    NONNEG,
    NONNEG_INT,
    POSITIVE,
    POSITIVE_INT,
    Rule,
    check_optional,
)
from tokred.training.precision import PRECISIONS

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
        cache / skip_errors: decode the training clips once before training and keep them in
            memory (float16, up to :func:`cache_limit`). An undecodable video stops the run
            before its first step (when cached) or before the step that needs it, after saving
            ``last.pt``; with ``skip_errors`` it is named and left out instead (cached) or
            replaced by the next good video and counted in the stats' ``skipped_videos``.
        bad_videos: a file of video ids to leave out (one per line, text after a tab ignored),
            as written by ``tokred data check``; the way to train on a large dataset with known
            bad files without decoding every clip first.
        trust_pickle: allow checkpoints (``init``, ``pretrained``, ``last.pt``) and MSVD
            caption pickles holding arbitrary Python objects. Loading such a file can run code
            hidden in it: only for files from a trusted source.
        save_every: also save ``last.pt`` every this many steps (0: only at the end and when
            stopped or interrupted).
        resume: continue from ``out/last.pt``, which must have been written with the same
            settings except :data:`RESUME_FREE`.
        stop_at_step: stop (after saving) at this step as if interrupted; for resume tests.
        time_limit: minutes; a safety stop, not a length: training runs its ``max_steps`` /
            ``epochs`` schedule (the LR follows steps only) unless this wall time is spent
            first, in which case it stops after the current step, saves ``last.pt`` and records
            ``stopped: time_limit=...`` (the result is then not the configured recipe; the
            sweep report says so). Resuming continues the schedule.
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
    bad_videos: str | None = None
    trust_pickle: bool = False
    save_every: int = 0
    resume: bool = False
    stop_at_step: int | None = None
    time_limit: float | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.mode not in RECIPES:
            raise ValueError(f"mode must be one of {sorted(RECIPES)}, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{self.precision!r}")
        if self.frame_pool is not None and self.frame_pool < (self.train_frames or self.frames):
            raise ValueError(
                f"frame_pool={self.frame_pool} must be at least train_frames "
                f"({self.train_frames or self.frames}): the pool is what frames are drawn from"
            )
        if self.patch_dropout and self.reducer != "none":
            raise ValueError(
                f"patch_dropout={self.patch_dropout} needs reducer 'none' (got "
                f"{self.reducer!r}, whose schedule counts every patch); set patch_dropout=0"
            )
        self.lr = RECIPES[self.mode][0] if self.lr is None else self.lr
        self.betas = tuple(self.betas or RECIPES[self.mode][1])
        if self.freeze_logit_scale is None:
            self.freeze_logit_scale = self.mode == "lora"


RULES: dict[str, Rule] = {  # numeric fields; None stays "unset" for the optional ones
    "lora_rank": POSITIVE_INT, "frames": POSITIVE_INT, "train_frames": POSITIVE_INT,
    "frame_pool": POSITIVE_INT, "max_words": POSITIVE_INT, "batch_size": POSITIVE_INT,
    "grad_accum": POSITIVE_INT, "epochs": POSITIVE, "max_steps": POSITIVE_INT,
    "lr": POSITIVE, "weight_decay": NONNEG, "warmup": FRACTION, "grad_clip": NONNEG,
    "patch_dropout": FRACTION, "seed": NONNEG_INT, "num_workers": NONNEG_INT,
    "save_every": NONNEG_INT, "stop_at_step": POSITIVE_INT, "time_limit": POSITIVE,
    "threads": POSITIVE_INT,
}
HINTS = {  # why a value that looks plausible is refused
    "max_steps": "; leave it unset (None) to train for `epochs`",
    "warmup": " (a fraction of the steps, e.g. 0.1)",
    "grad_clip": " (0 turns clipping off)",
    "epochs": " (passes over the data; or set max_steps for a number of steps)",
}
# Fields a resumed run may change: how it runs, not what it trains. The starting weights
# (init, pretrained) are replaced by last.pt's, and last.pt's activation is kept (a
# contradicting quick_gelu is refused by checkpoint.resume_activation, naming both).
RESUME_FREE = frozenset({"resume", "out", "threads", "num_workers", "device", "stop_at_step",
                         "time_limit", "save_every", "trust_pickle", "init", "pretrained",
                         "quick_gelu"})


def check_fields(cfg: TrainConfig) -> None:
    """Check every field's type and range in place (numbers through :data:`RULES`).

    Raises:
        ValueError: the first bad field, named with the valid values.
    """
    for f in fields(cfg):
        value, kind = getattr(cfg, f.name), str(f.type)
        if f.name in RULES:
            try:
                setattr(cfg, f.name, check_optional(RULES[f.name], value, f.name))
            except ValueError as err:
                raise ValueError(f"{err}{HINTS.get(f.name, '')}") from None
        elif value is None and kind.endswith("| None"):
            continue
        elif kind.startswith("bool") and not isinstance(value, bool):
            raise ValueError(f"{f.name} must be true or false, got {value!r}")
        elif kind.startswith("str") and not isinstance(value, str):
            raise ValueError(f"{f.name} must be a string, got {value!r}")
        elif kind == "dict" and not isinstance(value, dict):
            raise ValueError(f"{f.name} must be a mapping of option names to values, got "
                             f"{value!r}")
    _check_choices(cfg)


def _check_choices(cfg: TrainConfig) -> None:
    from tokred.data.readers import READERS
    from tokred.data.video import SAMPLINGS

    if cfg.data not in READERS:
        raise ValueError(f"data must be one of {sorted(READERS)}, got {cfg.data!r}")
    if cfg.sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {list(SAMPLINGS)}, got {cfg.sampling!r}")
    if cfg.betas is not None:
        betas = list(cfg.betas) if isinstance(cfg.betas, (list, tuple)) else [cfg.betas]
        if len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {cfg.betas!r}")
        cfg.betas = tuple(FRACTION.check(b, "each of betas") for b in betas)
    if cfg.device != "auto":
        import torch

        try:
            torch.device(cfg.device)
        except (RuntimeError, ValueError):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}") \
                from None
