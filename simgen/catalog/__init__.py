"""The dataset catalogue's public face: ``datasets.yaml`` in, validated frozen dataclasses inside.

The pieces live one concept per module and are re-exported here (lazily: importing one of the
submodules never imports the others), so ``from simgen.catalog import ...`` gives each name below:

- :mod:`simgen.catalog.loader` reads a catalogue (``load_catalog``, ``get_dataset``,
  ``validate_catalog``, ``default_catalog_path``);
- :mod:`simgen.catalog.dataset_spec` holds :class:`DatasetSpec` (``spec_dict``, ``spec_hash``);
- :mod:`simgen.catalog.entry` parses one entry (:class:`Distribution`, :class:`Split`,
  :class:`StorageSpec`, the tilt/dose/noise/damage/split/storage parsers);
- :mod:`simgen.catalog.validation` declares the scalar keys, :mod:`simgen.catalog.planning`
  resolves a spec into samples.

Randomness (docs/design.md): sample ``i`` of a dataset with seed ``s`` uses the generator
``default_rng(SeedSequence(s, spawn_key=(i,)))`` — the same stream as ``SeedSequence(s).spawn(n)[i]``
but O(1). The plan's own random choices (sizes, random draws, the split) come from generators
seeded with ``SeedSequence([s, tag])`` for fixed tags, so the plan is a pure function of the spec.
When ``samples.same_structure_across`` lists plan axes (e.g. ``[dose]``), every sample that
differs only along those axes gets the same ``structure_seed`` and therefore the same particle
(atoms, orientation, thermal displacements): the structure generator depends on the particle
index only, never on the dose or the noise model.
"""

from __future__ import annotations

import importlib

_LAZY = {
    **dict.fromkeys(
        ["PACKAGED_CATALOG", "default_catalog_path", "get_dataset", "load_catalog",
         "validate_catalog"],
        "simgen.catalog.loader",
    ),
    **dict.fromkeys(
        ["GRID_AXES", "HOLD_OUT_FIELDS", "ORIENTATIONS", "SPLIT_NAMES", "STORE_ARRAYS",
         "TILT_SCHEMES", "Distribution", "Split", "StorageSpec"],
        "simgen.catalog.entry",
    ),
    **dict.fromkeys(["DatasetSpec", "spec_dict", "spec_hash"], "simgen.catalog.dataset_spec"),
    **dict.fromkeys(["GEOMETRIC_NOISE", "resolve_align", "sample_rng"], "simgen.catalog.planning"),
    **dict.fromkeys(["LOSSY_CODECS", "parse_lossy"], "simgen.store.codecs"),
    **dict.fromkeys(
        ["ALIGN_CHOICES", "DOSE_PROFILES", "MODES", "RECON_METHODS"], "simgen.catalog.validation"
    ),
}  # fmt: skip

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
    "spec_dict",
    "spec_hash",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simgen.catalog' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
