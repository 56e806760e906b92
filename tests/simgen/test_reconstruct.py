"""Tests of simgen.reconstruction.reconstruct: the geometry contract, ASTRA equivalence, re-projection."""

from __future__ import annotations

import numpy as np
import pytest

from simgen.physics.geometry import rotate_positions, volume_center
from simgen.reconstruction.reconstruct import project, projection_matrix, reconstruct

SIZE = 32
SAMPLING = 0.5  # Å
# an atom off-centre in all three axes, near voxel centres: expected voxel [z, y, x] = [7, 10, 21]
ATOM = np.array([[21.1, 9.8, 7.15]]) * SAMPLING  # (x, y, z) Å
EXPECTED_VOXEL = (7, 10, 21)


def blob_tilt_series(
    positions: np.ndarray, angles: np.ndarray, size: int = SIZE, width: float = 0.8
) -> np.ndarray:
    """Projections of Gaussian atoms (width in voxels) written straight from the contract.

    The projection at θ images R_y(θ)·(r − c) + c; the z line integral of a unit 3D Gaussian is a
    unit 2D Gaussian at the rotated (x, y).
    """
    grid = np.arange(size)
    center = volume_center(size, SAMPLING)
    images = np.zeros((len(angles), size, size))
    for k, angle in enumerate(angles):
        for x, y, _ in rotate_positions(positions, angle, center) / SAMPLING:
            gy = np.exp(-0.5 * ((grid - y) / width) ** 2)
            gx = np.exp(-0.5 * ((grid - x) / width) ** 2)
            images[k] += np.outer(gy, gx) / (2 * np.pi * width**2)
    return images.astype(np.float32)


def argmax_voxel(volume: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(i) for i in np.unravel_index(np.argmax(volume), volume.shape))


def centroid_zyx(volume: np.ndarray, around: tuple[int, int, int], radius: int = 2) -> np.ndarray:
    window = tuple(slice(c - radius, c + radius + 1) for c in around)
    local = np.clip(volume[window], 0, None)
    grids = np.meshgrid(*(np.arange(s.start, s.stop) for s in window), indexing="ij")
    return np.array([(g * local).sum() / local.sum() for g in grids])


ANGLE_SETS = {
    "both_sides": np.linspace(-60.0, 60.0, 25),
    "positive_only": np.linspace(0.0, 70.0, 15),
    "negative_only": np.linspace(-70.0, 0.0, 15),
    "unsorted": np.array([35.0, -50.0, 5.0, 70.0, -20.0, -65.0, 50.0, 20.0, -35.0, -5.0]),
}


@pytest.mark.parametrize("angle_set", sorted(ANGLE_SETS))
def test_point_atom_reconstructs_at_its_voxel(angle_set):
    angles = ANGLE_SETS[angle_set]
    tilt_series = blob_tilt_series(ATOM, angles)
    volume = reconstruct(tilt_series, angles, method="sirt", iterations=60)
    assert volume.shape == (SIZE, SIZE, SIZE)
    assert argmax_voxel(volume) == EXPECTED_VOXEL
    # sub-voxel: along y and x the centroid sits on the atom; z is smeared by the missing wedge
    z, y, x = centroid_zyx(volume, EXPECTED_VOXEL)
    assert abs(y - ATOM[0, 1] / SAMPLING) < 0.15
    assert abs(x - ATOM[0, 0] / SAMPLING) < 0.25
    assert abs(z - ATOM[0, 2] / SAMPLING) < 0.5


@pytest.mark.parametrize("method", ["cgls", "fbp", "sart"])
def test_other_methods_place_the_atom(method):
    angles = ANGLE_SETS["both_sides"]
    volume = reconstruct(blob_tilt_series(ATOM, angles), angles, method=method, iterations=20)
    assert argmax_voxel(volume) == EXPECTED_VOXEL


def test_mirrored_atom_distinguishes_the_sign_of_theta():
    # the mirror image x -> 2c - x of the atom must NOT be where it reconstructs: a wrong sign of
    # the angle convention would swap these two for one-sided tilt ranges
    angles = ANGLE_SETS["positive_only"]
    volume = reconstruct(blob_tilt_series(ATOM, angles), angles, iterations=40)
    mirror = (EXPECTED_VOXEL[0], EXPECTED_VOXEL[1], SIZE - 1 - EXPECTED_VOXEL[2])
    assert volume[EXPECTED_VOXEL] > 5 * volume[mirror]


def test_atom_from_imaging_simulation_reconstructs_at_its_voxel():
    from ase import Atoms

    from simgen.physics import imaging

    atoms = Atoms("Pt", positions=ATOM)
    angles = np.linspace(-64.0, 56.0, 16)
    tilt_series = imaging.simulate_tilt_series(atoms, angles, size=SIZE, sampling=SAMPLING)
    volume = reconstruct(tilt_series, angles, iterations=60)
    assert argmax_voxel(volume) == EXPECTED_VOXEL


def phantom(size: int, rng: np.random.Generator, blobs: int = 12) -> np.ndarray:
    grid = np.arange(size, dtype=np.float64)
    volume = np.zeros((size, size, size))
    for z, y, x in rng.uniform(0.3 * size, 0.7 * size, size=(blobs, 3)):
        g = [np.exp(-0.5 * (grid - c) ** 2) for c in (z, y, x)]
        volume += g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    return volume.astype(np.float32)


def test_reprojected_reconstruction_matches_its_tilt_series():
    rng = np.random.default_rng(3)
    angles = np.linspace(-70.0, 70.0, 29)
    tilt_series = project(phantom(SIZE, rng), angles)
    residuals = []
    for iterations in (50, 200):
        volume = reconstruct(tilt_series, angles, iterations=iterations)
        residuals.append(
            np.linalg.norm(project(volume, angles) - tilt_series) / np.linalg.norm(tilt_series)
        )
    # SIRT converges towards a volume consistent with the data (measured: 0.062, then 0.013)
    assert residuals[1] < 0.5 * residuals[0]
    assert residuals[1] < 0.02


def test_batched_sirt_equals_astra_sirt_loop():
    rng = np.random.default_rng(4)
    angles = np.linspace(-60.0, 70.0, 14)
    tilt_series = project(phantom(16, rng, blobs=5), angles)
    tilt_series += rng.normal(0, 0.02, tilt_series.shape).astype(np.float32)  # exercises positivity
    batched = reconstruct(tilt_series, angles, iterations=25, backend="matrix")
    looped = reconstruct(tilt_series, angles, iterations=25, backend="astra")
    assert np.linalg.norm(batched - looped) / np.linalg.norm(looped) < 1e-5
    relaxed = reconstruct(tilt_series, angles, iterations=10, relaxation=1.5, backend="matrix")
    relaxed_astra = reconstruct(tilt_series, angles, iterations=10, relaxation=1.5, backend="astra")
    assert np.linalg.norm(relaxed - relaxed_astra) / np.linalg.norm(relaxed_astra) < 1e-5


def test_batched_cgls_equals_astra_cgls_loop():
    # few iterations: CGLS in float32 drifts apart after many (different summation order)
    rng = np.random.default_rng(5)
    angles = np.linspace(-60.0, 60.0, 11)
    tilt_series = project(phantom(16, rng, blobs=5), angles)
    batched = reconstruct(tilt_series, angles, method="cgls", iterations=4, positivity=False)
    looped = reconstruct(
        tilt_series, angles, method="cgls", iterations=4, positivity=False, backend="astra"
    )
    assert np.linalg.norm(batched - looped) / np.linalg.norm(looped) < 1e-4


def test_positivity():
    rng = np.random.default_rng(6)
    angles = np.linspace(-60.0, 60.0, 13)
    tilt_series = project(phantom(16, rng, blobs=4), angles)
    tilt_series += rng.normal(0, 0.3, tilt_series.shape).astype(np.float32)
    for method in ("sirt", "cgls", "fbp", "sart"):
        assert reconstruct(tilt_series, angles, method=method, iterations=10).min() >= 0.0
    # without the constraint the noise does drive voxels negative: the check above is not vacuous
    assert reconstruct(tilt_series, angles, iterations=10, positivity=False).min() < 0.0


def test_project_at_zero_degrees_is_the_sum_along_z():
    volume = phantom(12, np.random.default_rng(7), blobs=3)
    projection = project(volume, [0.0])
    assert projection.shape == (1, 12, 12)
    np.testing.assert_allclose(projection[0], volume.sum(axis=0), rtol=1e-5, atol=1e-6)
    # at +90° x' = x cos θ + z sin θ = z: the image column is z and the beam runs along -x
    side = project(volume, [90.0])[0]
    np.testing.assert_allclose(side, volume.sum(axis=2).T, rtol=1e-4, atol=1e-5)
    # at -90° the column is -z (mirrored about the centre)
    np.testing.assert_allclose(
        project(volume, [-90.0])[0], volume.sum(axis=2).T[:, ::-1], rtol=1e-4, atol=1e-5
    )


def test_non_square_projections_reconstruct_slice_by_slice():
    rng = np.random.default_rng(8)
    angles = np.linspace(-60.0, 60.0, 9)
    volume = np.zeros((12, 20, 12), dtype=np.float32)
    volume[3:6, 4:15, 7:9] = rng.random((3, 11, 2))
    tilt_series = project(volume, angles)
    assert tilt_series.shape == (9, 20, 12)
    full = reconstruct(tilt_series, angles, iterations=15)
    assert full.shape == (12, 20, 12)
    single = reconstruct(tilt_series[:, 7:8, :], angles, iterations=15)
    np.testing.assert_allclose(full[:, 7:8, :], single, rtol=1e-5, atol=1e-6)


def test_threads_do_not_change_the_result():
    rng = np.random.default_rng(9)
    angles = np.linspace(-60.0, 60.0, 9)
    tilt_series = project(phantom(16, rng, blobs=3), angles)
    tilt_series = np.concatenate([tilt_series] * 5, axis=1)  # 80 slices
    one = reconstruct(tilt_series, angles, iterations=5, threads=1)
    for threads in (2, 3):  # the matrix rows split into 2 or 3 ranges, one per thread
        np.testing.assert_array_equal(
            one, reconstruct(tilt_series, angles, iterations=5, threads=threads)
        )
    cgls = reconstruct(tilt_series, angles, method="cgls", iterations=5, threads=1)
    np.testing.assert_array_equal(
        cgls, reconstruct(tilt_series, angles, method="cgls", iterations=5, threads=3)
    )


def _scipy_sirt(matrix, sinogram, iterations):
    # the textbook batched SIRT with scipy's sparse products (the solver before the fused kernels)
    row = np.asarray(matrix.sum(axis=1)).ravel()
    col = np.asarray(matrix.sum(axis=0)).ravel()
    inv_row = np.where(row > 0, 1.0 / np.where(row > 0, row, 1), 0).astype(np.float32)[:, None]
    inv_col = np.where(col > 0, 1.0 / np.where(col > 0, col, 1), 0).astype(np.float32)[:, None]
    x = np.zeros((matrix.shape[1], sinogram.shape[1]), dtype=np.float32)
    for _ in range(iterations):
        x = np.maximum(x + inv_col * (matrix.T @ (inv_row * (sinogram - matrix @ x))), 0.0)
    return x


def _scipy_cgls(matrix, sinogram, iterations):
    x = np.zeros((matrix.shape[1], sinogram.shape[1]), dtype=np.float64)
    r = sinogram.astype(np.float64)
    p = matrix.T @ r
    gamma = (p * p).sum(axis=0)
    for _ in range(iterations):
        q = matrix @ p
        alpha = gamma / (q * q).sum(axis=0)
        x += alpha * p
        r -= alpha * q
        s = matrix.T @ r
        gamma, previous = (s * s).sum(axis=0), gamma
        p = s + gamma / previous * p
    return x


def test_threaded_kernels_equal_the_scipy_reference():
    rng = np.random.default_rng(12)
    angles = np.linspace(-65.0, 70.0, 17)
    size = 20
    tilt_series = project(phantom(size, rng, blobs=6), angles)
    tilt_series += rng.normal(0, 0.05, tilt_series.shape).astype(np.float32)  # hits positivity
    matrix, _ = projection_matrix(size, angles)
    sinogram = tilt_series.transpose(0, 2, 1).reshape(len(angles) * size, size)  # (A·P, P_y)
    expected = _scipy_sirt(matrix, sinogram, 30).reshape(size, size, size).transpose(0, 2, 1)
    got = reconstruct(tilt_series, angles, iterations=30, threads=2, backend="matrix")
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-6
    expected = _scipy_cgls(matrix.astype(np.float64), sinogram, 6)
    expected = expected.reshape(size, size, size).transpose(0, 2, 1)
    got = reconstruct(tilt_series, angles, method="cgls", iterations=6, positivity=False, threads=2)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-5


@pytest.mark.parametrize(
    ("tilt_series", "angles", "match"),
    [
        (np.zeros((4, 8)), np.zeros(4), r"tilt_series\.shape=\(4, 8\): expected 3 dimensions"),
        (np.zeros((0, 8, 8)), np.zeros(0), r"tilt_series\.shape=\(0, 8, 8\): expected a non-empty"),
        (np.zeros((3, 8, 8)), np.zeros(4), r"angles_deg\.shape=\(4,\): expected \(3,\)"),
        (np.full((2, 4, 4), np.nan), np.zeros(2), r"tilt_series: expected finite values"),
        (np.full((2, 4, 4), np.inf), np.zeros(2), r"tilt_series: expected finite values"),
        (np.zeros((2, 4, 4)), np.array([0.0, np.nan]), r"angles_deg=.*expected finite angles"),
    ],
)
def test_bad_input_errors(tilt_series, angles, match):
    with pytest.raises(ValueError, match=match):
        reconstruct(tilt_series, angles)


def test_bad_option_errors():
    series, angles = np.ones((2, 4, 4)), np.array([-10.0, 10.0])
    with pytest.raises(ValueError, match=r"method='art': expected one of"):
        reconstruct(series, angles, method="art")
    with pytest.raises(ValueError, match=r"iterations=0: expected a positive integer"):
        reconstruct(series, angles, iterations=0)
    with pytest.raises(ValueError, match=r"relaxation=2\.5: expected a number in \(0, 2\)"):
        reconstruct(series, angles, relaxation=2.5)
    with pytest.raises(ValueError, match=r"backend='gpu': expected one of"):
        reconstruct(series, angles, backend="gpu")
    with pytest.raises(ValueError, match=r"volume\.shape=\(4, 4\): expected a non-empty 3D"):
        project(np.ones((4, 4)), angles)


def test_cuda_backend_is_refused_without_cuda():
    import astra

    if astra.use_cuda():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match=r"backend='cuda': expected ASTRA with"):
        reconstruct(np.ones((2, 4, 4)), [0.0, 10.0], backend="cuda")


@pytest.mark.gpu
def test_cuda_reconstruction_agrees_with_cpu():
    import astra

    if not astra.use_cuda():
        pytest.skip("needs CUDA")
    angles = ANGLE_SETS["both_sides"]
    tilt_series = blob_tilt_series(ATOM, angles)
    gpu = reconstruct(tilt_series, angles, iterations=60, backend="cuda")
    assert argmax_voxel(gpu) == EXPECTED_VOXEL


def test_column_blocks_do_not_change_the_products():
    # the kernels visit the dense operand in column blocks (cache blocking); within a row the
    # entries are still added in column order, so any number of blocks gives the same bits
    from simgen.reconstruction import _sparse

    rng = np.random.default_rng(13)
    angles = np.linspace(-65.0, 70.0, 17)
    matrix, transpose = projection_matrix(20, angles)
    x = rng.random((matrix.shape[1], 7), dtype=np.float32)
    b = rng.random((matrix.shape[0], 7), dtype=np.float32)
    inv_row = rng.random(matrix.shape[0], dtype=np.float32)
    step = rng.random(matrix.shape[1], dtype=np.float32)
    results = []
    for blocks in (1, 3, 8, matrix.shape[1]):
        w = (_sparse.block_splits(matrix, blocks), matrix.indices, matrix.data)
        wt = (_sparse.block_splits(transpose, blocks), transpose.indices, transpose.data)
        product = np.empty_like(b)
        _sparse.spmm_rows(*w, x, product, 0, matrix.shape[0])
        residual = np.empty_like(b)
        _sparse.sirt_residual(*w, x, b, inv_row, residual, 0, matrix.shape[0])
        updated = x - 0.5  # negative entries: the positivity clip acts
        _sparse.sirt_update(*wt, residual, step, updated, True, np.empty_like(x), 0, x.shape[0])
        results.append((product, residual, updated))
    # the blocked product is scipy's CSR × dense product, and the fused residual is (b − W x)·R
    np.testing.assert_allclose(results[0][0], matrix @ x, rtol=1e-6)
    np.testing.assert_allclose(
        results[0][1], (b - matrix @ x) * inv_row[:, None], rtol=1e-5, atol=1e-6
    )
    assert (results[0][2] == 0).any() and (results[0][2] > 0).any()
    for blocked in results[1:]:
        for got, expected in zip(blocked, results[0]):
            np.testing.assert_array_equal(got, expected)


def _one_entry_at_a_time_sirt(matrix, transpose, sinogram, iterations, relaxation=1.0):
    # The batched SIRT written out as the solver before the four-entry kernels computed it: every
    # output row starts at 0 and adds one stored entry's row at a time, in column order, in
    # float32; then (b − Wx)·R and max(x + λC·Wᵀr, 0). Pure numpy, no numba.
    from simgen.reconstruction.reconstruct import _inverse_sums

    inv_row, inv_col = _inverse_sums(matrix)
    step = (np.float32(relaxation) * inv_col).astype(np.float32)
    x = np.zeros((matrix.shape[1], sinogram.shape[1]), dtype=np.float32)
    r = np.empty_like(sinogram)

    def row(m, i, dense):
        o = np.zeros(dense.shape[1], dtype=np.float32)
        for k in range(m.indptr[i], m.indptr[i + 1]):
            o += m.data[k] * dense[m.indices[k]]
        return o

    for _ in range(iterations):
        for i in range(matrix.shape[0]):
            r[i] = (sinogram[i] - row(matrix, i, x)) * inv_row[i]
        for j in range(matrix.shape[1]):
            x[j] = np.maximum(x[j] + row(transpose, j, r) * step[j], np.float32(0.0))
    return x


def test_sirt_is_bit_identical_to_one_entry_at_a_time():
    # the kernels add four stored entries per pass over the output row and block the operand by
    # the cache size: the float32 operations and their order are unchanged, so the volume is the
    # same bit for bit, for any block size and thread count
    import os

    rng = np.random.default_rng(21)
    size, angles = 12, np.linspace(-70.0, 65.0, 7)
    tilt_series = project(phantom(size, rng, blobs=4), angles)
    tilt_series += rng.normal(0, 0.05, tilt_series.shape).astype(np.float32)  # hits positivity
    tilt_series = tilt_series[:, :5, :]  # 5 y-slices
    matrix, transpose = projection_matrix(size, angles)
    row_lengths = np.diff(matrix.indptr)
    assert (row_lengths % 4 != 0).any() and (row_lengths >= 4).any()  # both code paths run
    sinogram = tilt_series.transpose(0, 2, 1).reshape(len(angles) * size, 5)
    expected = _one_entry_at_a_time_sirt(matrix, transpose, sinogram, 4)
    expected = expected.reshape(size, size, 5).transpose(0, 2, 1)
    assert (expected == 0).any() and (expected > 0).any()
    previous = os.environ.get("AET_SIRT_BLOCK_BYTES")
    try:
        for block, threads in (("1M", 1), ("96", 2), ("1", 3)):  # 1, several, one row per block
            os.environ["AET_SIRT_BLOCK_BYTES"] = block
            got = reconstruct(tilt_series, angles, iterations=4, threads=threads, backend="matrix")
            np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    finally:
        if previous is None:
            os.environ.pop("AET_SIRT_BLOCK_BYTES", None)
        else:
            os.environ["AET_SIRT_BLOCK_BYTES"] = previous


def test_cache_sizes_and_block_bytes(monkeypatch, tmp_path):
    from simgen.reconstruction import reconstruct as module

    assert [module._parse_size(t) for t in ("32K", "2048K", "1M", "65536", "x", "0K")] == [
        32768,
        2097152,
        1048576,
        65536,
        None,
        None,
    ]
    # a sysfs tree of a core with 48 KiB L1d, 32 KiB L1i, 2 MiB L2, 105 MiB L3
    for index, (level, kind, size) in enumerate(
        [
            ("1", "Data", "48K"),
            ("1", "Instruction", "32K"),
            ("2", "Unified", "2048K"),
            ("3", "Unified", "107520K"),
        ]
    ):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        (folder / "level").write_text(level + "\n")
        (folder / "type").write_text(kind + "\n")
        (folder / "size").write_text(size + "\n")
    monkeypatch.setattr(module, "_SYSFS_CACHE", str(tmp_path))
    module.cache_sizes.cache_clear()
    try:
        assert module.cache_sizes() == {"L1d": 49152, "L2": 2097152, "L3": 110100480}
        monkeypatch.delenv("AET_SIRT_BLOCK_BYTES", raising=False)
        assert module.block_bytes() == 2097152
        monkeypatch.setenv("AET_SIRT_BLOCK_BYTES", "512K")
        assert module.block_bytes() == 524288
        monkeypatch.setenv("AET_SIRT_BLOCK_BYTES", "lots")
        with pytest.raises(ValueError, match=r"AET_SIRT_BLOCK_BYTES='lots': expected a positive"):
            module.block_bytes()
    finally:
        module.cache_sizes.cache_clear()
