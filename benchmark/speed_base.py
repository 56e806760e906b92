"""What every ``aet-bench speed`` measurement shares: the table row, the timer, a test phantom."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["SpeedRow", "timed", "blob_phantom"]


@dataclass(frozen=True)
class SpeedRow:
    """One line of the speed table.

    Parameters
    ----------
    what
        What is measured, naming the timings A and B.
    case
        The problem size.
    time_a, time_b
        Median wall times in seconds (``None`` where the row has no such timing).
    value
        The ratio or rate the row reports, in ``unit``.
    unit
        ``"×"`` for a ratio, else the unit of a rate or duration (``"samples/h"``, ``"h"``, ...).
    """

    what: str
    case: str
    time_a: float | None
    time_b: float | None
    value: float
    unit: str


def timed(function: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Median wall time (s) of ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def blob_phantom(size: int, rng: np.random.Generator, blobs: int = 60) -> np.ndarray:
    """Volume ``[z, y, x]`` of unit Gaussian blobs (σ = 1 voxel) inside the central 60 %."""
    grid = np.arange(size, dtype=np.float32)
    volume = np.zeros((size,) * 3, dtype=np.float32)
    centres = (size - 1) / 2 + rng.uniform(-0.3, 0.3, size=(blobs, 3)) * size
    for z, y, x in centres:
        gz, gy, gx = (np.exp(-((grid - c) ** 2) / 2.0) for c in (z, y, x))
        volume += gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return volume
