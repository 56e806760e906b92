"""Benchmark dataset generation: throughput per worker count, scaling, bytes per sample.

    python scripts/bench_generate.py [--dataset demo] [--samples 16] [--workers 1,2]

Generates the first ``--samples`` samples of a dataset with each worker count (a fresh
``LocalCluster`` each time, so the wall time includes cluster start-up and each worker's first,
slower sample), then reports samples/hour, scaling efficiency against one worker, bytes per
sample (raw float32 vs Zstd-compressed, and with float16 / bit-rounded volumes, with the error
they introduce), and the projected wall time of ``pann-benchmark`` for several worker counts.
Numbers depend on the machine and on its load: they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _lossy_sizes(
    store: Path, work: Path, codecs: list[str]
) -> list[tuple[str, float, float, float]]:
    """Re-store the generated samples with lossy volumes; (codec, bytes/sample, max err, rms)."""
    from ase import Atoms

    from simgen.catalog import StorageSpec
    from simgen.sample import Sample
    from simgen.store import (
        StoreLayout,
        consolidate,
        create_store,
        inspect_store,
        open_dataset,
        write_sample,
    )

    ds = open_dataset(store)
    first = ds[0]
    out = []
    for codec in codecs:
        path = work / f"lossy-{codec.replace(':', '')}.zarr"
        layout = StoreLayout(
            len(ds), n_angles=len(first["angles"]), size=first["volume"].shape[0], sampling=ds.sampling
        )
        lossy = (("volume", codec), ("target", codec))
        create_store(path, {"name": "bench"}, layout, storage=StorageSpec(lossy=lossy))
        for k, sample in enumerate(ds):
            atoms = Atoms(numbers=sample["numbers"], positions=sample["positions"])
            write_sample(
                path,
                k,
                Sample(
                    atoms,
                    sample["tilt_series"],
                    sample["angles"],
                    sample["angles_true"],
                    sample["volume"],
                    sample["target"],
                    {},
                ),
            )
        consolidate(path)
        info = inspect_store(path)
        scale = max(float(np.abs(s["volume"]).max()) for s in ds)
        lossy = info["lossy"]["volume"]
        out.append(
            (
                codec,
                info["size_on_disk"] / len(ds),
                lossy["max_abs_error"] / scale,
                lossy["rms_error"] / scale,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument(
        "--config", default=str(Path(__file__).resolve().parents[1] / "datasets.yaml")
    )
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument(
        "--target", default="pann-benchmark", help="dataset whose wall time is projected"
    )
    args = parser.parse_args()

    from simgen.catalog import get_dataset
    from simgen.engine import generate
    from simgen.store import inspect_store

    spec = get_dataset(args.dataset, args.config)
    target = get_dataset(args.target, args.config)
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    rows = []
    try:
        for n_workers in [int(w) for w in args.workers.split(",")]:
            out = work / f"w{n_workers}.zarr"
            start = time.perf_counter()
            report = generate(spec, out, workers=n_workers, limit=args.samples, progress=False)
            wall = time.perf_counter() - start
            per_sample = (
                float(np.median(report.sample_seconds)) if report.sample_seconds else float("nan")
            )
            rows.append((n_workers, wall, 3600 * report.n_written / wall, per_sample, report))
            print(
                f"{n_workers} worker(s): {report.n_written} samples in {wall:.1f} s (median {per_sample:.2f} s/sample)",
                flush=True,
            )

        base_rate = rows[0][2] / rows[0][0]
        print(
            f"\n{args.dataset}: {spec.size}³ voxels, {spec.n_angles} angles, {spec.recon} × {spec.iterations}, {args.samples} samples"
        )
        print(f"{'workers':>8} {'wall s':>8} {'samples/h':>10} {'s/sample':>9} {'efficiency':>10}")
        for n_workers, wall, rate, per_sample, _ in rows:
            print(
                f"{n_workers:>8} {wall:>8.1f} {rate:>10.0f} {per_sample:>9.2f} {rate / (n_workers * base_rate):>10.2f}"
            )

        store = work / f"w{rows[0][0]}.zarr"
        info = inspect_store(store)
        raw = info["raw_bytes_per_sample"]
        compressed = info["size_on_disk"] / info["n_complete"]
        print(
            f"\nbytes per sample: raw float32 {raw / 1e6:.2f} MB, Zstd {compressed / 1e6:.2f} MB (ratio {raw / compressed:.2f})"
        )
        for codec, size, max_rel, rms_rel in _lossy_sizes(
            store, work, ["float16", "bitround:10", "bitround:7"]
        ):
            print(
                f"  volume+target {codec:<12} {size / 1e6:.2f} MB/sample (ratio {raw / size:.2f}); "
                f"error relative to the volume maximum: max {max_rel:.1e}, RMS {rms_rel:.1e}"
            )

        # Projection: per-sample cost scales with angles × voxels (imaging) and iterations ×
        # angles × voxels (SIRT); we scale the measured median by the ratio of the two datasets.
        cost = lambda s: s.n_angles * s.size**3 * (1 + s.iterations)  # noqa: E731
        per_target = rows[0][3] * cost(target) / cost(spec)
        efficiency = rows[-1][2] / (rows[-1][0] * base_rate) if len(rows) > 1 else 1.0
        print(
            f"\nprojected wall time of {args.target} ({target.n_samples} samples, ~{per_target:.1f} s/sample on one worker):"
        )
        print(
            f"{'workers':>8} {'hours':>8}   (efficiency {efficiency:.2f} assumed beyond {rows[-1][0]} workers)"
        )
        for n_workers in (1, 2, 8, 32, 128, 512):
            eff = 1.0 if n_workers == 1 else efficiency
            print(
                f"{n_workers:>8} {target.n_samples * per_target / (n_workers * eff) / 3600:>8.1f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
