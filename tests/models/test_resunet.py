"""Tests of models/resunet.py: the global-local residual U-Net and sliding-window inference."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from models.resunet import GlobalLocalResUNet, global_view, sliding_window_predict


@pytest.fixture(autouse=True)
def one_thread():
    # Two cores are shared by several people: one thread avoids oversubscription spin.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(**kwargs) -> GlobalLocalResUNet:
    torch.manual_seed(0)
    options = dict(base_channels=4, levels=2, global_size=8, global_channels=4)
    options.update(kwargs)
    return GlobalLocalResUNet(**options)


def blobs(n: int, count: int, gen: torch.Generator, sigma: float = 1.0) -> torch.Tensor:
    axis = torch.arange(n, dtype=torch.float32)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    volume = torch.zeros(n, n, n)
    for _ in range(count):
        c = torch.rand(3, generator=gen) * (n - 6) + 3
        volume += torch.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * sigma**2))
    return volume


def test_untrained_residual_model_is_identity_for_odd_sizes():
    model = tiny(levels=3)
    x = torch.randn(2, 1, 13, 16, 17)
    assert model(x).shape == x.shape
    assert torch.equal(model(x), x)  # zero-initialised head: output = input + 0
    g = torch.randn(2, 1, 40, 40, 40)
    out = model(x, g, [(0, 4, 8), (3, 2, 1)])
    assert out.shape == x.shape


def test_bad_inputs_raise_value_errors():
    model = tiny()
    with pytest.raises(ValueError, match="patch.shape"):
        model(torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="patch_origin"):
        model(torch.zeros(2, 1, 8, 8, 8), torch.zeros(2, 1, 16, 16, 16), [(0, 0)])
    with pytest.raises(ValueError, match="global_volume"):
        model(torch.zeros(2, 1, 8, 8, 8), torch.zeros(3, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="out_channels"):
        GlobalLocalResUNet(in_channels=1, out_channels=2, output="residual")
    with pytest.raises(ValueError, match="norm"):
        GlobalLocalResUNet(norm="layer")


def test_global_view_box_averages():
    volume = torch.arange(64, dtype=torch.float32).reshape(1, 1, 4, 4, 4)
    small = global_view(volume, 2)
    assert small.shape == (1, 1, 2, 2, 2)
    assert small[0, 0, 0, 0, 0] == volume[0, 0, :2, :2, :2].mean()
    assert torch.allclose(small.mean(), volume.mean())


def test_patch_output_depends_on_its_location_and_matches_whole_volume():
    # norm=None: the network is translation-equivariant by size_divisor voxels, so a patch's
    # interior (beyond the receptive field) must equal the whole-volume prediction there; this
    # checks that the global features are sampled at the patch's true place in the volume.
    model = tiny(norm=None, output="linear").eval()
    gen = torch.Generator().manual_seed(1)
    volume = torch.rand(1, 1, 40, 40, 40, generator=gen)
    origin, p, r = (8, 16, 4), 32, 12
    with torch.no_grad():
        full = model(volume)
        patch = volume[..., 8:40, 16:48, 4:36]
        out = model(patch, volume, origin)
        moved = model(patch, volume, (0, 0, 0))
    expected = full[..., 8 + r : 8 + p - r, 16 + r : 16 + p - r, 4 + r : 4 + p - r]
    inner = out[..., r : p - r, r : p - r, r : p - r]
    assert torch.allclose(inner, expected, atol=1e-5)
    assert not torch.allclose(moved[..., r : p - r, r : p - r, r : p - r], expected, atol=1e-3)


@pytest.mark.slow  # training
def test_tiny_resunet_overfits_a_tiny_batch():
    gen = torch.Generator().manual_seed(0)
    target = torch.stack([blobs(16, 6, gen) for _ in range(2)])[:, None]
    noisy = target + 0.3 * torch.randn(target.shape, generator=gen)
    model = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        loss = torch.nn.functional.mse_loss(model(noisy), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    baseline = float(torch.nn.functional.mse_loss(noisy, target))
    assert losses[0] == pytest.approx(baseline, rel=1e-5)  # starts as the identity
    assert losses[-1] < 0.1 * losses[0]


def test_state_dict_round_trip_gives_identical_outputs():
    model = tiny(levels=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = tiny(levels=3)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(1, 1, 12, 12, 12)
    assert not torch.equal(model(x), x)
    assert torch.equal(model.eval()(x), clone.eval()(x))
    assert "params=" in repr(model) and "global_size=8" in repr(model)


def test_sliding_window_with_margin_equals_whole_volume_prediction():
    model = tiny(norm=None, output="linear")
    gen = torch.Generator().manual_seed(2)
    volume = torch.rand(12, 42, 12, generator=gen)  # slabs along the tilt axis, as in training
    with torch.no_grad():
        full = model.eval()(volume[None, None])[0, 0]
    model.train()
    sw = sliding_window_predict(
        model, volume.numpy(), patch_size=(12, 28, 12), margin=12, overlap=0.5
    )
    assert isinstance(sw, np.ndarray) and sw.shape == (12, 42, 12)
    assert model.training  # mode restored
    np.testing.assert_allclose(sw, full.numpy(), atol=1e-5)


def test_sliding_window_cube_blending_matches_whole_volume():
    model = tiny(levels=1, norm=None, output="linear")
    gen = torch.Generator().manual_seed(3)
    volume = torch.rand(1, 1, 26, 26, 26, generator=gen)
    with torch.no_grad():
        full = model.eval()(volume)
    sw = sliding_window_predict(model, volume, patch_size=16, overlap=0.5, margin=4)
    assert isinstance(sw, torch.Tensor) and sw.shape == volume.shape
    torch.testing.assert_close(sw, full, atol=1e-5, rtol=0)
    # Without the margin the Gaussian-blended result is still close (no seams), not exact.
    blended = sliding_window_predict(model, volume, patch_size=16, overlap=0.5)
    err = (blended - full).abs()[..., 4:-4, 4:-4, 4:-4]
    assert float(err.mean()) < 0.1 * float(full.std())
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(model, volume, overlap=1.0)
    with pytest.raises(ValueError, match="margin"):
        sliding_window_predict(model, volume, patch_size=16, margin=8)


def test_sliding_window_batches_do_not_change_the_prediction():
    # 5 slabs in batches of at most 4 run as 3 + 2 (no lone patch on torch's slow native conv):
    # every patch is normalised on its own (instance norm), so the batching changes nothing but
    # rounding; one patch per batch is the reference
    model = tiny(output="linear")
    gen = torch.Generator().manual_seed(4)
    volume = blobs(20, 12, gen).numpy()[:, :, :].repeat(2, axis=1)[:, :32]  # (20, 32, 20)
    patch = (20, 8, 20)  # slabs along y starting at 0, 6, 12, 18, 24: 5 patches
    one = sliding_window_predict(model, volume, patch_size=patch, overlap=0.25, batch_size=1)
    four = sliding_window_predict(model, volume, patch_size=patch, overlap=0.25, batch_size=4)
    whole = sliding_window_predict(model, volume, patch_size=patch, overlap=0.25, batch_size=8)
    scale = float(np.abs(one).max())
    assert scale > 1e-3
    # float32 rounding of differently blocked convolutions (measured: ≤ 4e-6 of outputs ~0.3)
    np.testing.assert_allclose(four, one, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(whole, one, rtol=0, atol=1e-4 * scale)
