"""The physical limit: Cramér–Rao lower bound (CRLB) of every atom's position in a tilt series.

The measurement model is the project's linear HAADF mode (:mod:`simgen.physics.imaging`, docs/design.md):
the expected counts of pixel ``p`` of the projection at tilt angle θ are::

    λ_p(θ) = dose(θ) · sampling² · Σ_i σ(Z_i) · PSF(r_p − u_i(θ)) + background

with the calibrated HAADF cross-section σ(Z) (Å²) and probe-plus-thermal PSF (unit integral,
isotropic), and ``u_i(θ) = (x_i cosθ + z_i sinθ, y_i)`` the projected position of atom ``i``
(:func:`simgen.physics.geometry.rotate_positions`). The counts are Poisson, plus Gaussian read noise of
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
calibrated transfer function (:func:`simgen.physics.imaging.psf_transfer`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from simgen.forward import PATCH_RADIUS, RadialPSF, atom_patches, projected_x
from simgen.physics.imaging import Microscope

__all__ = [
    "RadialPSF",
    "crlb_positions",
    "spot_fisher",
    "crlb_of_sample",
    "noise_levels",
    "rms_by_element",
]

logger = logging.getLogger(__name__)

_MAX_JOINT_ATOMS = 2000  # above this the joint (neighbours) bound falls back to the isolated one


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
    middle = (size // 2) * sampling
    patches = atom_patches(
        np.array([middle + offset[0]]),
        np.array([middle + offset[1]]),
        size=size,
        sampling=sampling,
        psf=psf,
        radius=size * sampling,
        gradient=True,
        circular=False,
        interpolation="linear",
    )
    scale = float(counts)
    value = patches.value[0] * scale
    variance = np.maximum(value + background + read_noise**2, 1e-300)
    g = np.stack([patches.grad_x[0].ravel(), patches.grad_y[0].ravel()]) * scale
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
        Probe and detector (for σ(Z) and the PSF); the default :class:`~simgen.physics.imaging.Microscope`
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
    from simgen.physics.geometry import volume_center
    from simgen.physics.imaging import cross_section

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
    fisher_self = np.zeros((n, 3, 3))
    fisher_joint = np.zeros((3 * n, 3 * n)) if joint else None
    read_var = read_noise**2
    for angle, d in zip(angles, doses):
        theta = math.radians(angle)
        # d(u_x, u_y)/d(x, y, z)
        jac = np.array([[math.cos(theta), 0.0, math.sin(theta)], [0.0, 1.0, 0.0]])
        u_x = projected_x(positions, np.array([theta]), center)[:, 0]
        patches = atom_patches(
            u_x,
            positions[:, 1],
            size=size,
            sampling=sampling,
            psf=psf,
            radius=PATCH_RADIUS,
            gradient=True,
            circular=False,
            interpolation="linear",
        )
        inside, pixel = patches.inside, patches.pixel
        scale = (d * sigmas)[:, None, None]  # the patches carry sampling²
        value = patches.value * scale
        gx = patches.grad_x * scale
        gy = patches.grad_y * scale
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
    from simgen.physics.noise import NoiseChain

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
