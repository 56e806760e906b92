"""One sample of a dataset: its fully resolved specification and its simulation.

``simulate_sample(spec, rng)`` runs the whole per-sample chain of docs/design.md::

    structure -> (angle errors) -> acquisition (order, doses) -> beam damage
              -> clean tilt series -> noise -> alignment -> reconstruction -> target

The alignment (:mod:`simgen.reconstruction.alignment`, ``spec.align``) estimates each projection's shift (and,
for projection matching, its tilt angle) from the measured data alone, as a real pipeline does;
the volume is reconstructed from the aligned series at the estimated angles. The ideal target
is built from the true atoms and does not depend on it.

Every random step draws from the one ``numpy.random.Generator`` passed in, in a fixed order, so a
sample is a pure function of its spec and its generator. Beam damage (:mod:`simgen.damage`) draws
from a child generator, ``rng.spawn(1)[0]``, spawned only when the spec names damage models: the
child comes from the seed sequence's spawn counter, not from ``rng``'s bit stream, so the imaging
and noise draws are the same with or without damage, and a spec without damage draws exactly the
numbers it drew before damage existed (bit-identical stores).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from simgen.physics.imaging import Microscope

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
    noise: tuple = ("poisson",)  # noise specs (simgen.registry.Spec, parsed; or text)
    noise_model: str = "poisson"
    mode: str = "linear"
    microscope: Microscope = field(default_factory=Microscope)
    thermal_sigma: float = 0.0
    vacancy_fraction: float = 0.0
    orientation: str = "random"
    recon: str = "sirt"
    iterations: int = 50
    align: str = "none"  # simgen.reconstruction.alignment.METHODS (resolved from the dataset's "auto")
    target_sigma: float = 0.35
    split: str = "train"
    structure_seed: int | None = None  # when set, the particle is built from its own generator
    tilt_scheme: str = "sequential"  # acquisition order (simgen.physics.acquisition.SCHEMES)
    dose_profile: str = "uniform"  # "uniform" or "cos" (dose ∝ 1/cos θ, ``dose`` at 0°)
    damage: tuple = ()  # damage specs (simgen.registry.Spec, parsed; or text for parse_damage)
    damage_model: str = ""  # name of the damage preset ("" when the dataset has none)

    @property
    def tracks_acquisition(self) -> bool:
        """Whether the acquisition (order, doses, damage) is recorded with the sample."""
        return bool(
            self.damage
            or self.damage_model
            or self.tilt_scheme != "sequential"
            or self.dose_profile != "uniform"
        )

    def to_dict(self) -> dict:
        """The spec as plain data; noise and damage specs as the text they were written in."""
        out = asdict(self)
        out["noise"] = tuple(str(s) for s in self.noise)
        out["damage"] = tuple(str(s) for s in self.damage)
        if not self.tracks_acquisition:  # records of specs without damage stay as they were
            for key in ("tilt_scheme", "dose_profile", "damage", "damage_model"):
                out.pop(key)
        return out


@dataclass
class Sample:
    """The arrays of one sample, in the units and axes of the store schema (docs/design.md)."""

    atoms: object  # ase.Atoms, positions (x, y, z) in Å in the volume frame
    tilt_series: np.ndarray  # (A, P, P) float32, measured detector counts
    angles: np.ndarray  # (A,) float32, nominal (recorded) angles, degrees
    angles_true: np.ndarray  # (A,) float32, true angles, degrees
    volume: np.ndarray  # (V, V, V) float32, reconstruction, Å² per voxel
    target: np.ndarray  # (V, V, V) float32, ideal volume, Å² per voxel
    meta: dict
    acquisition: object | None = None  # simgen.physics.acquisition.Acquisition (order, per-projection dose)
    history: object | None = None  # simgen.damage.DamageHistory when the spec names damage models
    shifts: np.ndarray | None = None  # (A, 2) estimated (dy, dx) translation per projection, Å
    shifts_true: np.ndarray | None = None  # (A, 2) translation the noise models applied, Å
    angles_estimated: np.ndarray | None = None  # (A,) angles the volume was reconstructed at


def normalise_tilt_series(tilt_series: np.ndarray, dose, background: float = 0.0) -> np.ndarray:
    """Counts -> HAADF cross-section per pixel (Å²): the quantity the volume is reconstructed in.

    A pixel of the normalised series is ``(counts - background) / dose``, so its sum over an image
    is the summed HAADF cross-section of the atoms, whatever the dose. ``dose`` is one dose in
    e/Å² for every projection, or an ``(A,)`` array with the dose of each projection.
    """
    doses = np.asarray(dose, dtype=np.float64)
    if doses.ndim == 0:
        if not np.isfinite(dose) or dose <= 0:
            raise ValueError(f"dose={dose!r}: expected a positive number of e/Å² per projection")
        return ((np.asarray(tilt_series, dtype=np.float32) - background) / dose).astype(np.float32)
    series = np.asarray(tilt_series, dtype=np.float32)
    if doses.shape != series.shape[:1] or not np.all(np.isfinite(doses)) or np.any(doses <= 0):
        raise ValueError(
            f"dose={dose!r}: expected a positive dose in e/Å² per projection, one for each of "
            f"the {series.shape[0]} projections"
        )
    return ((series - background) / doses[:, None, None].astype(np.float32)).astype(np.float32)


def simulate_sample(
    spec: SampleSpec, rng: np.random.Generator, atoms=None, *, progress: bool = False
) -> Sample:
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
    progress
        Show progress bars for the imaging and the reconstruction (``simgen simulate``).
    """
    from simgen import structures
    from simgen.physics import acquisition, imaging, noise, targets
    from simgen.reconstruction import alignment, reconstruct

    if atoms is None:
        # A structure_seed makes the particle independent of the sample's generator, so the same
        # particle can be imaged at several doses or noise models (config: same_structure_across).
        structure_rng = (
            rng
            if spec.structure_seed is None
            else np.random.default_rng(np.random.SeedSequence(spec.structure_seed))
        )
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
    acq = acquisition.Acquisition.from_scheme(
        nominal, spec.tilt_scheme, dose=spec.dose, dose_profile=spec.dose_profile
    )
    history = None
    if spec.damage:
        # The history's atom ids are the indices of ``atoms``, the stored initial structure.
        history = _evolve(spec, atoms, acq, rng)
    imager = partial(
        imaging.simulate_tilt_series,
        size=spec.size,
        sampling=spec.sampling,
        microscope=spec.microscope,
        mode=spec.mode,
        progress=progress,
    )
    if history is not None and history.events:
        from simgen.damage import image_history

        # Each projection images the structure as it was when that projection was acquired.
        clean = image_history(history, imager, angles=true_angles)
    else:
        clean = imager(atoms, true_angles)
    # Band-limited imaging can ring slightly below zero far from atoms; counts cannot.
    clean = np.maximum(clean, 0.0)
    uniform = bool(np.all(acq.dose == spec.dose))
    # A uniform dose keeps the scalar products of the original chain (bit-identical arrays). With a
    # dose profile, the noise models see the base dose (the 0° dose, e.g. for a dose-dependent
    # background) and the normalisation divides each projection by its own dose.
    dose = spec.dose if uniform else acq.dose
    expected = clean * spec.dose if uniform else clean * acq.dose[:, None, None]
    drawn: dict = {}
    measured = chain.apply(expected, rng, sampling=spec.sampling, dose=spec.dose, record=drawn)
    if not np.all(np.isfinite(measured)):
        raise ValueError("tilt_series: simulation produced non-finite values")

    normalised = normalise_tilt_series(
        measured, dose, background=chain.background(spec.dose, sampling=spec.sampling)
    )
    # The split reference uses the stage precision (the geometric noise models' spread) as its
    # prior; "projection_matching" keeps the bytes of the stores made before it existed.
    split = spec.align == "projection_matching_split"
    prior = chain.alignment_prior() if split else {"shift_sigma": None, "angle_sigma": None}
    aligned = alignment.align_tilt_series(
        normalised,
        nominal,
        spec.align,
        refine_angles=spec.align in ("projection_matching", "projection_matching_split"),
        shift_prior=None if prior["shift_sigma"] is None else prior["shift_sigma"] / spec.sampling,
        angle_prior=prior["angle_sigma"],
    )
    errors = alignment.alignment_errors(
        aligned.shifts * spec.sampling, drawn["shifts"], true_angles, aligned.angles, true_angles
    )
    volume = reconstruct.reconstruct(
        aligned.aligned,
        aligned.angles,
        method=spec.recon,
        iterations=spec.iterations,
        progress=progress,
    )
    target = targets.ideal_volume(
        atoms, spec.size, spec.sampling, microscope=spec.microscope, sigma=spec.target_sigma
    )

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
        "align": spec.align,
        "align_shift_error_pm": 100.0 * errors["shift_error"],
        "align_angle_error_deg": errors["angle_error"],
    }
    if "ordering" in atoms.info:  # the chemical order made (a twinned L1₀ particle is an alloy)
        meta["ordering"] = atoms.info["ordering"]
    if spec.tracks_acquisition:
        meta.update(
            {
                "tilt_scheme": spec.tilt_scheme,
                "dose_profile": spec.dose_profile,
                "damage_model": spec.damage_model or ("custom" if spec.damage else "none"),
                "total_dose": acq.total_dose,
                "n_events": 0 if history is None else len(history.events),
                "n_sputtered": 0 if history is None else len(history.sputtered_atoms()),
            }
        )
    return Sample(
        atoms=atoms,
        tilt_series=measured.astype(np.float32),
        angles=nominal.astype(np.float32),
        angles_true=np.asarray(true_angles, dtype=np.float32),
        volume=volume.astype(np.float32),
        target=target.astype(np.float32),
        meta=meta,
        acquisition=acq,
        history=history,
        shifts=(aligned.shifts * spec.sampling).astype(np.float32),
        shifts_true=np.asarray(drawn["shifts"], dtype=np.float32),
        angles_estimated=np.asarray(aligned.angles, dtype=np.float32),
    )


def _evolve(spec: SampleSpec, atoms, acq, rng: np.random.Generator):
    """The damage history of ``atoms`` over the acquisition ``acq`` (a child generator of ``rng``)."""
    from simgen import damage
    from simgen.physics.geometry import volume_center

    chain = damage.DamageChain.from_specs(spec.damage, energy=spec.microscope.energy)
    atoms = atoms.copy()
    atoms.arrays.pop("ids", None)  # event ids must be indices into the stored atoms
    # Hops may not leave the sphere that stays inside the volume at every tilt.
    container = (volume_center(spec.size, spec.sampling), (spec.size / 2 - 1) * spec.sampling)
    return chain.evolve(atoms, acq, rng.spawn(1)[0], container=container)
