"""The dose-sweep verdict from per-method results files, without recomputing any method.

``aet-bench sweep`` reruns every method it is given (its results are its own), and ``aet-bench
run`` cannot select doses and writes its results only when every sample is done. Refinement
against the tilt series takes tens of seconds per particle, so the verdict of issue 13 was run
with this script instead:

``run``    one registered method on the samples of chosen doses of a store, one ``aet-bench run``
           record per sample appended to a JSONL file as soon as it is done (rerun to resume;
           samples already in the file are skipped). Samples are taken round-robin over the doses
           so that a partial run still covers every dose.
``report`` the sweep's paired per-element table (``benchmark.sweep.paired_table``) and the paired
           claim check (``benchmark.sweep.paired_claim_verdict``) of each method against a
           baseline, from results files (of ``aet-bench run`` or of ``run`` above).

    python scripts/dose_sweep_verdict.py run --method pann --store ds.zarr \
        --doses 100,316.228,1000 --out results_pann.jsonl
    python scripts/dose_sweep_verdict.py report results_*.jsonl --baseline classical \
        --methods pann,classical+refine --out verdict/
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _order(ds, doses) -> list[int]:
    """Sample indices of ``doses``, round-robin over the doses (index order within a dose)."""
    values = np.asarray(ds.meta("dose"), dtype=float)
    groups = []
    for dose in doses:
        keep = np.isclose(values, dose, rtol=1e-4, atol=0)
        if not keep.any():
            raise ValueError(
                f"--doses: {dose:g} is not a dose of the store "
                f"(it has {', '.join(f'{d:g}' for d in sorted(set(values)))})"
            )
        groups.append([int(i) for i in np.asarray(ds.indices)[keep]])
    order = []
    for j in range(max(len(g) for g in groups)):
        order += [g[j] for g in groups if j < len(g)]
    return order


def cmd_run(args) -> None:
    import torch

    from benchmark.methods import get_method
    from benchmark.runner import _run_one
    from simgen.store import open_dataset

    torch.set_num_threads(1)
    doses = [float(d) for d in args.doses.split(",")]
    ds = open_dataset(args.store)
    order = _order(ds, doses)
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {json.loads(line)["index"] for line in out.read_text().splitlines() if line.strip()}
    method = get_method(args.method)
    name = str(getattr(ds, "name", Path(args.store).name))
    position = {int(index): p for p, index in enumerate(ds.indices)}
    for index in order:
        if index in done:
            continue
        t0 = time.perf_counter()
        records = _run_one(method, ds, position[index], None, 1.0, False, name, ("initial",))
        with open(out, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        print(
            f"{args.method} sample {index} dose {records[0]['dose']:.3g}: "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )


def _true_counts(store, indices) -> dict[int, dict[str, int]]:
    """``{sample index: {element: number of true atoms}}`` from the store's ground truth."""
    from ase.data import chemical_symbols

    from simgen.store import open_dataset

    ds = open_dataset(store)
    position = {int(index): p for p, index in enumerate(ds.indices)}
    counts = {}
    for index in sorted(indices):
        numbers = np.asarray(ds.read(position[index])["numbers"], dtype=int)
        elements, n = np.unique(numbers, return_counts=True)
        counts[index] = {chemical_symbols[z]: int(c) for z, c in zip(elements, n)}
    return counts


def recovery_table(records, method: str, baseline: str, store) -> str:
    """Recovery with the correct element (%), per dose and true element, paired per particle.

    Per particle and element: species accuracy of that element x its matched atoms / its true
    atoms (1.0 Å); the change is ``method`` minus ``baseline`` (points), mean over particles
    with a 95% bootstrap interval.
    """
    from benchmark.metrics import bootstrap_ci, paired_difference
    from benchmark.sweep import _by_sample

    samples = _by_sample(records, [method, baseline])
    counts = _true_counts(store, samples)
    per: dict[tuple, list] = {}
    for index, recs in samples.items():
        dose = float(recs[method]["dose"])
        for element, n_true in counts[index].items():
            values = []
            for m in (method, baseline):
                matched = int(np.sum(np.asarray(recs[m]["matches"]["element"]) == element))
                accuracy = recs[m].get(f"species_accuracy_{element}")
                accuracy = 0.0 if accuracy is None or not np.isfinite(accuracy) else accuracy
                values.append(100.0 * accuracy * matched / n_true)
            per.setdefault((dose, element), []).append(values)
            per.setdefault((dose, "all"), [])
        values = [100.0 * float(recs[m]["recovery_rate_species"]) for m in (method, baseline)]
        per[(dose, "all")].append(values)
    lines = [
        f"Recovery with the correct element (%, 1.0 Å), {method} against {baseline}, per dose and "
        "true element: mean over particles [95% bootstrap CI]; change = paired per-particle "
        "difference (points).",
        "",
        f"| dose (e/Å²) | element | particles | {baseline} (%) | {method} (%) | change (points) [CI] |",
        "|---|---|---|---|---|---|",
    ]
    for (dose, element), values in sorted(
        per.items(), key=lambda kv: (kv[0][0], kv[0][1] != "all", kv[0][1])
    ):
        values = np.asarray(values, dtype=float)
        a, b = bootstrap_ci(values[:, 0]), bootstrap_ci(values[:, 1])
        change = paired_difference(values[:, 0], values[:, 1])
        lines.append(
            f"| {dose:.3g} | {element} | {len(values)} | {b[0]:.1f} [{b[1]:.1f}, {b[2]:.1f}] | "
            f"{a[0]:.1f} [{a[1]:.1f}, {a[2]:.1f}] | {change[0]:+.1f} [{change[1]:+.1f}, "
            f"{change[2]:+.1f}] |"
        )
    return "\n".join(lines)


def cmd_report(args) -> None:
    from benchmark.runner import read_results
    from benchmark.sweep import _paired_markdown, paired_claim_verdict, paired_table, plot_paired

    records = [r for r in read_results(args.results) if r.get("truth", "initial") == "initial"]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = []
    groups = [[args.baseline, m] for m in methods]
    if len(methods) > 1:
        groups.append([args.baseline, *methods])
    for k, group in enumerate(groups):
        rows = paired_table(records, group)
        if not rows:
            continue
        text += [f"## Paired: {', '.join(group)}", "", _paired_markdown(rows, group), ""]
        if k == len(groups) - 1 and args.figure:
            plot_paired(
                rows,
                args.figure,
                title="dose-sweep: paired coordinate error (AET convention) on atoms every "
                "method recovered, mean and 95% CI over particles",
            )
    for method in methods:
        text += [f"## Claim: {method} against {args.baseline}", ""]
        text += [paired_claim_verdict(records, method, args.baseline), ""]
        if args.store:
            text += [recovery_table(records, method, args.baseline, args.store), ""]
    report = "\n".join(text)
    (out / "verdict.md").write_text(report)
    print(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one method on the samples of chosen doses")
    run.add_argument("--method", required=True)
    run.add_argument("--store", required=True)
    run.add_argument("--doses", required=True, help="comma-separated doses (e/Å²)")
    run.add_argument("--out", required=True, help="results JSONL (appended to, resumable)")
    report = sub.add_parser("report", help="paired tables and claim checks from results files")
    report.add_argument("results", nargs="+")
    report.add_argument("--baseline", default="classical")
    report.add_argument("--methods", required=True, help="comma-separated, compared to baseline")
    report.add_argument("--out", required=True, help="folder for verdict.md")
    report.add_argument("--store", default=None, help="the store (per-element recovery table)")
    report.add_argument("--figure", default=None, help="PNG of the paired errors of all methods")
    args = parser.parse_args()
    {"run": cmd_run, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
