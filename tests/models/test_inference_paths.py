"""The fast inference paths give what the plain paths give (float tolerance, same candidates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from models.pann import PannModel, candidate_features, volume_scale
from models.resunet import GlobalLocalResUNet, sliding_window_predict
from models.zernike import atom_descriptors

WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights" / "demo"


def _blobs(size: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = np.zeros((size,) * 3, dtype=np.float32)
    points = rng.integers(size // 4, 3 * size // 4, (n, 3))
    volume[tuple(points.T)] = rng.uniform(1.0, 3.0, n)
    return gaussian_filter(volume, 1.2).astype(np.float32)


def test_batched_descriptors_equal_one_call_per_volume():
    rng = np.random.default_rng(0)
    volumes = [rng.random((20, 20, 20), dtype=np.float32) for _ in range(2)]
    positions = rng.uniform(1.0, 7.0, (30, 3))
    batched = atom_descriptors(volumes, positions, 0.4, 1.6, order=6)
    assert len(batched) == 2
    for volume, got in zip(volumes, batched):
        expected = atom_descriptors(volume, positions, 0.4, 1.6, order=6)
        assert got.shape == expected.shape == (30, 16)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_numpy_inference_equals_the_autograd_free_tensor_path():
    torch.manual_seed(0)
    net = GlobalLocalResUNet(base_channels=4, levels=2, global_size=8, output="linear")
    volume = np.random.default_rng(1).random((16, 20, 16), dtype=np.float32)
    fast = sliding_window_predict(net, volume, patch_size=(16, 8, 16), overlap=0.25)
    with torch.no_grad():
        plain = sliding_window_predict(
            net, torch.from_numpy(volume), patch_size=(16, 8, 16), overlap=0.25
        )
    assert isinstance(fast, np.ndarray) and fast.shape == (16, 20, 16)
    assert np.abs(fast).max() > 0.01  # a real (non-identity) network output
    np.testing.assert_allclose(fast, plain.numpy(), rtol=1e-5, atol=1e-6)


def test_shipped_weights_give_the_same_candidates_and_features_either_way():
    model = PannModel.load(WEIGHTS)
    sampling = model.config.sampling
    volume = _blobs(24, 12, seed=2)
    refined = model.restore_volume(volume)
    with pytest.warns(DeprecationWarning, match="renamed restore_volume"):
        np.testing.assert_array_equal(model.refine(volume), refined)  # the old name, for now
    positions = np.asarray(model.candidates(refined, sampling).positions, dtype=np.float64)
    assert len(positions) >= 5
    features = candidate_features(refined, volume, positions, sampling, model.config)
    # the plain path: one descriptor call per volume, the same features assembled by hand
    zern = atom_descriptors(refined, positions, sampling, model.config.zernike_radius, order=8)
    zern_raw = atom_descriptors(volume, positions, sampling, model.config.zernike_radius, order=8)
    np.testing.assert_allclose(features[:, 0], zern[:, 0] / np.median(zern[:, 0]), rtol=1e-5)
    np.testing.assert_allclose(
        features[:, 1], zern_raw[:, 0] / np.median(zern_raw[:, 0]), rtol=1e-5
    )
    # the refined volume does not depend on the grad mode it was computed under
    scale = volume_scale(volume)
    with torch.no_grad():
        plain = (
            sliding_window_predict(
                model.stage1.eval(),
                torch.from_numpy(volume / scale),
                patch_size=(24, model.config.slab, 24),
                overlap=0.25,
            ).numpy()
            * scale
        )
    assert refined.shape == plain.shape
    np.testing.assert_allclose(refined, plain, rtol=1e-5, atol=1e-5 * float(np.abs(plain).max()))
    positions_plain = model.candidates(plain.astype(np.float32), sampling).positions
    np.testing.assert_allclose(positions_plain, positions, atol=1e-4)
