"""Nanoparticle atomic models: one function, :func:`build_particle`, from a morphology and a composition.

A particle is built in three steps, each a plain function of its inputs and one
``numpy.random.Generator``:

1. **shape** – a set of lattice sites (:mod:`simgen.structures.morphologies`, one registered
   function per morphology);
2. **chemistry** – a :class:`~simgen.structures.compositions.Composition` decides the element of
   every site (:mod:`simgen.structures.ordering`): single element, random alloy, chemically
   ordered L1₀ / L1₂, core–shell, high-entropy;
3. **disorder and pose** – vacancies, isotropic thermal (Debye–Waller) displacements, rotation
   (:mod:`simgen.structures.placement`).

Units: Å throughout (``size_nm`` is the one exception, named for it).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from simgen.structures.compositions import Composition, parse_composition
from simgen.structures.morphologies import MORPHOLOGIES, MORPHOLOGY_REGISTRY
from simgen.structures.ordering import assign_species, realised_ordering
from simgen.structures.placement import particle_diameter, rotation_matrix
from simgen.tools.reproducible import apply_rotation, center_of_mass

__all__ = ["build_particle", "realised_ordering"]

logger = logging.getLogger(__name__)

#: Options every morphology accepts besides its own.
_COMMON_OPTIONS = {"b_factor", "shell_monolayers", "shell_thickness"}


def build_particle(
    morphology: str,
    composition: str | Composition,
    size_nm: float | None = None,
    *,
    rng: np.random.Generator,
    orientation="random",
    thermal_sigma: float = 0.0,
    vacancy_fraction: float = 0.0,
    **options,
):
    """Build a nanoparticle, centred with its centre of mass on the origin.

    Parameters
    ----------
    morphology
        One of ``MORPHOLOGIES``.
    composition
        A composition string (see :func:`parse_composition`) or a :class:`Composition`.
    size_nm
        Target diameter in nm (of the sphere about the centre of mass holding every atom
        centre). Shell-based shapes pick the shell count closest to it. May be ``None`` when a
        shape option (``shells``, ``p``, ``n_atoms``) fixes the size; such options win.
    rng
        The only source of randomness; the same generator state gives the same particle.
    orientation
        ``"random"`` (uniform random rotation), ``"none"`` (lattice axes along x, y, z) or
        an Euler triple ``(phi, theta, psi)`` in degrees (intrinsic z-y-z).
    thermal_sigma
        Isotropic Gaussian displacement σ per axis in Å (the option ``b_factor`` in Å²
        gives it as σ² = B / (8π²)).
    vacancy_fraction
        Fraction of atoms removed at random, in [0, 1).
    **options
        Shape options: ``shells`` (cuboctahedron, icosahedron, truncated_octahedron;
        the centre atom counts as shell 1, so 2, 3, 4, 5 shells give 13, 55, 147, 309 atoms for
        the first two and 38, 201, 586, 1289 for the truncated octahedron); ``p``, ``q``, ``r``
        (decahedron as ``ase.cluster.Decahedron``; default ``q = ceil(p/2)``: an Ino decahedron
        with (100) facets) and ``marks`` (= ``r``, the Marks re-entrance depth);
        the same for ``marks_decahedron``, whose defaults are ``r = 1`` (at least 1) and
        ``q = max(2, ceil(p/2))`` (p = 2, 3, 4 give 75, 146, 247 atoms); ``length`` (atoms
        along an edge, >= 2; octahedron, cube, tetrahedron: the regular octahedron has
        6, 19, 44, 85, 146 atoms for lengths 2–6, the {100} cube of n = length - 1 unit
        cells 4n³ + 6n² + 3n + 1 = 14, 63, 172, the {111} tetrahedron the tetrahedral
        numbers 4, 10, 20, 35);
        ``surface_energies`` ({(h, k, l) or "hkl": γ}, default ``DEFAULT_SURFACE_ENERGIES``) and
        ``n_atoms`` (wulff); ``lattice`` ("fcc", "bcc", "hcp"; sphere, ellipsoid);
        ``aspect`` (ellipsoid axis ratios, default (1, 0.8, 0.6)); ``n_spheres`` (default 2–4 at
        random) and ``smoothing`` (fillet width in Å, default 0.3 × radius; random_fcc);
        ``min_distance`` (Å, default 0.85 × the elemental nearest-neighbour distance),
        ``density_factor`` (of the crystal's number density, default 0.98), ``n_atoms`` and
        ``sweeps`` (hard-sphere Monte Carlo sweeps, default 20) (amorphous). Common: ``lattice_constant`` (Å, overrides Vegard's law), ``b_factor``,
        ``shell_monolayers`` / ``shell_thickness`` (Å; core–shell, override the composition's).

    Returns
    -------
    ase.Atoms
        Positions in Å with the centre of mass at the origin, zero cell, no periodicity;
        ``info`` holds ``morphology``, ``composition`` (as asked), ``ordering`` (the chemical
        order made: the composition's kind, or ``"alloy"`` where an ordered phase fell back),
        ``thermal_sigma`` and ``vacancy_fraction``.

    Notes
    -----
    Ordered compositions (L1₀, L1₂) need the sites of a single fcc crystal (every fcc shape,
    including the octahedron, cube and tetrahedron, has them). On icosahedra,
    decahedra (Ino and Marks), amorphous particles and bcc/hcp lattices they fall back to a random
    alloy with the same fractions (so that a dataset crossing morphologies with compositions still
    runs): a warning is logged and ``atoms.info["ordering"]`` says ``"alloy"`` instead of the
    composition's kind; :func:`realised_ordering` says the same before any particle is built. L1₀ planes are normal to z before rotation (the c axis is not contracted).
    Random draws happen in a fixed order: shape, species, vacancies, displacements, rotation.
    """
    from ase import Atoms

    if morphology not in MORPHOLOGIES:
        raise ValueError(f"morphology={morphology!r}: expected one of {MORPHOLOGIES}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng={rng!r}: expected a numpy.random.Generator")
    composition = parse_composition(composition)
    allowed = set(MORPHOLOGY_REGISTRY[morphology].options) | _COMMON_OPTIONS
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"{unknown[0]}={options[unknown[0]]!r}: not an option of {morphology}; expected one of {sorted(allowed)}"
        )
    if size_nm is not None:
        try:
            size_nm = float(size_nm)
        except (TypeError, ValueError):
            raise ValueError(f"size_nm={size_nm!r}: expected a positive diameter in nm") from None
        if not np.isfinite(size_nm) or size_nm <= 0:
            raise ValueError(f"size_nm={size_nm!r}: expected a positive diameter in nm")
    try:
        thermal_sigma = float(thermal_sigma)
    except (TypeError, ValueError):
        raise ValueError(
            f"thermal_sigma={thermal_sigma!r}: expected a non-negative σ in Å"
        ) from None
    if not np.isfinite(thermal_sigma) or thermal_sigma < 0:
        raise ValueError(f"thermal_sigma={thermal_sigma!r}: expected a non-negative σ in Å")
    if "b_factor" in options:
        b_factor = options.pop("b_factor")
        if (
            not isinstance(b_factor, (int, float, np.floating, np.integer))
            or not np.isfinite(b_factor)
            or b_factor < 0
        ):
            raise ValueError(f"b_factor={b_factor!r}: expected a non-negative Debye–Waller B in Å²")
        if thermal_sigma > 0:
            raise ValueError(
                f"b_factor={b_factor!r}: give either b_factor or thermal_sigma, not both"
            )
        thermal_sigma = math.sqrt(b_factor / (8.0 * math.pi**2))
    try:
        vacancy_fraction = float(vacancy_fraction)
    except (TypeError, ValueError):
        raise ValueError(
            f"vacancy_fraction={vacancy_fraction!r}: expected a fraction in [0, 1)"
        ) from None
    if not 0.0 <= vacancy_fraction < 1.0:
        raise ValueError(f"vacancy_fraction={vacancy_fraction!r}: expected a fraction in [0, 1)")
    if not (isinstance(orientation, str) and orientation == "random"):
        rotation_matrix(orientation)  # validate before spending time on the shape

    options = dict(options)
    shell_monolayers = options.pop("shell_monolayers", None)
    shell_thickness = options.pop("shell_thickness", None)
    shape = MORPHOLOGY_REGISTRY[morphology].build(size_nm, composition, rng, **options)
    if len(shape.positions) == 0:
        raise ValueError(
            f"size_nm={size_nm!r}: the {morphology} holds no atoms; expected a larger size"
        )
    symbols, ordering = assign_species(
        shape,
        composition,
        morphology,
        rng,
        shell_monolayers=shell_monolayers,
        shell_thickness=shell_thickness,
    )

    positions = shape.positions
    keep = np.arange(len(positions))
    n_vacancies = int(round(vacancy_fraction * len(positions)))
    if n_vacancies:
        if n_vacancies >= len(positions):
            raise ValueError(f"vacancy_fraction={vacancy_fraction!r}: would remove every atom")
        removed = rng.choice(len(positions), size=n_vacancies, replace=False)
        keep = np.setdiff1d(keep, removed)
    positions, symbols = positions[keep].copy(), symbols[keep]
    if thermal_sigma > 0:
        positions = positions + rng.normal(scale=thermal_sigma, size=positions.shape)

    atoms = Atoms(symbols=list(symbols), positions=positions, pbc=False)
    # simgen.tools.reproducible: a BLAS product (ASE's centre of mass, `@`) rounds by CPU
    atoms.positions -= center_of_mass(atoms.positions, atoms.get_masses())
    matrix = rotation_matrix(orientation, rng)
    atoms.positions = apply_rotation(atoms.positions, matrix)
    atoms.info.update(
        morphology=morphology,
        composition=composition.label,
        ordering=ordering,
        thermal_sigma=thermal_sigma,
        vacancy_fraction=vacancy_fraction,
    )
    logger.debug(
        "built %s %s: %d atoms, diameter %.1f Å",
        morphology,
        composition.label,
        len(atoms),
        particle_diameter(atoms),
    )
    return atoms
