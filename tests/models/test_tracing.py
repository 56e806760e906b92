import numpy as np
import pytest

from models.tracing import default_min_distance, noise_level, otsu_threshold, trace_atoms


def blobs(positions, size, sampling, sigma=0.4, amplitudes=None):
    """Volume [z, y, x] of Gaussian atoms at (x, y, z) positions in Å (voxel k at k*sampling)."""
    axis = np.arange(size) * sampling
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    volume = np.zeros((size,) * 3)
    amplitudes = np.ones(len(positions)) if amplitudes is None else amplitudes
    for (px, py, pz), a in zip(positions, amplitudes):
        volume += a * np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / (2 * sigma**2))
    return volume


def test_single_peak_on_a_voxel_is_reported_in_xyz_at_k_times_sampling():
    sampling = 0.3
    volume = np.zeros((16, 16, 16))
    volume[5, 7, 11] = 1.0  # [z, y, x]
    candidates = trace_atoms(volume, sampling, refine="none", threshold=0.5)
    assert len(candidates) == 1
    np.testing.assert_allclose(candidates.positions[0], [11 * sampling, 7 * sampling, 5 * sampling])
    np.testing.assert_array_equal(candidates.voxels[0], [5, 7, 11])


@pytest.mark.parametrize(
    "refine, tolerance", [("gaussian", 0.005), ("polynomial", 0.06), ("none", 0.5 * 0.35 * 3**0.5)]
)
def test_sub_voxel_refinement_recovers_known_positions(refine, tolerance):
    sampling = 0.35
    rng = np.random.default_rng(0)
    grid = np.array(
        [[x, y, z] for x in (3.0, 6.0, 9.0) for y in (3.0, 6.0, 9.0) for z in (3.5, 7.5)]
    )
    truth = grid + rng.uniform(-0.17, 0.17, grid.shape)
    volume = blobs(truth, 36, sampling)
    candidates = trace_atoms(volume, sampling, refine=refine, threshold=0.5, fit_half_width=1)
    assert len(candidates) == len(truth)
    # Each candidate's nearest true atom is within tolerance (Å).
    distances = np.linalg.norm(candidates.positions[:, None] - truth[None], axis=2).min(axis=1)
    assert distances.max() < tolerance
    if refine == "gaussian":
        assert np.all(candidates.fit_quality > 0.999)


def test_weaker_of_two_close_peaks_is_removed_and_distant_ones_kept():
    sampling = 0.25
    positions = np.array([[3.0, 4.0, 4.0], [4.5, 4.0, 4.0], [7.5, 4.0, 4.0]])  # 1.5 Å and 3 Å apart
    volume = blobs(positions, 40, sampling, sigma=0.3, amplitudes=np.array([1.0, 0.8, 0.9]))
    close = trace_atoms(volume, sampling, threshold=0.3, min_distance=2.0)
    np.testing.assert_allclose(np.sort(close.positions[:, 0]), [3.0, 7.5], atol=0.02)
    both = trace_atoms(volume, sampling, threshold=0.3, min_distance=1.2)
    assert len(both) == 3
    # Sorted strongest first.
    assert np.all(np.diff(both.peak_values) <= 0)


def test_explicit_threshold_drops_weak_peaks():
    sampling = 0.3
    volume = blobs(
        np.array([[3.0, 3.0, 3.0], [7.0, 7.0, 7.0]]), 34, sampling, amplitudes=np.array([1.0, 0.2])
    )
    assert len(trace_atoms(volume, sampling, threshold=0.5)) == 1
    assert len(trace_atoms(volume, sampling, threshold=0.1)) == 2


def test_automatic_threshold_separates_atoms_from_noise_maxima():
    sampling = 0.4
    rng = np.random.default_rng(3)
    truth = np.array(
        [[x, y, z] for x in (4.0, 7.0, 10.0) for y in (4.0, 7.0, 10.0) for z in (4.0, 7.0, 10.0)]
    )
    volume = blobs(truth, 36, sampling) + rng.normal(0, 0.05, (36, 36, 36))
    candidates = trace_atoms(volume, sampling, elements=["Pt"])
    assert len(candidates) == 27
    assert 0.2 < candidates.threshold < 0.9
    distances = np.linalg.norm(candidates.positions[:, None] - truth[None], axis=2).min(axis=1)
    assert distances.max() < 0.1


def test_integrated_intensity_scales_with_amplitude():
    sampling = 0.3
    # Both atoms on voxel centres, so their integration spheres hold the same voxels.
    volume = blobs(
        np.array([[3.0, 3.0, 3.0], [6.0, 6.0, 6.0]]), 34, sampling, amplitudes=np.array([1.0, 2.0])
    )
    candidates = trace_atoms(volume, sampling, threshold=0.5, min_distance=2.0)
    order = np.argsort(candidates.positions[:, 0])
    ratio = candidates.intensities[order[1]] / candidates.intensities[order[0]]
    assert ratio == pytest.approx(2.0, rel=1e-6)
    assert candidates.integration_radius == pytest.approx(0.8)


def test_default_min_distance_from_bulk_nearest_neighbours():
    assert default_min_distance(["Si"]) == pytest.approx(0.8 * 5.43 * 3**0.5 / 4)
    assert default_min_distance(["Pt", "Fe"]) == pytest.approx(
        0.8 * 2.87 * 3**0.5 / 2
    )  # bcc Fe is shorter
    assert default_min_distance(None) == 2.0
    with pytest.raises(ValueError, match="elements"):
        default_min_distance(["Xx"])


def test_otsu_splits_a_bimodal_sample():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(1.0, 0.1, 500), rng.normal(3.0, 0.1, 100)])
    threshold = otsu_threshold(values)
    # Any cut in the gap separates the modes; Otsu's plateau midpoint lies near the gap's middle.
    assert values[:500].max() < threshold < values[500:].min()
    assert 1.6 < threshold < 2.4


def test_empty_volume_gives_no_candidates():
    candidates = trace_atoms(np.zeros((8, 8, 8)), 0.5)
    assert len(candidates) == 0 and candidates.positions.shape == (0, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sampling": 0.0}, "sampling"),
        ({"refine": "spline"}, "refine"),
        ({"min_distance": -1.0}, "min_distance"),
        ({"significance": -1.0}, "significance"),
    ],
)
def test_bad_input_is_rejected_with_the_parameter_named(kwargs, match):
    args = {"sampling": 0.3, **kwargs}
    with pytest.raises(ValueError, match=match):
        trace_atoms(np.zeros((8, 8, 8)), **args)
    with pytest.raises(ValueError, match="volume"):
        trace_atoms(np.zeros((8, 8)), 0.3)


def test_noise_level_is_median_and_gaussian_sigma():
    rng = np.random.default_rng(3)
    background, sigma = noise_level(rng.normal(2.0, 0.5, (40, 40, 40)))
    assert background == pytest.approx(2.0, abs=0.005) and sigma == pytest.approx(0.5, rel=0.01)
    clipped = np.zeros((20, 20, 20))
    clipped[5:8, 5:8, 5:8] = 1.0  # most voxels exactly at the background: no noise estimate
    assert noise_level(clipped) == (0.0, 0.0)


@pytest.mark.parametrize("value", [0.0, 3.5])
def test_constant_volume_has_no_atoms_even_with_a_relative_threshold(value):
    volume = np.full((16, 16, 16), value)
    assert len(trace_atoms(volume, 0.4, threshold=0.05 * value)) == 0
    assert len(trace_atoms(volume, 0.4)) == 0


def _fcc_particle(radius, centre, a=3.92):
    cells = np.arange(-3, 4)
    grid = np.array(np.meshgrid(cells, cells, cells, indexing="ij")).reshape(3, -1).T
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    points = (grid[:, None, :] + basis[None]).reshape(-1, 3) * a
    return points[np.linalg.norm(points, axis=1) <= radius] + centre


def test_gaussian_noise_gives_no_atoms_while_a_particle_keeps_every_atom():
    rng = np.random.default_rng(0)
    sampling, size = 0.4, 48
    noise = rng.normal(0.0, 1.0, (size,) * 3)
    relative = 0.05 * np.percentile(noise, 99.9)  # PANN's threshold: a fraction of the maximum
    assert len(trace_atoms(noise, sampling, threshold=relative, significance=None)) > 100
    assert len(trace_atoms(noise, sampling, threshold=relative)) <= 1
    assert len(trace_atoms(noise, sampling)) <= 1

    truth = _fcc_particle(5.0, centre=np.full(3, size * sampling / 2))
    volume = blobs(truth, size, sampling, sigma=0.45) + 0.05 * noise  # peaks ~ 20 σ
    for significance in (None, 5.0):
        found = trace_atoms(volume, sampling, elements=["Pt"], significance=significance)
        distance = np.linalg.norm(found.positions[None] - truth[:, None], axis=2).min(axis=1)
        assert np.all(distance < 0.3), significance  # every atom recovered
    assert len(found) == len(truth)  # and nothing else
