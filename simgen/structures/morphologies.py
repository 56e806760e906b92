"""Morphologies: one small function per particle shape, registered by name with typed keyword options.

Each function returns the lattice sites of its shape (a :class:`Shape`, Å, about the origin):
ASE's cluster factories for the faceted shapes (``ase.cluster.Octahedron``, ``Icosahedron``,
``Decahedron``, ``wulff_construction``), exact fcc cuts for the {100} cube and the {111}
tetrahedron, lattice cuts made from ``ase.build.bulk`` cells for spheres, ellipsoids and smoothed
unions of random spheres, and a dense random packing for amorphous particles
(:mod:`simgen.structures.amorphous`). The keyword-only parameters of each function are its
options: :data:`MORPHOLOGY_REGISTRY` reads them from the signature, so ``build_particle``'s checks,
``simgen list`` and the documentation share one declaration.

Every shape function takes ``(size_nm, composition, rng)`` first: the target diameter in nm (may be
``None`` when an option such as ``shells`` fixes the size), the :class:`Composition` (it sets the
lattice constant) and the random generator (used by the random shapes only), and the common option
``lattice_constant`` (Å, overrides Vegard's law).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simgen.registry import registry
from simgen.structures import lattices
from simgen.structures.compositions import Composition
from simgen.structures.parameters import check_float, check_int
from simgen.structures.placement import particle_diameter

__all__ = [
    "MORPHOLOGIES",
    "MORPHOLOGY_REGISTRY",
    "DEFAULT_SURFACE_ENERGIES",
    "Morphology",
    "Shape",
    "register_morphology",
]

# Surface energy ratios γ(hkl)/γ(111) for the default Wulff shape. DFT surface energies of the
# late fcc transition metals (Pt, Pd, Au, Ni, Cu) give γ(100)/γ(111) ≈ 1.1–1.2 and
# γ(110)/γ(111) ≈ 1.15–1.25 (e.g. Tran et al., Sci. Data 3, 160080 (2016)); these round values
# give a truncated octahedron with (111), (100) and small (110) facets.
DEFAULT_SURFACE_ENERGIES: dict[tuple[int, int, int], float] = {
    (1, 1, 1): 1.00,
    (1, 0, 0): 1.15,
    (1, 1, 0): 1.22,
}

_SQRT2 = math.sqrt(2.0)


@dataclass
class Shape:
    """The sites of a particle before chemistry: positions and what is known of their lattice."""

    positions: np.ndarray  # (N, 3) Å
    fcc_a: float | None  # lattice constant if the sites are one axis-aligned fcc lattice
    coordination: int | None = 12  # bulk coordination number (None: amorphous)
    cutoff: float = 1.2  # neighbour cutoff in nearest-neighbour distances


@dataclass(frozen=True)
class Morphology:
    """A registered shape: its name, the function that builds it, and its options."""

    name: str
    build: Callable[..., Shape]

    @property
    def summary(self) -> str:
        """First line of the shape function's docstring."""
        return (inspect.getdoc(self.build) or "").splitlines()[0]

    @property
    def options(self) -> dict[str, inspect.Parameter]:
        """The keyword-only parameters of the shape function, by name (in declaration order)."""
        parameters = inspect.signature(self.build).parameters.values()
        return {p.name: p for p in parameters if p.kind is p.KEYWORD_ONLY}

    def describe(self) -> str:
        """One line: ``name(option: type = default, ...)  summary``."""
        options = ", ".join(
            f"{p.name}: {p.annotation} = {p.default!r}" for p in self.options.values()
        )
        return f"{self.name}({options})  {self.summary}"


#: Every morphology by name, in registration order.
MORPHOLOGY_REGISTRY: dict[str, Morphology] = {}
#: The same shapes in the spec registry of :mod:`simgen.registry` (parameters = typed options).
MORPHOLOGY_SPECS = registry(
    "morphology", "morphologies (--particle; datasets.yaml particles.morphology)"
)


def register_morphology(name: str):
    """Register a shape function under ``name`` (a decorator)."""

    def decorate(build: Callable[..., Shape]) -> Callable[..., Shape]:
        if name in MORPHOLOGY_REGISTRY:
            raise ValueError(f"morphology={name!r}: registered twice")
        MORPHOLOGY_REGISTRY[name] = Morphology(name, build)
        MORPHOLOGY_SPECS.register(name, build)  # the shared spec registry (simgen.registry)
        return build

    return decorate


# --------------------------------------------------------------------------------------------
# Helpers shared by the shape functions
# --------------------------------------------------------------------------------------------


def _require_size(size_nm, morphology: str, alternative: str) -> float:
    if size_nm is None:
        raise ValueError(
            f"size_nm=None: expected a diameter in nm for {morphology} (or the option {alternative})"
        )
    return size_nm * 10.0


def _shell_count(diameter: float, per_shell: float) -> int:
    """Shells k >= 2 (centre atom = shell 1) whose diameter (k-1)·per_shell is closest to ``diameter``."""
    return max(2, 1 + int(round(diameter / per_shell)))


def _fcc_constant(composition: Composition, lattice_constant: float | None) -> float:
    """The fcc lattice constant (Å) of ``composition``, or the override ``lattice_constant``."""
    a, _ = lattices.lattice_constant(composition, "fcc")
    return check_float("lattice_constant", lattice_constant, a)


# --------------------------------------------------------------------------------------------
# Shell-counted clusters (ASE)
# --------------------------------------------------------------------------------------------


def _shells(shells, size_nm, morphology: str, per_shell: float) -> int:
    shells = check_int("shells", shells, 1)
    if shells is None:
        # Vertex-to-vertex diameters: 2(k-1)·d_nn (cuboctahedron, Mackay icosahedron),
        # (k-1)·√5·a (regular truncated octahedron with cutoff k-1).
        shells = _shell_count(_require_size(size_nm, morphology, "shells="), per_shell)
    return shells


@register_morphology("cuboctahedron")
def cuboctahedron(
    size_nm, composition, rng, *, shells: int | None = None, lattice_constant: float | None = None
) -> Shape:
    """fcc cuboctahedron; ``shells`` k (centre atom = 1) gives 13, 55, 147, 309 atoms for k = 2..5."""
    from ase.cluster import Octahedron

    a = _fcc_constant(composition, lattice_constant)
    d_nn = a / _SQRT2
    shells = _shells(shells, size_nm, "cuboctahedron", 2.0 * d_nn)
    return Shape(Octahedron("Cu", 2 * shells - 1, shells - 1, latticeconstant=a).positions, a)


@register_morphology("truncated_octahedron")
def truncated_octahedron(
    size_nm, composition, rng, *, shells: int | None = None, lattice_constant: float | None = None
) -> Shape:
    """Regular fcc truncated octahedron; ``shells`` k >= 2 gives 38, 201, 586, 1289 atoms for k = 2..5."""
    from ase.cluster import Octahedron

    a = _fcc_constant(composition, lattice_constant)
    shells = _shells(shells, size_nm, "truncated_octahedron", math.sqrt(5.0) * a)
    if shells < 2:
        raise ValueError(f"shells={shells}: expected >= 2 for a truncated octahedron")
    cluster = Octahedron("Cu", 3 * (shells - 1) + 1, shells - 1, latticeconstant=a)
    return Shape(cluster.positions, a)


@register_morphology("icosahedron")
def icosahedron(
    size_nm, composition, rng, *, shells: int | None = None, lattice_constant: float | None = None
) -> Shape:
    """Mackay icosahedron (twinned); ``shells`` k gives 13, 55, 147, 309 atoms for k = 2..5."""
    from ase.cluster import Icosahedron

    a = _fcc_constant(composition, lattice_constant)
    d_nn = a / _SQRT2
    shells = _shells(shells, size_nm, "icosahedron", 2.0 * d_nn)
    return Shape(Icosahedron("Cu", shells, latticeconstant=a).positions, None)


# --------------------------------------------------------------------------------------------
# Decahedra (ASE)
# --------------------------------------------------------------------------------------------


def _decahedron(morphology, size_nm, a, p, q, r, marks) -> Shape:
    from ase.cluster import Decahedron

    marks_shape = morphology == "marks_decahedron"
    p = check_int("p", p, 1)
    q = check_int("q", q, 1)
    r = check_int("r", r, 1 if marks_shape else 0)
    marks = check_int("marks", marks, 1 if marks_shape else 0)
    if marks is not None and r is not None and marks != r:
        raise ValueError(f"marks={marks}: conflicts with r={r}; give one re-entrance depth")
    r = r if r is not None else marks
    if r is None:
        r = 1 if marks_shape else 0

    def build(p_):
        if q is not None:
            q_ = q
        elif marks_shape:  # (100) facets of at least two rows: 75, 146, 247, ... atoms
            q_ = max(2, (p_ + 1) // 2)
        else:  # Ino truncation: (100) facets
            q_ = max(1, (p_ + 1) // 2)
        return Decahedron("Cu", p_, q_, r, latticeconstant=a).positions

    if p is not None:
        return Shape(build(p), None)
    diameter = _require_size(size_nm, morphology, "p=")
    best, best_error = None, np.inf
    for p_ in range(2, 200):
        positions = build(p_)
        error = abs(particle_diameter(positions) - diameter)
        if error < best_error:
            best, best_error = positions, error
        elif particle_diameter(positions) > diameter:
            break
    return Shape(best, None)


@register_morphology("decahedron")
def decahedron(
    size_nm,
    composition,
    rng,
    *,
    p: int | None = None,
    q: int | None = None,
    r: int | None = None,
    marks: int | None = None,
    lattice_constant: float | None = None,
) -> Shape:
    """Ino decahedron (twinned) as ``ase.cluster.Decahedron(p, q, r)``; default q = ceil(p/2), r = 0."""
    a = _fcc_constant(composition, lattice_constant)
    return _decahedron("decahedron", size_nm, a, p, q, r, marks)


@register_morphology("wulff")
def wulff(
    size_nm,
    composition,
    rng,
    *,
    surface_energies: dict | None = None,
    n_atoms: int | None = None,
    lattice_constant: float | None = None,
) -> Shape:
    """Wulff construction from ``surface_energies`` {(h, k, l) or "hkl": γ} (default DEFAULT_SURFACE_ENERGIES)."""
    from ase.cluster import wulff_construction

    a = _fcc_constant(composition, lattice_constant)
    energies = DEFAULT_SURFACE_ENERGIES if surface_energies is None else surface_energies
    try:
        # YAML keys are strings: "111" or "1,1,1" (also "-1,1,0") as well as tuples.
        surfaces = [
            tuple(int(i) for i in (hkl.split(",") if "," in hkl else hkl))
            if isinstance(hkl, str)
            else tuple(int(i) for i in hkl)
            for hkl in energies
        ]
        gammas = [float(energies[hkl]) for hkl in energies]
    except (TypeError, ValueError):
        raise ValueError(
            f"surface_energies={energies!r}: expected a mapping {{(h, k, l): energy}} with positive energies"
        ) from None
    if not surfaces or any(len(s) != 3 for s in surfaces) or any(g <= 0 for g in gammas):
        raise ValueError(
            f"surface_energies={energies!r}: expected a mapping {{(h, k, l): positive energy}}"
        )
    n_atoms = check_int("n_atoms", n_atoms, 1)

    def build(n):
        cluster = wulff_construction(
            "Cu", surfaces, gammas, int(n), "fcc", rounding="closest", latticeconstant=a
        )
        return cluster.positions

    if n_atoms is not None:
        return Shape(build(n_atoms), a)
    diameter = _require_size(size_nm, "wulff", "n_atoms=")
    density = 4.0 / a**3
    # A Wulff polyhedron fills ~70% of its circumscribed sphere; correct once by measurement.
    n_atoms = max(13, round(0.7 * density * math.pi / 6.0 * diameter**3))
    positions = build(n_atoms)
    measured = particle_diameter(positions)
    if measured > 0 and abs(measured - diameter) > 0.1 * diameter:
        positions = build(max(13, round(n_atoms * (diameter / measured) ** 3)))
    return Shape(positions, a)


# --------------------------------------------------------------------------------------------
# Lattice cuts
# --------------------------------------------------------------------------------------------


def _ellipsoid_cut(size_nm, composition, morphology, lattice, lattice_constant, aspect) -> Shape:
    if lattice not in lattices.LATTICES:
        raise ValueError(f"lattice={lattice!r}: expected one of {lattices.LATTICES}")
    a, c_over_a = lattices.lattice_constant(composition, lattice)
    a = check_float("lattice_constant", lattice_constant, a)
    radius = _require_size(size_nm, morphology, "") / 2.0
    if aspect is None:
        semi_axes = np.full(3, radius)
    else:
        try:
            aspect = np.asarray(aspect, dtype=np.float64).reshape(3)
        except (TypeError, ValueError):
            raise ValueError(f"aspect={aspect!r}: expected three positive axis ratios") from None
        if not np.all(np.isfinite(aspect)) or np.any(aspect <= 0):
            raise ValueError(f"aspect={aspect!r}: expected three positive axis ratios")
        semi_axes = radius * aspect / aspect.max()
    # L1₀ order: centring the cut on (a/4, 0, a/4) makes the 2-fold axis through the centre
    # swap the two (001) sublattices, so the particle holds exactly as many A as B atoms.
    offset = (a / 4.0, 0.0, a / 4.0) if (composition.kind == "L10" and lattice == "fcc") else None

    def inside(sites):
        return np.sum((sites / semi_axes) ** 2, axis=1) <= 1.0 + 1e-9

    positions = lattices.lattice_cut(lattice, a, c_over_a, semi_axes, inside, offset)
    if lattice == "bcc":
        return Shape(positions, None, coordination=8, cutoff=1.08)
    return Shape(positions, a if lattice == "fcc" else None)


@register_morphology("sphere")
def sphere(
    size_nm,
    composition,
    rng,
    *,
    lattice: str = "fcc",
    lattice_constant: float | None = None,
) -> Shape:
    """Sphere cut from a ``lattice`` ("fcc", "bcc" or "hcp") crystal."""
    return _ellipsoid_cut(size_nm, composition, "sphere", lattice, lattice_constant, None)


@register_morphology("ellipsoid")
def ellipsoid(
    size_nm,
    composition,
    rng,
    *,
    lattice: str = "fcc",
    aspect: tuple[float, float, float] = (1.0, 0.8, 0.6),
    lattice_constant: float | None = None,
) -> Shape:
    """Ellipsoid cut from a ``lattice`` crystal, semi-axes in the ratios ``aspect`` (longest = size/2)."""
    return _ellipsoid_cut(size_nm, composition, "ellipsoid", lattice, lattice_constant, aspect)


@register_morphology("random_fcc")
def random_fcc(
    size_nm,
    composition,
    rng,
    *,
    n_spheres: int | None = None,
    smoothing: float | None = None,
    lattice_constant: float | None = None,
) -> Shape:
    """fcc cut by a smoothed union of ``n_spheres`` random spheres (default 2–4); ``smoothing`` Å (default 0.3 × radius)."""
    a, c_over_a = lattices.lattice_constant(composition, "fcc")
    a = check_float("lattice_constant", lattice_constant, a)
    radius = _require_size(size_nm, "random_fcc", "") / 2.0
    n_spheres = check_int("n_spheres", n_spheres, 1)
    if n_spheres is None:
        n_spheres = int(rng.integers(2, 5))
    # Random sphere centres in the unit ball, radii 0.4–0.7; the union is then scaled so that
    # its circumscribed sphere about the origin has the requested radius.
    directions = rng.normal(size=(n_spheres, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centers = directions * (0.5 * rng.random(n_spheres) ** (1.0 / 3.0))[:, None]
    radii = 0.4 + 0.3 * rng.random(n_spheres)
    scale = radius / np.max(np.linalg.norm(centers, axis=1) + radii)
    centers, radii = centers * scale, radii * scale
    smoothing = check_float("smoothing", smoothing, 0.3 * radius)

    def inside(sites):
        # Polynomial smooth minimum of the spheres' signed distances (fillets of width k).
        field = np.linalg.norm(sites - centers[0], axis=1) - radii[0]
        for center, r in zip(centers[1:], radii[1:]):
            other = np.linalg.norm(sites - center, axis=1) - r
            h = np.clip(smoothing - np.abs(field - other), 0.0, None) / smoothing
            field = np.minimum(field, other) - h * h * smoothing / 4.0
        return field <= 0.0

    positions = lattices.lattice_cut("fcc", a, c_over_a, np.full(3, radius + smoothing), inside)
    return Shape(positions, a)


@register_morphology("amorphous")
def amorphous(
    size_nm,
    composition,
    rng,
    *,
    min_distance: float | None = None,
    density_factor: float | None = None,
    n_atoms: int | None = None,
    sweeps: int | None = None,
    lattice_constant: float | None = None,
) -> Shape:
    """Dense random packing in a sphere: ``min_distance`` Å (default 0.85 d_nn), ``density_factor`` (0.98), ``sweeps`` (20)."""
    from simgen.structures.amorphous import amorphous_packing

    check_float("lattice_constant", lattice_constant, 1.0)  # accepted for uniformity, unused
    radius = _require_size(size_nm, "amorphous", "") / 2.0
    positions = amorphous_packing(
        radius,
        composition,
        rng,
        min_distance=min_distance,
        density_factor=density_factor,
        n_atoms=n_atoms,
        sweeps=sweeps,
    )
    return Shape(positions, None, coordination=None)


# --------------------------------------------------------------------------------------------
# Polyhedra by edge length
# --------------------------------------------------------------------------------------------


def _edge_length(length, size_nm, morphology: str, per_step: float) -> int:
    length = check_int("length", length, 2)
    if length is None:
        # Circumscribed diameters with `length` atoms per edge (m = length - 1): (m·a/√2)·√2
        # vertex to vertex for the octahedron, the body diagonal √3·m·a for the cube of m
        # unit cells, 2·√(3/8)·m·a/√2 = (√3/2)·m·a for the tetrahedron.
        length = _shell_count(_require_size(size_nm, morphology, "length="), per_step)
    return length


def _fcc_polyhedron(morphology: str, length: int, a: float) -> np.ndarray:
    """Sites (Å, centred on the polyhedron's centre) of a regular fcc cube or tetrahedron with
    ``length`` atoms along each edge, lattice axes along x, y, z.

    In units of a/2 the fcc sites are the integer points with an even coordinate sum. The cube
    spans ``length - 1`` unit cells, [0, 2(length - 1)]³, bounded by {100}; its
    4n³ + 6n² + 3n + 1 sites (n unit cells) include all eight corners. The tetrahedron has
    vertices 0, m(1,1,0), m(1,0,1), m(0,1,1) with m = length - 1 nearest-neighbour steps per
    edge; its four faces are the {111} planes -x+y+z = 0, x-y+z = 0, x+y-z = 0, x+y+z = 2m, and
    it holds the tetrahedral number length(length + 1)(length + 2)/6 of sites.
    """
    m = length - 1
    span = 2 * m if morphology == "cube" else m
    axis = np.arange(span + 1)
    sites = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    sites = sites[sites.sum(axis=1) % 2 == 0]
    if morphology == "tetrahedron":
        x, y, z = sites.T
        inside = (-x + y + z >= 0) & (x - y + z >= 0) & (x + y - z >= 0) & (x + y + z <= 2 * m)
        sites = sites[inside]
        center = np.full(3, m / 2.0)
    else:
        center = np.full(3, float(m))
    return (sites - center) * (a / 2.0)


@register_morphology("octahedron")
def octahedron(
    size_nm, composition, rng, *, length: int | None = None, lattice_constant: float | None = None
) -> Shape:
    """Regular fcc octahedron, ``length`` >= 2 atoms per edge (6, 19, 44, 85, 146 atoms for 2–6)."""
    from ase.cluster import Octahedron

    a = _fcc_constant(composition, lattice_constant)
    length = _edge_length(length, size_nm, "octahedron", a)
    return Shape(Octahedron("Cu", length, 0, latticeconstant=a).positions, a)


@register_morphology("cube")
def cube(
    size_nm, composition, rng, *, length: int | None = None, lattice_constant: float | None = None
) -> Shape:
    """{100} fcc cube, ``length`` >= 2 atoms per edge (n = length - 1 cells: 4n³ + 6n² + 3n + 1 atoms)."""
    a = _fcc_constant(composition, lattice_constant)
    length = _edge_length(length, size_nm, "cube", math.sqrt(3.0) * a)
    return Shape(_fcc_polyhedron("cube", length, a), a)


@register_morphology("tetrahedron")
def tetrahedron(
    size_nm, composition, rng, *, length: int | None = None, lattice_constant: float | None = None
) -> Shape:
    """{111} fcc tetrahedron, ``length`` >= 2 atoms per edge (4, 10, 20, 35 atoms for 2–5)."""
    a = _fcc_constant(composition, lattice_constant)
    length = _edge_length(length, size_nm, "tetrahedron", math.sqrt(3.0) / 2.0 * a)
    return Shape(_fcc_polyhedron("tetrahedron", length, a), a)


@register_morphology("marks_decahedron")
def marks_decahedron(
    size_nm,
    composition,
    rng,
    *,
    p: int | None = None,
    q: int | None = None,
    r: int | None = None,
    marks: int | None = None,
    lattice_constant: float | None = None,
) -> Shape:
    """Marks decahedron (twinned, re-entrant); defaults r = 1, q = max(2, ceil(p/2)): 75, 146, 247 atoms."""
    a = _fcc_constant(composition, lattice_constant)
    return _decahedron("marks_decahedron", size_nm, a, p, q, r, marks)


#: Names of the registered morphologies, in registration order.
MORPHOLOGIES: tuple[str, ...] = tuple(MORPHOLOGY_REGISTRY)
