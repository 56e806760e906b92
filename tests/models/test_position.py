"""The E(3)-equivariant position head: symmetry and learning on matched offsets."""

import numpy as np
import torch
from ase.cluster import Octahedron
from scipy.spatial.transform import Rotation

from models.position import PositionHead, matched_offsets, node_features, train_position_head


def _biased_cluster(seed):
    """An fcc octahedron whose 'traced' surface atoms sit 0.15 Å too far inside, plus noise."""
    rng = np.random.default_rng(seed)
    atoms = Octahedron("Pt", 4, 1)
    truth = atoms.positions - atoms.positions.mean(0)
    rotation = Rotation.random(random_state=seed).as_matrix()
    truth = truth @ rotation.T
    distances = np.linalg.norm(truth[:, None] - truth[None], axis=2)
    coordination = ((distances > 0.1) & (distances < 3.2)).sum(1)
    radial = truth / np.maximum(np.linalg.norm(truth, axis=1, keepdims=True), 1e-9)
    bias = np.where(coordination[:, None] < 12, -0.15 * radial, 0.0)
    candidates = truth + bias + rng.normal(0, 0.02, truth.shape)
    return candidates, truth


def test_corrections_rotate_and_translate_with_the_inputs():
    torch.manual_seed(0)
    head = PositionHead(2, hidden=16, layers=2, knn=8)
    for layer in head.layers:  # non-zero coordinate weights (a trained head)
        torch.nn.init.normal_(layer.coord[-1].weight, std=0.3)
    positions, _ = _biased_cluster(1)
    features = torch.as_tensor(
        node_features(["Pt"] * len(positions), np.arange(len(positions)) + 1.0)
    )
    x = torch.as_tensor(positions, dtype=torch.float64).float()
    rotation = torch.as_tensor(Rotation.random(random_state=3).as_matrix(), dtype=torch.float32)
    shift = torch.tensor([3.0, -1.0, 2.0])
    with torch.no_grad():
        base = head(x, features)
        moved = head(x @ rotation.T + shift, features)
    assert base.abs().max() > 1e-3  # the check is not vacuous
    assert torch.allclose(moved, base @ rotation.T, atol=1e-4)


def test_untrained_head_moves_nothing_and_training_lowers_the_offset_error():
    graphs = []
    for seed in range(3):
        candidates, truth = _biased_cluster(seed)
        mask, offsets = matched_offsets(candidates, truth, 0.5)
        features = node_features(["Pt"] * len(candidates))
        graphs.append((candidates, features, offsets, mask))
    assert all(g[3].all() for g in graphs)
    head, history = train_position_head(graphs, epochs=25, lr=5e-3, hidden=16, knn=12)
    before = np.mean([(g[2] ** 2).sum(1).mean() for g in graphs])
    assert history[0] == np.float32(before) or abs(history[0] - before) < 1e-6
    assert history[-1] < 0.5 * history[0]
