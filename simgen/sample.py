"""One sample of a dataset: its fully resolved specification and its simulation.

``simulate_sample(spec, rng)`` runs the whole per-sample chain of DESIGN.md::

    structure -> (angle errors) -> clean tilt series -> noise -> reconstruction -> target

Every random step draws from the one ``numpy.random.Generator`` passed in, in a fixed order, so a
sample is a pure function of its spec and its generator.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from simgen.imaging import Microscope

__all__ = ["SampleSpec", "Sample", "simulate_sample", "normalise_tilt_series"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleSpec:
    """Everything needed to simulate one sample (units: Å, degrees, e/Å² per projection)."""

    index: int
    morphology: str
    composition: str
    size_nm: float
    dose: float
    angles: tuple[float, ...]
    sampling: float
    size: int
    noise: tuple[str, ...] = ("poisson",)
    noise_model: str = "poisson"
    mode: str = "linear"
    microscope: Microscope = field(default_factory=Microscope)
    thermal_sigma: float = 0.0
    vacancy_fraction: float = 0.0
    orientation: str = "random"
    recon: str = "sirt"
    iterations: int = 50
    target_sigma: float = 0.35
    split: str = "train"
    structure_seed: int | None = None  # when set, the particle is built from its own generator

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sample:
    """The arrays of one sample, in the units and axes of the store schema (DESIGN.md)."""

    atoms: object  # ase.Atoms, positions (x, y, z) in Å in the volume frame
    tilt_series: np.ndarray  # (A, P, P) float32, measured detector counts
    angles: np.ndarray  # (A,) float32, nominal (recorded) angles, degrees
    angles_true: np.ndarray  # (A,) float32, true angles, degrees
    volume: np.ndarray  # (V, V, V) float32, reconstruction, Å² per voxel
    target: np.ndarray  # (V, V, V) float32, ideal volume, Å² per voxel
    meta: dict


def normalise_tilt_series(tilt_series: np.ndarray, dose: float, background: float = 0.0) -> np.ndarray:
    """Counts -> HAADF cross-section per pixel (Å²): the quantity the volume is reconstructed in.

    A pixel of the normalised series is ``(counts - background) / dose``, so its sum over an image
    is the summed HAADF cross-section of the atoms, whatever the dose.
    """
    if not np.isfinite(dose) or dose <= 0:
        raise ValueError(f"dose={dose!r}: expected a positive number of e/Å² per projection")
    return ((np.asarray(tilt_series, dtype=np.float32) - background) / dose).astype(np.float32)


def simulate_sample(spec: SampleSpec, rng: np.random.Generator, atoms=None) -> Sample:
    """Simulate one sample from its spec with the generator ``rng``.

    Parameters
    ----------
    spec
        The resolved sample specification.
    rng
        The sample's own generator (from ``SeedSequence(dataset_seed).spawn``).
    atoms
        Optional ``ase.Atoms`` to image instead of building ``spec.morphology``; they are centred
        in the volume (and randomly oriented only if ``spec.orientation == "random"``).
    """
    from simgen import imaging, noise, reconstruct, structures, targets

    if atoms is None:
        # A structure_seed makes the particle independent of the sample's generator, so the same
        # particle can be imaged at several doses or noise models (config: same_structure_across).
        structure_rng = rng if spec.structure_seed is None else np.random.default_rng(np.random.SeedSequence(spec.structure_seed))
        atoms = structures.build_particle(
            spec.morphology,
            spec.composition,
            spec.size_nm,
            rng=structure_rng,
            orientation=spec.orientation,
            thermal_sigma=spec.thermal_sigma,
            vacancy_fraction=spec.vacancy_fraction,
        )
    elif spec.orientation == "random":
        atoms = structures.random_orientation(atoms, rng)
    atoms = structures.place_in_volume(atoms, spec.size, spec.sampling)

    chain = noise.NoiseChain.from_specs(spec.noise)
    nominal = np.asarray(spec.angles, dtype=np.float64)
    true_angles = chain.true_angles(nominal, rng)
    clean = imaging.simulate_tilt_series(
        atoms, true_angles, size=spec.size, sampling=spec.sampling, microscope=spec.microscope, mode=spec.mode
    )
    # Band-limited imaging can ring slightly below zero far from atoms; counts cannot.
    clean = np.maximum(clean, 0.0)
    measured = chain.apply(clean * spec.dose, rng, sampling=spec.sampling, dose=spec.dose)
    if not np.all(np.isfinite(measured)):
        raise ValueError("tilt_series: simulation produced non-finite values")

    normalised = normalise_tilt_series(measured, spec.dose, background=chain.background(spec.dose, sampling=spec.sampling))
    volume = reconstruct.reconstruct(normalised, nominal, method=spec.recon, iterations=spec.iterations)
    target = targets.ideal_volume(atoms, spec.size, spec.sampling, microscope=spec.microscope, sigma=spec.target_sigma)

    meta = {
        "index": spec.index,
        "morphology": spec.morphology,
        "composition": spec.composition,
        "size_nm": spec.size_nm,
        "dose": spec.dose,
        "noise_model": spec.noise_model,
        "split": spec.split,
        "n_atoms": len(atoms),
        "mode": spec.mode,
    }
    return Sample(
        atoms=atoms,
        tilt_series=measured.astype(np.float32),
        angles=nominal.astype(np.float32),
        angles_true=np.asarray(true_angles, dtype=np.float32),
        volume=volume.astype(np.float32),
        target=target.astype(np.float32),
        meta=meta,
    )
