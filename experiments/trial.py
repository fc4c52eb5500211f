"""A trial: one unit of sweep work, named by a hash of the settings that fully describe it.

Its own module so that the config loader (which makes trials) and the runner (which runs them)
both depend on it, not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import trial_id


@dataclass(frozen=True)
class Trial:
    """One unit of work: ``settings`` fully describe it; ``id`` is a hash of them."""

    id: str
    kind: str  # "cost", "quality" or "provenance"
    settings: dict

    @property
    def title(self) -> str:
        s = self.settings
        opts = ",".join(f"{k}={v}" for k, v in sorted(s["options"].items()))
        where = s.get("backbone") or s.get("model")
        extra = f" {s['mode']}" if "mode" in s else ""
        return f"{self.kind} {where} {s['reducer']}{':' + opts if opts else ''}{extra}"


def make_trial(kind: str, settings: dict) -> Trial:
    """The trial of ``kind`` with ``settings`` (``kind`` is part of the hashed settings)."""
    settings = {"kind": kind, **settings}
    return Trial(trial_id(settings), kind, settings)
