"""Acquisition order, cumulative dose and beam damage through simulate_sample, the store and the sweep."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from simgen.catalog import DatasetSpec, get_dataset, sample_rng
from simgen.physics.acquisition import acquisition_order
from simgen.sample import SampleSpec, simulate_sample
from simgen.store import open_dataset, verify_store
from tests.conftest import write_tiny_store

CATALOG = Path(__file__).resolve().parents[2] / "datasets.yaml"
ANGLES = (-60.0, -30.0, 0.0, 30.0, 60.0)
# Rate high enough that a 0.8 nm particle surely changes within one 5-projection series.
HOPPING = ("surface_diffusion:rate=0.05,gamma=0.3",)


def _spec(**changes) -> SampleSpec:
    spec = SampleSpec(
        index=0,
        morphology="cuboctahedron",
        composition="Pt",
        size_nm=0.8,
        dose=2e3,
        angles=ANGLES,
        sampling=0.5,
        size=28,
        noise=("poisson", "beam_current:sigma=0.05", "tilt_error:sigma=0.3"),
        iterations=5,
        structure_seed=11,
    )
    return replace(spec, **changes)


def _arrays(sample) -> dict:
    return {
        "tilt_series": sample.tilt_series,
        "angles_true": sample.angles_true,
        "volume": sample.volume,
        "target": sample.target,
        "positions": sample.atoms.positions,
    }


def _store_of(path: Path, samples: list, *, consolidated: bool = True) -> Path:
    return write_tiny_store(
        path,
        samples,
        name="damage-unit",
        meta={"dose": [s.meta["dose"] for s in samples]},
        consolidated=consolidated,
        acquisition=True,
    )


@pytest.fixture(scope="module")
def damaged():
    spec = _spec(damage=HOPPING, damage_model="fast", tilt_scheme="dose_symmetric")
    sample = simulate_sample(spec, sample_rng(3, 0))
    assert len(sample.history.events) > 0
    return sample


def test_zero_rates_and_inert_knock_on_are_bit_identical_to_no_damage():
    plain = _arrays(simulate_sample(_spec(), sample_rng(5, 0)))
    for damage in (
        ("surface_diffusion:rate=0",),
        ("knock_on",),
    ):  # knock-on cannot move Pt at 200 kV
        sample = simulate_sample(_spec(damage=damage, damage_model="zero"), sample_rng(5, 0))
        assert sample.history is not None and sample.history.events == ()
        for name, values in _arrays(sample).items():
            assert np.array_equal(values, plain[name]), name


def test_spawning_the_damage_generator_leaves_the_sample_stream_alone():
    rng, reference = sample_rng(5, 0), sample_rng(5, 0)
    rng.spawn(1)
    assert np.array_equal(rng.random(8), reference.random(8))


def test_each_projection_images_the_structure_of_its_acquisition_step():
    # Without noise the measured series is the clean one times the dose, so it shows the structure.
    spec = _spec(noise=("none",), damage=HOPPING, damage_model="fast", tilt_scheme="dose_symmetric")
    sample = simulate_sample(spec, sample_rng(3, 0))
    undamaged = simulate_sample(replace(spec, damage=()), sample_rng(3, 0))
    history = sample.history
    first = min(e.step for e in history.events)
    step = sample.acquisition.step
    scale = float(undamaged.tilt_series.max())
    difference = np.abs(sample.tilt_series - undamaged.tilt_series).max(axis=(1, 2)) / scale
    # Before the first event the structure is the initial one (imaged in a smaller batch: float
    # rounding only); after it, moved atoms change the images.
    assert np.all(difference[step <= first] < 1e-5)
    assert np.any(difference[step > first] > 1e-2)
    assert np.array_equal(sample.atoms.positions, undamaged.atoms.positions)  # initial structure


def test_store_records_dose_symmetric_order_and_cumulative_dose(tmp_path):
    spec = _spec(tilt_scheme="dose_symmetric", dose_profile="cos", damage_model="none")
    sample = simulate_sample(spec, sample_rng(4, 0))
    path = _store_of(tmp_path / "acq.zarr", [sample])
    record = open_dataset(path)[0]
    order = acquisition_order(ANGLES, "dose_symmetric")
    np.testing.assert_array_equal(order, [2, 3, 1, 4, 0])  # 0, +30, −30, +60, −60
    np.testing.assert_array_equal(record["acquisition_index"][order], np.arange(len(ANGLES)))
    dose = record["acquisition_dose"]
    np.testing.assert_allclose(dose, 2e3 / np.cos(np.deg2rad(ANGLES)), rtol=1e-6)
    running = np.concatenate([[0.0], np.cumsum(dose[order].astype(np.float64))[:-1]])
    np.testing.assert_allclose(record["cumulative_dose"][order], running, rtol=1e-6)
    assert record["cumulative_dose"][2] == 0.0  # 0° is acquired first
    assert record["total_dose"] == pytest.approx(float(dose.sum()), rel=1e-6)
    assert (record["tilt_scheme"], record["dose_profile"], record["damage_model"]) == (
        "dose_symmetric",
        "cos",
        "none",
    )
    # The normalised series is divided by each projection's dose: the reconstruction sees the
    # same Å² scale as with a uniform dose, so both volumes hold about the same total.
    uniform = simulate_sample(replace(spec, dose_profile="uniform"), sample_rng(4, 0))
    assert sample.volume.sum() == pytest.approx(uniform.volume.sum(), rel=0.1)
    assert verify_store(path) == []


@pytest.mark.parametrize("consolidated", [False, True])
def test_events_rebuild_every_projection_and_the_final_structure_exactly(
    damaged, tmp_path, consolidated
):
    path = _store_of(tmp_path / "events.zarr", [damaged], consolidated=consolidated)
    ds = open_dataset(path)
    history = damaged.history
    assert ds.meta("n_events")[0] == len(history.events)
    final = np.asarray(history.final().positions, dtype=np.float32)
    positions, numbers = ds.truth_atoms(0, "final")
    np.testing.assert_array_equal(positions, final)
    np.testing.assert_array_equal(numbers, history.final().numbers)
    for index in range(len(ANGLES)):
        expected = np.asarray(history.structure_at(index).positions, dtype=np.float32)
        np.testing.assert_array_equal(ds.structure_at(0, index)[0], expected)
    n_sputtered = len(history.sputtered_atoms())
    assert len(positions) == len(damaged.atoms) - n_sputtered  # atoms conserved but for sputtering
    # Checksums match; an unconsolidated store has no manifest yet, and verify says so.
    expected = [] if consolidated else [verify_store(path)[0]]
    assert verify_store(path) == expected
    assert consolidated or expected[0].startswith("manifest.json: missing")


def test_truth_selects_initial_final_or_mean(damaged, tmp_path):
    path = _store_of(tmp_path / "truth.zarr", [damaged])
    initial = open_dataset(path)[0]
    final = open_dataset(path, truth="final")[0]
    mean = open_dataset(path).read(0, truth="mean")
    assert (initial["truth"], final["truth"], mean["truth"]) == ("initial", "final", "mean")
    np.testing.assert_array_equal(initial["positions"], damaged.atoms.positions.astype(np.float32))
    assert not np.array_equal(initial["positions"], final["positions"])
    expected_mean = damaged.history.dose_weighted_mean().positions.astype(np.float32)
    np.testing.assert_allclose(mean["positions"], expected_mean, atol=1e-5)
    # A view keeps its truth through filters and slices.
    view = open_dataset(path, truth="final").filter(dose=2e3)[0:1]
    np.testing.assert_array_equal(view[0]["positions"], final["positions"])
    with pytest.raises(ValueError, match="truth='latest'"):
        open_dataset(path, truth="latest")


def test_config_validates_schemes_profiles_and_damage_models():
    data = get_dataset("smoke", CATALOG).to_dict()
    assert "damage_models" not in data and "scheme" not in data["tilt"]  # unchanged record
    data["tilt"].update(scheme=["sequential", "dose_symmetric"], dose_profile="cos")
    data["damage_models"] = {"none": [], "fast": ["surface_diffusion:rate=1e-4"]}
    data["samples"] = {"grid": {"axes": ["tilt_scheme", "damage_model"], "replicas": 1}}
    spec = DatasetSpec.from_dict("smoke", data)
    assert spec.tracks_acquisition and spec.n_samples == 4
    assert DatasetSpec.from_dict("smoke", spec.to_dict()) == spec
    plan = spec.plan()
    assert {(s.tilt_scheme, s.damage_model) for s in plan} == {
        ("sequential", "none"),
        ("sequential", "fast"),
        ("dose_symmetric", "none"),
        ("dose_symmetric", "fast"),
    }
    assert {s.damage for s in plan} == {(), ("surface_diffusion:rate=1e-4",)}
    bad = [
        ({"tilt": {**data["tilt"], "scheme": "zigzag"}}, "tilt.scheme"),
        ({"tilt": {**data["tilt"], "dose_profile": "cosine"}}, "tilt.dose_profile"),
        ({"damage_models": {"x": ["melting:rate=1"]}}, "damage_models.x"),
        ({"damage_models": {"x": ["surface_diffusion:rate=-1"]}}, "damage_models.x"),
    ]
    for change, key in bad:
        with pytest.raises(ValueError, match=key):
            DatasetSpec.from_dict("smoke", {**data, **change})
    no_models = {k: v for k, v in data.items() if k != "damage_models"}
    with pytest.raises(ValueError, match="samples.grid.axes"):
        DatasetSpec.from_dict("smoke", no_models)


@pytest.mark.slow  # end-to-end: generate, run, score, plot
def test_damage_sweep_generates_and_scores_against_both_truths(tmp_path):
    from benchmark.leaderboard import aggregate
    from benchmark.runner import run_method
    from benchmark.sweep import best_total_dose, plot_damage_sweep
    from simgen.engine import generate
    from simgen.preview import preview

    spec = get_dataset("damage-sweep", CATALOG)
    assert spec.tracks_acquisition and set(spec.tilt_schemes) == {"sequential", "dose_symmetric"}
    out = tmp_path / "damage.zarr"
    report = generate(spec, out, workers=1, limit=2, progress=False)
    assert not report.failed
    ds = open_dataset(out)
    assert len(ds) == 2 and ds.attrs["acquisition"]
    assert verify_store(out) == []
    rows = spec.plan_rows()[:2]
    for k, row in enumerate(rows):
        sample = ds[k]
        assert sample["tilt_scheme"] == row["tilt_scheme"]
        assert sample["damage_model"] == row["damage_model"]
        assert sample["total_dose"] == pytest.approx(row["dose"] * spec.n_angles)
    records = run_method(
        "classical",
        out,
        tmp_path / "r.jsonl",
        split=None,
        truth=("initial", "final"),
        progress=False,
    )
    assert [r["truth"] for r in records] == ["initial", "final"] * 2
    for r in records:
        assert {"total_dose", "tilt_scheme", "damage_model"} <= set(r)
        assert r["recovery_rate"] == pytest.approx(r["n_matched"] / r["n_true"])
        assert r["recovery_rate_species"] <= r["recovery_rate"]
    for initial, final in zip(records[0::2], records[1::2]):  # the same prediction, two truths
        assert initial["n_pred"] == final["n_pred"] and initial["index"] == final["index"]
    table = aggregate(records, by=("method", "truth", "tilt_scheme", "damage_model", "total_dose"))
    assert set(best_total_dose(table)) == {
        ("classical", r["truth"], r["tilt_scheme"], r["damage_model"]) for r in table
    }
    import matplotlib.image

    for png in (
        plot_damage_sweep(table, tmp_path / "sweep.png"),
        preview(out, int(ds.indices[0]), tmp_path / "p.png"),
    ):
        image = matplotlib.image.imread(png)[..., :3]
        assert min(image.shape[:2]) > 200 and image.std() > 0.01  # a drawn figure, not blank
