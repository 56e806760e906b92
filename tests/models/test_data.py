"""Streaming training data (models/data.py): selection, lazy per-process store handles, worker
determinism, epoch-wise sampling, the rank split of a global batch, element weights and the
stage-2 cache."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from models.data import (
    GraphCache,
    SlabDraws,
    StepBatches,
    StoreSamples,
    draw_sample,
    element_weights,
)
from simgen.store import open_dataset


def test_selection_matches_open_dataset_and_reads_on_demand(smoke_store):
    ds = open_dataset(smoke_store)
    train = StoreSamples(smoke_store, "train")
    np.testing.assert_array_equal(train.indices, ds.filter(split="train").indices)
    only = StoreSamples(smoke_store, "train", noise_model="poisson", limit=1)
    assert len(only) == 1
    sample = only[0]
    assert sample["split"] == "train" and sample["noise_model"] == "poisson"
    np.testing.assert_array_equal(sample["volume"], ds.read(int(only.indices[0]))["volume"])
    # Pickled for a worker without its store handle; the worker opens its own.
    clone = pickle.loads(pickle.dumps(train))
    assert clone._view is None
    np.testing.assert_array_equal(clone[1]["target"], train[1]["target"])
    with pytest.raises(ValueError, match="no complete samples"):
        StoreSamples(smoke_store, "nonexistent")


def test_every_epoch_visits_each_sample_once_and_is_reproducible():
    n = 7
    for epoch in range(3):
        seen = [draw_sample(j, n, seed=5) for j in range(epoch * n, (epoch + 1) * n)]
        assert sorted(seen) == list(range(n))
    first = [draw_sample(j, n, seed=5) for j in range(2 * n)]
    assert first == [draw_sample(j, n, seed=5) for j in range(2 * n)]
    assert first[:n] != first[n:]  # a new permutation each epoch (7! orders: not by chance)
    assert first != [draw_sample(j, n, seed=6) for j in range(2 * n)]


def test_rank_batches_partition_the_global_batch():
    single = list(StepBatches(3, 6, 4))
    pair = [list(StepBatches(3, 6, 4, rank=r, world_size=2)) for r in range(2)]
    assert single == [[12, 13, 14, 15], [16, 17, 18, 19], [20, 21, 22, 23]]
    for step, batch in enumerate(single):
        assert pair[0][step] + pair[1][step] == batch
    with pytest.raises(ValueError, match="batch_size=3"):
        StepBatches(0, 2, 3, world_size=2)


def test_workers_give_the_same_draws_as_the_main_process(smoke_store):
    samples = StoreSamples(smoke_store, "train")
    draws = SlabDraws(samples, slab=8, total=8, seed=3)

    def run(workers):
        loader = DataLoader(draws, batch_sampler=StepBatches(0, 4, 2), num_workers=workers)
        return list(loader)

    main, workers = run(0), run(2)
    assert len(main) == len(workers) == 4
    for a, b in zip(main, workers):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    # The physics inputs: the background-subtracted rows of the tilt series of the same slab.
    item = draws[0]
    assert item["x"].shape[2] == item["meas"].shape[1] == 8
    assert item["meas"].shape[0] == item["angles"].shape[0] == 9


def test_element_weights_give_fe_and_pt_atoms_equal_weight(smoke_store):
    from simgen.physics.imaging import cross_section

    ds = open_dataset(smoke_store)
    k = next(i for i in range(len(ds)) if ds[i]["composition"] == "L10:FePt")
    s = ds[k]
    w = element_weights(s, sigma=0.35)
    ratio = (cross_section("Pt") / cross_section("Fe")) ** 2
    centres = np.rint(np.asarray(s["positions"]) / s["sampling"]).astype(int)
    at = w[centres[:, 2], centres[:, 1], centres[:, 0]]
    fe, pt = at[s["numbers"] == 26], at[s["numbers"] == 78]
    # At an atom's own voxel its Gaussian dominates: weight ≈ (σ_Pt / σ_elem)².
    assert np.median(pt) == pytest.approx(1.0, rel=0.15)
    assert np.median(fe) == pytest.approx(ratio, rel=0.25)
    assert w.min() >= 1.0 and ratio > 20


def test_graph_cache_round_trip_is_atomic(tmp_path):
    cache = GraphCache(tmp_path / "cache")
    positions = np.arange(6.0).reshape(2, 3)
    cache.write(11, positions, np.ones((2, 4)), np.array([0, 2]))
    assert cache.has(11) and not cache.has(12)
    p, f, labels = cache.read(11)
    np.testing.assert_array_equal(p, positions)
    assert f.dtype == np.float32 and labels.tolist() == [0, 2]
    assert sorted(x.name for x in (tmp_path / "cache").iterdir()) == ["11.npz"]
