import numpy as np
import pytest

from benchmark.methods import Method, Prediction, available_methods, get_method, register
from benchmark.methods.classical import gaussian_mixture_1d, kmeans_1d
from benchmark.metrics import score

SAMPLING = 0.4
SIZE = 40
# Relative HAADF cross-sections of Fe and Pt at 200 kV, 60-200 mrad (docs/design.md reference numbers).
CROSS_SECTION = {"Fe": 0.00264, "Pt": 0.01752}


def particle(rng):
    """Atoms on a 2.8 Å cubic grid with random Fe/Pt species, inside the volume (x, y, z Å)."""
    grid = np.arange(4.0, SIZE * SAMPLING - 4.0, 2.8)
    positions = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    positions = positions + rng.normal(0, 0.05, positions.shape)
    elements = rng.choice(["Fe", "Pt"], len(positions)).tolist()
    return positions, elements


def render(positions, amplitudes, rng, sigma=0.45, noise=0.0):
    axis = np.arange(SIZE) * SAMPLING
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    volume = np.zeros((SIZE,) * 3)
    for (px, py, pz), a in zip(positions, amplitudes):
        volume += a * np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / (2 * sigma**2))
    return (volume + rng.normal(0, noise, volume.shape)).astype(np.float32)


def test_classical_recovers_positions_and_species_of_a_two_element_particle():
    rng = np.random.default_rng(0)
    positions, elements = particle(rng)
    volume = render(positions, [CROSS_SECTION[e] for e in elements], rng, noise=0.0003)
    sample = {"volume": volume, "sampling": SAMPLING, "elements": ["Pt", "Fe"]}
    for species in ("kmeans", "gmm"):
        prediction = get_method("classical", species=species).predict(sample)
        r = score(prediction.positions, prediction.elements, positions, elements)
        assert r["recovery_rate"] == 1.0 and r["precision"] == 1.0
        assert r["species_accuracy"] == 1.0
        assert r["coordinate_error_pm"] < 5.0
    assert prediction.confidence.shape == (len(prediction), 2)
    assert prediction.extra["classes"] == ["Fe", "Pt"]


def test_weak_non_atom_peaks_are_rejected():
    rng = np.random.default_rng(1)
    positions, _ = particle(rng)
    atoms, ghosts = positions[::2], positions[1::2]  # every other site holds a faint "ghost"
    volume = render(np.concatenate([atoms, ghosts]), [1.0] * len(atoms) + [0.2] * len(ghosts), rng)
    sample = {"volume": volume, "sampling": SAMPLING, "elements": ["Au"]}
    kept = get_method("classical", threshold=0.1).predict(sample)
    assert kept.extra["n_traced"] == len(positions)
    assert len(kept) == len(atoms)
    assert (
        score(kept.positions, kept.elements, atoms, ["Au"] * len(atoms))["recovery_rate_species"]
        == 1.0
    )
    everything = get_method("classical", threshold=0.1, reject_weak=None).predict(sample)
    assert len(everything) == len(positions)


def test_classical_reconstructs_when_the_sample_has_only_a_tilt_series():
    from simgen.reconstruction.reconstruct import project

    rng = np.random.default_rng(2)
    positions = np.array([[6.0, 6.0, 6.0], [10.0, 7.0, 9.0], [7.5, 10.0, 11.0]])
    clean = render(positions, [1.0, 1.0, 1.0], rng)
    angles = np.linspace(-70, 70, 29)
    sample = {
        "tilt_series": project(clean, angles),
        "angles": angles,
        "sampling": SAMPLING,
        "elements": ["Pt"],
    }
    prediction = get_method("classical", iterations=60, smooth=0.0).predict(sample)
    r = score(prediction.positions, prediction.elements, positions, ["Pt"] * 3)
    assert r["recovery_rate"] == 1.0 and r["precision"] == 1.0
    assert r["coordinate_error_pm"] < 10.0


def test_kmeans_1d_and_mixture_sort_clusters_by_intensity():
    values = np.array([5.0, 1.0, 5.2, 0.9, 1.1, 4.8])
    labels, centres = kmeans_1d(values, 2)
    np.testing.assert_array_equal(labels, [1, 0, 1, 0, 0, 1])
    np.testing.assert_allclose(centres, [1.0, 5.0])
    labels, means, probabilities = gaussian_mixture_1d(values, 2)
    np.testing.assert_array_equal(labels, [1, 0, 1, 0, 0, 1])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_registry_lists_builtin_methods_and_rejects_unknown_names():
    assert {"classical", "pann", "unet3d"} <= set(available_methods())
    method = get_method("classical", smooth=0.1)
    assert method.name == "classical" and method.describe()["options"]["smooth"] == 0.1
    with pytest.raises(ValueError, match="method='nope'"):
        get_method("nope")
    with pytest.raises(ValueError, match="smooth"):
        get_method("classical", smooth=-1)


def test_register_a_custom_method():
    @register("test-centroid")
    class Centroid(Method):
        def predict(self, sample):
            return Prediction(positions=[[1.0, 2.0, 3.0]], elements=["unknown"])

    prediction = get_method("test-centroid").predict({})
    assert prediction.positions.shape == (1, 3) and prediction.elements == ["unknown"]
    assert "test-centroid" in available_methods()


def test_prediction_validates_its_shapes():
    with pytest.raises(ValueError, match="positions.shape"):
        Prediction(positions=np.zeros((2, 2)), elements=["Fe", "Fe"])
    with pytest.raises(ValueError, match="elements"):
        Prediction(positions=np.zeros((2, 3)), elements=["Fe"])
    with pytest.raises(ValueError, match="confidence"):
        Prediction(positions=np.zeros((2, 3)), elements=["Fe", "Pt"], confidence=np.zeros(3))
    empty = Prediction(positions=[], elements=[])
    assert empty.positions.shape == (0, 3) and len(empty.to_atoms()) == 0


def test_classical_runs_without_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from benchmark.methods import get_method\n"
        "v = np.zeros((16, 16, 16), np.float32); v[8, 8, 8] = 1\n"
        "p = get_method('classical', smooth=0.0).predict({'volume': v, 'sampling': 0.5, 'elements': ['Pt']})\n"
        "assert len(p) == 1, len(p)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
