"""Time batched sparse-matrix SIRT against looping ASTRA's own 2D CPU SIRT over y-slices.

Both solve the same problem (ASTRA ``linear`` projector, parallel beam, MinConstraint 0, zero start)
on a random-blob phantom: a warm-up run on a few slices first, then timed runs. Prints a table
with the wall time per method, the speed ratio and the relative difference of the volumes.

    python scripts/bench_sirt.py                      # 128³ voxels, 51 angles, 100 iterations
    python scripts/bench_sirt.py --size 64 --angles 31 --iterations 50 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmark.speed_base import copy_bandwidth, machine_line, sirt_traffic
from simgen.reconstruction.reconstruct import block_bytes, project, projection_matrix, reconstruct


def phantom(size: int, rng: np.random.Generator, blobs: int = 60) -> np.ndarray:
    """A volume [z, y, x] of Gaussian blobs (atom-like, width ~1 voxel) inside a central sphere."""
    grid = np.arange(size, dtype=np.float32)
    volume = np.zeros((size, size, size), dtype=np.float32)
    centre = (size - 1) / 2
    positions = centre + rng.uniform(-0.3, 0.3, size=(blobs, 3)) * size
    for z, y, x in positions:
        gz, gy, gx = (np.exp(-((grid - c) ** 2) / 2.0) for c in (z, y, x))
        volume += gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return volume


def timed(function, repeats: int) -> tuple[float, np.ndarray]:
    return timed_cpu(function, repeats)[::2]


def timed_cpu(function, repeats: int) -> tuple[float, np.ndarray, float]:
    """Best wall time, the result, and the process CPU time (all threads) of that run."""
    best = (np.inf, None, np.inf)
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = function()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        if wall < best[0]:
            best = (wall, result, cpu)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="voxels per side (default 128)")
    parser.add_argument(
        "--angles", type=int, default=51, help="number of tilt angles over ±70° (default 51)"
    )
    parser.add_argument("--iterations", type=int, default=100, help="SIRT iterations (default 100)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed runs per method; the minimum is shown"
    )
    parser.add_argument("--threads", type=int, default=None, help="threads for the batched solver")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    angles = np.linspace(-70.0, 70.0, args.angles)
    # warm-up: build (and cache) the matrix, touch ASTRA, on a few slices
    start = time.perf_counter()
    projection_matrix(args.size, angles)
    matrix_time = time.perf_counter() - start
    tilt_series = project(phantom(args.size, rng), angles)
    warm = tilt_series[:, : min(4, args.size), :]
    reconstruct(warm, angles, method="sirt", iterations=2, backend="matrix", threads=args.threads)
    reconstruct(warm, angles, method="sirt", iterations=2, backend="astra")

    kwargs = dict(method="sirt", iterations=args.iterations, positivity=True)
    load_before = os.getloadavg()[0]
    batched_time, batched, batched_cpu = timed_cpu(
        lambda: reconstruct(tilt_series, angles, backend="matrix", threads=args.threads, **kwargs),
        args.repeats,
    )
    astra_time, looped, astra_cpu = timed_cpu(
        lambda: reconstruct(tilt_series, angles, backend="astra", **kwargs), args.repeats
    )
    load_after = os.getloadavg()[0]
    threads = args.threads or len(os.sched_getaffinity(0))
    difference = float(np.linalg.norm(batched - looped) / np.linalg.norm(looped))
    bandwidth = copy_bandwidth()
    matrix, transpose = projection_matrix(args.size, angles)
    nnz = matrix.nnz + transpose.nnz
    columns = args.size  # y-slices solved together: one float32 per slice per voxel / ray
    voxels, rays = matrix.shape[1], matrix.shape[0]
    blocks = -(-voxels * columns * 4 // block_bytes())  # column blocks of the forward product
    streamed, gathered = sirt_traffic(nnz, voxels, rays, columns, blocks)

    print(f"machine: {machine_line()}; column blocks of {block_bytes() >> 10} KiB")
    print(
        f"SIRT {args.size}³ voxels, {args.angles} angles, {args.iterations} iterations, "
        f"{len(os.sched_getaffinity(0))} CPUs, {threads} threads, best of {args.repeats}, "
        f"load average {load_before:.1f} before / {load_after:.1f} after"
    )
    print(f"{'method':<34}{'seconds':>10}{'ratio':>9}{'CPU s':>10}{'CPU ratio':>11}")
    print(
        f"{'ASTRA SIRT, loop over y-slices':<34}{astra_time:>10.2f}{1.0:>9.2f}"
        f"{astra_cpu:>10.2f}{1.0:>11.2f}"
    )
    print(
        f"{'batched sparse SIRT (all slices)':<34}{batched_time:>10.2f}"
        f"{astra_time / batched_time:>9.2f}{batched_cpu:>10.2f}{astra_cpu / batched_cpu:>11.2f}"
    )
    print(
        f"(on an idle machine ASTRA's single-threaded loop takes its CPU time and the batched solver "
        f"~its CPU time / {threads} threads: {astra_cpu / batched_cpu * threads:.1f}x, a projection)"
    )
    print(
        f"(projection matrix build, cached: {matrix_time:.2f} s; relative volume difference {difference:.2e})"
    )
    per_iteration = batched_time / args.iterations
    print(
        f"per iteration: {per_iteration * 1e3:.1f} ms; {streamed / 1e6:.0f} MB streamed "
        f"(matrices + volume + data) = {streamed / per_iteration / 1e9:.1f} GB/s against a "
        f"measured copy bandwidth of {bandwidth / 1e9:.1f} GB/s; {gathered / 1e9:.2f} GB of "
        f"rows gathered from L1/L2 ({gathered / per_iteration / 1e9:.0f} GB/s)"
    )


if __name__ == "__main__":
    main()
