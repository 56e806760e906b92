"""The dose-sweep verdict from per-method results files, without recomputing any method.

``aet-bench sweep`` reruns every method it is given (its results are its own), and ``aet-bench
run`` cannot select doses and writes its results only when every sample is done. Refinement
against the tilt series takes tens of seconds per particle, so the verdict of issue 13 was run
with this script instead:

``run``    one registered method on the samples of chosen doses of a store, one ``aet-bench run``
           record per sample appended to a JSONL file as soon as it is done (rerun to resume;
           samples already in the file are skipped). Samples are taken round-robin over the doses
           so that a partial run still covers every dose.
           Several stores may be given (``--store`` repeated, e.g. one ``simgen simulate`` store
           per dose and orientation of a real structure); their samples are told apart by the
           records' ``dataset`` (the store's name) and ``index``.
``report`` the sweep's paired per-element table (``benchmark.sweep.paired_table``) and the paired
           claim check (``benchmark.sweep.paired_claim_verdict``) of each method against a
           baseline, from results files (of ``aet-bench run`` or of ``run`` above).
``crop``   a sphere of an atomic model (e.g. the experimental Pd@Pt core–shell particle of
           ``$AET_EXTERNAL/structures``) written as extended XYZ, to simulate with
           ``simgen simulate`` at the project's 64³ × 0.4 Å volume.

    python scripts/dose_sweep_verdict.py run --method pann --store ds.zarr \
        --doses 100,316.228,1000 --out results_pann.jsonl
    python scripts/dose_sweep_verdict.py report results_*.jsonl --baseline classical \
        --methods pann,classical+refine --out verdict/
    python scripts/dose_sweep_verdict.py crop $AET_EXTERNAL/structures/pdpt_core_shell_EPB.xyz \
        --radius 10 --offset 12,0,0 --out pdpt_crop.xyz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _spread(indices, keys) -> list[int]:
    """``indices`` round-robin over the values of ``keys`` (first sample of each, then second...),
    so that a partial run covers every composition."""
    groups: dict[str, list[int]] = {}
    for index, key in zip(indices, keys):
        groups.setdefault(str(key), []).append(int(index))
    order = []
    for j in range(max((len(g) for g in groups.values()), default=0)):
        order += [g[j] for g in groups.values() if j < len(g)]
    return order


def _order(ds, doses) -> list[int]:
    """Sample indices of ``doses`` (all doses when None), round-robin over the doses; within a
    dose, round-robin over the compositions (index order within each)."""
    values = np.asarray(ds.meta("dose"), dtype=float)
    try:
        composition = np.array([str(c) for c in ds.meta("composition")], dtype=object)
    except (KeyError, ValueError):
        composition = np.full(len(values), "")
    if doses is None:
        doses = sorted(set(values.tolist()))
    groups = []
    for dose in doses:
        keep = np.isclose(values, dose, rtol=1e-4, atol=0)
        if not keep.any():
            if len(doses) > 1:
                groups.append([])
                continue
            raise ValueError(
                f"--doses: {dose:g} is not a dose of the store "
                f"(it has {', '.join(f'{d:g}' for d in sorted(set(values)))})"
            )
        groups.append(_spread(np.asarray(ds.indices)[keep], composition[keep]))
    if not any(groups):
        raise ValueError(
            f"--doses: none of {', '.join(f'{d:g}' for d in doses)} is a dose of the store "
            f"(it has {', '.join(f'{d:g}' for d in sorted(set(values)))})"
        )
    order = []
    for j in range(max(len(g) for g in groups)):
        order += [g[j] for g in groups if j < len(g)]
    return order


def _dataset_name(ds, store) -> str:
    return str(getattr(ds, "name", None) or Path(store).name)


def cmd_run(args) -> None:
    import torch

    from benchmark.methods import get_method
    from benchmark.runner import _run_one
    from simgen.store import open_dataset

    torch.set_num_threads(args.threads)
    doses = None if args.doses == "all" else [float(d) for d in args.doses.split(",")]
    # several stores: the doses given must each be in at least one store
    plan = []
    for store in args.store:
        ds = open_dataset(store)
        values = np.asarray(ds.meta("dose"), dtype=float)
        wanted = doses
        if doses is not None and len(args.store) > 1:
            wanted = [d for d in doses if np.isclose(values, d, rtol=1e-4, atol=0).any()]
            if not wanted:
                continue
        plan.append((store, ds, _order(ds, wanted)))
    if not plan:
        raise ValueError(f"--doses: {args.doses} is in none of the stores given")
    out = Path(args.out)

    def done() -> set:
        # re-read before every sample: two processes may share one file (different orders)
        if not out.exists():
            return set()
        return {
            (str(r.get("dataset", "")), int(r["index"]))
            for r in map(json.loads, filter(str.strip, out.read_text().splitlines()))
        }

    method = get_method(args.method, **({"weights": args.weights} if args.weights else {}))
    label = args.label or args.method
    # round-robin over the stores too, so that a partial run covers every store and dose
    queue = []
    for j in range(max(len(o) for _, _, o in plan)):
        queue += [(store, ds, o[j]) for store, ds, o in plan if j < len(o)]
    if args.limit is not None:
        queue = queue[: args.limit]
    for store, ds, index in queue:
        name = _dataset_name(ds, store)
        if (name, index) in done():
            continue
        position = {int(i): p for p, i in enumerate(ds.indices)}
        t0 = time.perf_counter()
        records = _run_one(method, ds, position[index], None, 1.0, False, name, ("initial",))
        for r in records:
            r["method"] = label
            if args.weights:
                r["weights"] = str(args.weights)
        with open(out, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        print(
            f"{label} {name} sample {index} dose {records[0]['dose']:.3g}: "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )


def _true_counts(stores, keys) -> dict[tuple[str, int], dict[str, int]]:
    """``{(dataset, index): {element: number of true atoms}}`` from the stores' ground truth."""
    from ase.data import chemical_symbols

    from simgen.store import open_dataset

    opened = {}
    for store in stores:
        ds = open_dataset(store)
        opened[_dataset_name(ds, store)] = ds
    counts = {}
    for name, index in sorted(keys):
        if name not in opened:
            raise ValueError(
                f"--store: no store named {name!r} given (have {', '.join(sorted(opened))})"
            )
        ds = opened[name]
        position = {int(i): p for p, i in enumerate(ds.indices)}
        numbers = np.asarray(ds.read(position[index])["numbers"], dtype=int)
        elements, n = np.unique(numbers, return_counts=True)
        counts[(name, index)] = {chemical_symbols[z]: int(c) for z, c in zip(elements, n)}
    return counts


def crop_model(atoms, radius_a: float, offset_a=(0.0, 0.0, 0.0)):
    """The atoms within ``radius_a`` (Å) of the model's centroid + ``offset_a`` (Å), re-centred
    on their own centroid (an ``ase.Atoms``)."""
    positions = atoms.get_positions()
    centre = positions.mean(axis=0) + np.asarray(offset_a, dtype=float)
    keep = np.linalg.norm(positions - centre, axis=1) <= radius_a
    if not keep.any():
        raise ValueError(
            f"--radius: {radius_a:g} Å around centroid + {tuple(offset_a)} holds no atom; "
            "expected a sphere that cuts the model"
        )
    cropped = atoms[keep]
    cropped.positions -= cropped.positions.mean(axis=0)
    cropped.set_cell([0, 0, 0])
    cropped.set_pbc(False)
    return cropped


def cmd_crop(args) -> None:
    from simgen.structures import load_model
    from simgen.structures.io import write_model
    from simgen.tools.outputs import atomic_path

    if args.radius <= 0:
        raise ValueError(f"--radius: {args.radius:g}; expected a positive radius in Å")
    offset = [float(v) for v in args.offset.split(",")]
    if len(offset) != 3:
        raise ValueError(f"--offset: {args.offset!r}; expected X,Y,Z in Å")
    cropped = crop_model(load_model(args.model), args.radius, offset)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        write_model(cropped, tmp)
    symbols, counts = np.unique(cropped.get_chemical_symbols(), return_counts=True)
    extent = np.ptp(cropped.get_positions(), axis=0)
    print(
        f"wrote {out}: {len(cropped)} atoms ("
        + ", ".join(f"{s} {c}" for s, c in zip(symbols, counts))
        + f"), extent {extent[0]:.1f} × {extent[1]:.1f} × {extent[2]:.1f} Å"
    )


def recovery_table(records, method: str, baseline: str, stores) -> str:
    """Recovery with the correct element (%), per dose and true element, paired per particle.

    Per particle and element: species accuracy of that element x its matched atoms / its true
    atoms (1.0 Å); the change is ``method`` minus ``baseline`` (points), mean over particles
    with a 95% bootstrap interval.
    """
    from benchmark.metrics import bootstrap_ci, paired_difference
    from benchmark.sweep import _by_sample

    samples = _by_sample(records, [method, baseline])
    counts = _true_counts(stores, samples)
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


def _has_counts(record) -> bool:
    return any(k.startswith("n_true_") for k in record)


def cmd_report(args) -> None:
    from benchmark.runner import read_results
    from benchmark.sweep import _paired_markdown, paired_claim_verdict, paired_table, plot_paired

    records, seen = [], set()
    for r in read_results(args.results):
        key = (r.get("dataset"), r.get("index"), r.get("method"))
        if r.get("truth", "initial") != "initial" or key in seen:
            continue  # a sample run twice (two processes on one file) counts once
        seen.add(key)
        records.append(r)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = []
    groups = [[args.baseline, m] for m in methods]
    if len(methods) > 1:
        groups.append([args.baseline, *methods])
    figure_group = groups[-1]
    if args.figure_methods:
        figure_group = [args.baseline, *args.figure_methods.split(",")]
        if figure_group not in groups:
            groups.append(figure_group)
    # the true atoms per element: the paired-recovery part of the efficiency rule
    true_counts = None
    if args.store:
        keys = {(str(r.get("dataset", "")), int(r["index"])) for r in records if r.get("matches")}
        true_counts = _true_counts(args.store, keys)
    elif any(r.get("matches") and "n_true" in r and not _has_counts(r) for r in records):
        print(
            "note: records scored before n_true_<El> existed and no --store: the per-element "
            "paired-recovery part of the efficiency rule is not applied (give --store)",
            file=sys.stderr,
        )
    for group in groups:
        rows = paired_table(records, group, true_counts=true_counts)
        if not rows:
            continue
        text += [f"## Paired: {', '.join(group)}", "", _paired_markdown(rows, group), ""]
        if group == figure_group and args.figure:
            plot_paired(
                rows,
                args.figure,
                title=f"{args.title}: paired coordinate error (AET convention) on atoms every "
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
    run.add_argument("--store", required=True, action="append", help="a store (repeatable)")
    run.add_argument("--doses", required=True, help="comma-separated doses (e/Å²) or 'all'")
    run.add_argument("--out", required=True, help="results JSONL (appended to, resumable)")
    run.add_argument("--weights", default=None, help="PANN weights (run folder or pann.pt)")
    run.add_argument("--label", default=None, help="method name in the records (e.g. pann-new)")
    run.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    run.add_argument(
        "--limit", type=int, default=None, help="only the first N samples of the order"
    )
    report = sub.add_parser("report", help="paired tables and claim checks from results files")
    report.add_argument("results", nargs="+")
    report.add_argument("--baseline", default="classical")
    report.add_argument("--methods", required=True, help="comma-separated, compared to baseline")
    report.add_argument("--out", required=True, help="folder for verdict.md")
    report.add_argument(
        "--store", action="append", default=None, help="store(s) (per-element recovery table)"
    )
    report.add_argument("--figure", default=None, help="PNG of the paired errors of all methods")
    report.add_argument(
        "--figure-methods",
        default=None,
        help="comma-separated methods of the figure (with the baseline; default: all)",
    )
    report.add_argument("--title", default="dose-sweep", help="dataset name in the figure title")
    crop = sub.add_parser("crop", help="a sphere of an atomic model, as extended XYZ")
    crop.add_argument("model", help="atomic model (any format simgen reads)")
    crop.add_argument("--radius", type=float, required=True, help="sphere radius (Å)")
    crop.add_argument("--offset", default="0,0,0", help="X,Y,Z of the centre from the centroid (Å)")
    crop.add_argument("--out", required=True, help="output .xyz (extended XYZ)")
    args = parser.parse_args()
    try:
        {"run": cmd_run, "report": cmd_report, "crop": cmd_crop}[args.command](args)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    main()
