"""Physics refinement of an atomic model against the measured tilt series.

Starting from any method's atoms (positions in Å in the volume frame + elements), maximise the
likelihood of the measured HAADF tilt series under the calibrated linear forward model of
:mod:`simgen.imaging` (docs/design.md, "linear" mode)::

    E[counts_θ(r)] = b + dose_θ · c_θ · Σ_i s_Z(i) · a_i · σ(Z_i) · PSF(r − P_θ(r_i) − t_θ) · sampling²

with σ(Z) the calibrated HAADF cross-section and PSF the calibrated probe intensity blurred by
the thermal (Debye–Waller) Gaussian; P_θ the projection of R_y(θ + δ_θ) about the volume centre;
t_θ = (dy, dx) the per-projection translation (misalignment); δ_θ the tilt-angle correction; c_θ
the relative beam current of each projection; s_Z a per-element intensity scale and a_i an
optional per-atom amplitude. Counts are Poisson plus Gaussian read noise of variance ρ²; the
likelihood is the shifted-Poisson approximation, counts + ρ² ~ Poisson(E + ρ²) (Snyder et al.,
J. Opt. Soc. Am. A 12, 272 (1995)), exact without read noise.

The images are rendered exactly as :func:`simgen.imaging.simulate_tilt_series` does in linear
mode: the atoms' structure factor is evaluated at the DFT frequencies of the same padded grid
(only frequencies the PSF transmits), multiplied by the PSF's transfer function and summed back at
the pixel centres with two small DFT matrices, so the forward model matches the simulator to float
precision and is differentiable in positions, angles and shifts. A few hundred atoms × tens of
64² projections cost a few tens of milliseconds per evaluation on one CPU core.

Gauge freedoms are removed by construction: the x shifts are kept orthogonal to cos θ and sin θ and
the y shifts to a constant (a rigid translation of the particle does exactly that), the angle
corrections have zero mean (a rigid rotation about the tilt axis), and the beam-current factors a
zero mean logarithm (the per-element scales carry the overall intensity). The optimiser is L-BFGS
with a strong-Wolfe line search on variables whitened by a stochastic (Hutchinson) estimate of the
Fisher information's diagonal, so a unit step is about one standard error for every parameter.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "RefineConfig",
    "RefineResult",
    "LinearProjector",
    "render_tilt_series",
    "refine_atoms",
    "refine_sample",
    "missing_measurement",
]

logger = logging.getLogger(__name__)

#: Extra image border (Å) of simgen's linear mode: the padded grid sets the DFT frequencies.
_PSF_PAD = 2.0


@dataclass(frozen=True)
class RefineConfig:
    """What to refine and how.

    Args:
        fit_positions: Refine atom positions.
        fit_shifts: Refine a translation (dy, dx) per projection (misalignment).
        fit_angles: Refine a tilt-angle correction per projection.
        fit_scales: Refine one intensity scale per element.
        fit_beam_current: Refine a relative intensity per projection (beam-current drift).
        fit_background: Refine the constant background (counts per pixel).
        fit_amplitudes: Refine a per-atom amplitude (scattering strength) around its element's
            mean, with a log-normal prior of width ``amplitude_prior``; exposed for species
            classification as ``RefineResult.cross_sections``.
        amplitude_prior: Standard deviation of the per-atom log amplitude prior.
        position_prior: Standard deviation (Å) of a Gaussian prior on each atom's displacement
            from its starting position (maximum a posteriori); ``None``: none (maximum likelihood).
        read_noise: Gaussian read noise (counts, standard deviation); ``None`` estimates it from
            the residuals of the starting model.
        background: Background counts per pixel to start from; ``None`` estimates it.
        iterations: L-BFGS iterations (one iteration may evaluate the model several times).
        rounds: Refinement rounds; the read noise is re-estimated between rounds.
        max_displacement: Largest move (Å) of an atom from its starting position; beyond it the
            atom is held at the bound (guards against atoms wandering into a missing neighbour).
        shift_model: How a projection's translation acts: ``"exact"`` translates the atoms
            (what a real scan records), ``"fourier"`` applies the shift theorem to the pixel
            samples and clips negative ringing at 0 (what :class:`simgen.noise.Misalignment`
            and the noise chain do to simulated data).
        fisher_probes: Random probes for the Fisher-diagonal preconditioner.
        seed: Seed of the preconditioner's probes.
        threads: Torch CPU threads (``None``: leave torch's setting).
    """

    fit_positions: bool = True
    fit_shifts: bool = True
    fit_angles: bool = True
    fit_scales: bool = True
    fit_beam_current: bool = True
    fit_background: bool = True
    fit_amplitudes: bool = False
    amplitude_prior: float = 0.5
    position_prior: float | None = None
    read_noise: float | None = None
    background: float | None = None
    iterations: int = 150
    rounds: int = 2
    max_displacement: float = 1.0
    shift_model: str = "exact"
    fisher_probes: int = 8
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.rounds < 1:
            raise ValueError(
                f"iterations={self.iterations!r}, rounds={self.rounds!r}: expected positive integers"
            )
        if not self.amplitude_prior > 0:
            raise ValueError(f"amplitude_prior={self.amplitude_prior!r}: expected > 0")
        if self.read_noise is not None and not self.read_noise >= 0:
            raise ValueError(f"read_noise={self.read_noise!r}: expected counts >= 0 or None")
        if not self.max_displacement > 0:
            raise ValueError(f"max_displacement={self.max_displacement!r}: expected > 0 Å")
        if self.position_prior is not None and not self.position_prior > 0:
            raise ValueError(f"position_prior={self.position_prior!r}: expected > 0 Å or None")
        if self.shift_model not in ("exact", "fourier"):
            raise ValueError(f"shift_model={self.shift_model!r}: expected 'exact' or 'fourier'")
        if self.fisher_probes < 1:
            raise ValueError(f"fisher_probes={self.fisher_probes!r}: expected >= 1")


@dataclass
class RefineResult:
    """A refined atomic model and the refined acquisition.

    Args:
        positions: (N, 3) Å, (x, y, z) in the volume frame.
        elements: N element symbols (unchanged).
        shifts: (A, 2) Å, translation (dy, dx) of each projection's image content.
        angles: (A,) refined tilt angles, degrees.
        element_scales: Intensity scale per element (1 = the calibrated σ(Z) at the given dose).
        cross_sections: (N,) effective HAADF cross-section of each atom, Å² (σ(Z)·s_Z·a_i).
        beam_current: (A,) relative intensity of each projection (geometric mean 1).
        background: Background counts per pixel.
        read_noise: Read-noise standard deviation used in the likelihood (counts).
        nll: Negative log-likelihood per pixel at the start and after each round.
        displacement: (N,) Å, distance each atom moved.
        amplitude_standard_errors: (N,) standard error of each atom's log cross-section (from the
            diagonal of the Fisher information plus the amplitude prior) when ``fit_amplitudes``;
            ``None`` otherwise. Neighbour correlations are ignored, so it is a lower bound.
    """

    positions: np.ndarray
    elements: list[str]
    shifts: np.ndarray
    angles: np.ndarray
    element_scales: dict[str, float]
    cross_sections: np.ndarray
    beam_current: np.ndarray
    background: float
    read_noise: float
    nll: list[float] = field(default_factory=list)
    displacement: np.ndarray | None = None
    amplitude_standard_errors: np.ndarray | None = None


class LinearProjector:
    """Differentiable linear-mode HAADF projector, exactly simgen's ``linear`` imaging.

    Args:
        size: Pixels per image side (= volume side in voxels).
        sampling: Pixel size in Å.
        microscope: ``simgen.imaging.Microscope``; the project default when ``None``.
        thermal_sigma: Debye–Waller blur (Å) of the PSF; the calibration default when ``None``.
        dtype: Real dtype of the computation (float64 by default).

    Shapes:
        positions (N, 3) Å, weights (N,) Å², angles (A,) radians, shifts (A, 2) Å (dy, dx)
        -> images (A, size, size), counts per unit dose (e/Å²).
    """

    def __init__(
        self,
        size: int,
        sampling: float,
        microscope=None,
        *,
        thermal_sigma: float | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        from scipy import fft

        from simgen.geometry import volume_center
        from simgen.imaging import Microscope, psf_transfer

        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
            raise ValueError(f"size={size!r}: expected an integer number of pixels >= 2")
        if not (isinstance(sampling, (int, float, np.floating)) and sampling > 0):
            raise ValueError(f"sampling={sampling!r}: expected a positive pixel size in Å")
        microscope = Microscope() if microscope is None else microscope
        self.size, self.sampling, self.microscope = int(size), float(sampling), microscope
        self.center = volume_center(self.size, self.sampling)
        self.dtype = dtype
        self.cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        # The same frequency grid as simgen.imaging._linear_images: a padded period of q pixels,
        # every frequency the PSF transmits, below the Nyquist frequency of the oversampled grid.
        pad = int(math.ceil(_PSF_PAD / self.sampling))
        q = fft.next_fast_len(self.size + 2 * pad, real=True)
        probe_k = np.linspace(0.0, 20.0, 20001)
        transmitted = np.abs(psf_transfer(probe_k, microscope, thermal_sigma=0.0)) > 1e-7
        kmax = float(probe_k[transmitted].max())
        over = max(1, int(math.ceil(2.0 * kmax * self.sampling * 1.0001)))
        fine = q * over
        ky = np.fft.fftfreq(fine, d=self.sampling / over)
        kx = np.fft.rfftfreq(fine, d=self.sampling / over)
        nyquist = 0.5 * over / self.sampling
        ky = ky[(np.abs(ky) <= kmax) & (np.abs(ky) < nyquist)]
        kx = kx[(kx <= kmax) & (kx < nyquist)]
        transfer = psf_transfer(
            np.hypot(ky[:, None], kx[None, :]), microscope, thermal_sigma=thermal_sigma
        )
        # Hermitian half plane in x: columns kx > 0 stand for ±kx; 1/q² is the inverse DFT's norm.
        column_weight = np.where(kx > 0, 2.0, 1.0)
        self.ky = torch.as_tensor(ky, dtype=dtype)
        self.kx = torch.as_tensor(kx, dtype=dtype)
        self.transfer = torch.as_tensor(transfer * column_weight[None, :] / q**2, dtype=dtype)
        pixels = np.arange(self.size) * self.sampling
        self.inverse_y = torch.exp(
            torch.as_tensor(2j * np.pi * np.outer(pixels, ky), dtype=self.cdtype)
        )  # (P, Ky)
        self.inverse_x = torch.exp(
            torch.as_tensor(2j * np.pi * np.outer(kx, pixels), dtype=self.cdtype)
        )  # (Kx, P)

    def __repr__(self) -> str:
        return (
            f"LinearProjector(size={self.size}, sampling={self.sampling}, "
            f"frequencies={len(self.ky)}x{len(self.kx)})"
        )

    @staticmethod
    def _phases(coords: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        """exp(−2πi f·x), the phase reduced modulo 1 first (keeps float32 accurate too)."""
        phase = coords[..., None] * freqs
        phase = phase - torch.round(phase.detach())
        return torch.polar(torch.ones_like(phase), -2.0 * math.pi * phase)

    def _harmonics(self, coords: torch.Tensor) -> torch.Tensor:
        """exp(−2πi kx·x) for the columns kx = m·Δk, m = 0..Kx−1, as (a·B + b) products.

        Only about 2·√Kx complex exponentials per coordinate are evaluated (the exponential, not
        the matrix product, would otherwise dominate the cost); the rest are complex products.
        """
        count = len(self.kx)
        step = self.kx[1] if count > 1 else self.kx[0]
        block = max(1, int(math.ceil(math.sqrt(count))))
        fine = self._phases(coords, step * torch.arange(block, dtype=self.dtype))
        coarse = self._phases(
            coords, step * block * torch.arange(int(math.ceil(count / block)), dtype=self.dtype)
        )
        product = coarse[..., :, None] * fine[..., None, :]
        return product.reshape(*coords.shape, -1)[..., :count]

    def __call__(
        self,
        positions: torch.Tensor,
        weights: torch.Tensor,
        angles: torch.Tensor,
        shifts: torch.Tensor | None = None,
        shift_model: str = "exact",
    ) -> torch.Tensor:
        if shift_model == "fourier" and shifts is not None:
            # as simgen's noise chain: counts cannot be negative, the shift's ringing is clipped
            shifted = fourier_shift(self(positions, weights, angles), shifts / self.sampling)
            return torch.clamp(shifted, min=0.0)
        c = self.center
        cos, sin = torch.cos(angles), torch.sin(angles)
        rel_x, rel_z = positions[:, 0] - c, positions[:, 2] - c
        x = rel_x[:, None] * cos[None, :] + rel_z[:, None] * sin[None, :] + c  # (N, A)
        if shifts is not None:
            x = x + shifts[None, :, 1]
        phase_y = self._phases(positions[:, 1], self.ky) * weights[:, None].to(self.cdtype)
        phase_x = self._harmonics(x)  # (N, A, Kx)
        n_atoms, n_angles = x.shape
        structure = phase_y.T @ phase_x.reshape(n_atoms, -1)  # (Ky, A*Kx)
        structure = structure.reshape(len(self.ky), n_angles, len(self.kx)).permute(1, 0, 2)
        if shifts is not None:
            structure = structure * self._phases(shifts[:, 0], self.ky)[:, :, None]
        spectrum = structure * self.transfer  # (A, Ky, Kx)
        images = self.inverse_y @ spectrum @ self.inverse_x  # (A, P, P)
        return images.real


def fourier_shift(images: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """Translate each image by (dy, dx) pixels with the shift theorem on its pixel samples.

    The same periodic Fourier shift as :func:`simgen.noise.fourier_shift` (Nyquist row/column
    multiplied by cos(π d)), differentiable in the shifts. For images with content above the pixel
    Nyquist frequency this is not the image of translated atoms (the samples alias); use it only to
    model data translated that way.
    """
    ny, nx = images.shape[-2:]
    dtype = images.dtype
    ky = torch.fft.fftfreq(ny, dtype=dtype)
    kx = torch.fft.fftfreq(nx, dtype=dtype)

    def ramp(shift, freqs, n):
        phase = torch.polar(
            torch.ones_like(shift[:, None] * freqs), -2.0 * math.pi * shift[:, None] * freqs
        )
        if n % 2 == 0:
            nyquist = torch.cos(math.pi * shift).to(phase.dtype)
            phase = torch.cat([phase[:, : n // 2], nyquist[:, None], phase[:, n // 2 + 1 :]], dim=1)
        return phase

    spectrum = torch.fft.fft2(images)
    spectrum = (
        spectrum
        * ramp(shifts_px[:, 0], ky, ny)[:, :, None]
        * ramp(shifts_px[:, 1], kx, nx)[:, None, :]
    )
    return torch.fft.ifft2(spectrum).real


def _cross_sections(elements: Sequence[str], microscope) -> dict[str, float]:
    from simgen.imaging import cross_section

    return {e: cross_section(e, microscope) for e in sorted(set(elements))}


def render_tilt_series(
    positions,
    elements: Sequence[str],
    angles,
    *,
    size: int,
    sampling: float,
    microscope=None,
    shifts=None,
    thermal_sigma: float | None = None,
) -> np.ndarray:
    """Linear-mode tilt series (counts per e/Å²) of atoms, as the refinement's forward model sees it.

    Args:
        positions: (N, 3) Å, (x, y, z) in the volume frame.
        elements: N element symbols.
        angles: (A,) tilt angles, degrees.
        size: Pixels per side.
        sampling: Pixel size, Å.
        microscope: ``simgen.imaging.Microscope`` (default settings when ``None``).
        shifts: Optional (A, 2) translations (dy, dx) of the image content, Å.
        thermal_sigma: PSF thermal blur, Å (calibration default when ``None``).

    Returns:
        (A, size, size) float64, axes ``[angle, y, x]``.
    """
    projector = LinearProjector(size, sampling, microscope, thermal_sigma=thermal_sigma)
    sigma = _cross_sections(elements, projector.microscope)
    with torch.no_grad():
        images = projector(
            torch.as_tensor(np.asarray(positions, dtype=np.float64).reshape(-1, 3)),
            torch.as_tensor([sigma[e] for e in elements], dtype=torch.float64),
            torch.as_tensor(np.deg2rad(np.asarray(angles, dtype=np.float64))),
            None if shifts is None else torch.as_tensor(np.asarray(shifts, dtype=np.float64)),
        )
    return images.numpy()


def _complement(columns: np.ndarray) -> torch.Tensor:
    """Projector onto the orthogonal complement of the span of ``columns`` (A, k)."""
    q, _ = np.linalg.qr(columns)
    return torch.as_tensor(np.eye(columns.shape[0]) - q @ q.T)


def _check_inputs(tilt_series, angles, positions, elements, dose):
    series = np.asarray(tilt_series, dtype=np.float64)
    if series.ndim != 3 or series.shape[1] != series.shape[2] or series.shape[0] < 1:
        raise ValueError(f"tilt_series.shape={series.shape}: expected (A, P, P) counts")
    if not np.all(np.isfinite(series)):
        raise ValueError("tilt_series: expected finite counts, found NaN or inf")
    angles = np.asarray(angles, dtype=np.float64).ravel()
    if angles.shape != series.shape[:1] or not np.all(np.isfinite(angles)):
        raise ValueError(
            f"angles.shape={angles.shape}: expected {series.shape[0]} finite tilt angles in degrees"
        )
    positions = np.asarray(positions, dtype=np.float64)
    if positions.size == 0:
        positions = positions.reshape(0, 3)
    if positions.ndim != 2 or positions.shape[1] != 3 or not np.all(np.isfinite(positions)):
        raise ValueError(f"positions.shape={positions.shape}: expected finite (N, 3) in Å")
    elements = [str(e) for e in elements]
    if len(elements) != len(positions):
        raise ValueError(
            f"elements: expected {len(positions)} symbols (one per atom), got {len(elements)}"
        )
    doses = np.broadcast_to(np.asarray(dose, dtype=np.float64), angles.shape).copy()
    if not np.all(np.isfinite(doses)) or np.any(doses <= 0):
        raise ValueError(
            f"dose={dose!r}: expected a positive dose in e/Å² (scalar or one per angle)"
        )
    return series, angles, positions, elements, doses


def _shifted_poisson_nll(expected, counts, variance):
    """Σ over pixels of −log p(counts | expected), counts + ρ² ~ Poisson(expected + ρ²) (no constant)."""
    mean = torch.clamp(expected + variance, min=1e-9)
    observed = torch.clamp(counts + variance, min=0.0)
    return (mean - observed * torch.log(mean)).sum()


def refine_atoms(
    tilt_series,
    angles,
    positions,
    elements: Sequence[str],
    *,
    sampling: float,
    dose,
    config: RefineConfig | None = None,
    microscope=None,
    thermal_sigma: float | None = None,
    shifts=None,
    start_angles=None,
) -> RefineResult:
    """Maximum-likelihood refinement of atoms, geometry and intensities against a tilt series.

    Args:
        tilt_series: (A, P, P) measured counts, axes ``[angle, y, x]``.
        angles: (A,) nominal tilt angles, degrees.
        positions: (N, 3) starting positions, Å, (x, y, z) in the volume frame.
        elements: N element symbols (their calibrated σ(Z) set each atom's brightness).
        sampling: Pixel size, Å.
        dose: Dose per projection, e/Å² (scalar or (A,)).
        config: What to refine (:class:`RefineConfig`).
        microscope: ``simgen.imaging.Microscope`` (project default when ``None``).
        thermal_sigma: PSF thermal blur, Å (calibration default when ``None``).
        shifts: (A, 2) starting translations (dy, dx) of the projections, Å (e.g. from the
            alignment the reconstruction used); zero when ``None``. Their gauge components (mean
            y, rigid x/z translation) are kept: the atoms stay in the frame they were found in.
        start_angles: (A,) starting tilt angles, degrees (e.g. the alignment's refined angles);
            the nominal ``angles`` when ``None``.

    Returns:
        The refined model and acquisition (:class:`RefineResult`).
    """
    config = RefineConfig() if config is None else config
    series, angles, positions, elements, doses = _check_inputs(
        tilt_series, angles, positions, elements, dose
    )
    if config.threads is not None:
        torch.set_num_threads(int(config.threads))
    n_atoms, n_angles, size = len(positions), len(angles), series.shape[1]
    if n_atoms == 0:
        return RefineResult(
            positions=positions,
            elements=[],
            shifts=np.zeros((n_angles, 2)),
            angles=angles.copy(),
            element_scales={},
            cross_sections=np.zeros(0),
            beam_current=np.ones(n_angles),
            background=float(config.background or 0.0),
            read_noise=float(config.read_noise or 0.0),
        )
    projector = LinearProjector(size, sampling, microscope, thermal_sigma=thermal_sigma)
    sigma_table = _cross_sections(elements, projector.microscope)
    species = sorted(sigma_table)
    species_index = torch.as_tensor([species.index(e) for e in elements])
    sigma = torch.as_tensor([sigma_table[e] for e in elements], dtype=torch.float64)

    counts = torch.as_tensor(series)
    dose_t = torch.as_tensor(doses)[:, None, None]
    if start_angles is not None:
        start_angles = np.asarray(start_angles, dtype=np.float64).ravel()
        if start_angles.shape != angles.shape or not np.all(np.isfinite(start_angles)):
            raise ValueError(
                f"start_angles.shape={start_angles.shape}: expected {n_angles} finite angles in degrees"
            )
        angles = start_angles
    angles0 = torch.as_tensor(np.deg2rad(angles))
    shifts0 = torch.zeros((n_angles, 2), dtype=torch.float64)
    if shifts is not None:
        shifts = np.asarray(shifts, dtype=np.float64)
        if shifts.shape != (n_angles, 2) or not np.all(np.isfinite(shifts)):
            raise ValueError(f"shifts.shape={shifts.shape}: expected ({n_angles}, 2) in Å")
        shifts0 = torch.as_tensor(shifts)
    start = torch.as_tensor(positions)
    theta = np.deg2rad(angles)
    gauge_x = _complement(np.stack([np.cos(theta), np.sin(theta)], axis=1))
    gauge_1 = _complement(np.ones((n_angles, 1)))
    # The rigid rotation gauge only exists with at least two angles; one projection keeps its angle.
    if n_angles < 3:
        gauge_x = torch.zeros((n_angles, n_angles), dtype=torch.float64)
    if n_angles < 2:
        gauge_1 = torch.zeros((n_angles, n_angles), dtype=torch.float64)
    radius = float(np.linalg.norm(positions - projector.center, axis=1).max()) + 1.0

    # Parameters (raw, unwhitened): each group is zero at the start.
    groups = {
        "positions": (config.fit_positions, (n_atoms, 3)),
        "shift_y": (config.fit_shifts, (n_angles,)),
        "shift_x": (config.fit_shifts, (n_angles,)),
        "angles": (config.fit_angles, (n_angles,)),  # rad × radius: Å of arc at the particle edge
        "log_scales": (config.fit_scales, (len(species),)),
        "log_current": (config.fit_beam_current, (n_angles,)),
        "background": (config.fit_background, (1,)),
        "log_amplitudes": (config.fit_amplitudes, (n_atoms,)),
    }

    def unpack(values: dict[str, torch.Tensor]):
        def get(name):
            value = values.get(name)
            return value if value is not None else torch.zeros(groups[name][1], dtype=torch.float64)

        offset = get("positions")
        if config.fit_positions:
            # Smooth bound on the displacement: |Δ| ≤ max_displacement.
            limit = config.max_displacement
            norm = torch.sqrt((offset**2).sum(dim=1, keepdim=True) + (1e-6 * limit) ** 2)
            offset = offset * (limit * torch.tanh(norm / limit) / norm)
        shifts = shifts0 + torch.stack([gauge_1 @ get("shift_y"), gauge_x @ get("shift_x")], dim=1)
        delta = gauge_1 @ get("angles") / radius
        log_current = gauge_1 @ get("log_current")
        weights = sigma * torch.exp(get("log_scales"))[species_index]
        weights = weights * torch.exp(get("log_amplitudes"))
        return start + offset, shifts, angles0 + delta, log_current, weights, get("background")

    def expected_counts(values, base_background):
        pos, shifts, ang, log_current, weights, db = unpack(values)
        images = projector(pos, weights, ang, shifts, config.shift_model)
        scale = dose_t * torch.exp(log_current)[:, None, None]
        return base_background + db + scale * images

    with torch.no_grad():
        zero = {}
        signal = expected_counts(zero, 0.0)
        background = (
            float(config.background)
            if config.background is not None
            else float((counts - signal).mean())
        )
        model = signal + background
        if config.read_noise is not None:
            variance = float(config.read_noise) ** 2
        else:
            variance = _read_variance(counts, model)
    nll_history = []
    n_pixels = counts.numel()

    def objective(values, variance):
        nll = _shifted_poisson_nll(expected_counts(values, background), counts, variance)
        if config.fit_amplitudes:
            nll = nll + 0.5 * (values["log_amplitudes"] ** 2).sum() / config.amplitude_prior**2
        if config.fit_positions and config.position_prior is not None:
            nll = nll + 0.5 * (values["positions"] ** 2).sum() / config.position_prior**2
        return nll

    values = {
        name: torch.zeros(shape, dtype=torch.float64)
        for name, (active, shape) in groups.items()
        if active
    }
    with torch.no_grad():
        nll_history.append(float(objective(values, variance)) / n_pixels)
    generator = torch.Generator().manual_seed(int(config.seed))

    def posterior_precision():
        """Diagonal Fisher information at ``values`` plus the priors' precisions."""
        precision = _fisher_diagonal(
            values,
            lambda v: expected_counts(v, background),
            variance,
            config.fisher_probes,
            generator,
        )
        if config.fit_amplitudes:
            precision["log_amplitudes"] = (
                precision["log_amplitudes"] + 1.0 / config.amplitude_prior**2
            )
        if config.fit_positions and config.position_prior is not None:
            precision["positions"] = precision["positions"] + 1.0 / config.position_prior**2
        return precision

    evaluations: list[float] = []
    for round_index in range(config.rounds):
        precision = posterior_precision()
        scale = {name: 1.0 / torch.sqrt(torch.clamp(p, min=1e-12)) for name, p in precision.items()}
        base = {name: v.detach().clone() for name, v in values.items()}
        whitened = {name: torch.zeros_like(v, requires_grad=True) for name, v in values.items()}
        optimiser = torch.optim.LBFGS(
            list(whitened.values()),
            lr=1.0,
            max_iter=config.iterations,
            history_size=20,
            # whitened units: a gradient of 1e-6 or a step of 1e-7 is far below one standard error
            tolerance_grad=1e-6,
            tolerance_change=1e-7,
            line_search_fn="strong_wolfe",
        )

        def closure(
            base=base, scale=scale, whitened=whitened, optimiser=optimiser, variance=variance
        ):
            optimiser.zero_grad()
            current = {name: base[name] + scale[name] * whitened[name] for name in base}
            loss = objective(current, variance)
            loss.backward()
            evaluations.append(float(loss.detach()))
            return loss

        optimiser.step(closure)
        values = {name: (base[name] + scale[name] * whitened[name]).detach() for name in base}
        with torch.no_grad():
            if config.read_noise is None:
                variance = _read_variance(counts, expected_counts(values, background))
            nll_history.append(float(objective(values, variance)) / n_pixels)
        logger.debug(
            "refine round %d (%d evaluations): nll/pixel %.6g -> %.6g, read noise %.3g",
            round_index,
            len(evaluations),
            nll_history[-2],
            nll_history[-1],
            math.sqrt(variance),
        )

    standard_errors = None
    if config.fit_amplitudes:
        standard_errors = (1.0 / torch.sqrt(posterior_precision()["log_amplitudes"])).numpy()
    with torch.no_grad():
        pos, shifts, ang, log_current, weights, db = unpack(values)
        scales = torch.exp(values.get("log_scales", torch.zeros(len(species), dtype=torch.float64)))
    refined = pos.numpy().copy()
    return RefineResult(
        positions=refined,
        elements=list(elements),
        shifts=shifts.numpy().copy(),
        angles=np.rad2deg(ang.numpy()),
        element_scales={e: float(scales[k]) for k, e in enumerate(species)},
        cross_sections=weights.numpy().copy(),
        beam_current=np.exp(log_current.numpy()),
        background=background + float(db.reshape(-1)[0]),
        read_noise=math.sqrt(variance),
        nll=nll_history,
        displacement=np.linalg.norm(refined - positions, axis=1),
        amplitude_standard_errors=standard_errors,
    )


def _read_variance(counts: torch.Tensor, expected: torch.Tensor) -> float:
    """Read-noise variance from residuals: var(counts − E) − E (Poisson part) over all pixels."""
    residual = counts - expected
    return float(torch.clamp((residual**2 - torch.clamp(expected, min=0.0)).mean(), min=0.0))


def _fisher_diagonal(values, expected_fn, variance, probes, generator):
    """Diagonal of the Fisher information of every parameter, by Hutchinson probes.

    For Poisson-like counts the Fisher information is Jᵀ diag(1/(E + ρ²)) J; with Rademacher
    vectors z, E[(∂/∂p Σ z·E/√(E+ρ²))²] is its diagonal.
    """
    leaves = {name: v.detach().clone().requires_grad_(True) for name, v in values.items()}
    expected = expected_fn(leaves)
    weight = 1.0 / torch.sqrt(torch.clamp(expected.detach() + variance, min=1e-3))
    total = {name: torch.zeros_like(v) for name, v in leaves.items()}
    for k in range(probes):
        z = torch.randint(0, 2, expected.shape, generator=generator).to(expected.dtype) * 2 - 1
        grads = torch.autograd.grad(
            (expected * weight * z).sum(), list(leaves.values()), retain_graph=k < probes - 1
        )
        for name, g in zip(leaves, grads):
            total[name] += g**2
    return {name: t / probes for name, t in total.items()}


def missing_measurement(sample: dict) -> list[str]:
    """Keys a sample lacks to be refined against its tilt series (empty when it can be)."""
    missing = [k for k in ("tilt_series", "angles", "sampling") if sample.get(k) is None]
    dose = sample.get("acquisition_dose")
    dose = sample.get("dose") if dose is None else dose
    if dose is None or not np.all(np.isfinite(np.asarray(dose, dtype=np.float64))):
        missing.append("dose")
    return missing


def refine_sample(
    sample: dict,
    positions,
    elements: Sequence[str],
    *,
    config: RefineConfig | None = None,
    microscope=None,
) -> RefineResult:
    """Refine atoms against the tilt series of one store sample (``simgen.open_dataset(...)[i]``).

    Uses the sample's ``tilt_series``, ``angles`` (nominal), ``sampling`` and dose (the
    per-projection ``acquisition_dose`` when recorded, else ``dose``), and starts from the
    alignment the reconstruction used (``shifts``, ``angles_estimated``) when recorded; never the
    true ones. Background and read noise are estimated from the data unless the sample carries
    ``background`` / ``read_noise``.

    Raises:
        ValueError: The sample has no tilt series, angles or dose.
    """
    missing = missing_measurement(sample)
    dose = sample.get("acquisition_dose")
    if dose is None:
        dose = sample.get("dose")
    if missing:
        raise ValueError(f"sample: missing {missing}, needed to refine against the tilt series")
    config = RefineConfig() if config is None else config
    overrides = {}
    if config.background is None and sample.get("background") is not None:
        overrides["background"] = float(sample["background"])
    if config.read_noise is None and sample.get("read_noise") is not None:
        overrides["read_noise"] = float(sample["read_noise"])
    if overrides:
        from dataclasses import replace

        config = replace(config, **overrides)
    return refine_atoms(
        sample["tilt_series"],
        sample["angles"],
        positions,
        elements,
        sampling=float(sample["sampling"]),
        dose=dose,
        config=config,
        microscope=microscope,
        # NaN = not estimated (imported data, or an alignment that fits no angles): start from
        # the recorded geometry instead.
        shifts=_known(sample.get("shifts")),
        start_angles=_known(sample.get("angles_estimated")),
    )


def _known(values):
    """``values`` if given and finite everywhere, else None."""
    if values is None or not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
        return None
    return values
