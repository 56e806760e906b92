"""Efficiency = bound / error is withheld where the match radius truncates the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.leaderboard import efficiency_rows
from benchmark.metrics import EFFICIENCY_FOOTNOTE, efficiency, efficiency_text
from benchmark.sweep import _paired_markdown, paired_table


def test_efficiency_kept_where_the_radius_does_not_matter():
    value, reason = efficiency(5.0, 10.0, 1.0, recovery=0.9)
    assert reason is None and value == 0.5
    assert efficiency_text(value, reason) == "0.50"


@pytest.mark.parametrize(
    ("bound", "error", "radius", "recovery", "word"),
    [
        (40.0, 60.0, 1.0, 0.9, "bound"),  # bound ≥ 33.3 pm = 1/3 of 1.0 Å
        (20.0, 25.0, 0.5, 0.9, "bound"),  # bound ≥ 16.7 pm = 1/3 of 0.5 Å
        (10.0, 34.0, 1.0, 0.9, "error"),  # error ≥ 1/3 of the radius
        (10.0, 20.0, 1.0, 0.3, "recovery"),  # 30% recovered
    ],
)
def test_efficiency_withheld(bound, error, radius, recovery, word):
    value, reason = efficiency(bound, error, radius, recovery)
    assert math.isnan(value) and word in reason
    assert efficiency_text(value, reason) == "—"


def test_missing_bound_is_a_dash_not_a_withheld_value():
    value, reason = efficiency(float("nan"), 10.0, 1.0)
    assert math.isnan(value) and efficiency_text(value, reason) == "–"


def test_truncation_by_the_match_radius_makes_bound_over_error_exceed_one():
    # An unbiased estimator at the bound: 3D Gaussian errors of RMS 110 pm (Fe at 100 e/Å²).
    # Matching within 1.0 Å keeps only |d| ≤ 100 pm, so the matched RMS falls below the bound:
    # bound / error > 1, the artefact seen in the dose sweep. The table must withhold it.
    rng = np.random.default_rng(0)
    bound = 110.0
    d = rng.normal(scale=bound / np.sqrt(3.0), size=(4000, 3))
    kept = d[np.linalg.norm(d, axis=1) <= 100.0]
    truncated_rms = float(np.sqrt(np.mean(np.sum(kept**2, axis=1))))
    assert bound / truncated_rms > 1.2

    n = len(kept)
    record = {
        "method": "m",
        "index": 0,
        "dose": 100.0,
        "recovery_rate": n / len(d),
        "recovery_rate_species": n / len(d),
        "matches": {
            "true_index": list(range(n)),
            "element": ["Fe"] * n,
            "displacement_pm": kept.tolist(),
        },
        "crlb_atoms_pm": [bound] * n,
    }
    rows = paired_table([record], ["m"], radii=(1.0,))
    fe = next(r for r in rows if r["element"] == "Fe")
    # the AET convention removes the (near-zero) mean offset: the ratio is still above 1
    assert fe["efficiency_raw"] > 1.2
    assert math.isnan(fe["efficiency"]) and "bound" in fe["efficiency_withheld"]
    text = _paired_markdown(rows, ["m"])
    assert "| — |" in text and EFFICIENCY_FOOTNOTE in text


def test_leaderboard_element_rows_withhold_the_artefact():
    records = [
        {
            "method": "m",
            "dose": 100.0,
            "index": i,
            "radius": 1.0,
            "recovery_rate": 0.9,
            "coordinate_error_pm": 20.0,
            "coordinate_error_pm_Fe": 75.0,
            "crlb_pm_Fe": 110.0,
            "coordinate_error_pm_Pt": 10.0,
            "crlb_pm_Pt": 5.0,
            "crlb_pm": 6.0,
        }
        for i in range(2)
    ]
    got = {r["element"]: r for r in efficiency_rows(records)}
    assert got["Pt"]["efficiency"] == pytest.approx(0.5)
    assert got["Pt"]["efficiency_withheld"] is None
    assert math.isnan(got["Fe"]["efficiency"]) and "bound" in got["Fe"]["efficiency_withheld"]
