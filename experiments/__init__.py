"""Sweeps, reports and figures over tokred (run from the repo root; not an installed package)."""
