"""Physics refinement of an atomic model against the measured tilt series.

Starting from any method's atoms (positions in Å in the volume frame + elements), maximise the
likelihood of the measured HAADF tilt series under the calibrated linear forward model of
:mod:`simgen.physics.imaging` (docs/design.md, "linear" mode)::

    E[counts_θ(r)] = b + dose_θ · c_θ · Σ_i s_Z(i) · a_i · σ(Z_i) · PSF(r − P_θ(r_i) − t_θ) · sampling²

with σ(Z) the calibrated HAADF cross-section and PSF the calibrated probe intensity blurred by
the thermal (Debye–Waller) Gaussian; P_θ the projection of R_y(θ + δ_θ) about the volume centre;
t_θ = (dy, dx) the per-projection translation (misalignment); δ_θ the tilt-angle correction; c_θ
the relative beam current of each projection; s_Z a per-element intensity scale and a_i an
optional per-atom amplitude. Counts are Poisson plus Gaussian read noise of variance ρ²; the
likelihood is the shifted-Poisson approximation, counts + ρ² ~ Poisson(E + ρ²) (Snyder et al.,
J. Opt. Soc. Am. A 12, 272 (1995)), exact without read noise.

The images come from the one forward model of :mod:`simgen.forward`, the simulator's own: the
exact model (:mod:`simgen.forward.dft`, structure factor at the DFT frequencies of the simulator's
padded grid, summed back at the pixel centres with two small DFT matrices; matches
:func:`simgen.physics.imaging.simulate_tilt_series` to float precision) or, for thousands of atoms, the
sparse real-space one (:mod:`simgen.forward.sparse`, each atom's PSF on a patch of a few hundred
pixels), both differentiable in positions, angles, shifts and amplitudes through torch autograd. A
few hundred atoms × tens of 64² projections cost a few tens of milliseconds per evaluation on one
CPU core.

The code reads as a problem and a solver: :class:`RefinementProblem` holds the data, the
parameters (their packing, gauges and bounds), the forward model, the likelihood and the priors;
:func:`solve` runs the whitened L-BFGS rounds; :func:`refine_atoms` joins the two.

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
from dataclasses import dataclass, field, replace

import numpy as np
import torch

__all__ = [
    "RefineConfig",
    "RefineResult",
    "LinearProjector",
    "RefinementProblem",
    "solve",
    "fourier_shift",
    "render_tilt_series",
    "refine_atoms",
    "refine_sample",
    "missing_measurement",
]

logger = logging.getLogger(__name__)

#: Above this many atoms ``forward="auto"`` uses the sparse real-space model.
SPARSE_ABOVE = 2000


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
            samples and clips negative ringing at 0 (what :class:`simgen.physics.noise.Misalignment`
            and the noise chain do to simulated data).
        fisher_probes: Random probes for the Fisher-diagonal preconditioner.
        seed: Seed of the preconditioner's probes.
        threads: Torch CPU threads (``None``: leave torch's setting).
        precision: ``"float64"`` (default) or ``"float32"``: the dtype of the forward model (the
            likelihood is always summed in float64). ``"auto"`` takes float32 when the Fisher
            information at the start says its rounding is far below every standard error
            (:meth:`RefinementProblem.float32_suffices`).
        forward: ``"exact"`` (the simulator's DFT model), ``"sparse"`` (real-space patches, for
            thousands of atoms) or ``"auto"`` (sparse above ``SPARSE_ABOVE`` atoms).
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
    precision: str = "float64"
    forward: str = "auto"

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
        if self.precision not in ("float64", "float32", "auto"):
            raise ValueError(
                f"precision={self.precision!r}: expected 'float64', 'float32' or 'auto'"
            )
        if self.forward not in ("exact", "sparse", "auto"):
            raise ValueError(f"forward={self.forward!r}: expected 'exact', 'sparse' or 'auto'")


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
        evaluations: Objective (likelihood + prior) evaluations of the solver.
        dtype: Real dtype the forward model ran in (``"float64"`` or ``"float32"``).
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
    evaluations: int = 0
    dtype: str = "float64"
    dose_estimated: float | None = None
    gain: float | None = None


class LinearProjector:
    """Differentiable linear-mode HAADF projector: :mod:`simgen.forward` on torch tensors.

    Args:
        size: Pixels per image side (= volume side in voxels).
        sampling: Pixel size in Å.
        microscope: ``simgen.physics.imaging.Microscope``; the project default when ``None``.
        thermal_sigma: Debye–Waller blur (Å) of the PSF; the calibration default when ``None``.
        dtype: Real dtype of the computation (float64 by default).
        sparse: Use the sparse real-space model (:func:`simgen.forward.project_atoms_sparse`,
            PSF patches of ``radius`` Å) instead of the exact DFT model.
        radius: Patch radius of the sparse model, Å.

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
        sparse: bool = False,
        radius: float | None = None,
    ):
        from simgen.forward import SPARSE_RADIUS, LinearGrid, RadialPSF
        from simgen.physics.imaging import Microscope

        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
            raise ValueError(f"size={size!r}: expected an integer number of pixels >= 2")
        if not (isinstance(sampling, (int, float, np.floating)) and sampling > 0):
            raise ValueError(f"sampling={sampling!r}: expected a positive pixel size in Å")
        microscope = Microscope() if microscope is None else microscope
        self.size, self.sampling, self.microscope = int(size), float(sampling), microscope
        self.dtype, self.sparse = dtype, bool(sparse)
        self.radius = SPARSE_RADIUS if radius is None else float(radius)
        self.grid = LinearGrid(self.size, self.sampling, microscope, thermal_sigma=thermal_sigma)
        self.center = self.grid.center
        self.psf = RadialPSF.from_microscope(microscope, thermal_sigma) if self.sparse else None

    def __repr__(self) -> str:
        model = f"sparse, radius={self.radius:g} Å" if self.sparse else f"{self.grid!r}"
        return f"LinearProjector(size={self.size}, sampling={self.sampling}, {model})"

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
        if self.sparse:
            return self._sparse(positions, weights, angles, shifts)
        from simgen.forward import project_atoms

        return project_atoms(positions, weights, angles, self.grid, shifts=shifts)

    def _sparse(self, positions, weights, angles, shifts):
        if shifts is None:
            shifts = torch.zeros((len(angles), 2), dtype=positions.dtype)
        return _SparseProjection.apply(positions, weights, angles, shifts, self)

    def angle_batch(self, n_atoms: int) -> int:
        """Angles per batch of the sparse model: about 2·10⁷ patch pixels at once."""
        pixels = (2 * math.ceil(self.radius / self.sampling) + 1) ** 2
        return max(1, int(2e7 // max(1, n_atoms * pixels)))

    def patches(self, positions, angles, shifts, gradient: bool = False):
        """Per angle batch: ``(start, stop, cos, sin, Patches)`` of the sparse model."""
        from simgen.forward import atom_patches, projected_x

        step = self.angle_batch(len(positions))
        for start in range(0, len(angles), step):
            stop = min(start + step, len(angles))
            u_x = (
                projected_x(positions, angles[start:stop], self.center)
                + shifts[None, start:stop, 1]
            )
            u_y = positions[:, 1][:, None] + shifts[None, start:stop, 0]
            patches = atom_patches(
                u_x,
                u_y,
                size=self.size,
                sampling=self.sampling,
                psf=self.psf,
                radius=self.radius,
                gradient=gradient,
            )
            offset = (torch.arange(stop - start) * self.size**2)[None, :, None, None]
            patches.pixel = patches.pixel + offset
            yield start, stop, patches


class _SparseProjection(torch.autograd.Function):
    """The sparse model with its analytic Jacobian (:func:`simgen.forward.atom_patches`): the
    backward pass recomputes each angle batch's patches instead of storing them, so memory stays
    at one batch however many atoms and angles, and no autograd graph of the patches is built."""

    @staticmethod
    def forward(ctx, positions, weights, angles, shifts, projector):
        n_angles, size = len(angles), projector.size
        images = torch.zeros(n_angles * size * size, dtype=positions.dtype)
        for _, _, patches in projector.patches(positions, angles, shifts):
            values = patches.value * weights[:, None, None, None]
            images.index_add_(0, patches.pixel.reshape(-1), values.reshape(-1))
        ctx.save_for_backward(positions, weights, angles, shifts)
        ctx.projector = projector
        return images.reshape(n_angles, size, size)

    @staticmethod
    def backward(ctx, grad_images):
        positions, weights, angles, shifts = ctx.saved_tensors
        projector = ctx.projector
        flat = grad_images.reshape(-1)
        rel_x, rel_z = positions[:, 0] - projector.center, positions[:, 2] - projector.center
        d_u_x = torch.zeros((len(positions), len(angles)), dtype=positions.dtype)
        d_u_y = torch.zeros_like(d_u_x)
        d_weights = torch.zeros_like(weights)
        for start, stop, patches in projector.patches(positions, angles, shifts, gradient=True):
            g = flat[patches.pixel.reshape(-1)].reshape(patches.pixel.shape)
            d_weights += (g * patches.value).sum(dim=(1, 2, 3))
            d_u_x[:, start:stop] = (g * patches.grad_x).sum(dim=(2, 3))
            d_u_y[:, start:stop] = (g * patches.grad_y).sum(dim=(2, 3))
        d_u_x, d_u_y = d_u_x * weights[:, None], d_u_y * weights[:, None]
        cos, sin = torch.cos(angles), torch.sin(angles)
        d_positions = torch.stack(
            [(d_u_x * cos).sum(dim=1), d_u_y.sum(dim=1), (d_u_x * sin).sum(dim=1)], dim=1
        )
        # u_x = rel_x cos θ + rel_z sin θ: ∂u_x/∂θ = −rel_x sin θ + rel_z cos θ
        d_angles = (d_u_x * (-rel_x[:, None] * sin + rel_z[:, None] * cos)).sum(dim=0)
        d_shifts = torch.stack([d_u_y.sum(dim=0), d_u_x.sum(dim=0)], dim=1)
        return d_positions, d_weights, d_angles, d_shifts, None


def fourier_shift(images: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """Translate each image by (dy, dx) pixels with the shift theorem (:func:`simgen.forward.fourier_shift`).

    Differentiable in the images and the shifts. For images with content above the pixel Nyquist
    frequency this is not the image of translated atoms (the samples alias); use it only to model
    data translated that way (what :class:`simgen.physics.noise.Misalignment` does).
    """
    from simgen.forward import fourier_shift as shift

    return shift(images, shifts_px)


def _cross_sections(elements: Sequence[str], microscope) -> dict[str, float]:
    from simgen.physics.imaging import cross_section

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
        microscope: ``simgen.physics.imaging.Microscope`` (default settings when ``None``).
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


def _check_start(angles, start_angles, shifts):
    """The starting angles (degrees) and shifts (Å), checked against the ``angles``."""
    if start_angles is not None:
        start_angles = np.asarray(start_angles, dtype=np.float64).ravel()
        if start_angles.shape != angles.shape:
            raise ValueError(
                f"start_angles.shape={start_angles.shape}: expected ({len(angles)},) angles in "
                "degrees"
            )
        if not np.all(np.isfinite(start_angles)):
            bad = int(np.flatnonzero(~np.isfinite(start_angles))[0])
            raise ValueError(
                f"start_angles[{bad}]={start_angles[bad]!r}: expected {len(angles)} finite angles "
                "in degrees"
            )
    if shifts is not None:
        shifts = np.asarray(shifts, dtype=np.float64)
        if shifts.shape != (len(angles), 2) or not np.all(np.isfinite(shifts)):
            raise ValueError(f"shifts.shape={shifts.shape}: expected ({len(angles)}, 2) in Å")
    return start_angles, shifts


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
        microscope: ``simgen.physics.imaging.Microscope`` (project default when ``None``).
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
    if len(positions) == 0:
        return RefineResult(
            positions=positions,
            elements=[],
            shifts=np.zeros((len(angles), 2)),
            angles=angles.copy(),
            element_scales={},
            cross_sections=np.zeros(0),
            beam_current=np.ones(len(angles)),
            background=float(config.background or 0.0),
            read_noise=float(config.read_noise or 0.0),
        )
    start_angles, shifts = _check_start(angles, start_angles, shifts)

    def problem_in(precision_config):
        return RefinementProblem(
            series,
            angles if start_angles is None else start_angles,
            positions,
            elements,
            sampling=sampling,
            doses=doses,
            config=precision_config,
            microscope=microscope,
            thermal_sigma=thermal_sigma,
            shifts=shifts,
        )

    problem = problem_in(config)
    values, evaluations = solve(problem)
    if problem.dtype == torch.float32 and not _converged(problem, values):
        # The float32 bias test holds at the start; a solve that runs away from it (an
        # overflowing beam current, a non-finite likelihood or parameter) is solved again in
        # float64.
        logger.warning(
            "refinement in float32 did not reach a finite optimum (%d atoms); solving in float64",
            len(positions),
        )
        problem = problem_in(replace(config, precision="float64"))
        values, more = solve(problem)
        evaluations += more
    return problem.result(values, evaluations)


def _converged(problem: RefinementProblem, values: dict) -> bool:
    """Whether a solve ended at a finite optimum: finite parameters and likelihoods, beam
    currents that do not overflow. (Not "no worse than the start": the read noise is re-estimated
    between rounds, so the objective's values of different rounds are not comparable.)"""
    if not all(math.isfinite(v) for v in problem.nll_history):
        return False
    for tensor in values.values():
        if not bool(torch.isfinite(tensor).all()):
            return False
    with torch.no_grad():
        log_current = problem.unpack(values)[3]
    return bool((log_current.abs() < 50.0).all())


class RefinementProblem:
    """The likelihood of a tilt series given atoms and acquisition: data, parameters, model, priors.

    Parameters are groups of raw, unwhitened tensors, each zero at the start (:attr:`groups`):
    position offsets (bounded smoothly by ``max_displacement``), gauge-free shifts, angle
    corrections and log beam currents, log element scales, background, log amplitudes.

    Args:
        series: (A, P, P) counts, float64.
        angles: (A,) starting tilt angles, degrees.
        positions: (N, 3) starting positions, Å.
        elements: N element symbols.
        sampling: Pixel size, Å.
        doses: (A,) e/Å².
        config: :class:`RefineConfig`.
        microscope: ``simgen.physics.imaging.Microscope`` or ``None``.
        thermal_sigma: PSF blur, Å, or ``None``.
        shifts: (A, 2) starting shifts, Å, or ``None``.
    """

    def __init__(
        self,
        series,
        angles,
        positions,
        elements,
        *,
        sampling,
        doses,
        config,
        microscope=None,
        thermal_sigma=None,
        shifts=None,
    ):
        self.config, self.elements = config, list(elements)
        self.start_positions = positions
        n_atoms, n_angles, size = len(positions), len(angles), series.shape[1]
        self.n_atoms, self.n_angles = n_atoms, n_angles
        self.sparse = config.forward == "sparse" or (
            config.forward == "auto" and n_atoms > SPARSE_ABOVE
        )
        self.projector = LinearProjector(
            size, sampling, microscope, thermal_sigma=thermal_sigma, sparse=self.sparse
        )
        sigma_table = _cross_sections(self.elements, self.projector.microscope)
        self.species = sorted(sigma_table)
        self.species_index = torch.as_tensor([self.species.index(e) for e in self.elements])
        self.sigma = torch.as_tensor([sigma_table[e] for e in self.elements], dtype=torch.float64)
        self.counts = torch.as_tensor(series)
        self.dose = torch.as_tensor(doses)[:, None, None]
        self.angles0 = torch.as_tensor(np.deg2rad(angles))
        self.shifts0 = (
            torch.zeros((n_angles, 2), dtype=torch.float64)
            if shifts is None
            else torch.as_tensor(shifts)
        )
        self.start = torch.as_tensor(positions)
        self._gauges(np.deg2rad(angles))
        self.radius = float(np.linalg.norm(positions - self.projector.center, axis=1).max()) + 1.0
        self.groups = {
            "positions": (config.fit_positions, (n_atoms, 3)),
            "shift_y": (config.fit_shifts, (n_angles,)),
            "shift_x": (config.fit_shifts, (n_angles,)),
            "angles": (config.fit_angles, (n_angles,)),  # rad × radius: Å of arc at the edge
            "log_scales": (config.fit_scales, (len(self.species),)),
            "log_current": (config.fit_beam_current, (n_angles,)),
            "background": (config.fit_background, (1,)),
            "log_amplitudes": (config.fit_amplitudes, (n_atoms,)),
        }
        self.dtype = torch.float64
        self.nll_history: list[float] = []
        self._generator = None
        self.background, self.variance = self._noise_at_start()
        if config.precision == "float32" or (
            config.precision == "auto" and self.float32_suffices()
        ):
            self.dtype = torch.float32
        self.n_pixels = self.counts.numel()

    def _gauges(self, theta: np.ndarray) -> None:
        """Projectors removing the rigid translation (x: cos θ, sin θ; y: mean) and rotation."""
        n_angles = len(theta)
        self.gauge_x = _complement(np.stack([np.cos(theta), np.sin(theta)], axis=1))
        self.gauge_1 = _complement(np.ones((n_angles, 1)))
        # The rigid rotation gauge only exists with two angles or more; one keeps its angle.
        if n_angles < 3:
            self.gauge_x = torch.zeros((n_angles, n_angles), dtype=torch.float64)
        if n_angles < 2:
            self.gauge_1 = torch.zeros((n_angles, n_angles), dtype=torch.float64)

    def _noise_at_start(self) -> tuple[float, float]:
        """Background (counts per pixel) and read-noise variance, given or from the residuals."""
        config = self.config
        with torch.no_grad():
            signal = self.expected_counts({}, 0.0)
            background = (
                float(config.background)
                if config.background is not None
                else float((self.counts - signal).mean())
            )
            if config.read_noise is not None:
                return background, float(config.read_noise) ** 2
            return background, _read_variance(self.counts, signal + background)

    def initial_values(self) -> dict[str, torch.Tensor]:
        """The active parameter groups, all zero (the starting model)."""
        return {
            name: torch.zeros(shape, dtype=torch.float64)
            for name, (active, shape) in self.groups.items()
            if active
        }

    def unpack(self, values: dict[str, torch.Tensor]):
        """``(positions, shifts, angles, log_current, weights, background offset)`` of ``values``."""
        config = self.config

        def get(name):
            value = values.get(name)
            if value is not None:
                return value
            return torch.zeros(self.groups[name][1], dtype=torch.float64)

        offset = get("positions")
        if config.fit_positions:
            # Smooth bound on the displacement: |Δ| ≤ max_displacement.
            limit = config.max_displacement
            norm = torch.sqrt((offset**2).sum(dim=1, keepdim=True) + (1e-6 * limit) ** 2)
            offset = offset * (limit * torch.tanh(norm / limit) / norm)
        shifts = self.shifts0 + torch.stack(
            [self.gauge_1 @ get("shift_y"), self.gauge_x @ get("shift_x")], dim=1
        )
        delta = self.gauge_1 @ get("angles") / self.radius
        log_current = self.gauge_1 @ get("log_current")
        weights = self.sigma * torch.exp(get("log_scales"))[self.species_index]
        weights = weights * torch.exp(get("log_amplitudes"))
        return (
            self.start + offset,
            shifts,
            self.angles0 + delta,
            log_current,
            weights,
            get("background"),
        )

    def expected_counts(self, values, base_background=None) -> torch.Tensor:
        """Expected counts (A, P, P) of the model ``values`` (float64)."""
        base_background = self.background if base_background is None else base_background
        pos, shifts, ang, log_current, weights, db = self.unpack(values)
        dtype = self.dtype
        images = self.projector(
            pos.to(dtype),
            weights.to(dtype),
            ang.to(dtype),
            shifts.to(dtype),
            self.config.shift_model,
        ).to(torch.float64)
        scale = self.dose * torch.exp(log_current)[:, None, None]
        return base_background + db + scale * images

    def negative_log_likelihood(self, values, variance=None) -> torch.Tensor:
        """Shifted-Poisson −log p(counts | values), summed over pixels (no constant)."""
        variance = self.variance if variance is None else variance
        return _shifted_poisson_nll(self.expected_counts(values), self.counts, variance)

    def prior(self, values) -> torch.Tensor | float:
        """−log prior: log-normal amplitudes, Gaussian displacements (when configured)."""
        config, total = self.config, 0.0
        if config.fit_amplitudes:
            total = total + 0.5 * (values["log_amplitudes"] ** 2).sum() / config.amplitude_prior**2
        if config.fit_positions and config.position_prior is not None:
            total = total + 0.5 * (values["positions"] ** 2).sum() / config.position_prior**2
        return total

    def objective(self, values, variance=None) -> torch.Tensor:
        """−log posterior: the likelihood plus the priors."""
        return self.negative_log_likelihood(values, variance) + self.prior(values)

    def posterior_precision(self, values, generator) -> dict[str, torch.Tensor]:
        """Diagonal Fisher information at ``values`` plus the priors' precisions."""
        config = self.config
        precision = _fisher_diagonal(
            values, self.expected_counts, self.variance, config.fisher_probes, generator
        )
        if config.fit_amplitudes:
            precision["log_amplitudes"] = (
                precision["log_amplitudes"] + 1.0 / config.amplitude_prior**2
            )
        if config.fit_positions and config.position_prior is not None:
            precision["positions"] = precision["positions"] + 1.0 / config.position_prior**2
        return precision

    def float32_suffices(self, tolerance: float = 0.01) -> bool:
        """Whether a float32 forward model biases no parameter by more than ``tolerance`` of its
        standard error (:meth:`float32_bias`)."""
        return self.float32_bias() < tolerance

    def float32_bias(self) -> float:
        """Largest shift, in standard errors, a float32 forward model can give any parameter.

        A model error δE moves the optimum of any parameter by at most ``sqrt(Σ δE² / (E + ρ²))``
        of its standard error 1/√F (Cauchy–Schwarz in the Fisher metric, F the parameter's Fisher
        information). δE is measured directly: the starting model in float32 minus float64.
        """
        chosen = self.dtype
        try:
            with torch.no_grad():
                self.dtype = torch.float64
                exact = self.expected_counts({})
                self.dtype = torch.float32
                rounded = self.expected_counts({})
        finally:
            self.dtype = chosen
        weight = torch.clamp(exact + self.variance, min=1e-3)
        bias = math.sqrt(float(((rounded - exact) ** 2 / weight).sum()))
        logger.debug("float32 forward model: bias <= %.3g standard errors", bias)
        return bias

    def result(self, values, evaluations: int) -> RefineResult:
        """The refined model of ``values`` (:class:`RefineResult`)."""
        standard_errors = None
        if self.config.fit_amplitudes:
            generator = torch.Generator().manual_seed(int(self.config.seed) + 1)
            precision = self.posterior_precision(values, self._generator or generator)
            standard_errors = (1.0 / torch.sqrt(precision["log_amplitudes"])).numpy()
        with torch.no_grad():
            pos, shifts, ang, log_current, weights, db = self.unpack(values)
            scales = values.get("log_scales", torch.zeros(len(self.species), dtype=torch.float64))
            scales = torch.exp(scales)
        refined = pos.numpy().copy()
        logger.debug("refinement: %d likelihood evaluations", evaluations)
        return RefineResult(
            positions=refined,
            elements=list(self.elements),
            shifts=shifts.numpy().copy(),
            angles=np.rad2deg(ang.numpy()),
            element_scales={e: float(scales[k]) for k, e in enumerate(self.species)},
            cross_sections=weights.numpy().copy(),
            beam_current=np.exp(log_current.numpy()),
            background=self.background + float(db.reshape(-1)[0]),
            read_noise=math.sqrt(self.variance),
            nll=self.nll_history,
            displacement=np.linalg.norm(refined - self.start_positions, axis=1),
            amplitude_standard_errors=standard_errors,
            evaluations=int(evaluations),
            dtype=str(self.dtype).replace("torch.", ""),
        )


def solve(problem: RefinementProblem) -> tuple[dict[str, torch.Tensor], int]:
    """Maximise the posterior of ``problem``: ``config.rounds`` rounds of L-BFGS (strong Wolfe) on
    variables whitened by the Fisher diagonal, the read noise re-estimated between rounds.

    Returns:
        The parameter values at the optimum and the number of objective evaluations.
    """
    config = problem.config
    values = problem.initial_values()
    with torch.no_grad():
        problem.nll_history = [float(problem.objective(values)) / problem.n_pixels]
    generator = torch.Generator().manual_seed(int(config.seed))
    problem._generator = generator
    evaluations: list[float] = []
    for round_index in range(config.rounds):
        precision = problem.posterior_precision(values, generator)
        scale = {name: 1.0 / torch.sqrt(torch.clamp(p, min=1e-12)) for name, p in precision.items()}
        values = _lbfgs_round(problem, values, scale, evaluations)
        with torch.no_grad():
            if config.read_noise is None:
                problem.variance = _read_variance(problem.counts, problem.expected_counts(values))
            problem.nll_history.append(float(problem.objective(values)) / problem.n_pixels)
        logger.debug(
            "refine round %d (%d evaluations): nll/pixel %.6g -> %.6g, read noise %.3g",
            round_index,
            len(evaluations),
            problem.nll_history[-2],
            problem.nll_history[-1],
            math.sqrt(problem.variance),
        )
    return values, len(evaluations)


def _lbfgs_round(problem, values, scale, evaluations):
    """One L-BFGS run from ``values`` in whitened units ``(value − base) / scale``."""
    config = problem.config
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
    variance = problem.variance

    def closure():
        optimiser.zero_grad()
        current = {name: base[name] + scale[name] * whitened[name] for name in base}
        loss = problem.objective(current, variance)
        loss.backward()
        evaluations.append(float(loss.detach()))
        return loss

    optimiser.step(closure)
    return {name: (base[name] + scale[name] * whitened[name]).detach() for name in base}


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


def _sample_dose(sample: dict):
    """The per-projection ``acquisition_dose`` when recorded, else ``dose``; ``None`` if neither."""
    for key in ("acquisition_dose", "dose"):
        value = sample.get(key)
        if value is not None and np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
            return value
    return None


def _sample_gain(sample: dict) -> float | None:
    """Counts per electron recorded in the sample (``simgen import``), else ``None``."""
    gain = sample.get("gain")
    if gain is None:
        return None
    gain = float(gain)
    return gain if np.isfinite(gain) and gain > 0 else None


def missing_measurement(sample: dict) -> list[str]:
    """Keys a sample lacks to be refined against its tilt series (empty when it can be).

    A sample without a dose can still be refined when its detector gain is recorded (its counts
    are then electrons, and the dose is estimated from the atoms refined: :func:`estimate_dose`).
    """
    missing = [k for k in ("tilt_series", "angles", "sampling") if sample.get(k) is None]
    if _sample_dose(sample) is None and _sample_gain(sample) is None:
        missing.append("dose (or a detector gain to estimate it)")
    return missing


def estimate_dose(electrons, positions, elements, *, background: float, microscope=None) -> float:
    """Dose per projection (e/Å²) that makes the atoms' calibrated σ(Z) account for the signal.

    Each projection holds ``dose · Σ_i σ(Z_i)`` electrons above the background (the PSF has unit
    integral), so the dose is the median over projections of the background-subtracted image sum
    over ``Σ σ``. The refinement's per-element scales then correct what the σ table misses.

    Args:
        electrons: (A, P, P) counts in electrons.
        positions: (N, 3) atoms, Å (only their number and elements matter).
        elements: N element symbols.
        background: Background electrons per pixel.
        microscope: ``simgen.physics.imaging.Microscope`` (project default when ``None``).
    """
    from simgen.physics.imaging import Microscope

    microscope = Microscope() if microscope is None else microscope
    table = _cross_sections(elements, microscope)
    total = float(sum(table[e] for e in elements))
    if len(positions) == 0 or total <= 0:
        raise ValueError("positions: no atoms to estimate the dose from")
    sums = (np.asarray(electrons, dtype=np.float64) - float(background)).sum(axis=(1, 2))
    dose = float(np.median(sums)) / total
    if not dose > 0:
        raise ValueError(
            f"tilt_series: no signal above the background {background:.4g} (dose estimate {dose:.3g})"
        )
    return dose


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
    alignment the reconstruction used (``shifts``, ``angles_estimated``) when recorded (arrays that are not finite,
    as an import without alignment writes, count as not recorded); never the true ones.
    Background and read noise are estimated from the data unless the sample carries
    ``background`` / ``read_noise``. A recorded detector ``gain`` (``simgen import``) turns the
    counts into electrons first; without a dose, the dose is estimated from the atoms
    (:func:`estimate_dose`, reported as ``RefineResult.dose_estimated``).

    Raises:
        ValueError: The sample has no tilt series or angles, or neither a dose nor a gain.
    """
    missing = missing_measurement(sample)
    if missing:
        raise ValueError(f"sample: missing {missing}, needed to refine against the tilt series")
    config = RefineConfig() if config is None else config
    dose = _sample_dose(sample)
    gain = _sample_gain(sample)
    scale = gain if gain is not None else 1.0
    series = np.asarray(sample["tilt_series"], dtype=np.float64) / scale
    overrides = {}
    if config.background is None and sample.get("background") is not None:
        overrides["background"] = float(sample["background"]) / scale
    if config.read_noise is None and sample.get("read_noise") is not None:
        overrides["read_noise"] = float(sample["read_noise"]) / scale
    if overrides:
        from dataclasses import replace

        config = replace(config, **overrides)
    dose_estimated = None
    if dose is None:
        if config.background is not None:
            background = float(config.background)
        else:
            from simgen.importer import estimate_background

            background = estimate_background(series)
        dose = dose_estimated = estimate_dose(
            series, positions, elements, background=background, microscope=microscope
        )
        logger.info("no dose recorded: estimated %.4g e/Å² per projection from the atoms", dose)
    result = refine_atoms(
        series,
        sample["angles"],
        positions,
        elements,
        sampling=float(sample["sampling"]),
        dose=dose,
        config=config,
        microscope=microscope,
        shifts=_recorded(sample, "shifts"),
        start_angles=_recorded(sample, "angles_estimated"),
    )
    result.dose_estimated = dose_estimated
    result.gain = gain
    return result


def _recorded(sample: dict, key: str):
    """A sample's recorded alignment ``key``, or ``None`` where it holds none (an imported series
    without alignment stores NaN: the nominal angles / zero shifts are the start then)."""
    value = sample.get(key)
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(value)):
        logger.debug("sample %s not finite: starting from the nominal geometry", key)
        return None
    return value
