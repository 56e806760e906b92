"""Knock-on physics: the McKinley–Feshbach cross-section, the largest energy a beam electron can
transfer, and the bulk displacement thresholds of the elements.

References: W. A. McKinley and H. Feshbach, *Phys. Rev.* 74, 1759 (1948); F. Seitz and
J. S. Koehler, *Solid State Phys.* 2, 305 (1956); F. Banhart, *Rep. Prog. Phys.* 62, 1181 (1999),
Eq. 5; R. F. Egerton, *EELS in the Electron Microscope*, 3rd ed., Springer (2011), §5.7.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DISPLACEMENT_THRESHOLDS",
    "max_transferred_energy",
    "threshold_beam_energy",
    "mckinley_feshbach_cross_section",
]

# CODATA 2018
ELECTRON_REST_ENERGY = 510998.95  # m c², eV
ATOMIC_MASS_ENERGY = 931494102.42  # u c², eV
BOHR_RADIUS = 0.529177210903  # a0, Å
RYDBERG_ENERGY = 13.605693122994  # E_R, eV
FINE_STRUCTURE = 1.0 / 137.035999084
BARN = 1e-8  # Å² per barn (1 b = 1e-28 m²)

#: Bulk displacement threshold energies E_d in eV (minimum thresholds, about ±2 eV). Metals:
#: P. Ehrhart, Landolt–Börnstein New Series III/25 (1991), "Properties and interactions of
#: atomic defects in metals and alloys" (resistivity damage-rate thresholds), as also quoted by
#: Egerton et al., Micron 35, 399 (2004) (Cu ≈ 19–20, Au ≈ 34). Si: J. W. Corbett and
#: J. C. Bourgoin, in Point Defects in Solids vol. 2 (1975), ≈ 13 eV. C (graphitic): Banhart
#: (1999) and J. C. Meyer et al., Phys. Rev. Lett. 108, 196102 (2012) (≈ 21 eV in graphene).
#: Override per element with ``knock_on:threshold_Pt=30``.
DISPLACEMENT_THRESHOLDS: dict[str, float] = {
    "C": 21.0,
    "Al": 16.0,
    "Si": 13.0,
    "Fe": 17.0,
    "Co": 22.0,
    "Ni": 23.0,
    "Cu": 19.0,
    "Pd": 34.0,
    "Ag": 25.0,
    "Pt": 33.0,
    "Au": 35.0,
}

MIN_DISTANCE_FRACTION = 0.85  # of the bond length: closest approach of a hopped atom to any other
MIN_SUPPORT = 3  # neighbours a hopped atom must bond to
SITE_TRIALS = 64  # random directions tried when looking for a free neighbouring site


# ----------------------------------------------------------------------------------------------
# Knock-on physics
# ----------------------------------------------------------------------------------------------


def max_transferred_energy(energy, mass):
    """Largest kinetic energy (eV) a beam electron can give to a nucleus at rest.

    E_max = 2E(E + 2mc²)/(Mc²), head-on elastic collision, relativistic electron.

    Parameters
    ----------
    energy
        Beam kinetic energy E in eV (e.g. 200e3).
    mass
        Nucleus mass M in atomic mass units (u).
    """
    energy = np.asarray(energy, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    return 2.0 * energy * (energy + 2.0 * ELECTRON_REST_ENERGY) / (mass * ATOMIC_MASS_ENERGY)


def threshold_beam_energy(threshold, mass):
    """Beam kinetic energy (eV) at which E_max equals the displacement threshold ``threshold`` (eV).

    The inverse of :func:`max_transferred_energy` (Egerton 2011 writes it as
    E_th = mc² [√(1 + A E_d / (561 eV)) − 1] for A in u, 561 eV ≈ 2 (mc²)²/(u c²)).
    """
    threshold = np.asarray(threshold, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    mc2 = ELECTRON_REST_ENERGY
    return mc2 * (np.sqrt(1.0 + threshold * mass * ATOMIC_MASS_ENERGY / (2.0 * mc2**2)) - 1.0)


def mckinley_feshbach_cross_section(energy, threshold, number, mass=None):
    """Displacement cross-section (barn) of a nucleus for a beam electron, McKinley–Feshbach.

    The McKinley–Feshbach (1948) approximation of the Mott cross-section, integrated over energy
    transfers from E_d to E_max (Seitz & Koehler 1956; Banhart 1999, Eq. 5; Egerton 2011)::

        σ_d = 4π a0² Z² E_R² / (mc²)² · (1 − β²)/β⁴
              · [ x − 1 − β² ln x + π α β (2(√x − 1) − ln x) ],   x = E_max / E_d

    with α = Z e²/(ħc) = Z/137, a0 the Bohr radius, E_R the Rydberg energy and β = v/c of the
    electron. The prefactor 4π a0² E_R²/(mc²)² = π r_e² = 0.2495 barn. The bracket without its
    α term is the Rutherford value; σ_d = 0 when E_max ≤ E_d. The approximation is good for
    Z ≲ 28 and underestimates the full Mott value for heavy elements (by up to ~2× for Au at MeV
    energies, Oen 1973); near threshold, where it matters in a TEM, it is within tens of percent.

    Parameters
    ----------
    energy
        Beam kinetic energy in eV.
    threshold
        Displacement threshold energy E_d in eV (> 0).
    number
        Atomic number Z.
    mass
        Nucleus mass in u; the standard atomic weight of ``number`` when omitted.

    Returns
    -------
    numpy.ndarray or float
        σ_d in barn (1 barn = 1e-8 Å²), broadcast over the inputs.
    """
    from ase.data import atomic_masses

    energy = np.asarray(energy, dtype=np.float64)
    threshold = np.asarray(threshold, dtype=np.float64)
    number = np.asarray(number)
    if np.any(~np.isfinite(energy)) or np.any(energy <= 0):
        raise ValueError(f"energy={energy!r}: expected a positive beam kinetic energy in eV")
    if np.any(~np.isfinite(threshold)) or np.any(threshold <= 0):
        raise ValueError(
            f"threshold={threshold!r}: expected a positive displacement threshold in eV"
        )
    if np.any(number < 1) or np.any(number >= len(atomic_masses)):
        raise ValueError(f"number={number!r}: expected atomic numbers 1..{len(atomic_masses) - 1}")
    mass = atomic_masses[number] if mass is None else np.asarray(mass, dtype=np.float64)
    z = number.astype(np.float64)

    gamma = 1.0 + energy / ELECTRON_REST_ENERGY
    beta2 = 1.0 - 1.0 / gamma**2
    beta = np.sqrt(beta2)
    x = max_transferred_energy(energy, mass) / threshold
    above = x > 1.0
    x = np.where(above, x, 1.0)  # keep the logarithms finite; masked to 0 below
    log_x = np.log(x)
    bracket = (
        (x - 1.0)
        - beta2 * log_x
        + np.pi * z * FINE_STRUCTURE * beta * (2.0 * (np.sqrt(x) - 1.0) - log_x)
    )
    prefactor = (
        4.0 * np.pi * BOHR_RADIUS**2 * z**2 * RYDBERG_ENERGY**2 / ELECTRON_REST_ENERGY**2
    )  # Å²
    sigma = prefactor * (1.0 - beta2) / beta2**2 * bracket / BARN
    sigma = np.where(above, sigma, 0.0)
    return sigma if sigma.ndim else float(sigma)
