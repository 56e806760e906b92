"""Paired, per-element comparison of methods (or of one method with several weights) on one store.

Reads `aet-bench run` result files (run with the default per-atom matches), relabels each with a
name of your choice (two PANN weight files are both ``method: pann``), keeps the samples that
every file scored, and prints per element, with 95% bootstrap intervals over particles:

- recovery with the correct element (matched within the radius *and* classified right / true
  atoms of that element), from each record's matches and per-element species accuracy and the
  store's truth;
- precision of the species labels (predicted atoms labelled e that are matched to a true atom
  of e / predicted atoms labelled e, from the records' key ``precision_species_<El>``) and its
  F1 with the recovery above (0 where the element is present but nothing was labelled with it:
  a particle where a method never names Fe counts, it is not dropped); the row ``all`` pools the elements
  (correctly labelled pairs / predicted atoms). Records written before those keys existed lack
  them: their cells are "—" and a note under the table names the files (rescore them with
  ``aet-bench run`` to fill them);
- species accuracy among matched atoms;
- the paired coordinate error (AET convention, each particle's rigid offset removed) on the true
  atoms that every method recovered (:func:`benchmark.metrics.paired_errors`);
- the paired per-particle difference of each method against a baseline (``--baseline``).

``--elements Fe,Ni,Pd,Pt,Au`` keeps only the particles whose elements are all in the list (e.g.
those that weights trained on fewer elements can classify at all).

    python scripts/compare_weights.py --data STORE new=new.jsonl old=old.jsonl classical=c.jsonl \
        --baseline old --out compare.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmark.metrics import bootstrap_ci, paired_difference, paired_errors
from simgen.tools.outputs import write_text_atomic

METRICS = (
    "recovery_species",
    "precision_species",
    "f1_species",
    "species_accuracy",
    "paired_error_pm",
)
LABELS = {
    "recovery_species": "recovery with the correct element (%)",
    "precision_species": "precision of the species labels (%)",
    "f1_species": "F1 of the species labels (%)",
    "species_accuracy": "species accuracy among matched (%)",
    "paired_error_pm": "paired coordinate error (pm, AET)",
}
#: Metrics read from record keys that records of older runs lack.
NEW_KEYS = {"precision_species": "precision_species_", "f1_species": "f1_species_"}


def _read(path: Path) -> dict[int, dict]:
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if r.get("matches") is not None:
                records[int(r["index"])] = r
    return records


def _species_label_scores(r: dict, element: str, recovery_pct: float) -> tuple[float, float]:
    """Precision and F1 (%) of the species labels of one record for ``element`` ('all': pooled).

    NaN where the record lacks the keys (written before they existed) or they are undefined."""
    if lacks_species_keys(r):
        return np.nan, np.nan
    recall = recovery_pct / 100.0
    if element == "all":
        n_pred = r.get("n_pred")
        if not n_pred or not np.isfinite(recovery_pct):
            return np.nan, np.nan
        precision = recall * float(r["n_true"]) / float(n_pred)  # right pairs / predicted atoms
    else:
        precision = r.get(f"precision_species_{element}")
        precision = np.nan if precision is None else float(precision)
        if not np.isfinite(precision):  # the element is present but nothing was labelled with it
            return np.nan, 0.0 if np.isfinite(recall) else np.nan
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return 100.0 * precision, 100.0 * f1


def lacks_species_keys(r: dict) -> bool:
    """Whether a record was scored before ``precision_species_<El>`` existed."""
    return not any(k.startswith("precision_species_") for k in r)


def per_particle(records: dict[str, dict], true_elements: np.ndarray) -> dict:
    """``{element: {method: {metric: value}}}`` for one particle (``element`` 'all' included)."""
    symbols, counts = np.unique(true_elements, return_counts=True)
    n_true = dict(zip(symbols.tolist(), counts.tolist()))
    n_true["all"] = int(len(true_elements))
    paired = paired_errors({m: r["matches"] for m, r in records.items()}, aet=True)
    out: dict = {}
    for element in ["all", *symbols.tolist()]:
        row = {}
        for method, r in records.items():
            matched = np.asarray(r["matches"]["element"], dtype=str)
            if element == "all":
                n_matched = len(matched)
                accuracy = r.get("species_accuracy")
            else:
                n_matched = int(np.count_nonzero(matched == element))
                accuracy = r.get(f"species_accuracy_{element}")
            accuracy = np.nan if accuracy is None else float(accuracy)
            correct = accuracy * n_matched if n_matched else 0.0
            recovery = 100.0 * correct / n_true[element]
            precision, f1 = _species_label_scores(r, element, recovery)
            row[method] = {
                "recovery_species": recovery,
                "precision_species": precision,
                "f1_species": f1,
                "species_accuracy": 100.0 * accuracy if n_matched else np.nan,
                "paired_error_pm": paired[method].get(element, np.nan)
                if element in paired[method]
                else np.nan,
            }
        out[element] = row
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="NAME=RESULTS.jsonl")
    p.add_argument("--data", required=True, help="the simgen store the results were run on")
    p.add_argument("--baseline", help="NAME of the method every other is paired against")
    p.add_argument("--elements", help="keep particles whose elements are all in this list")
    p.add_argument("--by", default="", help="also split by this field (e.g. dose), 'all' only")
    p.add_argument("--out", help="write the Markdown tables here as well")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)

    from simgen.store import open_dataset

    files = {}
    for item in args.results:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise SystemExit(f"results: {item!r}: expected NAME=RESULTS.jsonl (an existing file)")
        files[name] = _read(Path(path))
    methods = list(files)
    baseline = args.baseline or methods[-1]
    if baseline not in files:
        raise SystemExit(f"--baseline={baseline!r}: expected one of {methods}")
    keep = set(args.elements.split(",")) if args.elements else None
    dataset = open_dataset(args.data)
    common = sorted(set.intersection(*(set(f) for f in files.values())))
    values: dict = {}  # (group, element, method, metric) -> list over particles
    n_particles: dict = {}
    stale: set = set()  # methods with records scored before the species-label keys existed
    for index in common:
        _, numbers = dataset.truth_atoms(index)
        from ase.data import chemical_symbols

        true_elements = np.array([chemical_symbols[z] for z in numbers], dtype=str)
        if keep is not None and not set(true_elements.tolist()) <= keep:
            continue
        records = {m: files[m][index] for m in methods}
        stale |= {m for m, r in records.items() if lacks_species_keys(r)}
        groups = ["all"]
        if args.by:
            groups.append(
                f"{args.by}={records[methods[0]][args.by]:g}"
                if isinstance(records[methods[0]][args.by], float)
                else f"{args.by}={records[methods[0]][args.by]}"
            )
        table = per_particle(records, true_elements)
        for group in groups:
            for element, row in table.items():
                if group != "all" and element != "all":
                    continue
                n_particles[(group, element)] = n_particles.get((group, element), 0) + 1
                for method, metrics in row.items():
                    for metric, v in metrics.items():
                        values.setdefault((group, element, method, metric), []).append(v)
    if not n_particles:
        raise SystemExit("no particle scored by every results file (after --elements)")
    text = markdown(values, n_particles, methods, baseline, title=args.title, stale=stale)
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


def markdown(values, n_particles, methods, baseline, *, title="", stale=()) -> str:
    """The Markdown tables: one per metric, rows (group, element), columns the methods and the
    paired differences against ``baseline``. ``stale``: methods whose records lack the
    species-label keys (named in a note under those tables)."""
    lines = [f"## {title}" if title else "", ""]
    lines.append(
        f"{n_particles[('all', 'all')]} particles scored by every method; mean over particles "
        "[95% bootstrap CI]; Δ = paired per-particle difference against "
        f"`{baseline}` [95% CI]."
    )
    groups = sorted({g for g, _ in n_particles}, key=lambda g: (g != "all", _group_key(g)))
    for metric in METRICS:
        lines += ["", f"**{LABELS[metric]}**", ""]
        head = "| group | element | particles | " + " | ".join(methods)
        head += " | " + " | ".join(f"Δ {m} − {baseline}" for m in methods if m != baseline)
        lines += [head + " |", "|" + "---|" * (3 + 2 * len(methods) - 1)]
        for group in groups:
            elements = sorted(
                {e for g, e in n_particles if g == group}, key=lambda e: (e != "all", e)
            )
            for element in elements:
                cells = []
                for m in methods:
                    mean, lo, hi = bootstrap_ci(values[(group, element, m, metric)])
                    cells.append(_fmt(mean, lo, hi))
                for m in methods:
                    if m == baseline:
                        continue
                    d, lo, hi = paired_difference(
                        values[(group, element, m, metric)],
                        values[(group, element, baseline, metric)],
                    )
                    cells.append(_fmt(d, lo, hi, signed=True))
                lines.append(
                    f"| {group} | {element} | {n_particles[(group, element)]} | "
                    + " | ".join(cells)
                    + " |"
                )
        if metric in NEW_KEYS:
            lines += [
                "",
                "Mean over the particles where it is defined (an element nobody labelled is "
                "undefined, not 0).",
            ]
            if stale:
                names = ", ".join(f"`{m}`" for m in methods if m in stale)
                lines.append(
                    f"Not available for {names}: records scored before `{NEW_KEYS[metric]}<El>` "
                    "existed (rescore with `aet-bench run` to fill these cells)."
                )
    return "\n".join(lines).strip() + "\n"


def _group_key(group: str):
    value = group.partition("=")[2]
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _fmt(mean, lo, hi, signed=False) -> str:
    if not np.isfinite(mean):
        return "—"
    sign = "+" if signed else ""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{mean:{sign}.1f}"
    return f"{mean:{sign}.1f} [{lo:{sign}.1f}, {hi:{sign}.1f}]"


if __name__ == "__main__":
    raise SystemExit(main())
