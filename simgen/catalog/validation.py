"""Declared validation of the dataset catalogue (``datasets.yaml``).

Every key of a catalogue entry is declared once in :data:`FIELDS`: its section, type, allowed
range or choices, default, unit and one line of doc. :func:`section_keys` gives the allowed keys
of a section (and so the "unknown key ... did you mean" errors), :func:`field_value` checks a
scalar value against its declaration. Keys whose value has a structure of its own (``tilt``,
``doses``, ``noise_models``, a size distribution, ...) are declared ``kind="custom"`` and checked
by the parser of :mod:`simgen.catalog`.

Every error is one line: ``"{source}: dataset {name!r}: {key}={value!r}: expected {what}"``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from simgen.registry import ALIGNMENT_METHODS, IMAGING_MODES, RECONSTRUCTION_METHODS

__all__ = [
    "Where",
    "Field",
    "FIELDS",
    "REQUIRED",
    "field",
    "section_keys",
    "required_keys",
    "field_value",
    "check_keys",
    "number",
    "string_list",
    "did_you_mean",
]

#: The extension points, from their one definition (:mod:`simgen.registry`).
MODES = IMAGING_MODES
RECON_METHODS = RECONSTRUCTION_METHODS
ALIGN_METHODS = ALIGNMENT_METHODS
#: ``reconstruction.align``: a method or ``"auto"`` (``projection_matching_split`` for a noise
#: model with geometric errors, else none; :func:`simgen.catalog.planning.resolve_align`).
ALIGN_CHOICES = ("auto", *ALIGN_METHODS)
DOSE_PROFILES = ("uniform", "cos")
SAMPLE_ORDERS = ("grid", "shuffled")


class Where:
    """Where in the catalogue a value came from, for error messages."""

    def __init__(self, source: str, dataset: str, prefix: str = "") -> None:
        self.source, self.dataset, self.prefix = source, dataset, prefix

    def key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def sub(self, key: str) -> Where:
        return Where(self.source, self.dataset, f"{self.prefix}{key}.")

    def error(self, key: str, value, expected: str) -> ValueError:
        return ValueError(
            f"{self.source}: dataset {self.dataset!r}: {self.key(key)}={value!r}: expected {expected}"
        )


def did_you_mean(value, allowed: Sequence[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest allowed name, or ``""``."""
    close = difflib.get_close_matches(str(value), list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(data, allowed: Sequence[str], where: Where, what: str) -> None:
    """``data`` is a mapping whose keys are all in ``allowed``."""
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{where.source}: dataset {where.dataset!r}: {where.prefix.rstrip('.') or what}={data!r}: expected a mapping"
        )
    for key in data:
        if key not in allowed:
            raise ValueError(
                f"{where.source}: dataset {where.dataset!r}: unknown key {where.key(str(key))!r}"
                f"{did_you_mean(key, allowed)}; allowed keys in {what}: {', '.join(allowed)}"
            )


def number(value, where: Where, key: str, *, minimum=None, exclusive=True, integer=False) -> float:
    """A finite number (an integer with ``integer``), above ``minimum`` if given."""
    kind = "an integer" if integer else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not isinstance(value, int))
    ):
        if isinstance(value, str) and not integer:
            try:  # YAML 1.1 reads "1e4" (no dot) as a string
                value = float(value)
            except ValueError:
                raise where.error(key, value, kind) from None
        else:
            raise where.error(key, value, kind)
    if not math.isfinite(value):
        raise where.error(key, value, "a finite number")
    if minimum is not None:
        if exclusive and not value > minimum:
            raise where.error(key, value, f"{kind} > {minimum}")
        if not exclusive and not value >= minimum:
            raise where.error(key, value, f"{kind} >= {minimum}")
    return int(value) if integer else float(value)


def string_list(
    value, where: Where, key: str, allowed: Sequence[str] | None = None
) -> tuple[str, ...]:
    """A name or a non-empty list of distinct names (each in ``allowed`` if given)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise where.error(key, value, "a name or a non-empty list of names")
    if len(set(items)) != len(items):
        raise where.error(key, value, "no repeated names")
    if allowed is not None:
        for item in items:
            if item not in allowed:
                raise where.error(
                    key, item, f"one of {', '.join(allowed)}{did_you_mean(item, allowed)}"
                )
    return tuple(items)


#: Default of a key that must be given.
REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One key of a catalogue entry.

    Attributes
    ----------
    key
        Dotted key (``"microscope.energy"``); its section is everything before the last dot.
    kind
        ``"int"``, ``"float"``, ``"choice"``, ``"text"`` (a non-empty string), ``"section"`` (a
        mapping of the keys declared under it) or ``"custom"`` (checked by its own parser).
    default
        Value when the key is absent (:data:`REQUIRED`: it must be given).
    minimum, exclusive, maximum
        Allowed range of a number.
    choices, hint
        Allowed values of a choice; ``hint`` adds "did you mean" to its error.
    expected
        Wording of a range or choice error when the generic one would not say it best.
    unit, doc
        Unit and one line of meaning (``simgen validate`` and the docs print them).
    """

    key: str
    kind: str
    default: object = None
    minimum: float | None = None
    exclusive: bool = True
    maximum: float | None = None
    choices: tuple = ()
    hint: bool = False
    expected: str | None = None
    unit: str = ""
    doc: str = ""

    @property
    def section(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.key.rpartition(".")[2]


_F = Field
#: Every key of a catalogue entry, section by section, in the order the errors list them.
FIELDS: tuple[Field, ...] = (
    _F("description", "text", REQUIRED, doc="what the dataset is for"),
    _F("seed", "int", REQUIRED, minimum=0, exclusive=False, doc="seed of every random draw"),
    _F("sampling", "float", REQUIRED, minimum=0, unit="Å", doc="voxel size = pixel size"),
    _F("size", "int", REQUIRED, minimum=8, exclusive=False, unit="voxels",
       doc="side of the cubic volume and of each projection"),
    _F("microscope", "section", {}, doc="STEM settings (simgen.physics.microscope.Microscope)"),
    _F("mode", "choice", "linear", choices=MODES, doc="image formation model"),
    _F("tilt", "custom", REQUIRED, doc="{start, stop, count} or {angles: [...]}; scheme, dose_profile"),
    _F("particles", "section", REQUIRED, doc="what particles are built"),
    _F("doses", "custom", REQUIRED, unit="e/Å²", doc="list or {min, max, count} (log-spaced), per projection"),
    _F("noise_models", "custom", REQUIRED, doc="{preset: [noise spec, ...]} (simgen list noise)"),
    _F("damage_models", "custom", None, doc="{preset: [damage spec, ...]} (simgen list damage)"),
    _F("reconstruction", "section", {}, doc="how the volume is reconstructed"),
    _F("target", "section", {}, doc="the ideal volume"),
    _F("split", "section", None, doc="train/val/test assignment"),
    _F("samples", "section", REQUIRED, doc="grid and/or random draws"),
    _F("storage", "section", None, doc="Zarr compression"),
    # microscope
    _F("microscope.energy", "float", 200e3, minimum=0, expected="a positive number", unit="eV",
       doc="beam energy"),
    _F("microscope.semiangle_cutoff", "float", 25.0, minimum=0, expected="a positive number",
       unit="mrad", doc="probe convergence semi-angle"),
    _F("microscope.detector_inner", "float", 60.0, unit="mrad", doc="HAADF inner angle"),
    _F("microscope.detector_outer", "float", 200.0, minimum=0, expected="a positive number",
       unit="mrad", doc="HAADF outer angle (> inner)"),
    _F("microscope.defocus", "float", 0.0, unit="Å", doc="probe defocus"),
    _F("microscope.cs", "float", 0.0, unit="Å", doc="spherical aberration"),
    # tilt
    _F("tilt.start", "custom", unit="degrees", doc="first angle (with stop, count)"),
    _F("tilt.stop", "custom", unit="degrees", doc="last angle"),
    _F("tilt.count", "custom", doc="number of angles (>= 2)"),
    _F("tilt.angles", "custom", unit="degrees", doc="explicit angles, in (-90, 90)"),
    _F("tilt.scheme", "custom", "sequential", doc="acquisition order; a list is a grid axis"),
    _F("tilt.dose_profile", "choice", "uniform", choices=DOSE_PROFILES, hint=True,
       doc="dose over the series"),
    # particles
    _F("particles.morphology", "custom", REQUIRED, doc="shape names (simgen list morphologies)"),
    _F("particles.composition", "custom", REQUIRED, doc="compositions, e.g. L10:FePt"),
    _F("particles.size_nm", "custom", REQUIRED, unit="nm", doc="diameter: value, list or {min, max[, log]}"),
    _F("particles.orientation", "custom", "random", doc="random or none"),
    _F("particles.thermal_sigma", "custom", 0.0, unit="Å", doc="thermal displacement, 0..1"),
    _F("particles.vacancy_fraction", "custom", 0.0, doc="fraction of atoms removed, 0..0.5"),
    # reconstruction
    _F("reconstruction.method", "choice", "sirt", choices=RECON_METHODS, doc="ASTRA algorithm"),
    _F("reconstruction.iterations", "int", 50, minimum=1, exclusive=False, doc="iterations"),
    _F("reconstruction.align", "choice", "auto", choices=ALIGN_CHOICES, hint=True,
       doc="tilt-series alignment (simgen.reconstruction.alignment); auto: by the noise models"),
    # target
    _F("target.sigma", "float", 0.35, minimum=0, unit="Å", doc="Gaussian width of each atom"),
    # samples
    _F("samples.grid", "section", None, doc="every combination of the axes × replicas"),
    _F("samples.random", "section", None, doc="independent random draws"),
    _F("samples.same_structure_across", "custom", (), doc="grid axes that share a particle"),
    _F("samples.order", "choice", "grid", choices=SAMPLE_ORDERS,
       expected="grid (axes nested in order) or shuffled (seeded permutation)",
       doc="plan order; shuffled makes any prefix representative"),
    _F("samples.grid.axes", "custom", ("morphology", "composition", "dose", "noise_model"),
       doc="grid axes (simgen.catalog.GRID_AXES)"),
    _F("samples.grid.replicas", "int", 1, minimum=1, exclusive=False, doc="samples per cell"),
    _F("samples.random.count", "int", None, minimum=1, exclusive=False, doc="random draws"),
    # split
    _F("split.fractions", "custom", {"train": 1.0}, doc="{train, val, test: fraction}, summing to 1"),
    _F("split.hold_out", "custom", {}, doc="{split: {field: values}} kept out of the others"),
    # storage
    _F("storage.compression_level", "int", 3, minimum=1, exclusive=False, maximum=22,
       expected="a Zstd level in 1..22", doc="Zstd level"),
    _F("storage.lossy", "custom", {}, doc="{array: float16 | bitround:K} (simgen list codecs)"),
)  # fmt: skip

_BY_KEY = {f.key: f for f in FIELDS}


def field(key: str) -> Field:
    """The declaration of ``key``."""
    return _BY_KEY[key]


def section_keys(section: str) -> tuple[str, ...]:
    """The keys allowed in ``section`` (``""``: a dataset entry), in declaration order."""
    return tuple(f.name for f in FIELDS if f.section == section)


def required_keys(section: str) -> tuple[str, ...]:
    """The keys ``section`` must give."""
    return tuple(f.name for f in FIELDS if f.section == section and f.default is REQUIRED)


def field_value(data: Mapping, key: str, where: Where):
    """The value of scalar ``key`` in its section's mapping ``data`` (its default if absent),
    checked against its declaration; ``where`` is the dataset's (keys are full dotted keys)."""
    f = _BY_KEY[key]
    value = data.get(f.name, f.default) if f.default is not REQUIRED else data[f.name]
    if f.kind == "text":
        if not isinstance(value, str) or not value.strip():
            raise where.error(key, value, "a non-empty string")
        return value
    if f.kind == "choice":
        if value not in f.choices:
            expected = f.expected or f"one of {', '.join(f.choices)}"
            raise where.error(
                key, value, expected + (did_you_mean(value, f.choices) if f.hint else "")
            )
        return value
    if f.kind not in ("int", "float"):
        raise TypeError(f"{key}: a {f.kind} key has no scalar check")
    integer = f.kind == "int"
    if f.expected is not None and f.maximum is None:
        # the range has its own wording: checked after the type
        x = number(value, where, key, integer=integer)
        if f.minimum is not None and not (x > f.minimum if f.exclusive else x >= f.minimum):
            raise where.error(key, x, f.expected)
        return x
    x = number(value, where, key, minimum=f.minimum, exclusive=f.exclusive, integer=integer)
    if f.maximum is not None and x > f.maximum:
        raise where.error(key, x, f.expected or f"a number <= {f.maximum}")
    return x
