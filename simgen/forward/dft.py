"""The exact linear HAADF model: point atoms × PSF, by a non-uniform DFT of the atoms.

``image(r) = sampling² · Σ_i w_i · PSF(r − u_i)`` at the pixel centres, ``u_i`` the projected
position of atom ``i`` (:func:`projected_x`), ``w_i`` its cross-section (Å²). The atoms' structure
factor is evaluated exactly at the DFT frequencies of a padded pixel grid (:class:`LinearGrid`:
only the frequencies the PSF transmits) — one complex matrix product per batch of angles, since y
does not change under a tilt about y — multiplied by the PSF's transform and summed back at the
pixel centres, either with an FFT on an oversampled grid (:func:`images_fft`, numpy, the
simulator's) or with two small DFT matrices (:func:`images_dft`, any array namespace,
differentiable in torch). Exact for sub-pixel positions; the cost grows as atoms × angles ×
frequencies, so for many thousands of atoms use :mod:`simgen.forward.sparse`.
"""

from __future__ import annotations

import math

import numpy as np

from simgen.forward._backend import array_namespace, constant, is_numpy_namespace
from simgen.forward.psf import band_limit, psf_transfer
from simgen.physics.microscope import Microscope

__all__ = [
    "PSF_PAD",
    "LinearGrid",
    "projected_x",
    "phase_factors",
    "y_factors",
    "structure_factor",
    "images_fft",
    "images_dft",
    "project_atoms",
    "psf_image",
]

#: Extra image border (Å) of the padded grid, so PSF tails do not wrap across the image.
PSF_PAD = 2.0


class LinearGrid:
    """The frequencies of the exact linear model on a ``size × size`` grid of ``sampling`` Å pixels.

    Parameters
    ----------
    size
        Pixels per image side.
    sampling
        Pixel size, Å.
    microscope
        Probe settings (the PSF).
    thermal_sigma
        Debye–Waller blur (Å); the calibration default when ``None``.
    pad
        Border (Å) of the padded period.

    Attributes
    ----------
    period
        Padded period q (pixels); ``over`` the oversampling that point-samples frequencies above
        the pixel Nyquist, ``fine = q·over``.
    ky, kx
        Selected frequencies (Å⁻¹): every one the PSF transmits, below the fine grid's Nyquist;
        ``kx`` is the Hermitian half (0, Δk, 2Δk, …), ``rows`` the indices of ``ky`` in
        ``fftfreq(fine)``.
    transfer
        ``(Ky, Kx)`` float64, the PSF's transform at those frequencies.
    """

    def __init__(
        self,
        size: int,
        sampling: float,
        microscope: Microscope = Microscope(),
        *,
        thermal_sigma: float | None = None,
        pad: float = PSF_PAD,
    ):
        from scipy import fft

        self.size, self.sampling = int(size), float(sampling)
        self.center = (self.size - 1) / 2.0 * self.sampling
        self.microscope = microscope
        pad_px = int(math.ceil(pad / self.sampling))
        self.period = fft.next_fast_len(self.size + 2 * pad_px, real=True)
        kmax = band_limit(microscope)
        # Point sampling at the pixel centres (what a scan does): when the PSF holds frequencies
        # above the pixel Nyquist, evaluate on an `over`-times finer grid, keep every over-th sample.
        self.over = max(1, int(math.ceil(2.0 * kmax * self.sampling * 1.0001)))
        self.fine = self.period * self.over
        ky = np.fft.fftfreq(self.fine, d=self.sampling / self.over)
        kx = np.fft.rfftfreq(self.fine, d=self.sampling / self.over)
        nyquist = 0.5 * self.over / self.sampling
        self.rows = np.flatnonzero((np.abs(ky) <= kmax) & (np.abs(ky) < nyquist))
        self.cols = np.flatnonzero((kx <= kmax) & (kx < nyquist))
        self.n_kx = len(kx)
        self.kx_step = float(kx[1])
        self.ky, self.kx = ky[self.rows], kx[self.cols]
        self.transfer = psf_transfer(
            np.hypot(self.ky[:, None], self.kx[None, :]), microscope, thermal_sigma=thermal_sigma
        )
        self._constants: dict = {}

    def __repr__(self) -> str:
        return (
            f"LinearGrid(size={self.size}, sampling={self.sampling}, "
            f"frequencies={len(self.ky)}x{len(self.kx)}, over={self.over})"
        )

    def synthesis(self, xp, like):
        """``(transfer, inverse_y, inverse_x)`` of :func:`images_dft` in ``xp`` (cached).

        ``transfer`` carries the Hermitian column weight (2 for kx > 0) and the inverse DFT's 1/q².
        """
        key = (xp.__name__, str(like.dtype), str(getattr(like, "device", "cpu")))
        if key not in self._constants:
            column_weight = np.where(self.kx > 0, 2.0, 1.0)
            pixels = np.arange(self.size) * self.sampling
            self._constants[key] = (
                constant(xp, self.transfer * column_weight[None, :] / self.period**2, like),
                constant(xp, np.exp(2j * np.pi * np.outer(pixels, self.ky)), like),  # (P, Ky)
                constant(xp, np.exp(2j * np.pi * np.outer(self.kx, pixels)), like),  # (Kx, P)
            )
        return self._constants[key]


def projected_x(positions, angles, center: float):
    """Image column coordinate (Å) of each atom at each tilt: ``(N, A)``.

    ``x cosθ + z sinθ`` about the volume centre (R_y(θ), DESIGN.md); ``angles`` in radians. The
    row coordinate is ``y``, unchanged by a tilt about y.
    """
    xp = array_namespace(positions, angles)
    rel_x = positions[:, 0] - center
    rel_z = positions[:, 2] - center
    return (
        rel_x[:, None] * xp.cos(angles)[None, :] + rel_z[:, None] * xp.sin(angles)[None, :] + center
    )


def phase_factors(coords, freqs, dtype=None):
    """exp(−2πi f·x) (shape ``coords.shape + (F,)``), the phase reduced modulo 1 in the
    coordinates' precision first, then evaluated in ``dtype`` (real; default the coordinates')."""
    xp = array_namespace(coords)
    freqs = constant(xp, freqs, coords)
    phase = coords[..., None] * freqs
    phase = phase - xp.round(phase)
    if dtype is not None:
        phase = xp.astype(phase, dtype)
    return xp.exp((-2j * math.pi) * phase)


def _harmonic_factors(coords, step: float, count: int, dtype):
    """exp(−2πi m·step·x) for m = 0..count−1, factorised as m = a·B + b.

    Only about 2·sqrt(count) exponentials per coordinate are evaluated; the rest are complex
    products (the exponential dominates the model's cost).
    """
    xp = array_namespace(coords)
    block = max(1, int(math.ceil(math.sqrt(count))))
    fine = phase_factors(coords, step * np.arange(block), dtype)
    coarse = phase_factors(coords, step * block * np.arange(int(math.ceil(count / block))), dtype)
    if is_numpy_namespace(xp):
        from simgen.tools.reproducible import complex_multiply

        # numpy's complex product rounds by CPU (simgen.tools.reproducible): the same bits everywhere
        product = complex_multiply(coarse[..., :, None], fine[..., None, :])
    else:
        product = coarse[..., :, None] * fine[..., None, :]
    return xp.reshape(product, (*coords.shape, -1))[..., :count]


def y_factors(y, weights, grid: LinearGrid, dtype=None):
    """``w_i · exp(−2πi k_y y_i)``: ``(N, Ky)``, the angle-independent half of the structure factor."""
    xp = array_namespace(y, weights)
    dtype = y.dtype if dtype is None else dtype
    return phase_factors(y, grid.ky, dtype) * xp.astype(weights, dtype)[:, None]


def structure_factor(weighted_y, x, grid: LinearGrid, *, shift_y=None, dtype=None):
    """Σ_i w_i exp(−2πi (k_y y_i + k_x x_i(θ))) at the grid's frequencies: ``(A, Ky, Kx)`` complex.

    Parameters
    ----------
    weighted_y
        :func:`y_factors` of the atoms.
    x
        ``(N, A)`` projected column coordinates (Å, :func:`projected_x`, shifts included).
    shift_y
        ``(A,)`` row translation (Å) of each projection, or ``None``.
    dtype
        Real dtype of the exponentials (default ``x``'s).
    """
    xp = array_namespace(weighted_y, x)
    n_atoms, n_angles = x.shape
    dtype = x.dtype if dtype is None else dtype
    phase_x = _harmonic_factors(x, grid.kx_step, len(grid.cols), dtype)  # (N, A, Kx)
    if is_numpy_namespace(xp) and weighted_y.dtype == np.complex64:
        from simgen.tools.reproducible import complex_gram

        # the simulator's single-precision path: exact integer arithmetic, so the same bits on every CPU (not BLAS's summation order)
        flat = complex_gram(weighted_y, np.reshape(phase_x, (n_atoms, -1)))
    else:
        flat = xp.matmul(
            xp.permute_dims(weighted_y, (1, 0)), xp.reshape(phase_x, (n_atoms, -1))
        )
    structure = xp.permute_dims(
        xp.reshape(flat, (len(grid.rows), n_angles, len(grid.cols))), (1, 0, 2)
    )
    if shift_y is not None:
        structure = structure * phase_factors(shift_y, grid.ky)[:, :, None]
    return structure


def images_fft(structure: np.ndarray, grid: LinearGrid) -> np.ndarray:
    """Images ``(A, P, P)`` float32 (counts per unit dose) from a numpy structure factor, by FFT.

    The spectrum times the PSF's transform is placed on the oversampled grid and inverted with a
    real FFT; every ``over``-th sample is a pixel centre. Used by the simulator.
    """
    from scipy import fft

    n = structure.shape[0]
    spectrum = np.zeros((n, grid.fine, grid.n_kx), dtype=np.complex64)
    spectrum[:, grid.rows, : len(grid.cols)] = structure * grid.transfer.astype(np.float32)
    # irfft2's 1/fine² times over² turns Σ σ·T(k)·e^{2πik·r} / (q·sampling)² into counts per dose
    images = fft.irfft2(spectrum, s=(grid.fine, grid.fine), workers=1)
    step, stop = grid.over, grid.size * grid.over
    return images[:, :stop:step, :stop:step] * (grid.over * grid.over)


def images_dft(structure, grid: LinearGrid):
    """Images ``(A, P, P)`` (counts per unit dose) from a structure factor, by two DFT matrices.

    Any array namespace; differentiable in torch. Same values as :func:`images_fft` to float
    precision.
    """
    xp = array_namespace(structure)
    like = xp.real(structure[:1, :1, :1])
    transfer, inverse_y, inverse_x = grid.synthesis(xp, like)
    spectrum = structure * transfer
    return xp.real(xp.matmul(xp.matmul(inverse_y, spectrum), inverse_x))


def project_atoms(positions, weights, angles, grid: LinearGrid, *, shifts=None, synthesis="dft"):
    """Linear-mode images of atoms at tilt angles: ``(A, P, P)``, counts per unit dose.

    Parameters
    ----------
    positions
        ``(N, 3)`` Å, ``(x, y, z)`` in the volume frame (voxel ``k`` at ``k·sampling``).
    weights
        ``(N,)`` cross-sections, Å².
    angles
        ``(A,)`` tilt angles, radians.
    grid
        The frequencies and PSF (:class:`LinearGrid`).
    shifts
        ``(A, 2)`` translations ``(dy, dx)`` of each projection's content, Å, or ``None``.
    synthesis
        ``"dft"`` (any namespace, differentiable) or ``"fft"`` (numpy only).
    """
    xp = array_namespace(positions, weights, angles)
    x = projected_x(positions, angles, grid.center)
    if shifts is not None:
        x = x + shifts[None, :, 1]
    structure = structure_factor(
        y_factors(positions[:, 1], weights, grid),
        x,
        grid,
        shift_y=None if shifts is None else shifts[:, 0],
    )
    if synthesis == "fft":
        return images_fft(np.asarray(structure), grid)
    if synthesis != "dft":
        raise ValueError(f"synthesis={synthesis!r}: expected 'dft' or 'fft'")
    del xp
    return images_dft(structure, grid)


def psf_image(
    sampling: float,
    size: int,
    microscope: Microscope = Microscope(),
    *,
    thermal_sigma: float | None = None,
) -> np.ndarray:
    """The PSF sampled on a ``(size, size)`` pixel grid, centred on pixel ``(size // 2, size // 2)``.

    Values are ``sampling² · PSF(r)`` (dimensionless), i.e. the linear-mode image of one atom of
    unit cross-section, point-sampled and periodic over the grid (tails beyond the edge wrap
    around), so they sum to exactly 1 for pixels finer than λ/(2α) (0.5 Å at 200 kV, 25 mrad).
    The images of :func:`simgen.physics.imaging.simulate_tilt_series` are not periodic: there the part of
    an atom's PSF that falls outside the field of view (about 1% for an atom 4 Å inside the edge)
    is lost, as in a scan.

    Parameters
    ----------
    sampling
        Pixel size in Å.
    size
        Pixels per side.
    microscope
        Probe settings.
    thermal_sigma
        Debye–Waller blur (Å); the calibration default when ``None``.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"size={size!r}: expected an integer number of pixels >= 2")
    if isinstance(sampling, bool) or not (
        isinstance(sampling, (int, float, np.floating)) and sampling > 0 and math.isfinite(sampling)
    ):
        raise ValueError(f"sampling={sampling!r}: expected a positive pixel size in Å")
    grid = LinearGrid(size, float(sampling), microscope, thermal_sigma=thermal_sigma, pad=0.0)
    c = (size // 2) * float(sampling)
    atom = np.array([[c, c, c]])
    weighted_y = y_factors(atom[:, 1], np.array([1.0]), grid, np.float32)
    x = projected_x(atom, np.zeros(1), grid.center)
    images = images_fft(structure_factor(weighted_y, x, grid, dtype=np.float32), grid)
    return images[0].astype(np.float64)
