"""The structure while it is damaged: coordination numbers, free neighbouring sites, and the
events (hops, sputtered atoms) that the damage models record."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DamageEvent", "coordination_numbers"]

MIN_DISTANCE_FRACTION = 0.85  # of the bond length: closest approach of a hopped atom to any other
MIN_SUPPORT = 3  # neighbours a hopped atom must bond to
SITE_TRIALS = 64  # random directions tried when looking for a free neighbouring site


# ----------------------------------------------------------------------------------------------
# Structure bookkeeping
# ----------------------------------------------------------------------------------------------


def coordination_numbers(positions: np.ndarray, cutoff: float) -> np.ndarray:
    """Number of other atoms within ``cutoff`` (Å) of each of the ``(N, 3)`` positions (Å)."""
    from scipy.spatial import cKDTree

    positions = np.asarray(positions, dtype=np.float64)
    if len(positions) == 0:
        return np.zeros(0, dtype=np.int64)
    tree = cKDTree(positions)
    return (
        np.asarray(tree.query_ball_point(positions, cutoff, return_length=True), dtype=np.int64) - 1
    )


def _bond_length(positions: np.ndarray) -> float:
    """Median nearest-neighbour distance (Å) of a structure."""
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(positions).query(positions, k=2)
    return float(np.median(distances[:, 1]))


@dataclass(frozen=True)
class DamageEvent:
    """One change of the structure.

    Attributes
    ----------
    step
        Acquisition step whose dose caused the event; it shows from step ``step + 1`` on.
    projection
        Stored index of that projection (``acquisition.order[step]``).
    id
        Stable id of the atom (``atoms.arrays["ids"]``, or its index in the input).
    kind
        ``"hop"`` or ``"sputter"`` (removed from the particle).
    old, new
        Position (x, y, z) in Å before and after; ``new`` is NaN for a sputtered atom.
    model
        Name of the damage model that caused it.
    """

    step: int
    projection: int
    id: int
    kind: str
    old: tuple[float, float, float]
    new: tuple[float, float, float]
    model: str


class _State:
    """The evolving particle: positions, presence and cached coordination numbers."""

    def __init__(
        self,
        positions: np.ndarray,
        numbers: np.ndarray,
        ids: np.ndarray,
        bond: float,
        cutoff: float,
    ):
        self.positions = np.array(positions, dtype=np.float64)
        self.numbers = numbers
        self.ids = ids
        self.present = np.ones(len(positions), dtype=bool)
        self.bond = bond
        self.cutoff = cutoff
        self._coordination: np.ndarray | None = None
        self.container: tuple[np.ndarray, float] | None = None  # (centre Å, radius Å)

    def coordination(self) -> np.ndarray:
        """CN of every atom (−1 for removed atoms), recomputed only after a change."""
        if self._coordination is None:
            cn = np.full(len(self.positions), -1, dtype=np.int64)
            cn[self.present] = coordination_numbers(self.positions[self.present], self.cutoff)
            self._coordination = cn
        return self._coordination

    def outward_normal(self, index: int) -> np.ndarray | None:
        """Unit vector from the centroid of the atom's neighbours to the atom (None if isolated)."""
        others = self._others(index)
        near = others[np.linalg.norm(others - self.positions[index], axis=1) <= self.cutoff]
        if len(near) == 0:
            return None
        vector = self.positions[index] - near.mean(axis=0)
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else None

    def _others(self, index: int) -> np.ndarray:
        mask = self.present.copy()
        mask[index] = False
        return self.positions[mask]

    def free_site(self, index: int, rng: np.random.Generator) -> np.ndarray | None:
        """A free site one bond length from atom ``index``, bonded to ≥ MIN_SUPPORT atoms, or None."""
        origin = self.positions[index]
        others = self._others(index)
        # only atoms that can touch a site one bond length away matter
        others = others[np.linalg.norm(others - origin, axis=1) <= self.bond + self.cutoff]
        if len(others) < MIN_SUPPORT:
            return None
        directions = rng.normal(size=(SITE_TRIALS, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        sites = origin + self.bond * directions
        # Snap towards hollows: fixed-point steps setting the distances to the nearby atoms to one
        # bond length (an fcc-like adsorption site).
        for _ in range(12):
            delta = sites[:, None, :] - others[None, :, :]
            distance = np.linalg.norm(delta, axis=-1)
            near = distance <= self.cutoff
            count = near.sum(axis=1)
            stretch = np.where(near, (self.bond - distance) / np.maximum(distance, 1e-9), 0.0)
            push = (stretch[..., None] * delta).sum(axis=1) / np.maximum(count, 1)[:, None]
            sites = sites + 0.5 * push
        distance = np.linalg.norm(sites[:, None, :] - others[None, :, :], axis=-1)
        valid = (
            (distance.min(axis=1) >= MIN_DISTANCE_FRACTION * self.bond)
            & (np.count_nonzero(distance <= self.cutoff, axis=1) >= MIN_SUPPORT)
            & (np.linalg.norm(sites - origin, axis=1) > 0.25 * self.bond)  # a move, not a return
        )
        if self.container is not None:
            centre, radius = self.container
            valid &= np.linalg.norm(sites - centre, axis=1) <= radius
        if not np.any(valid):
            return None
        return sites[np.argmax(valid)]  # the first valid one of the random directions

    def hop(
        self, index: int, site: np.ndarray, step: int, projection: int, model: str
    ) -> DamageEvent:
        old = tuple(float(v) for v in self.positions[index])
        self.positions[index] = site
        self._coordination = None
        return DamageEvent(
            step, projection, int(self.ids[index]), "hop", old, tuple(float(v) for v in site), model
        )

    def sputter(self, index: int, step: int, projection: int, model: str) -> DamageEvent:
        old = tuple(float(v) for v in self.positions[index])
        self.present[index] = False
        self._coordination = None
        return DamageEvent(
            step, projection, int(self.ids[index]), "sputter", old, (np.nan,) * 3, model
        )
