"""Nanoparticle atomic models: morphologies, compositions, disorder, placement and file I/O.

A particle is built in three steps, each a plain function of its inputs and one
``numpy.random.Generator``:

1. **shape** – a set of lattice sites (``MORPHOLOGIES``): ASE's cluster factories for the
   faceted shapes (``ase.cluster.Octahedron``, ``Icosahedron``, ``Decahedron``,
   ``wulff_construction``), exact fcc cuts for the {100} cube and the {111} tetrahedron,
   lattice cuts made from ``ase.build.bulk`` cells for spheres, ellipsoids and smoothed unions
   of random spheres, and a dense random packing for amorphous particles;
2. **chemistry** – a :class:`Composition` (``parse_composition``) decides the element of every
   site: single element, random alloy, chemically ordered L1₀ / L1₂, core–shell, high-entropy;
3. **disorder and pose** – vacancies, isotropic thermal (Debye–Waller) displacements, rotation.

The lattice constant follows the composition: Vegard's law (a linear average weighted by atomic
fraction) over the elemental constants of ``ase.data.reference_states``; elements whose
reference structure is not the requested lattice (bcc Fe, hcp Co in an fcc alloy) enter with the
constant of that lattice at the same atomic volume (Fe -> 3.62 Å fcc, Co -> 3.54 Å fcc).

Units: Å throughout (``size_nm`` is the one exception, named for it). The *diameter* of a
particle is the diameter of the smallest sphere about its centre of mass that holds every atom
centre (``particle_diameter``): it is what must fit in the reconstruction volume at every tilt.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MORPHOLOGIES",
    "COMPOSITION_KINDS",
    "Composition",
    "parse_composition",
    "build_particle",
    "lattice_constant",
    "particle_diameter",
    "surface_layers",
    "random_orientation",
    "rotation_matrix",
    "place_in_volume",
    "load_model",
    "write_model",
]

logger = logging.getLogger(__name__)

MORPHOLOGIES: tuple[str, ...] = (
    "cuboctahedron",
    "truncated_octahedron",
    "icosahedron",
    "decahedron",
    "wulff",
    "sphere",
    "ellipsoid",
    "random_fcc",
    "amorphous",
    "octahedron",
    "cube",
    "tetrahedron",
    "marks_decahedron",
)

COMPOSITION_KINDS: tuple[str, ...] = ("element", "alloy", "L10", "L12", "core-shell", "hea")

LATTICES: tuple[str, ...] = ("fcc", "bcc", "hcp")

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
_MAX_HEA_ELEMENTS = 5
_MC_STEP = 0.03  # hard-sphere Monte Carlo trial step, in units of the minimum distance
_PUSH_SPREAD = 0.2  # overlapping pairs are pushed apart to (1 + U(0, spread)) × min_distance


# --------------------------------------------------------------------------------------------
# Compositions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Composition:
    """The chemistry of a particle, parsed from a string by :func:`parse_composition`.

    Attributes
    ----------
    kind
        One of ``COMPOSITION_KINDS``: ``"element"``, ``"alloy"`` (random substitutional alloy),
        ``"L10"`` / ``"L12"`` (chemically ordered on the fcc lattice), ``"core-shell"``,
        ``"hea"`` (random high-entropy alloy).
    fractions
        Nominal atomic fractions as ``((symbol, fraction), ...)`` sorted by symbol. For
        ``"core-shell"`` the fractions depend on the particle size and are left empty.
    core, shell
        Element symbols of a core–shell particle (``None`` otherwise).
    shell_monolayers
        Shell thickness in atomic monolayers (core–shell only; default 1).
    shell_thickness
        Shell thickness in Å, used instead of ``shell_monolayers`` when set (core–shell only).
    """

    kind: str
    fractions: tuple[tuple[str, float], ...] = ()
    core: str | None = None
    shell: str | None = None
    shell_monolayers: int = 1
    shell_thickness: float | None = None

    @property
    def elements(self) -> tuple[str, ...]:
        """Sorted tuple of the element symbols present."""
        if self.kind == "core-shell":
            return tuple(sorted({self.core, self.shell}))
        return tuple(symbol for symbol, _ in self.fractions)

    @property
    def is_ordered(self) -> bool:
        """True for the chemically ordered phases (L1₀, L1₂)."""
        return self.kind in ("L10", "L12")

    def fraction(self, symbol: str) -> float:
        """Nominal atomic fraction of ``symbol`` (0 if absent; not defined for core–shell)."""
        if self.kind == "core-shell":
            raise ValueError(
                f"composition={self.label!r}: core-shell fractions depend on the particle size"
            )
        return dict(self.fractions).get(symbol, 0.0)

    @property
    def label(self) -> str:
        """Canonical string; ``parse_composition(c.label) == c``."""
        if self.kind == "element":
            return self.fractions[0][0]
        if self.kind == "L10":
            return "L10:" + "".join(self.elements)
        if self.kind == "L12":
            (major, _), (minor, _) = sorted(self.fractions, key=lambda item: -item[1])
            return f"L12:{major}3{minor}"
        if self.kind == "core-shell":
            label = f"core-shell:{self.core}@{self.shell}"
            if self.shell_thickness is not None:
                return label + f",shell={self.shell_thickness:g}A"
            if self.shell_monolayers != 1:
                return label + f",shell={self.shell_monolayers}ml"
            return label
        values = [fraction for _, fraction in self.fractions]
        if self.kind == "hea" and np.allclose(values, 1.0 / len(values), atol=1e-9):
            return "hea:" + ",".join(self.elements)
        body = ",".join(f"{symbol}={fraction:.10g}" for symbol, fraction in self.fractions)
        return f"{self.kind}:{body}"

    def __str__(self) -> str:
        return self.label


_KIND_ALIASES = {
    "alloy": "alloy",
    "random": "alloy",
    "l10": "L10",
    "l1_0": "L10",
    "l12": "L12",
    "l1_2": "L12",
    "core-shell": "core-shell",
    "coreshell": "core-shell",
    "core_shell": "core-shell",
    "hea": "hea",
}

_FORMULA_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d*)?|\.\d+)?")


def _check_element(symbol: str, text: str) -> str:
    from ase.data import atomic_numbers

    if symbol not in atomic_numbers or symbol == "X":
        raise ValueError(
            f"composition={text!r}: unknown element {symbol!r}; expected a chemical symbol such as 'Pt'"
        )
    return symbol


def _parse_formula(body: str, text: str) -> list[tuple[str, float | None]]:
    """``"Fe0.5Pt0.5"`` -> ``[("Fe", 0.5), ("Pt", 0.5)]``; a missing amount gives ``None``."""
    body = body.strip()
    tokens = []
    position = 0
    for match in _FORMULA_TOKEN.finditer(body):
        if match.start() != position:
            break
        tokens.append((match.group(1), None if match.group(2) is None else float(match.group(2))))
        position = match.end()
    if not tokens or position != len(body):
        raise ValueError(
            f"composition={text!r}: cannot read {body!r} as a formula; expected e.g. 'Pt', 'Fe0.5Pt0.5'"
        )
    symbols = [symbol for symbol, _ in tokens]
    for symbol in symbols:
        _check_element(symbol, text)
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"composition={text!r}: an element appears twice")
    return tokens


def _parse_assignments(body: str, text: str) -> list[tuple[str, float | None]]:
    """``"Fe=0.3,Pt=0.7"`` or ``"Fe,Pt"`` -> ``[(symbol, fraction or None), ...]``."""
    items = []
    for item in body.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"composition={text!r}: empty item; expected 'El=fraction,...'")
        if "=" in item:
            symbol, value = (part.strip() for part in item.split("=", 1))
            try:
                fraction = float(value)
            except ValueError:
                raise ValueError(
                    f"composition={text!r}: fraction {value!r} of {symbol} is not a number"
                ) from None
        else:
            symbol, fraction = item, None
        items.append((_check_element(symbol, text), fraction))
    symbols = [symbol for symbol, _ in items]
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"composition={text!r}: an element appears twice")
    return items


def _checked_fractions(
    items: list[tuple[str, float | None]], text: str
) -> tuple[tuple[str, float], ...]:
    fractions = [fraction for _, fraction in items]
    if any(fraction is None for fraction in fractions):
        raise ValueError(
            f"composition={text!r}: every element needs a fraction (or use 'hea:' for equimolar)"
        )
    if any(not np.isfinite(f) or f <= 0 for f in fractions):
        raise ValueError(f"composition={text!r}: fractions must be positive, got {fractions}")
    total = float(sum(fractions))
    if abs(total - 1.0) > 1e-6:
        listed = ", ".join(f"{symbol}={fraction:g}" for symbol, fraction in items)
        raise ValueError(
            f"composition={text!r}: fractions {listed} sum to {total:.8g}; expected 1 (within 1e-6)"
        )
    return tuple(sorted((symbol, float(fraction)) for symbol, fraction in items))


def _parse_shell_option(value: str, text: str) -> tuple[int, float | None]:
    value = value.strip().lower()
    match = re.fullmatch(r"(\d+)\s*ml", value)
    if match:
        monolayers = int(match.group(1))
        if monolayers < 1:
            raise ValueError(
                f"composition={text!r}: shell={value!r}: expected at least 1 monolayer"
            )
        return monolayers, None
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(a|å|angstrom)?", value)
    if match:
        return 1, float(match.group(1))
    raise ValueError(
        f"composition={text!r}: shell={value!r}: expected monolayers like '2ml' or Å like '4.5A'"
    )


def parse_composition(text: str | Composition) -> Composition:
    """Parse a composition string (readable in YAML).

    Grammar
    -------
    ``"Pt"``
        One element.
    ``"Fe0.5Pt0.5"``, ``"alloy:Fe=0.3,Pt=0.7"``
        Random substitutional alloy; fractions must sum to 1 within 1e-6.
    ``"L10:FePt"``, ``"L10:CoPt"``
        L1₀ order on the fcc lattice: alternating (001) planes of the two elements.
    ``"L12:Pt3Co"`` (or ``"L12:CoPt3"``)
        L1₂ order A₃B: B on the cube corners, A on the face centres.
    ``"core-shell:Pd@Pt"``, ``"core-shell:Pd@Pt,shell=2ml"``, ``"core-shell:Pd@Pt,shell=4.5A"``
        Core element @ shell element; shell thickness in monolayers (default 1) or in Å.
    ``"hea:Fe,Co,Ni,Cu,Pt"``, ``"hea:Fe=0.3,Co=0.2,..."``
        Random high-entropy alloy of 3 to 5 elements, equimolar unless fractions are given.

    Raises
    ------
    ValueError
        Unknown element, unknown kind, fractions not summing to 1, malformed text.
    """
    if isinstance(text, Composition):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"composition={text!r}: expected a string such as 'Pt', 'Fe0.5Pt0.5' or 'L10:FePt'"
        )
    text = text.strip()
    if ":" not in text:
        tokens = _parse_formula(text, text)
        if len(tokens) == 1:
            return Composition("element", ((tokens[0][0], 1.0),))
        if all(amount is None for _, amount in tokens):
            raise ValueError(
                f"composition={text!r}: ambiguous; expected fractions ('Fe0.5Pt0.5'), "
                "an ordered phase ('L10:FePt') or an equimolar alloy ('hea:Fe,Pt,...')"
            )
        return Composition("alloy", _checked_fractions(tokens, text))

    prefix, body = (part.strip() for part in text.split(":", 1))
    kind = _KIND_ALIASES.get(prefix.lower())
    if kind is None:
        raise ValueError(
            f"composition={text!r}: unknown kind {prefix!r}; expected one of alloy, L10, L12, core-shell, hea"
        )
    if kind == "alloy":
        items = (
            _parse_assignments(body, text)
            if ("=" in body or "," in body)
            else _parse_formula(body, text)
        )
        fractions = _checked_fractions(items, text)
        if len(fractions) == 1:
            return Composition("element", fractions)
        return Composition("alloy", fractions)
    if kind in ("L10", "L12"):
        tokens = _parse_formula(body, text)
        if len(tokens) != 2:
            raise ValueError(
                f"composition={text!r}: {kind} needs exactly two elements, e.g. 'L10:FePt', 'L12:Pt3Co'"
            )
        counts = [1.0 if amount is None else amount for _, amount in tokens]
        if kind == "L10":
            if counts[0] != counts[1]:
                raise ValueError(f"composition={text!r}: L10 is 1:1; expected e.g. 'L10:FePt'")
            return Composition("L10", tuple(sorted((symbol, 0.5) for symbol, _ in tokens)))
        if sorted(counts) != [1.0, 3.0]:
            raise ValueError(f"composition={text!r}: L12 is A3B; expected e.g. 'L12:Pt3Co'")
        return Composition(
            "L12",
            tuple(sorted((symbol, count / 4.0) for (symbol, _), count in zip(tokens, counts))),
        )
    if kind == "core-shell":
        main, *opts = (part.strip() for part in body.split(","))
        if main.count("@") != 1:
            raise ValueError(
                f"composition={text!r}: expected 'core-shell:CORE@SHELL', e.g. 'core-shell:Pd@Pt'"
            )
        core, shell = (_check_element(part.strip(), text) for part in main.split("@"))
        if core == shell:
            raise ValueError(f"composition={text!r}: core and shell are the same element")
        monolayers, thickness = 1, None
        for opt in opts:
            key, _, value = opt.partition("=")
            if key.strip().lower() != "shell" or not value:
                raise ValueError(
                    f"composition={text!r}: unknown option {opt!r}; expected 'shell=2ml' or 'shell=4.5A'"
                )
            monolayers, thickness = _parse_shell_option(value, text)
        return Composition("core-shell", (), core, shell, monolayers, thickness)
    # high-entropy alloy
    items = _parse_assignments(body, text)
    if not 3 <= len(items) <= _MAX_HEA_ELEMENTS:
        raise ValueError(
            f"composition={text!r}: hea needs 3 to {_MAX_HEA_ELEMENTS} elements, got {len(items)}"
        )
    if all(fraction is None for _, fraction in items):
        items = [(symbol, 1.0 / len(items)) for symbol, _ in items]
    return Composition("hea", _checked_fractions(items, text))


# --------------------------------------------------------------------------------------------
# Lattice constants
# --------------------------------------------------------------------------------------------


def _reference_state(symbol: str) -> dict:
    from ase.data import atomic_numbers, reference_states

    return reference_states[atomic_numbers[symbol]] or {}


def _atomic_volume(symbol: str) -> float:
    """Volume per atom (Å³) of the element's reference crystal structure."""
    state = _reference_state(symbol)
    symmetry, a = state.get("symmetry"), state.get("a")
    if symmetry == "fcc":
        return a**3 / 4.0
    if symmetry == "bcc":
        return a**3 / 2.0
    if symmetry == "hcp":
        return math.sqrt(3.0) / 4.0 * a**3 * state["c/a"]
    if symmetry == "diamond":
        return a**3 / 8.0
    if symmetry == "sc":
        return a**3
    from ase.data import atomic_numbers, covalent_radii

    # No simple reference crystal: close-pack spheres of the covalent radius.
    d_nn = 2.0 * covalent_radii[atomic_numbers[symbol]]
    logger.warning(
        "%s has no cubic/hcp reference state; using close packing at d_nn = %.2f Å", symbol, d_nn
    )
    return d_nn**3 / _SQRT2


def _nearest_neighbour_distance(symbol: str) -> float:
    """Nearest-neighbour distance (Å) of the element's reference crystal (for amorphous packing)."""
    state = _reference_state(symbol)
    symmetry, a = state.get("symmetry"), state.get("a")
    if symmetry == "fcc":
        return a / _SQRT2
    if symmetry == "bcc":
        return a * math.sqrt(3.0) / 2.0
    if symmetry == "hcp":
        return a
    if symmetry == "diamond":
        return a * math.sqrt(3.0) / 4.0
    return (_SQRT2 * _atomic_volume(symbol)) ** (1.0 / 3.0)


def _element_lattice(symbol: str, lattice: str) -> tuple[float, float]:
    """``(a, c/a)`` of one element on ``lattice``: its own if that is its reference structure,
    else the constants of ``lattice`` at the element's atomic volume (ideal c/a for hcp)."""
    state = _reference_state(symbol)
    if state.get("symmetry") == lattice:
        return state["a"], state.get("c/a", math.sqrt(8.0 / 3.0))
    volume = _atomic_volume(symbol)
    if lattice == "fcc":
        return (4.0 * volume) ** (1.0 / 3.0), math.sqrt(8.0 / 3.0)
    if lattice == "bcc":
        return (2.0 * volume) ** (1.0 / 3.0), math.sqrt(8.0 / 3.0)
    return (_SQRT2 * volume) ** (1.0 / 3.0), math.sqrt(8.0 / 3.0)


def _weights(composition: Composition) -> list[tuple[str, float]]:
    if composition.kind == "core-shell":
        # A thin shell grows pseudomorphically on the core: the core sets the lattice.
        return [(composition.core, 1.0)]
    return list(composition.fractions)


def lattice_constant(composition: str | Composition, lattice: str = "fcc") -> tuple[float, float]:
    """Lattice constant ``a`` (Å) and ``c/a`` of a composition on ``lattice`` by Vegard's law.

    ``a`` and ``c/a`` are fraction-weighted averages of the elemental values of
    ``ase.data.reference_states`` (core–shell: the core's, since a thin shell is pseudomorphic).
    An element whose reference structure differs from ``lattice`` enters with the constant of
    ``lattice`` at its own atomic volume. ``c/a`` is meaningful only for hcp.
    """
    composition = parse_composition(composition)
    if lattice not in LATTICES:
        raise ValueError(f"lattice={lattice!r}: expected one of {LATTICES}")
    a = c_over_a = 0.0
    for symbol, weight in _weights(composition):
        a_i, c_over_a_i = _element_lattice(symbol, lattice)
        a += weight * a_i
        c_over_a += weight * c_over_a_i
    return a, c_over_a


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def particle_diameter(atoms_or_positions) -> float:
    """Diameter (Å) of the sphere about the centre of mass that holds every atom centre."""
    if hasattr(atoms_or_positions, "get_center_of_mass"):
        positions = atoms_or_positions.get_positions()
        center = atoms_or_positions.get_center_of_mass() if len(atoms_or_positions) else np.zeros(3)
    else:
        positions = np.asarray(atoms_or_positions, dtype=np.float64).reshape(-1, 3)
        center = positions.mean(axis=0) if len(positions) else np.zeros(3)
    if len(positions) == 0:
        return 0.0
    return 2.0 * float(np.linalg.norm(positions - center, axis=1).max())


def rotation_matrix(orientation, rng: np.random.Generator | None = None) -> np.ndarray:
    """3×3 rotation matrix for an orientation spec.

    ``"none"`` gives the identity; ``"random"`` a uniformly distributed rotation (a random unit
    quaternion, drawn as a normalised 4D Gaussian vector from ``rng``); a triple
    ``(phi, theta, psi)`` in degrees gives the intrinsic z-y-z Euler rotation
    R = R_z(phi) R_y(theta) R_z(psi).
    """
    if isinstance(orientation, str):
        if orientation == "none":
            return np.eye(3)
        if orientation == "random":
            if rng is None:
                raise ValueError(
                    "rng=None: expected a numpy.random.Generator for a random orientation"
                )
            q = rng.normal(size=4)
            q /= np.linalg.norm(q)
            w, x, y, z = q
            return np.array(
                [
                    [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
                ]
            )
    else:
        try:
            angles = np.asarray(orientation, dtype=np.float64)
        except (TypeError, ValueError):
            angles = np.empty(0)
        if angles.shape == (3,) and np.all(np.isfinite(angles)):
            phi, theta, psi = np.deg2rad(angles)

            def rz(t):
                return np.array(
                    [[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]]
                )

            ry = np.array(
                [
                    [np.cos(theta), 0.0, np.sin(theta)],
                    [0.0, 1.0, 0.0],
                    [-np.sin(theta), 0.0, np.cos(theta)],
                ]
            )
            return rz(phi) @ ry @ rz(psi)
    raise ValueError(
        f"orientation={orientation!r}: expected 'random', 'none' or three Euler angles in degrees"
    )


def random_orientation(atoms, rng: np.random.Generator):
    """A copy of ``atoms`` rotated by a uniformly random rotation about its centre of mass."""
    rotated = atoms.copy()
    if len(rotated) == 0:
        return rotated
    center = rotated.get_center_of_mass()
    matrix = rotation_matrix("random", rng)
    rotated.positions = (rotated.positions - center) @ matrix.T + center
    return rotated


def place_in_volume(atoms, size: int, sampling: float, margin: float = 2.0):
    """A copy of ``atoms`` with its centre of mass at the volume centre on all three axes.

    Parameters
    ----------
    atoms
        ``ase.Atoms`` (positions in Å).
    size
        Volume edge in voxels.
    sampling
        Voxel size in Å.
    margin
        Clearance in Å added to the particle diameter before comparing with ``size * sampling``.

    Raises
    ------
    ValueError
        If the diameter (about the centre of mass) plus ``margin`` exceeds ``size * sampling``:
        only a sphere about the rotation centre fits in the volume at every tilt angle.
    """
    from simgen.geometry import volume_center

    if (
        isinstance(size, bool)
        or not isinstance(size, (int, np.integer, float))
        or size <= 0
        or size != int(size)
    ):
        raise ValueError(f"size={size!r}: expected a positive number of voxels")
    size = int(size)
    if not np.isfinite(sampling) or sampling <= 0:
        raise ValueError(f"sampling={sampling!r}: expected a positive voxel size in Å")
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin={margin!r}: expected a non-negative clearance in Å")
    if len(atoms) == 0:
        raise ValueError("atoms: expected at least one atom")
    placed = atoms.copy()
    diameter = particle_diameter(placed)
    extent = size * sampling
    if diameter + margin > extent:
        raise ValueError(
            f"particle diameter {diameter:.1f} Å does not fit in a volume of {size}×{sampling:g} Å = {extent:.1f} Å "
            f"at every tilt angle (needs {diameter + margin:.1f} Å including a {margin:g} Å margin: "
            f"size >= {math.ceil((diameter + margin) / sampling)} voxels)"
        )
    center = volume_center(size, sampling)
    placed.positions = placed.positions - placed.get_center_of_mass() + center
    placed.cell = np.eye(3) * extent
    placed.pbc = False
    return placed


def _fibonacci_directions(count: int) -> np.ndarray:
    index = np.arange(count) + 0.5
    z = 1.0 - 2.0 * index / count
    phi = math.pi * (1.0 + math.sqrt(5.0)) * index
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _exposed(
    positions: np.ndarray, reach: float, directions: np.ndarray, clearance: float
) -> np.ndarray:
    """Atoms that a probe centred ``reach`` Å away along some direction touches while no other
    atom lies within ``clearance`` Å of the probe centre."""
    from scipy.spatial import cKDTree

    n = len(positions)
    if n <= 4:
        return np.ones(n, dtype=bool)
    probes = (positions[:, None, :] + reach * directions[None, :, :]).reshape(-1, 3)
    distance, index = cKDTree(positions).query(probes, k=2)
    owner = np.repeat(np.arange(n), len(directions))
    nearest_other = np.where(index[:, 0] == owner, distance[:, 1], distance[:, 0])
    return (nearest_other >= clearance).reshape(n, len(directions)).any(axis=1)


def surface_layers(
    positions: np.ndarray,
    n_layers: int = 1,
    *,
    bond: float | None = None,
    coordination: int | None = None,
    cutoff: float = 1.2,
) -> np.ndarray:
    """Index of the atomic layer counted from the surface: 0 outermost, 1 next, ..., -1 deeper.

    Layers are peeled one at a time; an atom belongs to the current outermost layer if

    - ``coordination`` is given (crystals): it has fewer than ``coordination`` neighbours
      within ``cutoff × bond`` among the atoms not yet peeled (12 and 1.2 for fcc, hcp and the
      twinned fcc clusters; 8 and 1.08 for bcc, whose second shell lies at 1.155 bonds);
    - otherwise (amorphous): a probe sphere one bond in radius, touching the atom, fits without
      overlapping any other atom (a rolling-ball test, 96 directions on a Fibonacci sphere).
      The probe is larger than an atom so that the holes of a random packing do not count as
      surface.

    Parameters
    ----------
    positions
        ``(N, 3)`` atom centres in Å.
    n_layers
        Number of layers to peel.
    bond
        Nearest-neighbour distance in Å; default the median nearest-neighbour distance.
    coordination
        Coordination number of a bulk atom, or ``None`` for the probe test.
    cutoff
        Neighbour cutoff in bonds for the coordination test.
    """
    from scipy.spatial import cKDTree

    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    layer = np.full(len(positions), -1, dtype=np.int64)
    if len(positions) < 2:
        layer[:] = 0
        return layer
    if bond is None:
        distance, _ = cKDTree(positions).query(positions, k=2)
        bond = float(np.median(distance[:, 1]))
    directions = _fibonacci_directions(96)
    remaining = np.arange(len(positions))
    for index in range(n_layers):
        if len(remaining) == 0:
            break
        subset = positions[remaining]
        if coordination is not None:
            tree = cKDTree(subset)
            neighbours = tree.query_ball_point(subset, cutoff * bond, return_length=True) - 1
            exposed = neighbours < coordination
        else:
            exposed = _exposed(subset, 1.5 * bond, directions, 0.95 * 1.5 * bond)
        layer[remaining[exposed]] = index
        remaining = remaining[~exposed]
    return layer


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


@dataclass
class _Shape:
    positions: np.ndarray  # (N, 3) Å
    fcc_a: float | None  # lattice constant if the sites are one axis-aligned fcc lattice
    coordination: int | None = 12  # bulk coordination number (None: amorphous)
    cutoff: float = 1.2  # neighbour cutoff in nearest-neighbour distances


def _lattice_block(lattice: str, a: float, c_over_a: float, half_extent: np.ndarray) -> np.ndarray:
    """Sites of ``lattice`` filling the box ``[-half_extent, half_extent]`` (Å), one site at 0."""
    from ase.build import bulk

    if lattice == "hcp":
        cell = bulk("Mg", "hcp", a=a, c=a * c_over_a, orthorhombic=True)
    else:
        cell = bulk("Cu", lattice, a=a, cubic=True)
    lengths = cell.cell.lengths()
    repeats = [
        np.arange(-int(np.ceil(h / length)) - 1, int(np.ceil(h / length)) + 2)
        for h, length in zip(half_extent, lengths)
    ]
    grid = np.stack(np.meshgrid(*repeats, indexing="ij"), axis=-1).reshape(-1, 3) * lengths
    sites = (grid[:, None, :] + cell.positions[None, :, :]).reshape(-1, 3)
    inside = np.all(np.abs(sites) <= half_extent + 1.5 * lengths.max(), axis=1)
    return sites[inside]


def _cut(
    lattice: str, a: float, c_over_a: float, half_extent: np.ndarray, inside, offset=None
) -> np.ndarray:
    sites = _lattice_block(lattice, a, c_over_a, half_extent)
    if offset is not None:
        sites = sites - np.asarray(offset)
    return sites[inside(sites)]


def _shell_count(diameter: float, per_shell: float) -> int:
    """Shells k >= 2 (centre atom = shell 1) whose diameter (k-1)·per_shell is closest to ``diameter``."""
    return max(2, 1 + int(round(diameter / per_shell)))


def _option_int(options: dict, name: str, minimum: int) -> int | None:
    if name not in options:
        return None
    value = options.pop(name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def _option_float(
    options: dict, name: str, default: float | None, minimum: float = 0.0
) -> float | None:
    value = options.pop(name, default)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a number") from None
    if not np.isfinite(value) or value <= minimum:
        raise ValueError(f"{name}={value!r}: expected a number > {minimum:g}")
    return value


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


def _require_size(size_nm, morphology: str, alternative: str) -> float:
    if size_nm is None:
        raise ValueError(
            f"size_nm=None: expected a diameter in nm for {morphology} (or the option {alternative})"
        )
    return size_nm * 10.0


def _build_shape(morphology, size_nm, composition, options, rng) -> _Shape:
    from ase.cluster import Decahedron, Icosahedron, Octahedron, wulff_construction

    lattice = options.pop("lattice", "fcc")
    if lattice not in LATTICES:
        raise ValueError(f"lattice={lattice!r}: expected one of {LATTICES}")
    if lattice != "fcc" and morphology not in ("sphere", "ellipsoid"):
        raise ValueError(
            f"lattice={lattice!r}: only sphere and ellipsoid accept a lattice other than fcc"
        )
    a, c_over_a = lattice_constant(composition, lattice)
    a = _option_float(options, "lattice_constant", a)
    d_nn = a / _SQRT2  # fcc nearest-neighbour distance

    if morphology in ("cuboctahedron", "icosahedron", "truncated_octahedron"):
        shells = _option_int(options, "shells", 1)
        if shells is None:
            diameter = _require_size(size_nm, morphology, "shells=")
            # Vertex-to-vertex diameters: 2(k-1)·d_nn (cuboctahedron, Mackay icosahedron),
            # (k-1)·√5·a (regular truncated octahedron with cutoff k-1).
            per_shell = math.sqrt(5.0) * a if morphology == "truncated_octahedron" else 2.0 * d_nn
            shells = _shell_count(diameter, per_shell)
        if morphology == "icosahedron":
            return _Shape(Icosahedron("Cu", shells, latticeconstant=a).positions, None)
        if morphology == "cuboctahedron":
            cluster = Octahedron("Cu", 2 * shells - 1, shells - 1, latticeconstant=a)
        else:
            if shells < 2:
                raise ValueError(f"shells={shells}: expected >= 2 for a truncated octahedron")
            cluster = Octahedron("Cu", 3 * (shells - 1) + 1, shells - 1, latticeconstant=a)
        return _Shape(cluster.positions, a)

    if morphology in ("octahedron", "cube", "tetrahedron"):
        length = _option_int(options, "length", 2)
        if length is None:
            diameter = _require_size(size_nm, morphology, "length=")
            # Circumscribed diameters with `length` atoms per edge (m = length - 1): (m·a/√2)·√2
            # vertex to vertex for the octahedron, the body diagonal √3·m·a for the cube of m
            # unit cells, 2·√(3/8)·m·a/√2 = (√3/2)·m·a for the tetrahedron.
            per_step = {"octahedron": a, "cube": math.sqrt(3.0) * a}.get(
                morphology, math.sqrt(3.0) / 2.0 * a
            )
            length = _shell_count(diameter, per_step)
        if morphology == "octahedron":
            return _Shape(Octahedron("Cu", length, 0, latticeconstant=a).positions, a)
        return _Shape(_fcc_polyhedron(morphology, length, a), a)

    if morphology in ("decahedron", "marks_decahedron"):
        marks_shape = morphology == "marks_decahedron"
        p = _option_int(options, "p", 1)
        q = _option_int(options, "q", 1)
        r = _option_int(options, "r", 1 if marks_shape else 0)
        marks = _option_int(options, "marks", 1 if marks_shape else 0)
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
            return _Shape(build(p), None)
        diameter = _require_size(size_nm, morphology, "p=")
        best, best_error = None, np.inf
        for p_ in range(2, 200):
            positions = build(p_)
            error = abs(particle_diameter(positions) - diameter)
            if error < best_error:
                best, best_error = positions, error
            elif particle_diameter(positions) > diameter:
                break
        return _Shape(best, None)

    if morphology == "wulff":
        energies = options.pop("surface_energies", DEFAULT_SURFACE_ENERGIES)
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
        n_atoms = _option_int(options, "n_atoms", 1)

        def build(n):
            cluster = wulff_construction(
                "Cu", surfaces, gammas, int(n), "fcc", rounding="closest", latticeconstant=a
            )
            return cluster.positions

        if n_atoms is not None:
            return _Shape(build(n_atoms), a)
        diameter = _require_size(size_nm, morphology, "n_atoms=")
        density = 4.0 / a**3
        # A Wulff polyhedron fills ~70% of its circumscribed sphere; correct once by measurement.
        n_atoms = max(13, round(0.7 * density * math.pi / 6.0 * diameter**3))
        positions = build(n_atoms)
        measured = particle_diameter(positions)
        if measured > 0 and abs(measured - diameter) > 0.1 * diameter:
            positions = build(max(13, round(n_atoms * (diameter / measured) ** 3)))
        return _Shape(positions, a)

    if morphology in ("sphere", "ellipsoid"):
        radius = _require_size(size_nm, morphology, "") / 2.0
        if morphology == "sphere":
            semi_axes = np.full(3, radius)
        else:
            aspect = options.pop("aspect", (1.0, 0.8, 0.6))
            try:
                aspect = np.asarray(aspect, dtype=np.float64).reshape(3)
            except (TypeError, ValueError):
                raise ValueError(
                    f"aspect={aspect!r}: expected three positive axis ratios"
                ) from None
            if not np.all(np.isfinite(aspect)) or np.any(aspect <= 0):
                raise ValueError(f"aspect={aspect!r}: expected three positive axis ratios")
            semi_axes = radius * aspect / aspect.max()
        # L1₀ order: centring the cut on (a/4, 0, a/4) makes the 2-fold axis through the centre
        # swap the two (001) sublattices, so the particle holds exactly as many A as B atoms.
        offset = (
            (a / 4.0, 0.0, a / 4.0) if (composition.kind == "L10" and lattice == "fcc") else None
        )

        def inside(sites):
            return np.sum((sites / semi_axes) ** 2, axis=1) <= 1.0 + 1e-9

        positions = _cut(lattice, a, c_over_a, semi_axes, inside, offset)
        if lattice == "bcc":
            return _Shape(positions, None, coordination=8, cutoff=1.08)
        return _Shape(positions, a if lattice == "fcc" else None)

    if morphology == "random_fcc":
        radius = _require_size(size_nm, morphology, "") / 2.0
        n_spheres = _option_int(options, "n_spheres", 1)
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
        smoothing = _option_float(options, "smoothing", 0.3 * radius)

        def inside(sites):
            # Polynomial smooth minimum of the spheres' signed distances (fillets of width k).
            field = np.linalg.norm(sites - centers[0], axis=1) - radii[0]
            for center, r in zip(centers[1:], radii[1:]):
                other = np.linalg.norm(sites - center, axis=1) - r
                h = np.clip(smoothing - np.abs(field - other), 0.0, None) / smoothing
                field = np.minimum(field, other) - h * h * smoothing / 4.0
            return field <= 0.0

        positions = _cut("fcc", a, c_over_a, np.full(3, radius + smoothing), inside)
        return _Shape(positions, a)

    if morphology == "amorphous":
        radius = _require_size(size_nm, morphology, "") / 2.0
        return _Shape(
            _amorphous_packing(radius, composition, options, rng), None, coordination=None
        )

    raise ValueError(f"morphology={morphology!r}: expected one of {MORPHOLOGIES}")


def _amorphous_packing(radius: float, composition: Composition, options: dict, rng) -> np.ndarray:
    """Random dense packing in a sphere of ``radius`` Å at a realistic number density.

    Random sequential addition jams at a packing fraction of ~0.38, below that of a metallic
    glass at its minimum interatomic distance, so instead ``N = ρ·V`` uniformly random points are
    relaxed by pairwise overlap removal (each pair closer than ``min_distance`` is pushed apart
    symmetrically to a random 1–1.2 ``min_distance``, so that distances do not all pile up at
    contact; points leaving the sphere are put back on its surface) until no pair is closer.
    ``sweeps`` hard-sphere Monte Carlo sweeps (Gaussian trial moves of 0.03 ``min_distance``,
    rejected if they bring an atom closer than ``min_distance`` to another or out of the sphere)
    then shake the packing further.
    """
    from scipy.spatial import cKDTree

    weights = _weights(composition)
    volume_per_atom = sum(w * _atomic_volume(s) for s, w in weights)
    d_nn = sum(w * _nearest_neighbour_distance(s) for s, w in weights)
    density_factor = _option_float(options, "density_factor", 0.98)
    min_distance = _option_float(options, "min_distance", 0.85 * d_nn)
    sweeps = _option_int(options, "sweeps", 0)
    sweeps = 20 if sweeps is None else sweeps
    n_atoms = _option_int(options, "n_atoms", 1)
    if n_atoms is None:
        n_atoms = max(1, round(density_factor / volume_per_atom * 4.0 / 3.0 * math.pi * radius**3))
    packing = n_atoms * math.pi / 6.0 * min_distance**3 / (4.0 / 3.0 * math.pi * radius**3)
    if packing > 0.6:
        raise ValueError(
            f"min_distance={min_distance:g}: {n_atoms} atoms in a {2 * radius:.1f} Å sphere at this distance "
            f"would pack at {packing:.2f}; expected at most 0.6 (random close packing is 0.64)"
        )
    direction = rng.normal(size=(n_atoms, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    points = direction * (radius * rng.random(n_atoms) ** (1.0 / 3.0))[:, None]
    max_iterations = 5000
    for _ in range(max_iterations):
        pairs = cKDTree(points).query_pairs(min_distance, output_type="ndarray")
        if len(pairs) == 0:
            break
        i, j = pairs[:, 0], pairs[:, 1]
        separation = points[j] - points[i]
        distance = np.linalg.norm(separation, axis=1)
        coincident = distance < 1e-9
        if np.any(coincident):
            separation[coincident] = rng.normal(size=(int(coincident.sum()), 3))
            distance[coincident] = np.linalg.norm(separation[coincident], axis=1)
        target = min_distance * (1.0 + _PUSH_SPREAD * rng.random(len(pairs)))
        step = (0.5 * (target - distance) / distance)[:, None] * separation
        shift = np.zeros_like(points)
        np.add.at(shift, i, -step)
        np.add.at(shift, j, step)
        points += shift
        norm = np.linalg.norm(points, axis=1)
        outside = norm > radius
        points[outside] *= (radius / norm[outside])[:, None]
    else:
        raise ValueError(
            f"min_distance={min_distance:g}: amorphous packing of {n_atoms} atoms did not converge in "
            f"{max_iterations} iterations; expected a smaller min_distance or density_factor"
        )
    for _ in range(sweeps):
        trial = points + rng.normal(scale=_MC_STEP * min_distance, size=points.shape)
        moved = np.linalg.norm(trial, axis=1) <= radius
        while True:
            candidate = np.where(moved[:, None], trial, points)
            pairs = cKDTree(candidate).query_pairs(min_distance, output_type="ndarray")
            clash = np.zeros(len(points), dtype=bool)
            clash[pairs.reshape(-1)] = True
            clash &= moved
            if not clash.any():
                break
            moved &= ~clash  # reject those moves; the others are re-checked against the rest
        points = candidate
    return points


# --------------------------------------------------------------------------------------------
# Chemistry
# --------------------------------------------------------------------------------------------


def _fcc_indices(positions: np.ndarray, a: float | None) -> np.ndarray | None:
    """Integer fcc coordinates (units of a/2, even sum) relative to the site nearest the
    centroid, or ``None`` if the sites are not one axis-aligned fcc lattice of constant ``a``."""
    if a is None or len(positions) == 0:
        return None
    reference = positions[np.argmin(np.linalg.norm(positions - positions.mean(axis=0), axis=1))]
    scaled = (positions - reference) / (a / 2.0)
    indices = np.rint(scaled)
    if np.max(np.abs(scaled - indices)) > 1e-3:
        return None
    indices = indices.astype(np.int64)
    if np.any(indices.sum(axis=1) % 2 != 0):
        return None
    return indices


def _exact_counts(fractions: Sequence[float], n: int) -> np.ndarray:
    """Integer counts summing to ``n`` closest to ``n·fractions`` (largest remainder)."""
    ideal = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(ideal).astype(np.int64)
    order = np.argsort(-(ideal - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def _random_alloy(fractions: tuple[tuple[str, float], ...], n: int, rng) -> np.ndarray:
    """Symbols of a random alloy: exactly the nominal counts (rounded), at random sites."""
    symbols = [symbol for symbol, _ in fractions]
    counts = _exact_counts([fraction for _, fraction in fractions], n)
    species = np.repeat(np.arange(len(symbols)), counts)
    return np.asarray(symbols)[rng.permutation(species)]


def _assign_species(
    shape: _Shape, composition: Composition, morphology: str, options: dict, rng
) -> np.ndarray:
    positions = shape.positions
    n = len(positions)
    if composition.kind == "element":
        return np.full(n, composition.elements[0])
    if composition.kind in ("alloy", "hea"):
        return _random_alloy(composition.fractions, n, rng)
    if composition.kind == "core-shell":
        monolayers = _option_int(options, "shell_monolayers", 1)
        thickness = _option_float(options, "shell_thickness", None, minimum=-1e-12)
        if monolayers is not None and thickness is not None:
            raise ValueError(
                f"shell_thickness={thickness}: give either shell_thickness or shell_monolayers"
            )
        if monolayers is None and thickness is None:
            monolayers, thickness = composition.shell_monolayers, composition.shell_thickness
        if thickness is not None:
            # Shell: atoms within ``thickness`` Å of an outermost-layer atom (0 -> one monolayer).
            from scipy.spatial import cKDTree

            outer = (
                surface_layers(positions, 1, coordination=shape.coordination, cutoff=shape.cutoff)
                == 0
            )
            distance, _ = cKDTree(positions[outer]).query(positions, k=1)
            in_shell = distance <= thickness + 1e-6
        else:
            layers = surface_layers(
                positions, monolayers, coordination=shape.coordination, cutoff=shape.cutoff
            )
            in_shell = layers >= 0
        return np.where(in_shell, composition.shell, composition.core)

    # Chemically ordered phases need the sites of one fcc lattice.
    indices = _fcc_indices(positions, shape.fcc_a)
    if indices is None:
        logger.info(
            "composition %s: %s is not a single fcc crystal; using a random alloy with the same fractions",
            composition.label,
            morphology,
        )
        return _random_alloy(composition.fractions, n, rng)
    if composition.kind == "L10":
        first, second = composition.elements
        # Alternating (001) planes (spacing a/2): the plane through the central site holds `first`.
        return np.where(indices[:, 2] % 2 == 0, first, second)
    (major, _), (minor, _) = sorted(composition.fractions, key=lambda item: -item[1])
    # L1₂ A₃B: B on one simple-cubic sublattice of the fcc lattice (the cube corners), A on the
    # other three (face centres). Of the four equivalent choices, take the one whose B count is
    # closest to N/4: the terminations of a finite particle shift the composition otherwise.
    parity = indices % 2
    choices = [
        np.all(parity == pattern, axis=1)
        for pattern in ((0, 0, 0), (1, 1, 0), (1, 0, 1), (0, 1, 1))
    ]
    corners = min(choices, key=lambda mask: abs(mask.sum() - n / 4.0))
    return np.where(corners, minor, major)


# --------------------------------------------------------------------------------------------
# The particle
# --------------------------------------------------------------------------------------------

_SHAPE_OPTIONS = {
    "cuboctahedron": {"shells"},
    "icosahedron": {"shells"},
    "truncated_octahedron": {"shells"},
    "decahedron": {"p", "q", "r", "marks"},
    "marks_decahedron": {"p", "q", "r", "marks"},
    "octahedron": {"length"},
    "cube": {"length"},
    "tetrahedron": {"length"},
    "wulff": {"surface_energies", "n_atoms"},
    "sphere": {"lattice"},
    "ellipsoid": {"lattice", "aspect"},
    "random_fcc": {"n_spheres", "smoothing"},
    "amorphous": {"min_distance", "density_factor", "n_atoms", "sweeps"},
}
_COMMON_OPTIONS = {"lattice_constant", "b_factor", "shell_monolayers", "shell_thickness"}


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
        Positions in Å with the centre of mass at the origin, zero cell, no periodicity.

    Notes
    -----
    Ordered compositions (L1₀, L1₂) need the sites of a single fcc crystal (every fcc shape,
    including the octahedron, cube and tetrahedron, has them). On icosahedra,
    decahedra (Ino and Marks), amorphous particles and bcc/hcp lattices they fall back to a random alloy with the
    same fractions and log a warning (so that a dataset crossing morphologies with compositions
    still runs). L1₀ planes are normal to z before rotation (the c axis is not contracted).
    Random draws happen in a fixed order: shape, species, vacancies, displacements, rotation.
    """
    from ase import Atoms

    if morphology not in MORPHOLOGIES:
        raise ValueError(f"morphology={morphology!r}: expected one of {MORPHOLOGIES}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng={rng!r}: expected a numpy.random.Generator")
    composition = parse_composition(composition)
    allowed = _SHAPE_OPTIONS[morphology] | _COMMON_OPTIONS
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
    shape = _build_shape(morphology, size_nm, composition, options, rng)
    if len(shape.positions) == 0:
        raise ValueError(
            f"size_nm={size_nm!r}: the {morphology} holds no atoms; expected a larger size"
        )
    symbols = _assign_species(shape, composition, morphology, options, rng)
    options.pop("shell_monolayers", None)
    options.pop("shell_thickness", None)
    if options:
        logger.debug(
            "options not used by %s with %s: %s", morphology, composition.label, sorted(options)
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
    atoms.positions -= atoms.get_center_of_mass()
    matrix = rotation_matrix(orientation, rng)
    atoms.positions = atoms.positions @ matrix.T
    atoms.info.update(
        morphology=morphology,
        composition=composition.label,
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


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

_POSITION_KEYS = (
    "model",
    "atoms",
    "positions",
    "pos",
    "xyz",
    "coordinates",
    "coords",
    "atom_pos",
    "atomPos",
)
_TYPE_KEYS = (
    "types",
    "atomtype",
    "atom_type",
    "atom_types",
    "atomtypes",
    "species",
    "type",
    "numbers",
    "elements",
)
_EXPECTED = "an atomic model (.xyz/.extxyz/.cif or any ASE format, .npy or .mat 3×N positions with types, .txt 'species x y z')"


def _elements_list(elements) -> list[str] | None:
    if elements is None:
        return None
    if isinstance(elements, str):
        elements = [part.strip() for part in elements.split(",") if part.strip()]
    elements = list(elements)
    for symbol in elements:
        _check_element(symbol, ",".join(map(str, elements)))
    if not elements:
        raise ValueError("elements=[]: expected element symbols, e.g. ['Fe', 'Pt']")
    return elements


def _atoms_from_arrays(positions, types, elements, path, index_base: int):
    from ase import Atoms

    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or 3 not in positions.shape:
        raise ValueError(
            f"path={str(path)!r}: positions of shape {positions.shape}; expected 3×N or N×3"
        )
    if positions.shape[0] == 3:
        positions = positions.T
    if types is None:
        if elements is None or len(elements) != 1:
            raise ValueError(
                f"elements={elements!r}: {path} holds positions only; expected exactly one element symbol"
            )
        return Atoms(symbols=elements * len(positions), positions=positions, pbc=False)
    types = np.asarray(types).reshape(-1)
    if len(types) != len(positions):
        raise ValueError(
            f"path={str(path)!r}: {len(types)} types for {len(positions)} atoms; expected one per atom"
        )
    if types.dtype.kind in "US":
        symbols = [str(t).strip() for t in types]
        for symbol in symbols:
            _check_element(symbol, str(path))
        return Atoms(symbols=symbols, positions=positions, pbc=False)
    species = np.rint(types.astype(np.float64)).astype(np.int64)
    present = sorted(set(species.tolist()))
    if elements is None:
        raise ValueError(
            f"elements=None: {path} labels atoms by species index {present}; expected element symbols for "
            f"indices {index_base}, {index_base + 1}, ... (e.g. elements=['Fe', 'Pt'])"
        )
    if present[0] < index_base or present[-1] >= index_base + len(elements):
        raise ValueError(
            f"elements={elements!r}: {path} has species indices {present}; expected indices "
            f"{index_base}..{index_base + len(elements) - 1} (one element per index)"
        )
    symbols = [elements[s - index_base] for s in species]
    return Atoms(symbols=symbols, positions=positions, pbc=False)


def _read_mat(
    path: Path, key: str | None, types_key: str | None
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        from scipy.io import loadmat

        data = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    except NotImplementedError:  # MATLAB v7.3 is HDF5
        import h5py

        with h5py.File(path, "r") as handle:
            data = {k: np.asarray(handle[k]) for k in handle if isinstance(handle[k], h5py.Dataset)}
    except Exception as error:
        raise ValueError(
            f"path={str(path)!r}: cannot read as MATLAB .mat ({error}); expected {_EXPECTED}"
        ) from None

    def pick(explicit, candidates, what):
        if explicit is not None:
            if explicit not in data:
                raise ValueError(
                    f"key={explicit!r}: not in {path} (keys {sorted(data)}); expected the {what} array"
                )
            return explicit
        lowered = {k.lower(): k for k in data}
        for candidate in candidates:
            if candidate.lower() in lowered:
                return lowered[candidate.lower()]
        return None

    position_key = pick(key, _POSITION_KEYS, "positions")
    if position_key is None:
        raise ValueError(
            f"path={str(path)!r}: no positions among keys {sorted(data)}; pass key= (expected e.g. 'model')"
        )
    positions = np.asarray(data[position_key])
    type_key = pick(types_key, _TYPE_KEYS, "types")
    types = (
        np.asarray(data[type_key]).reshape(-1)
        if type_key is not None and type_key != position_key
        else None
    )
    if types is None and positions.ndim == 2 and 4 in positions.shape and 3 not in positions.shape:
        positions, types = _split_species(positions)
    return positions, types


def _split_species(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 4×N or N×4 array: species index first, then x, y, z."""
    if array.shape[0] == 4 and array.shape[1] != 4:
        array = array.T
    return array[:, 1:4], array[:, 0]


def _read_model(
    path,
    *,
    elements: Sequence[str] | str | None = None,
    key: str | None = None,
    types=None,
    index_base: int = 1,
    format: str | None = None,
):
    """Read an atomic model (positions in Å).

    Parameters
    ----------
    path
        ``.npy``: 3×N or N×3 positions, or 4×N / N×4 with the species index first; ``.mat``
        (MATLAB, v7.3 via h5py): positions under ``key`` (default the first of 'model', 'atoms',
        'positions', ...) and species under 'types'/'atomtype'/... if present; ``.txt`` / ``.dat``:
        columns ``species x y z`` (``%`` and ``#`` comments), as the AET supplementary data;
        anything else is read by ``ase.io.read`` (xyz, extxyz, cif, pdb, ...; plain XYZ with
        tabs, CRLF line ends or a blank comment line included).
    elements
        Element symbols for species indices ``index_base``, ``index_base + 1``, ... (a list or
        "Fe,Pt"); for positions without types, the one element of every atom.
    key
        ``.mat`` key of the positions array.
    types
        Species indices or symbols (array), or a ``.npy`` file of them, for ``.npy`` positions.
    index_base
        The species index that means ``elements[0]`` (default 1, MATLAB style).
    format
        ASE format name, to override detection by suffix.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be read as an atomic model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no such file; expected {_EXPECTED}")
    elements = _elements_list(elements)
    suffix = path.suffix.lower()
    if format is None and suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as error:
            raise ValueError(
                f"path={str(path)!r}: cannot read as .npy ({error}); expected {_EXPECTED}"
            ) from None
        if isinstance(types, (str, Path)):
            types = np.load(types, allow_pickle=False)
        if types is None and array.ndim == 2 and 4 in array.shape and 3 not in array.shape:
            array, types = _split_species(array)
        return _atoms_from_arrays(array, types, elements, path, index_base)
    if format is None and suffix == ".mat":
        positions, mat_types = _read_mat(path, key, None)
        return _atoms_from_arrays(
            positions, mat_types if types is None else types, elements, path, index_base
        )
    if format is None and suffix in (".txt", ".dat"):
        try:
            table = np.loadtxt(path, comments=("%", "#"), ndmin=2)
        except Exception as error:
            raise ValueError(
                f"path={str(path)!r}: cannot read as columns 'species x y z' ({error})"
            ) from None
        if table.shape[1] == 4:
            return _atoms_from_arrays(table[:, 1:], table[:, 0], elements, path, index_base)
        if table.shape[1] == 3:
            return _atoms_from_arrays(table, types, elements, path, index_base)
        raise ValueError(
            f"path={str(path)!r}: {table.shape[1]} columns; expected 'species x y z' or 'x y z'"
        )

    from ase.io import read

    try:
        atoms = read(str(path), format=format)
    except Exception as error:
        if suffix == ".xyz":
            atoms = _read_plain_xyz(path)
            if atoms is not None:
                return atoms
        raise ValueError(
            f"path={str(path)!r}: ASE could not read it ({error}); expected {_EXPECTED}"
        ) from None
    if isinstance(atoms, list):
        atoms = atoms[-1]
    return atoms


def load_model(path, *, allow_empty: bool = False, **options):
    """Read an atomic model (positions in Å) and check it: finite positions, at least one atom.

    ``options`` are those of :func:`_read_model` (``elements``, ``key``, ``types``,
    ``index_base``, ``format``), which lists the formats. ``allow_empty`` accepts a model with no
    atoms (a prediction may rightly be empty).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be read as an atomic model, holds no atoms (unless ``allow_empty``) or
        has a NaN or infinite coordinate.
    """
    atoms = _read_model(path, **options)
    if len(atoms) == 0 and not allow_empty:
        raise ValueError(f"path={str(path)!r}: holds no atoms; expected {_EXPECTED}")
    bad = np.flatnonzero(~np.isfinite(atoms.get_positions()).all(axis=1))
    if len(bad):
        raise ValueError(
            f"path={str(path)!r}: atom {int(bad[0]) + 1} (of {len(bad)} such) has a NaN or "
            "infinite coordinate; expected finite positions in Å"
        )
    return atoms


def _read_plain_xyz(path: Path):
    """Tolerant plain-XYZ reader (count line, comment line, 'symbol x y z' rows) or None."""
    from ase import Atoms

    try:
        lines = path.read_text(errors="replace").splitlines()
        count = int(lines[0].split()[0])
        rows = [line.split() for line in lines[2 : 2 + count]]
        symbols = [row[0] for row in rows]
        positions = np.array([[float(v) for v in row[1:4]] for row in rows])
        return Atoms(symbols=symbols, positions=positions, pbc=False)
    except Exception:
        return None


def write_model(atoms, path) -> None:
    """Write ``atoms`` as extended XYZ (``ase.io.write``), readable back by :func:`load_model`."""
    from ase.io import write

    write(str(path), atoms, format="extxyz")
