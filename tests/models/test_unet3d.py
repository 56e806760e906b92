"""Tests of models/unet3d.py: the published Lee, Jeong & Yang (2021) 3D U-Net (and its loading of
the authors' weight files) and the suite's earlier variant."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from torch import nn

from models.resunet import sliding_window_predict
from models.unet3d import (
    _PUBLISHED_LAYERS,
    _PUBLISHED_NAMES,
    Lee2021UNet3D,
    UNet3D,
    from_published_state,
)


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_v1_variant_defaults():
    torch.manual_seed(0)
    net = UNet3D()
    convs = [m for m in net.encoder.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [12, 12, 24, 24, 48, 48]  # 2 down levels, base 12
    assert len(net.up) == 2 and net.size_divisor == 4
    slopes = {m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)}
    drops = {m.p for m in net.modules() if isinstance(m, nn.Dropout)}
    assert slopes == {0.2} and drops == {0.2}
    assert any(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 1, 16, 16, 16))
    assert float(out.min()) >= 0.0  # ReLU output
    assert "base_channels=12" in repr(net)


def test_odd_sizes_and_bad_input():
    torch.manual_seed(0)
    net = UNet3D(base_channels=4).eval()
    x = torch.randn(2, 1, 9, 14, 11)
    assert net(x).shape == x.shape
    with pytest.raises(ValueError, match="x.shape"):
        net(torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="dropout"):
        UNet3D(dropout=1.0)


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    net = UNet3D(base_channels=4, positive=False)
    x = torch.randn(1, 1, 8, 8, 8)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))


@pytest.mark.slow  # training
def test_tiny_unet3d_overfits_a_tiny_batch_with_mse():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    axis = torch.arange(16, dtype=torch.float32)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    target = torch.zeros(2, 1, 16, 16, 16)
    for b in range(2):
        for _ in range(6):
            c = torch.rand(3, generator=gen) * 10 + 3
            target[b, 0] += torch.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / 2)
    noisy = target + 0.3 * torch.randn(target.shape, generator=gen)
    net = UNet3D(base_channels=4, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = net.loss(net(noisy), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]
    # and it denoises: well below the error of the noisy input itself
    assert losses[-1] < 0.25 * float(net.loss(noisy, target))


def test_state_dict_round_trip_and_sliding_window():
    torch.manual_seed(0)
    net = UNet3D(base_channels=4, levels=1)
    net.train()
    net(torch.rand(2, 1, 8, 8, 8))  # move the batch-norm running statistics
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    clone = UNet3D(base_channels=4, levels=1)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    volume = torch.rand(12, 36, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = net.eval()(volume[None, None])[0, 0]
        assert torch.equal(full, clone.eval()(volume[None, None])[0, 0])
    # Eval-mode batch norm is translation-equivariant: overlap-tile sliding window is exact.
    sw = sliding_window_predict(
        net, volume.numpy(), patch_size=(12, 28, 12), margin=10, overlap=0.5
    )
    np.testing.assert_allclose(sw, full.numpy(), atol=1e-5)


def test_lee2021_is_the_published_layout():
    """24/48/96 channels, /16 by stride-2 convs + max pooling, BN, LeakyReLU 0.2, Dropout3d 0.2."""
    torch.manual_seed(0)
    net = Lee2021UNet3D().eval()
    assert [net.enc1.conv.out_channels, net.enc2.conv.out_channels] == [24, 48]
    assert net.bottom.conv.out_channels == 96
    assert net.enc1.conv.stride == net.enc2.conv.stride == (2, 2, 2)
    seen = {}
    net.bottom.register_forward_hook(lambda m, i, o: seen.update(bottom=o.shape))
    x = torch.rand(1, 1, 32, 48, 16)
    out = net(x)
    assert out.shape == x.shape and float(out.min()) >= 0.0  # ReLU output, cropped back
    assert tuple(seen["bottom"][2:]) == (2, 3, 1)  # downsampled by 16
    slopes = {m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)}
    drops = [m.p for m in net.modules() if isinstance(m, nn.Dropout3d)]
    assert slopes == {0.2} and drops == [0.2, 0.2, 0.2]
    assert sum(isinstance(m, nn.BatchNorm3d) for m in net.modules()) == 8  # all but the output
    assert sum(p.numel() for p in net.parameters()) == 764_641  # as the published files
    torch.jit.script(Lee2021UNet3D(num_filter=2))  # exportable for the ``torch`` method
    with pytest.raises(ValueError, match="x.shape"):
        net(torch.zeros(1, 2, 16, 16, 16))


def _as_published(state: dict) -> dict:
    names = {v: k for k, v in _PUBLISHED_NAMES.items()}
    layers = {v: k for k, v in _PUBLISHED_LAYERS.items()}
    out = {}
    for name, value in state.items():
        block, layer, rest = name.split(".", 2)
        out[f"{names[block]}.{layers[layer]}.{rest}"] = value
    return out


def test_published_state_dict_names_map_onto_the_network():
    torch.manual_seed(0)
    net = Lee2021UNet3D().eval()
    names = {n.split(".")[0] for n in _as_published(net.state_dict())}
    assert names == {
        "down_1",
        "down_2",
        "bridge",
        "trans_up_11",
        "up_1",
        "trans_up_12",
        "trans_up_21",
        "up_2",
        "out",
    }  # the authors' DL_aug.py module names
    clone, info = from_published_state(_as_published(net.state_dict()))
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(clone(x), net(x))
    assert info["sampling"] == 0.357 and info["input_scale"] == 13.0
    with pytest.raises(KeyError):
        from_published_state({"encoder.0.weight": torch.zeros(1)})


@pytest.mark.skipif(
    not os.environ.get("AET_LEE2021_WEIGHTS"),
    reason="set AET_LEE2021_WEIGHTS to a published weight file (MDAIL-KAIST/DL-augmentation)",
)
def test_published_weight_file_loads_safely_and_runs():
    state = torch.load(os.environ["AET_LEE2021_WEIGHTS"], map_location="cpu", weights_only=True)
    net, _ = from_published_state(state)
    with torch.no_grad():
        out = net(torch.rand(1, 1, 32, 32, 32))
    assert out.shape == (1, 1, 32, 32, 32) and float(out.max()) > 0
