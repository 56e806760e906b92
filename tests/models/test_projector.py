"""Tests of models/projector.py (geometry contract, ASTRA agreement, gradients) and of the
wedge-preserving flips of models/augment.py, which are proved with the projector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.augment import WEDGE_FLIPS, WedgeFlip, allowed_flips, random_wedge_transform
from models.projector import Projector, project
from simgen.physics.geometry import astra_angles, rotate_positions, volume_center

N = 32
SIGMA = 1.5  # voxels
BLOB = np.array([22.0, 12.0, 9.0])  # (x, y, z) voxels: off centre in x and z


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def gaussian_volume(center, n=N, sigma=SIGMA) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    r2 = (x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2
    return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)


def test_blob_projects_where_the_geometry_contract_puts_it():
    volume = torch.as_tensor(gaussian_volume(BLOB))
    angles = [-40.0, 40.0]
    series = project(volume, angles).numpy()
    assert series.shape == (2, N, N)
    yy, xx = np.mgrid[:N, :N]
    centroids = []
    for image, angle in zip(series, angles):
        x_ref, y_ref, _ = rotate_positions(BLOB[None], angle, volume_center(N, 1.0))[0]
        analytic = (
            SIGMA
            * np.sqrt(2 * np.pi)
            * np.exp(-((xx - x_ref) ** 2 + (yy - y_ref) ** 2) / (2 * SIGMA**2))
        )
        assert np.corrcoef(image.ravel(), analytic.ravel())[0, 1] > 0.999
        cx = (image * xx).sum() / image.sum()
        cy = (image * yy).sum() / image.sum()
        assert cx == pytest.approx(x_ref, abs=0.05) and cy == pytest.approx(y_ref, abs=0.05)
        centroids.append(cx)
    # x' = c + (x - c) cos θ + (z - c) sin θ: the sign of θ matters by 2 (z - c) sin 40°.
    expected_gap = 2 * (BLOB[2] - (N - 1) / 2) * np.sin(np.deg2rad(40.0))
    assert centroids[1] - centroids[0] == pytest.approx(expected_gap, abs=0.1)


def test_zero_degrees_is_the_sum_over_z_and_mass_is_conserved():
    volume = torch.rand(1, 1, 12, 7, 12, generator=torch.Generator().manual_seed(0))
    series = project(volume, [0.0])
    torch.testing.assert_close(series[:, 0], volume.sum(dim=2)[:, 0])
    blob = torch.as_tensor(gaussian_volume((15.5, 15.5, 14.0)))  # inside the inscribed sphere
    sums = project(blob, np.linspace(-70, 70, 8)).sum(dim=(1, 2))
    torch.testing.assert_close(sums, blob.sum().expand(8), rtol=1e-3, atol=0)


def test_agrees_with_astra_forward_projection():
    astra = pytest.importorskip("astra")
    volume = gaussian_volume(BLOB) + 0.5 * gaussian_volume((8.0, 20.0, 25.0), sigma=2.0)
    angles = np.array([-60.0, -40.0, -10.0, 0.0, 25.0, 40.0, 70.0])
    series = project(torch.as_tensor(volume), angles).numpy()
    vol_geom = astra.create_vol_geom(N, N)
    proj_geom = astra.create_proj_geom("parallel", 1.0, N, astra_angles(angles))
    projector = astra.create_projector("strip", proj_geom, vol_geom)
    reference = np.zeros_like(series)
    try:
        for j in range(N):  # y-slice j: (z, x) image -> sinogram (angle, x), angles as -θ
            sino_id, sino = astra.create_sino(volume[:, j, :], projector)
            astra.data2d.delete(sino_id)
            reference[:, j, :] = sino
    finally:
        astra.projector.delete(projector)
    for image, ref in zip(series, reference):
        assert np.corrcoef(image.ravel(), ref.ravel())[0, 1] > 0.999
        assert np.abs(image - ref).max() < 0.01 * ref.max()


def test_agrees_with_simgen_project():
    from simgen.reconstruction import reconstruct

    volume = gaussian_volume(BLOB)
    angles = np.array([-40.0, 0.0, 40.0])
    ours = project(torch.as_tensor(volume), angles).numpy()
    theirs = np.asarray(reconstruct.project(volume, angles))
    assert theirs.shape == ours.shape
    for a, b in zip(ours, theirs):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_gradients_flow_to_volume_and_angles():
    gen = torch.Generator().manual_seed(0)
    volume = torch.rand(1, 1, 5, 3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    angles = torch.tensor([-30.0, 20.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, a: project(v, a, angle_batch=1), (volume, angles))
    # Recovering a blob's projection by gradient descent on the volume lowers the misfit.
    target = project(torch.as_tensor(gaussian_volume((10.0, 7.0, 5.0), n=16)), [-30.0, 0.0, 30.0])
    module = Projector([-30.0, 0.0, 30.0])
    estimate = torch.zeros(1, 1, 16, 16, 16, requires_grad=True)
    opt = torch.optim.SGD([estimate], lr=0.01)
    first = None
    for _ in range(30):
        loss = ((module(estimate)[0] - target) ** 2).sum()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.0 and float(loss.detach()) < 0.1 * first
    assert "3 from -30° to 30°" in repr(module)


def test_projector_rejects_bad_input():
    with pytest.raises(ValueError, match="angles"):
        project(torch.zeros(4, 4, 4), [])
    with pytest.raises(ValueError, match="volume.shape"):
        project(torch.zeros(1, 2, 4, 4, 4), [0.0])


# ---------------------------------------------------------------------------- augmentations
def test_flips_are_involutions_and_form_the_expected_group():
    volume = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    positions = np.array([[1.0, 2.0, 3.0], [0.0, 2.4, 0.8]])
    for flip in WEDGE_FLIPS:
        assert np.array_equal(flip.volume(flip.volume(volume)), volume)
        back = flip.positions(flip.positions(positions, volume.shape, 0.4), volume.shape, 0.4)
        np.testing.assert_allclose(back, positions)
    assert len(WEDGE_FLIPS) == 8
    assert len(allowed_flips([-60.0, -20.0, 20.0, 60.0])) == 8
    assert set(allowed_flips([-40.0, 0.0, 70.0])) == {
        WedgeFlip(),
        WedgeFlip(y=True),
        WedgeFlip(z=True, x=True),
        WedgeFlip(True, True, True),
    }
    # An atom at voxel (z, y, x) = (1, 2, 3) with sampling 0.4 Å moves with its voxel.
    flip = WedgeFlip(z=True, x=True)
    flipped = flip.volume(np.pad(np.ones((1, 1, 1)), ((1, 3), (2, 3), (3, 3))))
    moved = flip.positions(np.array([[3 * 0.4, 2 * 0.4, 1 * 0.4]]), flipped.shape, 0.4)
    k = np.rint(moved[0, ::-1] / 0.4).astype(int)
    assert flipped[tuple(k)] == 1.0


def test_every_flip_maps_the_tilt_series_onto_the_same_angle_set():
    # The projection of the flipped object at each θ must be a (flipped) projection of the
    # original at an angle of the same set: then the missing wedge is unchanged.
    angles = np.array([-60.0, -35.0, -10.0, 10.0, 35.0, 60.0])
    volume = gaussian_volume(BLOB, n=24) + 0.3 * gaussian_volume((5.0, 16.0, 15.0), n=24)
    series = project(torch.as_tensor(volume), angles).numpy()
    for flip in WEDGE_FLIPS:
        direct = project(torch.as_tensor(flip.volume(volume)), angles).numpy()
        np.testing.assert_allclose(flip.tilt_series(series, angles), direct, atol=2e-4)
    # A 90° rotation about y is not in the group: its projections match no angle of the set.
    rotated = np.ascontiguousarray(np.rot90(volume, 1, axes=(0, 2)))
    projections = project(torch.as_tensor(rotated), angles).numpy()
    gaps = [np.abs(projections[0] - s).max() for s in series] + [
        np.abs(projections[0][:, ::-1] - s).max() for s in series
    ]
    assert min(gaps) > 0.1 * series.max()


def test_random_wedge_transform_keeps_triples_consistent():
    rng = np.random.default_rng(5)
    angles = np.array([-50.0, 0.0, 50.0])
    volume = gaussian_volume(BLOB, n=24)
    series = project(torch.as_tensor(volume), angles).numpy()
    seen = set()
    for _ in range(12):
        v, t, s = random_wedge_transform(volume, 2 * volume, series, rng, angles=angles)
        np.testing.assert_allclose(t, 2 * v)
        np.testing.assert_allclose(project(torch.as_tensor(v), angles).numpy(), s, atol=2e-4)
        seen.add(tuple(np.argwhere(v == v.max())[0]))
    assert len(seen) > 2
    v, t, s = random_wedge_transform(volume, None, None, rng)
    assert t is None and s is None and v.shape == volume.shape
    with pytest.raises(ValueError, match="symmetric"):
        WedgeFlip(x=True).tilt_series(series, np.array([-40.0, 0.0, 70.0]))
