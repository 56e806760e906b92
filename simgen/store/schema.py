"""The store's schema, declared once: every array and every meta field, with dtype and meaning.

The writer (:mod:`simgen.store.writer`), the reader (:mod:`simgen.store.reader`) and the verifier
(:mod:`simgen.store.verify`) all read these tables; none of them hard-codes an array's name,
dtype, shape or fill. Layout (docs/design.md, contract; N samples, A angles, P = V voxels)::

    /                  attrs: schema_version, dataset, spec (full resolved spec), sampling,
                              package versions, creation info, generation runs
    /<array>           one row per sample, chunked one sample per chunk (see ARRAYS)
    /atoms/positions   float32 (M, 3)   ragged: sample i owns rows offsets[i]:offsets[i+1]
    /atoms/numbers     uint8   (M,)     (written as padded per-sample chunks, packed by
    /atoms/offsets     int64   (N + 1,)  :func:`simgen.store.writer.consolidate`)
    /meta/<field>      (N,)             see META_FIELDS; plan fields take the dtype of their values
    /checksums         uint8   (N, K, 32)  sha256 of each of the sample's K checksummed arrays
    /failed            str     (N,)     "" or why the sample could not be generated
    /complete          bool    (N,)     set last, after everything else of the sample

Shapes are per sample, with symbols: ``A`` (angles), ``V`` (voxels per side),
``max_atoms`` and ``max_events`` (padded capacities while a ragged array is being written).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SCHEMA_VERSION",
    "READABLE_SCHEMAS",
    "TRUTHS",
    "ArraySpec",
    "MetaField",
    "ARRAYS",
    "META_FIELDS",
    "ARRAY_BY_KEY",
    "META_BY_NAME",
    "LOSSY_ARRAYS",
    "SAMPLE_ARRAYS",
    "CHECKSUMMED_ARRAYS",
    "TRACKED_ARRAYS",
    "ALIGNED_ARRAYS",
    "COUNTED_META",
    "RAGGED_COUNTS",
    "GROUP_ATTRS",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "arrays_of",
    "checksummed_names",
    "meta_of",
]

SCHEMA_VERSION = 2
#: Schema versions the reader opens: 1 (before alignment was recorded) and 2.
READABLE_SCHEMAS = (1, 2)
#: Ground truths a reader can choose (``open_dataset(truth=...)``).
TRUTHS = ("initial", "final", "mean")
LOCK_NAME = ".generate.lock"
MANIFEST_NAME = "manifest.json"

#: When an array or meta field exists: in every store, in stores with an ideal volume, in stores
#: that record the acquisition and damage, in stores that record the alignment (schema 2).
CONDITIONS = ("always", "target", "acquisition", "alignment")


@dataclass(frozen=True)
class ArraySpec:
    """One per-sample array of the store.

    Attributes
    ----------
    key
        Its name in the checksums (``attrs["checksummed_arrays"]``) and the manifest.
    group, name
        Where it lives: ``/<group>/<name>`` (``group=""``: the root). A ragged array is written
        as ``/<group>/padded_<name>`` (per-sample rows of ``shape``) and packed into
        ``/<group>/<name>`` with ``/<group>/offsets``.
    dtype, shape, fill
        Stored dtype (lossy arrays may be float16), per-sample shape (symbols ``A``, ``V``,
        ``max_atoms``, ``max_events``) and fill value of rows never written.
    when
        One of :data:`CONDITIONS`.
    dims
        Zarr ``dimension_names`` (sample axis first), or None.
    ragged, lossy
        Ragged (atoms, damage events); may be stored with a lossy codec.
    field, read_dtype
        Its key in :meth:`simgen.store.Dataset.read`'s dict (and the :class:`simgen.sample.Sample`
        attribute the writer takes it from), and the dtype the reader returns.
    attrs
        The array's Zarr attributes.
    unit, doc
        Unit and one line of meaning.
    """

    key: str
    group: str
    name: str
    dtype: type
    shape: tuple
    when: str = "always"
    fill: float = 0
    dims: tuple[str, ...] | None = None
    ragged: bool = False
    lossy: bool = False
    field: str | None = None
    read_dtype: type | None = None
    attrs: Mapping = dataclasses.field(default_factory=dict)
    unit: str = ""
    doc: str = ""

    @property
    def path(self) -> str:
        """Path of the (packed) array in the store."""
        return f"{self.group}/{self.name}" if self.group else self.name

    @property
    def written_name(self) -> str:
        """Name in its group while samples are written (``padded_<name>`` if ragged)."""
        return f"padded_{self.name}" if self.ragged else self.name

    def sample_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The per-sample shape with its symbols replaced by ``sizes``."""
        return tuple(sizes[s] if isinstance(s, str) else int(s) for s in self.shape)


_VOLUME_UNITS = "Å² per voxel (HAADF cross-section)"
_VOLUME_DIMS = ("sample", "z", "y", "x")
_ANGLE_DIMS = ("sample", "angle")
_POSITIONS = "Å, (x, y, z) in the volume frame"

#: Every per-sample array, in checksum order.
ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec(
        "tilt_series", "", "tilt_series", np.float32, ("A", "V", "V"),
        dims=("sample", "angle", "y", "x"), lossy=True, field="tilt_series", read_dtype=np.float32,
        attrs={"units": "detector counts", "axes": "[sample, angle, y, x]"},
        unit="detector counts", doc="measured detector counts",
    ),
    ArraySpec(
        "angles", "", "angles", np.float32, ("A",), dims=_ANGLE_DIMS, field="angles",
        read_dtype=np.float32, attrs={"units": "degrees (nominal, recorded)"}, unit="degrees",
        doc="nominal (recorded) tilt angles",
    ),
    ArraySpec(
        "angles_true", "", "angles_true", np.float32, ("A",), dims=_ANGLE_DIMS,
        field="angles_true", read_dtype=np.float32, attrs={"units": "degrees (true)"},
        unit="degrees", doc="true tilt angles",
    ),
    ArraySpec(
        "volume", "", "volume", np.float32, ("V", "V", "V"), dims=_VOLUME_DIMS, lossy=True,
        field="volume", read_dtype=np.float32,
        attrs={"units": _VOLUME_UNITS, "axes": "[sample, z, y, x]"}, unit="Å² per voxel",
        doc="reconstruction",
    ),
    ArraySpec(
        "target", "", "target", np.float32, ("V", "V", "V"), when="target", dims=_VOLUME_DIMS,
        lossy=True, field="target", read_dtype=np.float32,
        attrs={"units": _VOLUME_UNITS, "axes": "[sample, z, y, x]"}, unit="Å² per voxel",
        doc="ideal volume (absent in imported data)",
    ),
    ArraySpec(
        "atoms_positions", "atoms", "positions", np.float32, ("max_atoms", 3), ragged=True,
        read_dtype=np.float32, unit="Å", doc="true (initial) atom positions, (x, y, z)",
    ),
    ArraySpec(
        "atoms_numbers", "atoms", "numbers", np.uint8, ("max_atoms",), ragged=True,
        read_dtype=np.uint8, doc="atomic numbers",
    ),
    ArraySpec(
        "acquisition_index", "acquisition", "index", np.int32, ("A",), when="acquisition",
        dims=_ANGLE_DIMS, field="acquisition_index", read_dtype=np.int64,
        doc="acquisition step of each stored projection (0 = first acquired)",
    ),
    ArraySpec(
        "acquisition_dose", "acquisition", "dose", np.float32, ("A",), when="acquisition",
        dims=_ANGLE_DIMS, field="acquisition_dose", read_dtype=np.float32, unit="e/Å²",
        doc="e/Å² per projection",
    ),
    ArraySpec(
        "acquisition_cumulative_dose", "acquisition", "cumulative_dose", np.float64, ("A",),
        when="acquisition", dims=_ANGLE_DIMS, field="cumulative_dose", read_dtype=np.float64,
        unit="e/Å²", doc="e/Å² received before the projection was acquired",
    ),
    ArraySpec(
        "damage_step", "damage", "step", np.int32, ("max_events",), when="acquisition",
        ragged=True, doc="acquisition step whose dose caused the event",
    ),
    ArraySpec(
        "damage_id", "damage", "id", np.int64, ("max_events",), when="acquisition", ragged=True,
        doc="row of the sample's stored (initial) atoms",
    ),
    ArraySpec(
        "damage_kind", "damage", "kind", np.uint8, ("max_events",), when="acquisition",
        ragged=True, doc="0 = hop (to new), 1 = sputtered (new is NaN)",
    ),
    ArraySpec(
        "damage_old", "damage", "old", np.float32, ("max_events", 3), when="acquisition",
        ragged=True, unit="Å", doc="position before the event",
    ),
    ArraySpec(
        "damage_new", "damage", "new", np.float32, ("max_events", 3), when="acquisition",
        ragged=True, unit="Å", doc="position after the event",
    ),
    ArraySpec(
        "alignment_shifts", "alignment", "shifts", np.float32, ("A", 2), when="alignment",
        fill=np.nan, dims=("sample", "angle", "axis"), field="shifts", read_dtype=np.float32,
        unit="Å",
        doc="estimated (dy, dx) translation of each projection in Å (positive: content moved "
        "to larger indices); the series was shifted back by -shifts",
    ),
    ArraySpec(
        "alignment_shifts_true", "alignment", "shifts_true", np.float32, ("A", 2),
        when="alignment", fill=np.nan, dims=("sample", "angle", "axis"), field="shifts_true",
        read_dtype=np.float32, unit="Å",
        doc="(dy, dx) translation applied by the noise models, Å",
    ),
    ArraySpec(
        "alignment_angles", "alignment", "angles", np.float32, ("A",), when="alignment",
        fill=np.nan, dims=_ANGLE_DIMS, field="angles_estimated", read_dtype=np.float32,
        unit="degrees",
        doc="tilt angles the volume was reconstructed with (estimated), degrees",
    ),
)  # fmt: skip

ARRAY_BY_KEY = {spec.key: spec for spec in ARRAYS}
#: Arrays that may be stored with a lossy codec (``storage.lossy``).
LOSSY_ARRAYS = tuple(spec.key for spec in ARRAYS if spec.lossy)
#: The dense arrays every sample has (schema 1).
SAMPLE_ARRAYS = tuple(s.key for s in ARRAYS if s.when in ("always", "target") and not s.ragged)
CHECKSUMMED_ARRAYS = tuple(s.key for s in ARRAYS if s.when in ("always", "target"))
#: Extra checksummed arrays of stores that record the acquisition and damage.
TRACKED_ARRAYS = tuple(s.key for s in ARRAYS if s.when == "acquisition")
#: Extra checksummed arrays of stores that record the alignment.
ALIGNED_ARRAYS = tuple(s.key for s in ARRAYS if s.when == "alignment")


def arrays_of(group: str) -> tuple[ArraySpec, ...]:
    """The arrays of one group, in schema order."""
    return tuple(spec for spec in ARRAYS if spec.group == group)


def checksummed_names(*, acquisition: bool, alignment: bool) -> tuple[str, ...]:
    """Keys of the checksummed arrays of a store, in the order its digests are kept."""
    names = CHECKSUMMED_ARRAYS
    if acquisition:
        names = (*names, *TRACKED_ARRAYS)
    if alignment:
        names = (*names, *ALIGNED_ARRAYS)
    return names


@dataclass(frozen=True)
class MetaField:
    """One ``/meta/<name>`` field (N,).

    ``dtype=None``: a plan field, written once by :func:`simgen.store.create_store` with the dtype
    its values take (bool, int64, float64 or str). Fields with a dtype are per-sample
    (chunked one sample per chunk) and written by the workers, unless the plan supplies them.
    """

    name: str
    dtype: type | None
    fill: object = 0
    when: str = "always"
    unit: str = ""
    doc: str = ""


#: The meta fields the schema knows (a store may hold more plan fields: every key of the plan's meta).
META_FIELDS: tuple[MetaField, ...] = (
    MetaField("n_atoms", np.int64, 0, doc="atoms of the sample's (initial) structure"),
    MetaField("index", None, doc="sample index in the plan"),
    MetaField("split", None, doc="train, val or test"),
    MetaField("morphology", None, doc="shape of the particle (simgen list)"),
    MetaField("composition", None, doc="composition asked for, e.g. L10:FePt"),
    MetaField("ordering", None, doc="chemical order actually made"),
    MetaField("size_nm", None, unit="nm", doc="particle diameter asked for"),
    MetaField("dose", None, unit="e/Å²", doc="dose per projection"),
    MetaField("noise_model", None, doc="name of the noise-model set"),
    MetaField("noise", None, doc="noise specs, ';'-joined"),
    MetaField("seed", None, doc="seed of the sample's random generator"),
    MetaField("structure_seed", None, doc="seed of the particle (-1: drawn per sample)"),
    MetaField("total_dose", np.float64, 0.0, "acquisition", "e/Å²", "dose of the whole series"),
    MetaField("tilt_scheme", str, "", "acquisition", doc="order the projections were acquired in"),
    MetaField("dose_profile", str, "", "acquisition", doc="dose over the series (uniform, cos)"),
    MetaField("damage_model", str, "", "acquisition", doc="damage specs, or none"),
    MetaField("n_events", np.int64, 0, "acquisition", doc="damage events of the sample"),
    MetaField("n_sputtered", np.int64, 0, "acquisition", doc="atoms sputtered"),
    MetaField("align", str, "", "alignment", doc="alignment method used (simgen.reconstruction.alignment)"),
    MetaField("align_shift_error_pm", np.float64, np.nan, "alignment", "pm",
              "RMS error of the estimated shifts"),
    MetaField("align_angle_error_deg", np.float64, np.nan, "alignment", "degrees",
              "RMS error of the estimated angles"),
)  # fmt: skip

META_BY_NAME = {f.name: f for f in META_FIELDS}
#: The meta field that counts each ragged group's rows per sample.
RAGGED_COUNTS = {"atoms": "n_atoms", "damage": "n_events"}
#: Fields ``simgen inspect`` counts samples by, in the order it prints them.
COUNTED_META = (
    "split",
    "morphology",
    "composition",
    "dose",
    "noise_model",
    "tilt_scheme",
    "damage_model",
    "align",
)


def meta_of(when: str) -> tuple[MetaField, ...]:
    """The per-sample meta fields (with a dtype) that exist under condition ``when``."""
    return tuple(f for f in META_FIELDS if f.when == when and f.dtype is not None)


#: Attributes of the groups (the writer adds ``consolidated`` and ``max_events`` to damage's, and
#: each array's doc to those of acquisition and alignment).
GROUP_ATTRS: dict[str, dict] = {
    "atoms": {"positions_units": _POSITIONS, "consolidated": False},
    "damage": {
        "kind": {"0": "hop", "1": "sputter"},
        "positions_units": _POSITIONS,
        "id": "row of the sample's stored (initial) atoms",
    },
}
