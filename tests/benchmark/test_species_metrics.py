"""Per-element recall, precision and F1 of the species labels (benchmark.metrics.score)."""

import math

import numpy as np
import pytest

from benchmark.metrics import score

# Six true atoms on a 3 Å grid (far apart against the 1.0 Å radius): Fe Fe Fe Ni Ni Ni.
TRUE = np.array([[0.0, 0, 0], [3.0, 0, 0], [6.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0], [6.0, 3.0, 0]])
TRUE_EL = ["Fe", "Fe", "Fe", "Ni", "Ni", "Ni"]


def test_one_mislabel_one_false_positive_one_missed_atom_by_hand():
    # predictions: true atoms 0, 1 labelled Fe (right), 2 missed, 3 labelled Fe (wrong: Ni),
    # 4, 5 labelled Ni (right), plus a false positive far away labelled Fe.
    pred = np.concatenate([TRUE[[0, 1, 3, 4, 5]] + 0.1, [[20.0, 20, 20]]])
    pred_el = ["Fe", "Fe", "Fe", "Ni", "Ni", "Fe"]
    r = score(pred, pred_el, TRUE, TRUE_EL, per_atom=True)
    # Fe: 2 true Fe matched and labelled Fe of 3 true Fe; 4 predictions labelled Fe, 2 right.
    assert r["recovery_rate_species_Fe"] == pytest.approx(2 / 3)
    assert r["precision_species_Fe"] == pytest.approx(2 / 4)
    assert r["f1_species_Fe"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))  # 4/7
    assert r["f1_species_Fe"] == pytest.approx(4 / 7)
    # Ni: 2 of 3 true Ni matched and labelled Ni; 2 predictions labelled Ni, both right.
    assert r["recovery_rate_species_Ni"] == pytest.approx(2 / 3)
    assert r["precision_species_Ni"] == pytest.approx(1.0)
    assert r["f1_species_Ni"] == pytest.approx(0.8)
    # The old keys keep their meaning: Ni matched 3, 2 right; Fe matched 2, both right.
    assert r["species_accuracy_Ni"] == pytest.approx(2 / 3)
    assert r["species_accuracy_Fe"] == pytest.approx(1.0)
    assert r["recovery_rate_species"] == pytest.approx(4 / 6)
    assert r["precision"] == pytest.approx(5 / 6)
    # The pairs carry the predicted element: the Ni atom 3 was called Fe.
    m = r["matches"]
    got = dict(zip(m["true_index"].tolist(), zip(m["element"], m["predicted_element"])))
    assert got == {
        0: ("Fe", "Fe"),
        1: ("Fe", "Fe"),
        3: ("Ni", "Fe"),
        4: ("Ni", "Ni"),
        5: ("Ni", "Ni"),
    }


def test_calling_every_atom_fe_has_full_recall_and_precision_equal_to_the_fe_fraction():
    # 2 Fe, 4 Ni (Fe fraction 1/3); every atom found and called Fe.
    true_el = ["Fe", "Ni", "Ni", "Fe", "Ni", "Ni"]
    r = score(TRUE, ["Fe"] * 6, TRUE, true_el)
    assert r["recovery_rate_species_Fe"] == 1.0
    assert r["species_accuracy_Fe"] == 1.0  # recall alone calls this a perfect Fe classifier
    assert r["precision_species_Fe"] == pytest.approx(2 / 6)
    assert r["f1_species_Fe"] == pytest.approx(2 * (1 / 3) / (1 + 1 / 3))  # 0.5
    # Ni is never predicted: recall 0, precision undefined, F1 = 2 TP / (2 TP + FP + FN) = 0.
    assert r["recovery_rate_species_Ni"] == 0.0
    assert math.isnan(r["precision_species_Ni"]) and r["f1_species_Ni"] == 0.0


def test_keys_cover_predicted_elements_absent_from_the_truth():
    # true atom 5 (Ni) is called Pt: Pt has no true atom (recall undefined), precision 0.
    r = score(TRUE, TRUE_EL[:5] + ["Pt"], TRUE, TRUE_EL)
    assert r["precision_species_Pt"] == 0.0
    assert math.isnan(r["recovery_rate_species_Pt"]) and math.isnan(r["f1_species_Pt"])
    assert r["recovery_rate_species_Ni"] == pytest.approx(2 / 3)
    assert r["precision_species_Ni"] == 1.0
    assert "species_accuracy_Pt" not in r  # the old per-true-element key is unchanged


def test_f1_is_zero_when_recall_and_precision_are_zero():
    # Fe and Ni swapped everywhere: both elements predicted, none right.
    swapped = ["Ni" if e == "Fe" else "Fe" for e in TRUE_EL]
    r = score(TRUE, swapped, TRUE, TRUE_EL)
    for element in ("Fe", "Ni"):
        assert r[f"recovery_rate_species_{element}"] == 0.0
        assert r[f"precision_species_{element}"] == 0.0
        assert r[f"f1_species_{element}"] == 0.0


def test_unknown_labels_are_no_element_and_never_right():
    r = score(TRUE, None, TRUE, TRUE_EL)
    assert "precision_species_unknown" not in r
    assert r["recovery_rate_species_Fe"] == 0.0 and math.isnan(r["precision_species_Fe"])


def test_an_unmatched_prediction_counts_against_precision_even_with_the_right_label():
    # the Fe atom 0 predicted 1.5 Å off (outside the 1.0 Å radius): a false Fe, a missed Fe.
    pred = TRUE.copy()
    pred[0] += [1.5, 0, 0]
    r = score(pred, TRUE_EL, TRUE, TRUE_EL)
    assert r["recovery_rate_species_Fe"] == pytest.approx(2 / 3)
    assert r["precision_species_Fe"] == pytest.approx(2 / 3)
    assert r["f1_species_Fe"] == pytest.approx(2 / 3)
    assert r["recovery_rate_species_Ni"] == 1.0 and r["precision_species_Ni"] == 1.0


def test_true_atoms_per_element_are_counted():
    r = score(TRUE[:2], ["Fe", "Fe"], TRUE, TRUE_EL)
    assert r["n_true_Fe"] == 3 and r["n_true_Ni"] == 3 and "n_true_unknown" not in r
