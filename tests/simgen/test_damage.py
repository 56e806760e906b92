"""Knock-on and surface-diffusion damage during a tilt series (simgen.damage)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Octahedron

from simgen.damage import (
    DamageChain,
    DamageEvent,
    DamageHistory,
    KnockOn,
    SurfaceDiffusion,
    coordination_numbers,
    image_history,
    max_transferred_energy,
    mckinley_feshbach_cross_section,
    parse_damage,
    threshold_beam_energy,
)
from simgen.physics.acquisition import Acquisition


@pytest.fixture(scope="module")
def particle() -> Atoms:
    atoms = Octahedron("Pt", 6, cutoff=1)  # 140-atom truncated octahedron, fcc, a = 3.92 Å
    atoms.positions += 20.0
    return atoms


@pytest.fixture(scope="module")
def acquisition() -> Acquisition:
    return Acquisition.from_scheme(np.arange(-60, 61, 10), "dose_symmetric", dose=1000.0)


def _state(rng: np.random.Generator):
    return rng.bit_generator.state


# --- cross-section -----------------------------------------------------------------------------


def test_max_transferred_energy_pt_200kv_by_hand():
    # 2 E (E + 2 m c^2) / (M c^2), Pt standard atomic weight 195.084 u
    expected = 2 * 200e3 * (200e3 + 2 * 510998.95) / (195.084 * 931494102.42)
    assert max_transferred_energy(200e3, 195.084) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(2.690, abs=1e-3)


def test_mckinley_feshbach_carbon_200kev_by_hand():
    # Independent route: prefactor 4π a0² E_R²/(mc²)² = π r_e², r_e = 2.8179403262e-15 m (CODATA).
    z, energy, threshold, mass = 6, 200e3, 17.0, 12.011
    pi_re2_barn = math.pi * (2.8179403262e-15) ** 2 / 1e-28  # 0.24946 b
    gamma = 1 + energy / 510998.95
    beta2 = 1 - 1 / gamma**2  # 0.48342
    beta = math.sqrt(beta2)
    x = (2 * energy * (energy + 2 * 510998.95) / (mass * 931494102.42)) / threshold  # 43.689/17
    alpha = z / 137.035999084
    bracket = (
        (x - 1)
        - beta2 * math.log(x)
        + math.pi * alpha * beta * (2 * (math.sqrt(x) - 1) - math.log(x))
    )
    expected = pi_re2_barn * z**2 * (1 - beta2) / beta2**2 * bracket
    assert expected == pytest.approx(22.60, abs=0.01)  # the hand-computed value, barn
    assert mckinley_feshbach_cross_section(energy, threshold, z) == pytest.approx(
        expected, rel=1e-6
    )

    # Cross-check against Egerton's numerical form (EELS in the EM, 3rd ed., program SIGDIS):
    # E_max = E0 (E0 + 1022) / (465.7 A) [E0 in keV], Rutherford term 0.2494 Z² (1−β²)/β⁴ (x − 1);
    # the Rutherford value leaves out the spin term −β² ln x, which outweighs the α term for carbon.
    emax_egerton = 200 * (200 + 1022) / (465.7 * mass)
    assert emax_egerton == pytest.approx(x * threshold, rel=2e-3)
    rutherford = 0.2494 * z**2 * (1 - beta2) / beta2**2 * (emax_egerton / threshold - 1)
    assert rutherford == pytest.approx(31.16, abs=0.05)
    assert 0.6 < expected / rutherford < 0.8
    # Order of magnitude: tens of barns for carbon at 200 keV, the range of the displacement
    # cross-sections plotted by Banhart (1999, Fig. 2) and Egerton et al. (2004).
    assert 10 < expected < 50


def test_cross_section_zero_below_threshold_and_rises_above():
    # Pt at 200 kV: E_max = 2.69 eV, below even the lowest site threshold (33 eV · 1/12 = 2.75 eV)
    assert mckinley_feshbach_cross_section(200e3, 33.0, 78) == 0.0
    assert mckinley_feshbach_cross_section(200e3, 33.0 / 12, 78) == 0.0
    # 12C at 100 kV (graphene, E_d = 21.14 eV, Meyer et al. PRL 2012): E_max = 20.08 eV, so a static
    # lattice gives no knock-on at 100 kV; Egerton's threshold formula gives the same onset.
    assert max_transferred_energy(100e3, 12.0) == pytest.approx(20.075, abs=0.001)
    assert mckinley_feshbach_cross_section(100e3, 21.14, 6, mass=12.0) == 0.0
    onset = threshold_beam_energy(21.14, 12.0)
    assert onset / 1e3 == pytest.approx(511 * (math.sqrt(1 + 12 * 21.14 / 561) - 1), rel=2e-3)
    assert max_transferred_energy(onset, 12.0) == pytest.approx(21.14, rel=1e-10)
    energies = np.array([onset * 0.999, onset * 1.01, 150e3, 300e3])
    sigma = mckinley_feshbach_cross_section(energies, 21.14, 6, mass=12.0)
    assert sigma[0] == 0.0 and np.all(np.diff(sigma) > 0)
    with pytest.raises(ValueError, match="threshold="):
        mckinley_feshbach_cross_section(200e3, 0.0, 6)


def test_site_threshold_scales_with_coordination():
    model = KnockOn()
    assert model.site_threshold("Pt", 12) == pytest.approx(33.0)
    assert model.site_threshold("Pt", 6) == pytest.approx(16.5)
    assert KnockOn(exponent=0.0).site_threshold("Pt", 3) == pytest.approx(33.0)
    assert KnockOn(thresholds={"Pt": 30.0}, threshold_scale=0.5).site_threshold(
        "Pt", 12
    ) == pytest.approx(15.0)
    with pytest.raises(ValueError, match="threshold_Os"):
        KnockOn().bulk_threshold("Os")


# --- zero damage is no damage ------------------------------------------------------------------


@pytest.mark.parametrize(
    "specs",
    [
        [],
        ["surface_diffusion:rate=0"],
        ["knock_on:cross_section_scale=0"],
        ["knock_on"],  # Pt at 200 kV: E_max < threshold, physically zero
        ["knock_on:energy=200e3", "surface_diffusion:rate=0"],
    ],
)
def test_zero_rates_change_nothing_and_draw_nothing(particle, acquisition, specs):
    rng = np.random.default_rng(7)
    before = _state(rng)
    history = DamageChain.from_specs(specs).evolve(particle, acquisition, rng)
    assert _state(rng) == before
    assert history.events == ()
    for index in range(acquisition.n_projections):
        structure = history.structure_at(index)
        assert np.array_equal(structure.positions, particle.positions)
        assert np.array_equal(structure.numbers, particle.numbers)
    assert np.array_equal(history.dose_weighted_mean().positions, particle.positions)
    assert len(history.runs()) == 1


# --- evolving structures -----------------------------------------------------------------------


def test_same_seed_same_damage(particle, acquisition):
    chain = DamageChain.from_specs(["surface_diffusion:rate=1e-3"])
    first = chain.evolve(particle, acquisition, np.random.default_rng(11))
    second = chain.evolve(particle, acquisition, np.random.default_rng(11))
    other = chain.evolve(particle, acquisition, np.random.default_rng(12))
    assert len(first.events) > 0
    assert first.events == second.events
    assert first.events != other.events


def test_surface_diffusion_moves_only_surface_atoms_to_free_sites(particle):
    # many small doses, so that most projections cause at most one hop
    acquisition = Acquisition.from_scheme(np.arange(-60, 61, 2), "dose_symmetric", dose=100.0)
    history = DamageChain.from_specs(["surface_diffusion:rate=1e-3"]).evolve(
        particle, acquisition, np.random.default_rng(5)
    )
    bond = 3.92 / math.sqrt(2)
    arrays = history.to_arrays()
    assert np.all(arrays["kind"] == 0)
    # every hop starts from a surface atom (CN < 12 at that moment) and ends one hop away
    hop_length = np.linalg.norm(arrays["new"] - arrays["old"], axis=1)
    assert np.all(hop_length > 0.25 * bond) and np.all(hop_length < 2.0 * bond)
    for event in history.events:
        before = history.structure_at_step(event.step)
        cn = coordination_numbers(before.positions, 1.2 * bond)
        index = int(np.flatnonzero(before.arrays["ids"] == event.id)[0])
        assert cn[index] < 12
        assert np.array_equal(before.positions[index], event.old)
    # no two atoms ever closer than 0.85 bond lengths
    final = history.final()
    distances = np.linalg.norm(final.positions[:, None] - final.positions[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert distances.min() >= 0.85 * bond - 1e-9
    # a hop lands bonded to >= 3 atoms (checked where the step has a single event, so that the
    # structure before the step is exactly what the hop saw)
    steps = [e.step for e in history.events]
    single = [e for e in history.events if steps.count(e.step) == 1]
    assert len(single) >= 3
    for event in single:
        before = history.structure_at_step(event.step)
        others = before.positions[before.arrays["ids"] != event.id]
        assert (
            np.count_nonzero(np.linalg.norm(others - np.asarray(event.new), axis=1) <= 1.2 * bond)
            >= 3
        )
    assert len(final) == len(particle)


def test_knock_on_conserves_atoms_except_recorded_sputtering(particle):
    silicon = particle.copy()
    silicon.set_chemical_symbols(["Si"] * len(silicon))
    acquisition = Acquisition.from_scheme([-40.0, 0.0, 40.0], "sequential", dose=1000.0)
    chain = DamageChain.from_specs(["knock_on:energy=300e3,cross_section_scale=300"])
    history = chain.evolve(silicon, acquisition, np.random.default_rng(2))
    sputtered = [e for e in history.events if e.kind == "sputter"]
    assert sputtered and any(e.kind == "hop" for e in history.events)
    for step in range(acquisition.n_projections + 1):
        gone = {e.id for e in sputtered if e.step < step}
        structure = history.structure_at_step(step)
        assert len(structure) == len(silicon) - len(gone)
        assert gone.isdisjoint(structure.arrays["ids"].tolist())
    assert history.sputtered_atoms().tolist() == sorted({e.id for e in sputtered})
    # events of a projection's dose show from the next projection on
    assert np.array_equal(history.structure_at_step(0).positions, silicon.positions)

    never = DamageChain.from_specs(["knock_on:energy=300e3,cross_section_scale=300,sputter=never"])
    assert len(never.evolve(silicon, acquisition, np.random.default_rng(2)).final()) == len(silicon)


def test_knock_on_sputters_from_the_beam_exit_surface(particle):
    silicon = particle.copy()
    silicon.set_chemical_symbols(["Si"] * len(silicon))
    acquisition = Acquisition.from_scheme([0.0], dose=1000.0)  # beam along +z
    chain = DamageChain.from_specs(["knock_on:energy=300e3,cross_section_scale=5e3"])
    history = chain.evolve(silicon, acquisition, np.random.default_rng(4))
    centre_z = silicon.positions[:, 2].mean()
    kinds = {e.kind for e in history.events}
    assert kinds == {"hop", "sputter"}
    sputtered_z = np.array([e.old[2] for e in history.events if e.kind == "sputter"])
    # exit (+z) half of the particle; atoms at mid-height sit on facets that face +z
    assert np.all(sputtered_z >= centre_z) and sputtered_z.mean() > centre_z + 2.0
    assert all(np.all(np.isnan(e.new)) for e in history.events if e.kind == "sputter")


def test_history_rebuilds_dose_weighted_mean_and_runs_by_hand():
    atoms = Atoms("Pt4", positions=[[0, 0, 0], [3, 0, 0], [0, 3, 0], [0, 0, 3]])
    atoms.arrays["ids"] = np.array([10, 11, 12, 13])
    acquisition = Acquisition(angles=[-10, 0, 10], order=[0, 1, 2], dose=[1.0, 2.0, 3.0])
    nan3 = (np.nan, np.nan, np.nan)
    events = (
        DamageEvent(0, 0, 10, "hop", (0.0, 0.0, 0.0), (0.0, 0.0, -2.0), "test"),
        DamageEvent(0, 0, 11, "sputter", (3.0, 0.0, 0.0), nan3, "test"),
        DamageEvent(1, 1, 12, "sputter", (0.0, 3.0, 0.0), nan3, "test"),
    )
    history = DamageHistory(atoms, acquisition, events)
    assert history.structure_at(0).arrays["ids"].tolist() == [10, 11, 12, 13]
    assert history.structure_at(1).arrays["ids"].tolist() == [10, 12, 13]
    assert history.structure_at(1).positions[0].tolist() == [0.0, 0.0, -2.0]
    assert history.final().arrays["ids"].tolist() == [10, 13]
    mean = history.dose_weighted_mean()
    # id 11 present for 1/6 of the dose: left out; id 12 for 3/6: kept
    assert mean.arrays["ids"].tolist() == [10, 12, 13]
    np.testing.assert_allclose(mean.positions[0], [0.0, 0.0, (1 * 0 + 5 * -2.0) / 6])
    np.testing.assert_allclose(mean.arrays["presence"], [1.0, 0.5, 1.0])
    assert history.moved_atoms().tolist() == [10, 11, 12]
    assert [(s, i.tolist()) for s, i in history.runs()] == [(0, [0]), (1, [1]), (2, [2])]

    # imaging by runs puts each structure's image at its stored index
    def count_atoms(structure, angles):
        return np.full((len(angles), 2, 2), float(len(structure)))

    images = image_history(history, count_atoms)
    assert images[:, 0, 0].tolist() == [4.0, 3.0, 2.0]


# --- specs -------------------------------------------------------------------------------------


def test_parse_damage_and_canonical_specs():
    model = parse_damage("knock_on:energy=300e3,threshold_Pt=30,sputter=never,cn_bulk=8")
    assert model == KnockOn(energy=300e3, thresholds={"Pt": 30.0}, sputter="never", cn_bulk=8)
    assert parse_damage("surface_diffusion") == SurfaceDiffusion()
    chain = DamageChain.from_specs(["knock_on", "surface_diffusion:gamma=0.3"], energy=80e3)
    assert chain.models[0].energy == 80e3
    assert DamageChain.from_specs(["knock_on:energy=300e3"], energy=80e3).models[0].energy == 300e3
    assert DamageChain.from_specs(chain.specs()).models == chain.models
    for bad, name in [
        ("melting", "damage="),
        ("knock_on:voltage=3", "damage .knock_on.: unknown key .voltage."),
        ("knock_on:energy", "damage .knock_on.: energy: missing .=value."),
        ("knock_on:energy=hot", "energy="),
        ("knock_on:sputter=sometimes", "sputter="),
        ("surface_diffusion:rate=-1", "rate="),
        ("knock_on:threshold_Xx=3", "threshold_Xx"),
    ]:
        with pytest.raises(ValueError, match=name):
            parse_damage(bad)


def test_container_keeps_hops_inside(particle):
    acquisition = Acquisition.from_scheme([-30.0, 0.0, 30.0], dose=1000.0)
    centre = particle.positions.mean(axis=0)
    radius = np.linalg.norm(particle.positions - centre, axis=1).max()
    history = DamageChain.from_specs(["surface_diffusion:rate=5e-3"]).evolve(
        particle, acquisition, np.random.default_rng(3), container=(centre, radius)
    )
    assert len(history.events) > 10
    for step in range(acquisition.n_projections + 1):
        positions = history.structure_at_step(step).positions
        assert np.linalg.norm(positions - centre, axis=1).max() <= radius + 1e-9
    with pytest.raises(ValueError, match="container="):
        DamageChain.from_specs(["surface_diffusion"]).evolve(
            particle, acquisition, np.random.default_rng(3), container=(centre, -1.0)
        )
