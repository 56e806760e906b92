"""Throughput of batched 3D Zernike atom descriptors: atoms per second, patch extraction included.

Usage (2 cores, as on the project machine):

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_zernike.py [--atoms 20000] [--repeats 5]

For each patch radius, interpolation and backend it builds the basis once (reported separately),
warms up, then times ``extract_patches`` + ``ZernikeBasis.invariants`` on a 128³ float32 volume
and prints a table of the median atoms/s. The target is >= 10,000 atoms/s at order 8.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=20000)
    parser.add_argument("--size", type=int, default=128, help="volume edge in voxels")
    parser.add_argument("--order", type=int, default=8)
    parser.add_argument("--radii", type=float, nargs="+", default=[4.0, 5.0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch", action="store_true", help="also time the torch backend")
    args = parser.parse_args()

    from models.zernike import ZernikeBasis, extract_patches

    rng = np.random.default_rng(0)
    volume = rng.random((args.size,) * 3, dtype=np.float32)
    centres = rng.uniform(0, args.size - 1, size=(args.atoms, 3))  # [z, y, x] voxels
    backends = ["numpy", "torch"] if args.torch else ["numpy"]
    print(
        f"volume {args.size}^3 float32, {args.atoms} atoms, order {args.order}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    header = f"{'radius':>6} {'patch':>6} {'interp':>8} {'backend':>7} {'build s':>8} {'extract s':>9} {'invariants s':>12} {'atoms/s':>9}"
    print(header)
    print("-" * len(header))
    for radius in args.radii:
        start = time.perf_counter()
        basis = ZernikeBasis(radius, args.order, dtype=np.float32)
        build = time.perf_counter() - start
        for interpolation in ("nearest", "linear"):
            for backend in backends:
                extract_times, invariant_times = [], []
                for repeat in range(args.repeats + 1):  # the first run is the warm-up
                    start = time.perf_counter()
                    patches = extract_patches(volume, centres, radius, interpolation=interpolation)
                    middle = time.perf_counter()
                    basis.invariants(patches, backend=backend)
                    end = time.perf_counter()
                    if repeat:
                        extract_times.append(middle - start)
                        invariant_times.append(end - middle)
                extract = statistics.median(extract_times)
                invariants = statistics.median(invariant_times)
                rate = args.atoms / (extract + invariants)
                print(
                    f"{radius:6.1f} {basis.size:>4}^3 {interpolation:>8} {backend:>7} {build:8.3f} "
                    f"{extract:9.3f} {invariants:12.3f} {rate:9.0f}"
                )


if __name__ == "__main__":
    main()
