"""Leaderboards: method × dose tables (Markdown, HTML, CSV) with mean ± std and the best marked, plus plots."""

from __future__ import annotations

import csv
import html
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmark.runner import METRIC_KEYS

__all__ = ["aggregate", "write_rows_csv", "write_leaderboard", "plot_against_dose", "METRIC_LABELS"]

METRIC_LABELS = {
    "coordinate_error_pm": "coordinate error (pm)",
    "recovery_rate": "recovery rate (%)",
    "recovery_rate_species": "recovery with element (%)",
    "precision": "precision (%)",
    "species_accuracy": "species accuracy (%)",
}
_PERCENT = {"recovery_rate", "recovery_rate_species", "precision", "species_accuracy"}


def aggregate(records, by=("method", "dose"), metrics=tuple(METRIC_KEYS)) -> list[dict]:
    """Mean, standard deviation and count of each metric per group (NaN/None values are skipped)."""
    groups = defaultdict(list)
    for r in records:
        groups[tuple(r.get(k) for k in by)].append(r)
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


def write_rows_csv(rows, path, keys=("method", "dose"), metrics=tuple(METRIC_KEYS)) -> Path:
    """CSV of :func:`aggregate` rows: the group ``keys``, ``n``, then each metric and its std."""
    from simgen.outputs import atomic_path

    cols = [c for m in metrics for c in (m, m + "_std")]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*keys, "n", *cols])
        for row in rows:
            writer.writerow([*(row[k] for k in keys), row["n"], *(row[c] for c in cols)])
    return Path(path)


def _best(rows, metric, group_key):
    """Per group (e.g. dose), the index of the best row for ``metric``."""
    best = {}
    lower = METRIC_KEYS[metric]
    for i, row in enumerate(rows):
        value = row[metric]
        if not np.isfinite(value):
            continue
        g = row.get(group_key)
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


def write_leaderboard(
    records, out_dir, *, title="AET leaderboard", overwrite: bool = False, param: str = "out_dir"
) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``.html``, ``.csv`` and ``leaderboard.png`` into ``out_dir``.

    ``out_dir`` must be new, empty, or a leaderboard folder written before (replaced only with
    ``overwrite``); the folder is written beside it and swapped in complete
    (:func:`simgen.outputs.staged_output`).
    """
    from simgen.outputs import check_output, staged_output

    if not records:
        raise ValueError("results: no records to rank")
    check_output(out_dir, "report", overwrite=overwrite, param=param)
    final_dir = Path(out_dir)
    with staged_output(
        final_dir, "report", overwrite=overwrite, param=param, command="aet-bench leaderboard"
    ) as tmp:
        _write_leaderboard_files(records, tmp, title)
    return {
        "md": final_dir / "leaderboard.md",
        "html": final_dir / "leaderboard.html",
        "csv": final_dir / "leaderboard.csv",
        "png": final_dir / "leaderboard.png",
    }


def _write_leaderboard_files(records, out_dir: Path, title: str) -> None:
    rows = aggregate(records)
    metrics = list(METRIC_KEYS)
    best = {m: _best(rows, m, "dose") for m in metrics}
    header = ["method", "dose (e/Å²)", "n"] + [METRIC_LABELS[m] for m in metrics]

    md = [
        f"# {title}",
        "",
        "Mean ± standard deviation over samples; **bold** = best at that dose.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for i, row in enumerate(rows):
        cells = [str(row["method"]), f"{row['dose']:.3g}", str(row["n"])]
        cells += [f"**{_fmt(row, m)}**" if i in best[m] else _fmt(row, m) for m in metrics]
        md.append("| " + " | ".join(cells) + " |")
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
        f"<h1>{html.escape(title)}</h1><p>Mean ± standard deviation over samples; highlighted = best at that dose.</p>",
        "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>",
    ]
    for i, row in enumerate(rows):
        cells = [
            f"<td>{html.escape(str(row['method']))}</td><td>{row['dose']:.3g}</td><td>{row['n']}</td>"
        ]
        cells += [
            f"<td class='best'>{_fmt(row, m)}</td>" if i in best[m] else f"<td>{_fmt(row, m)}</td>"
            for m in metrics
        ]
        h.append("<tr>" + "".join(cells) + "</tr>")
    h.append("</table><p><img src='leaderboard.png' style='max-width:100%'></p></body></html>")
    paths["html"].write_text("\n".join(h))

    write_rows_csv(rows, paths["csv"], metrics=metrics)
    plot_against_dose(rows, out_dir / "leaderboard.png", title=title)


def plot_against_dose(
    rows,
    out,
    *,
    title="",
    metrics=("coordinate_error_pm", "recovery_rate_species", "species_accuracy", "precision"),
) -> Path:
    """Curves of each metric against dose (log axis) per method, with ±std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({r["method"] for r in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.8))
    markers = "osD^v<>"
    for ax, m in zip(np.atleast_1d(axes), metrics):
        for k, method in enumerate(methods):
            sel = sorted((r for r in rows if r["method"] == method), key=lambda r: r["dose"])
            x = [r["dose"] for r in sel]
            ax.errorbar(
                x,
                [r[m] for r in sel],
                yerr=[r[m + "_std"] for r in sel],
                marker=markers[k % len(markers)],
                capsize=3,
                lw=1.6,
                ms=5,
                label=method,
            )
        ax.set_xscale("log")
        ax.set_xlabel("dose per projection (e/Å²)")
        ax.set_ylabel(METRIC_LABELS[m])
        ax.grid(alpha=0.3, which="both")
    np.atleast_1d(axes)[0].legend(frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from simgen.outputs import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return Path(out)
