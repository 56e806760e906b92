"""Paired sweep tables and the paired claim check on hand-built records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.sweep import paired_claim_verdict, paired_table, plot_paired


def _record(method, index, dose, displacements, recovery, bound=(2.0, 2.0, 4.0)):
    indices = list(range(len(displacements)))
    return {
        "method": method,
        "index": index,
        "dose": dose,
        "recovery_rate_species": recovery,
        "matches": {
            "true_index": indices,
            "element": ["Pt", "Pt", "Fe"][: len(indices)],
            "displacement_pm": displacements,
        },
        "crlb_atoms_pm": list(bound),
    }


def _records():
    # two particles at one dose; pann misses atom 2 of particle 0, so that atom is unpaired there
    a = [[10, 0, 0], [-10, 0, 0], [0, 0, 0]]  # AET: mean 0, RMS over three atoms
    return [
        _record("classical", 0, 100.0, [[0, 20, 0], [0, -20, 0], [0, 0, 0]], 0.5),
        _record("pann", 0, 100.0, a[:2], 0.6),
        _record("classical", 1, 100.0, [[0, 40, 0], [0, -40, 0], [0, 0, 0]], 0.5),
        _record("pann", 1, 100.0, [[5, 0, 0], [-5, 0, 0], [0, 0, 0]], 0.7),
    ]


def test_paired_table_scores_the_same_atoms_for_every_method():
    rows = paired_table(_records(), ["classical", "pann"], radii=(1.0,))
    got = {(r["element"], r["method"]): r for r in rows}
    # particle 0: paired atoms {0, 1} (both Pt); particle 1: {0, 1, 2}
    assert got[("all", "classical")]["error_pm"] == pytest.approx(
        (20.0 + math.sqrt((1600 + 1600 + 0) / 3)) / 2
    )
    assert got[("all", "pann")]["error_pm"] == pytest.approx((10.0 + math.sqrt(50 / 3)) / 2)
    assert got[("Pt", "pann")]["error_pm"] == pytest.approx((10.0 + 5.0) / 2)
    assert got[("Pt", "pann")]["bound_pm"] == pytest.approx(2.0)
    assert got[("Fe", "pann")]["n_particles"] == 1  # Fe paired only in particle 1
    assert got[("all", "pann")]["bound_pm"] == pytest.approx((2.0 + math.sqrt(24 / 3)) / 2)
    assert got[("Pt", "classical")]["efficiency"] == pytest.approx(2.0 / 30.0)


def test_paired_table_gives_the_raw_error_beside_the_headline():
    """A rigid shift added to every pair of one method leaves its headline error unchanged and
    shows up, exactly, in the raw error beside it."""
    shift = [30.0, 0.0, -40.0]  # |shift| = 50 pm
    records = _records()
    shifted = [
        {
            **r,
            "matches": {
                **r["matches"],
                "displacement_pm": (
                    np.asarray(r["matches"]["displacement_pm"], float) + shift
                ).tolist(),
            },
        }
        if r["method"] == "pann"
        else r
        for r in records
    ]
    methods = ["classical", "pann"]
    plain = {(r["element"], r["method"]): r for r in paired_table(records, methods, radii=(1.0,))}
    moved = {(r["element"], r["method"]): r for r in paired_table(shifted, methods, radii=(1.0,))}
    for key in plain:
        assert moved[key]["error_pm"] == pytest.approx(plain[key]["error_pm"])
    # pann's pairs have mean 0 in both particles: raw² = headline² + 50² per particle
    raw = (math.sqrt(100 + 2500) + math.sqrt(50 / 3 + 2500)) / 2
    assert moved[("all", "pann")]["raw_error_pm"] == pytest.approx(raw)
    assert plain[("all", "pann")]["raw_error_pm"] == pytest.approx(
        plain[("all", "pann")]["error_pm"]
    )
    from benchmark.sweep import _paired_markdown

    text = _paired_markdown(paired_table(shifted, methods, radii=(1.0,)), methods)
    assert f"(raw {raw:.1f})" in text


def test_paired_claim_verdict_uses_per_particle_differences(tmp_path):
    text = paired_claim_verdict(_records(), low_doses=1)
    row = text.splitlines()[4]
    # relative change = mean(pann - classical) / mean(classical) over the two particles
    pann = (10.0 + math.sqrt(50 / 3)) / 2
    classical = (20.0 + math.sqrt(3200 / 3)) / 2
    assert f"{(pann - classical) / classical:+.0%}" in row
    assert "+15.0" in row  # recovery: +10 and +20 points -> mean +15
    assert "| 2 |" in row
    assert "holds" in row and "Verdict: the claim holds" in text
    plot_paired(paired_table(_records(), ["classical", "pann"]), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert np.isfinite(pann)


def test_samples_of_several_stores_are_told_apart_by_dataset():
    # one store per dose and orientation (simgen simulate): every sample has index 0
    records = []
    for name, shift in (("s0", 10.0), ("s1", 30.0)):
        for method, scale in (("classical", 2.0), ("pann", 1.0)):
            rec = _record(method, 0, 100.0, [[scale * shift, 0, 0], [-scale * shift, 0, 0]], 0.5)
            rec["dataset"] = name
            records.append(rec)
    rows = paired_table(records, ["classical", "pann"], radii=(1.0,))
    pann = next(r for r in rows if r["element"] == "all" and r["method"] == "pann")
    assert pann["n_particles"] == 2
    assert pann["error_pm"] == pytest.approx((10.0 + 30.0) / 2)


def test_crop_model_keeps_the_sphere_and_recentres():
    import importlib.util
    from pathlib import Path

    from ase import Atoms

    path = Path(__file__).resolve().parents[2] / "scripts" / "dose_sweep_verdict.py"
    spec = importlib.util.spec_from_file_location("dose_sweep_verdict", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    atoms = Atoms("PdPdPtPt", positions=[[-4, 0, 0], [0, 0, 0], [2, 0, 0], [4, 0, 0]])
    # centroid x = 0.5; centre 0.5 + 1.5 = 2.0, radius 2.1 keeps x = 0, 2, 4
    cropped = module.crop_model(atoms, 2.1, (1.5, 0.0, 0.0))
    assert cropped.get_chemical_symbols() == ["Pd", "Pt", "Pt"]
    assert np.allclose(cropped.positions[:, 0], [-2.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="radius"):
        module.crop_model(atoms, 0.1, (20.0, 0.0, 0.0))
