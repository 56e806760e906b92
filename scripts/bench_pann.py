"""Time PANN inference stage by stage on simulated 64³ and 128³ reconstructions (shipped weights).

Each size is one simulated decahedron (29 tilts over ±70°, 0.4 Å, Poisson noise at 1e4 e/Å²),
reconstructed as a store sample is. The stages are those of :meth:`models.pann.PannModel.predict`:
stage 1 (sliding window), tracing, Zernike features, stage 2 (graph + transformer) and the
refinement against the tilt series (:func:`models.refine.refine_sample`). A warm-up prediction
comes first; the table gives the best of ``--repeats`` runs per stage, with the load average.

    python scripts/bench_pann.py                   # 64³ and 128³, 2 torch threads
    python scripts/bench_pann.py --sizes 64 --repeats 3
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmark.speed import simulated_sample, stage_times


def main(argv: list[str] | None = None) -> None:
    import torch

    from models.pann import PannModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--weights", default=str(Path(__file__).resolve().parents[1] / "models/weights/demo")
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = PannModel.load(args.weights)
    samples = {size: simulated_sample(size) for size in args.sizes}
    warm = samples[min(args.sizes)]
    model.predict(warm["volume"], warm["sampling"], warm["elements"], measurement=warm)  # warm-up
    results = {}
    for size in args.sizes:
        load = os.getloadavg()[0]
        results[size] = stage_times(model, samples[size], args.repeats)
        results[size]["_load"] = (load, os.getloadavg()[0])
    print(
        f"PANN inference, shipped weights, {torch.get_num_threads()} torch threads, best of {args.repeats}"
    )
    header = "".join(f"{f'{s}³ s':>12}" for s in args.sizes)
    print(f"{'stage':<38}{header}")
    for key in next(iter(results.values())):
        if key.startswith("_"):
            continue
        print(f"{key:<38}" + "".join(f"{results[s][key]:>12.2f}" for s in args.sizes))
    for size in args.sizes:
        r = results[size]
        print(
            f"{size}³: {samples[size]['n_atoms']} true atoms, {r['_candidates']} candidates, "
            f"{r['_atoms']} atoms kept; load average {r['_load'][0]:.1f} before / {r['_load'][1]:.1f} after"
        )


if __name__ == "__main__":
    main()
