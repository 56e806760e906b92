"""The dataset catalogue: ``datasets.yaml`` in, validated frozen dataclasses inside.

A catalogue is a YAML mapping ``datasets: {name: {...}}`` (intake/kedro style). Each entry is
turned once into a :class:`DatasetSpec`; the rest of the code never sees raw dicts. A broken
entry raises ``ValueError`` naming the file, the dataset, the key, the value and what is allowed
(unknown keys get a "did you mean" suggestion).

Randomness (DESIGN.md): sample ``i`` of a dataset with seed ``s`` uses the generator
``default_rng(SeedSequence(s, spawn_key=(i,)))`` — the same stream as ``SeedSequence(s).spawn(n)[i]``
but O(1). The plan's own random choices (sizes, random draws, the split) come from generators
seeded with ``SeedSequence([s, tag])`` for fixed tags, so the plan is a pure function of the spec.
When ``samples.same_structure_across`` lists plan axes (e.g. ``[dose]``), every sample that
differs only along those axes gets the same ``structure_seed`` and therefore the same particle
(atoms, orientation, thermal displacements): the structure generator depends on the particle
index only, never on the dose or the noise model.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simgen import planning
from simgen.planning import (  # noqa: F401 (re-exported)
    GEOMETRIC_NOISE,
    resolve_align,
    sample_rng,
)
from simgen.store.codecs import LOSSY_CODECS, parse_lossy  # noqa: F401 (re-exported)
from simgen.store.schema import LOSSY_ARRAYS
from simgen.validation import (  # noqa: F401 (MODES, ... re-exported)
    ALIGN_CHOICES,
    DOSE_PROFILES,
    MODES,
    RECON_METHODS,
    did_you_mean,
    field_value,
    required_keys,
    section_keys,
)
from simgen.validation import Where as _Where
from simgen.validation import check_keys as _check_keys
from simgen.validation import number as _number
from simgen.validation import string_list as _string_list

__all__ = [
    "DatasetSpec",
    "Distribution",
    "Split",
    "StorageSpec",
    "load_catalog",
    "get_dataset",
    "validate_catalog",
    "default_catalog_path",
    "sample_rng",
    "GRID_AXES",
    "ALIGN_CHOICES",
    "resolve_align",
]

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
GRID_AXES = (
    "morphology",
    "composition",
    "dose",
    "noise_model",
    "size_nm",
    "tilt_scheme",
    "damage_model",
)
TILT_SCHEMES = ("sequential", "bidirectional", "dose_symmetric")
HOLD_OUT_FIELDS = ("morphology", "composition", "dose", "noise_model")
ORIENTATIONS = ("random", "none")
STORE_ARRAYS = LOSSY_ARRAYS

#: The catalogue shipped with the package (``simgen/data/datasets.yaml``, a link to the
#: repository's top-level ``datasets.yaml``; a wheel holds its content).
PACKAGED_CATALOG = Path(__file__).resolve().parent / "data" / "datasets.yaml"


def default_catalog_path() -> Path:
    """``./datasets.yaml`` if present, else the catalogue shipped with the package."""
    local = Path("datasets.yaml")
    if local.is_file():
        return local
    return PACKAGED_CATALOG


# --------------------------------------------------------------------------------------------
# Small typed pieces of a dataset spec


@dataclass(frozen=True)
class Distribution:
    """A scalar parameter: fixed ``values`` (one is a constant, several a uniform choice) or a
    uniform range ``[low, high]`` (log-uniform when ``log``)."""

    values: tuple[float, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return not self.values

    @property
    def maximum(self) -> float:
        return max(self.values) if self.values else float(self.high)

    def draw(self, rng: np.random.Generator) -> float:
        """One value; a single fixed value consumes no randomness."""
        if len(self.values) == 1:
            return float(self.values[0])
        if self.values:
            return float(self.values[int(rng.integers(len(self.values)))])
        if self.log:
            return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def to_yaml(self):
        if self.values:
            return self.values[0] if len(self.values) == 1 else list(self.values)
        out = {"min": self.low, "max": self.high}
        if self.log:
            out["log"] = True
        return out


@dataclass(frozen=True)
class Split:
    """How samples are assigned to train/val/test.

    ``hold_out`` maps a split to rules ``{field: values}``: a sample whose ``field`` takes one of
    ``values`` (for any of the rules) goes to that split, so whole morphologies or compositions
    stay unseen in training. The other samples are split by ``fractions``, by particle (all
    samples sharing a structure land in the same split), using a seeded permutation.
    """

    fractions: tuple[tuple[str, float], ...] = (("train", 1.0),)
    hold_out: tuple[tuple[str, tuple[tuple[str, tuple], ...]], ...] = ()

    def held_out_split(self, values: Mapping[str, object]) -> str | None:
        for split_name, rules in self.hold_out:
            for field_name, held in rules:
                if values[field_name] in held:
                    return split_name
        return None

    def to_yaml(self) -> dict:
        out: dict = {"fractions": dict(self.fractions)}
        if self.hold_out:
            out["hold_out"] = {s: {f: list(v) for f, v in rules} for s, rules in self.hold_out}
        return out


@dataclass(frozen=True)
class StorageSpec:
    """Zarr storage: lossless Zstd by default; optional lossy encoding per array.

    ``lossy`` maps an array name (tilt_series, volume, target) to ``"float16"`` or
    ``"bitround:K"`` (keep K float32 mantissa bits). The store records the error it introduced.
    """

    compression_level: int = 3
    lossy: tuple[tuple[str, str], ...] = ()

    def to_yaml(self) -> dict:
        out: dict = {"compression_level": self.compression_level}
        if self.lossy:
            out["lossy"] = dict(self.lossy)
        return out


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
    noise_models: tuple[tuple[str, tuple[str, ...]], ...]
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
    damage_models: tuple[tuple[str, tuple[str, ...]], ...] = ()

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_dict(cls, name: str, data: Mapping, *, source: str = "datasets.yaml") -> DatasetSpec:
        """Validate one catalogue entry; ``ValueError`` names source, dataset, key and value."""
        return _parse_dataset(name, data, _Where(source, name))

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
        """The :class:`simgen.imaging.Microscope` of this dataset."""
        from simgen.imaging import Microscope

        return Microscope(**dict(self.microscope))

    # ---- the plan (simgen.planning) -------------------------------------------------------

    def plan_rows(self) -> list[dict]:
        """The plan as plain dicts (no simgen.sample import): one per sample, in order
        (:func:`simgen.planning.plan_rows`)."""
        return planning.plan_rows(self)

    def plan(self, limit: int | None = None, *, rows: list[dict] | None = None) -> list:
        """The resolved samples (:class:`simgen.sample.SampleSpec`), deterministic order
        (:func:`simgen.planning.plan`)."""
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
            "noise_models": {n: list(s) for n, s in self.noise_models},
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
            out["damage_models"] = {n: list(s) for n, s in self.damage_models}
        return out

    def summary(self, limit: int | None = None) -> str:
        """The dry-run text: what would be generated (contains a line ``samples: N``;
        :func:`simgen.planning.summary`)."""
        return planning.summary(self, limit)


# --------------------------------------------------------------------------------------------
# Parsing and validation


def _distribution(
    value, where: _Where, key: str, *, minimum: float, exclusive: bool, maximum: float | None = None
) -> Distribution:
    """A constant, a list (uniform choice) or ``{min, max[, log]}`` (uniform range)."""

    def check(v, k):
        x = _number(v, where, k, minimum=minimum, exclusive=exclusive)
        if maximum is not None and x > maximum:
            raise where.error(k, v, f"a number <= {maximum}")
        return x

    if isinstance(value, Mapping):
        _check_keys(value, ("min", "max", "log"), where.sub(key), key)
        if "min" not in value or "max" not in value:
            raise where.error(key, dict(value), "{min: LOW, max: HIGH} with both bounds")
        low, high = check(value["min"], f"{key}.min"), check(value["max"], f"{key}.max")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise where.error(f"{key}.log", log, "true or false")
        if not high > low:
            raise where.error(f"{key}.max", high, f"a number > min={low}")
        if log and low <= 0:
            raise where.error(f"{key}.min", low, "a positive number for a log range")
        return Distribution(low=low, high=high, log=log)
    if isinstance(value, list):
        if not value:
            raise where.error(key, value, "a non-empty list")
        return Distribution(tuple(check(v, f"{key}[{i}]") for i, v in enumerate(value)))
    return Distribution((check(value, key),))


def _known_names(module: str, attribute: str) -> tuple[str, ...] | None:
    """Names registered by another simgen module, or None while it cannot be imported."""
    import importlib

    try:
        names = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):  # module not available: skip this check
        return None
    return tuple(names)


def _tilt_acquisition(value, where: _Where) -> tuple[tuple[str, ...], str]:
    """``tilt.scheme`` (one scheme or a list: a grid axis) and ``tilt.dose_profile``."""
    schemes = _string_list(value.get("scheme", "sequential"), where, "tilt.scheme", TILT_SCHEMES)
    profile = field_value(value, "tilt.dose_profile", where)
    return schemes, profile


def _tilt(value, where: _Where) -> tuple[float, ...]:
    if isinstance(value, Mapping) and "angles" in value:
        _check_keys(value, ("angles", "scheme", "dose_profile"), where.sub("tilt"), "tilt")
        angles = value["angles"]
        if not isinstance(angles, list) or len(angles) < 2:
            raise where.error("tilt.angles", angles, "a list of at least 2 angles in degrees")
        out = tuple(_number(a, where, f"tilt.angles[{i}]") for i, a in enumerate(angles))
    else:
        _check_keys(
            value, ("start", "stop", "count", "scheme", "dose_profile"), where.sub("tilt"), "tilt"
        )
        for k in ("start", "stop", "count"):
            if k not in value:
                raise where.error(
                    "tilt", dict(value), "{start: DEG, stop: DEG, count: N} or {angles: [...]}"
                )
        start, stop = (
            _number(value["start"], where, "tilt.start"),
            _number(value["stop"], where, "tilt.stop"),
        )
        count = _number(value["count"], where, "tilt.count", integer=True)
        if count < 2:
            raise where.error("tilt.count", count, "an integer >= 2")
        if not stop > start:
            raise where.error("tilt.stop", stop, f"an angle > start={start}")
        out = tuple(float(a) for a in np.round(np.linspace(start, stop, count), 10))
    for i, a in enumerate(out):
        if not -90 < a < 90:
            raise where.error(f"tilt angle[{i}]", a, "an angle in (-90, 90) degrees")
    if len(set(out)) != len(out):
        raise where.error("tilt", list(out), "distinct angles")
    return out


def _doses(value, where: _Where) -> tuple[float, ...]:
    if isinstance(value, Mapping):
        _check_keys(value, ("min", "max", "count"), where.sub("doses"), "doses")
        if set(value) != {"min", "max", "count"}:
            raise where.error("doses", dict(value), "a list or {min, max, count} (log-spaced)")
        low = _number(value["min"], where, "doses.min", minimum=0)
        high = _number(value["max"], where, "doses.max", minimum=0)
        count = _number(
            value["count"], where, "doses.count", integer=True, minimum=1, exclusive=False
        )
        if not high >= low:
            raise where.error("doses.max", high, f"a dose >= min={low}")
        return tuple(float(f"{d:.6g}") for d in np.geomspace(low, high, count))
    values = [value] if not isinstance(value, list) else value
    if not values:
        raise where.error("doses", value, "a non-empty list of doses in e/Å² per projection")
    out = []
    for i, v in enumerate(values):
        try:
            out.append(_number(v, where, f"doses[{i}]", minimum=0))
        except ValueError:
            raise where.error(f"doses[{i}]", v, "a positive dose in e/Å² per projection") from None
    if len(set(out)) != len(out):
        raise where.error("doses", values, "distinct doses")
    return tuple(out)


def _noise_models(value, where: _Where) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, Mapping) or not value:
        raise where.error("noise_models", value, "a mapping {preset name: [noise spec, ...]}")
    known = _known_names("simgen.noise", "NOISE_MODELS")
    parse = None
    if known is not None:
        from simgen import noise as noise_module

        parse = getattr(noise_module, "parse_noise", None)
    out = []
    for preset, specs in value.items():
        if not isinstance(preset, str) or not preset or "/" in preset:
            raise where.error("noise_models", preset, "a preset name (string without '/')")
        if specs is None:
            specs = []
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise where.error(
                f"noise_models.{preset}",
                specs,
                'a list of noise specs like "poisson", "read:sigma=1.0"',
            )
        for i, spec in enumerate(specs):
            name = spec.split(":", 1)[0].strip()
            if known is not None and name not in known:
                raise where.error(
                    f"noise_models.{preset}[{i}]",
                    spec,
                    f"a noise model among {', '.join(known)}{did_you_mean(name, known)}",
                )
            if parse is not None:
                try:
                    parse(spec)
                except ValueError as exc:
                    raise where.error(
                        f"noise_models.{preset}[{i}]", spec, f"a valid noise spec ({exc})"
                    ) from None
        out.append((preset, tuple(specs)))
    return tuple(out)


def _damage_models(value, where: _Where, energy: float) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``damage_models: {preset: [damage spec, ...]}`` (an empty list: no damage)."""
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not value:
        raise where.error(
            "damage_models", value, "a mapping {preset name: [damage spec, ...]} (e.g. none: [])"
        )
    from simgen import damage

    out = []
    for preset, specs in value.items():
        if not isinstance(preset, str) or not preset or "/" in preset:
            raise where.error("damage_models", preset, "a preset name (string without '/')")
        if specs is None:
            specs = []
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise where.error(
                f"damage_models.{preset}",
                specs,
                'a list of damage specs like "surface_diffusion:rate=1e-4", "knock_on"',
            )
        for i, spec in enumerate(specs):
            try:
                damage.parse_damage(spec, energy=energy)
            except ValueError as exc:
                raise where.error(
                    f"damage_models.{preset}[{i}]",
                    spec,
                    f"a damage spec with a model among {', '.join(damage.DAMAGE_MODELS)} ({exc})",
                ) from None
        out.append((preset, tuple(specs)))
    return tuple(out)


def _split(value, where: _Where) -> Split:
    if value is None:
        return Split()
    _check_keys(value, section_keys("split"), where.sub("split"), "split")
    fractions_in = value.get("fractions", {"train": 1.0})
    _check_keys(fractions_in, SPLIT_NAMES, where.sub("split.fractions"), "split.fractions")
    fractions = tuple(
        (k, _number(v, where, f"split.fractions.{k}", minimum=0, exclusive=False))
        for k, v in fractions_in.items()
    )
    total = sum(f for _, f in fractions)
    if not fractions or abs(total - 1.0) > 1e-6:
        raise where.error(
            "split.fractions", dict(fractions_in), f"fractions summing to 1 (they sum to {total:g})"
        )
    hold_out = []
    hold_in = value.get("hold_out", {}) or {}
    _check_keys(hold_in, SPLIT_NAMES, where.sub("split.hold_out"), "split.hold_out")
    for split_name, rules in hold_in.items():
        _check_keys(
            rules,
            HOLD_OUT_FIELDS,
            where.sub(f"split.hold_out.{split_name}"),
            f"split.hold_out.{split_name}",
        )
        parsed = []
        for field_name, held in rules.items():
            held = held if isinstance(held, list) else [held]
            if field_name == "dose":
                held = [
                    _number(h, where, f"split.hold_out.{split_name}.dose", minimum=0) for h in held
                ]
            parsed.append((field_name, tuple(held)))
        hold_out.append((split_name, tuple(parsed)))
    return Split(fractions=fractions, hold_out=tuple(hold_out))


def _storage(value, where: _Where) -> StorageSpec:
    if value is None:
        return StorageSpec()
    _check_keys(value, section_keys("storage"), where.sub("storage"), "storage")
    level = field_value(value, "storage.compression_level", where)
    lossy_in = value.get("lossy", {}) or {}
    _check_keys(lossy_in, STORE_ARRAYS, where.sub("storage.lossy"), "storage.lossy")
    lossy = []
    for array, codec in lossy_in.items():
        parse_lossy(codec, f"storage.lossy.{array}", where)
        lossy.append((array, codec))
    return StorageSpec(compression_level=level, lossy=tuple(lossy))


#: A dataset name is also a file name (``<name>.zarr``): no separators, no '..', no leading dot.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _parse_dataset(name: str, data, where: _Where) -> DatasetSpec:
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ValueError(
            f"{where.source}: dataset name {name!r}: expected a simple name (letters, digits, "
            "'.', '_', '-'; starting with a letter or digit), usable as a file name"
        )
    _check_keys(data, section_keys(""), where, "a dataset")
    for key in required_keys(""):
        if key not in data:
            raise ValueError(f"{where.source}: dataset {name!r}: missing key {key!r}")
    description = field_value(data, "description", where)
    seed = field_value(data, "seed", where)
    sampling = field_value(data, "sampling", where)
    size = field_value(data, "size", where)

    microscope_in = data.get("microscope", {}) or {}
    _check_keys(microscope_in, section_keys("microscope"), where.sub("microscope"), "microscope")
    microscope = {
        k: field_value(microscope_in, f"microscope.{k}", where) for k in section_keys("microscope")
    }
    if not microscope["detector_outer"] > microscope["detector_inner"] >= 0:
        raise where.error(
            "microscope.detector_outer",
            microscope["detector_outer"],
            f"mrad > detector_inner={microscope['detector_inner']} >= 0",
        )

    mode = field_value(data, "mode", where)
    angles = _tilt(data["tilt"], where)
    tilt_schemes, dose_profile = _tilt_acquisition(data["tilt"], where)

    particles = data["particles"]
    _check_keys(particles, section_keys("particles"), where.sub("particles"), "particles")
    for key in required_keys("particles"):
        if key not in particles:
            raise ValueError(f"{where.source}: dataset {name!r}: missing key 'particles.{key}'")
    morphologies = _string_list(
        particles["morphology"],
        where,
        "particles.morphology",
        _known_names("simgen.structures", "MORPHOLOGIES"),
    )
    compositions = _string_list(particles["composition"], where, "particles.composition")
    _check_compositions(compositions, where)
    size_nm = _distribution(
        particles["size_nm"], where, "particles.size_nm", minimum=0, exclusive=True
    )
    orientations = _string_list(
        particles.get("orientation", "random"), where, "particles.orientation", ORIENTATIONS
    )
    thermal_sigma = _distribution(
        particles.get("thermal_sigma", 0.0),
        where,
        "particles.thermal_sigma",
        minimum=0,
        exclusive=False,
        maximum=1.0,
    )
    vacancy_fraction = _distribution(
        particles.get("vacancy_fraction", 0.0),
        where,
        "particles.vacancy_fraction",
        minimum=0,
        exclusive=False,
        maximum=0.5,
    )

    # The particle must fit the volume at every tilt: its diameter may not exceed the side.
    side = (size - 1) * sampling
    if size_nm.maximum * 10.0 >= side:
        raise where.error(
            "particles.size_nm",
            size_nm.to_yaml(),
            f"diameters < {side / 10:.2f} nm, the volume side ({size} voxels × {sampling} Å); raise size or lower size_nm",
        )

    doses = _doses(data["doses"], where)
    noise_models = _noise_models(data["noise_models"], where)
    damage_models = _damage_models(data.get("damage_models"), where, microscope["energy"])

    recon_in = data.get("reconstruction", {}) or {}
    _check_keys(
        recon_in, section_keys("reconstruction"), where.sub("reconstruction"), "reconstruction"
    )
    recon = field_value(recon_in, "reconstruction.method", where)
    iterations = field_value(recon_in, "reconstruction.iterations", where)
    align = field_value(recon_in, "reconstruction.align", where)
    target_in = data.get("target", {}) or {}
    _check_keys(target_in, section_keys("target"), where.sub("target"), "target")
    target_sigma = field_value(target_in, "target.sigma", where)

    samples = data["samples"]
    _check_keys(samples, section_keys("samples"), where.sub("samples"), "samples")
    replicas, count, grid_axes = 0, 0, ("morphology", "composition", "dose", "noise_model")
    if "grid" in samples:
        grid = samples["grid"] or {}
        _check_keys(grid, section_keys("samples.grid"), where.sub("samples.grid"), "samples.grid")
        grid_axes = _string_list(
            grid.get("axes", list(grid_axes)), where, "samples.grid.axes", GRID_AXES
        )
        replicas = field_value(grid, "samples.grid.replicas", where)
        if "damage_model" in grid_axes and not damage_models:
            raise where.error(
                "samples.grid.axes",
                list(grid_axes),
                "damage_model as an axis only with damage_models",
            )
        if "size_nm" in grid_axes and size_nm.is_range:
            raise where.error(
                "samples.grid.axes",
                list(grid_axes),
                "size_nm as a grid axis only with a list of sizes",
            )
    if "random" in samples:
        random_in = samples["random"] or {}
        _check_keys(
            random_in, section_keys("samples.random"), where.sub("samples.random"), "samples.random"
        )
        count = field_value(random_in, "samples.random.count", where)
    if not replicas and not count:
        raise where.error("samples", dict(samples), "grid: {replicas: N} and/or random: {count: N}")
    same_in = samples.get("same_structure_across") or []
    same = (
        _string_list(
            same_in,
            where,
            "samples.same_structure_across",
            ("dose", "noise_model", "tilt_scheme", "damage_model"),
        )
        if same_in
        else ()
    )
    if same and not replicas:
        raise where.error(
            "samples.same_structure_across",
            list(same),
            "a grid (random draws never share particles)",
        )
    for axis in same:
        if axis not in grid_axes:
            raise where.error(
                "samples.same_structure_across",
                list(same),
                f"axes of the grid ({', '.join(grid_axes)})",
            )

    order = field_value(samples, "samples.order", where)
    split = _split(data.get("split"), where)
    for split_name, rules in split.hold_out:
        for field_name, held in rules:
            pool = {
                "morphology": morphologies,
                "composition": compositions,
                "dose": doses,
                "noise_model": [n for n, _ in noise_models],
            }[field_name]
            for h in held:
                if h not in pool:
                    raise where.error(
                        f"split.hold_out.{split_name}.{field_name}",
                        h,
                        f"one of this dataset's values: {', '.join(map(str, pool))}",
                    )
    storage = _storage(data.get("storage"), where)

    return DatasetSpec(
        name=name,
        description=description.strip(),
        seed=seed,
        sampling=sampling,
        size=size,
        angles=angles,
        morphologies=morphologies,
        compositions=compositions,
        doses=doses,
        noise_models=noise_models,
        size_nm=size_nm,
        thermal_sigma=thermal_sigma,
        vacancy_fraction=vacancy_fraction,
        orientations=orientations,
        microscope=tuple(microscope.items()),
        mode=mode,
        recon=recon,
        iterations=iterations,
        align=align,
        target_sigma=target_sigma,
        grid_axes=grid_axes,
        order=order,
        replicas=replicas,
        count=count,
        same_structure_across=same,
        split=split,
        storage=storage,
        tilt_schemes=tilt_schemes,
        dose_profile=dose_profile,
        damage_models=damage_models,
    )


def _check_compositions(compositions: Sequence[str], where: _Where) -> None:
    """Check composition names with simgen.structures.parse_composition when it is available."""
    try:
        from simgen.structures import parse_composition
    except ImportError:
        return
    for i, text in enumerate(compositions):
        try:
            parse_composition(text)
        except ValueError as exc:
            raise where.error(
                f"particles.composition[{i}]", text, f"a valid composition ({exc})"
            ) from None


# --------------------------------------------------------------------------------------------
# Catalogue


class _DuplicateKeyError(ValueError):
    pass


_LOADER = None


def _unique_key_loader():
    """A ``yaml.SafeLoader`` that refuses a key given twice in one mapping, at any level.

    PyYAML keeps the last of two equal keys silently, so a dataset pasted twice under one name
    would replace the first without a word.
    """
    global _LOADER
    if _LOADER is None:
        import yaml

        class UniqueKeyLoader(yaml.SafeLoader):
            def construct_mapping(self, node, deep=False):
                first_line: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # '<<: *anchor' merges; explicit keys override merged ones
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        seen = key in first_line
                    except TypeError:  # an unhashable key: SafeLoader reports it
                        continue
                    if seen:
                        raise _DuplicateKeyError(
                            f"line {line}: key {key!r} given twice (first at line "
                            f"{first_line[key]}); expected each key once in a mapping"
                        )
                    first_line[key] = line
                return super().construct_mapping(node, deep)

        _LOADER = UniqueKeyLoader
    return _LOADER


def _read_yaml(path: Path) -> Mapping:
    import yaml

    with open(path, encoding="utf-8") as fh:
        try:
            data = yaml.load(fh, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
        except _DuplicateKeyError as exc:
            raise ValueError(f"{path}: {exc}") from None
        except yaml.YAMLError as exc:
            reason = " ".join(str(exc).split())
            raise ValueError(f"{path}: not valid YAML ({reason})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("datasets"), Mapping):
        raise ValueError(f"{path}: expected a top-level mapping 'datasets: {{name: {{...}}}}'")
    extra = [k for k in data if k not in ("datasets", "defaults", "version")]
    if extra:
        raise ValueError(
            f"{path}: unknown top-level key {extra[0]!r}; allowed: datasets, defaults, version"
        )
    return data


def load_catalog(path: str | Path | None = None) -> dict[str, DatasetSpec]:
    """Read and validate a catalogue; ``ValueError`` lists every broken dataset.

    Parameters
    ----------
    path
        YAML file; default ``./datasets.yaml``, else the catalogue shipped with the package.
    """
    path = Path(path) if path is not None else default_catalog_path()
    if not path.is_file():
        raise FileNotFoundError(f"config={str(path)!r}: no such catalogue file")
    data = _read_yaml(path)
    catalog, problems = {}, []
    for name, entry in data["datasets"].items():
        try:
            catalog[name] = DatasetSpec.from_dict(name, entry, source=str(path))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("\n".join(problems))
    return catalog


def get_dataset(name: str, path: str | Path | None = None) -> DatasetSpec:
    """One dataset of the catalogue, validated; ``KeyError``-like ``ValueError`` if unknown."""
    path = Path(path) if path is not None else default_catalog_path()
    if not path.is_file():
        raise FileNotFoundError(f"config={str(path)!r}: no such catalogue file")
    data = _read_yaml(path)
    names = list(data["datasets"])
    if name not in names:
        raise ValueError(
            f"dataset={name!r}: not in {path}{did_you_mean(name, names)}; "
            f"available: {', '.join(names)}"
        )
    return DatasetSpec.from_dict(name, data["datasets"][name], source=str(path))


def validate_catalog(path: str | Path | None = None, *, build: bool = True) -> list[str]:
    """Every problem in a catalogue (empty list = valid).

    Besides the schema checks of :func:`load_catalog`, with ``build`` the largest particle of
    every morphology × composition is built and placed in the volume (ASE only; seconds), which
    catches particles that do not fit the volume at every tilt.
    """
    path = Path(path) if path is not None else default_catalog_path()
    if not path.is_file():
        return [f"config={str(path)!r}: no such catalogue file"]
    try:
        data = _read_yaml(path)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    for name, entry in data["datasets"].items():
        try:
            spec = DatasetSpec.from_dict(name, entry, source=str(path))
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if build:
            problems.extend(_check_particles_fit(spec, str(path)))
    return problems


def _check_particles_fit(spec: DatasetSpec, source: str) -> list[str]:
    try:
        from simgen import structures
    except ImportError:
        return []
    problems = []
    size_nm = spec.size_nm.maximum
    for morphology, composition in itertools.product(spec.morphologies, spec.compositions):
        rng = np.random.default_rng(0)
        try:
            atoms = structures.build_particle(
                morphology, composition, size_nm, rng=rng, orientation="random"
            )
            structures.place_in_volume(atoms, spec.size, spec.sampling)
        except ValueError as exc:
            problems.append(
                f"{source}: dataset {spec.name!r}: particles {morphology}/{composition} at size_nm={size_nm:g} "
                f"in size={spec.size} at sampling={spec.sampling}: {exc}"
            )
    return problems


def spec_hash(spec_dict: Mapping) -> str:
    """Stable sha256 of a resolved spec dict (used to refuse resuming into a different spec)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True, default=str).encode()).hexdigest()


def spec_dict(spec: DatasetSpec) -> dict:
    """``{"name": ..., **spec.to_dict()}`` — what a store records in its attributes."""
    return {"name": spec.name, **spec.to_dict()}
