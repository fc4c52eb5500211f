"""Provenance: what a measurement ran on and with, recorded next to every result.

The machine (host, CPU model, cores, threads, GPU), the software (Python and the version of
every dependency that can change a number), the code (tokred's version, full git commit and
whether the checkout had uncommitted changes) and the invocation (command line). Everything is
plain JSON data; nothing here is slow (one ``git`` call, cached per process).
"""

from __future__ import annotations

import functools
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

# distributions whose versions are recorded (import name differs for some: av = PyAV)
DEPENDENCIES = ("torch", "torchvision", "open_clip_torch", "timm", "fvcore", "numpy", "pandas",
                "matplotlib", "decord", "av", "pyyaml")


def software() -> dict[str, Any]:
    """Python and the installed version of each of :data:`DEPENDENCIES` (None: not installed)."""
    out: dict[str, Any] = {"python": platform.python_version(), "tokred": _version("tokred")}
    out.update({name: _version(name) for name in DEPENDENCIES})
    return out


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Host, CPU model, logical cores, torch threads, the device and, on CUDA, the GPU."""
    dev = torch.device(device)
    out: dict[str, Any] = {
        "host": platform.node(), "os": platform.platform(), "cpu": cpu_model(),
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(), "device": str(dev), "gpu": None,
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(dev)
        out["cuda"] = torch.version.cuda
    return out


@functools.lru_cache(maxsize=1)
def code() -> dict[str, Any]:
    """tokred's version, the full git commit of its checkout and a dirty flag.

    ``commit`` is None when tokred is not run from a git checkout (an installed wheel): the
    version is then the only code reference. ``dirty`` is True when tracked files differ from
    the commit (uncommitted changes make a result unreproducible from the commit alone).
    """
    root = Path(__file__).resolve().parent.parent
    out: dict[str, Any] = {"version": _version("tokred"), "commit": None, "dirty": None,
                           "source": str(root)}
    try:
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return out
    if commit:
        out.update(commit=commit, dirty=bool(status))
    return out


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    return done.stdout.strip() if done.returncode == 0 else ""


def command_line(argv: list[str] | None = None) -> str:
    """The invocation as a shell-quoted string (``sys.argv`` by default)."""
    argv = sys.argv if argv is None else argv
    return shlex.join([Path(argv[0]).name, *argv[1:]]) if argv else ""


def provenance(device: str | torch.device = "cpu", argv: list[str] | None = None,
               **extra: Any) -> dict[str, Any]:
    """Everything above in one record: ``{"code", "software", "machine", "command", **extra}``
    (e.g. ``seed=0``)."""
    return {"code": code(), "software": software(), "machine": machine(device),
            "command": command_line(argv), **extra}
