"""The ``torch`` method (any TorchScript volume-to-volume network) and ``unet3d`` with weights in
the published Lee 2021 format, on the real smoke store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.cli import main as bench_main
from benchmark.methods import get_method
from benchmark.methods.torch_model import apply_volume_network, input_normaliser
from simgen.store import open_dataset


class _Positive(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def _script(path, meta=None):
    extra = {"aet.json": json.dumps(meta)} if meta else {}
    torch.jit.save(torch.jit.script(_Positive()), str(path), _extra_files=extra)
    return path


def test_identity_network_scores_exactly_like_classical(smoke_store, tmp_path):
    sample = open_dataset(smoke_store)[0]
    method = get_method("torch", model_file=str(_script(tmp_path / "id.pt")))
    classical = get_method("classical", smooth=0.0)
    a, b = method.predict(sample), classical.predict(sample)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)
    assert list(a.elements) == list(b.elements)


def test_resampling_to_the_network_grid_and_back_keeps_the_volume(smoke_store):
    z, y, x = np.mgrid[:28, :28, :28]
    blob = np.exp(-((x - 13.0) ** 2 + (y - 15.0) ** 2 + (z - 12.0) ** 2) / (2 * 3.0**2))
    seen = {}

    def net(t):
        seen["shape"] = tuple(t.shape)
        return torch.relu(t)

    out = apply_volume_network(net, blob, 0.5, net_sampling=0.357)
    assert seen["shape"] == (1, 1, 39, 39, 39)  # 28 voxels of 0.5 Å at 0.357 Å
    assert out.shape == blob.shape
    np.testing.assert_allclose(out, blob, atol=0.05)  # linear there and back: < 5% of the peak
    # the published convention: the mean 3³ intensity at the peaks is the unit
    volume = open_dataset(smoke_store)[0]["volume"]
    assert input_normaliser(2 * volume, "peaks") == pytest.approx(
        2 * input_normaliser(volume, "peaks")
    )


def test_cli_runs_a_torchscript_file_and_reads_its_metadata(smoke_store, tmp_path):
    model = _script(tmp_path / "net.pt", {"sampling": 0.5, "normalise": "none"})
    out = tmp_path / "torch.jsonl"
    rc = bench_main(
        ["run", "--method", "torch", "--model-file", str(model), "--data", str(smoke_store),
         "--out", str(out), "--limit", "1"]
    )  # fmt: skip
    assert rc == 0
    record = json.loads(out.read_text().splitlines()[0])
    assert record["method"] == "torch" and 0.0 < record["recovery_rate"] <= 1.0
    assert get_method("torch", model_file=str(model)).options["normalise"] == "none"


def test_bad_model_files_are_named(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="model_file"):
        get_method("torch", model_file=str(tmp_path / "missing.pt"))
    plain = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="not a TorchScript file"):
        get_method("torch", model_file=str(plain))
    with pytest.raises(ValueError, match="normalise='bogus'"):
        get_method("torch", model_file=str(_script(tmp_path / "ok.pt")), normalise="bogus")


def test_unet3d_runs_weights_in_the_published_format(smoke_store, tmp_path):
    from models.unet3d import _PUBLISHED_LAYERS, _PUBLISHED_NAMES, Lee2021UNet3D

    names = {v: k for k, v in _PUBLISHED_NAMES.items()}
    layers = {v: k for k, v in _PUBLISHED_LAYERS.items()}
    torch.manual_seed(0)
    state = {}
    for name, value in Lee2021UNet3D().state_dict().items():
        block, layer, rest = name.split(".", 2)
        state[f"{names[block]}.{layers[layer]}.{rest}"] = value
    path = tmp_path / "DL_aug_like"
    torch.save(state, path)  # a plain state dict, as the authors' files
    method = get_method("unet3d", weights=str(path))
    assert method.options["architecture"] == "lee2021-published"
    assert method.options["input_scale"] == 13.0 and method.options["normalise"] == "peaks"
    sample = open_dataset(smoke_store)[0]
    refined = method._volume(sample)
    assert refined.shape == sample["volume"].shape and float(refined.min()) >= 0.0


def test_unet3d_shipped_weights_still_load():
    method = get_method("unet3d")
    assert method.options["architecture"] == "unet3d-v1" and method.options["normalise"] == "scale"
