"""The validated spec of one dataset (:class:`DatasetSpec`) and its record in a store.

A :class:`DatasetSpec` is built once from a catalogue entry (:meth:`DatasetSpec.from_dict`,
:func:`simgen.catalog.load_catalog`) and is frozen; :meth:`DatasetSpec.plan` resolves it into one
:class:`simgen.sample.SampleSpec` per sample (:mod:`simgen.catalog.planning`). :func:`spec_dict` is what a
store records in its attributes, :func:`spec_hash` its stable digest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from simgen.catalog import planning
from simgen.catalog.entry import Distribution, Split, StorageSpec, parse_entry
from simgen.catalog.validation import Where
from simgen.registry import Spec

__all__ = ["DatasetSpec", "spec_dict", "spec_hash"]


#: Most samples one catalogue entry may plan (42,588 in the PANN paper).
MAX_SAMPLES = 10_000_000
#: Memory a simulation holds per voxel and per tilt-series pixel (bytes; simgen.cli's guard).
_BYTES_PER_VOXEL = 6 * 4
_BYTES_PER_PIXEL = 8 * 4


def _physical_memory() -> int | None:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class DatasetSpec:
    """One validated dataset of the catalogue (units: Å, degrees, eV, mrad, e/Å² per projection).

    Build it with :func:`load_catalog` / :func:`get_dataset` (or :meth:`from_dict`), which
    validate every key. :meth:`plan` resolves it into one :class:`simgen.sample.SampleSpec` per
    sample, in a deterministic order.
    """

    name: str
    description: str
    seed: int
    sampling: float
    size: int
    angles: tuple[float, ...]
    morphologies: tuple[str, ...]
    compositions: tuple[str, ...]
    doses: tuple[float, ...]
    noise_models: tuple[tuple[str, tuple[Spec, ...]], ...]  # presets of parsed specs
    size_nm: Distribution
    thermal_sigma: Distribution = Distribution((0.0,))
    vacancy_fraction: Distribution = Distribution((0.0,))
    orientations: tuple[str, ...] = ("random",)
    microscope: tuple[tuple[str, float], ...] = ()
    mode: str = "linear"
    recon: str = "sirt"
    iterations: int = 50
    align: str = "auto"
    target_sigma: float = 0.35
    grid_axes: tuple[str, ...] = ("morphology", "composition", "dose", "noise_model")
    replicas: int = 0
    count: int = 0
    same_structure_across: tuple[str, ...] = ()
    order: str = "grid"
    split: Split = field(default_factory=Split)
    storage: StorageSpec = field(default_factory=StorageSpec)
    tilt_schemes: tuple[str, ...] = ("sequential",)
    dose_profile: str = "uniform"
    damage_models: tuple[tuple[str, tuple[Spec, ...]], ...] = ()

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_dict(cls, name: str, data: Mapping, *, source: str = "datasets.yaml") -> DatasetSpec:
        """Validate one catalogue entry; ``ValueError`` names source, dataset, key and value.

        Bounded here, before any plan is built: at most :data:`MAX_SAMPLES` samples, and a volume
        whose simulation fits in this machine's memory (the bound ``simgen simulate`` applies).
        """
        where = Where(source, name)
        spec = cls(**parse_entry(name, data, where))
        if spec.n_samples > MAX_SAMPLES:
            key = "samples.grid.replicas" if spec.n_grid > spec.count else "samples.random.count"
            value = spec.replicas if key.endswith("replicas") else spec.count
            raise where.error(
                key,
                value,
                f"a plan of at most {MAX_SAMPLES:.0e} samples (this one has {spec.n_samples:.3g})",
            )
        need = (
            _BYTES_PER_VOXEL * float(spec.size) ** 3
            + _BYTES_PER_PIXEL * len(spec.angles) * float(spec.size) ** 2
        )
        have = _physical_memory()
        if have is not None and need > have:
            raise where.error(
                "size",
                spec.size,
                f"a volume whose simulation fits in memory (a {spec.size}³ sample needs about "
                f"{need / 2**30:.3g} GiB, this machine has {have / 2**30:.3g} GiB)",
            )
        return spec

    # ---- derived quantities ---------------------------------------------------------------

    @property
    def n_grid(self) -> int:
        if not self.replicas:
            return 0
        return math.prod(len(self._axis_values(a)) for a in self.grid_axes) * self.replicas

    @property
    def n_samples(self) -> int:
        """Number of samples in the plan (grid cells × replicas + random draws)."""
        return self.n_grid + self.count

    @property
    def n_angles(self) -> int:
        return len(self.angles)

    @property
    def tracks_acquisition(self) -> bool:
        """Whether samples record their acquisition and damage (scheme, dose profile or damage)."""
        return bool(
            self.damage_models
            or self.tilt_schemes != ("sequential",)
            or self.dose_profile != "uniform"
        )

    def _axis_values(self, axis: str) -> tuple:
        return planning.axis_values(self, axis)

    def microscope_object(self):
        """The :class:`simgen.physics.imaging.Microscope` of this dataset."""
        from simgen.physics.imaging import Microscope

        return Microscope(**dict(self.microscope))

    # ---- the plan (simgen.catalog.planning) -------------------------------------------------------

    def plan_rows(self) -> list[dict]:
        """The plan as plain dicts (no simgen.sample import): one per sample, in order
        (:func:`simgen.catalog.planning.plan_rows`)."""
        return planning.plan_rows(self)

    def plan(self, limit: int | None = None, *, rows: list[dict] | None = None) -> list:
        """The resolved samples (:class:`simgen.sample.SampleSpec`), deterministic order
        (:func:`simgen.catalog.planning.plan`)."""
        return planning.plan(self, limit, rows=rows)

    # ---- reporting ------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The resolved spec in catalogue form (round-trips through :meth:`from_dict`)."""
        out = {
            "description": self.description,
            "seed": self.seed,
            "sampling": self.sampling,
            "size": self.size,
            "microscope": dict(self.microscope),
            "mode": self.mode,
            "tilt": {"angles": list(self.angles)},
            "particles": {
                "morphology": list(self.morphologies),
                "composition": list(self.compositions),
                "size_nm": self.size_nm.to_yaml(),
                "orientation": list(self.orientations),
                "thermal_sigma": self.thermal_sigma.to_yaml(),
                "vacancy_fraction": self.vacancy_fraction.to_yaml(),
            },
            "doses": list(self.doses),
            "noise_models": {n: [str(x) for x in s] for n, s in self.noise_models},
            "reconstruction": {
                "method": self.recon,
                "iterations": self.iterations,
                "align": self.align,
            },
            "target": {"sigma": self.target_sigma},
            "split": self.split.to_yaml(),
            "samples": {},
            "storage": self.storage.to_yaml(),
        }
        if self.replicas:
            out["samples"]["grid"] = {"axes": list(self.grid_axes), "replicas": self.replicas}
        if self.count:
            out["samples"]["random"] = {"count": self.count}
        if self.same_structure_across:
            out["samples"]["same_structure_across"] = list(self.same_structure_across)
        out["samples"]["order"] = self.order
        # Keys of the acquisition and damage appear only when used, so the records (and spec
        # hashes) of datasets without them are unchanged.
        if self.tilt_schemes != ("sequential",):
            schemes = self.tilt_schemes
            out["tilt"]["scheme"] = schemes[0] if len(schemes) == 1 else list(schemes)
        if self.dose_profile != "uniform":
            out["tilt"]["dose_profile"] = self.dose_profile
        if self.damage_models:
            out["damage_models"] = {n: [str(x) for x in s] for n, s in self.damage_models}
        return out

    def summary(self, limit: int | None = None) -> str:
        """The dry-run text: what would be generated (contains a line ``samples: N``;
        :func:`simgen.catalog.planning.summary`)."""
        return planning.summary(self, limit)


def spec_hash(spec_dict: Mapping) -> str:
    """Stable sha256 of a resolved spec dict (used to refuse resuming into a different spec)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True, default=str).encode()).hexdigest()


def spec_dict(spec: DatasetSpec) -> dict:
    """``{"name": ..., **spec.to_dict()}`` — what a store records in its attributes."""
    return {"name": spec.name, **spec.to_dict()}
