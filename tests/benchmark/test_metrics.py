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


def test_a_known_rigid_shift_leaves_the_headline_error_at_the_raw_error_without_it():
    displacement = np.array([[0.1, 0, 0], [-0.1, 0, 0], [0, 0.2, 0], [0, -0.2, 0]])  # mean 0
    plain = score(TRUE + displacement, ELEMENTS, TRUE, ELEMENTS)
    shifted = score(TRUE + displacement + [0.25, -0.15, 0.1], ELEMENTS, TRUE, ELEMENTS)
    # raw without the shift: squared distances .01, .01, .04, .04 -> sqrt(.025) = 15.81 pm
    assert plain["coordinate_error_pm"] == pytest.approx(100 * math.sqrt(0.025))
    assert shifted["coordinate_error_aet_pm"] == pytest.approx(100 * math.sqrt(0.025))
    # per element, the particle's offset removed: Pt pairs 10 pm, Fe pairs 20 pm
    assert shifted["coordinate_error_aet_pm_Pt"] == pytest.approx(10.0)
    assert shifted["coordinate_error_aet_pm_Fe"] == pytest.approx(20.0)
    assert plain["coordinate_error_pm_Fe"] == pytest.approx(20.0)
    # the raw error keeps the offset: + |(.25, -.15, .1)|² = .095 Å² on every pair
    assert shifted["coordinate_error_pm"] == pytest.approx(100 * math.sqrt(0.025 + 0.095))


def test_old_records_get_the_headline_error_from_their_matches():
    from benchmark.runner import with_aet_errors

    old = {
        "method": "m",
        "dose": 1.0,
        "coordinate_error_pm": 40.0,
        "matches": {
            "true_index": [0, 1, 2],
            "element": ["Pt", "Pt", "Fe"],
            "displacement_pm": [[40, 10, 0], [40, -10, 0], [40, 0, 30]],
        },
    }
    new = with_aet_errors(old)
    # mean displacement (40, 0, 10); centred (0,10,-10), (0,-10,-10), (0,0,20): 200, 200, 400
    assert new["coordinate_error_aet_pm"] == pytest.approx(math.sqrt(800 / 3))
    assert new["coordinate_error_aet_pm_Pt"] == pytest.approx(math.sqrt(200))
    assert new["coordinate_error_aet_pm_Fe"] == pytest.approx(20.0)
    assert new["coordinate_error_pm"] == 40.0 and "coordinate_error_aet_pm" not in old
    no_matches = {"method": "m", "dose": 1.0, "coordinate_error_pm": 40.0}
    assert with_aet_errors(no_matches) == no_matches  # unknown stays unknown, never the raw one


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


def test_per_element_error_and_per_atom_matches():
    displacement = np.array([[0.1, 0, 0], [0, 0.3, 0], [0, 0, 0.2], [0, 0, 0.0]])
    r = score(TRUE + displacement, ELEMENTS, TRUE, ELEMENTS, per_atom=True)
    assert r["coordinate_error_pm_Pt"] == pytest.approx(100 * math.sqrt((0.01 + 0.09) / 2))
    assert r["coordinate_error_pm_Fe"] == pytest.approx(100 * math.sqrt(0.04 / 2))
    matches = r["matches"]
    order = np.argsort(matches["true_index"])
    np.testing.assert_array_equal(matches["true_index"][order], [0, 1, 2, 3])
    np.testing.assert_allclose(matches["displacement_pm"][order], 100 * displacement)
    assert list(matches["element"][order]) == ELEMENTS


def _matches(indices, displacements_pm, elements=ELEMENTS):
    return {
        "true_index": np.array(indices),
        "element": np.array([elements[i] for i in indices]),
        "displacement_pm": np.array(displacements_pm, dtype=float),
    }


def test_paired_errors_use_only_atoms_every_method_recovered():
    from benchmark.metrics import paired_errors

    # method a recovers all four atoms, b misses atom 3 (a hard one a got 90 pm wrong)
    a = _matches([0, 1, 2, 3], [[10, 0, 0], [0, 10, 0], [0, 0, 20], [90, 0, 0]])
    b = _matches([0, 1, 2], [[0, 30, 0], [0, 0, 30], [40, 0, 0]])
    out = paired_errors({"a": a, "b": b}, aet=False)
    assert out["n_paired"] == 3 and out["n_paired_Pt"] == 2 and out["n_paired_Fe"] == 1
    assert out["a"]["all"] == pytest.approx(math.sqrt((100 + 100 + 400) / 3))
    assert out["b"]["all"] == pytest.approx(math.sqrt((900 + 900 + 1600) / 3))
    assert out["a"]["Pt"] == pytest.approx(10.0) and out["b"]["Fe"] == pytest.approx(40.0)
    # unpaired, a would look worse than its paired error: its own set includes the 90 pm atom
    assert math.sqrt((100 + 100 + 400 + 8100) / 4) > out["a"]["all"]
    # a 0.45 Å limit keeps the same three; 0.35 Å drops atom 2 (b is 40 pm off), 0.25 Å all
    assert paired_errors({"a": a, "b": b}, radius=0.45, aet=False)["n_paired"] == 3
    tight = paired_errors({"a": a, "b": b}, radius=0.35, aet=False)
    assert tight["n_paired"] == 2 and "n_paired_Fe" not in tight
    assert tight["b"]["all"] == pytest.approx(30.0)
    assert paired_errors({"a": a, "b": b}, radius=0.25, aet=False)["n_paired"] == 0


def test_paired_errors_in_the_aet_convention_ignore_a_rigid_offset():
    from benchmark.metrics import paired_errors

    shifted = _matches([0, 1, 2, 3], [[30, 0, 0]] * 4)
    out = paired_errors({"a": shifted}, aet=True)
    assert out["a"]["all"] == pytest.approx(0.0, abs=1e-12)
    assert paired_errors({"a": shifted}, aet=False)["a"]["all"] == pytest.approx(30.0)


def test_paired_difference_and_bootstrap_interval():
    from benchmark.metrics import bootstrap_ci, paired_difference

    # identical per-particle improvement of exactly 5 pm: zero-width interval at -5
    point, low, high = paired_difference([15, 25, 35, 45], [20, 30, 40, 50])
    assert (point, low, high) == pytest.approx((-5.0, -5.0, -5.0))
    rel = paired_difference([15, 25, 35, 45], [20, 30, 40, 50], relative=True)
    assert rel[0] == pytest.approx(-20 / 140)
    point, low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0, np.nan])
    assert point == pytest.approx(2.5) and 1.0 <= low < 2.5 < high <= 4.0
    assert math.isnan(bootstrap_ci([3.0])[1])
