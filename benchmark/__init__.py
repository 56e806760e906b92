"""benchmark: matching and metrics, methods (classical, unet3d, pann), leaderboards, dose sweeps, speed."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "score": "benchmark.metrics",
    "match_atoms": "simgen.matching",
    "get_method": "benchmark.methods",
    "available_methods": "benchmark.methods",
    "run_method": "benchmark.runner",
    "write_leaderboard": "benchmark.leaderboard",
    "run_sweep": "benchmark.sweep",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
