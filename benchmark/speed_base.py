"""What every ``aet-bench speed`` measurement shares: the table row, the timer, a test phantom,
the machine line and the SIRT memory-traffic model."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SpeedRow",
    "timed",
    "blob_phantom",
    "cpu_model",
    "machine_line",
    "copy_bandwidth",
    "sirt_traffic",
]


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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _bytes_text(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10} KiB"


def machine_line() -> str:
    """``"<CPU model>, L1d 32 KiB, L2 1 MiB per core, L3 32 MiB"``: tells tables from machines apart."""
    from simgen.reconstruction.reconstruct import cache_sizes

    sizes = cache_sizes()
    caches = ", ".join(
        f"{name} {_bytes_text(sizes[name])}{' per core' if name == 'L2' else ''}"
        for name in ("L1d", "L2", "L3")
        if name in sizes
    )
    return f"{cpu_model()}, {caches or 'cache sizes not reported'}"


def copy_bandwidth(n_bytes: int = 400_000_000, repeats: int = 5) -> float:
    """Memory bandwidth (bytes/s, read + write) of a numpy copy of a large float32 array (best of
    ``repeats``)."""
    source = np.ones(n_bytes // 4, dtype=np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def sirt_traffic(nnz: int, voxels: int, rays: int, columns: int, blocks: int) -> tuple[int, int]:
    """Bytes one batched SIRT iteration streams from memory and gathers from cache.

    Parameters
    ----------
    nnz
        Stored entries of ``W`` plus those of ``Wᵀ``.
    voxels, rays
        Rows of ``Wᵀ`` (``P²``) and of ``W`` (``A·P``).
    columns
        y-slices solved together (float32 each).
    blocks
        Column blocks of the forward product.

    Returns
    -------
    (streamed, gathered)
        ``streamed``: both CSR matrices (float32 value + int32 column index per entry); the
        volume read in the forward pass and read + written by the update; the update's
        accumulator written + read; the data read; the residual read + written once per forward
        block and read by the update. ``gathered``: one operand row (``4·columns`` bytes) per
        stored entry, served from L1/L2 when the blocking works.
    """
    streamed = nnz * 8 + 4 * columns * (5 * voxels + (2 + 2 * blocks) * rays)
    return int(streamed), int(nnz * 4 * columns)
