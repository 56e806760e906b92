import numpy as np
import pytest

from benchmark.matching import align, match_atoms


def test_hungarian_beats_greedy_nearest_neighbour():
    # Greedy nearest-first would pair pred 0 with true 1 (0.4 Å) and leave true 0 unmatched
    # (1.2 Å > radius); the optimal assignment matches both.
    true = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    pred = np.array([[0.6, 0, 0], [1.5, 0, 0]])
    m = match_atoms(pred, true, radius=1.0)
    assert len(m) == 2
    np.testing.assert_array_equal(m.true_idx, [0, 1])
    np.testing.assert_array_equal(m.pred_idx, [0, 1])
    np.testing.assert_allclose(m.distances, [0.6, 0.5])


def test_duplicate_prediction_is_matched_once():
    true = np.array([[0.0, 0, 0], [5.0, 0, 0]])
    pred = np.array([[0.1, 0, 0], [0.1, 0, 0], [5.0, 0, 0]])
    pred_idx, true_idx, distances = match_atoms(pred, true)
    assert len(pred_idx) == 2 and len(set(pred_idx)) == 2
    np.testing.assert_allclose(distances, [0.1, 0.0])


def test_pairs_beyond_the_radius_are_never_matched():
    m = match_atoms(np.array([[0.0, 0, 0]]), np.array([[1.01, 0, 0]]), radius=1.0)
    assert len(m) == 0
    m = match_atoms(np.array([[0.0, 0, 0]]), np.array([[1.0, 0, 0]]), radius=1.0)
    assert len(m) == 1


def test_result_does_not_depend_on_atom_order():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 30, (400, 3))
    pred = np.concatenate([true + rng.normal(0, 0.3, true.shape), rng.uniform(0, 30, (60, 3))])
    m = match_atoms(pred, true)
    p_perm, t_perm = rng.permutation(len(pred)), rng.permutation(len(true))
    m2 = match_atoms(pred[p_perm], true[t_perm])
    pairs = {(int(p), int(t)) for p, t in zip(m.pred_idx, m.true_idx)}
    pairs2 = {(int(p_perm[p]), int(t_perm[t])) for p, t in zip(m2.pred_idx, m2.true_idx)}
    assert pairs == pairs2
    assert np.sort(m.distances).sum() == pytest.approx(np.sort(m2.distances).sum())


def test_thousands_of_atoms_match_within_noise():
    rng = np.random.default_rng(1)
    true = np.stack(np.meshgrid(*(np.arange(16) * 2.5,) * 3, indexing="ij"), -1).reshape(-1, 3)
    pred = true + rng.normal(0, 0.1, true.shape)
    m = match_atoms(pred, true)
    assert len(m) == len(true) == 4096
    np.testing.assert_array_equal(m.pred_idx, m.true_idx)


def test_empty_inputs_and_bad_radius():
    assert len(match_atoms(np.zeros((0, 3)), np.ones((3, 3)))) == 0
    assert len(match_atoms([], np.ones((3, 3)))) == 0
    with pytest.raises(ValueError, match="radius"):
        match_atoms(np.zeros((1, 3)), np.zeros((1, 3)), radius=0)
    with pytest.raises(ValueError, match="pred.shape"):
        match_atoms(np.zeros((2, 2)), np.zeros((1, 3)))


def test_align_removes_a_rigid_shift_larger_than_the_radius():
    rng = np.random.default_rng(2)
    true = rng.uniform(0, 20, (200, 3))
    shift = np.array([1.7, -0.8, 0.4])
    extra = rng.uniform(0, 20, (10, 3))  # false atoms move the centroid: mean shift must fix it
    pred = np.concatenate([true - shift, extra])
    aligned, found = align(pred, true, radius=1.0)
    m = match_atoms(aligned, true, radius=0.01)
    assert len(m) == 200
    np.testing.assert_allclose(found, shift, atol=1e-9)
