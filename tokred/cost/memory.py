"""Memory of a forward, three ways, each with its own meaning.

1. :func:`activation_bytes`: bytes of the tensors autograd saves for backward during a training
   forward, deduplicated by storage, parameters and buffers excluded. Device-independent and
   deterministic (it depends on shapes only), so it compares reducers on any machine.
   :func:`activation_per_video` takes the slope between batch 1 and 2: what each extra video
   costs, without batch-independent saved tensors (e.g. a LoRA-merged weight ``W + BA``).
2. :func:`cuda_peak_mb`: peak allocated CUDA memory per phase, with the peak statistics reset
   between phases (weights, gradients, optimiser state and activations: what a GPU must hold).
3. :func:`peak_rss_mb`: on CPU, the peak resident memory of one phase measured in a fresh
   subprocess, above the resident memory after model and input creation (the kernel's high-water
   mark is reset there through ``/proc/self/clear_refs`` when possible, else ``ru_maxrss``).
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import resource
import subprocess
import sys
from collections.abc import Iterable
from typing import Callable

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)
MB = 2**20


def _storage_key(t: Tensor) -> tuple[int, int] | None:
    try:
        st = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, subclasses)
        return None
    return (st.data_ptr(), st.nbytes()) if st.nbytes() else None


def activation_bytes(fn: Callable[[], Tensor], exclude: Iterable[Tensor] = ()) -> int:
    """Bytes saved for backward by ``fn()`` (a forward returning a loss or output).

    Every tensor handed to autograd's pack hook is recorded by its storage (a storage saved by
    several ops, or several views of one storage, counts once, in full: the whole storage stays
    alive). Storages of ``exclude`` (parameters, buffers) are skipped. The graph is released
    before returning; it is for counting only (do not call backward through it).
    """
    skip = {k[0] for k in map(_storage_key, exclude) if k is not None}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        key = _storage_key(t)
        if key is not None and key[0] not in skip:
            seen[key[0]] = max(seen.get(key[0], 0), key[1])
        # keep the storage alive (so no address is reused while counting) but not the autograd
        # node: an op's own output packed with its grad_fn forms a cycle Python's GC cannot see
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def module_tensors(module: nn.Module) -> list[Tensor]:
    """Parameters and buffers of ``module`` (what :func:`activation_bytes` should exclude)."""
    return [*module.parameters(), *module.buffers()]


def activation_per_video(
    forward: Callable[[int], Tensor], exclude: Iterable[Tensor] = ()
) -> tuple[float, float]:
    """(bytes per video, batch-independent bytes) from batches of 1 and 2 videos.

    Args:
        forward: ``forward(batch)`` runs one training forward on ``batch`` videos and returns
            its output (built inside, so that only its own tensors are seen).
        exclude: tensors never counted (parameters, buffers).
    """
    exclude = list(exclude)
    one = activation_bytes(lambda: forward(1), exclude)
    two = activation_bytes(lambda: forward(2), exclude)
    return float(two - one), float(2 * one - two)


def finetune_activation_bytes(module: nn.Module, forward: Callable[[], Tensor]) -> int:
    """:func:`activation_bytes` of ``forward()`` as full fine-tuning runs it.

    ``module`` is put in training mode with every parameter trainable (both restored
    afterwards); its parameters and buffers are excluded from the count.
    """
    flags = [(p, p.requires_grad) for p in module.parameters()]
    was_training = module.training
    module.train()
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad():
            return activation_bytes(forward, module_tensors(module))
    finally:
        module.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)


def cuda_peak_mb(phases: dict[str, Callable[[], object]], device: torch.device | str) -> dict:
    """Peak allocated CUDA memory (MiB) of each phase, run in order.

    The peak statistics are reset before every phase after a synchronise, so each value is the
    high-water mark of that phase alone (including what earlier phases left allocated, e.g. the
    weights); ``base_mb`` is what was allocated when the phase started.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"cuda_peak_mb needs a CUDA device, got {dev}; on CPU use peak_rss_mb")
    out = {}
    for name, fn in phases.items():
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        out[name] = {"peak_mb": torch.cuda.max_memory_allocated(dev) / MB, "base_mb": base / MB}
    return out


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_rss_here(run: Callable[[], object]) -> dict:
    """Peak RSS growth (MiB) while ``run()`` executes in this process (call it in a fresh one)."""
    gc.collect()
    if _reset_peak_rss() and _status_kb("VmHWM") is not None:
        base = _status_kb("VmRSS")
        run()
        return {
            "peak_rss_mb": (_status_kb("VmHWM") - base) / 1024,
            "base_rss_mb": base / 1024,
            "method": "VmHWM after clear_refs",
        }
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_rss_mb": (peak - base) / 1024,
        "base_rss_mb": base / 1024,
        "method": "ru_maxrss growth (a lower bound if model creation peaked higher)",
    }


DEFAULT_BUILDER = "tokred.cost.build:rss_job"


def peak_rss_mb(job: dict, timeout: float = 900.0) -> dict:
    """Run one memory job in a fresh Python process and return its result.

    Args:
        job: ``builder`` (a ``"module:function"`` path, default :func:`tokred.cost.build.rss_job`
            that returns the callable to measure), ``threads`` (torch threads in the child) and
            the builder's keyword arguments (for ``rss_job``: model, reducer, options, frames,
            batch, phase ``"infer"`` or ``"train"``, mode ``"full"`` or ``"lora"``, precision).

    Raises:
        RuntimeError: the child failed, with its stderr tail.
    """
    from tokred.plugins import loaded_plugins

    # the child is a fresh interpreter: it loads the plugin files this process loaded (--plugin),
    # so a reducer they define builds there too
    job = {"plugins": [info["path"] for info in loaded_plugins()], **job}
    cmd = [sys.executable, "-m", "tokred.cost.memory", json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"memory job {job} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child(argv: list[str]) -> int:
    job = json.loads(argv[0])
    from tokred.plugins import load_plugin_files

    load_plugin_files(job.pop("plugins", None))
    threads = job.pop("threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    module, _, name = job.pop("builder", DEFAULT_BUILDER).partition(":")
    run = getattr(importlib.import_module(module), name)(**job)
    print(json.dumps({**measure_rss_here(run), **job}))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
