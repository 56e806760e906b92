"""The detection limit: how well any method *could* tell each true atom from empty space.

The Cramér–Rao bound (:mod:`benchmark.crlb`) limits the coordinate error; this module limits the
recovery rate. Under the project's linear HAADF model (:mod:`simgen.physics.imaging`) an atom ``i`` of
cross-section ``σ_i`` adds ``σ_i · g_p`` expected counts to pixel ``p`` of every projection, with
``g_p = dose · sampling² · PSF(r_p − u_i(θ))``. Deciding whether the atom is there (H1) or not (H0),
its position and every other atom being known, is a test of one amplitude. With the Poisson (plus
read noise) variance ``v_p`` of each pixel approximated as Gaussian, the optimal (likelihood-ratio,
Neyman–Pearson) test is the matched filter ``T = Σ_p g_p (y_p − b_p) / v_p``, whose means under H0
and H1 are separated by the **detectability index**::

    d′_i = σ_i · sqrt(F_σσ),   F_σσ = Σ_θ Σ_p g_p² / v_p

(the amplitude × the square root of the Fisher information of the amplitude). At a false-alarm
rate ``α`` per candidate the best test detects the atom with probability::

    P_D = Φ(d′ − Φ⁻¹(1 − α))

and the mean of ``P_D`` over a sample's true atoms is its **recovery bound**: the recovery an
optimal detector with known positions would reach at that false-alarm rate. A real method, which
must also find the positions, cannot be expected to beat it except by accepting more false
atoms (lower precision). This is the 3D, tilt-series form of the detection-probability analysis of
Fatermans et al., Phys. Rev. Lett. 121, 056101 (2018) for 2D HAADF-STEM images.

With ``neighbours=True`` (default) the variance ``v_p`` holds every atom's expected counts, so an
atom buried in a dense column is harder to detect than the same atom alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from benchmark.crlb import RadialPSF, noise_levels
from simgen.physics.imaging import Microscope

__all__ = [
    "detectability",
    "detection_probability",
    "recovery_bound",
    "detectability_of_sample",
    "FALSE_ALARM",
]

logger = logging.getLogger(__name__)

#: The default false-alarm rate per candidate of the recovery bound.
FALSE_ALARM = 0.01
_PATCH_RADIUS = 4.0  # Å: beyond this an atom's PSF carries < 1e-3 of its counts


def detectability(
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
    """The detectability index ``d′`` of each atom in a linear-HAADF tilt series.

    Parameters
    ----------
    positions
        ``(N, 3)`` true positions ``(x, y, z)`` in Å in the volume frame.
    numbers
        ``(N,)`` atomic numbers.
    angles_deg
        ``(A,)`` true tilt angles in degrees.
    dose
        Dose in e/Å² per projection: one number or ``(A,)``.
    sampling
        Pixel size in Å.
    size
        Pixels per image side.
    microscope
        Probe and detector (σ(Z) and the PSF); the default :class:`~simgen.physics.imaging.Microscope`
        when ``None``.
    read_noise
        Gaussian read noise, counts RMS per pixel.
    background
        Expected constant background, counts per pixel.
    neighbours
        ``True``: every atom's counts add to each pixel's variance; ``False``: each atom alone.
    thermal_sigma
        Debye–Waller blur in Å folded into the PSF (the calibration default when ``None``).
    psf
        A PSF to use instead of the microscope's.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` dimensionless ``d′ ≥ 0``.
    """
    from simgen.physics.geometry import rotate_positions, volume_center
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
    if not (math.isfinite(sampling) and sampling > 0):
        raise ValueError(f"sampling={sampling!r}: expected a positive pixel size in Å")
    if isinstance(size, bool) or int(size) != size or size < 2:
        raise ValueError(f"size={size!r}: expected an integer number of pixels >= 2")
    if not (math.isfinite(read_noise) and read_noise >= 0):
        raise ValueError(f"read_noise={read_noise!r}: expected a non-negative number of counts")
    if not (math.isfinite(background) and background >= 0):
        raise ValueError(f"background={background!r}: expected non-negative counts per pixel")
    size = int(size)
    n = len(positions)
    if n == 0:
        return np.zeros(0)
    microscope = Microscope() if microscope is None else microscope
    if psf is None:
        psf = RadialPSF.from_microscope(microscope, thermal_sigma)
    table = {int(z): cross_section(int(z), microscope) for z in np.unique(numbers)}
    sigmas = np.array([table[int(z)] for z in numbers])

    center = volume_center(size, sampling)
    half = int(math.ceil(_PATCH_RADIUS / sampling))
    steps = np.arange(-half, half + 1)
    information = np.zeros(n)  # F_σσ per atom, Å⁻⁴
    floor = background + read_noise**2
    for angle, d in zip(angles, doses):
        projected = rotate_positions(positions, angle, center)[:, :2]  # (N, 2) Å, (x, y)
        nearest = np.rint(projected / sampling).astype(int)
        cols, rows = np.broadcast_arrays(
            nearest[:, 0, None, None] + steps[None, None, :],
            nearest[:, 1, None, None] + steps[None, :, None],
        )
        inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
        r = np.hypot(cols * sampling - projected[:, 0, None, None],
                     rows * sampling - projected[:, 1, None, None])
        value, _ = psf(r)
        gain = np.where(inside, d * sampling**2 * value, 0.0)  # counts per unit σ
        own = gain * sigmas[:, None, None]
        if neighbours:
            pixel = np.where(inside, rows * size + cols, 0)
            image = np.bincount(pixel.ravel(), weights=own.ravel(), minlength=size * size)
            variance = image[pixel] + floor
        else:
            variance = own + floor
        variance = np.maximum(variance, 1e-300)
        information += np.where(inside, gain**2 / variance, 0.0).sum(axis=(1, 2))
    return sigmas * np.sqrt(information)


def detection_probability(d_prime, false_alarm: float = FALSE_ALARM) -> np.ndarray:
    """``P_D = Φ(d′ − Φ⁻¹(1 − α))``: the optimal test's detection probability at false-alarm ``α``."""
    from scipy.stats import norm

    if not (0.0 < false_alarm < 1.0):
        raise ValueError(f"false_alarm={false_alarm!r}: expected a probability in (0, 1)")
    d_prime = np.asarray(d_prime, dtype=float)
    return norm.cdf(d_prime - norm.ppf(1.0 - false_alarm))


def recovery_bound(d_prime, false_alarm: float = FALSE_ALARM) -> float:
    """The mean detection probability over atoms (NaN for none): a sample's recovery bound."""
    p = detection_probability(d_prime, false_alarm)
    return float(np.mean(p)) if p.size else float("nan")


def detectability_of_sample(
    sample: dict, spec: dict | None = None, *, neighbours: bool = True
) -> np.ndarray:
    """``d′`` of every true atom of one sample as read from a store (see
    :func:`benchmark.crlb.crlb_of_sample` for the fields used)."""
    spec = spec or {}
    microscope = (
        Microscope.from_dict(dict(spec["microscope"])) if spec.get("microscope") else Microscope()
    )
    noise_specs = dict(spec.get("noise_models") or {}).get(str(sample.get("noise_model", "")))
    if noise_specs is None:
        noise_specs = spec.get("noise")
    dose = sample.get("acquisition_dose")
    if dose is None:
        dose = float(sample["dose"])
    size = int(np.shape(sample["tilt_series"])[-1])
    read_noise, background = noise_levels(noise_specs, float(np.mean(dose)), sample["sampling"])
    return detectability(
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
