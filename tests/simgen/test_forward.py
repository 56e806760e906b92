"""The one forward model (simgen.forward): the same numbers from numpy and torch, and its physics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simgen.forward import (
    LinearGrid,
    RadialPSF,
    atom_patches,
    cross_section,
    fourier_shift,
    images_fft,
    project_atoms,
    project_atoms_sparse,
    projected_x,
    structure_factor,
    y_factors,
)

SIZE, SAMPLING = 32, 0.4
CENTER = (SIZE - 1) / 2 * SAMPLING


def _atoms(rng, n=6):
    positions = CENTER + rng.uniform(-3.0, 3.0, (n, 3))
    weights = np.array([cross_section("Pt" if k % 2 else "Fe") for k in range(n)])
    return positions, weights


def test_numpy_and_torch_give_the_same_images_shifts_and_sparse_images():
    """Every function runs on numpy arrays and torch tensors and returns the same numbers."""
    rng = np.random.default_rng(0)
    positions, weights = _atoms(rng)
    angles = np.deg2rad([-63.0, -20.5, 0.0, 11.0, 48.0])
    shifts = rng.normal(0, 0.4, (5, 2))
    grid = LinearGrid(SIZE, SAMPLING)
    as_torch = [torch.as_tensor(a) for a in (positions, weights, angles, shifts)]

    exact_np = project_atoms(positions, weights, angles, grid, shifts=shifts)
    exact_torch = project_atoms(*as_torch[:3], grid, shifts=as_torch[3])
    assert isinstance(exact_torch, torch.Tensor) and isinstance(exact_np, np.ndarray)
    np.testing.assert_allclose(exact_torch.numpy(), exact_np, rtol=0, atol=1e-12 * exact_np.max())

    psf = RadialPSF.from_microscope()
    sparse = dict(size=SIZE, sampling=SAMPLING, psf=psf)
    sparse_np = project_atoms_sparse(positions, weights, angles, shifts=shifts, **sparse)
    sparse_torch = project_atoms_sparse(*as_torch[:3], shifts=as_torch[3], **sparse)
    np.testing.assert_allclose(sparse_torch.numpy(), sparse_np, rtol=0, atol=1e-12)

    images = rng.random((3, 8, 9))
    px = rng.normal(0, 1.5, (3, 2))
    moved = fourier_shift(torch.as_tensor(images), torch.as_tensor(px)).numpy()
    np.testing.assert_allclose(moved, fourier_shift(images, px), rtol=0, atol=1e-12)


def test_linear_model_physics():
    """Counts conserve Σσ, a shift is a translation of the atoms, the two syntheses agree, the
    sparse model is the exact one within its truncated tail, and the atom sits where R_y puts it."""
    rng = np.random.default_rng(1)
    positions, weights = _atoms(rng, 4)
    angles = np.deg2rad([-50.0, 0.0, 35.0])
    grid = LinearGrid(SIZE, SAMPLING)
    exact = project_atoms(positions, weights, angles, grid)
    # the image of atoms well inside the field (≥ 9 Å from its edge) holds their summed σ, less
    # the probe tail beyond the field (about 0.1 %)
    wide = LinearGrid(2 * SIZE, SAMPLING)
    inside = project_atoms(positions + (wide.center - CENTER), weights, angles, wide)
    assert inside.sum(axis=(1, 2)) == pytest.approx([weights.sum()] * 3, rel=2e-3)
    # FFT synthesis (the simulator's, float32) = DFT-matrix synthesis (the refinement's)
    x = projected_x(positions, angles, grid.center)
    fft = images_fft(structure_factor(y_factors(positions[:, 1], weights, grid), x, grid), grid)
    assert np.abs(fft - exact).max() < 1e-5 * exact.max()
    # shifting the projection by (dy, dx) = translating the atoms by (dx, dy, 0) at 0°
    shift = np.array([[0.37, -0.61]])
    shifted = project_atoms(positions, weights, angles[1:2], grid, shifts=shift)
    moved = project_atoms(positions + [shift[0, 1], shift[0, 0], 0.0], weights, angles[1:2], grid)
    assert np.abs(shifted - moved).max() < 1e-9 * moved.max()
    # the sparse model drops only the PSF beyond its patch radius
    psf = RadialPSF.from_microscope()
    sparse = project_atoms_sparse(
        positions, weights, angles, size=SIZE, sampling=SAMPLING, psf=psf, radius=4.0
    )
    assert np.abs(sparse - exact).max() < 5e-3 * exact.max()
    step = psf.r[1] - psf.r[0]
    within = np.sum((2 * np.pi * psf.r * psf.value * step)[psf.r <= 4.0])  # ≈ 0.985: Airy tail
    wide_sparse = project_atoms_sparse(
        positions + (wide.center - CENTER),
        weights,
        angles,
        size=2 * SIZE,
        sampling=SAMPLING,
        psf=psf,
        radius=4.0,
    )
    assert wide_sparse.sum() / inside.sum() == pytest.approx(within, abs=2e-3)
    # one atom at x = c + 2 Å, z = c at +30° projects to column c + 2·cos 30°, and at −30° too
    one = np.array([[CENTER + 2.0, CENTER, CENTER]])
    for degrees in (-30.0, 30.0):
        image = project_atoms(one, np.ones(1), np.deg2rad([degrees]), grid)[0]
        row, col = np.unravel_index(np.argmax(image), image.shape)
        assert row == round(CENTER / SAMPLING)
        assert col == round((CENTER + 2.0 * np.cos(np.deg2rad(degrees))) / SAMPLING)


def test_patch_jacobian_matches_finite_differences():
    psf = RadialPSF.from_microscope()
    u_x, u_y = np.array([6.13]), np.array([5.87])
    kw = dict(size=SIZE, sampling=SAMPLING, psf=psf, radius=2.0)
    patches = atom_patches(u_x, u_y, gradient=True, **kw)
    step = 1e-4
    for grad, dx, dy in ((patches.grad_x, step, 0.0), (patches.grad_y, 0.0, step)):
        plus = atom_patches(u_x + dx, u_y + dy, **kw).value
        minus = atom_patches(u_x - dx, u_y - dy, **kw).value
        numeric = (plus - minus) / (2 * step)
        assert np.abs(grad - numeric).max() < 2e-2 * np.abs(numeric).max()
