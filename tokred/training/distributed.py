"""Distributed helpers: torchrun set-up (gloo on CPU, nccl on GPU), rank queries, the gather.

Under ``torchrun --nproc_per_node N -m tokred.cli train ...`` the environment carries ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT``; :func:`init_distributed` reads them.
Without them everything degrades to a single process (world size 1, rank 0).

The contrastive loss needs every rank's features (the global batch). :func:`gather_features`
all-gathers them and puts the local tensor back in its own slot, so autograd reaches the local
slice only. Each rank then computes the identical global loss; scaling it by the world size
before ``backward`` cancels DDP's gradient averaging, so N ranks give exactly the update of one
process on the same global batch. Tensors used directly by the loss on every rank (the logit
scale) must see their gradient divided by the world size: :func:`share_grad`. The official
CenterCLIP/TempMe codes skip both corrections and train with gradients 1/N too small
(docs/algorithms.md §0, item 6).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Initialise the process group from torchrun's environment (no-op when not launched by it).

    Args:
        device: ``cpu``, ``cuda`` or ``auto`` (cuda when available).
        backend: process-group backend; default nccl on CUDA, gloo on CPU.

    Returns:
        This process's :class:`DistInfo`; on CUDA the device is ``cuda:<LOCAL_RANK>``.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "device='cuda' requested but CUDA is not available; pass device='cpu'"
            )
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if device.startswith("cuda") else "gloo")
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        log.info("process group %s: rank %d of %d on %s", backend, rank, world, device)
    return DistInfo(rank, world, local, device)


def current() -> DistInfo:
    """The :class:`DistInfo` of an already initialised process group (world 1 if none)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo()


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Synchronise all ranks (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_features(x: Tensor) -> Tensor:
    """All-gather ``[b, D]`` from every rank into ``[world*b, D]``, rank-major.

    Only this rank's slot carries autograd history (the local tensor itself); the other slots are
    constants. Every rank must pass the same ``b``.
    """
    info = current()
    if not info.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(info.world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[info.rank] = x
    return torch.cat(parts)  # [world*b, D]


def share_grad(t: Tensor, world: int | None = None) -> Tensor:
    """``t`` in value, ``t / world`` in gradient: for tensors every rank uses in the global loss.

    With the loss scaled by ``world`` and DDP averaging, this leaves their gradient exact.
    """
    world = current().world if world is None else world
    if world == 1:
        return t
    return t.detach() + (t - t.detach()) / world


def _comm_device() -> torch.device:
    """NCCL only moves CUDA tensors; gloo takes CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_scalar(value: float, src: int = 0) -> float:
    """Rank ``src``'s value of a Python scalar on every rank."""
    if not current().distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.broadcast(t, src)
    return float(t.item())


def free_port() -> int:
    """A free TCP port on localhost (for spawning test process groups)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
