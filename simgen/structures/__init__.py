"""Nanoparticle atomic models: morphologies, compositions, chemical order, placement and model files.

One module per concept, as ``ase.cluster``:

- :mod:`~simgen.structures.compositions` – ``parse_composition("L10:FePt")`` -> :class:`Composition`;
- :mod:`~simgen.structures.lattices` – lattice constants by Vegard's law, blocks of lattice sites;
- :mod:`~simgen.structures.morphologies` – one registered function per shape (``MORPHOLOGIES``),
  its options its keyword arguments; :mod:`~simgen.structures.amorphous` – random dense packing;
- :mod:`~simgen.structures.ordering` – which element sits on which site;
- :mod:`~simgen.structures.surface` – surface layers (core–shell shells);
- :mod:`~simgen.structures.placement` – diameter, orientation, placement in the volume;
- :mod:`~simgen.structures.particle` – :func:`build_particle`, the three steps together;
- :mod:`~simgen.structures.io` – model files, one reader per format, chosen by suffix.

Units: Å throughout (``size_nm`` is the one exception, named for it).
"""

from __future__ import annotations

from simgen.structures.compositions import COMPOSITION_KINDS, Composition, parse_composition
from simgen.structures.io import MODEL_FORMATS, load_model, read_mat, write_model
from simgen.structures.lattices import LATTICES, lattice_constant
from simgen.structures.morphologies import (
    DEFAULT_SURFACE_ENERGIES,
    MORPHOLOGIES,
    MORPHOLOGY_REGISTRY,
)
from simgen.structures.particle import build_particle, realised_ordering
from simgen.structures.placement import (
    particle_diameter,
    place_in_volume,
    random_orientation,
    rotation_matrix,
)
from simgen.structures.surface import surface_layers

__all__ = [
    "MORPHOLOGIES",
    "MORPHOLOGY_REGISTRY",
    "COMPOSITION_KINDS",
    "LATTICES",
    "DEFAULT_SURFACE_ENERGIES",
    "MODEL_FORMATS",
    "Composition",
    "parse_composition",
    "build_particle",
    "realised_ordering",
    "lattice_constant",
    "particle_diameter",
    "surface_layers",
    "random_orientation",
    "rotation_matrix",
    "place_in_volume",
    "load_model",
    "write_model",
    "read_mat",
]
