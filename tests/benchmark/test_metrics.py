import math

import numpy as np
import pytest

from benchmark.metrics import score

TRUE = np.array([[0.0, 0, 0], [3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
ELEMENTS = ["Pt", "Pt", "Fe", "Fe"]


def test_known_displacements_give_the_exact_rmsd():
    displacement = np.array([[0.1, 0, 0], [0, 0.2, 0], [0, 0, -0.2], [0.1, 0.2, -0.2]])
    r = score(TRUE + displacement, ELEMENTS, TRUE, ELEMENTS)
    # squared distances 0.01, 0.04, 0.04, 0.09 Å² -> mean 0.045 -> RMSD 0.2121 Å
    assert r["coordinate_error_pm"] == pytest.approx(100 * math.sqrt(0.045))
    assert r["coordinate_error_x_pm"] == pytest.approx(100 * math.sqrt(0.02 / 4))
    assert r["coordinate_error_y_pm"] == pytest.approx(100 * math.sqrt(0.08 / 4))
    assert r["coordinate_error_z_pm"] == pytest.approx(100 * math.sqrt(0.08 / 4))
    # AET convention: per-axis variances (x: values .1,0,0,.1 -> var .0025; y: 0,.2,0,.2 -> .01;
    # z: 0,0,-.2,-.2 -> .01) -> sqrt(.0225) = 15 pm.
    assert r["coordinate_error_aet_pm"] == pytest.approx(15.0)
    assert r["recovery_rate"] == 1.0 and r["precision"] == 1.0 and r["species_accuracy"] == 1.0
    # At 0.5 Å all pairs still match; at a tighter radius the 0.3 Å pair would not.
    assert r["n_matched_r05"] == 4


def test_a_common_offset_counts_in_rmsd_but_not_in_the_aet_error():
    r = score(TRUE + [0.3, 0, 0], ELEMENTS, TRUE, ELEMENTS)
    assert r["coordinate_error_pm"] == pytest.approx(30.0)
    assert r["coordinate_error_aet_pm"] == pytest.approx(0.0, abs=1e-9)


def test_duplicate_prediction_is_not_matched_twice():
    pred = np.concatenate([TRUE, TRUE[:1] + 0.05])
    r = score(pred, ELEMENTS + ["Pt"], TRUE, ELEMENTS)
    assert r["n_pred"] == 5 and r["n_matched"] == 4
    assert r["recovery_rate"] == 1.0
    assert r["precision"] == pytest.approx(4 / 5)
    assert r["coordinate_error_pm"] == pytest.approx(0.0)


def test_a_false_positive_lowers_precision_only():
    pred = np.concatenate([TRUE, [[10.0, 10, 10]]])
    r = score(pred, ELEMENTS + ["Fe"], TRUE, ELEMENTS)
    assert r["precision"] == pytest.approx(0.8) and r["precision_r05"] == pytest.approx(0.8)
    assert (
        r["recovery_rate"] == 1.0
        and r["recovery_rate_species"] == 1.0
        and r["species_accuracy"] == 1.0
    )
    assert r["coordinate_error_pm"] == 0.0


def test_a_wrong_element_lowers_species_metrics_only():
    r = score(TRUE, ["Pt", "Fe", "Fe", "Fe"], TRUE, ELEMENTS)
    assert r["recovery_rate"] == 1.0 and r["precision"] == 1.0
    assert r["recovery_rate_species"] == pytest.approx(0.75)
    assert r["species_accuracy"] == pytest.approx(0.75)
    assert r["species_accuracy_Pt"] == pytest.approx(0.5)
    assert r["species_accuracy_Fe"] == pytest.approx(1.0)


def test_unknown_elements_and_atomic_numbers():
    r = score(TRUE, ["unknown"] * 4, TRUE, [78, 78, 26, 26])
    assert r["recovery_rate"] == 1.0 and r["species_accuracy"] == 0.0
    r = score(TRUE, None, TRUE, ELEMENTS)
    assert r["recovery_rate_species"] == 0.0


def test_missing_atom_lowers_recovery():
    r = score(TRUE[:3], ELEMENTS[:3], TRUE, ELEMENTS)
    assert r["recovery_rate"] == pytest.approx(0.75) and r["precision"] == 1.0


def test_the_r05_keys_use_half_an_angstrom():
    pred = TRUE + [[0.7, 0, 0], [0.2, 0, 0], [0, 0, 0], [0, 0, 0]]
    r = score(pred, ELEMENTS, TRUE, ELEMENTS)
    assert r["recovery_rate"] == 1.0 and r["recovery_rate_r05"] == pytest.approx(0.75)
    assert r["coordinate_error_pm_r05"] == pytest.approx(100 * math.sqrt(0.04 / 3))


def test_results_do_not_depend_on_atom_order():
    rng = np.random.default_rng(4)
    true = rng.uniform(0, 20, (300, 3))
    true_el = rng.choice(["Fe", "Pt"], 300).tolist()
    pred = np.concatenate([true + rng.normal(0, 0.2, true.shape), rng.uniform(0, 20, (20, 3))])
    pred_el = rng.choice(["Fe", "Pt"], 320).tolist()
    r1 = score(pred, pred_el, true, true_el)
    p, t = rng.permutation(320), rng.permutation(300)
    r2 = score(pred[p], [pred_el[i] for i in p], true[t], [true_el[i] for i in t])
    assert r1.keys() == r2.keys()
    for key in r1:
        assert r1[key] == pytest.approx(r2[key], rel=1e-12, abs=1e-12), key


def test_alignment_removes_a_rigid_shift():
    shift = np.array([0.8, -1.3, 0.5])
    unaligned = score(TRUE + shift, ELEMENTS, TRUE, ELEMENTS)
    assert unaligned["n_matched"] == 0
    aligned = score(TRUE + shift, ELEMENTS, TRUE, ELEMENTS, align=True)
    assert aligned["n_matched"] == 4
    assert aligned["coordinate_error_pm"] == pytest.approx(0.0, abs=1e-9)
    assert [aligned["shift_x"], aligned["shift_y"], aligned["shift_z"]] == pytest.approx(-shift)


def test_empty_prediction_gives_zero_recovery_and_nan_errors():
    r = score(np.zeros((0, 3)), [], TRUE, ELEMENTS)
    assert r["n_pred"] == 0 and r["n_matched"] == 0
    assert r["recovery_rate"] == 0.0 and r["recovery_rate_species"] == 0.0
    assert (
        math.isnan(r["precision"])
        and math.isnan(r["coordinate_error_pm"])
        and math.isnan(r["species_accuracy"])
    )
    r = score(np.zeros((0, 3)), [], TRUE, ELEMENTS, align=True)
    assert r["recovery_rate"] == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="true_positions"):
        score(TRUE, ELEMENTS, np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match="pred_elements"):
        score(TRUE, ["Pt"], TRUE, ELEMENTS)
