"""Tests of simgen.physics.targets.ideal_volume: normalisation, peak and centroid positions, errors."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from simgen.physics.targets import ideal_volume

SIZE = 24
SAMPLING = 0.4  # Å


def centroid_xyz(volume: np.ndarray, around_zyx, radius: int) -> np.ndarray:
    window = tuple(slice(max(c - radius, 0), c + radius + 1) for c in around_zyx)
    local = volume[window].astype(np.float64)
    grids = np.meshgrid(*(np.arange(s.start, s.stop) for s in window), indexing="ij")
    z, y, x = ((g * local).sum() / local.sum() for g in grids)
    return np.array([x, y, z]) * SAMPLING


def test_total_equals_the_sum_of_weights():
    rng = np.random.default_rng(0)
    positions = rng.uniform(1.0, (SIZE - 2) * SAMPLING, size=(40, 3))
    weights = rng.uniform(0.001, 0.02, size=40)
    volume = ideal_volume(positions, SIZE, SAMPLING, weights=weights)
    assert volume.shape == (SIZE, SIZE, SIZE) and volume.dtype == np.float32
    assert volume.sum(dtype=np.float64) == pytest.approx(weights.sum(), rel=1e-5)
    assert volume.min() >= 0.0


def test_atom_at_the_edge_keeps_its_full_weight():
    volume = ideal_volume(
        np.array([[0.0, 3.0, (SIZE - 1) * SAMPLING]]), SIZE, SAMPLING, weights=[2.0]
    )
    assert volume.sum(dtype=np.float64) == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("fraction", [(0.1, 0.3, 0.45), (-0.4, 0.2, -0.25), (0.0, 0.0, 0.0)])
def test_peak_and_centroid_at_sub_voxel_positions(fraction):
    voxel = np.array([13, 7, 10])  # x, y, z: asymmetric
    position = (voxel + np.array(fraction)) * SAMPLING
    volume = ideal_volume(position[None], SIZE, SAMPLING, sigma=0.35, weights=[1.0])
    peak = np.unravel_index(np.argmax(volume), volume.shape)
    assert tuple(int(i) for i in peak) == (voxel[2], voxel[1], voxel[0])  # [z, y, x]
    np.testing.assert_allclose(centroid_xyz(volume, peak, radius=5), position, atol=1e-4)


def test_sum_along_z_is_the_normalised_projection_with_a_gaussian_psf():
    positions = np.array([[4.1, 3.3, 5.0], [6.2, 5.9, 2.7]])
    sigma = 0.5
    volume = ideal_volume(positions, SIZE, SAMPLING, sigma=sigma, weights=[1.0, 3.0])
    projection = volume.sum(axis=0)
    grid = np.arange(SIZE) * SAMPLING
    expected = np.zeros((SIZE, SIZE))
    for (x, y, _), w in zip(positions, [1.0, 3.0]):
        gy = np.exp(-0.5 * ((grid - y) / sigma) ** 2)
        gx = np.exp(-0.5 * ((grid - x) / sigma) ** 2)
        expected += w * np.outer(gy / gy.sum(), gx / gx.sum())
    # the Gaussians are cut at ±4 sigma (a 6e-5 share of the 1D profile)
    np.testing.assert_allclose(projection, expected, atol=2e-4 * expected.max())
    assert projection.sum() == pytest.approx(4.0, rel=1e-6)


def test_cross_section_weights_by_element():
    from simgen.physics import imaging

    atoms = Atoms("PtFe", positions=[[2.8, 4.0, 4.8], [6.0, 4.8, 4.0]])  # on voxel centres
    volume = ideal_volume(atoms, SIZE, SAMPLING)
    sigma_pt = imaging.cross_section("Pt", imaging.Microscope())
    sigma_fe = imaging.cross_section("Fe", imaging.Microscope())
    assert volume.sum(dtype=np.float64) == pytest.approx(sigma_pt + sigma_fe, rel=1e-5)
    # Z contrast: Pt scatters to the HAADF detector much more strongly than Fe
    pt, fe = volume[12, 10, 7], volume[10, 12, 15]
    assert pt / fe == pytest.approx(sigma_pt / sigma_fe, rel=1e-4)
    assert sigma_pt > 3 * sigma_fe


def test_many_atoms_match_one_at_a_time():
    rng = np.random.default_rng(1)
    positions = rng.uniform(0.5, (SIZE - 1.5) * SAMPLING, size=(300, 3))
    weights = rng.uniform(0.5, 1.5, size=300)
    together = ideal_volume(positions, SIZE, SAMPLING, weights=weights)
    separately = sum(
        ideal_volume(p[None], SIZE, SAMPLING, weights=[w])
        for p, w in zip(positions[:5], weights[:5])
    )
    partial = ideal_volume(positions[:5], SIZE, SAMPLING, weights=weights[:5])
    np.testing.assert_allclose(partial, separately, rtol=1e-5, atol=1e-7)
    assert together.sum(dtype=np.float64) == pytest.approx(weights.sum(), rel=1e-5)


def test_no_atoms_gives_an_empty_volume():
    volume = ideal_volume(np.zeros((0, 3)), 8, SAMPLING, weights=np.zeros(0))
    assert volume.shape == (8, 8, 8) and not volume.any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, r"size=0: expected a positive number of voxels"),
        ({"sampling": -0.1}, r"sampling=-0\.1: expected a positive voxel size"),
        ({"sigma": 0.0}, r"sigma=0\.0: expected a positive Gaussian width"),
        ({"weights": [1.0, 2.0]}, r"weights\.shape=\(2,\): expected \(1,\)"),
        ({"weights": [np.nan]}, r"weights: expected finite values"),
        (
            {"positions": [[100.0, 1.0, 1.0]]},
            r"atoms\[0\]\.position=\[100\.0, 1\.0, 1\.0\] Å: expected inside",
        ),
        ({"positions": [[1.0, 1.0]]}, r"positions of shape \(1, 2\): expected \(N, 3\)"),
        ({"weights": None}, r"weights=None: expected weights"),
    ],
)
def test_errors(kwargs, match):
    args = {
        "positions": [[1.0, 1.0, 1.0]],
        "size": 8,
        "sampling": SAMPLING,
        "sigma": 0.35,
        "weights": [1.0],
    }
    args.update(kwargs)
    positions = np.array(args.pop("positions"))
    with pytest.raises(ValueError, match=match):
        ideal_volume(positions, args.pop("size"), args.pop("sampling"), **args)
