"""What holds PANN's error at high dose: the refinement's own optimum, against the joint bound.

For each chosen sample of a store this prints, in pm (3D RMS over the true atoms, each
particle's rigid offset removed as in the AET convention):

- the isolated-atom Cramér–Rao bound (what the leaderboard's efficiency divides by);
- the joint bound, the neighbouring atoms as nuisance parameters (:func:`benchmark.crlb.crlb_of_sample`
  with ``neighbours=True``): atoms whose projections overlap cannot be placed better than this;
- the refinement started from the TRUE atoms with the true elements
  (:func:`models.refine.refine_sample`, the defaults PANN uses): where the likelihood's optimum is;
- with ``--results`` (an ``aet-bench run`` results file of the same store), the method's error on
  that sample.

If the refinement from the truth lands on the joint bound and the method on the refinement's
optimum, nothing but the measurement holds the method there.

    python scripts/high_dose_floor.py --data demo-output/demo.zarr --dose 1e4 --noise poisson \
        --results demo-output/results_pann.jsonl
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def _rms_aet(positions: np.ndarray, true: np.ndarray) -> float:
    d = positions - true
    d = d - d.mean(axis=0)
    return float(100 * np.sqrt((d**2).sum(axis=1).mean()))


def _rms(values) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="simgen store")
    parser.add_argument("--split", default="test", help="split (default test; 'all': every sample)")
    parser.add_argument("--dose", type=float, help="only samples of this dose (e/Å²)")
    parser.add_argument("--noise", help="only samples of this noise model")
    parser.add_argument("--limit", type=int, help="at most N samples")
    parser.add_argument("--results", help="results file (JSON lines) of a method on the same store")
    args = parser.parse_args(argv)

    import torch
    from ase.data import chemical_symbols

    from benchmark.crlb import crlb_of_sample
    from models.refine import RefineConfig, refine_sample
    from simgen.store import open_dataset

    torch.set_num_threads(1)
    ds = open_dataset(args.data)
    spec = dict(ds.attrs.get("spec") or {})
    view = ds if args.split == "all" else ds.filter(split=args.split)
    method_error = {}
    if args.results:
        with open(args.results, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                method_error[int(record["index"])] = record.get("coordinate_error_aet_pm")
    print(
        f"{'sample':>6s} {'dose':>8s} {'noise':>10s} {'atoms':>5s} {'isolated':>9s} {'joint':>7s} "
        f"{'from truth':>10s} {'method':>7s}   (pm)"
    )
    rows = []
    for position in range(len(view)):
        sample = view[position]
        if args.dose is not None and not np.isclose(float(sample["dose"]), args.dose):
            continue
        if args.noise is not None and str(sample.get("noise_model")) != args.noise:
            continue
        true = np.asarray(sample["positions"], dtype=np.float64)
        elements = [chemical_symbols[z] for z in sample["numbers"]]
        isolated = _rms(crlb_of_sample(sample, spec))
        joint = _rms(crlb_of_sample(sample, spec, neighbours=True))
        refined = refine_sample(sample, true, elements, config=RefineConfig(precision="auto"))
        from_truth = _rms_aet(refined.positions, true)
        error = method_error.get(int(sample["index"]))
        rows.append((isolated, joint, from_truth, error))
        print(
            f"{sample['index']:6d} {float(sample['dose']):8.3g} {str(sample.get('noise_model')):>10s} "
            f"{len(true):5d} {isolated:9.2f} {joint:7.2f} {from_truth:10.2f} "
            f"{'' if error is None else f'{error:7.2f}'}",
            flush=True,
        )
        if args.limit is not None and len(rows) >= args.limit:
            break
    if rows:
        table = np.array([[r[0], r[1], r[2], np.nan if r[3] is None else r[3]] for r in rows])
        mean = np.nanmean(table, axis=0)
        print(
            f"{'mean':>6s} {'':>8s} {'':>10s} {'':>5s} {mean[0]:9.2f} {mean[1]:7.2f} "
            f"{mean[2]:10.2f} {'' if np.isnan(mean[3]) else f'{mean[3]:7.2f}'}"
        )
        print(
            f"from truth / joint bound: {np.mean(table[:, 2] / table[:, 1]):.2f}; "
            f"from truth / isolated bound: {np.mean(table[:, 2] / table[:, 0]):.2f}"
        )


if __name__ == "__main__":
    main()
