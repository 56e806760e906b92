"""PANN at any pixel size and for elements the weights never saw (issue 25, point 3)."""

import numpy as np
import pytest

from models.contrast_rank import contrast_order, proxy_elements
from models.pann import resample_volume, to_input_positions
from models.tracing import trace_atoms

SHIPPED = ("Fe", "Co", "Ni", "Cu", "Pd", "Pt", "Au")


def blob_volume(positions, size, sampling, width=0.45):
    z, y, x = np.mgrid[:size, :size, :size] * sampling
    return sum(
        np.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * width**2))
        for p in positions
    ).astype(np.float32)


@pytest.mark.parametrize("sampling", [0.15, 0.195, 0.3, 0.6, 0.8])
def test_resampling_round_trips_atom_positions_within_0_02_A(sampling):
    """Atoms traced in the volume resampled to 0.4 Å land back at their positions (input frame)."""
    extent = 12.0
    size = int(round(extent / sampling)) + 1
    truth = np.array([[3.3, 4.1, 5.2], [7.6, 3.9, 6.4], [5.4, 8.3, 4.7], [8.9, 8.1, 8.6]])
    # an atom at least one voxel wide, as any reconstruction at that sampling gives
    volume = blob_volume(truth, size, sampling, width=max(0.45, sampling))
    work, work_sampling, spacing = resample_volume(volume, sampling, 0.4)
    assert work_sampling == 0.4 and abs(spacing[0] - 0.4) < 0.02
    found = trace_atoms(work, work_sampling, threshold=0.3 * float(work.max())).positions
    positions = to_input_positions(found, work_sampling, spacing)
    assert len(positions) == len(truth)
    order = [int(np.argmin(np.linalg.norm(positions - t, axis=1))) for t in truth]
    error = np.linalg.norm(positions[order] - truth, axis=1)
    assert np.all(error < 0.02), error


def test_resampling_keeps_a_volume_at_the_weights_sampling():
    volume = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    work, work_sampling, spacing = resample_volume(volume, 0.401, 0.4)
    assert work is volume and work_sampling == 0.401
    np.testing.assert_array_equal(spacing, [0.401] * 3)


def test_proxies_keep_the_contrast_order():
    assert proxy_elements(["Fe", "Pt"], SHIPPED) == {"Fe": "Fe", "Pt": "Pt"}  # all known
    single = proxy_elements(["Si"], SHIPPED)
    assert single == {"Si": "Au"}  # a single element: the brightest known (pure Pt/Au trained)
    mapping = proxy_elements(["Ir", "Si", "Ag"], SHIPPED)
    order = contrast_order(["Si", "Ag", "Ir"])
    assert order == ["Si", "Ag", "Ir"]
    proxies = [mapping[e] for e in order]
    assert len(set(proxies)) == 3
    assert contrast_order(proxies) == proxies  # faintest element -> faintest proxy
    assert mapping["Si"] == "Fe" and mapping["Ag"] == "Pd"
    with pytest.raises(ValueError, match="more elements"):
        proxy_elements(["C", "Si", "Ge", "Ru", "Ag", "Ir", "W", "Bi"], SHIPPED)


def amorphous_si(rng, n=24, spacing=2.35, box=9.0):
    """Random close packing by rejection: n points ≥ spacing apart in a box (Å)."""
    points = []
    while len(points) < n:
        p = rng.uniform(0, box, 3)
        if all(np.linalg.norm(p - q) >= spacing for q in points):
            points.append(p)
    return np.array(points)


@pytest.mark.slow  # the shipped PANN weights on a 0.3 Å volume (a few seconds)
def test_a_si_particle_runs_through_pann_at_0_3_A():
    from models.pann import PannModel
    from models.weights import DEFAULT_WEIGHTS

    rng = np.random.default_rng(4)
    sampling, size = 0.3, 48
    truth = amorphous_si(rng) + 2.7
    volume = blob_volume(truth, size, sampling) + rng.normal(0, 0.02, (size,) * 3).astype(
        np.float32
    )
    model = PannModel.load(DEFAULT_WEIGHTS)
    pred = model.predict(volume, sampling, ["Si"], keep_refined=False)
    assert pred.extra["contrast_proxies"] == {"Si": "Au"}
    assert pred.extra["resampled_to"] == model.config.sampling
    assert pred.classes == ("Si", "none")
    assert pred.probabilities.shape == (len(pred.elements), 2)
    assert set(pred.elements) == {"Si"}
    distances = np.linalg.norm(pred.positions[:, None] - truth[None], axis=2)
    recovered = (distances.min(axis=0) < 0.5).sum()
    assert recovered >= 0.8 * len(truth), (recovered, len(truth), len(pred.elements))
