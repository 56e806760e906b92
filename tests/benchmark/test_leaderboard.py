import csv
import math

import numpy as np
import pytest

from benchmark.leaderboard import aggregate, write_leaderboard


def _records():
    # two methods, two doses, hand-chosen values
    return [
        {
            "method": "a",
            "dose": 100.0,
            "coordinate_error_pm": 30.0,
            "recovery_rate": 0.5,
            "recovery_rate_species": 0.4,
            "precision": 1.0,
            "species_accuracy": 0.8,
        },
        {
            "method": "a",
            "dose": 100.0,
            "coordinate_error_pm": 50.0,
            "recovery_rate": 0.7,
            "recovery_rate_species": 0.6,
            "precision": 0.9,
            "species_accuracy": 0.9,
        },
        {
            "method": "b",
            "dose": 100.0,
            "coordinate_error_pm": 20.0,
            "recovery_rate": 0.9,
            "recovery_rate_species": 0.8,
            "precision": 0.8,
            "species_accuracy": None,
        },
        {
            "method": "a",
            "dose": 1000.0,
            "coordinate_error_pm": 10.0,
            "recovery_rate": 1.0,
            "recovery_rate_species": 1.0,
            "precision": 1.0,
            "species_accuracy": 1.0,
        },
    ]


def test_aggregate_mean_std_by_method_and_dose():
    rows = {(r["method"], r["dose"]): r for r in aggregate(_records())}
    a = rows[("a", 100.0)]
    assert a["n"] == 2
    assert a["coordinate_error_pm"] == pytest.approx(40.0)
    assert a["coordinate_error_pm_std"] == pytest.approx(math.sqrt(200.0))  # sample std of 30, 50
    assert a["recovery_rate"] == pytest.approx(60.0)  # percent
    b = rows[("b", 100.0)]
    assert math.isnan(b["species_accuracy"])  # None skipped, nothing left
    assert rows[("a", 1000.0)]["coordinate_error_pm_std"] == 0.0


def test_leaderboard_marks_best_per_dose(tmp_path):
    paths = write_leaderboard(_records(), tmp_path)
    md = paths["md"].read_text()
    line_b = next(line for line in md.splitlines() if line.startswith("| b | 100"))
    line_a = next(line for line in md.splitlines() if line.startswith("| a | 100"))
    assert "**20.0 ± 0.0**" not in line_a and "**20.0" in line_b  # lower error is best
    assert "**100.0" not in line_b and "**95.0" in line_a  # higher precision is best
    with open(paths["csv"]) as fh:
        assert len(list(csv.reader(fh))) == 1 + 3
    import matplotlib.image

    image = matplotlib.image.imread(paths["png"])[..., :3]
    assert image.ndim == 3 and min(image.shape[:2]) > 200  # a real figure, not a stub
    assert np.unique(image.reshape(-1, 3), axis=0).shape[0] > 10  # it has content: curves, text
    assert "<table>" in paths["html"].read_text()


def test_leaderboard_rejects_empty(tmp_path):
    with pytest.raises(ValueError, match="results"):
        write_leaderboard([], tmp_path)


def test_claim_verdict_hand_computed():
    from benchmark.sweep import claim_verdict

    def row(method, dose, err, rec):
        return {
            "method": method,
            "dose": dose,
            "coordinate_error_aet_pm": err,  # the headline decides
            "coordinate_error_aet_pm_std": 1.0,
            "coordinate_error_pm": err + 15.0,  # raw: a rigid offset kept, shown beside
            "coordinate_error_pm_std": 1.0,
            "recovery_rate_species": rec,
            "recovery_rate_species_std": 1.0,
        }

    rows = [
        row("classical", 100, 40.0, 50.0),
        row("pann", 100, 28.0, 56.0),  # -30 %, +6 points: holds
        row("classical", 300, 30.0, 70.0),
        row("pann", 300, 24.0, 80.0),  # -20 %: fails
        row("classical", 1e4, 10.0, 99.0),
        row("pann", 1e4, 10.2, 98.5),
    ]  # +2 %, -0.5: no worse
    text = claim_verdict(rows)
    lines = text.splitlines()
    assert "| holds |" in lines[2] and "-30%" in lines[2]
    assert "| 40.0 ± 1.0 (raw 55.0) | 28.0 ± 1.0 (raw 43.0) |" in lines[2]
    assert "**fails**" in lines[3]
    assert lines[4].endswith("| holds |")
    assert "does not hold" in text


def test_aggregate_never_merges_records_that_mean_different_things():
    from benchmark.leaderboard import group_fields

    base = {"dataset": "d", "method": "a", "dose": 100.0, "radius": 1.0, "truth": "initial"}
    records = [
        {**base, "index": 0, "recovery_rate": 0.2},
        {**base, "index": 1, "recovery_rate": 0.4},
        {**base, "index": 0, "recovery_rate": 0.9, "radius": 0.5},
        {**base, "index": 0, "recovery_rate": 0.6, "truth": "final"},
        {**base, "index": 0, "recovery_rate": 0.8, "dataset": "e"},
    ]
    assert group_fields(records) == ("method", "dose", "dataset", "truth", "radius")
    rows = aggregate(records)
    assert len(rows) == 4
    merged = next(r for r in rows if r["n"] == 2)
    assert (merged["dataset"], merged["truth"], merged["radius"]) == ("d", "initial", 1.0)
    assert merged["recovery_rate"] == pytest.approx(30.0)


def test_aggregate_refuses_a_sample_twice_in_one_group():
    record = {"dataset": "d", "index": 3, "method": "a", "dose": 1.0, "recovery_rate": 0.5}
    with pytest.raises(ValueError, match="sample 3 of dataset 'd' appears twice"):
        aggregate([record, dict(record)])
    assert aggregate([record, {**record, "truth": "final"}])[0]["n"] == 1  # another truth: fine


def test_species_rows_and_table_from_the_per_element_keys(tmp_path):
    from benchmark.leaderboard import species_rows
    from benchmark.metrics import score

    true = np.array([[0.0, 0, 0], [3.0, 0, 0], [6.0, 0, 0], [0, 3.0, 0]])
    records = []
    # sample 0: Fe Ni Ni Ni, all called Fe; sample 1: Fe Fe Ni Ni, all right
    for index, (true_el, pred_el) in enumerate(
        [
            (["Fe", "Ni", "Ni", "Ni"], ["Fe"] * 4),
            (["Fe", "Fe", "Ni", "Ni"], ["Fe", "Fe", "Ni", "Ni"]),
        ]
    ):
        r = score(true, pred_el, true, true_el)
        r.update({"method": "m", "dose": 100.0, "index": index})
        records.append(r)
    rows = {r["element"]: r for r in species_rows(records)}
    fe, ni = rows["Fe"], rows["Ni"]
    assert fe["recovery_rate_species"] == pytest.approx(100.0)  # 1/1 and 2/2
    assert fe["precision_species"] == pytest.approx((25.0 + 100.0) / 2)  # 1/4 and 2/2
    assert fe["precision_species_std"] == pytest.approx(np.std([25.0, 100.0], ddof=1))
    assert fe["f1_species"] == pytest.approx((40.0 + 100.0) / 2)  # 2·1·0.25/1.25 = 0.4
    # Ni: never labelled in sample 0 (precision undefined there: one sample left; F1 0 there)
    assert ni["recovery_rate_species"] == pytest.approx(50.0) and ni["precision_species_n"] == 1
    assert ni["precision_species"] == pytest.approx(100.0) and ni["f1_species_n"] == 2
    assert ni["f1_species"] == pytest.approx(50.0)
    paths = write_leaderboard(records, tmp_path / "lb")
    text = paths["md"].read_text()
    assert "| m | 100 | Fe | 100.0 ± 0.0 (n=2) | 62.5 ± 53.0 (n=2) | 70.0 ± 42.4 (n=2) |" in text
    # results scored before the keys existed: no table, no error
    old = [{k: v for k, v in r.items() if "_species_" not in k} for r in records]
    assert species_rows(old) == []
    assert "precision (%) | F1" not in write_leaderboard(old, tmp_path / "old")["md"].read_text()


def test_leaderboard_headline_is_the_error_without_the_rigid_offset(tmp_path):
    """A method whose atoms are right up to one common offset leads on the headline error and
    shows its raw error (offset kept) beside it; the per-element table shows both."""
    from benchmark.metrics import score

    true = np.array([[0.0, 0, 0], [3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    elements = ["Pt", "Pt", "Fe", "Fe"]
    jitter = np.array([[0.1, 0, 0], [-0.1, 0, 0], [0, 0.1, 0], [0, -0.1, 0]])  # mean 0
    records = []
    for method, pred in (("offset", true + jitter + [0.4, 0, 0]), ("plain", true + 2 * jitter)):
        r = score(pred, elements, true, elements)
        records.append({"method": method, "dose": 100.0, "crlb_pm_Pt": 5.0, "crlb_pm_Fe": 5.0, **r})
    md = write_leaderboard(records, tmp_path / "lb")["md"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    cells = header.split(" | ")
    assert cells.index("coordinate error (pm, rigid offset removed)") < cells.index(
        "raw coordinate error (pm)"
    )
    offset = next(line for line in md.splitlines() if line.startswith("| offset | 100"))
    plain = next(line for line in md.splitlines() if line.startswith("| plain | 100"))
    # offset: 10 pm jitter (mean 0) plus 40 pm along x; raw squared distances (Å²)
    # |(.5,0,0)|², |(.3,0,0)|², |(.4,.1,0)|², |(.4,-.1,0)|² = .25, .09, .17, .17 -> √.17 = 41.2 pm
    assert "| **10.0 ± 0.0** |" in offset and f"| {100 * math.sqrt(0.17):.1f} ± 0.0 |" in offset
    assert "| 20.0 ± 0.0 | **20.0 ± 0.0** |" in plain
    # per element (Pt: pairs 0, 1): headline 10 pm, raw sqrt((.25 + .09) / 2) = 41.2 pm
    pt = next(line for line in md.splitlines() if line.startswith("| offset | 100 | Pt |"))
    assert pt.endswith(f"| 10.0 | {100 * math.sqrt(0.17):.1f} | 5.0 | 0.50 |")  # 5 / 10
