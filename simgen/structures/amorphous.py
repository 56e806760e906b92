"""Amorphous particles: a dense random packing of atoms in a sphere at a realistic number density."""

from __future__ import annotations

import math

import numpy as np

from simgen.structures.compositions import Composition
from simgen.structures.lattices import atomic_volume, nearest_neighbour_distance, vegard_weights
from simgen.structures.parameters import check_float, check_int

__all__ = ["amorphous_packing"]

_MC_STEP = 0.03  # hard-sphere Monte Carlo trial step, in units of the minimum distance
_PUSH_SPREAD = 0.2  # overlapping pairs are pushed apart to (1 + U(0, spread)) × min_distance


def amorphous_packing(
    radius: float,
    composition: Composition,
    rng: np.random.Generator,
    *,
    min_distance: float | None = None,
    density_factor: float | None = None,
    n_atoms: int | None = None,
    sweeps: int | None = None,
) -> np.ndarray:
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

    weights = vegard_weights(composition)
    volume_per_atom = sum(w * atomic_volume(s) for s, w in weights)
    d_nn = sum(w * nearest_neighbour_distance(s) for s, w in weights)
    density_factor = check_float("density_factor", density_factor, 0.98)
    min_distance = check_float("min_distance", min_distance, 0.85 * d_nn)
    sweeps = check_int("sweeps", sweeps, 0)
    sweeps = 20 if sweeps is None else sweeps
    n_atoms = check_int("n_atoms", n_atoms, 1)
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
