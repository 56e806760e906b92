"""Chemical ordering: which element sits on which site (random alloy, L1₀, L1₂, core–shell)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from simgen.structures.compositions import Composition, parse_composition
from simgen.structures.morphologies import Shape
from simgen.structures.parameters import check_float, check_int
from simgen.structures.surface import surface_layers

__all__ = ["assign_species", "realised_ordering"]

logger = logging.getLogger(__name__)

#: Morphologies whose sites are not one fcc crystal (twinned or amorphous): no L1₀ / L1₂ order.
NOT_SINGLE_FCC_CRYSTAL = frozenset({"icosahedron", "decahedron", "marks_decahedron", "amorphous"})
_WARNED: set[tuple[str, str]] = set()


def realised_ordering(morphology: str, composition, lattice: str = "fcc") -> str:
    """The chemical order :func:`assign_species` will make for this morphology and composition.

    ``composition``'s kind (``"L10"``, ``"alloy"``, ...), except ``"alloy"`` for an ordered phase
    (L1₀, L1₂) on a particle that is not one fcc crystal (icosahedron, decahedra, amorphous, or a
    bcc/hcp ``lattice``), where a random alloy with the same fractions is made instead.
    """
    composition = parse_composition(composition)
    if composition.is_ordered and (morphology in NOT_SINGLE_FCC_CRYSTAL or lattice != "fcc"):
        return "alloy"
    return composition.kind


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


def assign_species(
    shape: Shape,
    composition: Composition,
    morphology: str,
    rng: np.random.Generator,
    *,
    shell_monolayers: int | None = None,
    shell_thickness: float | None = None,
) -> tuple[np.ndarray, str]:
    """The element of every site of ``shape``, and the chemical order actually made.

    Parameters
    ----------
    shape
        The sites (Å) and what is known of their lattice.
    composition
        The chemistry asked for.
    morphology
        Name of the shape (for messages).
    rng
        Source of the random site choices (random alloys).
    shell_monolayers, shell_thickness
        Core–shell only: override the composition's shell (monolayers, or Å).

    Returns
    -------
    symbols : numpy.ndarray
        One element symbol per site.
    ordering : str
        ``composition.kind``, except ``"alloy"`` when an ordered phase (L1₀, L1₂) was asked for on
        sites that are not one fcc crystal (twinned, amorphous, bcc/hcp) and a random alloy with the
        same fractions was made instead.
    """
    positions = shape.positions
    n = len(positions)
    if composition.kind == "element":
        return np.full(n, composition.elements[0]), composition.kind
    if composition.kind in ("alloy", "hea"):
        return _random_alloy(composition.fractions, n, rng), composition.kind
    if composition.kind == "core-shell":
        monolayers = check_int("shell_monolayers", shell_monolayers, 1)
        thickness = check_float("shell_thickness", shell_thickness, None, minimum=-1e-12)
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
        return np.where(in_shell, composition.shell, composition.core), composition.kind

    # Chemically ordered phases need the sites of one fcc lattice.
    indices = _fcc_indices(positions, shape.fcc_a)
    if indices is None:
        if (composition.label, morphology) not in _WARNED:  # once per process, not per particle
            _WARNED.add((composition.label, morphology))
            logger.warning(
                "composition %s: %s is not a single fcc crystal; made a random alloy with the same "
                "fractions instead (recorded as ordering='alloy')",
                composition.label,
                morphology,
            )
        return _random_alloy(composition.fractions, n, rng), "alloy"
    if composition.kind == "L10":
        first, second = composition.elements
        # Alternating (001) planes (spacing a/2): the plane through the central site holds `first`.
        return np.where(indices[:, 2] % 2 == 0, first, second), composition.kind
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
    return np.where(corners, minor, major), composition.kind
