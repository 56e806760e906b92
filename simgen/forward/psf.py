"""The point-spread function of the linear HAADF model, in Fourier and in real space.

PSF = probe intensity (abTEM, :mod:`simgen.forward.calibrated`) convolved with an isotropic
Gaussian thermal (Debye–Waller) blur, normalised to unit integral. Its transform is
``T_probe(k)·exp(−2π²σ²k²)``; its radial profile ``h(r)`` (Å⁻²) is the Hankel transform of that.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from simgen.forward.calibrated import default_thermal_sigma, probe_transfer_table
from simgen.physics.microscope import Microscope

__all__ = ["psf_transfer", "band_limit", "RadialPSF", "PATCH_RADIUS"]

#: Å: pixels farther than this from an atom's projection carry < 1e-3 of its PSF.
PATCH_RADIUS = 4.0


def _thermal(thermal_sigma: float | None) -> float:
    thermal_sigma = default_thermal_sigma() if thermal_sigma is None else float(thermal_sigma)
    if not math.isfinite(thermal_sigma) or thermal_sigma < 0:
        raise ValueError(
            f"thermal_sigma={thermal_sigma!r}: expected a non-negative RMS displacement in Å"
        )
    return thermal_sigma


def psf_transfer(
    k: np.ndarray, microscope: Microscope = Microscope(), *, thermal_sigma: float | None = None
) -> np.ndarray:
    """Fourier transform of the PSF at spatial frequencies ``k`` (Å⁻¹); 1 at k = 0.

    The PSF is the probe intensity (from abTEM) convolved with an isotropic Gaussian of RMS
    ``thermal_sigma`` Å per axis (the Debye–Waller blur), so its transform is the probe's times
    ``exp(-2π² σ² k²)``.
    """
    thermal_sigma = _thermal(thermal_sigma)
    table_k, table_t = probe_transfer_table(microscope)
    k = np.abs(np.asarray(k, dtype=np.float64))
    from simgen.tools.reproducible import exp as reproducible_exp

    # reproducible.exp: np.exp's AVX-512 kernel rounds differently (simgen.tools.reproducible)
    return np.interp(k, table_k, table_t, right=0.0) * reproducible_exp(
        -2.0 * np.pi**2 * thermal_sigma**2 * k**2
    )


def band_limit(microscope: Microscope = Microscope()) -> float:
    """Highest spatial frequency (Å⁻¹) the probe transmits (|T| > 1e-7), about 2α/λ."""
    table_k, table_t = probe_transfer_table(microscope)
    return float(table_k[np.abs(table_t) > 1e-7].max())


@dataclass(frozen=True)
class RadialPSF:
    """An isotropic PSF ``h(r)`` (Å⁻², unit integral over the plane) and its derivative ``h'(r)``.

    Tabulated on a uniform radial grid ``r`` (Å) from 0; evaluated by linear interpolation, zero
    beyond the table (:meth:`__call__` for numpy, :func:`simgen.forward.sparse.radial_lookup` for
    any array namespace).
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

    fields, thermal_sigma = key
    microscope = Microscope.from_dict(dict(fields))
    kmax = band_limit(microscope)
    k = np.linspace(0.0, kmax, 4001)
    dk = k[1] - k[0]
    weights = np.full(k.size, dk)
    weights[[0, -1]] *= 0.5  # trapezoid
    transfer = psf_transfer(k, microscope, thermal_sigma=thermal_sigma)
    r = np.linspace(0.0, 2.0 * PATCH_RADIUS, 1601)
    arg = 2.0 * np.pi * np.outer(r, k)
    # h(r) = 2π ∫ T(k) J0(2πkr) k dk;  h'(r) = −4π² ∫ T(k) J1(2πkr) k² dk
    value = 2.0 * np.pi * (j0(arg) * (transfer * k * weights)).sum(axis=1)
    slope = -4.0 * np.pi**2 * (j1(arg) * (transfer * k**2 * weights)).sum(axis=1)
    return RadialPSF(r, value, slope)
