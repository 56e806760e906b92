"""Calibration of the linear HAADF model against abTEM multislice.

The linear imaging mode (:mod:`simgen.physics.imaging`) needs two things per microscope setting:

* the HAADF cross-section σ(Z) of a single atom (Å²): the fraction of the beam reaching the
  annular detector, integrated over probe positions. A single atom in a periodic cell is imaged by
  abTEM multislice (no phonons) over a scan of the whole cell; because the detector signal of an
  isolated atom is band-limited (to about 2α/λ ≈ 2 Å⁻¹ at 200 kV, 25 mrad), a Riemann sum over a
  periodic scan with a step below λ/(2α) is already the exact integral — 0.3 Å and 0.4 Å steps
  agree to 1e-6 relative for Pt;
* the probe intensity, stored as its radially symmetric Fourier transform (the "transfer"
  T(k), T(0) = 1) and as a real-space radial profile (Å⁻², unit integral).

A default thermal (Debye–Waller) blur is recorded too; :mod:`simgen.physics.imaging` folds it into the
PSF as a Gaussian.

Regenerate the package data with::

    OMP_NUM_THREADS=1 python -m simgen.physics.calibration --out simgen/data/calibration.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

from simgen.physics.microscope import (
    CALIBRATION_PATH,
    Microscope,
    load_calibration,
    max_scattering_angle,
    wavelength,
)
from simgen.tools.outputs import write_text_atomic

__all__ = [
    "CALIBRATION_PATH",
    "DEFAULT_THERMAL_SIGMA",
    "wavelength",
    "max_scattering_angle",
    "compute_cross_section",
    "compute_probe_transfer",
    "load_calibration",
    "interpolate_log_log",
    "calibrate",
    "main",
]

logger = logging.getLogger(__name__)

#: Default RMS thermal displacement (Å, per axis) folded into the PSF. Room-temperature
#: Debye–Waller factors of fcc metals give B ≈ 0.3–0.6 Å², i.e. u = sqrt(B / 8π²) ≈ 0.06–0.09 Å.
DEFAULT_THERMAL_SIGMA = 0.075

#: Elements computed by default: every element H..Cr, then a set spanning Z up to Bi (the
#: elements of common nanoparticle studies); the others are interpolated in log σ vs log Z.
DEFAULT_ELEMENTS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ge "
    "Zr Mo Ru Rh Pd Ag Sn Ce W Re Os Ir Pt Au Pb Bi"
).split()

#: Scan step (Å) of the single-atom calibration; see the module docstring for why it suffices.
CALIBRATION_SCAN_STEP = 0.4
#: Side (Å) of the periodic cell holding the single atom.
CALIBRATION_CELL = 8.0
#: Potential sampling (Å) unless the detector needs finer.
CALIBRATION_POTENTIAL_SAMPLING = 0.035


def _potential_sampling_for(microscope, requested: float = CALIBRATION_POTENTIAL_SAMPLING) -> float:
    needed = wavelength(microscope.energy) / (3.0 * microscope.detector_outer * 1e-3)
    return min(requested, 0.95 * needed)


def _probe(microscope, **kwargs):
    import abtem

    return abtem.Probe(
        energy=microscope.energy,
        semiangle_cutoff=microscope.semiangle_cutoff,
        defocus=microscope.defocus,
        Cs=microscope.cs,
        **kwargs,
    )


def compute_cross_section(
    element: str | int,
    microscope=None,
    *,
    potential_sampling: float = CALIBRATION_POTENTIAL_SAMPLING,
    scan_step: float = CALIBRATION_SCAN_STEP,
    cell: float = CALIBRATION_CELL,
) -> float:
    """HAADF cross-section (Å²) of one atom from abTEM multislice (no phonons).

    Parameters
    ----------
    element
        Chemical symbol or atomic number.
    microscope
        :class:`simgen.physics.imaging.Microscope`; the project default when ``None``.
    potential_sampling
        Potential sampling (Å); refined automatically if the detector's outer angle needs it.
    scan_step
        Probe step (Å) over the periodic cell; must stay below λ/(2α) (0.5 Å at 200 kV, 25 mrad).
    cell
        Side (Å) of the periodic cell holding the atom.

    Returns
    -------
    float
        Detector fraction summed over probe positions times the step area (Å²).
    """
    import abtem
    from ase import Atoms

    microscope = Microscope() if microscope is None else microscope
    sampling = _potential_sampling_for(microscope, potential_sampling)
    atoms = Atoms([element], positions=[(cell / 2, cell / 2, 1.0)], cell=[cell, cell, 2.0])
    potential = abtem.Potential(
        atoms, sampling=sampling, slice_thickness=1.0, projection="infinite"
    )
    n = max(int(math.ceil(cell / scan_step)), 2)
    scan = abtem.GridScan(start=(0.0, 0.0), end=(cell, cell), gpts=(n, n), endpoint=False)
    detector = abtem.AnnularDetector(
        inner=microscope.detector_inner, outer=microscope.detector_outer
    )
    measurement = _probe(microscope).scan(potential, scan=scan, detectors=detector, lazy=True)
    import dask

    with dask.config.set(scheduler="synchronous"):
        fraction = np.asarray(measurement.compute(progress_bar=False).array, dtype=np.float64)
    step = cell / n
    return float(fraction.sum() * step * step)


def compute_probe_transfer(microscope=None, *, sampling: float = 0.025, gpts: int = 1024) -> dict:
    """Probe intensity of ``microscope`` from abTEM, as Fourier and real-space radial tables.

    Returns
    -------
    dict
        ``k`` (Å⁻¹) and ``transfer`` (FT of the probe intensity, 1 at k = 0) along a radius, and
        ``r`` (Å) and ``intensity`` (Å⁻², unit 2D integral) along a radius.
    """
    microscope = Microscope() if microscope is None else microscope
    probe = _probe(microscope, gpts=gpts, sampling=sampling)
    wave = probe.build(scan=(0.0, 0.0), lazy=False)
    intensity = np.asarray(wave.intensity().array, dtype=np.float64)
    intensity = intensity / intensity.sum()
    spectrum = np.fft.fft2(intensity)
    if np.abs(spectrum.imag).max() > 1e-6:
        logger.warning("probe intensity is not centrosymmetric; using the real part of its FT")
    half = gpts // 2
    k = np.arange(half) / (gpts * sampling)
    transfer = spectrum.real[0, :half]
    cutoff = 2.0 * microscope.semiangle_cutoff * 1e-3 / wavelength(microscope.energy)
    keep = k <= 1.2 * cutoff + 0.2
    rmax = int(round(4.0 / sampling))
    r = np.arange(rmax + 1) * sampling
    profile = intensity[0, : rmax + 1] / (sampling * sampling)
    return {
        "k": k[keep].tolist(),
        "transfer": transfer[keep].tolist(),
        "r": r.tolist(),
        "intensity": profile.tolist(),
    }


def interpolate_log_log(z: np.ndarray, sigma: np.ndarray, z_new: np.ndarray) -> np.ndarray:
    """σ at atomic numbers ``z_new`` by piecewise-linear interpolation of log σ against log Z."""
    order = np.argsort(z)
    return np.exp(np.interp(np.log(z_new), np.log(z[order]), np.log(sigma[order])))


def calibrate(
    elements: list[str],
    microscope=None,
    *,
    out: str | Path | None = None,
    scan_step: float = CALIBRATION_SCAN_STEP,
    thermal_sigma: float = DEFAULT_THERMAL_SIGMA,
    progress: bool = False,
    command: str | None = None,
) -> dict:
    """Compute σ(Z) for ``elements`` and the probe PSF, fill H…Bi by a log-log fit, write JSON."""
    import abtem
    from ase.data import atomic_numbers, chemical_symbols

    from simgen.tools.progress import progress_bar

    microscope = Microscope() if microscope is None else microscope
    settings = {
        "method": "abTEM multislice, single atom in a periodic cell, no phonons",
        "cell": CALIBRATION_CELL,
        "scan_step": scan_step,
        "potential_sampling": _potential_sampling_for(microscope),
        "slice_thickness": 1.0,
        "parametrization": "lobato",
    }
    # Checkpoint after every element so an interrupted run resumes (same microscope and settings).
    checkpoint = Path(str(out) + ".partial.json") if out is not None else None
    computed: dict[str, float] = {}
    if checkpoint is not None and checkpoint.is_file():
        saved = json.loads(checkpoint.read_text(encoding="utf-8"))
        if saved.get("microscope") == microscope.to_dict() and saved.get("settings") == settings:
            computed = {k: v for k, v in saved["cross_sections"].items() if k in elements}
            logger.info("resuming from %s: %d elements done", checkpoint, len(computed))
    start = time.time()
    todo = [s for s in elements if s not in computed]
    for symbol in progress_bar(todo, desc="cross-sections", enabled=progress):
        computed[symbol] = compute_cross_section(symbol, microscope, scan_step=scan_step)
        logger.info("%s: σ = %.6g Å²", symbol, computed[symbol])
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            state = {
                "microscope": microscope.to_dict(),
                "settings": settings,
                "cross_sections": computed,
            }
            write_text_atomic(checkpoint, json.dumps(state, indent=1))
    z = np.array([atomic_numbers[s] for s in computed], dtype=float)
    values = np.array(list(computed.values()))
    table = {s: {"sigma": v, "source": "abtem"} for s, v in computed.items()}
    if len(computed) >= 2:
        for number in range(int(z.min()), int(z.max()) + 1):
            symbol = chemical_symbols[number]
            if symbol not in table:
                sigma = float(interpolate_log_log(z, values, np.array([number]))[0])
                table[symbol] = {"sigma": sigma, "source": "interpolated (log σ vs log Z)"}
    table = dict(sorted(table.items(), key=lambda item: atomic_numbers[item[0]]))
    result = {
        "microscope": microscope.to_dict(),
        "cross_sections": table,
        "thermal_sigma": thermal_sigma,
        "probe": compute_probe_transfer(microscope),
        "settings": settings,
        "abtem_version": abtem.__version__,
        "python": platform.python_version(),
        "runtime_s": round(time.time() - start, 1),
        "command": command or "OMP_NUM_THREADS=1 python -m simgen.physics.calibration",
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(result, indent=1))
        if checkpoint is not None and checkpoint.is_file():
            checkpoint.unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m simgen.physics.calibration [--elements H,He,...] [--out PATH]``."""
    parser = argparse.ArgumentParser(
        prog="python -m simgen.physics.calibration", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--elements",
        default=",".join(DEFAULT_ELEMENTS),
        help="comma-separated symbols computed with abTEM; gaps between them are interpolated "
        "(default: H..Cr plus a set spanning Z up to Bi)",
    )
    parser.add_argument("--out", default=str(CALIBRATION_PATH), help="output JSON")
    parser.add_argument("--energy", type=float, default=200e3, help="eV")
    parser.add_argument("--semiangle-cutoff", type=float, default=25.0, help="mrad")
    parser.add_argument("--detector-inner", type=float, default=60.0, help="mrad")
    parser.add_argument("--detector-outer", type=float, default=200.0, help="mrad")
    parser.add_argument("--scan-step", type=float, default=CALIBRATION_SCAN_STEP, help="Å")
    parser.add_argument("--thermal-sigma", type=float, default=DEFAULT_THERMAL_SIGMA, help="Å")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    microscope = Microscope(
        energy=args.energy,
        semiangle_cutoff=args.semiangle_cutoff,
        detector_inner=args.detector_inner,
        detector_outer=args.detector_outer,
    )
    elements = [e.strip() for e in args.elements.split(",") if e.strip()]
    command = "OMP_NUM_THREADS=1 python -m simgen.physics.calibration " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    calibrate(
        elements,
        microscope,
        out=args.out,
        scan_step=args.scan_step,
        thermal_sigma=args.thermal_sigma,
        progress=True,
        command=command.strip(),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
