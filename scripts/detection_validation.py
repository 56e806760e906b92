"""Choose the penalty of detection by the measurement (models.atom_selection) on validation data.

Runs a base method (default ``classical``) on every sample of a *validation* store (never a test
store: the rule is written here before any test run), judges its candidates against the tilt
series at each penalty, and prints recovery, precision and F1 (mean ± std over particles) per dose,
without selection and at each penalty. The rule: the penalty with the highest mean F1 over all
samples; ties go to the larger penalty (fewer false atoms).

    python scripts/detection_validation.py STORE [--method classical] [--penalties 4,9,16,25,36]

A validation store: a copy of the ``dose-sweep`` catalogue entry with another seed (so other
particles), e.g. ``seed: 1031`` and ``doses: {min: 100, max: 1000, count: 3}``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--method", default="classical")
    parser.add_argument("--penalties", default="4,9,16,25,36")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--prune", default="1,2,4", help="the annealed passes' z² levels")
    parser.add_argument("--doses", default=None, help="only these doses, e.g. 100,316")
    args = parser.parse_args(argv)

    from ase.data import chemical_symbols

    from benchmark.methods import get_method
    from benchmark.metrics import score
    from models.atom_selection import SelectionConfig, select_atoms
    from simgen.store import open_dataset

    penalties = [float(p) for p in args.penalties.split(",")]
    prune = tuple(float(p) for p in args.prune.split(",")) if args.prune else ()
    if prune and min(penalties) < prune[-1]:
        parser.error(f"--penalties={args.penalties}: expected each >= the last --prune level")
    ds = open_dataset(args.store)
    method = get_method(args.method)
    if args.doses:
        wanted = [float(d) for d in args.doses.split(",")]
        keep = [
            k for k in range(len(ds)) if any(abs(float(ds[k]["dose"]) / d - 1) < 0.01 for d in wanted)
        ]
    else:
        keep = list(range(len(ds)))
    keep = keep if args.limit is None else keep[: args.limit]
    n = len(keep)
    table = defaultdict(list)  # (dose, setting) -> [(recovery, precision, f1)]
    seconds = defaultdict(float)
    for k in keep:
        sample = ds[k]
        truth_pos = np.asarray(sample["positions"], float)
        truth_el = [chemical_symbols[int(z)] for z in sample["numbers"]]
        prediction = method.predict(sample)
        settings = {"none": np.ones(len(prediction), bool)}
        # the annealed passes do not depend on the penalty: their final fit serves every penalty
        start = time.perf_counter()
        result = select_atoms(
            sample,
            prediction.positions,
            list(prediction.elements),
            config=SelectionConfig(penalty=max(penalties), prune=prune),
        )
        seconds["select"] += time.perf_counter() - start
        for penalty in penalties:  # each ≥ the last prune level: only survivors pass
            settings[f"z²>{penalty:g}"] = result.score**2 > penalty
        for name, keep in settings.items():
            m = score(
                np.asarray(prediction.positions)[keep],
                [e for e, kept in zip(prediction.elements, keep) if kept],
                truth_pos,
                truth_el,
            )
            rec, prec = m["recovery_rate"], m["precision"]
            f1 = 2 * rec * prec / (rec + prec) if rec + prec > 0 else 0.0
            table[(float(sample["dose"]), name)].append((rec, prec, f1))
        print(
            f"sample {sample['index']}: dose {float(sample['dose']):g}, {len(truth_pos)} atoms, "
            f"{len(prediction)} candidates, kept "
            + ", ".join(f"{s}: {int(v.sum())}" for s, v in settings.items() if s != "none"),
            flush=True,
        )
    print()
    print("| dose | setting | n | recovery (%) | precision (%) | F1 (%) |")
    print("|---|---|---|---|---|---|")
    overall = defaultdict(list)
    for (dose, name), values in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        v = 100 * np.array(values)
        overall[name] += list(v[:, 2])
        cells = " | ".join(f"{v[:, j].mean():.1f} ± {v[:, j].std(ddof=1) if len(v) > 1 else 0:.1f}" for j in range(3))
        print(f"| {dose:g} | {name} | {len(v)} | {cells} |")
    print()
    best = max(
        (name for name in overall if name != "none"),
        key=lambda name: (np.mean(overall[name]), float(name[3:])),
    )
    for name, f1 in overall.items():
        print(f"mean F1 {name}: {np.mean(f1):.1f}%")
    print(f"rule (highest mean F1, ties to the larger penalty): {best}")
    for what, s in seconds.items():
        print(f"selection time ({what}): {s / n:.2f} s per sample")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
