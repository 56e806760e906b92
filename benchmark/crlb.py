"""The physical limit: Cramér–Rao lower bound (CRLB) of every atom's position in a tilt series.

The measurement model is the project's linear HAADF mode (:mod:`simgen.imaging`, docs/design.md):
the expected counts of pixel ``p`` of the projection at tilt angle θ are::

    λ_p(θ) = dose(θ) · sampling² · Σ_i σ(Z_i) · PSF(r_p − u_i(θ)) + background

with the calibrated HAADF cross-section σ(Z) (Å²) and probe-plus-thermal PSF (unit integral,
isotropic), and ``u_i(θ) = (x_i cosθ + z_i sinθ, y_i)`` the projected position of atom ``i``
(:func:`simgen.geometry.rotate_positions`). The counts are Poisson, plus Gaussian read noise of
``read_noise`` counts; the Fisher information uses the usual Poisson-plus-σ² approximation
(variance ``λ_p + read_noise²``, the mean carrying all the information about positions)::

    F = Σ_θ Σ_p  ∇λ_p ∇λ_pᵀ / (λ_p + read_noise²)

and the bound on an unbiased estimate of atom ``i``'s position is ``sqrt(trace((F⁻¹)_ii))``, the
3D RMS error (the same convention as the coordinate error of :mod:`benchmark.metrics`), in pm.

Two bounds:

``neighbours=False``
    each atom alone in the field of view (its own shot noise, background and read noise only):
    the isolated-atom bound.
``neighbours=True``
    all atoms together, the other atoms' positions being unknown nuisance parameters: the bound is
    the diagonal block of the inverse of the full ``3N × 3N`` Fisher matrix (the Schur complement of
    the neighbours' block), with every atom's shot noise in the variance. Atoms that overlap in a
    projection share information, so this bound is never below the isolated one.

Element identities and cross-sections are treated as known (the positional bound given the
species). The PSF's radial profile is computed once per microscope by a Hankel transform of its
calibrated transfer function (:func:`simgen.imaging.psf_transfer`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simgen.imaging import Microscope

__all__ = [
    "RadialPSF",
    "crlb_positions",
    "spot_fisher",
    "crlb_of_sample",
    "noise_levels",
    "rms_by_element",
]

logger = logging.getLogger(__name__)

_PATCH_RADIUS = 4.0  # Å: pixels farther than this from an atom's projection carry < 1e-3 of its PSF
_MAX_JOINT_ATOMS = 2000  # above this the joint (neighbours) bound falls back to the isolated one


@dataclass(frozen=True)
class RadialPSF:
    """An isotropic PSF ``h(r)`` (Å⁻², unit integral over the plane) and its derivative ``h'(r)``.

    Tabulated on a fine radial grid ``r`` (Å); evaluated by linear interpolation, zero beyond the
    table.
    """

    r: np.ndarray
    value: np.ndarray  # h(r), Å⁻²
    slope: np.ndarray  # dh/dr, Å⁻³

    @classmethod
    def from_microscope(
        cls, microscope: Microscope | None = None, thermal_sigma: float | None = None
    ) -> RadialPSF:
        """The calibrated linear-mode PSF (probe intensity ⊗ thermal blur) of ``microscope``."""
        microscope = Microscope() if microscope is None else microscope
        key = (tuple(sorted(microscope.to_dict().items())), thermal_sigma)
        return _microscope_psf(key)

    @classmethod
    def gaussian(cls, sigma: float) -> RadialPSF:
        """A 2D Gaussian PSF of RMS width ``sigma`` Å per axis."""
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma={sigma!r}: expected a positive width in Å")
        r = np.linspace(0.0, 8.0 * sigma, 8001)
        value = np.exp(-(r**2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
        return cls(r, value, -r / sigma**2 * value)

    def __call__(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(h(r), h'(r))`` at radii ``r`` (Å)."""
        return (
            np.interp(r, self.r, self.value, right=0.0),
            np.interp(r, self.r, self.slope, right=0.0),
        )


@functools.lru_cache(maxsize=8)
def _microscope_psf(key) -> RadialPSF:
    from scipy.special import j0, j1

    from simgen.imaging import _probe_transfer_table, psf_transfer

    fields, thermal_sigma = key
    microscope = Microscope.from_dict(dict(fields))
    table_k, table_t = _probe_transfer_table(microscope)
    kmax = float(table_k[np.abs(table_t) > 1e-7].max())
    k = np.linspace(0.0, kmax, 4001)
    dk = k[1] - k[0]
    weights = np.full(k.size, dk)
    weights[[0, -1]] *= 0.5  # trapezoid
    transfer = psf_transfer(k, microscope, thermal_sigma=thermal_sigma)
    r = np.linspace(0.0, 2.0 * _PATCH_RADIUS, 1601)
    arg = 2.0 * np.pi * np.outer(r, k)
    # h(r) = 2π ∫ T(k) J0(2πkr) k dk;  h'(r) = −4π² ∫ T(k) J1(2πkr) k² dk
    value = 2.0 * np.pi * (j0(arg) * (transfer * k * weights)).sum(axis=1)
    slope = -4.0 * np.pi**2 * (j1(arg) * (transfer * k**2 * weights)).sum(axis=1)
    return RadialPSF(r, value, slope)


def _psf_and_gradient(psf: RadialPSF, dy: np.ndarray, dx: np.ndarray):
    """PSF values and their gradient with respect to the atom's (u_x, u_y) at offsets pixel − atom."""
    r = np.hypot(dy, dx)
    value, slope = psf(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit_x = np.where(r > 0, dx / r, 0.0)
        unit_y = np.where(r > 0, dy / r, 0.0)
    # d/du h(|p − u|) = −h'(r) (p − u)/r
    return value, -slope * unit_x, -slope * unit_y


def spot_fisher(
    offset: Sequence[float],
    counts: float,
    sampling: float,
    psf: RadialPSF,
    *,
    size: int = 64,
    background: float = 0.0,
    read_noise: float = 0.0,
) -> np.ndarray:
    """The 2×2 Fisher information (Å⁻²) of the position ``(u_x, u_y)`` of one spot in one image.

    The spot of ``counts`` expected counts in total and profile ``psf`` sits at ``offset`` (Å,
    (x, y)) from the centre of pixel ``(size // 2, size // 2)`` of a ``size × size`` image with
    pixels of ``sampling`` Å; ``background`` (counts per pixel) and ``read_noise`` (counts RMS) add
    to the variance.
    """
    grid = (np.arange(size) - size // 2) * sampling
    dy = grid[:, None] - offset[1]
    dx = grid[None, :] - offset[0]
    value, gx, gy = _psf_and_gradient(psf, dy, dx)
    scale = counts * sampling**2
    variance = np.maximum(scale * value + background + read_noise**2, 1e-300)
    g = np.stack([gx.ravel(), gy.ravel()]) * scale
    return (g / variance.ravel()) @ g.T


def _check_positive(name: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name}={value!r}: expected a positive finite number")
    return float(value)


def crlb_positions(
    positions: np.ndarray,
    numbers: Sequence[int],
    angles_deg: Sequence[float],
    dose,
    sampling: float,
    size: int,
    *,
    microscope: Microscope | None = None,
    read_noise: float = 0.0,
    background: float = 0.0,
    neighbours: bool = True,
    thermal_sigma: float | None = None,
    psf: RadialPSF | None = None,
) -> np.ndarray:
    """Cramér–Rao lower bound of each atom's 3D position error (pm) from a linear-HAADF tilt series.

    Parameters
    ----------
    positions
        ``(N, 3)`` true positions ``(x, y, z)`` in Å in the volume frame (voxel ``k`` at
        ``k·sampling``, docs/design.md).
    numbers
        ``(N,)`` atomic numbers.
    angles_deg
        ``(A,)`` true tilt angles in degrees.
    dose
        Dose in e/Å² per projection: one number, or ``(A,)`` one per projection.
    sampling
        Pixel size in Å.
    size
        Pixels per image side.
    microscope
        Probe and detector (for σ(Z) and the PSF); the default :class:`~simgen.imaging.Microscope`
        when ``None``.
    read_noise
        Gaussian read noise, counts RMS per pixel.
    background
        Expected constant background, counts per pixel.
    neighbours
        ``True``: the joint bound with every other atom's position a nuisance parameter;
        ``False``: each atom alone (isolated-atom bound).
    thermal_sigma
        Debye–Waller blur in Å folded into the PSF (the calibration default when ``None``).
    psf
        A PSF to use instead of the microscope's (e.g. :meth:`RadialPSF.gaussian` in tests).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` bounds in pm, ``sqrt(σ_x² + σ_y² + σ_z²)`` (inf where the position is not
        identifiable, e.g. a single projection).
    """
    from simgen.geometry import rotate_positions, volume_center
    from simgen.imaging import cross_section

    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or not np.all(np.isfinite(positions)):
        raise ValueError(f"positions.shape={positions.shape}: expected finite (N, 3) Å")
    numbers = np.asarray(numbers, dtype=int).ravel()
    if numbers.shape != (len(positions),):
        raise ValueError(
            f"numbers.shape={numbers.shape}: expected one atomic number per position "
            f"({len(positions)})"
        )
    angles = np.asarray(angles_deg, dtype=np.float64).ravel()
    if angles.size == 0 or not np.all(np.isfinite(angles)):
        raise ValueError(f"angles_deg={angles_deg!r}: expected a non-empty list of finite degrees")
    doses = np.broadcast_to(np.asarray(dose, dtype=np.float64), angles.shape).copy()
    if not np.all(np.isfinite(doses)) or np.any(doses <= 0):
        raise ValueError(f"dose={dose!r}: expected positive e/Å² (one or one per projection)")
    sampling = _check_positive("sampling", sampling)
    if isinstance(size, bool) or int(size) != size or size < 2:
        raise ValueError(f"size={size!r}: expected an integer number of pixels >= 2")
    size = int(size)
    if not (math.isfinite(read_noise) and read_noise >= 0):
        raise ValueError(f"read_noise={read_noise!r}: expected a non-negative number of counts")
    if not (math.isfinite(background) and background >= 0):
        raise ValueError(f"background={background!r}: expected non-negative counts per pixel")
    microscope = Microscope() if microscope is None else microscope
    n = len(positions)
    if n == 0:
        return np.zeros(0)
    if psf is None:
        psf = RadialPSF.from_microscope(microscope, thermal_sigma)
    table = {int(z): cross_section(int(z), microscope) for z in np.unique(numbers)}
    sigmas = np.array([table[int(z)] for z in numbers])
    joint = bool(neighbours) and n > 1
    if joint and n > _MAX_JOINT_ATOMS:
        logger.warning(
            "crlb: %d atoms > %d, giving the isolated-atom bound instead of the joint one",
            n,
            _MAX_JOINT_ATOMS,
        )
        joint = False

    center = volume_center(size, sampling)
    half = int(math.ceil(_PATCH_RADIUS / sampling))
    steps = np.arange(-half, half + 1)
    fisher_self = np.zeros((n, 3, 3))
    fisher_joint = np.zeros((3 * n, 3 * n)) if joint else None
    read_var = read_noise**2
    for angle, d in zip(angles, doses):
        theta = math.radians(angle)
        # d(u_x, u_y)/d(x, y, z)
        jac = np.array([[math.cos(theta), 0.0, math.sin(theta)], [0.0, 1.0, 0.0]])
        projected = rotate_positions(positions, angle, center)[:, :2]  # (N, 2) Å (x, y)
        nearest = np.rint(projected / sampling).astype(int)
        cols = nearest[:, 0, None, None] + steps[None, None, :]  # (N, 1, K)
        rows = nearest[:, 1, None, None] + steps[None, :, None]  # (N, K, 1)
        cols, rows = np.broadcast_arrays(cols, rows)
        inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
        dx = cols * sampling - projected[:, 0, None, None]
        dy = rows * sampling - projected[:, 1, None, None]
        value, gx, gy = _psf_and_gradient(psf, dy, dx)
        scale = (d * sampling**2 * sigmas)[:, None, None]
        value = np.where(inside, value * scale, 0.0)
        gx = np.where(inside, gx * scale, 0.0)
        gy = np.where(inside, gy * scale, 0.0)
        pixel = np.where(inside, rows * size + cols, 0)
        if joint:
            image = np.bincount(pixel.ravel(), weights=value.ravel(), minlength=size * size)
            variance = np.maximum(image + background + read_var, 1e-300)
            inv_var = 1.0 / variance[pixel]
        else:
            inv_var = 1.0 / np.maximum(value + background + read_var, 1e-300)
        inv_var = np.where(inside, inv_var, 0.0)
        if not joint:
            f2 = np.empty((n, 2, 2))
            f2[:, 0, 0] = (gx * gx * inv_var).sum(axis=(1, 2))
            f2[:, 1, 1] = (gy * gy * inv_var).sum(axis=(1, 2))
            f2[:, 0, 1] = f2[:, 1, 0] = (gx * gy * inv_var).sum(axis=(1, 2))
            fisher_self += np.einsum("ai,nab,bj->nij", jac, f2, jac)
            continue
        weight = np.sqrt(inv_var).reshape(n, -1)
        # an atom's patch never repeats a pixel, so assignment is exact; pixels outside the image
        # go to one extra, discarded column; only the pixels of the particle's footprint are kept
        used, flat = np.unique(np.where(inside, pixel, size * size), return_inverse=True)
        flat = flat.reshape(n, -1)
        g = np.zeros((n, 2, used.size))
        atom = np.arange(n)[:, None]
        g[atom, 0, flat] = gx.reshape(n, -1) * weight
        g[atom, 1, flat] = gy.reshape(n, -1) * weight
        if used[-1] == size * size:
            g = g[:, :, :-1]
        g = g.reshape(2 * n, -1)
        m2 = (g @ g.T).reshape(n, 2, n, 2)
        for a in range(2):  # F[m, i, n, j] += Σ_ab M[m, a, n, b] J[a, i] J[b, j]
            for b in range(2):
                outer = np.outer(jac[a], jac[b])
                fisher_joint += (
                    m2[:, a, :, b][:, None, :, None] * outer[None, :, None, :]
                ).reshape(3 * n, 3 * n)

    if not joint:
        out = np.empty(n)
        for i in range(n):
            out[i] = _trace_of_inverse(fisher_self[i])
        return 100.0 * np.sqrt(out)
    try:
        from scipy import linalg

        factor = linalg.cho_factor(fisher_joint, lower=True, check_finite=False)
        inverse = linalg.cho_solve(factor, np.eye(3 * n), check_finite=False)
    except np.linalg.LinAlgError:
        inverse = np.linalg.pinv(fisher_joint)
    blocks = inverse.reshape(n, 3, n, 3)[np.arange(n), :, np.arange(n), :]
    traces = np.trace(blocks, axis1=1, axis2=2)
    return 100.0 * np.sqrt(np.maximum(traces, 0.0))


def _trace_of_inverse(matrix: np.ndarray) -> float:
    """``trace(matrix⁻¹)``, inf when ``matrix`` is singular (an unidentifiable direction)."""
    eigenvalues = np.linalg.eigvalsh(matrix)
    if eigenvalues.min() <= 1e-12 * max(eigenvalues.max(), 1e-300):
        return float("inf")
    return float(np.sum(1.0 / eigenvalues))


def noise_levels(specs, dose: float, sampling: float) -> tuple[float, float]:
    """``(read_noise, background)`` in counts per pixel from noise spec strings.

    ``read`` gives the read noise; ``background`` its expected counts (``counts + fraction · dose ·
    sampling²``); ``gain`` scales the background (shot noise is then not Poisson in output units,
    which this bound ignores). Other models (geometric errors, beam current) are taken as known.
    """
    from simgen.noise import NoiseChain

    chain = NoiseChain.from_specs(list(specs) if specs else ["poisson"])
    read_noise = 0.0
    for model in chain.models:
        if model.name == "read":
            read_noise = float(model.sigma)
    return read_noise, chain.background(float(dose), sampling)


def crlb_of_sample(
    sample: dict, spec: dict | None = None, *, neighbours: bool = False
) -> np.ndarray:
    """The bound (pm, one per true atom) for one sample as read from a store.

    Parameters
    ----------
    sample
        A sample of :func:`simgen.store.open_dataset`: ``positions`` (N, 3) Å, ``numbers``,
        ``angles_true`` (degrees), ``dose`` (or ``acquisition_dose``, one per projection),
        ``sampling``, ``tilt_series`` (for the image size) and ``noise_model``.
    spec
        The store's resolved dataset spec (``Dataset.attrs["spec"]``): the microscope and the
        noise models' parameters (read noise, background). Without it: the default microscope,
        Poisson noise only.
    neighbours
        Joint bound with every other atom a nuisance parameter (slower), else isolated atoms.
    """
    spec = spec or {}
    microscope = (
        Microscope.from_dict(dict(spec["microscope"])) if spec.get("microscope") else Microscope()
    )
    noise_specs = dict(spec.get("noise_models") or {}).get(str(sample.get("noise_model", "")))
    if noise_specs is None:
        noise_specs = spec.get("noise")  # a single simulated sample records its own chain
    dose = sample.get("acquisition_dose")
    if dose is None:
        dose = float(sample["dose"])
    size = int(np.shape(sample["tilt_series"])[-1])
    read_noise, background = noise_levels(noise_specs, float(np.mean(dose)), sample["sampling"])
    return crlb_positions(
        sample["positions"],
        sample["numbers"],
        sample["angles_true"],
        dose,
        sample["sampling"],
        size,
        microscope=microscope,
        read_noise=read_noise,
        background=background,
        neighbours=neighbours,
    )


def rms_by_element(values_pm, numbers) -> dict[str, float]:
    """``{"all": RMS, "<El>": RMS over that element}`` of per-atom values (pm)."""
    from ase.data import chemical_symbols

    values = np.asarray(values_pm, dtype=float)
    numbers = np.asarray(numbers, dtype=int)
    out = {"all": float(np.sqrt(np.mean(values**2))) if len(values) else float("nan")}
    for z in np.unique(numbers):
        out[chemical_symbols[int(z)]] = float(np.sqrt(np.mean(values[numbers == z] ** 2)))
    return out
