"""Refinement on an imported tilt series: no alignment recorded, gain estimated, dose optional (issue 25)."""

import logging

import numpy as np
import pytest
from ase import Atoms

from simgen.importer import import_tilt_series, thin_store
from simgen.physics.imaging import simulate_tilt_series
from simgen.store import open_dataset

SAMPLING, SIZE, DOSE, GAIN = 0.2, 40, 1.0e5, 3.0
ANGLES = np.linspace(-60, 60, 9)
#: Five Si atoms in the user's model frame (origin at the rotation centre), Å (five, not three:
#: an AET text table of 3 or 4 atoms is ambiguous with its transpose).
MODEL = np.array(
    [[1.6, -1.1, 0.7], [-1.3, 1.4, -0.9], [0.2, 0.3, 2.2], [-1.8, -1.6, 0.9], [1.1, 1.9, -1.7]]
)
OFFSETS = np.array(
    [[0.25, -0.2, 0.15], [-0.2, 0.25, 0.2], [0.2, 0.15, -0.25], [-0.2, -0.2, 0.2], [0.2, 0.2, 0.2]]
)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A Poisson series (counts = gain × electrons, 0.5 e background) in this project's layout."""
    root = tmp_path_factory.mktemp("imported")
    centre = (SIZE - 1) / 2 * SAMPLING
    atoms = Atoms("Si5", positions=MODEL + centre)
    expected = DOSE * simulate_tilt_series(atoms, ANGLES, size=SIZE, sampling=SAMPLING) + 0.5
    rng = np.random.default_rng(5)
    counts = GAIN * rng.poisson(expected).astype(np.float32)
    np.save(root / "series.npy", counts)
    np.savetxt(root / "angles.txt", np.column_stack([0 * ANGLES, ANGLES, 0 * ANGLES]))  # N×3 Euler
    (root / "truth.txt").write_text("".join(f"1 {x} {y} {z}\n" for x, y, z in MODEL))
    stores = {}
    for name, dose in (("dose", DOSE), ("nodose", None)):
        stores[name] = import_tilt_series(
            root / "series.npy",
            angles=root / "angles.txt",
            sampling=SAMPLING,
            out=root / f"{name}.zarr",
            truth=root / "truth.txt",
            elements=["Si"],
            dose=dose,
            background="auto",
            iterations=30,
            progress=False,
        )
    stores["nogain"] = import_tilt_series(
        root / "series.npy",
        angles=root / "angles.txt",
        sampling=SAMPLING,
        out=root / "nogain.zarr",
        truth=root / "truth.txt",
        elements=["Si"],
        gain=None,
        iterations=10,
        progress=False,
    )
    return root, stores


def test_import_records_the_estimated_gain_and_no_alignment(measured):
    _, stores = measured
    sample = open_dataset(stores["dose"])[0]
    assert sample["gain_source"] == "estimated"
    assert abs(sample["gain"] / GAIN - 1.0) < 0.25  # nine 40² images: a rough estimate
    assert np.all(np.isnan(sample["angles_estimated"]))  # no alignment: NaN, as before
    np.testing.assert_allclose(sample["angles"], ANGLES, atol=1e-5)  # N×3 Euler table read
    assert "gain" not in open_dataset(stores["nogain"])[0] or np.isnan(
        open_dataset(stores["nogain"])[0].get("gain", np.nan)
    )


@pytest.mark.parametrize("name", ["dose", "nodose"])
def test_refinement_runs_on_an_imported_store_and_moves_the_atoms(measured, name):
    """The angles bug: NaN estimated angles/shifts of an import were passed on as a start."""
    from models.refine import RefineConfig, refine_sample

    _, stores = measured
    sample = open_dataset(stores[name])[0]
    truth = np.asarray(sample["positions"], dtype=np.float64)
    np.testing.assert_allclose(truth, MODEL + (SIZE - 1) / 2 * SAMPLING, atol=1e-5)
    start = truth + OFFSETS
    config = RefineConfig(fit_angles=False, fit_shifts=False, iterations=60)
    result = refine_sample(sample, start, ["Si"] * 5, config=config)
    before = np.linalg.norm(start - truth, axis=1)
    after = np.linalg.norm(result.positions - truth, axis=1)
    assert np.all(result.displacement > 0.05)  # it ran and moved every atom
    assert np.all(after < 0.5 * before), (before, after)
    assert result.gain == pytest.approx(sample["gain"])
    if name == "nodose":
        # dose estimated from the atoms' σ(Z): within 25% of the truth (σ scale refit anyway)
        assert abs(result.dose_estimated / DOSE - 1.0) < 0.25
    else:
        assert result.dose_estimated is None


def test_a_step_that_cannot_run_warns_and_is_in_the_results_record(measured, tmp_path, caplog):
    from benchmark.runner import read_results, run_method

    _, stores = measured
    with caplog.at_level(logging.WARNING):
        run_method(
            "classical+refine",
            stores["nogain"],
            tmp_path / "r.jsonl",
            radius=1.0,
            options={"smooth": 0.0},
            progress=False,
        )
    (record,) = read_results([tmp_path / "r.jsonl"])
    assert len(record["skipped_steps"]) == 1
    assert "refine: no dose" in record["skipped_steps"][0]
    assert any(
        r.levelno == logging.WARNING and "refine: no dose" in r.getMessage() for r in caplog.records
    )
    run_method("classical+refine", stores["dose"], tmp_path / "ok.jsonl", progress=False)
    (record,) = read_results([tmp_path / "ok.jsonl"])
    assert record["skipped_steps"] == []


def test_thin_store_records_provenance_and_halves_the_counts(measured, tmp_path):
    _, stores = measured
    out = thin_store(stores["dose"], dose=DOSE / 2, out=tmp_path / "half.zarr", seed=3)
    source, thinned = open_dataset(stores["dose"])[0], open_dataset(out)[0]
    provenance = open_dataset(out).attrs["thinned_from"]
    assert provenance["source_dose"] == DOSE and provenance["target_dose"] == DOSE / 2
    assert provenance["seed"] == 3 and provenance["fraction"] == pytest.approx(0.5)
    assert thinned["dose"] == DOSE / 2
    assert np.all(thinned["tilt_series"] <= source["tilt_series"])
    ratio = thinned["tilt_series"].sum() / source["tilt_series"].sum()
    assert abs(ratio - 0.5) < 0.02
    np.testing.assert_allclose(thinned["positions"], source["positions"])
    with pytest.raises(ValueError, match="at most the source dose"):
        thin_store(stores["dose"], dose=2 * DOSE, out=tmp_path / "more.zarr")
    assert not (tmp_path / "more.zarr").exists()


def test_thin_and_import_cli_bad_input_exit_2_nothing_written(measured, tmp_path, capsys):
    from simgen.cli import main

    root, stores = measured
    out = tmp_path / "thin.zarr"
    assert main(["thin", str(stores["dose"]), "--dose", str(2 * DOSE), "--out", str(out)]) == 2
    assert "--dose" in capsys.readouterr().err and not out.exists()
    assert main(["thin", str(stores["nogain"]), "--dose", "10", "--out", str(out)]) == 2
    assert "--source-dose" in capsys.readouterr().err and not out.exists()
    args = ["import", str(root / "series.npy"), "--angles", str(root / "angles.txt")]
    bad = [*args, "--sampling", "0.2", "--gain", "-1", "--out", str(tmp_path / "i.zarr")]
    assert main(bad) == 2
    assert "--gain='-1'" in capsys.readouterr().err and not (tmp_path / "i.zarr").exists()
    assert main(["thin", str(stores["dose"]), "--dose", str(DOSE / 4), "--out", str(out)]) == 0
    assert open_dataset(out)[0]["dose"] == DOSE / 4
