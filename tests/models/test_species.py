"""Tests of models/species.py: the candidate graph and the species graph Transformer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from models.species import (
    NOT_AN_ATOM,
    SpeciesTransformer,
    build_graph,
    rbf_expansion,
    species_classes,
)


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_build_graph_on_hand_computed_line():
    positions = np.array([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0], [6.0, 0, 0]])
    edge_index, edge_attr = build_graph(positions, k=2, num_rbf=7, rbf_cutoff=6.0)
    edges = {(int(s), int(t)) for s, t in edge_index.T}
    # nearest two of each target: 0 <- {1, 2}; 1 <- {0, 2}; 2 <- {1, 0}; 3 <- {2, 1}
    assert edges == {(1, 0), (2, 0), (0, 1), (2, 1), (1, 2), (0, 2), (2, 3), (1, 3)}
    assert edge_attr.shape == (8, 7)
    # RBF centres at 0, 1, ..., 6 Å with width 1 Å: distance 2 Å peaks at centre 2.
    row = [i for i, (s, t) in enumerate(edge_index.T.tolist()) if (s, t) == (2, 1)][0]
    expected = np.exp(-0.5 * (2.0 - np.arange(7)) ** 2)
    np.testing.assert_allclose(edge_attr[row].numpy(), expected, rtol=1e-6)
    ei, _ = build_graph(positions, k=3, cutoff=2.5)
    assert {(int(s), int(t)) for s, t in ei.T} == {(1, 0), (0, 1), (2, 1), (1, 2)}
    ei, ea = build_graph(torch.tensor(positions), k=1, direction=True)
    assert ea.shape == (4, 19)
    src, dst = ei
    np.testing.assert_allclose(ea[:, 16:].numpy(), np.sign(positions[src, :] - positions[dst, :]))
    ei, ea = build_graph(np.zeros((1, 3)))
    assert ei.shape == (2, 0) and ea.shape == (0, 16)
    with pytest.raises(ValueError, match="positions.shape"):
        build_graph(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="k="):
        build_graph(positions, k=0)
    assert rbf_expansion(torch.tensor([0.0]), 4, 3.0)[0, 0] == 1.0
    assert species_classes(["Fe", "Pt"]) == ["Fe", "Pt", NOT_AN_ATOM]


def test_model_shapes_errors_and_symmetries():
    torch.manual_seed(0)
    net = SpeciesTransformer(5, 3, hidden=16, heads=2, layers=2).eval()
    assert repr(net) == "SpeciesTransformer(5, 3, hidden=16, heads=2, layers=2, edge_features=16)"
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 10, (30, 3))
    x = torch.randn(30, 5)
    ei, ea = build_graph(positions, k=6)
    logits = net(x, ei, ea)
    assert logits.shape == (30, 3)
    # Distance-only edges: a rigid rotation of the candidates changes nothing.
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    ei_r, ea_r = build_graph(positions @ q.T + 5.0, k=6)
    torch.testing.assert_close(net(x, ei_r, ea_r), logits, atol=1e-5, rtol=1e-5)
    # Relabelling the nodes permutes the logits.
    perm = rng.permutation(30)
    ei_p, ea_p = build_graph(positions[perm], k=6)
    torch.testing.assert_close(net(x[perm], ei_p, ea_p), logits[perm], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="x.shape"):
        net(torch.randn(30, 4), ei, ea)
    with pytest.raises(ValueError, match="edge_attr.shape"):
        net(x, ei, ea[:, :8])
    with pytest.raises(ValueError, match="hidden"):
        SpeciesTransformer(5, 3, hidden=10, heads=4)


def b2_candidates(seed: int, cells: int = 4, n_fake: int = 40, a: float = 3.0):
    """Candidates of a B2 (CsCl) crystal plus false peaks; node features are noisy.

    Element A on the cube corners, B at the body centres: same-element neighbours sit at a,
    other-element ones at a·√3/2. False peaks are scattered off the lattice. The intensity
    feature (A 1.0, B 1.6, false 1.3, noise σ 0.35) alone cannot separate the classes; the
    neighbourhood can.
    """
    rng = np.random.default_rng(seed)
    grid = np.arange(cells) * a
    corners = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    centres = corners[(corners < grid[-1]).all(axis=1)] + a / 2
    fake = rng.uniform(-1.0, grid[-1] + 1.0, (n_fake, 3))
    positions = np.concatenate([corners, centres, fake])
    labels = np.repeat([0, 1, 2], [len(corners), len(centres), n_fake])
    nearest, _ = cKDTree(positions).query(positions, 2)
    keep = (labels < 2) | (nearest[:, 1] > 1.0)
    positions, labels = positions[keep], labels[keep]
    intensity = np.array([1.0, 1.6, 1.3])[labels] + rng.normal(0, 0.35, len(labels))
    features = np.column_stack([intensity, rng.normal(0, 1, len(labels))])
    features = (features - features.mean(0)) / features.std(0)
    ei, ea = build_graph(torch.tensor(positions, dtype=torch.float32), k=12)
    return torch.tensor(features, dtype=torch.float32), ei, ea, torch.tensor(labels), intensity


def test_classifier_learns_classes_set_by_the_neighbourhood():
    torch.manual_seed(0)
    train = [b2_candidates(seed) for seed in range(8)]
    x, ei, ea, y, intensity = b2_candidates(100)
    # Intensity alone (nearest class mean) is poor on the held-out graph ...
    means = np.array([1.0, 1.6, 1.3])
    alone = float((np.abs(intensity[:, None] - means).argmin(1) == y.numpy()).mean())
    assert alone < 0.8
    net = SpeciesTransformer(2, 3, hidden=32, heads=4, layers=2, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(10):
        for xt, eit, eat, yt, _ in train:
            loss = torch.nn.functional.cross_entropy(net(xt, eit, eat), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(x, ei, ea).argmax(1) == y).float().mean())
    # ... while the graph Transformer names > 95 % of the held-out candidates.
    assert accuracy > 0.95
