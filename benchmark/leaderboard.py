"""Leaderboards: method × dose tables (Markdown, HTML, CSV) with mean ± std and the best marked, plus plots."""

from __future__ import annotations

import csv
import html
import itertools
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmark.runner import METRIC_KEYS

__all__ = [
    "aggregate",
    "group_fields",
    "row_keys",
    "MEANING_FIELDS",
    "write_rows_csv",
    "write_leaderboard",
    "plot_against_dose",
    "efficiency_rows",
    "species_rows",
    "bound_by_dose",
    "recovery_bound_by_dose",
    "METRIC_LABELS",
    "HEADLINE_ERROR",
]

METRIC_LABELS = {
    "coordinate_error_aet_pm": "coordinate error (pm, rigid offset removed)",
    "coordinate_error_pm": "raw coordinate error (pm)",
    "recovery_rate": "recovery rate (%)",
    "recovery_rate_species": "recovery with element (%)",
    "precision": "precision (%)",
    "species_accuracy": "species accuracy (%)",
    "crlb_pm": "Cramér–Rao bound (pm)",
    "recovery_bound": "recovery bound (%)",
}
#: The headline coordinate error (AET convention: each particle's rigid offset removed).
HEADLINE_ERROR = "coordinate_error_aet_pm"
#: The record key of the Cramér–Rao bound (RMS over a sample's true atoms, pm; benchmark.crlb).
BOUND_KEY = "crlb_pm"
#: The record key of the detection limit (mean over a sample's true atoms of the optimal test's
#: detection probability at a 1% false-alarm rate, a fraction; benchmark.detection).
RECOVERY_BOUND_KEY = "recovery_bound"
_PERCENT = {
    "recovery_rate",
    "recovery_rate_species",
    "precision",
    "species_accuracy",
    RECOVERY_BOUND_KEY,
}


#: Record fields that change what a number means (which data, method, setting and truth):
#: records that differ in any of them are never averaged into one row.
MEANING_FIELDS = (
    "dataset",
    "method",
    "method_version",
    "split",
    "noise_model",
    "truth",
    "tilt_scheme",
    "damage_model",
    "radius",
    "align",
    "dose",
    "total_dose",
)


def _hashable(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def group_fields(records, by=("method", "dose")) -> tuple[str, ...]:
    """The grouping of ``records``: ``by``, then every :data:`MEANING_FIELDS` entry whose value
    differs between records (a field absent from every record is not a group key)."""
    extra = [
        f for f in MEANING_FIELDS if f not in by and len({_hashable(r.get(f)) for r in records}) > 1
    ]
    return (*by, *extra)


def aggregate(records, by=("method", "dose"), metrics=tuple(METRIC_KEYS)) -> list[dict]:
    """Mean, standard deviation and count of each metric per group (NaN/None values are skipped).

    Groups are ``by`` extended by :func:`group_fields`, so records of different datasets, match
    radii, truths, splits or noise models are never merged into one row. The same sample twice in
    one group (the same results given twice) is an error.
    """
    by = group_fields(records, tuple(by))
    groups = defaultdict(list)
    for r in records:
        groups[tuple(_hashable(r.get(k)) for k in by)].append(r)
    for key, members in groups.items():
        seen = set()
        for r in members:
            if "index" not in r:
                continue
            sample = (r.get("dataset"), r["index"])
            if sample in seen:
                setting = ", ".join(f"{k}={v!r}" for k, v in zip(by, key))
                raise ValueError(
                    f"results: sample {r['index']} of dataset {r.get('dataset')!r} appears twice "
                    f"with {setting} (the same results given twice?)"
                )
            seen.add(sample)
    rows = []
    for key in sorted(groups, key=lambda k: tuple((str(type(x)), x) for x in k)):
        row = dict(zip(by, key))
        row["n"] = len(groups[key])
        for m in metrics:
            values = np.array([r.get(m) for r in groups[key] if r.get(m) is not None], dtype=float)
            values = values[np.isfinite(values)]
            scale = 100.0 if m in _PERCENT else 1.0
            row[m] = float(values.mean() * scale) if len(values) else math.nan
            row[m + "_std"] = (
                float(values.std(ddof=1) * scale)
                if len(values) > 1
                else (0.0 if len(values) else math.nan)
            )
        rows.append(row)
    return rows


def row_keys(rows) -> list[str]:
    """The group keys of :func:`aggregate` rows (the fields before ``n``)."""
    return list(itertools.takewhile(lambda k: k != "n", rows[0])) if rows else []


def write_rows_csv(rows, path, keys=None, metrics=tuple(METRIC_KEYS)) -> Path:
    """CSV of :func:`aggregate` rows: the group ``keys`` (default: the rows' own), ``n``, then each
    metric and its std."""
    from simgen.tools.outputs import atomic_path

    keys = row_keys(rows) if keys is None else keys
    cols = [c for m in metrics for c in (m, m + "_std")]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*keys, "n", *cols])
        for row in rows:
            writer.writerow([*(row[k] for k in keys), row["n"], *(row[c] for c in cols)])
    return Path(path)


def _best(rows, metric, compare_within):
    """Indices of the best row for ``metric`` among rows equal in every ``compare_within`` key."""
    best = {}
    lower = METRIC_KEYS[metric]
    for i, row in enumerate(rows):
        value = row[metric]
        if not np.isfinite(value):
            continue
        g = tuple(row.get(k) for k in compare_within)
        if g not in best or (
            value < rows[best[g]][metric] if lower else value > rows[best[g]][metric]
        ):
            best[g] = i
    return set(best.values())


def _fmt(row, m):
    v, s = row[m], row[m + "_std"]
    if not np.isfinite(v):
        return "–"
    digits = 1
    return f"{v:.{digits}f} ± {s:.{digits}f}" if np.isfinite(s) else f"{v:.{digits}f}"


def _cell(key, value) -> str:
    if key in ("dose", "total_dose") and isinstance(value, (int, float)):
        return f"{value:.3g}"
    return str(value)


_COLUMN_LABELS = {"dose": "dose (e/Å²)", "total_dose": "total dose (e/Å²)", "radius": "radius (Å)"}


def write_leaderboard(
    records, out_dir, *, title="AET leaderboard", overwrite: bool = False, param: str = "out_dir"
) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``.html``, ``.csv`` and ``leaderboard.png`` into ``out_dir``.

    One row per method, dose and every other setting in which the records differ
    (:func:`group_fields`); settings shared by all records are stated once under the title.
    ``out_dir`` must be new, empty, or a leaderboard folder written before (replaced only with
    ``overwrite``); the folder is written beside it and swapped in complete
    (:func:`simgen.tools.outputs.staged_output`).
    """
    from simgen.tools.outputs import check_output, staged_output

    if not records:
        raise ValueError("results: no records to rank")
    check_output(out_dir, "report", overwrite=overwrite, param=param)
    # refuses duplicates before anything is written
    rows = aggregate(records, metrics=(*METRIC_KEYS, BOUND_KEY, RECOVERY_BOUND_KEY))
    final_dir = Path(out_dir)
    with staged_output(
        final_dir, "report", overwrite=overwrite, param=param, command="aet-bench leaderboard"
    ) as tmp:
        _write_leaderboard_files(records, rows, tmp, title)
    return {
        "md": final_dir / "leaderboard.md",
        "html": final_dir / "leaderboard.html",
        "csv": final_dir / "leaderboard.csv",
        "png": final_dir / "leaderboard.png",
    }


def _write_leaderboard_files(records, rows, out_dir: Path, title: str) -> None:
    keys = row_keys(rows)
    columns = list(dict.fromkeys(["dataset", *keys])) if "dataset" in records[0] else keys
    shared = {
        f: records[0][f]
        for f in MEANING_FIELDS
        if f not in columns and f in records[0] and f != "method_version"
    }
    # The best is marked among rows that differ only in the method.
    compare_within = [k for k in keys if k not in ("method", "method_version")]
    metrics = list(METRIC_KEYS)
    best = {m: _best(rows, m, compare_within) for m in metrics}
    has_bound = any(np.isfinite(r[BOUND_KEY]) for r in rows)
    has_recovery_bound = any(np.isfinite(r.get(RECOVERY_BOUND_KEY, math.nan)) for r in rows)
    header = (
        [_COLUMN_LABELS.get(k, k) for k in columns] + ["n"] + [METRIC_LABELS[m] for m in metrics]
    )
    if has_bound:
        header += [METRIC_LABELS[BOUND_KEY], "efficiency (bound / error)"]
    if has_recovery_bound:
        header += [METRIC_LABELS[RECOVERY_BOUND_KEY]]
    setting = "; ".join(f"{_COLUMN_LABELS.get(k, k)} {v}" for k, v in shared.items())

    md = [
        f"# {title}",
        "",
        "Mean ± standard deviation over samples; **bold** = best at that setting. Coordinate "
        "error: each particle's rigid offset (the mean displacement of its matched pairs, which "
        "the alignment's gauge leaves unknowable) removed, the AET convention; raw: offset kept.",
        *(["", f"Every row: {setting}."] if setting else []),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for i, row in enumerate(rows):
        cells = [_cell(k, row.get(k, records[0].get(k))) for k in columns] + [str(row["n"])]
        cells += [f"**{_fmt(row, m)}**" if i in best[m] else _fmt(row, m) for m in metrics]
        if has_bound:
            cells += [_fmt(row, BOUND_KEY), _efficiency_text(row, _radius(row, records))]
        if has_recovery_bound:
            cells += [_fmt(row, RECOVERY_BOUND_KEY)]
        md.append("| " + " | ".join(cells) + " |")
    element_rows = efficiency_rows(records)
    if has_bound or element_rows:
        from benchmark.metrics import EFFICIENCY_FOOTNOTE, efficiency_text

        md += ["", EFFICIENCY_FOOTNOTE]
    if has_recovery_bound:
        md += ["", RECOVERY_BOUND_FOOTNOTE]
    if element_rows:
        md += [
            "",
            "Per element: coordinate error over each method's matched atoms (rigid offset "
            "removed: each particle's mean displacement of matched pairs subtracted; raw = "
            "offset kept), the isolated-atom Cramér–Rao bound of the same samples' true atoms "
            "(RMS, pm) and the efficiency bound / error (1 = at the physical limit).",
            "",
            "| method | dose (e/Å²) | element | error (pm) | raw error (pm) | bound (pm) | "
            "efficiency |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in element_rows:
            raw = f"{r['raw_error_pm']:.1f}" if np.isfinite(r["raw_error_pm"]) else "–"
            md.append(
                f"| {r['method']} | {r['dose']:.3g} | {r['element']} | {r['error_pm']:.1f} | "
                f"{raw} | {r['bound_pm']:.1f} | "
                f"{efficiency_text(r['efficiency'], r['efficiency_withheld'])} |"
            )
    species = species_rows(records)
    if species:
        md += [
            "",
            "Per element: the species labels as a detector of each element (match radius as "
            "above; mean ± standard deviation over the samples where it is defined, n of them): "
            "recovery = true atoms matched and labelled with the element / its true atoms; "
            "precision = predicted atoms labelled with it that are matched to a true atom of it / "
            "predicted atoms labelled with it; F1 = 2 TP / (2 TP + FP + FN) (0 where the element "
            "is present but never named). Calling every light atom "
            "the same element gives that element a full recovery and a low precision.",
            "",
            "| method | dose (e/Å²) | element | recovery (%) | precision (%) | F1 (%) |",
            "|---|---|---|---|---|---|",
        ]
        for r in species:
            cells = [
                f"{r[m]:.1f} ± {r[m + '_std']:.1f} (n={r[m + '_n']})" if np.isfinite(r[m]) else "–"
                for m in SPECIES_KEYS
            ]
            md.append(
                f"| {r['method']} | {_cell('dose', r['dose'])} | {r['element']} | "
                + " | ".join(cells)
                + " |"
            )
    paths = {
        "md": out_dir / "leaderboard.md",
        "html": out_dir / "leaderboard.html",
        "csv": out_dir / "leaderboard.csv",
    }
    paths["md"].write_text("\n".join(md) + "\n")

    css = (
        "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}th{background:#f3f3f3}"
        "td:first-child,th:first-child{text-align:left}.best{font-weight:bold;background:#e6f4ea}"
    )
    h = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{css}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>Mean ± standard deviation over samples; highlighted = best at that setting."
        + (f" Every row: {html.escape(setting)}." if setting else "")
        + "</p>",
        "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>",
    ]
    for i, row in enumerate(rows):
        cells = [
            f"<td>{html.escape(_cell(k, row.get(k, records[0].get(k))))}</td>" for k in columns
        ] + [f"<td>{row['n']}</td>"]
        cells += [
            f"<td class='best'>{_fmt(row, m)}</td>" if i in best[m] else f"<td>{_fmt(row, m)}</td>"
            for m in metrics
        ]
        if has_bound:
            cells += [
                f"<td>{_fmt(row, BOUND_KEY)}</td>"
                f"<td>{_efficiency_text(row, _radius(row, records))}</td>"
            ]
        h.append("<tr>" + "".join(cells) + "</tr>")
    h.append("</table><p><img src='leaderboard.png' style='max-width:100%'></p></body></html>")
    paths["html"].write_text("\n".join(h))

    write_rows_csv(
        rows,
        paths["csv"],
        metrics=metrics
        + ([BOUND_KEY] if has_bound else [])
        + ([RECOVERY_BOUND_KEY] if has_recovery_bound else []),
    )
    plot_against_dose(
        rows,
        out_dir / "leaderboard.png",
        title=title,
        bound=bound_by_dose(rows),
        recovery_bound=recovery_bound_by_dose(rows),
    )


def _radius(row, records) -> float:
    """The match radius (Å) of a row: its own group key, else the records' (1.0 by default)."""
    value = row.get("radius", records[0].get("radius") if records else None)
    return 1.0 if value is None else float(value)


def _efficiency_text(row, radius_a: float = 1.0) -> str:
    """Bound / error of an :func:`aggregate` row, "—" where :func:`benchmark.metrics.efficiency`
    withholds it (bound or error ≥ 1/3 of the match radius, recovery under 50%). The error is
    the headline one (AET convention, rigid offset removed): the bound is that of each atom's
    position, which knows nothing of the frame's unknowable offset."""
    from benchmark.metrics import efficiency, efficiency_text

    error, bound = row.get(HEADLINE_ERROR, math.nan), row.get(BOUND_KEY, math.nan)
    recovery = row.get("recovery_rate", math.nan)
    recovery = recovery / 100.0 if recovery is not None and np.isfinite(recovery) else None
    return efficiency_text(*efficiency(bound, error, radius_a, recovery))


def bound_by_dose(rows, key: str = BOUND_KEY) -> dict[float, float]:
    """Mean Cramér–Rao bound (pm) per dose from :func:`aggregate` rows that carry it (or another
    per-dose bound ``key`` of the rows, e.g. :data:`RECOVERY_BOUND_KEY`)."""
    out: dict[float, float] = {}
    for row in rows:
        value = row.get(key, math.nan)
        if value is not None and np.isfinite(value) and row["dose"] not in out:
            out[row["dose"]] = float(value)
    return out


def recovery_bound_by_dose(rows) -> dict[float, float]:
    """Mean recovery bound (%) per dose from :func:`aggregate` rows that carry it."""
    return bound_by_dose(rows, RECOVERY_BOUND_KEY)


#: What the recovery bound column means (leaderboards and sweeps).
RECOVERY_BOUND_FOOTNOTE = (
    "Recovery bound: the recovery an optimal detector reaches at a 1% false-alarm rate per "
    "candidate, knowing each true atom's position (detectability d′ = σ·sqrt(Fisher information "
    "of σ) under the sample's own acquisition; benchmark.detection). Like the Cramér–Rao bound "
    "for the error, a method beats it only by accepting more false atoms."
)


def efficiency_rows(records) -> list[dict]:
    """Per (method and other settings, dose, element): mean error, mean bound (pm) and
    efficiency = bound / error.

    Uses the per-element keys ``coordinate_error_aet_pm_<El>`` (headline, rigid offset removed;
    ``error_pm``), ``coordinate_error_pm_<El>`` (raw; ``raw_error_pm``) and ``crlb_pm_<El>`` of
    the records (means over samples); empty when the records carry no bound. The efficiency is NaN where
    :func:`benchmark.metrics.efficiency` withholds it (bound or error ≥ 1/3 of the records'
    match radius, or mean recovery under 50%), with the reason in ``efficiency_withheld``.
    """
    from benchmark.metrics import efficiency

    groups, elements = _by_setting_and_dose(records, "crlb_pm_")
    rows = []
    for (method, dose), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        for element in sorted(elements):
            err = _values(group, f"coordinate_error_aet_pm_{element}")
            raw = _values(group, f"coordinate_error_pm_{element}")
            bnd = _values(group, f"crlb_pm_{element}")
            if not np.isfinite(bnd).any() or not np.isfinite(err).any():
                continue
            error, bound = float(np.nanmean(err)), float(np.nanmean(bnd))
            raw_error = float(np.nanmean(raw)) if np.isfinite(raw).any() else math.nan
            radius = float(group[0].get("radius") or 1.0)
            recovery = [r.get("recovery_rate") for r in group]
            recovery = np.array([np.nan if v is None else v for v in recovery], dtype=float)
            recovery = float(np.nanmean(recovery)) if np.isfinite(recovery).any() else None
            value, withheld = efficiency(bound, error, radius, recovery)
            rows.append(
                {
                    "method": method,
                    "dose": dose,
                    "element": element,
                    "error_pm": error,
                    "raw_error_pm": raw_error,
                    "bound_pm": bound,
                    "efficiency": value,
                    "efficiency_withheld": withheld,
                }
            )
    return rows


def _values(group, key) -> np.ndarray:
    """``key`` of every record of ``group`` as floats, NaN where absent or None."""
    return np.array([np.nan if r.get(key) is None else r[key] for r in group], dtype=float)


#: Per-element keys of the species labels (benchmark.metrics.score), without the ``_<El>``.
SPECIES_KEYS = ("recovery_rate_species", "precision_species", "f1_species")


def species_rows(records) -> list[dict]:
    """Per (method and other settings, dose, element): mean, std (percent) and count over samples
    of ``recovery_rate_species_<El>``, ``precision_species_<El>`` and ``f1_species_<El>``.

    NaN/None values (an element nobody labelled has no precision) are skipped and the count says
    how many samples are left. Empty when no record carries the keys (results scored before
    they existed).
    """
    groups, elements = _by_setting_and_dose(records, "precision_species_")
    rows = []
    for (method, dose), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        for element in sorted(elements):
            row = {"method": method, "dose": dose, "element": element}
            for key in SPECIES_KEYS:
                values = [r.get(f"{key}_{element}") for r in group]
                values = np.array([v for v in values if v is not None], dtype=float)
                values = 100.0 * values[np.isfinite(values)]
                row[key] = float(values.mean()) if len(values) else math.nan
                row[key + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                row[key + "_n"] = len(values)
            if any(row[k + "_n"] for k in SPECIES_KEYS):
                rows.append(row)
    return rows


def plot_against_dose(
    rows,
    out,
    *,
    title="",
    metrics=(HEADLINE_ERROR, "recovery_rate_species", "species_accuracy", "precision"),
    bound: dict | None = None,
    recovery_bound: dict | None = None,
) -> Path:
    """Curves of each metric against dose (log axis) per method, with ±std error bars.

    ``bound`` (``{dose: pm}``, e.g. :func:`bound_by_dose`) is drawn as a black dashed line, the
    Cramér–Rao bound, on every coordinate-error panel; ``recovery_bound`` (``{dose: %}``,
    :func:`recovery_bound_by_dose`) as a black dash-dotted line, the detection limit, on every
    recovery panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One curve per method and per other setting in which the rows differ.
    series_keys = [k for k in row_keys(rows) if k not in ("dose", "total_dose")] or ["method"]
    series = sorted({tuple(str(r.get(k)) for k in series_keys) for r in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.8))
    markers = "osD^v<>"
    for ax, m in zip(np.atleast_1d(axes), metrics):
        for k, label in enumerate(series):
            sel = sorted(
                (r for r in rows if tuple(str(r.get(f)) for f in series_keys) == label),
                key=lambda r: r["dose"],
            )
            x = [r["dose"] for r in sel]
            ax.errorbar(
                x,
                [r[m] for r in sel],
                yerr=[r[m + "_std"] for r in sel],
                marker=markers[k % len(markers)],
                capsize=3,
                lw=1.6,
                ms=5,
                label=", ".join(label),
            )
        if bound and m.startswith("coordinate_error"):
            doses = sorted(bound)
            ax.plot(
                doses, [bound[d] for d in doses], "k--", lw=1.4, label="Cramér–Rao bound (isolated)"
            )
            ax.set_yscale("log")
        if recovery_bound and m.startswith("recovery_rate"):
            doses = sorted(recovery_bound)
            ax.plot(
                doses,
                [recovery_bound[d] for d in doses],
                "k-.",
                lw=1.4,
                label="recovery bound (1% false alarms)",
            )
        ax.set_xscale("log")
        ax.set_xlabel("dose per projection (e/Å²)")
        ax.set_ylabel(METRIC_LABELS[m])
        ax.grid(alpha=0.3, which="both")
        if (bound and m.startswith("coordinate_error")) or (
            recovery_bound and m.startswith("recovery_rate")
        ):
            ax.legend(frameon=False, fontsize=8)
    np.atleast_1d(axes)[0].legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from simgen.tools.outputs import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return Path(out)


def _by_setting_and_dose(records, element_prefix: str):
    """Records grouped by (setting label, dose), and the elements of keys ``<prefix><El>``."""
    by = [k for k in group_fields(records) if k != "dose"]
    groups = defaultdict(list)
    elements = set()
    for r in records:
        label = ", ".join(str(_hashable(r.get(k))) for k in by)
        groups[(label, r.get("dose"))].append(r)
        elements |= {k[len(element_prefix) :] for k in r if k.startswith(element_prefix)}
    return groups, elements
