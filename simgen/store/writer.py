"""Writing a store: :func:`create_store` (the empty store and the plan's meta),
:func:`write_sample` (one sample, by any worker), :func:`consolidate` (the driver packs the
ragged arrays and writes the manifest) and :func:`write_single_sample_store`.

Every per-sample array is chunked one sample per chunk and unsharded, so concurrent workers
never touch the same file. The ragged atom and damage-event arrays cannot be sized before
generation, so workers write them into padded per-sample chunks (``/atoms/padded_*`` with
capacity ``max_atoms``, ``/damage/padded_*`` with ``max_events``, counts in ``/meta/n_atoms``
and ``/meta/n_events``); :func:`consolidate` packs the complete samples into the ragged arrays
and, once every sample is complete, deletes the padded ones. Plan-derived metadata (dose,
morphology, ...) is known before any simulation and is written once by :func:`create_store`;
only the per-sample fields of :data:`simgen.store.schema.META_FIELDS` are written by workers.
What is written where comes from :mod:`simgen.store.schema`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simgen.store.codecs import (
    combined_hex,
    encode_lossy,
    meta_digest,
    parse_lossy,
    sample_digests,
    stored_dtype,
)
from simgen.store.reader import empty_events, open_group, read_samples
from simgen.store.schema import (
    ARRAYS,
    CHECKSUMMED_ARRAYS,
    GROUP_ATTRS,
    LOCK_NAME,
    LOSSY_ARRAYS,
    MANIFEST_NAME,
    RAGGED_COUNTS,
    SCHEMA_VERSION,
    arrays_of,
    checksummed_names,
    meta_of,
)

__all__ = [
    "StoreLayout",
    "create_store",
    "write_sample",
    "consolidate",
    "write_single_sample_store",
    "default_max_atoms",
]

logger = logging.getLogger(__name__)


def default_max_atoms(size: int, sampling: float) -> int:
    """Atoms that can fit a volume at every tilt: a cylinder of the volume's side (diameter and
    height) filled at 0.18 atoms/Å³ (denser than any metal; diamond is 0.176)."""
    side = size * sampling
    return int(np.ceil(0.18 * np.pi / 4 * side**3)) + 1


def _package_versions() -> dict:
    from importlib import metadata

    versions = {}
    for name in ("aet-suite", "numpy", "scipy", "numba", "zarr", "abtem", "astra-toolbox", "ase", "dask"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _jsonable(value):
    """Turn dataclasses/tuples/numpy scalars into JSON-ready values."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def _meta_dtype(values: Sequence):
    # decided on the set of types (one pass), not value by value: 42,588 rows take milliseconds
    types = set(map(type, values))
    if all(issubclass(t, (bool, np.bool_)) for t in types):
        return np.bool_, False
    if any(issubclass(t, bool) for t in types):
        return str, ""
    if all(issubclass(t, (int, np.integer)) for t in types):
        return np.int64, 0
    if all(issubclass(t, (int, float, np.integer, np.floating)) for t in types):
        return np.float64, 0.0
    return str, ""


@dataclass(frozen=True)
class StoreLayout:
    """What a store holds, fixed when it is created: its shapes and its optional groups.

    Parameters
    ----------
    n_samples, n_angles, size
        N, A and the volume side V = projection side P (voxels).
    sampling
        Voxel size = pixel size (Å).
    max_atoms
        Padded atom capacity per sample (default :func:`default_max_atoms`).
    max_events
        Padded damage-event capacity per sample (default 8 × ``max_atoms``).
    has_target
        False for imported data without an ideal volume.
    acquisition
        Record each sample's acquisition (order, doses) and damage events. Default (``None``):
        the spec's ``tracks_acquisition`` (datasets with a tilt scheme, dose profile or damage).
    alignment
        Record each sample's estimated and true per-projection shifts and angles (schema 2).
    """

    n_samples: int
    n_angles: int
    size: int
    sampling: float
    max_atoms: int | None = None
    max_events: int | None = None
    has_target: bool = True
    acquisition: bool | None = None
    alignment: bool = True

    def __post_init__(self) -> None:
        for name in ("n_samples", "n_angles", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if not self.sampling > 0:
            raise ValueError(f"sampling={self.sampling!r}: expected a positive voxel size in Å")


def create_store(
    path: str | Path,
    spec,
    layout: StoreLayout,
    *,
    meta: Mapping[str, Sequence] | None = None,
    storage=None,
    overwrite: bool = False,
    attrs: Mapping | None = None,
):
    """Create an empty store of ``layout`` and write the plan's metadata.

    Parameters
    ----------
    path
        Directory of the store. May exist if it holds no store yet (e.g. only the engine's lock).
    spec
        The resolved dataset spec (a :class:`simgen.catalog.DatasetSpec` or a dict), recorded in
        the root attributes.
    layout
        Shapes and optional groups (:class:`StoreLayout`).
    meta
        ``{field: N values}`` known before simulation (dose, morphology, split, ...).
    storage
        How arrays are encoded: a :class:`simgen.catalog.StorageSpec` (``compression_level``,
        the Zstd level; ``lossy``, ``{array: "float16" | "bitround:K"}`` for tilt_series, volume
        or target, as a mapping or pairs). Default: lossless, level 3.
    overwrite
        Replace an existing store (the engine's lock file is kept).
    attrs
        Extra root attributes.

    Returns
    -------
    zarr.Group
    """
    import zarr
    from zarr.codecs import ZstdCodec

    path = Path(path)
    if not isinstance(layout, StoreLayout):
        raise TypeError(f"layout={layout!r}: expected a StoreLayout")
    lossy = dict(getattr(storage, "lossy", None) or {})
    compression_level = getattr(storage, "compression_level", 3)
    for array, codec in lossy.items():
        if array not in LOSSY_ARRAYS:
            raise ValueError(f"lossy={lossy!r}: expected keys among {', '.join(LOSSY_ARRAYS)}")
        parse_lossy(codec, f"lossy.{array}")
    if (path / "zarr.json").exists():
        if not overwrite:
            raise FileExistsError(
                f"store={str(path)!r}: already exists (use overwrite to replace it)"
            )
        for entry in path.iterdir():
            if entry.name == LOCK_NAME:
                continue
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    path.mkdir(parents=True, exist_ok=True)

    n, a, v = int(layout.n_samples), int(layout.n_angles), int(layout.size)
    sampling = float(layout.sampling)
    max_atoms = int(layout.max_atoms or default_max_atoms(v, sampling))
    acquisition = layout.acquisition
    if acquisition is None:
        acquisition = bool(getattr(spec, "tracks_acquisition", False))
    max_events = int(layout.max_events or 8 * max_atoms)
    alignment = layout.alignment
    checksummed = checksummed_names(acquisition=acquisition, alignment=alignment)
    present = {"always": True, "target": layout.has_target, "acquisition": acquisition}
    present["alignment"] = alignment
    sizes = {"A": a, "V": v, "max_atoms": max_atoms, "max_events": max_events}
    compressors = ZstdCodec(level=int(compression_level))
    root = zarr.open_group(str(path), mode="a")

    spec_dict = (
        {"name": spec.name, **spec.to_dict()}
        if hasattr(spec, "name") and hasattr(spec, "plan")
        else _jsonable(spec)
    )
    root.attrs.update(
        {
            "schema_version": SCHEMA_VERSION,
            "dataset": spec_dict.get("name", "") if isinstance(spec_dict, Mapping) else "",
            "spec": spec_dict,
            "n_samples": n,
            "sampling": float(sampling),
            "max_atoms": max_atoms,
            "lossy": lossy,
            "checksummed_arrays": list(checksummed),
            "versions": _package_versions(),
            "created": {
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "host": socket.gethostname(),
                "user": os.environ.get("USER", ""),
            },
            "runs": [],
            **dict(_jsonable(attrs or {})),
        }
    )
    if acquisition:
        root.attrs["acquisition"] = True

    def per_sample(group, name, shape, dtype, fill=0, **extra):
        return group.create_array(
            name,
            shape=(n, *shape),
            chunks=(1, *shape),
            dtype=dtype,
            fill_value=fill,
            compressors=compressors,
            **extra,
        )

    # the arrays of the schema, group by group
    groups = {"": root}
    for spec_ in (s for s in ARRAYS if present[s.when]):
        if spec_.group not in groups:
            groups[spec_.group] = root.create_group(spec_.group)
        extra = {"dimension_names": spec_.dims} if spec_.dims else {}
        dtype = stored_dtype(lossy.get(spec_.key)) if spec_.lossy else spec_.dtype
        array = per_sample(
            groups[spec_.group],
            spec_.written_name,
            spec_.sample_shape(sizes),
            dtype,
            spec_.fill,
            **extra,
        )
        attributes = {"lossy": {"codec": lossy[spec_.key]}} if spec_.key in lossy else {}
        attributes.update(spec_.attrs)
        if attributes:
            array.attrs.update(attributes)
    for name, group in groups.items():
        if name == "damage":
            group.attrs.update(
                {"consolidated": False, "max_events": max_events, **GROUP_ATTRS["damage"]}
            )
        elif name in GROUP_ATTRS:
            group.attrs.update(GROUP_ATTRS[name])
        elif name:
            group.attrs.update({s.name: s.doc for s in arrays_of(name)})

    meta_group = root.create_group("meta")
    for when in ("always", "acquisition", "alignment"):
        if not present[when]:
            continue
        for field in meta_of(when):
            if when == "always" or field.name not in (meta or {}):
                per_sample(meta_group, field.name, (), field.dtype, field.fill)
    for array in lossy:
        per_sample(meta_group, f"{array}_max_error", (), np.float64)
        per_sample(meta_group, f"{array}_rms_error", (), np.float64)
    for field_name, values in (meta or {}).items():
        values = list(values)
        if len(values) != n:
            raise ValueError(f"meta[{field_name!r}]: {len(values)} values, expected n_samples={n}")
        if field_name in meta_group:
            continue
        dtype, fill = _meta_dtype(values)
        chunk = min(n, 65536)  # written once by the driver, so large chunks are safe
        arr = meta_group.create_array(
            field_name,
            shape=(n,),
            chunks=(chunk,),
            dtype=dtype,
            fill_value=fill,
            compressors=compressors,
        )
        arr[:] = (
            np.array([str(x) for x in values]) if dtype is str else np.asarray(values, dtype=dtype)
        )

    root.create_array(
        "checksums",
        shape=(n, len(checksummed), 32),
        chunks=(1, len(checksummed), 32),
        dtype=np.uint8,
        fill_value=0,
    )
    root.create_array("failed", shape=(n,), chunks=(min(n, 65536),), dtype=str, fill_value="")
    root.create_array("complete", shape=(n,), chunks=(1,), dtype=np.bool_, fill_value=False)
    return root


def write_sample(store, index: int, sample) -> str:
    """Write one :class:`simgen.sample.Sample` at ``index``; ``complete[index]`` is set last.

    Order: clear the flag, write the arrays and atoms, the checksums, then set the flag. A
    sample interrupted anywhere before the last step stays incomplete and is rewritten on resume.

    Returns
    -------
    str
        The sample's sha256 (hex) over its per-array digests.
    """
    root = open_group(store, "r+") if not hasattr(store, "attrs") else store
    n = root["complete"].shape[0]
    if not 0 <= index < n:
        raise ValueError(f"index={index!r}: expected 0 <= index < {n}")
    lossy = dict(root.attrs.get("lossy", {}))
    root["complete"][index] = False

    stored: dict[str, np.ndarray | None] = {}
    for spec in arrays_of(""):
        name = spec.name
        values = getattr(sample, spec.field)
        if name not in root:
            if values is not None:
                raise ValueError(f"{name}: the store has no {name} array")
            continue
        expected = root[name].shape[1:]
        values = np.asarray(values, dtype=np.float32)
        if values.shape != expected:
            raise ValueError(f"{name}.shape={values.shape}: expected {expected}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name}: contains non-finite values")
        encoded, max_err, rms_err = encode_lossy(values, lossy.get(name))
        if name in lossy:
            root["meta"][f"{name}_max_error"][index] = max_err
            root["meta"][f"{name}_rms_error"][index] = rms_err
        root[name][index] = encoded
        stored[spec.key] = encoded

    positions, numbers = _atoms_arrays(sample.atoms)
    stored.update(
        _write_padded(root, "atoms", index, {"positions": positions, "numbers": numbers}, "atoms")
    )
    root["meta"]["n_atoms"][index] = len(positions)
    if "acquisition" in root:
        stored.update(_write_acquisition(root, index, sample))
    if "alignment" in root:
        stored.update(_write_alignment(root, index, sample))

    names = list(root.attrs.get("checksummed_arrays", CHECKSUMMED_ARRAYS))
    digests = sample_digests(stored, names)
    root["checksums"][index] = digests
    root["complete"][index] = True
    return combined_hex(digests)


def _write_padded(
    root, group: str, index: int, rows: Mapping[str, np.ndarray], what: str
) -> dict[str, np.ndarray]:
    """Write one sample's rows of a ragged group into its padded chunks; return them by key."""
    specs = arrays_of(group)
    count = len(rows[specs[0].name])
    capacity = root[group][specs[0].written_name].shape[1]
    if count > capacity:
        limit = "max_atoms" if group == "atoms" else "max_events"
        noun = "atoms" if group == "atoms" else "damage events"
        raise ValueError(f"{what}: {count} {noun}, more than the store's {limit}={capacity}")
    stored = {}
    for spec in specs:
        tail = tuple(spec.shape[1:])
        values = np.asarray(rows[spec.name]).astype(spec.dtype).reshape(count, *tail)
        padded = np.zeros((capacity, *tail), dtype=spec.dtype)
        padded[:count] = values
        root[group][spec.written_name][index] = padded
        stored[spec.key] = values
    return stored


def _write_acquisition(root, index: int, sample) -> dict[str, np.ndarray]:
    """Write a sample's acquisition, damage events and their meta; return the stored arrays."""
    acq = getattr(sample, "acquisition", None)
    if acq is None:
        raise ValueError("acquisition: the store records acquisitions; expected sample.acquisition")
    n_angles = root["acquisition"]["index"].shape[1]
    if acq.n_projections != n_angles:
        raise ValueError(f"acquisition: {acq.n_projections} projections, expected {n_angles}")
    source = {"index": acq.step, "dose": acq.dose, "cumulative_dose": acq.cumulative_dose}
    stored = {}
    for spec in arrays_of("acquisition"):
        values = np.asarray(source[spec.name]).astype(spec.dtype)
        root["acquisition"][spec.name][index] = values
        stored[spec.key] = values

    history = getattr(sample, "history", None)
    n_atoms = 0 if sample.atoms is None else len(sample.atoms)
    events = empty_events() if history is None else history.to_arrays()
    if history is not None and not np.array_equal(history.ids, np.arange(n_atoms)):
        raise ValueError("history: expected atom ids 0..n-1 (rows of the stored atoms)")
    n_events = len(events["step"])
    stored.update(_write_padded(root, "damage", index, events, "history"))

    meta = dict(sample.meta or {})
    values = {
        "total_dose": acq.total_dose,
        "tilt_scheme": acq.scheme,
        "dose_profile": acq.dose_profile,
        "damage_model": meta.get("damage_model", "none"),
        RAGGED_COUNTS["damage"]: n_events,
        "n_sputtered": int(np.count_nonzero(events["kind"] == 1)),
    }
    for field in meta_of("acquisition"):
        array = root["meta"][field.name]
        if array.chunks == (1,):  # per-sample fields; plan fields were written by create_store
            array[index] = values[field.name]
    return stored


def _write_alignment(root, index: int, sample) -> dict[str, np.ndarray]:
    """Write a sample's alignment arrays (NaN where it has none) and meta; return them."""
    sizes = {"A": root["alignment"]["angles"].shape[1]}
    stored = {}
    for spec in arrays_of("alignment"):
        shape = spec.sample_shape(sizes)
        value = getattr(sample, spec.field, None)
        values = (
            np.full(shape, spec.fill, dtype=spec.dtype)
            if value is None
            else np.asarray(value, dtype=spec.dtype)
        )
        if values.shape != shape:
            raise ValueError(f"alignment {spec.name}.shape={values.shape}: expected {shape}")
        root["alignment"][spec.name][index] = values
        stored[spec.key] = values
    meta = dict(getattr(sample, "meta", None) or {})
    for field in meta_of("alignment"):
        array = root["meta"][field.name]
        if array.chunks == (1,):
            array[index] = meta.get(field.name, field.fill)
    return stored


def _atoms_arrays(atoms) -> tuple[np.ndarray, np.ndarray]:
    if atoms is None:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.uint8)
    positions = np.asarray(atoms.get_positions(), dtype=np.float32).reshape(-1, 3)
    numbers = np.asarray(atoms.get_atomic_numbers())
    if numbers.size and (numbers.min() < 1 or numbers.max() > 255):
        raise ValueError(f"atoms: atomic numbers {numbers.min()}..{numbers.max()}: expected 1..255")
    return positions, numbers.astype(np.uint8)


def _pack(root, group: str, complete: np.ndarray) -> np.ndarray:
    """Pack the complete samples' padded rows of a ragged group into its ragged arrays; return
    the offsets (N + 1,)."""
    from zarr.codecs import ZstdCodec

    container = root[group]
    n = complete.shape[0]
    counts = np.where(complete, read_samples(root["meta"][RAGGED_COUNTS[group]]), 0)
    counts = counts.astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    m = int(offsets[-1])
    for spec in arrays_of(group):
        tail = tuple(spec.shape[1:])
        values = np.zeros((m, *tail), dtype=spec.dtype)
        for i in np.flatnonzero(counts):
            values[offsets[i] : offsets[i + 1]] = container[spec.written_name][i, : int(counts[i])]
        if spec.name in container:
            del container[spec.name]
        arr = container.create_array(
            spec.name,
            shape=values.shape,
            chunks=(max(1, min(m, 1 << 20)), *tail),
            dtype=spec.dtype,
            fill_value=0,
            compressors=ZstdCodec(level=3),
        )
        if values.size:
            arr[:] = values
    if "offsets" in container:
        del container["offsets"]
    # the atoms' offsets were always written with the store's Zstd level 3, the damage
    # offsets with Zarr's default codec: kept so, so that stores stay byte-identical
    extra = {"compressors": ZstdCodec(level=3)} if group == "atoms" else {}
    arr = container.create_array(
        "offsets", shape=(n + 1,), chunks=(n + 1,), dtype=np.int64, fill_value=0, **extra
    )
    arr[:] = offsets
    container.attrs["consolidated"] = True
    if complete.all():
        for spec in arrays_of(group):
            del container[spec.written_name]
    return offsets


def consolidate(path: str | Path, *, manifest: bool = True) -> dict:
    """Pack complete samples' atoms (and damage events) into the ragged schema and write the
    checksum manifest.

    Run by a single process (the engine's driver) when no worker is writing. Deletes the padded
    arrays once every sample is complete. Returns the manifest dict.
    """
    root = open_group(path, "r+")
    complete = read_samples(root["complete"])
    n = complete.shape[0]
    for group in RAGGED_COUNTS:
        first = arrays_of(group)[0]
        if group in root and first.written_name in root[group]:
            _pack(root, group, complete)
            if group == "atoms" and complete.all():
                logger.info("%s: all %d samples complete; padded atom arrays removed", path, n)

    for array, codec in dict(root.attrs.get("lossy", {})).items():
        if array not in root or not complete.any():
            continue
        max_err = read_samples(root["meta"][f"{array}_max_error"])[complete]
        rms_err = read_samples(root["meta"][f"{array}_rms_error"])[complete]
        root[array].attrs["lossy"] = {
            "codec": codec,
            "max_abs_error": float(max_err.max()),
            "rms_error": float(np.sqrt(np.mean(rms_err**2))),
            "samples": int(complete.sum()),
        }

    checksums = read_samples(root["checksums"])
    per_sample = {str(i): combined_hex(checksums[i]) for i in np.flatnonzero(complete)}
    dataset_digest = hashlib.sha256(
        "".join(per_sample[str(i)] for i in np.flatnonzero(complete)).encode()
    ).hexdigest()
    result = {
        "dataset": root.attrs.get("dataset", ""),
        "schema_version": SCHEMA_VERSION,
        "n_samples": int(n),
        "n_complete": int(complete.sum()),
        "arrays": list(root.attrs.get("checksummed_arrays", CHECKSUMMED_ARRAYS)),
        "dataset_sha256": dataset_digest,
        "samples": per_sample,
        # Per array, so `simgen verify --against` can name the array that differs.
        "sample_arrays": {
            str(i): [bytes(d).hex() for d in np.asarray(checksums[i], dtype=np.uint8)]
            for i in np.flatnonzero(complete)
        },
        # What readers take from outside the per-sample arrays: the flags and every meta field.
        "complete_sha256": meta_digest(np.asarray(complete, dtype=bool)),
        "meta_sha256": {
            name: meta_digest(read_samples(arr)) for name, arr in root["meta"].arrays()
        },
        # The libraries that wrote it: `simgen verify --against` names those that differ.
        "versions": dict(root.attrs.get("versions") or {}),
    }
    if manifest:
        tmp = Path(path) / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, Path(path) / MANIFEST_NAME)
    root.attrs["dataset_sha256"] = dataset_digest
    return result


def write_single_sample_store(
    path: str | Path,
    sample,
    spec,
    *,
    overwrite: bool = False,
    attrs: Mapping | None = None,
    param: str = "out",
) -> Path:
    """Write one sample as a complete one-sample store, atomically (temp dir, then rename).

    ``spec`` is the :class:`simgen.sample.SampleSpec` (or a dict with at least ``sampling``);
    used by ``simgen simulate`` and the importer. The output policy of :mod:`simgen.tools.outputs`
    applies: an existing store is replaced only with ``overwrite`` (after the new one is
    complete), and any other existing path is refused (``param`` names it in the error).
    """
    from simgen.tools.outputs import check_output, staged_output

    path = Path(path)
    check_output(path, "store", overwrite=overwrite, param=param)
    spec_dict = _jsonable(spec)
    if "sampling" not in spec_dict:
        raise ValueError(f"spec={spec_dict!r}: expected a 'sampling' entry (Å)")
    volume = np.asarray(sample.volume)
    meta = {
        k: [v]
        for k, v in spec_dict.items()
        if isinstance(v, (str, int, float, bool)) and k not in ("index",)
    }
    meta.update(
        {
            k: [v]
            for k, v in (sample.meta or {}).items()
            if isinstance(v, (str, int, float, bool, np.generic)) and k not in ("index", "n_atoms")
        }
    )
    meta["index"] = [0]
    with staged_output(path, "store", overwrite=overwrite, param=param) as tmp:
        layout = StoreLayout(
            1,
            n_angles=len(sample.angles),
            size=volume.shape[0],
            sampling=float(spec_dict["sampling"]),
            max_atoms=max(1, 0 if sample.atoms is None else len(sample.atoms)),
            has_target=sample.target is not None,
            acquisition=bool(spec_dict.get("tilt_scheme") or spec_dict.get("damage_model")),
            max_events=max(1, len(getattr(getattr(sample, "history", None), "events", ()) or ())),
        )
        name = spec_dict.get("name", path.stem)
        root = create_store(tmp, {"name": name, **spec_dict}, layout, meta=meta, attrs=attrs)
        write_sample(root, 0, sample)
        consolidate(tmp)
    return path
