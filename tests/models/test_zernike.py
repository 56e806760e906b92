# ruff: noqa: E741  (l is the angular degree, as in every paper on Zernike moments)
"""Tests of models/zernike.py: orthonormality, rotation invariance, a published reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import zernike as zk
from models.zernike import (
    ZernikeBasis,
    atom_descriptors,
    extract_patches,
    radial_polynomial,
    zernike_descriptors,
    zernike_function,
    zernike_indices,
)
from tests.external import EXTERNAL

REFERENCE = EXTERNAL / "zernike_reference"


def _gaussian_density(size: int, centres: np.ndarray, sigmas, amplitudes) -> np.ndarray:
    """Sum of isotropic Gaussians; ``centres`` are (z, y, x) offsets from the cube centre, voxels."""
    axis = np.arange(size) - (size - 1) / 2.0
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    volume = np.zeros((size,) * 3)
    for (cz, cy, cx), sigma, amplitude in zip(centres, sigmas, amplitudes):
        r2 = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2
        volume += amplitude * np.exp(-r2 / (2.0 * sigma**2))
    return volume


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def test_indices_follow_novotni_klein_order():
    assert len(zernike_indices(8)) == 25
    assert len(zernike_indices(20)) == 121
    assert zernike_indices(3) == [(0, 0), (1, 1), (2, 0), (2, 2), (3, 1), (3, 3)]


def test_radial_polynomials_orthonormal():
    # Gauss-Legendre on [0, 1] is exact for these polynomials (degree <= 2*12 + 2)
    nodes, weights = np.polynomial.legendre.leggauss(30)
    r, w = (nodes + 1) / 2, weights / 2
    for l in range(0, 7):
        ns = list(range(l, 13, 2))
        gram = np.array(
            [
                [
                    np.sum(w * r**2 * radial_polynomial(a, l, r) * radial_polynomial(b, l, r))
                    for b in ns
                ]
                for a in ns
            ]
        )
        np.testing.assert_allclose(gram, np.eye(len(ns)) / 3.0, atol=1e-12)
    # R_00 = 1 and R_20 = sqrt(7/3) (5/2 r^2 - 3/2)
    np.testing.assert_allclose(radial_polynomial(0, 0, r), 1.0)
    np.testing.assert_allclose(radial_polynomial(2, 0, r), math.sqrt(7 / 3) * (2.5 * r**2 - 1.5))


def test_monomial_expansion_matches_scipy_harmonics():
    """The polynomial form of Z_nl^m (used for the moments) equals R_nl * sqrt(4π) Y_lm (scipy)."""
    rng = np.random.default_rng(1)
    points = rng.uniform(-1, 1, size=(200, 3))
    points = points[np.sum(points**2, axis=1) <= 1]
    order = 10
    powers = np.arange(order + 1)
    px, py, pz = (points[:, a, None] ** powers for a in range(3))
    for l, m, stack in zk._harmonic_stacks(order):
        values = np.einsum("kpqr,np,nq,nr->kn", stack, px, py, pz)
        for n in range(l, order + 1, 2):
            expanded = zk._zernike_from_stack(n, l, values)
            np.testing.assert_allclose(expanded, zernike_function(n, l, m, points), atol=1e-9)


def _gram_error(radius: float, order: int) -> tuple[float, float]:
    """Deviation of the discrete basis from (3/4π) ∫ Z_a conj(Z_b) dV = δ_ab (real columns)."""
    basis = ZernikeBasis(radius, order, dtype=np.float64)
    weight = zk._ball_fraction(basis.size, radius).reshape(-1)
    inside = weight > 0
    matrix = basis.matrix[inside]
    # columns hold (3/4π) h³ w_v × (voxel average of conj Z); divide that out for the other factor
    averages = matrix / (3 / (4 * np.pi) * weight[inside, None] / radius**3)
    gram = averages.T @ matrix
    off_diagonal = gram - np.diag(np.diag(gram))
    return np.abs(np.diag(gram) - 1).max(), np.abs(off_diagonal).max()


def test_discrete_basis_is_near_orthonormal_and_converges():
    """On a fine grid (h = 1/20) the discrete basis is orthonormal to a few %, and the error is
    second order in the voxel size (the boundary shell dominates)."""
    diagonal, off = _gram_error(20.0, 4)
    assert diagonal < 0.05 and off < 0.04
    coarse_diagonal, coarse_off = _gram_error(10.0, 4)
    assert coarse_diagonal / diagonal > 3.0 and coarse_off / off > 3.0


def test_basis_columns_are_voxel_integrals_of_conjugate_functions():
    """Each basis column ≈ (3/4π) h³ w_v conj(Z(x_v)) (midpoint rule, 3% at h = 1/12), m > 0 too."""
    basis = ZernikeBasis(12.0, order=4, dtype=np.float64)
    size, radius = basis.size, basis.radius_voxels
    offsets = (np.arange(size) - (size - 1) / 2) / radius
    grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
    weight = zk._ball_fraction(size, radius).reshape(-1)
    scale = 3 / (4 * np.pi) / radius**3 * weight
    layout = zk._moment_table(4)
    for n, l in zernike_indices(4):
        start = layout[(n, l)].start
        for m in range(l + 1):
            expected = scale * np.conj(zernike_function(n, l, m, grid[:, ::-1]))
            if m == 0:
                got = basis.matrix[:, start]
            else:
                columns = basis.matrix[:, start + 2 * m - 1 : start + 2 * m + 1] / math.sqrt(2)
                got = columns[:, 0] + 1j * columns[:, 1]
            assert np.abs(got - expected).max() < 3e-2 * np.abs(expected).max()
            if m > 0:  # the conjugate matters: Z itself would not match
                assert np.abs(got - np.conj(expected)).max() > 0.5 * np.abs(expected).max()


def test_invariants_of_rotated_density_agree():
    """A smooth anisotropic density and its exact rotation (rotated Gaussian centres, no
    interpolation) in a 31³ cube have order-8 invariants within 2%."""
    rng = np.random.default_rng(7)
    centres = np.array([[4.0, 1.0, -2.0], [-3.0, 3.5, 1.0], [0.5, -4.0, -3.0], [1.0, 0.0, 5.0]])
    sigmas, amplitudes = [2.0, 1.6, 2.4, 1.8], [1.0, 0.7, 1.3, 0.5]
    original = _gaussian_density(31, centres, sigmas, amplitudes)
    first = zernike_descriptors(original, order=8)
    significant = first > 1e-3 * first.max()
    assert significant.sum() >= 15  # the density is anisotropic: many l > 0 invariants
    for _ in range(3):
        rotation = _random_rotation(rng)
        rotated = _gaussian_density(31, centres @ rotation.T, sigmas, amplitudes)
        second = zernike_descriptors(rotated, order=8)
        relative = np.abs(second - first)[significant] / first[significant]
        assert relative.max() < 0.02, relative.max()
    # and a shifted density is a different density: the descriptors must notice
    shifted = _gaussian_density(31, centres + [3.0, 0, 0], sigmas, amplitudes)
    assert np.abs(zernike_descriptors(shifted, 8) - first)[significant].max() > 0.05 * first.max()


def test_constant_ball_has_only_the_zeroth_invariant():
    """f = 1 in the ball: Omega_00 = (3/4π) * volume of the ball = 1, every other invariant is 0
    up to the voxelised boundary, an error that falls as h² (D = 20 -> 40 -> 4x smaller)."""
    coarse = zernike_descriptors(np.ones((20, 20, 20)), order=6)
    fine = zernike_descriptors(np.ones((40, 40, 40)), order=6)
    assert fine[0] == pytest.approx(1.0, rel=1e-3)
    assert np.abs(fine[1:]).max() < 0.04
    assert np.abs(coarse[1:]).max() / np.abs(fine[1:]).max() > 3.5
    # odd l vanish exactly by the cube's inversion symmetry
    odd = [i for i, (n, l) in enumerate(zernike_indices(6)) if l % 2]
    assert np.abs(fine[odd]).max() < 1e-12


def test_intensity_normalisation_removes_scale():
    rng = np.random.default_rng(3)
    volume = rng.random((15, 15, 15))
    plain = zernike_descriptors(volume, 6, normalization="intensity")
    scaled = zernike_descriptors(3.5 * volume, 6, normalization="intensity")
    assert plain[0] == pytest.approx(1.0)
    np.testing.assert_allclose(plain, scaled, rtol=1e-10)
    raw = zernike_descriptors(volume, 6)
    np.testing.assert_allclose(raw / raw[0], plain, rtol=1e-10)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="external zernike_reference not present")
@pytest.mark.parametrize("order", [8, 20])
def test_matches_novotni_klein_reference(order):
    """pyzernike (Novotni & Klein's code) descriptors of a 10³ cuboid in a 50³ volume."""
    reference = np.load(REFERENCE / f"cuboid_order{order}.npy")
    volume = np.zeros((50, 50, 50))
    volume[15:25, 5:15, 35:45] = 1
    ours = zernike_descriptors(volume, order=order, normalization="novotni_klein")
    assert ours.shape == reference.shape
    significant = reference > 1e-10 * reference.max()
    assert significant.sum() > 10
    # the reference is stored to 6 significant digits
    np.testing.assert_allclose(ours[significant], reference[significant], rtol=2e-5)
    assert np.abs(ours[~significant]).max() < 1e-10 * reference.max()
    # a boolean mask is the same object
    as_mask = zernike_descriptors(volume > 0, order=order, normalization="novotni_klein")
    np.testing.assert_array_equal(as_mask, ours)


def test_batched_equals_single_volume():
    """ZernikeBasis(r + 0.5) on (2r+1)³ patches reproduces zernike_descriptors of each patch."""
    rng = np.random.default_rng(11)
    volume = rng.random((24, 20, 22))
    centres = np.array([[5, 6, 7], [12, 10, 11], [18, 14, 16], [0, 3, 21]])  # last one at a border
    basis = ZernikeBasis(4.5, order=8, dtype=np.float64)
    assert basis.size == 9 and basis.matrix.shape == (9**3, 165)
    patches = extract_patches(volume, centres, basis.radius_voxels)
    batched = basis.invariants(patches)
    single = np.stack([zernike_descriptors(p, order=8) for p in patches])
    np.testing.assert_allclose(batched, single, rtol=1e-9, atol=1e-14)
    # float32 and the torch backend agree with float64
    basis32 = ZernikeBasis(4.5, order=8)
    np.testing.assert_allclose(basis32.invariants(patches), batched, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        basis32.invariants(patches, backend="torch"), batched, rtol=1e-4, atol=1e-6
    )
    # one patch in, one row out
    np.testing.assert_allclose(basis.invariants(patches[1]), batched[1], rtol=1e-12)


def test_extract_patches_slices_and_pads():
    rng = np.random.default_rng(5)
    volume = rng.random((16, 17, 18)).astype(np.float32)
    patches = extract_patches(volume, np.array([[8, 8, 8], [0, 1, 17]]), 3)
    assert patches.shape == (2, 7, 7, 7)
    np.testing.assert_array_equal(patches[0], volume[5:12, 5:12, 5:12])
    expected = np.zeros((7, 7, 7), np.float32)
    expected[3:, 2:, :4] = volume[0:4, 0:5, 14:18]
    np.testing.assert_array_equal(patches[1], expected)
    # Å positions (x, y, z), voxel k at k * sampling, give the same patches
    sampling = 0.4
    positions = np.array([[8, 8, 8], [17, 1, 0]]) * sampling
    np.testing.assert_array_equal(
        extract_patches(volume, radius_voxels=3, positions_A=positions, sampling=sampling), patches
    )
    # linear interpolation: at integer centres it is the plain patch; at +0.5 along x the mean
    linear = extract_patches(volume, np.array([[8.0, 8.0, 8.0]]), 3, interpolation="linear")
    np.testing.assert_allclose(linear[0], volume[5:12, 5:12, 5:12], rtol=1e-6)
    half = extract_patches(volume, np.array([[8.0, 8.0, 8.5]]), 3, interpolation="linear")
    np.testing.assert_allclose(
        half[0], 0.5 * (volume[5:12, 5:12, 5:12] + volume[5:12, 5:12, 6:13]), rtol=1e-6
    )


def test_atom_descriptors_match_manual_pipeline():
    rng = np.random.default_rng(2)
    volume = rng.random((20, 20, 20)).astype(np.float32)
    sampling, radius_A = 0.5, 2.0  # 4 voxels
    positions = rng.uniform(2.0, 8.0, size=(6, 3))
    got = atom_descriptors(volume, positions, sampling, radius_A, order=6, interpolation="nearest")
    basis = ZernikeBasis(4.0, 6)
    centres = positions[:, ::-1] / sampling
    expected = basis.invariants(extract_patches(volume, centres, 4.0))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got.shape == (6, len(zernike_indices(6)))


def test_atom_descriptors_rotation_invariant_for_gaussian_atoms():
    """An atom-centred cluster of Gaussians, rotated, keeps its descriptors (sub-voxel centring)."""
    rng = np.random.default_rng(4)
    neighbours = np.array([[0.0, 0.0, 0.0], [2.0, 0.5, 0.0], [-0.5, 2.2, 0.3]])  # voxels
    descriptors = []
    for _ in range(2):
        rotation = _random_rotation(rng)
        centre = np.array([16.3, 15.6, 16.2])  # (z, y, x) voxels, off the grid
        volume = _gaussian_density(
            33, neighbours @ rotation.T + centre - 16, [1.0, 1.0, 1.0], [1, 0.6, 0.8]
        )
        descriptors.append(
            atom_descriptors(volume, centre[None, ::-1] * 0.5, 0.5, 4.0, order=6, dtype=np.float64)[
                0
            ]
        )
    first, second = descriptors
    significant = first > 1e-2 * first.max()
    assert np.abs(second - first)[significant].max() < 0.03 * first.max()


@pytest.mark.parametrize(
    "call",
    [
        lambda: zernike_descriptors(np.zeros((4, 4, 5))),
        lambda: zernike_descriptors(np.zeros((4, 4))),
        lambda: zernike_descriptors(np.zeros((4, 4, 4)), order=-1),
        lambda: zernike_descriptors(np.zeros((4, 4, 4)), order=2.5),
        lambda: zernike_descriptors(np.full((4, 4, 4), np.nan)),
        lambda: zernike_descriptors(np.zeros((4, 4, 4)), normalization="mass"),
        lambda: zernike_descriptors(np.zeros((4, 4, 4)), normalization="novotni_klein"),
        lambda: ZernikeBasis(0.0, 4),
        lambda: ZernikeBasis(3.0, -2),
        lambda: ZernikeBasis(3.0, 4).invariants(np.zeros((2, 5, 5, 5))),
        lambda: ZernikeBasis(3.0, 4).invariants(np.full((1, 7, 7, 7), np.nan)),
        lambda: ZernikeBasis(3.0, 4).invariants(
            np.zeros((1, 7, 7, 7)), normalization="novotni_klein"
        ),
        lambda: extract_patches(np.zeros((5, 5, 5)), np.zeros((2, 2)), 2),
        lambda: extract_patches(np.zeros((5, 5, 5)), radius_voxels=2, positions_A=np.zeros((1, 3))),
        lambda: atom_descriptors(
            np.zeros((5, 5, 5)), np.zeros((1, 3)), sampling=-1.0, radius_A=1.0
        ),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_error_message_names_parameter():
    with pytest.raises(ValueError, match=r"volume.shape=\(4, 4, 5\)"):
        zernike_descriptors(np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="order=-1"):
        zernike_descriptors(np.zeros((4, 4, 4)), order=-1)
