"""One catalogue entry, parsed: the typed pieces of a dataset spec and the YAML parsers.

:func:`parse_entry` turns one ``datasets.yaml`` entry into the fields of a
:class:`simgen.catalog.dataset_spec.DatasetSpec`. The scalar keys are declared in
:mod:`simgen.catalog.validation`; the structured ones (tilt, doses, noise and damage presets, particle
distributions, split, storage) are parsed here into :class:`Distribution`, :class:`Split` and
:class:`StorageSpec`. A broken entry raises ``ValueError`` naming the file, the dataset, the key,
the value and what is allowed (unknown keys get a "did you mean" suggestion).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from simgen.catalog.validation import Where as _Where
from simgen.catalog.validation import check_keys as _check_keys
from simgen.catalog.validation import (
    did_you_mean,
    field_value,
    required_keys,
    section_keys,
)
from simgen.catalog.validation import number as _number
from simgen.catalog.validation import string_list as _string_list
from simgen.registry import Spec
from simgen.store.codecs import parse_lossy
from simgen.store.schema import LOSSY_ARRAYS

__all__ = [
    "Distribution",
    "Split",
    "StorageSpec",
    "parse_entry",
    "GRID_AXES",
    "SPLIT_NAMES",
    "TILT_SCHEMES",
    "HOLD_OUT_FIELDS",
    "ORIENTATIONS",
    "STORE_ARRAYS",
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


def _preset_specs(key: str, value: Mapping, where: _Where, expected: str, parse_one) -> tuple:
    """``{preset: [spec, ...]}`` of ``key`` (noise_models, damage_models): each preset name and
    list checked, each spec parsed by ``parse_one(where_key, spec)``."""
    out = []
    for preset, specs in value.items():
        if not isinstance(preset, str) or not preset or "/" in preset:
            raise where.error(key, preset, "a preset name (string without '/')")
        if specs is None:
            specs = []
        if not isinstance(specs, list) or not all(isinstance(s, (str, Spec)) for s in specs):
            raise where.error(f"{key}.{preset}", specs, expected)
        parsed = tuple(parse_one(f"{key}.{preset}[{i}]", spec) for i, spec in enumerate(specs))
        out.append((preset, parsed))
    return tuple(out)


def _noise_models(value, where: _Where) -> tuple[tuple[str, tuple[Spec, ...]], ...]:
    """``noise_models: {preset: [noise spec, ...]}``, each spec parsed (a :class:`Spec`: the
    text as written and its model)."""
    if not isinstance(value, Mapping) or not value:
        raise where.error("noise_models", value, "a mapping {preset name: [noise spec, ...]}")
    from simgen.physics.noise import NOISE_REGISTRY

    known = NOISE_REGISTRY.names()

    def parse_one(key: str, spec) -> Spec:
        name = str(spec).split(":", 1)[0].strip()
        if name not in known:
            raise where.error(
                key, spec, f"a noise model among {', '.join(known)}{did_you_mean(name, known)}"
            )
        try:
            return NOISE_REGISTRY.parse_spec(spec)
        except ValueError as exc:
            raise where.error(key, spec, f"a valid noise spec ({exc})") from None

    return _preset_specs(
        "noise_models",
        value,
        where,
        'a list of noise specs like "poisson", "read:sigma=1.0"',
        parse_one,
    )


def _damage_models(value, where: _Where, energy: float) -> tuple[tuple[str, tuple[Spec, ...]], ...]:
    """``damage_models: {preset: [damage spec, ...]}`` (an empty list: no damage), each spec
    parsed with the dataset's beam ``energy`` (eV) as the models' default."""
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not value:
        raise where.error(
            "damage_models", value, "a mapping {preset name: [damage spec, ...]} (e.g. none: [])"
        )
    from simgen import damage

    def parse_one(key: str, spec) -> Spec:
        try:
            return damage.DAMAGE_REGISTRY.parse_spec(spec, energy=energy)
        except ValueError as exc:
            raise where.error(
                key,
                spec,
                f"a damage spec with a model among {', '.join(damage.DAMAGE_MODELS)} ({exc})",
            ) from None

    return _preset_specs(
        "damage_models",
        value,
        where,
        'a list of damage specs like "surface_diffusion:rate=1e-4", "knock_on"',
        parse_one,
    )


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


def parse_entry(name: str, data, where: _Where) -> dict:
    """The fields of a :class:`simgen.catalog.dataset_spec.DatasetSpec` from one catalogue entry
    (``name: {...}``), every key checked; ``ValueError`` names source, dataset, key and value."""
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

    return dict(
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
