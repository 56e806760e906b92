"""Scores of a predicted atomic model against the ground truth (DESIGN.md, metrics contract).

Predicted and true atoms are matched one-to-one within a radius (:func:`simgen.matching.match_atoms`),
optionally after a rigid alignment (:func:`simgen.matching.align`, for external data whose frame
differs). From the matching:

- ``coordinate_error_pm``: root-mean-square distance of matched pairs, pm; per axis
  ``coordinate_error_{x,y,z}_pm`` (RMS of that displacement component);
- ``coordinate_error_aet_pm``: sqrt(sum over axes of the variance of the displacement component),
  the convention of the AET literature (e.g. Yang et al., Nature 542, 75 (2017)), which does not
  count a common offset;
- ``recovery_rate``: matched true atoms / true atoms; ``recovery_rate_species``: matched true atoms
  whose predicted element is right / true atoms;
- ``precision``: matched predicted atoms / predicted atoms;
- ``species_accuracy``: right elements among matched pairs, overall and per true element
  (``species_accuracy_<El>``).

The main keys are also given at a matching radius of 0.5 Å with the suffix ``_r05``. Quantities
undefined for an empty set (an error with no pairs, a precision with no prediction) are NaN.
"""

from __future__ import annotations

import numpy as np

from simgen.matching import align as align_models
from simgen.matching import match_atoms

__all__ = ["score", "element_symbols"]

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
    return result


def score(
    pred_positions,
    pred_elements,
    true_positions,
    true_elements,
    *,
    radius: float = 1.0,
    align: bool = False,
    align_iterations: int = 50,
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

    Returns
    -------
    dict
        ``n_true, n_pred, n_matched, radius, coordinate_error_pm, coordinate_error_{x,y,z}_pm,
        coordinate_error_aet_pm, recovery_rate, recovery_rate_species, precision,
        species_accuracy, species_accuracy_<El>`` and ``<key>_r05`` for the main keys. Floats are
        NaN where undefined (no pairs; no predicted atoms for precision).
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
    if align:
        pred, shift = align_models(pred, true, radius, iterations=align_iterations)
        result.update({f"shift_{label}": float(value) for label, value in zip("xyz", shift)})
    result.update(_score_at(pred, pred_el, true, true_el, radius))
    at_r05 = _score_at(pred, pred_el, true, true_el, 0.5)
    result.update({f"{key}_r05": at_r05[key] for key in _R05_KEYS})
    return result
