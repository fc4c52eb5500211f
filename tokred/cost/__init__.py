"""Cost of a forward: analytic MACs from the token trace (and, in submodules, fvcore cross-checks,
memory and throughput)."""

from .analytic import gmacs, text_macs, visual_macs

__all__ = ["gmacs", "text_macs", "visual_macs"]
