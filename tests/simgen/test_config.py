"""Tests of the dataset catalogue: validation messages, plan sizes, seeds, splits, shared particles."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from simgen.catalog import DatasetSpec, get_dataset, load_catalog, sample_rng, validate_catalog

CATALOG = Path(__file__).resolve().parents[2] / "datasets.yaml"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(CATALOG)


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(CATALOG.read_text())["datasets"]


def test_shipped_catalog_sizes(catalog):
    assert set(catalog) >= {"smoke", "demo", "dose-sweep", "pann-benchmark", "prism-validation"}
    assert catalog["smoke"].n_samples == 6  # 2 morphologies × 2 noise models + 2 random draws
    demo = catalog["demo"]
    assert len(demo.morphologies) >= 4 and len(demo.compositions) >= 3 and len(demo.doses) >= 3
    assert demo.n_samples == 5 * 4 * 3 * 2 * 2 == 240
    assert catalog["dose-sweep"].n_samples == 12 * 7
    pann = catalog["pann-benchmark"]
    assert pann.n_samples == len(pann.morphologies) * 9 * 7 * 4 * 13
    assert catalog["prism-validation"].mode == "prism"
    for spec in catalog.values():
        assert f"samples: {spec.n_samples}" in spec.summary().splitlines()


def test_dry_run_limit_line(catalog):
    assert "samples: 10 (first 10 of 240)" in catalog["demo"].summary(limit=10)


def test_plan_is_deterministic_and_seeded(catalog):
    smoke = catalog["smoke"]
    first, second = smoke.plan(), smoke.plan()
    assert first == second
    assert [s.index for s in first] == list(range(smoke.n_samples))
    # sample i's stream is SeedSequence(seed).spawn(n)[i]
    spawned = np.random.SeedSequence(smoke.seed).spawn(smoke.n_samples)
    for i in (0, smoke.n_samples - 1):
        expected = np.random.default_rng(spawned[i]).random(4)
        np.testing.assert_array_equal(sample_rng(smoke.seed, i).random(4), expected)
    # a different seed changes the plan's random draws
    reseeded = DatasetSpec.from_dict("smoke", {**smoke.to_dict(), "seed": smoke.seed + 1})
    assert [s.thermal_sigma for s in reseeded.plan()] != [s.thermal_sigma for s in first]


def test_to_dict_round_trips(catalog):
    for name, spec in catalog.items():
        assert DatasetSpec.from_dict(name, spec.to_dict()) == spec


def test_dose_sweep_shares_particles_across_doses_only(catalog):
    spec = catalog["dose-sweep"]
    np.testing.assert_allclose(spec.doses, np.geomspace(1e2, 1e5, 7), rtol=1e-5)
    plan = spec.plan()
    by_particle: dict = {}
    for s in plan:
        by_particle.setdefault(s.structure_seed, []).append(s)
    assert len(by_particle) == 12  # 4 compositions × 3 replicas of the held-out decahedron
    seeds = set()
    for samples in by_particle.values():
        assert sorted(s.dose for s in samples) == sorted(spec.doses)
        assert len({s.structure_seed for s in samples}) == 1
        assert len({(s.size_nm, s.thermal_sigma, s.orientation) for s in samples}) == 1
        seeds.add(samples[0].structure_seed)
    assert len(seeds) == 12 and None not in seeds


def test_demo_holds_out_a_morphology_and_splits_by_particle(catalog):
    rows = catalog["demo"].plan_rows()
    test = {r["morphology"] for r in rows if r["split"] == "test"}
    assert test == {"decahedron"}
    assert all(r["split"] == "test" for r in rows if r["morphology"] == "decahedron")
    split_of_particle: dict = {}
    for r in rows:
        split_of_particle.setdefault(r["particle"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_particle.values())
    free = [r for r in rows if r["morphology"] != "decahedron"]
    n_particles = len({r["particle"] for r in free})
    n_val = len({r["particle"] for r in free if r["split"] == "val"})
    assert n_val == round(0.15 * n_particles)
    # shuffled order: the first 40 samples already span every morphology
    assert len({r["morphology"] for r in rows[:40]}) == 5


def _with(raw, name, path, value):
    """A copy of dataset ``name`` with the dotted key ``path`` set to ``value``."""
    entry = copy.deepcopy(raw[name])
    node = entry
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return entry


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("doses", [1e3, -5.0], "doses[1]=-5.0: expected a positive dose"),
        ("tilt.count", 1, "tilt.count=1: expected an integer >= 2"),
        ("size", 12, "particles.size_nm=0.8: expected diameters < 0.55 nm"),
        ("split.fractions", {"train": 0.7, "test": 0.2}, "fractions summing to 1"),
        ("particles.morphology", ["cuboctahedron", "icosahedra"], "did you mean 'icosahedron'"),
        ("particles.composition", ["Pt", "L10:FeXx"], "particles.composition[1]='L10:FeXx'"),
        ("noise_models.realistic", ["poisson", "shot"], "noise_models.realistic[1]='shot'"),
        ("noise_models.realistic", ["read:sigma=-1"], "noise_models.realistic[0]='read:sigma=-1'"),
        ("mode", "ptychography", "mode='ptychography': expected one of linear, multislice, prism"),
        ("seed", 1.5, "seed=1.5: expected an integer"),
        (
            "reconstruction.align",
            "projection_match",
            "reconstruction.align='projection_match': expected one of auto, none, com, "
            "cross_correlation, projection_matching, projection_matching_split "
            "(did you mean 'projection_matching'?)",
        ),
        (
            "split.hold_out",
            {"test": {"morphology": ["octahedron"]}},
            "one of this dataset's values",
        ),
    ],
)
def test_bad_values_name_dataset_key_and_allowed(raw, path, value, fragment):
    entry = _with(raw, "smoke", path, value)
    with pytest.raises(ValueError) as info:
        DatasetSpec.from_dict("smoke", entry)
    message = str(info.value)
    assert "dataset 'smoke'" in message
    assert fragment in message


def test_unknown_key_suggests_the_closest(raw):
    entry = copy.deepcopy(raw["smoke"])
    entry["samplng"] = 0.5
    with pytest.raises(ValueError, match=r"unknown key 'samplng' \(did you mean 'sampling'\?\)"):
        DatasetSpec.from_dict("smoke", entry)
    entry = copy.deepcopy(raw["smoke"])
    entry["particles"]["thermal_sigm"] = 0.1
    with pytest.raises(
        ValueError, match=r"'particles.thermal_sigm' \(did you mean 'thermal_sigma'\?\)"
    ):
        DatasetSpec.from_dict("smoke", entry)


def test_catalog_errors_and_validation(tmp_path, raw):
    bad = {"datasets": {"smoke": raw["smoke"], "broken": {**raw["smoke"], "doses": [0.0]}}}
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="dataset 'broken': doses"):
        load_catalog(path)
    assert get_dataset("smoke", path).n_samples == 6
    with pytest.raises(ValueError, match="did you mean 'smoke'"):
        get_dataset("smok", path)
    # A particle that passes the schema (10 Å < 11.5 Å side) but not placement: a 55-atom
    # cuboctahedron is 10.7 Å across, plus a 2 Å margin > 24 × 0.5 Å.
    tight = _with(raw, "smoke", "size", 24)
    tight["particles"]["size_nm"] = 1.0
    tight["particles"]["morphology"] = ["cuboctahedron"]
    tight["particles"]["composition"] = ["Pt"]
    tight["split"] = {"fractions": {"train": 1.0}}
    path.write_text(yaml.safe_dump({"datasets": {"tight": tight}}))
    problems = validate_catalog(path)
    assert (
        len(problems) == 1 and "cuboctahedron/Pt" in problems[0] and "does not fit" in problems[0]
    )
    path.write_text(yaml.safe_dump({"datasets": {"smoke": raw["smoke"]}}))
    assert validate_catalog(path) == []


def test_align_auto_aligns_exactly_the_noise_models_with_geometric_errors(raw):
    from simgen.catalog import resolve_align

    assert resolve_align("auto", ["poisson", "read:sigma=1"]) == "none"
    assert resolve_align("auto", ["poisson", "drift:amplitude=0.5"]) == "projection_matching_split"
    assert resolve_align("auto", ["tilt_error:sigma=0.3"]) == "projection_matching_split"
    assert resolve_align("projection_matching", ["tilt_error:sigma=0.3"]) == "projection_matching"
    assert resolve_align("com", ["misalignment:sigma=0.3"]) == "com"
    spec = DatasetSpec.from_dict("dose-sweep", copy.deepcopy(raw["dose-sweep"]))
    assert spec.align == "auto"
    assert {s.align for s in spec.plan(limit=3)} == {"projection_matching_split"}
    poisson = DatasetSpec.from_dict("dose-sweep-poisson", copy.deepcopy(raw["dose-sweep-poisson"]))
    assert {s.align for s in poisson.plan(limit=3)} == {"none"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        (
            "datasets:\n  a: {seed: 1}\n  a: {seed: 2}\n",
            "line 3: key 'a' given twice (first at line 2)",
        ),
        ("datasets:\n  a:\n    seed: 1\n    seed: 2\n", "line 4: key 'seed' given twice"),
        ("datasets:\n  a: {seed: 1, seed: 2}\n", "key 'seed' given twice"),
    ],
)
def test_a_key_given_twice_at_any_level_is_an_error(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_catalog(path)
    with pytest.raises(ValueError, match="given twice"):
        get_dataset("a", path)


def test_anchors_and_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("x: &m {energy: 200}\ny:\n  <<: *m\n  energy: 300\ndatasets: {}\n")
    from simgen.catalog.loader import _read_yaml

    with pytest.raises(ValueError, match="top-level key 'x'"):  # read fine, then schema
        _read_yaml(path)


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "a b", "x" * 101])
def test_dataset_names_must_be_simple_file_names(raw, name):
    with pytest.raises(ValueError, match="simple name"):
        DatasetSpec.from_dict(name, raw["smoke"])


def test_pann_train_is_the_benchmark_grid_with_decahedra_and_pdpt_held_out(catalog):
    train, bench = catalog["pann-train"], catalog["pann-benchmark"]
    for field in ("morphologies", "compositions", "doses", "noise_models", "sampling", "size"):
        assert getattr(train, field) == getattr(bench, field), field
    assert train.angles == bench.angles and train.seed != bench.seed
    assert train.n_samples == 13 * 9 * 7 * 4 == 3276
    plan = train.plan()
    held = {"decahedron", "marks_decahedron"}
    for s in plan:
        is_test = s.morphology in held or s.composition == "core-shell:Pd@Pt"
        assert (s.split == "test") == is_test, s.index
    # 1 − (11/13)·(8/9) of the grid is held out
    assert sum(s.split == "test" for s in plan) == 3276 - 11 * 8 * 7 * 4
    # shuffled: a short prefix already trains on every other morphology, composition, dose, noise
    prefix = [s for s in plan[:300] if s.split == "train"]
    assert {s.morphology for s in prefix} == set(train.morphologies) - held
    assert {s.composition for s in prefix} == set(train.compositions) - {"core-shell:Pd@Pt"}
    assert {s.dose for s in prefix} == set(train.doses)
    assert {s.noise_model for s in prefix} == set(dict(train.noise_models))
