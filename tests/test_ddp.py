"""DDP (gloo, 2 processes) gives the loss and parameter update of one process on the same batch."""

from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp

from tokred.retrieval import RetrievalModel
from tokred.training import TrainConfig
from tokred.training import distributed as D
from tokred.training.loop import train_step
from tokred.training.optim import configure_trainable, make_optimizer

GLOBAL_BATCH = 4
CAPTIONS = [
    "a red circle moves left",
    "a blue square appears",
    "a small green cross",
    "a white triangle moves up",
]


def tiny_clip():
    """A 2-block CLIP (16 px frames, 2x2 patch grid, width 32) for fast tests."""
    import open_clip

    return open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 16, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    )


def _setup():
    torch.manual_seed(0)
    model = RetrievalModel(tiny_clip(), None, frames=2).double()
    configure_trainable(model, "scratch")
    opt = make_optimizer(model, 1e-2, (0.9, 0.98), 0.2)
    video = torch.randn(
        GLOBAL_BATCH, 2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    # clipping off: Adam's first step (and a clipped gradient) are nearly invariant to a wrong
    # gradient scale, so the gradients themselves are compared as well as the update
    cfg = TrainConfig(mode="scratch", grad_clip=None)
    return model, opt, video, cfg


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.clip.state_dict().items()}


def _grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.clip.named_parameters()}


def _micro_batches(video, rows_per_batch):
    """Consecutive micro-batches of the given rows (video index lists)."""
    return [{"frames": video[rows], "caption": [CAPTIONS[i] for i in rows]}
            for rows in rows_per_batch]


def _worker(rank: int, world: int, port: int, out: str, accum: int = 1) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    info = D.init_distributed("cpu")
    model, opt, video, cfg = _setup()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    b = GLOBAL_BATCH // world
    mine = list(range(rank * b, (rank + 1) * b))
    per = b // accum  # rank r's micro-batch i: its rows i*per .. (i+1)*per
    batches = _micro_batches(video, [mine[i * per:(i + 1) * per] for i in range(accum)])
    loss = train_step(ddp, batches, opt, None, cfg, info, model.tokenizer)
    if rank == 0:
        torch.save({"loss": loss, "params": _params(model), "grads": _grads(model)}, out)
    D.cleanup()


def test_two_process_step_equals_single_process(tmp_path):
    model, opt, video, cfg = _setup()
    before = _params(model)
    loss = train_step(
        model,
        [{"frames": video, "caption": CAPTIONS}],
        opt,
        None,
        cfg,
        D.DistInfo(),
        model.tokenizer,
    )
    single, grads = _params(model), _grads(model)

    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(2, D.free_port(), out), nprocs=2, join=True)
    ddp = torch.load(out)

    assert abs(ddp["loss"] - loss) < 1e-5
    for k, g in grads.items():
        torch.testing.assert_close(ddp["grads"][k], g, atol=1e-5, rtol=1e-5, msg=k)
    moved = 0
    for k, p in single.items():
        torch.testing.assert_close(ddp["params"][k], p, atol=1e-5, rtol=0, msg=k)
        moved += int(not torch.equal(p, before[k]))
    assert moved > 10 and not torch.equal(single["logit_scale"], before["logit_scale"])


def test_two_process_accumulated_step_equals_single_process(tmp_path):
    """grad_accum 2 under DDP: the non-final micro-batch runs forward and backward inside one
    no_sync() (a single-use context manager), the last one syncs. Global micro-batch i holds row
    i of each rank's half, so the single-process twin accumulates over rows [0, 2] then [1, 3]."""
    model, opt, video, cfg = _setup()
    loss = train_step(model, _micro_batches(video, [[0, 2], [1, 3]]), opt, None, cfg,
                      D.DistInfo(), model.tokenizer)
    single, grads = _params(model), _grads(model)

    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(2, D.free_port(), out, 2), nprocs=2, join=True)
    ddp = torch.load(out)

    assert abs(ddp["loss"] - loss) < 1e-5
    for k, g in grads.items():
        torch.testing.assert_close(ddp["grads"][k], g, atol=1e-5, rtol=1e-5, msg=k)
    for k, p in single.items():
        torch.testing.assert_close(ddp["params"][k], p, atol=1e-5, rtol=0, msg=k)


def test_share_grad_keeps_value_and_divides_gradient():
    s = torch.tensor(2.0, requires_grad=True)
    shared = D.share_grad(s, world=2)
    assert shared.item() == 2.0
    (shared * 3.0 * 2).backward()  # loss x world; each of 2 ranks then contributes half
    assert s.grad.item() == 3.0
