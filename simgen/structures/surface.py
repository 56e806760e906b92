"""Surface layers of a particle: which atoms are outermost, next-outermost, ... (core–shell shells)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["surface_layers"]


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
