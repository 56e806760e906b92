"""The dataset catalogue: ``datasets.yaml`` in, validated :class:`DatasetSpec` objects out.

A catalogue is a YAML mapping ``datasets: {name: {...}}`` (intake/kedro style), read with a
loader that refuses a key given twice; each entry becomes a frozen
:class:`simgen.catalog.dataset_spec.DatasetSpec` (parsed by :mod:`simgen.catalog.entry`), so the rest of
the code never sees raw dicts. :func:`validate_catalog` reports every problem at once and, on
request, builds the largest particle of each dataset to check that it fits the volume.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from simgen.catalog.dataset_spec import DatasetSpec
from simgen.catalog.validation import did_you_mean

__all__ = [
    "load_catalog",
    "get_dataset",
    "validate_catalog",
    "default_catalog_path",
    "PACKAGED_CATALOG",
]

#: The catalogue shipped with the package (``simgen/data/datasets.yaml``, a link to the
#: repository's top-level ``datasets.yaml``; a wheel holds its content).
PACKAGED_CATALOG = Path(__file__).resolve().parents[1] / "data" / "datasets.yaml"


def default_catalog_path() -> Path:
    """``./datasets.yaml`` if present, else the catalogue shipped with the package."""
    local = Path("datasets.yaml")
    if local.is_file():
        return local
    return PACKAGED_CATALOG


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
