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
import time
from pathlib import Path

import numpy as np

PARTICLE_NM = {32: 0.8, 64: 1.5, 128: 3.0}


def simulated_sample(size: int, seed: int = 0) -> dict:
    """A store-like sample dict of one decahedron in a ``size``³ volume at 0.4 Å."""
    from simgen.sample import SampleSpec, simulate_sample

    spec = SampleSpec(
        index=0,
        morphology="decahedron",
        composition="L10:FePt",
        size_nm=PARTICLE_NM.get(size, size * 0.4 / 20),
        dose=1e4,
        angles=tuple(np.linspace(-70, 70, 29)),
        sampling=0.4,
        size=size,
        noise=("poisson",),
        noise_model="poisson",
        thermal_sigma=0.05,
        structure_seed=seed,
    )
    s = simulate_sample(spec, np.random.default_rng(seed))
    return {
        "volume": s.volume,
        "sampling": 0.4,
        "tilt_series": s.tilt_series,
        "angles": s.angles,
        "dose": 1e4,
        "shifts": s.shifts,
        "angles_estimated": s.angles_estimated,
        "n_atoms": len(s.atoms),
    }


def best(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def stage_times(model, sample: dict, repeats: int = 1) -> dict:
    """Seconds per stage of ``model.predict`` on ``sample`` (best of ``repeats``), and counts."""
    from models.pann import NOT_AN_ATOM, candidate_features
    from models.refine import refine_sample

    volume, sampling = sample["volume"], sample["sampling"]
    out = {}
    out["stage 1 (sliding window)"], refined = best(lambda: model.refine(volume), repeats)
    out["tracing"], cand = best(lambda: model.candidates(refined, sampling), repeats)
    positions = np.asarray(cand.positions, dtype=np.float64).reshape(-1, 3)
    out["Zernike features"], _ = best(
        lambda: candidate_features(refined, volume, positions, sampling, model.config), repeats
    )
    total_classify, probs = best(
        lambda: model.classify(refined, volume, positions, sampling), repeats
    )
    out["stage 2 (graph + transformer)"] = max(total_classify - out["Zernike features"], 0.0)
    labels = probs.argmax(axis=1)
    keep = np.array([model.config.classes[i] != NOT_AN_ATOM for i in labels], dtype=bool)
    symbols = [model.config.classes[i] for i in labels[keep]]
    out["refinement against the tilt series"], _ = best(
        lambda: refine_sample(sample, positions[keep], symbols), repeats
    )
    out["predict, all stages"], _ = best(
        lambda: model.predict(volume, sampling, measurement=sample), repeats
    )
    out["_candidates"] = len(positions)
    out["_atoms"] = int(keep.sum())
    return out


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
    model.predict(warm["volume"], warm["sampling"], measurement=warm)  # warm-up
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
