"""scripts/compare_weights.py: per-element precision and F1 tables, and older records without them."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from benchmark.metrics import score
from benchmark.runner import _json_safe

TRUE = np.array([[0.0, 0, 0], [3.0, 0, 0], [6.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0], [6.0, 3.0, 0]])
TRUE_EL = np.array(["Fe", "Fe", "Fe", "Ni", "Ni", "Ni"])


def _script():
    path = Path(__file__).resolve().parents[2] / "scripts" / "compare_weights.py"
    spec = importlib.util.spec_from_file_location("compare_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(pred, pred_el):
    return _json_safe(score(pred, pred_el, TRUE, TRUE_EL.tolist(), per_atom=True))


def test_per_particle_precision_and_f1_by_hand():
    cw = _script()
    # "fe": every atom found and called Fe; "mixed": atom 2 missed, Ni atom 3 called Fe and a
    # false positive labelled Fe.
    fe = _record(TRUE, ["Fe"] * 6)
    mixed = _record(
        np.concatenate([TRUE[[0, 1, 3, 4, 5]], [[20.0, 20, 20]]]),
        ["Fe", "Fe", "Fe", "Ni", "Ni", "Fe"],
    )
    table = cw.per_particle({"fe": fe, "mixed": mixed}, TRUE_EL)
    assert table["Fe"]["fe"]["recovery_species"] == pytest.approx(100.0)
    assert table["Fe"]["fe"]["precision_species"] == pytest.approx(50.0)  # 3 of 6 labelled Fe
    assert table["Fe"]["fe"]["f1_species"] == pytest.approx(100 * 2 * 0.5 / 1.5)
    assert math.isnan(table["Ni"]["fe"]["precision_species"])  # nobody labelled Ni
    assert table["Ni"]["fe"]["recovery_species"] == 0.0
    assert table["Fe"]["mixed"]["precision_species"] == pytest.approx(50.0)  # 2 right of 4
    assert table["Ni"]["mixed"]["f1_species"] == pytest.approx(80.0)  # recall 2/3, precision 1
    # pooled: right pairs / predicted atoms; fe 3 / 6, mixed 4 / 6 (recall 4 / 6 as well)
    assert table["all"]["fe"]["precision_species"] == pytest.approx(50.0)
    assert table["all"]["mixed"]["precision_species"] == pytest.approx(100 * 4 / 6)
    assert table["all"]["mixed"]["f1_species"] == pytest.approx(100 * 4 / 6)
    assert table["all"]["mixed"]["recovery_species"] == pytest.approx(100 * 4 / 6)


def test_older_records_without_the_keys_give_dashes_and_a_note():
    cw = _script()
    new = _record(TRUE, TRUE_EL.tolist())
    old = {
        k: v
        for k, v in new.items()
        if not k.startswith(("precision_species_", "f1_species_", "recovery_rate_species_"))
    }
    old["matches"] = {k: v for k, v in new["matches"].items() if k != "predicted_element"}
    assert cw.lacks_species_keys(old) and not cw.lacks_species_keys(new)
    table = cw.per_particle({"new": new, "old": old}, TRUE_EL)
    assert table["Fe"]["old"]["recovery_species"] == pytest.approx(100.0)  # still computed
    assert math.isnan(table["Fe"]["old"]["precision_species"])
    assert math.isnan(table["all"]["old"]["f1_species"])
    assert table["Fe"]["new"]["precision_species"] == pytest.approx(100.0)
    values, n_particles = {}, {}
    for element, row in table.items():
        n_particles[("all", element)] = 1
        for method, metrics in row.items():
            for metric, v in metrics.items():
                values[("all", element, method, metric)] = [v]
    text = cw.markdown(values, n_particles, ["new", "old"], "old", stale={"old"})
    assert "**precision of the species labels (%)**" in text
    assert "**F1 of the species labels (%)**" in text
    assert "Not available for `old`" in text and "precision_species_<El>" in text
    row = next(
        line
        for line in text.splitlines()
        if line.startswith("| all | Fe |") and "100.0 | —" in line
    )
    assert row.endswith("| — |")  # no paired difference against a missing value
