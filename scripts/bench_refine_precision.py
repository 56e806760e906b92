"""PANN's refinement of a 64³ sample in float64 and in float32 (``RefineConfig.precision``).

One simulated decahedron (:func:`benchmark.speed_models.simulated_sample`), PANN's atoms from the
shipped weights, then :func:`models.refine.refine_sample` from those atoms with each precision,
in turn, in one process: wall time, likelihood evaluations, the ratio, and how far the float32
answer lies from the float64 one (pm) against how far the refinement moved the atoms (pm).

    python scripts/bench_refine_precision.py [--size 64] [--threads 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    import torch

    from benchmark.speed_models import simulated_sample
    from models.pann import NOT_AN_ATOM, PannModel
    from models.refine import RefineConfig, RefinementProblem, refine_sample

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = Path(__file__).resolve().parents[1] / "models/weights/demo"
    model = PannModel.load(weights)
    sample = simulated_sample(args.size)
    refined = model.restore_volume(sample["volume"])
    cand = model.candidates(refined, sample["sampling"])
    positions = np.asarray(cand.positions, dtype=np.float64).reshape(-1, 3)
    probs = model.classify(
        refined, sample["volume"], positions, sample["sampling"], sample["elements"]
    )
    labels = probs.argmax(axis=1)
    keep = np.array([model.config.classes[i] != NOT_AN_ATOM for i in labels], dtype=bool)
    positions, symbols = positions[keep], [model.config.classes[i] for i in labels[keep]]
    base = RefineConfig()
    load_before = os.getloadavg()[0]
    rows = {}
    for precision in ("float64", "float32", "float64", "float32")[: 2 * args.repeats]:
        config = replace(base, precision=precision)
        start = time.perf_counter()
        result = refine_sample(sample, positions, symbols, config=config)
        seconds = time.perf_counter() - start
        best = rows.get(precision, (np.inf, None))[0]
        rows[precision] = (min(best, seconds), result)
    problem = RefinementProblem(
        np.asarray(sample["tilt_series"], dtype=np.float64),
        sample["angles"],
        positions,
        symbols,
        sampling=sample["sampling"],
        doses=np.full(len(sample["angles"]), float(sample["dose"])),
        config=replace(base, precision="auto"),
    )
    exact, single = rows["float64"][1], rows["float32"][1]
    step = 100 * np.sqrt(np.mean(exact.displacement**2))
    moved = 100 * np.sqrt(np.mean(np.sum((single.positions - exact.positions) ** 2, 1)))
    print(
        f"{args.size}³ sample: {len(positions)} atoms refined, {torch.get_num_threads()} threads, "
        f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    for precision, (seconds, result) in rows.items():
        print(
            f"  refine_sample precision={precision}: {seconds:.2f} s, "
            f"{result.evaluations} likelihood evaluations"
        )
    print(f"  ratio float64 / float32: {rows['float64'][0] / rows['float32'][0]:.2f}x")
    print(
        f"  float32 answer from the float64 one: {moved:.3f} pm RMS "
        f"(the float64 refinement moved the atoms {step:.1f} pm RMS)"
    )
    print(
        f"  precision='auto' chooses {problem.dtype} here (float32 bias bound "
        f"{problem.float32_bias():.2g} standard errors)"
    )


if __name__ == "__main__":
    main()
