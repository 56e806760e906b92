"""Calibrated constants of the linear HAADF model: σ(Z) per element and the probe's transfer.

Both come from the abTEM calibration table shipped with the package
(``simgen/data/calibration.json``, :mod:`simgen.physics.calibration` regenerates it). For a microscope or
element outside the table they are computed with abTEM on first use and cached for the process.
"""

from __future__ import annotations

import logging
import math
from dataclasses import astuple, fields
from functools import lru_cache

import numpy as np

from simgen.physics.microscope import Microscope, load_calibration

__all__ = [
    "PROBE_FIELDS",
    "atomic_number",
    "calibration",
    "cross_section",
    "cross_sections",
    "default_thermal_sigma",
    "probe_transfer_table",
]

logger = logging.getLogger(__name__)

#: Probe settings that fix the PSF; the detector angles additionally fix σ(Z).
PROBE_FIELDS = ("energy", "semiangle_cutoff", "defocus", "cs")

_SIGMA_CACHE: dict[tuple, float] = {}
_PROBE_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


@lru_cache(maxsize=1)
def calibration() -> dict:
    """The package's calibration table (read once per process)."""
    return load_calibration()


def _same(microscope: Microscope, reference: dict, names: tuple[str, ...]) -> bool:
    return all(
        math.isclose(getattr(microscope, n), float(reference[n]), rel_tol=1e-9, abs_tol=1e-9)
        for n in names
    )


def atomic_number(element: str | int) -> int:
    """Atomic number of a chemical symbol or number; ``ValueError`` naming the value otherwise."""
    from ase.data import atomic_numbers, chemical_symbols

    if isinstance(element, (int, np.integer)) and not isinstance(element, bool):
        if 1 <= int(element) < len(chemical_symbols):
            return int(element)
    elif isinstance(element, str) and element in atomic_numbers and element != "X":
        return atomic_numbers[element]
    raise ValueError(
        f"element={element!r}: expected a chemical symbol (e.g. 'Pt') or an atomic number 1..118"
    )


def cross_section(element: str | int, microscope: Microscope = Microscope()) -> float:
    """HAADF cross-section σ (Å²) of one atom: detector fraction integrated over probe positions.

    Values come from the abTEM calibration table (``simgen/data/calibration.json``, made at the
    project's default microscope). For another detector, energy or probe, or an element outside the
    table, σ is computed with abTEM multislice on first use (about 10 s) and cached for the process;
    a warning is logged.

    Parameters
    ----------
    element
        Chemical symbol or atomic number.
    microscope
        Microscope settings (energy in eV, angles in mrad).

    Returns
    -------
    float
        σ in Å².
    """
    from ase.data import chemical_symbols

    z = atomic_number(element)
    symbol = chemical_symbols[z]
    table = calibration()
    if _same(microscope, table["microscope"], tuple(f.name for f in fields(Microscope))):
        entry = table["cross_sections"].get(symbol)
        if entry is not None:
            return float(entry["sigma"])
    key = (astuple(microscope), z)
    if key not in _SIGMA_CACHE:
        from simgen.physics.calibration import compute_cross_section

        logger.warning(
            "no calibrated cross-section for %s at %s; computing it with abTEM multislice",
            symbol,
            microscope,
        )
        _SIGMA_CACHE[key] = compute_cross_section(symbol, microscope)
    return _SIGMA_CACHE[key]


def cross_sections(elements, microscope: Microscope = Microscope()) -> np.ndarray:
    """σ (Å², float64) of each of ``elements`` (symbols or atomic numbers), one look-up per species."""
    elements = list(elements)
    table = {e: cross_section(e, microscope) for e in set(elements)}
    return np.array([table[e] for e in elements], dtype=np.float64)


def probe_transfer_table(microscope: Microscope = Microscope()) -> tuple[np.ndarray, np.ndarray]:
    """The probe intensity's radial transfer function: ``(k, T(k))``, k in Å⁻¹, T(0) = 1.

    Without the thermal blur (:func:`simgen.forward.psf_transfer` adds it).
    """
    table = calibration()
    if _same(microscope, table["microscope"], PROBE_FIELDS):
        probe = table["probe"]
        return np.asarray(probe["k"]), np.asarray(probe["transfer"])
    key = tuple(getattr(microscope, n) for n in PROBE_FIELDS)
    if key not in _PROBE_CACHE:
        from simgen.physics.calibration import compute_probe_transfer

        logger.info("probe PSF for %s not in the calibration; computing it with abTEM", microscope)
        probe = compute_probe_transfer(microscope)
        _PROBE_CACHE[key] = (np.asarray(probe["k"]), np.asarray(probe["transfer"]))
    return _PROBE_CACHE[key]


def default_thermal_sigma() -> float:
    """RMS thermal displacement (Å, per axis) folded into the PSF unless told otherwise."""
    return float(calibration()["thermal_sigma"])
