"""Physics and contract tests of simgen.structures (nanoparticle models and model files)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from simgen.physics.geometry import volume_center
from simgen.structures import (
    MORPHOLOGIES,
    Composition,
    build_particle,
    lattice_constant,
    load_model,
    parse_composition,
    particle_diameter,
    place_in_volume,
    random_orientation,
    rotation_matrix,
    write_model,
)
from tests.external import EXTERNAL  # noqa: E402

EPB = EXTERNAL / "structures" / "pdpt_core_shell_EPB.xyz"
ASI = EXTERNAL / "paet_asi2nm" / "ground_truth_208_Si.txt"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def coordination(positions: np.ndarray, bond: float, cutoff: float = 1.2) -> np.ndarray:
    return cKDTree(positions).query_ball_point(positions, cutoff * bond, return_length=True) - 1


def symbols(atoms) -> np.ndarray:
    return np.asarray(atoms.get_chemical_symbols())


# ------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("morphology", ["icosahedron", "cuboctahedron"])
def test_magic_numbers(morphology):
    counts = [
        len(build_particle(morphology, "Pt", None, rng=rng(), shells=k)) for k in (2, 3, 4, 5)
    ]
    assert counts == [13, 55, 147, 309]


def test_truncated_octahedron_magic_numbers():
    counts = [
        len(build_particle("truncated_octahedron", "Au", None, rng=rng(), shells=k)) for k in (2, 3)
    ]
    assert counts == [38, 201]


@pytest.mark.parametrize("morphology", MORPHOLOGIES)
@pytest.mark.parametrize("size_nm", [1.6, 2.6])
def test_size_reproduces_diameter(morphology, size_nm):
    atoms = build_particle(morphology, "Pt", size_nm, rng=rng(3))
    diameter_nm = particle_diameter(atoms) / 10.0
    assert abs(diameter_nm - size_nm) <= 0.3 * size_nm, (morphology, diameter_nm)
    # a close-packed particle has the density of Pt: N ≈ ρV within a factor 2 of the bounding sphere
    assert len(atoms) < 4 / 3.92**3 * math.pi / 6 * (particle_diameter(atoms) + 2.8) ** 3


def test_particles_are_centred_and_free():
    atoms = build_particle("random_fcc", "Fe0.5Pt0.5", 2.0, rng=rng(1), thermal_sigma=0.1)
    np.testing.assert_allclose(atoms.get_center_of_mass(), 0.0, atol=1e-9)
    assert not atoms.pbc.any()


def test_fcc_nearest_neighbour_distance_follows_vegard():
    a, _ = lattice_constant("Fe0.5Pt0.5")
    fe_fcc = 2.87 * 2 ** (1 / 3)  # bcc Fe at the same atomic volume
    assert a == pytest.approx(0.5 * (fe_fcc + 3.92))
    atoms = build_particle(
        "cuboctahedron", "Fe0.5Pt0.5", None, rng=rng(), shells=3, orientation="none"
    )
    distance, _ = cKDTree(atoms.positions).query(atoms.positions, k=2)
    np.testing.assert_allclose(distance[:, 1], a / math.sqrt(2), rtol=1e-9)


def test_bcc_ellipsoid():
    atoms = build_particle(
        "ellipsoid", "Fe", 2.4, rng=rng(), orientation="none", lattice="bcc", aspect=(1, 1, 0.5)
    )
    d_nn = 2.87 * math.sqrt(3) / 2
    distance, _ = cKDTree(atoms.positions).query(atoms.positions, k=2)
    np.testing.assert_allclose(distance[:, 1], d_nn, rtol=1e-9)
    assert coordination(atoms.positions, d_nn, 1.08).max() == 8
    extent = np.ptp(atoms.positions, axis=0)
    assert extent[2] / extent[0] == pytest.approx(0.5, abs=0.15)


def test_decahedron_options_and_marks_reentrance():
    ino = build_particle("decahedron", "Pt", None, rng=rng(), p=4, q=2, r=0, orientation="none")
    marks = build_particle(
        "decahedron", "Pt", None, rng=rng(), p=4, q=2, marks=1, orientation="none"
    )
    assert len(ino) != len(marks)
    # five-fold twinned: interior atoms are still 12-coordinated (close packed)
    cn = coordination(marks.positions, 3.92 / math.sqrt(2))
    assert cn.max() == 12


def test_wulff_exposes_111_and_100_facets():
    atoms = build_particle("wulff", "Pt", None, rng=rng(), n_atoms=600, orientation="none")
    p = atoms.positions
    # extent along <111> (face normal) is smaller than along <100> by the γ ratio: h100/h111 = 1.15
    h100 = np.max(p @ np.array([1, 0, 0]))
    h111 = np.max(p @ (np.ones(3) / math.sqrt(3)))
    assert 1.0 < h100 / h111 < 1.35
    # surface energies as written in YAML ("hkl" strings); a costlier (100) shrinks those facets
    octahedral = build_particle(
        "wulff",
        "Pt",
        None,
        rng=rng(),
        n_atoms=600,
        orientation="none",
        surface_energies={"111": 1.0, "100": 1.6},
    )
    q = octahedral.positions
    assert np.max(q[:, 0]) / np.max(q @ (np.ones(3) / math.sqrt(3))) > 1.4


def test_amorphous_minimum_distance_and_density():
    atoms = build_particle("amorphous", "Pt", 2.0, rng=rng(5), min_distance=2.4)
    distance, _ = cKDTree(atoms.positions).query(atoms.positions, k=2)
    assert distance[:, 1].min() >= 2.4 - 1e-9
    # nearest-neighbour distances are spread, not all at contact
    assert np.percentile(distance[:, 1], 90) > 2.45
    target_density = 0.98 * 4 / 3.92**3
    assert len(atoms) / (math.pi / 6 * 20.0**3) == pytest.approx(target_density, rel=0.02)
    assert particle_diameter(atoms) <= 20.0 * 1.03  # packed in a 20 Å sphere, re-centred on its COM
    # not a crystal: few atoms have 12 neighbours within 1.2 d_nn
    assert np.mean(coordination(atoms.positions, 2.77) == 12) < 0.2


def test_amorphous_rejects_impossible_packing():
    with pytest.raises(ValueError, match="min_distance"):
        build_particle("amorphous", "Pt", 1.5, rng=rng(), min_distance=3.2)


# Regular fcc polyhedra with `length` atoms per edge (m = length - 1 nearest-neighbour steps):
# octahedron n(2n² + 1)/3 with n = length, cube 4m³ + 6m² + 3m + 1 (m unit cells: (m+1)³ corner
# sites + 3m²(m+1) face-centre sites), tetrahedron n(n + 1)(n + 2)/6.
POLYHEDRON_COUNTS = {
    "octahedron": [6, 19, 44, 85, 146],
    "cube": [14, 63, 172, 365],
    "tetrahedron": [4, 10, 20, 35],
}


@pytest.mark.parametrize("morphology", sorted(POLYHEDRON_COUNTS))
def test_fcc_polyhedra_magic_numbers(morphology):
    expected = POLYHEDRON_COUNTS[morphology]
    lengths = range(2, 2 + len(expected))
    counts = [len(build_particle(morphology, "Pt", None, rng=rng(), length=n)) for n in lengths]
    assert counts == expected
    formula = {
        "octahedron": lambda n: n * (2 * n * n + 1) // 3,
        "cube": lambda n: 4 * (n - 1) ** 3 + 6 * (n - 1) ** 2 + 3 * (n - 1) + 1,
        "tetrahedron": lambda n: n * (n + 1) * (n + 2) // 6,
    }[morphology]
    assert counts == [formula(n) for n in lengths]


@pytest.mark.parametrize(
    ("morphology", "vertices", "vertex_coordination"),
    [("octahedron", 6, 4), ("cube", 8, 3), ("tetrahedron", 4, 3)],
)
def test_fcc_polyhedra_are_single_crystals_with_their_facets(
    morphology, vertices, vertex_coordination
):
    a = 3.92
    atoms = build_particle(morphology, "Pt", None, rng=rng(), length=5, orientation="none")
    p = atoms.positions
    distance, _ = cKDTree(p).query(p, k=2)
    np.testing.assert_allclose(distance[:, 1], a / math.sqrt(2), rtol=1e-9)
    cn = coordination(p, a / math.sqrt(2))
    assert cn.max() == 12
    assert np.sum(cn == cn.min()) == vertices and cn.min() == vertex_coordination
    m = 4  # nearest-neighbour steps (octahedron, tetrahedron) or unit cells (cube) per edge
    if morphology == "cube":  # {100} faces: a cube of side m·a with 2m + 1 (100) planes
        np.testing.assert_allclose(np.ptp(p, axis=0), [m * a] * 3, atol=1e-9)
        assert len(np.unique(np.round(p[:, 0], 6))) == 2 * m + 1
        return
    # {111} faces: every atom inside the four (eight) planes, each holding a full triangle
    normals = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3)
    if morphology == "octahedron":
        normals = np.concatenate([normals, -normals])
    height = (p @ normals.T).max(axis=0)
    np.testing.assert_allclose(height, height[0], atol=1e-9)
    on_face = np.isclose(p @ normals.T, height, atol=1e-6).sum(axis=0)
    assert np.all(on_face == (m + 1) * (m + 2) // 2)  # a triangle of m + 1 atoms per edge


def test_marks_decahedron_magic_numbers_and_reentrance():
    # Marks decahedra (Marks, Rep. Prog. Phys. 57, 603 (1994)) with (p, q, r=1): 75 atoms
    # for (2, 2), the Lennard-Jones global minimum LJ75; 101, 146 and 192 for the next ones
    counts = [
        len(build_particle("marks_decahedron", "Pt", None, rng=rng(), p=p, q=q))
        for p, q in [(2, 2), (2, 3), (3, 2), (3, 3)]
    ]
    assert counts == [75, 101, 146, 192]
    # the default (q = max(2, ceil(p/2)), r = 1) differs from the Ino default at every p
    for p in (2, 3, 4):
        marks = build_particle("marks_decahedron", "Pt", None, rng=rng(), p=p, orientation="none")
        ino = build_particle("decahedron", "Pt", None, rng=rng(), p=p, orientation="none")
        assert len(marks) != len(ino)
    assert [
        len(build_particle("marks_decahedron", "Pt", None, rng=rng(), p=p)) for p in (2, 3, 4)
    ] == [75, 146, 247]
    # r = 1 equals the decahedron with marks=1
    same = build_particle("decahedron", "Pt", None, rng=rng(), p=3, q=2, r=1, orientation="none")
    np.testing.assert_allclose(
        build_particle(
            "marks_decahedron", "Pt", None, rng=rng(), p=3, orientation="none"
        ).positions,
        same.positions,
        atol=1e-9,
    )

    # the re-entrant notch, seen down the five-fold axis (z): an Ino decahedron's outermost atom
    # columns are the 5 pentagon corners; a Marks notch replaces each by 2 flanking columns
    def outermost_columns(atoms):
        columns = np.unique(np.round(atoms.positions[:, :2], 4), axis=0)
        radius = np.linalg.norm(columns, axis=1)
        return int(np.sum(np.isclose(radius, radius.max(), atol=1e-3)))

    ino = build_particle("decahedron", "Pt", None, rng=rng(), p=3, q=2, orientation="none")
    assert outermost_columns(ino) == 5
    assert outermost_columns(same) == 10
    assert coordination(same.positions, 3.92 / math.sqrt(2)).max() == 12


@pytest.mark.parametrize(
    ("morphology", "step"),
    [("octahedron", 1.0), ("cube", math.sqrt(3)), ("tetrahedron", math.sqrt(3) / 2)],
)
@pytest.mark.parametrize("composition", ["Pt", "Au"])
def test_fcc_polyhedra_size_is_within_half_a_step(morphology, step, composition):
    a, _ = lattice_constant(composition)
    for size_nm in (1.2, 1.5, 1.9, 2.6):
        atoms = build_particle(morphology, composition, size_nm, rng=rng(), orientation="none")
        diameter = particle_diameter(atoms)
        assert abs(diameter - 10 * size_nm) <= step * a / 2 + 1e-9, (size_nm, diameter)
        # the diameter is a whole number of steps: (length - 1) · step · a
        assert diameter / (step * a) == pytest.approx(round(diameter / (step * a)), abs=1e-9)


def test_marks_decahedron_size_picks_the_closest_p():
    target = 19.0
    atoms = build_particle("marks_decahedron", "Pt", target / 10, rng=rng(), orientation="none")
    errors = {
        p: abs(
            particle_diameter(build_particle("marks_decahedron", "Pt", None, rng=rng(), p=p))
            - target
        )
        for p in range(2, 7)
    }
    assert abs(particle_diameter(atoms) - target) == pytest.approx(min(errors.values()))


PANN_COMPOSITIONS = [
    "Pt",
    "Au",
    "Fe0.5Pt0.5",
    "L10:FePt",
    "L12:Pt3Co",
    "core-shell:Ni@Pt",
    "core-shell:Pd@Pt",
    "Au0.5Pd0.5",
    "hea:Fe,Co,Ni,Cu,Pt",
]


@pytest.mark.parametrize("morphology", ["octahedron", "cube", "tetrahedron", "marks_decahedron"])
def test_new_shapes_build_every_composition(morphology, caplog):
    for text in PANN_COMPOSITIONS:
        caplog.clear()
        with caplog.at_level("INFO", logger="simgen.structures"):
            atoms = build_particle(morphology, text, 1.9, rng=rng(1), orientation="none")
        comp = parse_composition(text)
        el = symbols(atoms)
        assert set(el) == set(comp.elements), text
        assert particle_diameter(atoms) + 2.0 <= 64 * 0.4  # fits the pann-benchmark volume
        twinned = morphology == "marks_decahedron"
        assert ("random alloy" in caplog.text) == (twinned and comp.is_ordered), text
        if comp.kind == "L10" and not twinned:  # (001) planes of one element each
            layer = np.rint(atoms.positions[:, 2] / (lattice_constant(comp)[0] / 2)).astype(int)
            assert all(len(set(el[layer == k])) == 1 for k in np.unique(layer))
            assert len(set(el[layer == layer[0]]) | set(el[layer == layer[0] + 1])) == 2
        if comp.kind == "L12" and not twinned:  # Co has only Pt nearest neighbours
            a, _ = lattice_constant(comp)
            tree = cKDTree(atoms.positions)
            for i in np.flatnonzero(el == "Co"):
                neighbours = tree.query_ball_point(atoms.positions[i], 1.2 * a / math.sqrt(2))
                assert all(el[j] == "Pt" for j in neighbours if j != i)


@pytest.mark.parametrize("morphology", ["octahedron", "cube", "tetrahedron", "marks_decahedron"])
def test_new_shapes_disorder_pose_and_reproducibility(morphology):
    kwargs = dict(thermal_sigma=0.05, vacancy_fraction=0.05)
    first = build_particle(morphology, "hea:Fe,Co,Ni,Cu,Pt", 1.6, rng=rng(42), **kwargs)
    second = build_particle(morphology, "hea:Fe,Co,Ni,Cu,Pt", 1.6, rng=rng(42), **kwargs)
    third = build_particle(morphology, "hea:Fe,Co,Ni,Cu,Pt", 1.6, rng=rng(43), **kwargs)
    np.testing.assert_array_equal(first.positions, second.positions)
    np.testing.assert_array_equal(first.numbers, second.numbers)
    assert not np.array_equal(first.positions, third.positions)
    ideal = build_particle(morphology, "hea:Fe,Co,Ni,Cu,Pt", 1.6, rng=rng(), orientation="none")
    assert len(first) == len(ideal) - round(0.05 * len(ideal))
    # thermal displacements move atoms off the ideal sites
    d_ideal = cKDTree(ideal.positions).query(ideal.positions, k=2)[0][:, 1]
    d_first = cKDTree(first.positions).query(first.positions, k=2)[0][:, 1]
    assert np.std(d_first) > 10 * np.std(d_ideal) + 0.01
    np.testing.assert_allclose(first.get_center_of_mass(), 0.0, atol=1e-9)
    # an Euler rotation preserves the ideal shape's distances
    turned = build_particle(
        morphology, "hea:Fe,Co,Ni,Cu,Pt", 1.6, rng=rng(), orientation=(30.0, 50.0, 70.0)
    )
    np.testing.assert_allclose(pdist(turned.positions), pdist(ideal.positions), atol=1e-9)


# ------------------------------------------------------------------------------- chemistry


def test_random_alloy_fractions_and_randomness():
    atoms = build_particle("sphere", "alloy:Fe=0.3,Pt=0.7", 3.0, rng=rng(7), orientation="none")
    counts = Counter(atoms.get_chemical_symbols())
    n = len(atoms)
    assert abs(counts["Fe"] - 0.3 * n) <= 1
    # spatially random: the Fe fraction of the outer half matches the inner half within 4 σ
    r = np.linalg.norm(atoms.positions, axis=1)
    outer = r > np.median(r)
    fe = symbols(atoms) == "Fe"
    sigma = math.sqrt(0.3 * 0.7 / (n / 2))
    assert abs(fe[outer].mean() - fe[~outer].mean()) < 4 * sigma * math.sqrt(2)
    other = build_particle("sphere", "alloy:Fe=0.3,Pt=0.7", 3.0, rng=rng(8), orientation="none")
    assert np.any(symbols(other) != symbols(atoms))


def test_compact_alloy_formula_equals_explicit():
    assert parse_composition("Fe0.5Pt0.5") == parse_composition("alloy:Pt=0.5,Fe=0.5")


def test_l10_fept_alternates_001_planes_and_is_exactly_equimolar():
    a, _ = lattice_constant("L10:FePt")
    atoms = build_particle("sphere", "L10:FePt", 2.5, rng=rng(), orientation="none")
    counts = Counter(atoms.get_chemical_symbols())
    assert counts["Fe"] == counts["Pt"]
    p, el = atoms.positions, symbols(atoms)
    pairs = cKDTree(p).query_pairs(1.1 * a / math.sqrt(2), output_type="ndarray")
    same_plane = np.abs(p[pairs[:, 0], 2] - p[pairs[:, 1], 2]) < 1e-6
    same_element = el[pairs[:, 0]] == el[pairs[:, 1]]
    assert same_plane.sum() > 100 and (~same_plane).sum() > 100
    assert np.all(same_element[same_plane])
    assert not np.any(same_element[~same_plane])


def test_l10_on_cuboctahedron_is_ordered_and_near_equimolar():
    atoms = build_particle("cuboctahedron", "L10:CoPt", 2.5, rng=rng(), orientation="none")
    el = symbols(atoms)
    layer = np.rint(atoms.positions[:, 2] / (lattice_constant("L10:CoPt")[0] / 2)).astype(int)
    for k in np.unique(layer):
        assert len(set(el[layer == k])) == 1
    assert np.mean(el == "Co") == pytest.approx(0.5, abs=0.05)


def test_l12_pt3co_is_3_to_1_with_co_surrounded_by_pt():
    a, _ = lattice_constant("L12:Pt3Co")
    atoms = build_particle("cuboctahedron", "L12:Pt3Co", 2.5, rng=rng(), orientation="none")
    el = symbols(atoms)
    assert np.mean(el == "Co") == pytest.approx(0.25, abs=0.03)
    tree = cKDTree(atoms.positions)
    neighbours = tree.query_ball_point(atoms.positions, 1.2 * a / math.sqrt(2))
    for i in np.flatnonzero(el == "Co"):
        assert all(el[j] == "Pt" for j in neighbours[i] if j != i)
    for i in np.flatnonzero(el == "Pt"):
        if len(neighbours[i]) == 13:  # a bulk Pt atom: 4 Co and 8 Pt neighbours
            assert sum(el[j] == "Co" for j in neighbours[i]) == 4


def test_ordered_phase_on_twinned_particle_falls_back_to_random_alloy(caplog):
    with caplog.at_level("INFO", logger="simgen.structures"):
        atoms = build_particle("icosahedron", "L12:Pt3Co", None, rng=rng(), shells=5)
    assert "random alloy" in caplog.text
    assert Counter(atoms.get_chemical_symbols())["Co"] == round(0.25 * 309)


@pytest.mark.parametrize(
    "morphology",
    [
        "cuboctahedron",
        "sphere",
        "decahedron",
        "random_fcc",
        "octahedron",
        "cube",
        "tetrahedron",
        "marks_decahedron",
    ],
)
def test_core_shell_monolayer_is_exactly_the_undercoordinated_atoms(morphology):
    atoms = build_particle(morphology, "core-shell:Pd@Pt", 2.5, rng=rng(2), orientation="none")
    el = symbols(atoms)
    cn = coordination(atoms.positions, 3.89 / math.sqrt(2))
    np.testing.assert_array_equal(el == "Pt", cn < 12)
    assert np.all(cn[el == "Pd"] == 12)  # the core is fully enclosed


def test_core_shell_thickness_options():
    one = build_particle("cuboctahedron", "core-shell:Pd@Pt", None, rng=rng(), shells=5)
    two = build_particle("cuboctahedron", "core-shell:Pd@Pt,shell=2ml", None, rng=rng(), shells=5)
    # shells of a cuboctahedron: 309 - 147 = 162 outer atoms, 309 - 55 = 254 in two layers
    assert Counter(one.get_chemical_symbols())["Pt"] == 162
    assert Counter(two.get_chemical_symbols())["Pt"] == 254
    # thickness in Å: layers of a cuboctahedron are d_nn apart along its radial directions
    thin = build_particle(
        "cuboctahedron", "core-shell:Pd@Pt", None, rng=rng(), shells=5, shell_thickness=0.5
    )
    thick = build_particle(
        "cuboctahedron", "core-shell:Pd@Pt", None, rng=rng(), shells=5, shell_thickness=3.0
    )
    assert Counter(thin.get_chemical_symbols())["Pt"] == 162
    assert Counter(thick.get_chemical_symbols())["Pt"] == 254


def test_core_shell_amorphous_core_is_inside():
    atoms = build_particle("amorphous", "core-shell:Pd@Pt", 2.0, rng=rng(4), orientation="none")
    el, r = symbols(atoms), np.linalg.norm(atoms.positions, axis=1)
    assert r[el == "Pd"].max() < r[el == "Pt"].max()
    assert r[el == "Pd"].mean() < r[el == "Pt"].mean() - 3.0
    assert set(el[r > r.max() - 1.0]) == {"Pt"}


def test_high_entropy_alloy_five_elements():
    comp = parse_composition("hea:Fe,Co,Ni,Cu,Pt")
    assert comp.elements == ("Co", "Cu", "Fe", "Ni", "Pt")
    atoms = build_particle("truncated_octahedron", comp, None, rng=rng(), shells=3)
    counts = Counter(atoms.get_chemical_symbols())
    assert set(counts) == set(comp.elements)
    assert max(counts.values()) - min(counts.values()) <= 1
    weighted = parse_composition("hea:Fe=0.4,Co=0.15,Ni=0.15,Cu=0.15,Pt=0.15")
    assert weighted.fraction("Fe") == 0.4


@pytest.mark.parametrize(
    "text",
    [
        "Pt",
        "Fe0.5Pt0.5",
        "alloy:Fe=0.3,Pt=0.7",
        "L10:FePt",
        "L12:Pt3Co",
        "L12:CoPt3",
        "core-shell:Pd@Pt",
        "core-shell:Pd@Pt,shell=2ml",
        "core-shell:Pd@Pt,shell=4.5A",
        "hea:Fe,Co,Ni,Cu,Pt",
        "hea:Fe=0.4,Co=0.3,Ni=0.3",
    ],
)
def test_composition_label_round_trips(text):
    comp = parse_composition(text)
    assert isinstance(comp, Composition)
    assert parse_composition(comp.label) == comp
    assert list(comp.elements) == sorted(comp.elements)


def test_l12_label_is_canonical():
    assert parse_composition("L12:CoPt3").label == "L12:Pt3Co"
    assert parse_composition("L12:Pt3Co").fraction("Co") == 0.25


# ------------------------------------------------------------------------- disorder and pose


def test_thermal_sigma_is_measured_in_the_displacements():
    ideal = build_particle("cuboctahedron", "Pt", None, rng=rng(11), shells=9, orientation="none")
    shaken = build_particle(
        "cuboctahedron", "Pt", None, rng=rng(11), shells=9, orientation="none", thermal_sigma=0.08
    )
    displacement = shaken.positions - ideal.positions
    assert displacement.std(axis=0) == pytest.approx([0.08] * 3, rel=0.06)
    # the Debye–Waller B factor is the same thing: B = 8π²σ²
    b = build_particle(
        "cuboctahedron",
        "Pt",
        None,
        rng=rng(11),
        shells=9,
        orientation="none",
        b_factor=8 * math.pi**2 * 0.08**2,
    )
    np.testing.assert_allclose(b.positions, shaken.positions, atol=1e-12)


def test_vacancy_fraction_removes_that_many_atoms():
    atoms = build_particle("cuboctahedron", "Pt", None, rng=rng(), shells=5, vacancy_fraction=0.1)
    assert len(atoms) == 309 - round(0.1 * 309)
    distance, _ = cKDTree(atoms.positions).query(atoms.positions, k=2)
    np.testing.assert_allclose(
        distance[:, 1], 3.92 / math.sqrt(2), rtol=1e-9
    )  # still lattice sites


def test_same_seed_same_particle_different_seed_different():
    kwargs = dict(thermal_sigma=0.05, vacancy_fraction=0.05, n_spheres=3)
    first = build_particle("random_fcc", "Fe0.3Pt0.7", 2.0, rng=rng(42), **kwargs)
    second = build_particle("random_fcc", "Fe0.3Pt0.7", 2.0, rng=rng(42), **kwargs)
    third = build_particle("random_fcc", "Fe0.3Pt0.7", 2.0, rng=rng(43), **kwargs)
    np.testing.assert_array_equal(first.positions, second.positions)
    np.testing.assert_array_equal(first.numbers, second.numbers)
    assert len(first) != len(third) or not np.array_equal(first.positions, third.positions)
    amorphous = [build_particle("amorphous", "Si", 1.5, rng=rng(9)).positions for _ in range(2)]
    np.testing.assert_array_equal(*amorphous)


def test_random_orientation_preserves_distances_and_centre():
    atoms = build_particle("decahedron", "Pt", 2.0, rng=rng(), orientation="none")
    atoms.positions += [3.0, -2.0, 1.0]
    rotated = random_orientation(atoms, rng(5))
    np.testing.assert_allclose(pdist(rotated.positions), pdist(atoms.positions), atol=1e-9)
    np.testing.assert_allclose(rotated.get_center_of_mass(), atoms.get_center_of_mass(), atol=1e-9)
    assert not np.allclose(rotated.positions, atoms.positions)
    assert np.allclose(atoms.positions.mean(0), [3.0, -2.0, 1.0], atol=1e-9)  # input untouched


def test_random_rotations_are_uniform_and_proper():
    generator = rng(0)
    matrices = np.array([rotation_matrix("random", generator) for _ in range(2000)])
    np.testing.assert_allclose(np.linalg.det(matrices), 1.0, atol=1e-12)
    # a uniformly rotated unit vector has mean 0 and second moment I/3
    v = matrices @ np.array([0.0, 0.0, 1.0])
    assert np.abs(v.mean(axis=0)).max() < 0.06
    np.testing.assert_allclose(v.T @ v / len(v), np.eye(3) / 3, atol=0.03)


def test_euler_orientation():
    plain = build_particle("cuboctahedron", "Pt", None, rng=rng(), shells=3, orientation="none")
    turned = build_particle(
        "cuboctahedron", "Pt", None, rng=rng(), shells=3, orientation=(90.0, 0.0, 0.0)
    )
    expected = plain.positions @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T
    np.testing.assert_allclose(turned.positions, expected, atol=1e-9)


def test_place_in_volume_centres_and_checks_fit():
    atoms = build_particle("wulff", "Pt", 1.5, rng=rng(1))
    size, sampling = 64, 0.5
    placed = place_in_volume(atoms, size, sampling)
    np.testing.assert_allclose(
        placed.get_center_of_mass(), [volume_center(size, sampling)] * 3, atol=1e-9
    )
    np.testing.assert_allclose(pdist(placed.positions), pdist(atoms.positions), atol=1e-9)
    diameter = particle_diameter(atoms)
    too_small = int((diameter + 2.0) / sampling)  # just below the required edge
    with pytest.raises(ValueError, match="does not fit"):
        place_in_volume(atoms, too_small, sampling)
    place_in_volume(atoms, too_small + 1, sampling)


# ------------------------------------------------------------------------------------- files


@pytest.mark.skipif(not EPB.is_file(), reason="external EPB model not present")
def test_epb_core_shell_model_loads():
    atoms = load_model(EPB)
    counts = Counter(atoms.get_chemical_symbols())
    assert len(atoms) == 5377
    assert counts == {"Pt": 4005, "Pd": 1372}
    r = np.linalg.norm(atoms.positions - atoms.get_center_of_mass(), axis=1)
    el = symbols(atoms)
    assert r[el == "Pd"].mean() < r[el == "Pt"].mean()  # a Pd core in a Pt shell


@pytest.mark.skipif(not ASI.is_file(), reason="external aSi ground truth not present")
def test_aet_text_model_loads():
    atoms = load_model(ASI, elements=["Si"])
    assert len(atoms) == 208 and set(atoms.get_chemical_symbols()) == {"Si"}
    assert particle_diameter(atoms) / 10 == pytest.approx(2.0, abs=0.2)
    with pytest.raises(ValueError, match="elements"):
        load_model(ASI)


def test_npy_and_mat_round_trip(tmp_path):
    import h5py
    from scipy.io import savemat

    atoms = build_particle("sphere", "Fe0.5Pt0.5", 1.2, rng=rng(), orientation="none")
    elements = ["Fe", "Pt"]
    types = np.array([elements.index(s) + 1 for s in atoms.get_chemical_symbols()])
    np.save(tmp_path / "model.npy", np.vstack([types, atoms.positions.T]))
    np.save(tmp_path / "positions.npy", atoms.positions)
    np.save(tmp_path / "types.npy", types)
    savemat(tmp_path / "model.mat", {"model": atoms.positions.T, "atomtype": types[None, :]})
    savemat(tmp_path / "other.mat", {"xyz_final": atoms.positions.T, "types": types})
    # MATLAB v7.3: HDF5 behind a 512-byte header, arrays stored transposed (N×3)
    v73 = tmp_path / "v73.mat"
    with h5py.File(v73, "w", userblock_size=512) as handle:
        handle["model"] = atoms.positions
        handle["atomtype"] = types[:, None].astype(float)
    with open(v73, "r+b") as handle:
        handle.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + b"\x00" * 8 + b"\x00\x02IM"
        )
    loaded = [
        load_model(tmp_path / "model.npy", elements=elements),
        load_model(tmp_path / "positions.npy", elements="Fe,Pt", types=tmp_path / "types.npy"),
        load_model(tmp_path / "model.mat", elements=elements),
        load_model(tmp_path / "other.mat", elements=elements, key="xyz_final"),
        load_model(v73, elements=elements),
    ]
    for model in loaded:
        np.testing.assert_allclose(model.positions, atoms.positions, atol=1e-12)
        assert model.get_chemical_symbols() == atoms.get_chemical_symbols()
    with pytest.raises(ValueError, match="key='missing'"):
        load_model(tmp_path / "model.mat", elements=elements, key="missing")
    with pytest.raises(ValueError, match="species indices"):
        load_model(tmp_path / "model.npy", elements=["Fe"])


def test_write_model_round_trip(tmp_path):
    atoms = build_particle("icosahedron", "core-shell:Pd@Pt", None, rng=rng(), shells=3)
    write_model(atoms, tmp_path / "particle.xyz")
    back = load_model(tmp_path / "particle.xyz")
    np.testing.assert_allclose(back.positions, atoms.positions, atol=1e-6)
    assert back.get_chemical_symbols() == atoms.get_chemical_symbols()


def test_unreadable_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.xyz"):
        load_model(tmp_path / "nowhere.xyz")
    bad = tmp_path / "garbage.cif"
    bad.write_text("this is not a crystal\n")
    with pytest.raises(ValueError, match="garbage.cif"):
        load_model(bad)


# --------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("Xx", "unknown element 'Xx'"),
        ("alloy:Fe=0.3,Qq=0.7", "unknown element 'Qq'"),
        ("alloy:Fe=0.3,Pt=0.6", r"Fe=0.3, Pt=0.6 sum to 0.9"),
        ("Fe0.5Pt0.6", "sum to 1.1"),
        ("FePt", "ambiguous"),
        ("L10:Pt3Co", "L10 is 1:1"),
        ("L12:FePt", "L12 is A3B"),
        ("core-shell:PdPt", "CORE@SHELL"),
        ("hea:Fe,Co,Ni,Cu,Pt,Au", "3 to 5 elements"),
        ("spinel:Fe3O4", "unknown kind"),
        ("", "composition="),
    ],
)
def test_bad_compositions(text, match):
    with pytest.raises(ValueError, match=match):
        parse_composition(text)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("pyramid", "Pt", 2.0), {}, "morphology='pyramid'"),
        (("cube", "Pt", 2.0), {"length": 1}, "length=1"),
        (("marks_decahedron", "Pt", 2.0), {"r": 0}, "r=0"),
        (("octahedron", "Pt", 2.0), {"shells": 3}, "shells=3: not an option of octahedron"),
        (("sphere", "Pt", -1.0), {}, "size_nm=-1.0"),
        (("sphere", "Pt", None), {}, "size_nm=None"),
        (("sphere", "Pt", 2.0), {"thermal_sigma": -0.1}, "thermal_sigma=-0.1"),
        (("sphere", "Pt", 2.0), {"vacancy_fraction": 1.2}, "vacancy_fraction=1.2"),
        (("sphere", "Pt", 2.0), {"orientation": "sideways"}, "orientation='sideways'"),
        (("sphere", "Pt", 2.0), {"lattice": "diamond"}, "lattice='diamond'"),
        (("sphere", "Pt", 2.0), {"shells": 3}, "shells=3: not an option of sphere"),
        (("icosahedron", "Pt", 2.0), {"shells": 0}, "shells=0"),
        (("sphere", "Pt", 2.0), {"b_factor": 0.5, "thermal_sigma": 0.1}, "b_factor=0.5"),
        (("sphere", "Pt", 2.0), {"rng": 3}, "rng=3"),
    ],
)
def test_bad_particle_arguments(args, kwargs, match):
    kwargs = {"rng": rng(), **kwargs}
    with pytest.raises(ValueError, match=match):
        build_particle(*args, **kwargs)


def test_bad_placement_arguments():
    atoms = build_particle("cuboctahedron", "Pt", None, rng=rng(), shells=2)
    for args, match in [
        ((0, 0.5), "size=0"),
        ((32, -1.0), "sampling=-1.0"),
        ((32, 0.5, -2.0), "margin=-2.0"),
    ]:
        with pytest.raises(ValueError, match=match):
            place_in_volume(atoms, *args)


# ------------------------------------------------------------------- model files, one reader each


def _write_matlab_v73(path, arrays: dict) -> None:
    """Write ``arrays`` as MATLAB 7.3 does: HDF5 after a 512-byte header, column-major.

    MATLAB stores an M×N array in column-major order, so HDF5 (row-major) holds its transpose.
    """
    import h5py

    with h5py.File(path, "w", userblock_size=512) as handle:
        for name, value in arrays.items():
            handle[name] = np.asarray(value).T
            handle[name].attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as handle:
        handle.write(
            b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + b"\x00" * 8 + b"\x00\x02IM"
        )


def test_mat_v73_reads_in_matlab_shape_in_both_readers(tmp_path):
    """A 3×3 model (three atoms) is the case where a missing transpose swaps x, y, z with atoms."""
    from simgen.importer import read_array
    from simgen.structures import read_mat

    positions = np.array([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0], [20.0, 21.0, 22.0]])  # atoms × xyz
    model = positions.T  # MATLAB convention: 3×N, rows x, y, z
    path = tmp_path / "three.mat"
    _write_matlab_v73(path, {"model": model, "atomtype": [[1, 2, 2]]})
    assert read_mat(path)["model"].tolist() == model.tolist()
    atoms = load_model(path, elements=["Fe", "Pt"])
    np.testing.assert_array_equal(atoms.positions, positions)
    assert atoms.get_chemical_symbols() == ["Fe", "Pt", "Pt"]
    # The importer reads tilt series through the same reader: a 2×3×4 MATLAB array stays 2×3×4.
    stack = np.arange(24.0).reshape(2, 3, 4)
    _write_matlab_v73(tmp_path / "stack.mat", {"stack": stack})
    np.testing.assert_array_equal(read_array(tmp_path / "stack.mat"), stack)


def test_xyz_count_line_must_match_the_atom_lines(tmp_path):
    short = tmp_path / "short.xyz"
    short.write_text("5\ncomment\nPt 0 0 0\nPt 2 0 0\nPt 0 2 0\n")
    with pytest.raises(ValueError, match=r"short.xyz.*says 5 atoms but 3 atom lines follow"):
        load_model(short)
    long = tmp_path / "long.xyz"
    long.write_text("2\ncomment\nPt 0 0 0\nPt 2 0 0\nPt 0 2 0\n")
    with pytest.raises(ValueError, match=r"long.xyz.*line 5 'Pt 0 2 0'"):
        load_model(long)


def test_unknown_element_in_a_model_file_is_one_line(tmp_path):
    path = tmp_path / "bad.xyz"
    path.write_text("2\n\nPt 0 0 0\nXx 2 0 0\n")
    with pytest.raises(ValueError, match=r"bad.xyz.*unknown element 'Xx'") as error:
        load_model(path)
    assert "\n" not in str(error.value)
    table = tmp_path / "bad.txt"
    table.write_text("Pt 0 0 0\nQq 2 0 0\n")
    with pytest.raises(ValueError, match=r"bad.txt.*unknown element 'Qq'"):
        load_model(table)


def test_text_model_with_element_symbols(tmp_path):
    path = tmp_path / "truth.txt"
    path.write_text("% AET model\nPt 0.0 0.0 0.0\nFe 1.5 2.5 -3.0  # a comment\n")
    atoms = load_model(path)
    assert atoms.get_chemical_symbols() == ["Pt", "Fe"]
    np.testing.assert_array_equal(atoms.positions, [[0, 0, 0], [1.5, 2.5, -3.0]])
    numeric = tmp_path / "numeric.txt"
    numeric.write_text("1 0.0 0.0 0.0\n2 1.5 2.5 -3.0\n")
    assert load_model(numeric, elements="Pt,Fe").get_chemical_symbols() == ["Pt", "Fe"]


@pytest.mark.parametrize("name", ["nan.xyz", "nan.txt", "nan.npy"])
def test_nan_coordinates_are_refused(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 1.0]]))
    elif name.endswith(".txt"):
        path.write_text("Pt 0 0 0\nPt nan 1 1\n")
    else:
        path.write_text("2\n\nPt 0 0 0\nPt nan 1 1\n")
    with pytest.raises(
        ValueError, match=rf"{name}.*atom 2 \(of 1 such\) has a NaN or infinite coordinate"
    ):
        load_model(path, elements=["Pt"])


@pytest.mark.parametrize("morphology", ["icosahedron", "decahedron", "marks_decahedron"])
def test_ordered_phase_on_a_twinned_particle_is_recorded_as_a_random_alloy(morphology, caplog):
    from simgen.structures import realised_ordering

    atoms = build_particle(morphology, "L10:FePt", 1.5, rng=rng(), orientation="none")
    assert atoms.info["composition"] == "L10:FePt"  # what was asked
    assert atoms.info["ordering"] == "alloy"  # what was made
    assert realised_ordering(morphology, "L10:FePt") == "alloy"
    counts = Counter(atoms.get_chemical_symbols())
    assert abs(counts["Fe"] - counts["Pt"]) <= 1  # the fractions are kept
    ordered = build_particle("cuboctahedron", "L10:FePt", 1.5, rng=rng(), orientation="none")
    assert ordered.info["ordering"] == "L10" == realised_ordering("cuboctahedron", "L10:FePt")


def test_morphology_registry_declares_typed_options():
    from simgen.structures import MORPHOLOGY_REGISTRY

    assert tuple(MORPHOLOGY_REGISTRY) == MORPHOLOGIES
    assert list(MORPHOLOGY_REGISTRY["decahedron"].options) == [
        "p",
        "q",
        "r",
        "marks",
        "lattice_constant",
    ]
    assert "shells: int | None = None" in MORPHOLOGY_REGISTRY["icosahedron"].describe()
    with pytest.raises(ValueError, match=r"shells=3: not an option of cube"):
        build_particle("cube", "Pt", 1.0, rng=rng(), shells=3)


def test_empty_model_only_when_allowed(tmp_path):
    path = tmp_path / "empty.xyz"
    path.write_text("0\n\n")
    with pytest.raises(ValueError, match="empty.xyz.*holds no atoms"):
        load_model(path)
    assert len(load_model(path, allow_empty=True)) == 0


def test_every_composition_example_in_the_syntax_parses():
    """The syntax that ``simgen list compositions`` prints: each example is a valid composition."""
    import re

    from simgen.structures import compositions

    examples = [e.strip('"') for e in re.findall(r"``([^`]+)``", compositions.__doc__)]
    examples = [e for e in examples if e not in ("parse_composition",) and not e.startswith(",")]
    assert len(examples) >= 6
    for example in examples:
        assert parse_composition(parse_composition(example).label) == parse_composition(example)
