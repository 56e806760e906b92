"""Positions learned from neighbours: an E(3)-equivariant position-correction head.

Each candidate atom gets a displacement predicted from its neighbourhood with EGNN layers
(Satorras, Hoogeboom & Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021): messages
``m_ij = φ_e(h_i, h_j, |x_i − x_j|²)`` from invariant node features and distances, coordinate
updates ``x_i ← x_i + mean_j (x_i − x_j) · φ_x(m_ij)``, feature updates ``h_i ← h_i + φ_h(h_i, Σ_j m_ij)``.
Rotating or translating the input positions rotates the predicted corrections and leaves them
otherwise unchanged, by construction. The head is trained on matched offsets: every candidate
with a true atom within ``match_radius`` (0.5 Å) learns the vector to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from models.species import build_graph

__all__ = ["PositionHead", "node_features", "matched_offsets", "train_position_head"]

logger = logging.getLogger(__name__)


class _EGNNLayer(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.edge = nn.Sequential(
            nn.Linear(2 * hidden + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.coord = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.node = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        # Start as the identity on coordinates: an untrained head moves nothing.
        nn.init.zeros_(self.coord[-1].weight)
        nn.init.zeros_(self.coord[-1].bias)

    def forward(self, h: Tensor, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        source, target = edge_index
        rel = x[target] - x[source]  # (E, 3), from neighbour j to atom i
        dist2 = (rel**2).sum(dim=1, keepdim=True)
        m = self.edge(torch.cat([h[target], h[source], dist2], dim=1))
        weight = self.coord(m)
        degree = torch.zeros(len(x), 1, dtype=x.dtype).index_add_(
            0, target, torch.ones_like(weight)
        )
        dx = torch.zeros_like(x).index_add_(0, target, rel * weight) / degree.clamp_min(1.0)
        agg = torch.zeros(len(h), m.shape[1], dtype=h.dtype).index_add_(0, target, m)
        return h + self.node(torch.cat([h, agg], dim=1)), x + dx


class PositionHead(nn.Module):
    """EGNN position-correction head over the candidate graph.

    Args:
        in_features: Invariant features per candidate (:func:`node_features`).
        hidden: Hidden width.
        layers: EGNN layers.
        knn: Neighbours per candidate.

    Shapes:
        positions (N, 3) Å, features (N, in_features) -> corrections (N, 3) Å.
    """

    def __init__(self, in_features: int, hidden: int = 32, layers: int = 2, knn: int = 12):
        super().__init__()
        self.in_features, self.hidden, self.knn = in_features, hidden, knn
        self.embed = nn.Linear(in_features, hidden)
        self.layers = nn.ModuleList(_EGNNLayer(hidden) for _ in range(layers))

    def __repr__(self) -> str:
        return (
            f"PositionHead(in_features={self.in_features}, hidden={self.hidden}, "
            f"layers={len(self.layers)}, knn={self.knn})"
        )

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        for layer in self.layers:
            nn.init.zeros_(layer.coord[-1].weight)
            nn.init.zeros_(layer.coord[-1].bias)

    def forward(self, positions: Tensor, features: Tensor) -> Tensor:
        edge_index, _ = build_graph(positions, k=self.knn)
        h, x = self.embed(features), positions
        for layer in self.layers:
            h, x = layer(h, x, edge_index)
        return x - positions


def node_features(elements: Sequence[str], intensities=None) -> np.ndarray:
    """Invariant features per candidate: atomic number / 100 and a relative intensity.

    Args:
        elements: Element symbol per candidate ("unknown" → 0).
        intensities: Optional per-candidate intensities (any scale; divided by their median).
    """
    from ase.data import atomic_numbers

    z = np.array([atomic_numbers.get(e, 0) / 100.0 for e in elements], dtype=np.float32)
    if intensities is None or len(z) == 0:
        rel = np.ones_like(z)
    else:
        values = np.asarray(intensities, dtype=np.float64)
        rel = (values / max(float(np.median(np.abs(values))), 1e-12)).astype(np.float32)
    return np.stack([z, rel], axis=1)


def matched_offsets(candidates, truth, radius: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one (Hungarian) matches within ``radius`` Å: (mask (N,), offset truth − candidate (N, 3))."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    candidates = np.asarray(candidates, dtype=np.float64).reshape(-1, 3)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 3)
    mask = np.zeros(len(candidates), dtype=bool)
    offset = np.zeros_like(candidates)
    if len(candidates) == 0 or len(truth) == 0:
        return mask, offset
    d = cdist(candidates, truth)
    rows, cols = linear_sum_assignment(np.where(d <= radius, d, 1e6))
    ok = d[rows, cols] <= radius
    mask[rows[ok]] = True
    offset[rows[ok]] = truth[cols[ok]] - candidates[rows[ok]]
    return mask, offset


def train_position_head(
    graphs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None,
    *,
    store=None,
    split: str = "train",
    limit: int | None = None,
    method: str = "classical",
    epochs: int = 30,
    lr: float = 2e-3,
    hidden: int = 32,
    layers: int = 2,
    knn: int = 12,
    match_radius: float = 0.5,
    seed: int = 0,
) -> tuple[PositionHead, list[float]]:
    """Train a :class:`PositionHead` on matched offsets.

    Either ``graphs`` — tuples (positions (N, 3) Å, features (N, F), offsets (N, 3) Å,
    mask (N,) bool) — or a ``store`` whose ``split`` samples are turned into candidates by the
    benchmark method ``method`` (its positions and elements) and matched to the true atoms within
    ``match_radius``.

    Returns:
        The trained head and the mean squared offset error (Å²) of matched candidates per epoch
        (before the first update first).
    """
    if graphs is None:
        if store is None:
            raise ValueError("graphs=None and store=None: expected training graphs or a store")
        graphs = candidate_graphs(
            store, split=split, limit=limit, method=method, radius=match_radius
        )
    graphs = [g for g in graphs if g[3].any()]
    if not graphs:
        raise ValueError("graphs: no candidate matched a true atom; nothing to learn")
    torch.manual_seed(seed)
    head = PositionHead(graphs[0][1].shape[1], hidden=hidden, layers=layers, knn=knn)
    optimiser = torch.optim.Adam(head.parameters(), lr=lr)
    tensors = [
        (
            torch.as_tensor(p, dtype=torch.float32),
            torch.as_tensor(f),
            torch.as_tensor(o, dtype=torch.float32),
            torch.as_tensor(m),
        )
        for p, f, o, m in graphs
    ]
    history = []
    rng = np.random.default_rng(seed)
    for epoch in range(epochs + 1):
        total, count = 0.0, 0
        for k in rng.permutation(len(tensors)):
            positions, features, offsets, mask = tensors[k]
            # Rigid motions do not change the task; centring keeps coordinates small.
            centred = positions - positions.mean(dim=0)
            error = ((head(centred, features) - offsets)[mask] ** 2).sum(dim=1)
            loss = error.mean()
            if epoch > 0:
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            total, count = total + float(error.detach().sum()), count + int(mask.sum())
        history.append(total / count)
        logger.debug("position head epoch %d: offset MSE %.4g Å²", epoch, history[-1])
    return head, history


def candidate_graphs(
    store,
    *,
    split: str = "train",
    limit: int | None = None,
    method: str = "classical",
    radius: float = 0.5,
):
    """(positions, features, offsets, mask) per sample of a store split.

    The layering (``benchmark -> models``) forbids importing the benchmark methods here; ``method``
    names a tracing configuration of :func:`models.tracing.trace_atoms` instead: ``"classical"``
    is the classical pipeline's (volume smoothed by 0.25 Å, Gaussian fit over ±0.6 Å).
    """
    from ase.data import atomic_numbers
    from scipy import ndimage

    from models.tracing import trace_atoms
    from simgen.store import open_dataset

    if method != "classical":
        raise ValueError(f"method={method!r}: expected 'classical'")
    ds = open_dataset(store).filter(split=split)
    n = len(ds) if limit is None else min(limit, len(ds))
    graphs = []
    for k in range(n):
        sample = ds[k]
        sampling = float(sample["sampling"])
        elements = sorted(sample["elements"], key=lambda e: atomic_numbers[e])
        volume = ndimage.gaussian_filter(sample["volume"], 0.25 / sampling)
        cand = trace_atoms(
            volume, sampling, elements=elements, fit_half_width=max(1, round(0.6 / sampling))
        )
        # Elements are left to the intensities (the species classifier is a separate stage).
        features = node_features(["unknown"] * len(cand), cand.intensities)
        mask, offsets = matched_offsets(cand.positions, sample["positions"], radius)
        graphs.append((cand.positions, features, offsets, mask))
    return graphs
