"""One registry of named, parameterised models: noise models, damage models, codecs, morphologies.

Each model declares its parameters once (:class:`Param`: name, default, unit, allowed range or
choices, one line of doc), as dataclass fields made with :func:`param` or read from a
function's keyword arguments. A :class:`Registry` maps names to models; :meth:`Registry.parse`
is the one parser of the ``name:key=value,...`` syntax shared by ``--noise read:sigma=1.5`` on
the command line and ``"knock_on:energy=300e3"`` in ``datasets.yaml``; :meth:`Registry.describe`
is what ``simgen list`` and the CLIs' ``--help`` print. Range checks stay with the model (its
``__post_init__``), so a model built in code is checked the same way as one parsed from text.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "Param",
    "ModelEntry",
    "Registry",
    "Spec",
    "REGISTRIES",
    "param",
    "params_of",
    "split_spec",
    "parameter_docs",
]


def split_spec(text: str) -> tuple[str, list[tuple[str, bool, str]]]:
    """``"name:k=v,k2=v2"`` -> ``("name", [("k", True, "v"), ("k2", True, "v2")])``.

    Whitespace around names, keys and values is dropped and empty items are skipped; the middle
    element says whether the item had an ``=`` (so that the caller can name a missing value).
    """
    name, _, rest = text.strip().partition(":")
    items = []
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        items.append((key.strip(), bool(sep), raw.strip()))
    return name.strip(), items


def parameter_docs(obj) -> dict[str, str]:
    """``{parameter: first line of its description}`` from the numpydoc ``Parameters`` section."""
    lines = (inspect.getdoc(obj) or "").splitlines()
    docs: dict[str, str] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Parameters") + 2
    except StopIteration:
        return docs
    current = None
    for line in lines[start:]:
        if not line.strip():
            continue
        if not line.startswith(" "):
            if set(line.strip()) == {"-"}:  # the next section's underline
                docs.pop(current, None)
                break
            current = line.split(":")[0].strip()
            for name in current.split(","):
                docs[name.strip()] = ""
            current = current.split(",")[-1].strip()
        elif current is not None and not docs[current]:
            docs[current] = line.strip()
    return docs


@dataclass(frozen=True)
class Param:
    """One parameter of a model.

    ``kind`` is float, int or str; ``prefix`` marks a family of keys ``<name>_<X>`` collected
    into one dict (``threshold_Pt=30`` -> ``thresholds={"Pt": 30}``; ``name`` is then the
    prefix and ``field`` the dict's keyword).
    """

    name: str
    default: object = None
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""
    kind: type = float
    choices: tuple = ()
    field: str | None = None
    prefix: bool = False
    placeholder: str = "X"

    @property
    def key(self) -> str:
        """The key as written in a spec."""
        return f"{self.name}_<{self.placeholder}>" if self.prefix else self.name

    def expected(self) -> str:
        """What a value must be, in words (with the unit)."""
        if self.kind is str:
            text = f"one of {', '.join(self.choices)}" if self.choices else "a name"
        else:
            bounds = []
            if self.minimum is not None:
                bounds.append(f">= {self.minimum}")
            if self.maximum is not None:
                bounds.append(f"<= {self.maximum}")
            text = ("an integer" if self.kind is int else "a finite number") + (
                " " + " and ".join(bounds) if bounds else ""
            )
        return text + (f" ({self.unit})" if self.unit else "")

    def convert(self, raw: str):
        """The value of ``raw`` (text), or ``ValueError`` (without context) if it has none."""
        if self.kind is str:
            return raw
        value = float(raw)
        if self.kind is int:
            if not math.isfinite(value) or value != int(value):
                raise ValueError(raw)
            return int(value)
        return value


def param(
    default,
    unit: str = "",
    doc: str = "",
    minimum: float | None = 0.0,
    maximum: float | None = None,
    choices: tuple = (),
    placeholder: str = "X",
):
    """A dataclass field declaring a model parameter (read back by :func:`params_of`); a dict
    default declares a family of keys ``<name>_<placeholder>`` (see :class:`Param`)."""
    metadata = {
        "unit": unit,
        "doc": doc,
        "min": minimum,
        "max": maximum,
        "choices": choices,
        "placeholder": placeholder,
    }
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=type(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_KINDS = {"int": int, "str": str, "float": float}


def params_of(obj) -> tuple[Param, ...]:
    """The declared parameters of a model class (dataclass fields) or function (keyword-only
    arguments); docs come from :func:`param` metadata, else from the numpydoc docstring."""
    docs = parameter_docs(obj)
    out = []
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            meta = f.metadata
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            prefix = isinstance(default, dict)
            out.append(
                Param(
                    name=f.name.rstrip("s") if prefix else f.name,
                    default=default,
                    unit=meta.get("unit", ""),
                    minimum=meta.get("min"),
                    maximum=meta.get("max"),
                    doc=meta.get("doc") or docs.get(f.name, ""),
                    kind=_KINDS.get(str(f.type), float),
                    choices=tuple(meta.get("choices", ())),
                    field=f.name,
                    prefix=prefix,
                    placeholder=meta.get("placeholder", "X"),
                )
            )
        return tuple(out)
    for p in inspect.signature(obj).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        kind = type(default) if type(default) in (int, str) else float
        out.append(Param(p.name, default, doc=docs.get(p.name, ""), kind=kind, field=p.name))
    return tuple(out)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its name, how to build it, its parameters and a one-line summary."""

    name: str
    factory: Callable
    params: tuple[Param, ...]
    summary: str = ""


class Spec:
    """A parsed spec: the text as written and the model it builds.

    The text is kept as given (``"read:sigma=1"`` stays ``"read:sigma=1"``, not the model's
    canonical ``"read:sigma=1.0"``): it is what catalogues, ``SampleSpec.to_dict()`` and stores
    record, so a spec that travels parsed renders back to exactly the bytes it was read from.
    A spec compares and hashes as its text (also equal to the plain string), so tuples of specs
    behave like the tuples of strings they replace.

    Parameters
    ----------
    text
        The spec, ``"name"`` or ``"name:key=value,..."``.
    model
        The model :meth:`Registry.parse` built from ``text``.
    """

    __slots__ = ("text", "model")

    def __init__(self, text: str, model) -> None:
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "model", model)

    def __setattr__(self, name, value):
        raise AttributeError(f"Spec is immutable: cannot set {name!r}")

    @property
    def name(self) -> str:
        """The model's name (the text before ``:``)."""
        return split_spec(self.text)[0]

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Spec({self.text!r})"

    def __eq__(self, other) -> bool:
        if isinstance(other, Spec):
            return self.text == other.text
        if isinstance(other, str):
            return self.text == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.text)

    def __reduce__(self):
        return (Spec, (self.text, self.model))


class Registry:
    """Named models of one kind (``"noise"``, ``"damage"``, ``"codec"``, ``"morphology"``)."""

    def __init__(self, kind: str, title: str = "") -> None:
        self.kind, self.title = kind, title
        self.models: dict[str, ModelEntry] = {}

    def register(self, name: str, factory: Callable, params=None, summary: str | None = None):
        """Register ``factory`` (a class or function) as ``name``; its parameters default to
        :func:`params_of`, its summary to its docstring's first line."""
        if summary is None:
            summary = (inspect.getdoc(factory) or "").strip().splitlines()[0:1]
            summary = summary[0] if summary else ""
        params = params_of(factory) if params is None else tuple(params)
        self.models[name] = ModelEntry(name, factory, params, summary)
        return factory

    def __contains__(self, name) -> bool:
        return name in self.models

    def __iter__(self):
        return iter(self.models)

    def names(self) -> list[str]:
        return list(self.models)

    def parse_values(self, text: str) -> tuple[ModelEntry, dict]:
        """``"name:k=v,..."`` -> (the model, its keyword arguments), every key and value checked
        for type; ranges are the model's to check."""
        kind = self.kind
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"{kind}={text!r}: expected 'name' or 'name:key=value,...' with name in "
                f"{sorted(self.models)}"
            )
        name, items = split_spec(text)
        if name not in self.models:
            raise ValueError(
                f"{kind}={text!r}: unknown model {name!r}, expected one of {sorted(self.models)}"
            )
        entry = self.models[name]
        plain = {p.name: p for p in entry.params if not p.prefix}
        families = [p for p in entry.params if p.prefix]
        values: dict = {}
        for key, sep, raw in items:
            p = plain.get(key) or next(
                (
                    f
                    for f in families
                    if key.startswith(f"{f.name}_") and len(key) > len(f.name) + 1
                ),
                None,
            )
            if p is None:
                allowed = sorted(q.key for q in entry.params) or "no parameters"
                raise ValueError(
                    f"{kind} {name!r}: unknown key {key!r} in {text!r}, expected {allowed}"
                )
            if not sep:
                raise ValueError(f"{kind} {name!r}: {key}: missing '=value' in {text!r}")
            target = values.setdefault(p.field, {}) if p.prefix else values
            slot = key[len(p.name) + 1 :] if p.prefix else p.field
            if slot in target:
                raise ValueError(f"{kind} {name!r}: {key} given twice in {text!r}")
            try:
                target[slot] = p.convert(raw)
            except ValueError:
                raise ValueError(
                    f"{kind} {name!r}: {key}={raw!r}: expected {p.expected()}"
                ) from None
        return entry, values

    def parse(self, text: str, **defaults):
        """Build the model of ``"name:k=v,..."``; ``defaults`` fill parameters the text leaves
        out, where the model has them (e.g. ``energy`` from the microscope)."""
        entry, values = self.parse_values(text)
        fields = {p.field for p in entry.params}
        for key, value in defaults.items():
            if key in fields and key not in values and value is not None:
                values[key] = value
        return entry.factory(**values)

    def parse_spec(self, text, **defaults) -> Spec:
        """``text`` parsed into a :class:`Spec` (text and model); a :class:`Spec` is returned
        as it is."""
        if isinstance(text, Spec):
            return text
        return Spec(text, self.parse(text, **defaults))

    def build(self, spec, **defaults):
        """The model of ``spec``: a :class:`Spec`'s model, or ``spec`` (text) parsed."""
        if isinstance(spec, Spec):
            return spec.model
        return self.parse(spec, **defaults)

    def describe(self) -> list[str]:
        """The lines ``simgen list`` prints: each model, its summary and its parameters."""
        lines = []
        for entry in self.models.values():
            lines.append(f"  {entry.name}: {entry.summary}")
            for p in entry.params:
                unit = f" {p.unit}" if p.unit else ""
                default = "" if p.prefix else f"={p.default!r}"
                lines.append(f"      {p.key}{default}{unit}: {p.doc}")
        return lines


#: Every registry, by kind (filled by the modules that define the models).
REGISTRIES: dict[str, Registry] = {}

# The extension points without parameters: one tuple each, defined here only and read by the
# module that implements them, the catalogue validation, the CLI parsers and ``simgen list``
# (this module imports only the standard library, so the parsers are built without numpy).

#: Image formation (:func:`simgen.physics.imaging.simulate_tilt_series` ``mode``).
IMAGING_MODES = ("linear", "multislice", "prism")
#: Reconstruction algorithms (:func:`simgen.reconstruction.reconstruct.reconstruct` ``method``).
RECONSTRUCTION_METHODS = ("sirt", "cgls", "fbp", "sart")
#: Tilt-series alignment (:func:`simgen.reconstruction.alignment.align_tilt_series` ``method``).
ALIGNMENT_METHODS = (
    "none",
    "com",
    "cross_correlation",
    "projection_matching",
    "projection_matching_split",
)


def registry(kind: str, title: str = "") -> Registry:
    """The registry of ``kind``, created on first use."""
    if kind not in REGISTRIES:
        REGISTRIES[kind] = Registry(kind, title)
    return REGISTRIES[kind]


def registry_kinds() -> Mapping[str, Registry]:
    return dict(REGISTRIES)
