"""Lattices: the lattice constant of a composition (Vegard's law) and blocks of lattice sites.

The lattice constant follows the composition: Vegard's law (a linear average weighted by atomic
fraction) over the elemental constants of ``ase.data.reference_states``; elements whose
reference structure is not the requested lattice (bcc Fe, hcp Co in an fcc alloy) enter with the
constant of that lattice at the same atomic volume (Fe -> 3.62 Å fcc, Co -> 3.54 Å fcc).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from simgen.structures.compositions import Composition, parse_composition

__all__ = ["LATTICES", "lattice_constant", "lattice_block", "lattice_cut"]

logger = logging.getLogger(__name__)

LATTICES: tuple[str, ...] = ("fcc", "bcc", "hcp")

_SQRT2 = math.sqrt(2.0)


def _reference_state(symbol: str) -> dict:
    from ase.data import atomic_numbers, reference_states

    return reference_states[atomic_numbers[symbol]] or {}


def atomic_volume(symbol: str) -> float:
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


def nearest_neighbour_distance(symbol: str) -> float:
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
    return (_SQRT2 * atomic_volume(symbol)) ** (1.0 / 3.0)


def _element_lattice(symbol: str, lattice: str) -> tuple[float, float]:
    """``(a, c/a)`` of one element on ``lattice``: its own if that is its reference structure,
    else the constants of ``lattice`` at the element's atomic volume (ideal c/a for hcp)."""
    state = _reference_state(symbol)
    if state.get("symmetry") == lattice:
        return state["a"], state.get("c/a", math.sqrt(8.0 / 3.0))
    volume = atomic_volume(symbol)
    if lattice == "fcc":
        return (4.0 * volume) ** (1.0 / 3.0), math.sqrt(8.0 / 3.0)
    if lattice == "bcc":
        return (2.0 * volume) ** (1.0 / 3.0), math.sqrt(8.0 / 3.0)
    return (_SQRT2 * volume) ** (1.0 / 3.0), math.sqrt(8.0 / 3.0)


def vegard_weights(composition: Composition) -> list[tuple[str, float]]:
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
    for symbol, weight in vegard_weights(composition):
        a_i, c_over_a_i = _element_lattice(symbol, lattice)
        a += weight * a_i
        c_over_a += weight * c_over_a_i
    return a, c_over_a


def lattice_block(lattice: str, a: float, c_over_a: float, half_extent: np.ndarray) -> np.ndarray:
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


def lattice_cut(
    lattice: str, a: float, c_over_a: float, half_extent: np.ndarray, inside, offset=None
) -> np.ndarray:
    sites = lattice_block(lattice, a, c_over_a, half_extent)
    if offset is not None:
        sites = sites - np.asarray(offset)
    return sites[inside(sites)]
