"""Dose sweeps: generate (or reuse) a dataset, run methods, tabulate and plot metrics against dose.

For stores without beam damage the sweep plots each metric against the dose per projection
(``sweep.png``, ``sweep.csv``). For stores that record the acquisition and beam damage
(:mod:`simgen.damage`, e.g. the ``damage-sweep`` dataset) it scores every prediction against
several ground truths (by default the ``initial`` and the ``final`` structure) and plots recovery
and coordinate error against the **total** dose of the series, one curve per (tilt scheme, damage
model) and one row of panels per truth, with the best total dose of every curve marked: too little
dose and the atoms drown in shot noise, too much and the structure that was there is gone.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from benchmark.leaderboard import (
    METRIC_LABELS,
    aggregate,
    plot_against_dose,
    row_keys,
    write_rows_csv,
)
from benchmark.runner import METRIC_KEYS, run_method
from simgen.outputs import atomic_path, write_text_atomic

__all__ = ["run_sweep", "plot_damage_sweep", "best_total_dose", "claim_verdict", "DAMAGE_GROUPS"]

logger = logging.getLogger(__name__)

#: Grouping of a damage sweep's records (one mean ± std per group).
DAMAGE_GROUPS = ("method", "truth", "tilt_scheme", "damage_model", "total_dose", "dose")
DAMAGE_METRICS = ("recovery_rate", "recovery_rate_species", "coordinate_error_pm")


def _store_info(store) -> tuple[str, bool]:
    """(dataset name, whether the store records the acquisition and beam damage)."""
    from simgen.store import open_dataset

    ds = open_dataset(store)
    return ds.name or Path(store).name, bool(ds.attrs.get("acquisition", False))


def run_sweep(
    out_dir,
    *,
    dataset: str = "dose-sweep",
    methods=("classical",),
    store=None,
    config=None,
    workers: int | None = None,
    limit: int | None = None,
    split: str | None = None,
    method_options: dict | None = None,
    truth: str | tuple[str, ...] | None = None,
    param: str = "out_dir",
) -> list[dict]:
    """Run ``methods`` over a dose-sweep store and write ``sweep.csv`` and ``sweep.png`` to ``out_dir``.

    Parameters
    ----------
    store
        An existing store; by default ``out_dir/<dataset>.zarr``, generated (or completed: the
        engine resumes) from ``config`` when it is missing samples.
    split
        Score only this split (``None``: every sample of the store).
    truth
        Ground truth(s) of damaged samples: ``"initial"``, ``"final"``, ``"mean"`` or a tuple.
        Default: ``("initial", "final")`` for stores that record beam damage, else ``"initial"``.

    Returns
    -------
    list of dict
        The aggregated rows (mean ± std per group) written to ``sweep.csv``.
    """
    from simgen.config import get_dataset
    from simgen.outputs import check_output, write_marker

    # A new or empty folder, or a sweep of ours: resumed (its store) and its tables refreshed.
    check_output(out_dir, "sweep", resume=True, param=param)
    out_dir = Path(out_dir)
    if store is None:
        spec = get_dataset(dataset, config)  # a bad name or catalogue fails before any writing
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, "sweep", "aet-bench sweep")
    if store is None:
        from simgen.engine import generate

        store = out_dir / f"{dataset}.zarr"
        report = generate(spec, store, workers=workers, limit=limit)
        if report.failed:
            logger.warning(
                "%d samples failed to generate; the sweep uses the others", len(report.failed)
            )
    name, damaged = _store_info(store)
    if truth is None:
        truth = ("initial", "final") if damaged else "initial"
    truths = (truth,) if isinstance(truth, str) else tuple(truth)
    records = []
    for method in methods:
        records += run_method(
            method,
            store,
            out_dir / f"results_{method}.jsonl",
            split=split,
            workers=workers or 1,
            options=(method_options or {}).get(method),
            truth=truths,
            overwrite=True,  # this sweep's own results, recomputed from its (resumed) store
        )
    if not damaged:
        rows = aggregate(
            [r for r in records if r.get("truth", "initial") == truths[0]], by=("method", "dose")
        )
        write_rows_csv(rows, out_dir / "sweep.csv")
        plot_against_dose(
            rows,
            out_dir / "sweep.png",
            title=f"{dataset}: metrics against dose (mean ± std over particles)",
            metrics=("recovery_rate_species", "coordinate_error_pm", "species_accuracy"),
        )
        methods_run = {r["method"] for r in rows}
        if {"pann", "classical"} <= methods_run:
            write_text_atomic(out_dir / "claim.md", claim_verdict(rows) + "\n")
        return rows

    rows = aggregate(records, by=DAMAGE_GROUPS)
    write_rows_csv(rows, out_dir / "sweep.csv")
    for k, method in enumerate(sorted({r["method"] for r in rows})):
        selected = [r for r in rows if r["method"] == method]
        title = (
            f"{name}, {method}: recovery and error against total dose (mean ± std over particles)"
        )
        plot_damage_sweep(selected, out_dir / f"sweep_{method}.png", truths=truths, title=title)
        if k == 0:
            plot_damage_sweep(selected, out_dir / "sweep.png", truths=truths, title=title)
    return rows


def best_total_dose(rows, metric: str = "recovery_rate") -> dict[tuple, float]:
    """Total dose (e/Å²) of the best mean ``metric`` per (method, truth, tilt_scheme, damage_model)."""
    lower = METRIC_KEYS[metric]
    best: dict[tuple, tuple[float, float]] = {}
    for row in rows:
        value = row[metric]
        if not np.isfinite(value):
            continue
        key = (row["method"], row["truth"], row["tilt_scheme"], row["damage_model"])
        if key not in best or (value < best[key][1] if lower else value > best[key][1]):
            best[key] = (row["total_dose"], value)
    return {key: dose for key, (dose, _) in best.items()}


def plot_damage_sweep(
    rows, out, *, truths=("initial", "final"), metrics=DAMAGE_METRICS, title=""
) -> Path:
    """Metrics against total dose: rows of panels = truths, columns = metrics.

    One colour per damage model, one line style per tilt scheme; a star marks the best total dose
    of each curve (highest recovery, lowest coordinate error).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    damage_models = sorted({r["damage_model"] for r in rows}, key=lambda d: (d != "none", d))
    schemes = sorted({r["tilt_scheme"] for r in rows})
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(len(damage_models), 1)))
    styles = ["-", "--", ":", "-."]
    markers = "osD^v"
    fig, axes = plt.subplots(
        len(truths), len(metrics), figsize=(4.6 * len(metrics), 3.6 * len(truths)), squeeze=False
    )
    for i, truth in enumerate(truths):
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            lower = METRIC_KEYS[metric]
            for c, model in enumerate(damage_models):
                for s, scheme in enumerate(schemes):
                    sel = sorted(
                        (
                            r
                            for r in rows
                            if r["truth"] == truth
                            and r["damage_model"] == model
                            and r["tilt_scheme"] == scheme
                        ),
                        key=lambda r: r["total_dose"],
                    )
                    if not sel:
                        continue
                    x = np.array([r["total_dose"] for r in sel])
                    y = np.array([r[metric] for r in sel])
                    err = np.array([r[metric + "_std"] for r in sel])
                    ax.errorbar(
                        x,
                        y,
                        yerr=err,
                        color=colours[c],
                        ls=styles[s % len(styles)],
                        marker=markers[s % len(markers)],
                        ms=4,
                        capsize=2,
                        lw=1.4,
                        label=f"{model}, {scheme}",
                    )
                    finite = np.isfinite(y)
                    if finite.any():
                        k = int(
                            np.nanargmin(np.where(finite, y, np.nan))
                            if lower
                            else np.nanargmax(np.where(finite, y, np.nan))
                        )
                        ax.plot(
                            x[k], y[k], marker="*", ms=13, color=colours[c], mec="k", mew=0.6, ls=""
                        )
            ax.set_xscale("log")
            ax.set_xlabel("total dose of the series (e/Å²)")
            ax.set_ylabel(METRIC_LABELS[metric])
            ax.set_title(f"scored against the {truth} structure", fontsize=9)
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(len(labels), 4),
            fontsize=8,
            frameon=False,
            title="damage model, tilt scheme (★ best total dose)",
            title_fontsize=8,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    n_legend_rows = math.ceil(len(labels) / 4) if handles else 0
    fig.tight_layout(rect=(0, 0.04 + 0.035 * n_legend_rows, 1, 0.97))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(out)


def claim_verdict(
    rows,
    method: str = "pann",
    baseline: str = "classical",
    *,
    error_reduction: float = 0.25,
    recovery_gain: float = 5.0,
    low_doses: int = 2,
) -> str:
    """The paper's low-dose claim checked on aggregated sweep rows, as a Markdown table.

    At the ``low_doses`` lowest doses ``method`` must lower the coordinate error by at least
    ``error_reduction`` (fraction) and raise the recovery rate with the correct element by at least
    ``recovery_gain`` percentage points relative to ``baseline``; at the highest dose it must be no
    worse (error at most 5% higher and recovery at most 1 point lower, within noise).
    """
    by = {(r["method"], r["dose"]): r for r in rows}
    if len(by) < len(rows):
        raise ValueError(
            f"rows: several rows per method and dose (they differ in {row_keys(rows)[2:]}); "
            "the claim is checked on one setting at a time"
        )
    doses = sorted(
        {r["dose"] for r in rows if (method, r["dose"]) in by and (baseline, r["dose"]) in by}
    )
    if not doses:
        raise ValueError(f"rows: no dose with both {method!r} and {baseline!r}")
    lines = [
        f"| dose (e/Å²) | {baseline} error (pm) | {method} error (pm) | error change | "
        f"{baseline} recovery+element (%) | {method} recovery+element (%) | change (points) | bar | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for k, dose in enumerate(doses):
        a, b = by[(baseline, dose)], by[(method, dose)]
        err_change = (b["coordinate_error_pm"] - a["coordinate_error_pm"]) / a[
            "coordinate_error_pm"
        ]
        rec_change = b["recovery_rate_species"] - a["recovery_rate_species"]
        if k < low_doses:
            bar = f"error ≤ −{error_reduction:.0%}, recovery ≥ +{recovery_gain:g}"
            ok = err_change <= -error_reduction and rec_change >= recovery_gain
        elif k == len(doses) - 1:
            bar = "no worse"
            ok = err_change <= 0.05 and rec_change >= -1.0
        else:
            bar, ok = "–", None
        if ok is not None:
            verdicts.append(ok)
        lines.append(
            f"| {dose:.3g} | {a['coordinate_error_pm']:.1f} ± {a['coordinate_error_pm_std']:.1f} | "
            f"{b['coordinate_error_pm']:.1f} ± {b['coordinate_error_pm_std']:.1f} | {err_change:+.0%} | "
            f"{a['recovery_rate_species']:.1f} ± {a['recovery_rate_species_std']:.1f} | "
            f"{b['recovery_rate_species']:.1f} ± {b['recovery_rate_species_std']:.1f} | {rec_change:+.1f} | {bar} | "
            + ("–" if ok is None else ("holds" if ok else "**fails**"))
            + " |"
        )
    overall = "holds" if all(verdicts) else "does not hold"
    lines.append("")
    lines.append(f"Verdict: the claim {overall} for {method} against {baseline} on this sweep.")
    return "\n".join(lines)
