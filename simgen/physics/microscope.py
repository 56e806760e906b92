"""The microscope: STEM settings, electron wavelength, and the calibration table measured for them.

This module sits under both :mod:`simgen.physics.imaging` (which reads σ(Z) and the PSF from the table)
and :mod:`simgen.physics.calibration` (which measures the table with abTEM), so neither imports the other.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = [
    "Microscope",
    "CALIBRATION_PATH",
    "wavelength",
    "max_scattering_angle",
    "load_calibration",
]

CALIBRATION_PATH = Path(__file__).resolve().parents[1] / "data" / "calibration.json"


@dataclass(frozen=True)
class Microscope:
    """STEM settings (energy in eV, angles in mrad, defocus and Cs in Å, abTEM sign convention)."""

    energy: float = 200e3
    semiangle_cutoff: float = 25.0
    detector_inner: float = 60.0
    detector_outer: float = 200.0
    defocus: float = 0.0
    cs: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise ValueError(f"{f.name}={value!r}: expected a finite number")
        for name in ("energy", "semiangle_cutoff", "detector_outer"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected a positive number")
        if self.detector_inner < 0:
            raise ValueError(f"detector_inner={self.detector_inner!r}: expected >= 0 mrad")
        if self.detector_outer <= self.detector_inner:
            raise ValueError(
                f"detector_outer={self.detector_outer!r}: expected > detector_inner={self.detector_inner!r} mrad"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Microscope:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"microscope={data!r}: unknown keys {sorted(unknown)}, expected a subset of {sorted(known)}"
            )
        return cls(**{k: float(v) for k, v in data.items()})


def wavelength(energy: float) -> float:
    """Relativistic electron wavelength (Å) at an accelerating voltage ``energy`` (eV)."""
    m0c2 = 510998.95  # electron rest energy, eV
    hc = 12398.419843  # eV·Å
    return hc / math.sqrt(energy * (2.0 * m0c2 + energy))


def max_scattering_angle(energy: float, potential_sampling: float) -> float:
    """Largest scattering angle (mrad) a multislice at ``potential_sampling`` (Å) resolves.

    abTEM band-limits the wave to 2/3 of the Nyquist frequency 1/(2·sampling).
    """
    return wavelength(energy) / (2.0 * potential_sampling) * (2.0 / 3.0) * 1e3


def load_calibration(path: str | Path | None = None) -> dict:
    """Read a calibration JSON (the package data by default)."""
    path = CALIBRATION_PATH if path is None else Path(path)
    if not path.is_file():
        raise ValueError(
            f"path={str(path)!r}: expected a calibration JSON; regenerate it with `python -m simgen.physics.calibration`"
        )
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
