"""Scores of a predicted atomic model against the ground truth (docs/design.md, metrics contract).

Predicted and true atoms are matched one-to-one within a radius (:func:`simgen.matching.match_atoms`),
optionally after a rigid alignment (:func:`simgen.matching.align`, for external data whose frame
differs). From the matching:

- ``coordinate_error_pm``: root-mean-square distance of matched pairs, pm; per axis
  ``coordinate_error_{x,y,z}_pm`` (RMS of that displacement component);
- ``coordinate_error_aet_pm``: the **headline** error: RMS distance of matched pairs after the
  particle's rigid offset (the mean displacement of its matched pairs) is subtracted, i.e.
  sqrt(sum over axes of the variance of the displacement component), the convention of the AET
  literature (e.g. Yang et al., Nature 542, 75 (2017)). A simulated store with geometric noise
  has an offset no method can know (the alignment's gauge fixes the frame only up to a rigid
  translation), and the raw ``coordinate_error_pm`` counts it; per true element
  ``coordinate_error_aet_pm_<El>`` (the same particle-wide offset removed, RMS over the
  element's pairs);
- ``recovery_rate``: matched true atoms / true atoms; ``recovery_rate_species``: matched true atoms
  whose predicted element is right / true atoms;
- ``precision``: matched predicted atoms / predicted atoms;
- ``species_accuracy``: right elements among matched pairs, overall and per true element
  (``species_accuracy_<El>``);
- per element e, over the union of the true and the predicted elements, the species labels as a
  detector of e: ``recovery_rate_species_<El>`` = true atoms of e matched *and* labelled e / true
  atoms of e (recall); ``precision_species_<El>`` = predicted atoms labelled e that are matched to
  a true atom of e / predicted atoms labelled e (unmatched predictions labelled e count as wrong);
  ``f1_species_<El>`` = 2 TP / (2 TP + FP + FN), their harmonic mean where both are defined and 0
  when the element is present but never predicted (NaN when it is absent from the truth). Recall
  alone rewards naming every
  light atom the same element (it then scores 100% for that element); precision shows it.

The main keys are also given at a matching radius of 0.5 Å with the suffix ``_r05``, and the
coordinate error per true element (``coordinate_error_pm_<El>``); the per-element keys are given
at the main radius only. Quantities undefined for an empty set (an error with no pairs, a
precision with no prediction, a recall or F1 of an element absent from the truth) are NaN. ``score(..., per_atom=True)`` also returns the pairs themselves
(``matches``), for paired comparisons and confusion tables.

Paired comparisons (docs/design.md, metrics contract): methods that recover different atoms cannot be
compared by their errors over their own matched sets (a method that recovers more hard atoms
looks worse). :func:`paired_errors` scores every method on the true atoms that *all* of them
recovered, per particle and per element, in the AET convention (each particle's mean
displacement over those atoms, a rigid offset, removed) and at the 1.0 and 0.5 Å radii;
:func:`bootstrap_ci` gives confidence intervals over particles.

Efficiency = Cramér–Rao bound / error, 1 at the physical limit. It means that only where the match
radius does not truncate the error distribution: :func:`efficiency` withholds it (NaN, with the
reason) where the bound or the error is at least a third of the match radius, or where the atoms
averaged are fewer than half of the true atoms (the method's own recovery; in a paired table, the
share of the element's true atoms that *every* method recovered); there a 1.0 Å match keeps a
selected, biased set of atoms, bound / error above 1 is seen, and the value is an artefact of the
matching, not an efficiency.
"""

from __future__ import annotations

import numpy as np

from simgen.matching import align as align_models
from simgen.matching import match_atoms

__all__ = [
    "score",
    "element_symbols",
    "paired_errors",
    "bootstrap_ci",
    "paired_difference",
    "efficiency",
    "EFFICIENCY_FOOTNOTE",
]

#: A bound or error at least this fraction of the match radius makes bound / error an artefact.
EFFICIENCY_RADIUS_FRACTION = 1.0 / 3.0
#: Below this recovery (fraction of true atoms matched) the matched errors are truncated.
EFFICIENCY_MIN_RECOVERY = 0.5
#: The footnote of tables that print "—" for a withheld efficiency.
EFFICIENCY_FOOTNOTE = (
    "— = efficiency withheld: the bound or the error is at least 1/3 of the match radius, or the "
    "atoms averaged are under 50% of the true atoms (those the method recovered; in a paired "
    "table, those of the element that every method recovered); the match then keeps a truncated, "
    "selected set of atoms and bound / error is an artefact (values above 1 were seen), not an "
    "efficiency."
)

_R05_KEYS = (
    "n_matched",
    "coordinate_error_pm",
    "coordinate_error_aet_pm",
    "recovery_rate",
    "recovery_rate_species",
    "precision",
    "species_accuracy",
)


def element_symbols(elements, n: int, name: str) -> np.ndarray:
    """Element symbols (str array of length ``n``) from symbols or atomic numbers."""
    if elements is None:
        return np.full(n, "unknown", dtype=object)
    values = list(elements)
    if len(values) != n:
        raise ValueError(f"{name}: expected {n} elements (one per atom), got {len(values)}")
    from ase.data import chemical_symbols

    out = np.empty(n, dtype=object)
    for i, value in enumerate(values):
        if isinstance(value, (int, np.integer)):
            out[i] = chemical_symbols[int(value)]
        else:
            out[i] = str(value)
    return out


def _fraction(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


def _score_at(pred, pred_el, true, true_el, radius: float) -> dict:
    matching = match_atoms(pred, true, radius)
    n_matched = len(matching)
    result: dict = {"n_matched": n_matched}
    if n_matched:
        displacement = pred[matching.pred_idx] - true[matching.true_idx]  # Å
        result["coordinate_error_pm"] = 100.0 * float(
            np.sqrt(np.mean((displacement**2).sum(axis=1)))
        )
        for axis, label in enumerate("xyz"):
            result[f"coordinate_error_{label}_pm"] = 100.0 * float(
                np.sqrt(np.mean(displacement[:, axis] ** 2))
            )
        result["coordinate_error_aet_pm"] = 100.0 * float(np.sqrt(displacement.var(axis=0).sum()))
        centred = displacement - displacement.mean(axis=0)  # the rigid offset removed
        matched_el = true_el[matching.true_idx]
        for element in sorted(set(true_el)):
            of_element = matched_el == element
            for key, values in (("", displacement), ("aet_", centred)):
                result[f"coordinate_error_{key}pm_{element}"] = (
                    100.0 * float(np.sqrt(np.mean((values[of_element] ** 2).sum(axis=1))))
                    if of_element.any()
                    else float("nan")
                )
    else:
        for key in (
            "coordinate_error_pm",
            "coordinate_error_x_pm",
            "coordinate_error_y_pm",
            "coordinate_error_z_pm",
            "coordinate_error_aet_pm",
        ):
            result[key] = float("nan")
    correct = pred_el[matching.pred_idx] == true_el[matching.true_idx]
    result["recovery_rate"] = _fraction(n_matched, len(true))
    result["recovery_rate_species"] = _fraction(int(correct.sum()), len(true))
    result["precision"] = _fraction(n_matched, len(pred))
    result["species_accuracy"] = _fraction(int(correct.sum()), n_matched)
    matched_true_el = true_el[matching.true_idx]
    for element in sorted(set(true_el)):
        of_element = matched_true_el == element
        result[f"species_accuracy_{element}"] = _fraction(
            int(correct[of_element].sum()), int(of_element.sum())
        )
    result.update(_species_by_element(pred_el, true_el, matching, correct))
    return result


def _species_by_element(pred_el, true_el, matching, correct) -> dict:
    """Per-element recovery, precision and F1 of the species labels (see the module docstring).

    Elements are the union of the true and the predicted ones (``"unknown"`` is no element).
    A pair counts for element e when both its true and its predicted element are e; unmatched
    predictions labelled e count against e's precision.
    """
    right = pred_el[matching.pred_idx][correct]  # element of each correctly labelled pair
    out = {}
    for element in sorted((set(true_el) | set(pred_el)) - {"unknown"}):
        n_right = int(np.count_nonzero(right == element))
        n_true = int(np.count_nonzero(true_el == element))
        n_pred = int(np.count_nonzero(pred_el == element))
        recall = _fraction(n_right, n_true)
        precision = _fraction(n_right, n_pred)
        # 2 TP / (2 TP + FP + FN): 0, not undefined, when e is present but never predicted.
        f1 = _fraction(2 * n_right, n_true + n_pred) if n_true else float("nan")
        out[f"recovery_rate_species_{element}"] = recall
        out[f"precision_species_{element}"] = precision
        out[f"f1_species_{element}"] = f1
    return out


def score(
    pred_positions,
    pred_elements,
    true_positions,
    true_elements,
    *,
    radius: float = 1.0,
    align: bool = False,
    align_iterations: int = 50,
    per_atom: bool = False,
) -> dict:
    """Score a predicted atomic model against the truth.

    Parameters
    ----------
    pred_positions, true_positions : (N, 3), (M, 3) array_like
        Positions in Å, ``(x, y, z)``.
    pred_elements, true_elements : sequence of str or int, or None
        Element symbols (or atomic numbers) per atom; ``"unknown"`` is never right. None means
        all unknown.
    radius : float
        Matching radius in Å (the keys with suffix ``_r05`` use 0.5 Å).
    align : bool
        Translate the prediction onto the truth first (centroids, then iterative mean shift of
        pairs within ``radius``); the shift (Å) is reported as ``shift_{x,y,z}``.
    align_iterations : int
        Largest number of mean-shift steps.
    per_atom : bool
        Also return ``matches``: ``{"true_index": (K,) int, "element": (K,) str,
        "predicted_element": (K,) str, "displacement_pm": (K, 3)}`` of the pairs at ``radius``
        (``element`` is the true element; displacement predicted − true, pm).

    Returns
    -------
    dict
        ``n_true, n_true_<El>, n_pred, n_matched, radius, coordinate_error_pm,
        coordinate_error_{x,y,z}_pm,
        coordinate_error_aet_pm, recovery_rate, recovery_rate_species, precision,
        species_accuracy, species_accuracy_<El>, coordinate_error_pm_<El>,
        coordinate_error_aet_pm_<El>`` (true elements),
        ``recovery_rate_species_<El>, precision_species_<El>, f1_species_<El>`` (true and
        predicted elements) and ``<key>_r05`` for the main keys. Floats are NaN where undefined
        (no pairs; no predicted atoms for precision; no atom of the element).
    """
    pred = (
        np.asarray(pred_positions, dtype=np.float64).reshape(-1, 3)
        if np.size(pred_positions)
        else np.zeros((0, 3))
    )
    true = (
        np.asarray(true_positions, dtype=np.float64).reshape(-1, 3)
        if np.size(true_positions)
        else np.zeros((0, 3))
    )
    if len(true) == 0:
        raise ValueError("true_positions: expected at least one true atom")
    pred_el = element_symbols(pred_elements, len(pred), "pred_elements")
    true_el = element_symbols(true_elements, len(true), "true_elements")
    result: dict = {"n_true": len(true), "n_pred": len(pred), "radius": float(radius)}
    for element in sorted(set(true_el) - {"unknown"}):
        result[f"n_true_{element}"] = int(np.count_nonzero(true_el == element))
    if align:
        pred, shift = align_models(pred, true, radius, iterations=align_iterations)
        result.update({f"shift_{label}": float(value) for label, value in zip("xyz", shift)})
    result.update(_score_at(pred, pred_el, true, true_el, radius))
    if per_atom:
        matching = match_atoms(pred, true, radius)
        result["matches"] = {
            "true_index": np.asarray(matching.true_idx, dtype=int),
            "element": np.asarray(true_el[matching.true_idx], dtype=str),
            "predicted_element": np.asarray(pred_el[matching.pred_idx], dtype=str),
            "displacement_pm": 100.0 * (pred[matching.pred_idx] - true[matching.true_idx]),
        }
    at_r05 = _score_at(pred, pred_el, true, true_el, 0.5)
    result.update({f"{key}_r05": at_r05[key] for key in _R05_KEYS})
    return result


def bootstrap_ci(
    values, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0, statistic=np.mean
) -> tuple[float, float, float]:
    """``(statistic, low, high)`` of ``values`` with a percentile bootstrap interval.

    ``values`` are one number per particle (NaNs dropped); resampling is over particles with a
    fixed seed, so the interval is reproducible. Fewer than two values give ``(value, nan, nan)``.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (float("nan"),) * 3
    point = float(statistic(values))
    if len(values) < 2:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(n_boot, len(values)))
    stats = np.array([statistic(values[d]) for d in draws])
    alpha = (1.0 - level) / 2
    return point, float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def _rms(displacement: np.ndarray) -> float:
    return float(np.sqrt(np.mean((displacement**2).sum(axis=1)))) if len(displacement) else np.nan


def paired_errors(matches: dict, *, radius: float | None = None, aet: bool = True) -> dict:
    """Coordinate errors of several methods on the same true atoms of one particle.

    Parameters
    ----------
    matches
        ``{method: score(..., per_atom=True)["matches"]}`` for one particle (the same truth).
    radius
        Keep only atoms that every method placed within ``radius`` Å (e.g. 0.5); ``None``: every
        atom that every method matched.
    aet
        Remove each method's mean displacement over the paired atoms (a rigid offset) first.

    Returns
    -------
    dict
        ``{"n_paired": K, "n_paired_<El>": ..., "true_index": (K,), "element": (K,),
        method: {"all": pm, "<El>": pm}}``: RMS errors in pm over the paired atoms, overall and
        per true element.
    """
    methods = sorted(matches)
    if not methods:
        raise ValueError("matches: expected at least one method")
    tables = {}
    for method in methods:
        m = matches[method]
        index = np.asarray(m["true_index"], dtype=int)
        displacement = np.asarray(m["displacement_pm"], dtype=float).reshape(-1, 3)
        elements = np.asarray(m["element"], dtype=str)
        if radius is not None:
            keep = np.sqrt((displacement**2).sum(axis=1)) <= 100.0 * radius
            index, displacement, elements = index[keep], displacement[keep], elements[keep]
        tables[method] = dict(zip(index.tolist(), zip(displacement, elements)))
    common = sorted(set.intersection(*(set(t) for t in tables.values())))
    elements = np.array([tables[methods[0]][i][1] for i in common], dtype=str)
    out: dict = {
        "n_paired": len(common),
        "true_index": np.asarray(common, dtype=int),
        "element": elements,
    }
    for element in sorted(set(elements.tolist())):
        out[f"n_paired_{element}"] = int(np.count_nonzero(elements == element))
    for method in methods:
        displacement = np.array([tables[method][i][0] for i in common], dtype=float).reshape(-1, 3)
        if aet and len(displacement):
            displacement = displacement - displacement.mean(axis=0)
        row = {"all": _rms(displacement)}
        for element in sorted(set(elements.tolist())):
            row[element] = _rms(displacement[elements == element])
        out[method] = row
    return out


def paired_difference(
    method_values, baseline_values, *, relative: bool = False, seed: int = 0, n_boot: int = 2000
) -> tuple[float, float, float]:
    """Mean per-particle difference ``method − baseline`` with a bootstrap CI over particles.

    The two sequences hold one value per particle, in the same particle order (NaN pairs are
    dropped). With ``relative``, the statistic is ``mean(method − baseline) / mean(baseline)``,
    resampled jointly.
    """
    a = np.asarray(method_values, dtype=float)
    b = np.asarray(baseline_values, dtype=float)
    if a.shape != b.shape:
        raise ValueError(
            f"method_values: {a.shape} values, expected one per particle like baseline {b.shape}"
        )
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) == 0:
        return (float("nan"),) * 3
    pairs = np.arange(len(a))

    def statistic(idx):
        idx = np.asarray(idx, dtype=int)
        diff = a[idx] - b[idx]
        return diff.mean() / b[idx].mean() if relative else diff.mean()

    return bootstrap_ci(pairs, statistic=statistic, seed=seed, n_boot=n_boot)


_MISSING = "no bound or no error"


def efficiency(
    bound_pm: float,
    error_pm: float,
    radius_a: float,
    recovery: float | None = None,
    *,
    paired_recovery: float | None = None,
) -> tuple[float, str | None]:
    """Efficiency = bound / error, or NaN and the reason where it would be an artefact.

    The rule, in one sentence: bound / error is shown only where the match cannot have chosen
    which errors are averaged — the bound and the error below
    :data:`EFFICIENCY_RADIUS_FRACTION` of the match radius (no truncated error distribution),
    and the atoms averaged (those the method recovered; in a paired table those *every* method
    recovered, per element) at least :data:`EFFICIENCY_MIN_RECOVERY` of the true atoms (no
    subset selected by small errors).

    Parameters
    ----------
    bound_pm, error_pm
        Cramér–Rao bound and coordinate error of the same atoms (pm).
    radius_a
        Match radius (Å) that selected the atoms.
    recovery
        Fraction of the true atoms matched by the method (0–1), if known.
    paired_recovery
        In a paired comparison: fraction of the true atoms (of the row's element) that every
        compared method recovered, i.e. the share of the atoms the error is averaged over
        (0–1), if known. A small share is a selected subset (atoms that all methods placed
        within the radius), biased towards small errors: bound / error of 1.05–1.20 was seen
        for 3 paired Ni atoms per particle out of about 23.

    Returns
    -------
    (float, str or None)
        ``(bound / error, None)`` where meaningful; ``(nan, reason)`` where the rule above
        withholds it or where a value is missing.
    """
    bound_pm, error_pm = float(bound_pm), float(error_pm)
    if not (np.isfinite(bound_pm) and np.isfinite(error_pm)) or error_pm <= 0:
        return float("nan"), _MISSING
    limit_pm = EFFICIENCY_RADIUS_FRACTION * 100.0 * float(radius_a)
    if bound_pm >= limit_pm:
        return float("nan"), f"bound {bound_pm:.1f} pm ≥ 1/3 of the {radius_a:g} Å radius"
    if error_pm >= limit_pm:
        return float("nan"), f"error {error_pm:.1f} pm ≥ 1/3 of the {radius_a:g} Å radius"
    if _known(recovery) and recovery < EFFICIENCY_MIN_RECOVERY:
        return float("nan"), f"recovery {recovery:.0%} < {EFFICIENCY_MIN_RECOVERY:.0%}"
    if _known(paired_recovery) and paired_recovery < EFFICIENCY_MIN_RECOVERY:
        return float("nan"), (
            f"paired atoms {paired_recovery:.0%} of the true atoms < {EFFICIENCY_MIN_RECOVERY:.0%}"
        )
    return bound_pm / error_pm, None


def _known(value) -> bool:
    return value is not None and bool(np.isfinite(value))


def efficiency_text(value: float, reason: str | None) -> str:
    """``"0.42"``; ``"—"`` for a withheld efficiency (see :data:`EFFICIENCY_FOOTNOTE`), ``"–"``
    where there is no bound or no error."""
    if reason == _MISSING or (reason is None and not np.isfinite(value)):
        return "–"
    return "—" if reason is not None else f"{value:.2f}"
