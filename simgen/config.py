"""The dataset catalogue's public face: ``datasets.yaml`` in, validated frozen dataclasses inside.

The pieces live one concept per module and are re-exported here, so ``from simgen.config
import ...`` keeps working:

- :mod:`simgen.catalog` reads a catalogue (``load_catalog``, ``get_dataset``,
  ``validate_catalog``, ``default_catalog_path``);
- :mod:`simgen.dataset_spec` holds :class:`DatasetSpec` (``spec_dict``, ``spec_hash``);
- :mod:`simgen.catalog_entry` parses one entry (:class:`Distribution`, :class:`Split`,
  :class:`StorageSpec`, the tilt/dose/noise/damage/split/storage parsers);
- :mod:`simgen.validation` declares the scalar keys, :mod:`simgen.planning` resolves a spec into
  samples.

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

from simgen.catalog import (  # noqa: F401 (re-exported)
    PACKAGED_CATALOG,
    _read_yaml,
    default_catalog_path,
    get_dataset,
    load_catalog,
    validate_catalog,
)
from simgen.catalog_entry import (  # noqa: F401 (re-exported)
    GRID_AXES,
    HOLD_OUT_FIELDS,
    ORIENTATIONS,
    SPLIT_NAMES,
    STORE_ARRAYS,
    TILT_SCHEMES,
    Distribution,
    Split,
    StorageSpec,
)
from simgen.dataset_spec import DatasetSpec, spec_dict, spec_hash  # noqa: F401 (re-exported)
from simgen.planning import (  # noqa: F401 (re-exported)
    GEOMETRIC_NOISE,
    resolve_align,
    sample_rng,
)
from simgen.store.codecs import LOSSY_CODECS, parse_lossy  # noqa: F401 (re-exported)
from simgen.validation import (  # noqa: F401 (re-exported)
    ALIGN_CHOICES,
    DOSE_PROFILES,
    MODES,
    RECON_METHODS,
)

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
