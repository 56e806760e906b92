"""Stage-2 context features (stage2_features=2), class weights, masks, and old checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from models.cli import main as pann_main
from models.pann import (
    Z_EXPONENT,
    PannConfig,
    PannModel,
    build_stage2,
    candidate_features,
    context_features,
    stage2_features,
)
from models.train import _allowed, _selected, class_weights
from models.weights import load_checkpoint, save_atomic

ELEMENTS = ("Fe", "Co", "Ni", "Cu", "Pd", "Pt", "Au")


def _particle(scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A 28³ volume (0.4 Å voxels) with 14 Gaussian atoms of two intensities, and their positions."""
    rng = np.random.default_rng(3)
    volume = np.zeros((28, 28, 28), dtype=np.float64)
    voxels = np.array([(z, y, x) for z in (7, 13, 19) for y in (7, 14, 21) for x in (8, 18)])[:14]
    volume[tuple(voxels.T)] = np.where(rng.random(14) < 0.5, 1.0, 3.2)
    volume = gaussian_filter(volume, 1.3) + 0.002 * rng.random(volume.shape)
    positions = voxels[:, ::-1] * 0.4  # (x, y, z) Å
    return (scale * volume).astype(np.float32), positions.astype(np.float64)


def test_context_features_are_unchanged_by_a_global_intensity_scale():
    """Dose, gain and normalisation multiply a volume by a constant; the features must not move."""
    config = PannConfig(elements=ELEMENTS, zernike_order=4)
    volume, positions = _particle()
    a = stage2_features(candidate_features(volume, volume, positions, 0.4, config), config, ["Pt"])
    big, _ = _particle(scale=37.5)
    b = stage2_features(candidate_features(big, big, positions, 0.4, config), config, ["Pt"])
    assert a.shape == (14, candidate_features(volume, volume, positions, 0.4, config).shape[1] + 22)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # the brighter atoms rank above the dimmer ones and sit near the 95th percentile
    context = context_features(a, ELEMENTS, ["Pt"])
    assert context[:, 6].min() == 0.0 and context[:, 6].max() == 1.0


def test_context_features_hand_computed():
    base = np.array([[1.0, 2.0, 1.0, 1.0], [4.0, 2.0, 2.0, 1.0], [2.0, 2.0, 4.0, 1.0]])
    got = context_features(base, ("Fe", "Pd", "Pt"), present=["Fe", "Pt"])
    assert got.shape == (3, 8 + 6)
    q95 = np.percentile([1.0, 4.0, 2.0], 95)  # 3.8
    np.testing.assert_allclose(got[:, 0], np.log(np.array([1.0, 4.0, 2.0]) / q95), rtol=1e-6)
    np.testing.assert_allclose(got[:, 1], 0.0, atol=1e-7)  # all equal: log(1)
    np.testing.assert_allclose(got[:, 6], [0.0, 1.0, 0.5])  # ranks of column 0
    np.testing.assert_allclose(got[:, 7], [0.0, 0.5, 1.0])  # ranks of column 2
    np.testing.assert_array_equal(got[:, 8:11], [[1, 0, 1]] * 3)  # Fe, Pd, Pt present?
    expected_fe = Z_EXPONENT * np.log(26 / 78)
    np.testing.assert_allclose(got[:, 11:14], [[expected_fe, 0.0, 0.0]] * 3, rtol=1e-6)
    # unknown composition: every element counts as present, contrast to the heaviest (Pt)
    everything = context_features(base, ("Fe", "Pd", "Pt"))
    np.testing.assert_allclose(
        everything[0, 11:14], Z_EXPONENT * np.log(np.array([26, 46, 78]) / 78), rtol=1e-6
    )
    with pytest.raises(ValueError, match="Au"):
        context_features(base, ("Fe", "Pt"), present=["Au"])


def test_class_weights_give_every_class_the_same_total():
    w = class_weights([10, 30, 0, 60])
    np.testing.assert_allclose(w.numpy(), [2.5, 100 / 120, 0.0, 100 / 240], rtol=1e-6)
    counts = np.array([10, 30, 0, 60])
    totals = w.numpy() * counts
    np.testing.assert_allclose(totals[counts > 0], 25.0, rtol=1e-6)
    assert class_weights([1, 1000])[0] == 10.0  # capped
    half = class_weights([10, 30, 0, 60], power=0.5)  # half-way (in log) to plain cross-entropy
    np.testing.assert_allclose(half.numpy(), np.sqrt([2.5, 100 / 120, 0.0, 100 / 240]), rtol=1e-6)
    np.testing.assert_allclose(class_weights([10, 30, 0, 60], power=0.0).numpy(), [1, 1, 0, 1])


def test_loss_mask_keeps_present_elements_and_none():
    config = PannConfig(elements=("Fe", "Pd", "Pt"))
    assert _allowed(config, ("Fe", "Pt")).tolist() == [True, False, True, True]
    config.stage2_features = 1  # the earlier training saw every class
    assert _allowed(config, ("Fe", "Pt")).tolist() == [True, True, True, True]


def test_selected_epoch_is_the_best_balanced_one():
    history = {
        "stage2 val accuracy": [0.9, 0.95, 0.93],
        "stage2 val balanced accuracy": [0.6, 0.7, 0.8],
    }
    assert _selected(history) == {
        "stage2_val_accuracy": 0.93,
        "stage2_val_balanced_accuracy": 0.8,
        "stage2_epoch": 3,
    }


def _tiny_model(version: int) -> PannModel:
    config = PannConfig(
        elements=("Fe", "Pt"),
        base_channels=4,
        levels=2,
        global_size=8,
        slab=8,
        hidden=16,
        heads=2,
        layers=1,
        zernike_order=4,
        stage2_features=version,
        refine=False,
    )
    model = PannModel(config)
    volume, positions = _particle()
    width = stage2_features(
        candidate_features(volume, volume, positions, 0.4, config), config
    ).shape[1]
    model.stage2 = build_stage2(config, width)
    model.feature_mean, model.feature_std = np.zeros(width, np.float32), np.ones(width, np.float32)
    return model


def _candidates(model, volume):
    """The refined volume and the traced candidate positions (Å) of ``volume`` at 0.4 Å."""
    refined = model.restore_volume(volume)
    return refined, np.asarray(model.candidates(refined, 0.4).positions, dtype=np.float64)


def _assert_same_classes(model, again, volume):
    """``again`` (a reloaded ``model``) gives the same class probabilities on the 14 candidates."""
    refined, positions = _candidates(model, volume)
    a = model.classify(refined, volume, positions, 0.4, ["Fe", "Pt"])
    b = again.classify(refined, volume, positions, 0.4, ["Fe", "Pt"])
    assert a.shape == (14, 3)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    return refined, positions


def test_checkpoint_without_the_feature_key_loads_as_version_1_and_predicts(tmp_path):
    """Weights written before stage2_features existed keep their feature layout."""
    model = _tiny_model(1)
    path = model.save(tmp_path / "old")
    payload = load_checkpoint(path, what="PANN checkpoint")
    del payload["config"]["stage2_features"]  # the layout of checkpoints before 2026-11-30
    save_atomic(payload, path)
    again = PannModel.load(path)
    assert again.config.stage2_features == 1
    volume, _ = _particle()
    prediction = again.predict(volume, 0.4, ["Fe", "Pt"])  # the whole path runs
    assert prediction.extra["n_candidates"] == 14
    _assert_same_classes(model, again, volume)


def test_version_2_round_trips_and_composition_changes_its_inputs(tmp_path):
    model = _tiny_model(2)
    again = PannModel.load(model.save(tmp_path / "new"))
    assert again.config.stage2_features == 2
    volume, _ = _particle()
    refined, positions = _assert_same_classes(model, again, volume)
    x_both = model.graph_inputs(refined, volume, positions, 0.4, ["Fe", "Pt"])[0]
    x_pt = model.graph_inputs(refined, volume, positions, 0.4, ["Pt"])[0]
    assert not torch.equal(x_both, x_pt)  # the network is told what may be present


def test_bad_stage2_features_value_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="stage2_features=3"):
        PannConfig.from_dict({"stage2_features": 3})


def test_cli_several_stores_need_stage2_only(tmp_path, capsys):
    store = tmp_path / "a.zarr"
    store.mkdir()
    rc = pann_main(
        ["train", "--data", str(store), "--data", str(store), "--out", str(tmp_path / "r")]
    )
    assert rc != 0 and "--stage2-only" in capsys.readouterr().err
    rc = pann_main(["train", "--stage2-only", "--data", str(store), "--out", str(tmp_path / "r")])
    assert rc != 0 and "--init" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


class _Split:
    def __init__(self, *elements):
        self._elements = elements

    def elements(self):
        return self._elements


def test_new_classes_only_where_tracing_stays_the_same():
    from models.train import _union_elements

    old = ("Fe", "Ni", "Pd", "Pt", "Au")
    # Co and Cu lie between Fe and Au: the same minimum distance and contrast ratio
    got = _union_elements(old, [(_Split("Co", "Pt"), _Split("Cu", "Fe")), (_Split("Pd"), None)])
    assert got == ("Fe", "Co", "Ni", "Cu", "Pd", "Pt", "Au")
    assert _union_elements(old, [(_Split("Pt"), None)]) == old
    with pytest.raises(ValueError, match="traced"):
        _union_elements(old, [(_Split("Al"), None)])  # lighter than Fe: another contrast ratio


def test_version_2_needs_the_elements():
    """v2 features are relative to the elements present: without them the input is one the
    classifier never saw (the shipped weights then reject every candidate), so it is an error."""
    model = _tiny_model(2)
    volume, _ = _particle()
    refined, positions = _candidates(model, volume)
    with pytest.raises(ValueError, match=r"elements=None: these weights \(stage2_features=2\)"):
        model.classify(refined, volume, positions, 0.4)
    with pytest.raises(ValueError, match="elements=None"):
        model.predict(volume, 0.4)
    probabilities = model.classify(refined, volume, positions, 0.4, ["Fe", "Pt"])
    assert probabilities.shape == (len(positions), len(model.config.classes))
    # version-1 weights never used the composition: no elements is still allowed
    v1 = _tiny_model(1)
    assert v1.predict(volume, 0.4).probabilities.shape[1] == len(v1.config.classes)
