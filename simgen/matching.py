"""One-to-one matching of predicted and true atoms, and rigid alignment of two models.

Matching is the assignment problem: among all one-to-one pairings of predicted and true atoms
closer than a radius, take one with the most pairs and, among those, the smallest summed distance
(Kuhn–Munkres / Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``). Pairs are found
with a KD-tree and the assignment is solved separately on each connected group of candidate
pairs, so thousands of atoms cost little.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["Matching", "match_atoms", "align"]

logger = logging.getLogger(__name__)


@dataclass
class Matching:
    """Matched pairs, sorted by true-atom index.

    Attributes
    ----------
    pred_idx, true_idx : (M,) int64
        Indices of the matched predicted and true atoms (pair ``i`` is
        ``pred[pred_idx[i]] <-> true[true_idx[i]]``).
    distances : (M,) float64
        Distance of each pair in Å.
    """

    pred_idx: np.ndarray
    true_idx: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return len(self.pred_idx)

    def __iter__(self):
        # Allows ``pred_idx, true_idx, distances = match_atoms(...)``.
        return iter((self.pred_idx, self.true_idx, self.distances))


def _as_positions(name: str, positions) -> np.ndarray:
    array = np.asarray(positions, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 3))
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name}.shape={array.shape}: expected (N, 3) positions in Å")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite positions, got NaN or inf")
    return array


def match_atoms(pred, true, radius: float = 1.0) -> Matching:
    """Match predicted to true atoms one-to-one within ``radius``.

    Parameters
    ----------
    pred, true : (N, 3), (M, 3) array_like
        Positions in Å, same frame.
    radius : float
        Largest distance (Å) of a matched pair (inclusive).

    Returns
    -------
    Matching
        The pairs of a maximum-cardinality assignment of minimum summed distance. Each atom is in
        at most one pair; the pairs do not depend on the order of the atoms (up to exact ties).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius={radius!r}: expected a positive distance in Å")
    pred = _as_positions("pred", pred)
    true = _as_positions("true", true)
    empty = Matching(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if len(pred) == 0 or len(true) == 0:
        return empty
    pairs = cKDTree(pred).sparse_distance_matrix(cKDTree(true), radius, output_type="ndarray")
    if len(pairs) == 0:
        return empty
    rows, cols, dist = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
    n_pred = len(pred)
    graph = coo_matrix((np.ones(len(rows)), (rows, n_pred + cols)), shape=(n_pred + len(true),) * 2)
    _, labels = connected_components(graph, directed=False)
    group = labels[rows]
    order = np.argsort(group, kind="stable")
    rows, cols, dist, group = rows[order], cols[order], dist[order], group[order]
    bounds = np.flatnonzero(np.diff(group)) + 1
    out_pred, out_true, out_dist = [], [], []
    for r, c, d in zip(np.split(rows, bounds), np.split(cols, bounds), np.split(dist, bounds)):
        if len(r) == 1:
            out_pred.append(r)
            out_true.append(c)
            out_dist.append(d)
            continue
        # Order members by position, so the solution does not depend on input order.
        pred_ids = np.unique(r)
        true_ids = np.unique(c)
        pred_ids = pred_ids[np.lexsort(pred[pred_ids].T[::-1])]
        true_ids = true_ids[np.lexsort(true[true_ids].T[::-1])]
        # Row/column of each pair in the position-ordered cost matrix: argsort maps an id's
        # rank among the sorted ids to its place in position order.
        pi = np.argsort(pred_ids)[np.searchsorted(np.sort(pred_ids), r)]
        ti = np.argsort(true_ids)[np.searchsorted(np.sort(true_ids), c)]
        forbidden = 1.0 + radius * (len(pred_ids) + len(true_ids))  # > any sum of allowed costs
        cost = np.full((len(pred_ids), len(true_ids)), forbidden)
        cost[pi, ti] = d
        a, b = linear_sum_assignment(cost)
        allowed = cost[a, b] < forbidden
        out_pred.append(pred_ids[a[allowed]])
        out_true.append(true_ids[b[allowed]])
        out_dist.append(cost[a[allowed], b[allowed]])
    pred_idx = np.concatenate(out_pred)
    true_idx = np.concatenate(out_true)
    distances = np.concatenate(out_dist)
    order = np.argsort(true_idx, kind="stable")
    return Matching(pred_idx[order], true_idx[order], distances[order])


def align(
    pred, true, radius: float = 1.0, iterations: int = 50, tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Translate ``pred`` onto ``true``: centre the centroids, then iterate the mean shift of pairs.

    Each iteration matches the shifted prediction to the truth within ``radius`` and moves it by
    the mean displacement of the matched pairs, until that mean is below ``tol`` Å or after
    ``iterations`` steps (the alignment used to score AET models against ground truth).

    Parameters
    ----------
    pred, true : (N, 3), (M, 3) array_like
        Positions in Å.
    radius : float
        Matching radius in Å.
    iterations : int
        Largest number of mean-shift steps.
    tol : float
        Convergence tolerance on the step length, Å.

    Returns
    -------
    aligned_pred : (N, 3) ndarray
        ``pred + shift``.
    shift : (3,) ndarray
        The translation applied, Å.
    """
    if iterations < 0:
        raise ValueError(f"iterations={iterations!r}: expected an integer >= 0")
    pred = _as_positions("pred", pred)
    true = _as_positions("true", true)
    if len(pred) == 0 or len(true) == 0:
        return pred.copy(), np.zeros(3)
    shift = true.mean(axis=0) - pred.mean(axis=0)
    for step in range(iterations):
        matching = match_atoms(pred + shift, true, radius)
        if len(matching) == 0:
            logger.warning(
                "align: no pairs within %.3g Å after centring; kept the centroid shift", radius
            )
            break
        delta = (true[matching.true_idx] - (pred[matching.pred_idx] + shift)).mean(axis=0)
        shift = shift + delta
        if np.linalg.norm(delta) < tol:
            logger.debug("align converged after %d steps, shift %s Å", step + 1, shift)
            break
    return pred + shift, shift
