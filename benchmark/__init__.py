"""benchmark: matching and metrics, methods (classical, unet3d, pann), leaderboards, dose sweeps, speed."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
