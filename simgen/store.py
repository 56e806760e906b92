"""Zarr v3 stores of simulated (or imported) samples: create, write, read, inspect, verify.

Layout (DESIGN.md, contract; N samples, A angles, P = V voxels)::

    /                  attrs: schema_version, dataset, spec (full resolved spec), sampling,
                              package versions, creation info, generation runs
    /tilt_series       float32 (N, A, P, P)  measured detector counts
    /angles            float32 (N, A)        nominal (recorded) angles, degrees
    /angles_true       float32 (N, A)        true angles, degrees
    /volume            float32 (N, V, V, V)  reconstruction, Å² per voxel
    /target            float32 (N, V, V, V)  ideal volume, Å² per voxel
    /alignment/shifts       float32 (N, A, 2)  estimated (dy, dx) translation of each projection, Å
    /alignment/shifts_true  float32 (N, A, 2)  the translation the noise models applied, Å
    /alignment/angles       float32 (N, A)     tilt angles used for the reconstruction, degrees
                                               (schema 2; meta: align, align_shift_error_pm,
                                               align_angle_error_deg, see simgen.alignment)
    /atoms/positions   float32 (M, 3)        ragged: sample i owns rows offsets[i]:offsets[i+1]
    /atoms/numbers     uint8   (M,)
    /atoms/offsets     int64   (N + 1,)
    /meta/<field>      (N,)                  dose, morphology, composition, noise_model, split, ...
    /checksums         uint8   (N, K, 32)    sha256 of each of the sample's K stored arrays
    /failed            str     (N,)          "" or why the sample could not be generated
    /complete          bool    (N,)          set last, after everything else of the sample

Every per-sample array is chunked one sample per chunk and unsharded, so concurrent workers
never touch the same file. The ragged atom arrays cannot be sized before generation, so workers
write atoms into padded per-sample chunks ``/atoms/padded_positions`` (N, max_atoms, 3) and
``/atoms/padded_numbers`` (N, max_atoms) with the count in ``/meta/n_atoms``;
:func:`consolidate` (run by the engine's driver at the end of each run) packs the complete
samples into the ragged schema and, once every sample is complete, deletes the padded arrays.
Readers take atoms from the padded arrays while they exist, else from the ragged ones.

Plan-derived metadata (dose, morphology, ...) is known before any simulation and is written once
by :func:`create_store`; only ``n_atoms`` and the lossy-error fields are written per sample.

Acquisition and beam damage (stores of datasets with ``tilt.scheme``, ``tilt.dose_profile`` or
``damage_models``, see :mod:`simgen.acquisition` and :mod:`simgen.damage`; absent otherwise)::

    /acquisition/index            int32   (N, A)  acquisition step of each stored projection
    /acquisition/dose             float32 (N, A)  dose of each projection, e/Å²
    /acquisition/cumulative_dose  float64 (N, A)  e/Å² received before each projection
    /damage/step      int32   (E,)    acquisition step whose dose caused the event (ragged like
    /damage/id        int64   (E,)    the atoms: sample i owns rows offsets[i]:offsets[i+1]);
    /damage/kind      uint8   (E,)    id = row of the sample's stored (initial) atoms;
    /damage/old       float32 (E, 3)  kind 0 = hop (to ``new``), 1 = sputtered (``new`` NaN)
    /damage/new       float32 (E, 3)
    /damage/offsets   int64   (N + 1,)
    /meta/total_dose, tilt_scheme, dose_profile, damage_model, n_events, n_sputtered

``/atoms`` holds the initial structure; the structure seen by every projection, the final one and
the dose-weighted mean are rebuilt from it and the events (:meth:`Dataset.history`), exactly at the
store's float32 precision. ``open_dataset(path, truth="initial" | "final" | "mean")`` chooses which
of them ``positions``/``numbers`` hold. Workers write events to padded per-sample arrays
(``/damage/padded_*``, capacity ``max_events``), packed by :func:`consolidate` like the atoms.

Lossless Zstd compression by default; ``lossy={"volume": "float16" | "bitround:K"}`` stores an
array as float16 or with K float32 mantissa bits, and records the max and RMS absolute error it
introduced (per sample in ``/meta/<array>_max_error`` / ``_rms_error``, dataset-wide in the
array's attributes after :func:`consolidate`). Checksums are of the stored values, so
:func:`verify_store` detects any chunk that changed or was truncated after generation.
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

__all__ = [
    "SCHEMA_VERSION",
    "CHECKSUMMED_ARRAYS",
    "create_store",
    "write_sample",
    "consolidate",
    "write_single_sample_store",
    "open_dataset",
    "Dataset",
    "inspect_store",
    "format_inspection",
    "verify_store",
    "sample_digests",
    "default_max_atoms",
    "encode_lossy",
    "TRUTHS",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: Schema versions this reader opens: 1 (before alignment was recorded) and 2.
READABLE_SCHEMAS = (1, 2)
SAMPLE_ARRAYS = ("tilt_series", "angles", "angles_true", "volume", "target")
CHECKSUMMED_ARRAYS = (*SAMPLE_ARRAYS, "atoms_positions", "atoms_numbers")
ACQUISITION_ARRAYS = ("index", "dose", "cumulative_dose")
DAMAGE_FIELDS = ("step", "id", "kind", "old", "new")
#: Extra checksummed arrays of stores that record the acquisition and damage.
TRACKED_ARRAYS = (
    *(f"acquisition_{name}" for name in ACQUISITION_ARRAYS),
    *(f"damage_{name}" for name in DAMAGE_FIELDS),
)
#: Per-sample meta fields of stores that record the acquisition (written by the workers).
ACQUISITION_META = {
    "total_dose": (np.float64, 0.0),
    "tilt_scheme": (str, ""),
    "dose_profile": (str, ""),
    "damage_model": (str, ""),
    "n_events": (np.int64, 0),
    "n_sputtered": (np.int64, 0),
}
_DAMAGE_DTYPES = {
    "step": (np.int32, ()),
    "id": (np.int64, ()),
    "kind": (np.uint8, ()),
    "old": (np.float32, (3,)),
    "new": (np.float32, (3,)),
}
#: Ground truths a reader can choose (``open_dataset(truth=...)``).
TRUTHS = ("initial", "final", "mean")
#: Per-projection alignment arrays (schema 2): name -> (dtype, trailing shape, fill).
ALIGNMENT_ARRAYS = ("shifts", "shifts_true", "angles")
#: Extra checksummed arrays of stores that record the alignment.
ALIGNED_ARRAYS = tuple(f"alignment_{name}" for name in ALIGNMENT_ARRAYS)
#: Per-sample meta fields of the alignment (written by the workers).
ALIGNMENT_META = {
    "align": (str, ""),
    "align_shift_error_pm": (np.float64, np.nan),
    "align_angle_error_deg": (np.float64, np.nan),
}
LOCK_NAME = ".generate.lock"
MANIFEST_NAME = "manifest.json"


# --------------------------------------------------------------------------------------------
# Encoding helpers


def encode_lossy(values: np.ndarray, codec: str | None) -> tuple[np.ndarray, float, float]:
    """Apply a lossy encoding; return (stored array, max |error|, RMS error).

    ``codec`` is None (lossless float32), ``"float16"`` or ``"bitround:K"`` (round to nearest,
    ties to even, keeping K of float32's 23 mantissa bits; zeros in the dropped bits compress
    well).
    """
    from simgen.config import parse_lossy

    values = np.ascontiguousarray(values, dtype=np.float32)
    if codec is None:
        return values, 0.0, 0.0
    kind, bits = parse_lossy(codec, "lossy")
    if kind == "float16":
        if np.any(np.abs(values) > np.finfo(np.float16).max):
            raise ValueError(
                f"lossy={codec!r}: values up to {np.abs(values).max():.3g} overflow float16 (max 65504); "
                "use bitround:K instead"
            )
        stored = values.astype(np.float16)
    else:
        drop = 23 - bits
        raw = values.view(np.uint32)
        if drop > 0:
            half = np.uint32(1 << (drop - 1))
            lsb = (raw >> np.uint32(drop)) & np.uint32(1)
            mask = np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
            raw = ((raw + half - np.uint32(1) + lsb) & mask).astype(np.uint32)
        stored = raw.view(np.float32)
    error = stored.astype(np.float64) - values.astype(np.float64)
    if error.size == 0:
        return stored, 0.0, 0.0
    return stored, float(np.abs(error).max()), float(np.sqrt(np.mean(error**2)))


def _digest(values: np.ndarray) -> bytes:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    values = np.ascontiguousarray(values)
    h = hashlib.sha256()
    h.update(f"{values.dtype.str}{values.shape}".encode())
    h.update(values.tobytes())
    return h.digest()


def sample_digests(
    arrays: Mapping[str, np.ndarray | None], names: Sequence[str] = CHECKSUMMED_ARRAYS
) -> np.ndarray:
    """(K, 32) uint8 sha256 digests of a sample's stored arrays, in ``names`` order."""
    out = np.zeros((len(names), 32), dtype=np.uint8)
    for k, name in enumerate(names):
        values = arrays.get(name)
        if values is not None:
            out[k] = np.frombuffer(_digest(values), dtype=np.uint8)
    return out


def _combined_hex(digests: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(digests, dtype=np.uint8).tobytes()).hexdigest()


def default_max_atoms(size: int, sampling: float) -> int:
    """Atoms that can fit a volume at every tilt: a cylinder of the volume's side (diameter and
    height) filled at 0.18 atoms/Å³ (denser than any metal; diamond is 0.176)."""
    side = size * sampling
    return int(np.ceil(0.18 * np.pi / 4 * side**3)) + 1


def _package_versions() -> dict:
    from importlib import metadata

    versions = {}
    for name in ("aet-suite", "numpy", "zarr", "abtem", "astra-toolbox", "ase", "dask"):
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


def _written_rows(array) -> np.ndarray | None:
    """Sorted sample indices whose chunk exists, for a one-sample-per-chunk array in a local store.

    ``None`` when that cannot be told from a directory listing (another store or chunk layout).
    """
    root = getattr(array.store, "root", None)
    encoding = getattr(array.metadata, "chunk_key_encoding", None)
    if (
        root is None
        or not array.shape
        or array.chunks[0] != 1
        or getattr(encoding, "name", None) != "default"
        or getattr(encoding, "separator", None) != "/"
    ):
        return None
    folder = Path(root) / array.path / "c"
    if not folder.is_dir():
        return np.zeros(0, dtype=np.int64)
    with os.scandir(folder) as entries:
        rows = [int(entry.name) for entry in entries if entry.name.isdigit()]
    return np.array(sorted(rows), dtype=np.int64)


def read_samples(array) -> np.ndarray:
    """``array[:]`` of a per-sample array, reading only the chunks that were written.

    Same values as ``array[:]`` (chunks never written hold the fill value), but a store planned
    for 42,588 samples with few written does not cost one chunk lookup per planned sample.
    """
    rows = _written_rows(array)
    if rows is None:
        return np.asarray(array[:])
    out = np.full(array.shape, array.fill_value, dtype=array.dtype)
    if rows.size:
        selection = (rows, *(slice(None),) * (len(array.shape) - 1))
        out[rows] = array.get_orthogonal_selection(selection)
    return out


def _open(path, mode: str = "r"):
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"store={str(path)!r}: not a Zarr store (no zarr.json)")
    return zarr.open_group(str(path), mode=mode)


# --------------------------------------------------------------------------------------------
# Writing


def create_store(
    path: str | Path,
    spec,
    n_samples: int,
    *,
    n_angles: int,
    size: int,
    sampling: float,
    meta: Mapping[str, Sequence] | None = None,
    max_atoms: int | None = None,
    lossy: Mapping[str, str] | None = None,
    compression_level: int = 3,
    has_target: bool = True,
    overwrite: bool = False,
    attrs: Mapping | None = None,
    acquisition: bool | None = None,
    max_events: int | None = None,
    alignment: bool = True,
):
    """Create an empty store for ``n_samples`` samples and write the plan's metadata.

    Parameters
    ----------
    path
        Directory of the store. May exist if it holds no store yet (e.g. only the engine's lock).
    spec
        The resolved dataset spec (a :class:`simgen.config.DatasetSpec` or a dict), recorded in
        the root attributes.
    n_samples, n_angles, size
        N, A and the volume side V = projection side P (voxels).
    sampling
        Voxel size = pixel size (Å).
    meta
        ``{field: N values}`` known before simulation (dose, morphology, split, ...).
    max_atoms
        Padded atom capacity per sample (default :func:`default_max_atoms`).
    lossy
        ``{array: "float16" | "bitround:K"}`` for tilt_series, volume or target.
    compression_level
        Zstd level (lossless).
    has_target
        False for imported data without an ideal volume.
    overwrite
        Replace an existing store (the engine's lock file is kept).
    acquisition
        Record each sample's acquisition (order, doses) and damage events. Default: the spec's
        ``tracks_acquisition`` (datasets with a tilt scheme, dose profile or damage models).
    max_events
        Padded damage-event capacity per sample (default 8 × ``max_atoms``).
    alignment
        Record each sample's estimated and true per-projection shifts and angles (schema 2).

    Returns
    -------
    zarr.Group
    """
    import zarr
    from zarr.codecs import ZstdCodec

    from simgen.config import parse_lossy

    path = Path(path)
    for name, value in (("n_samples", n_samples), ("n_angles", n_angles), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer")
    if not sampling > 0:
        raise ValueError(f"sampling={sampling!r}: expected a positive voxel size in Å")
    lossy = dict(lossy or {})
    for array, codec in lossy.items():
        if array not in ("tilt_series", "volume", "target"):
            raise ValueError(f"lossy={lossy!r}: expected keys among tilt_series, volume, target")
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

    n, a, v = int(n_samples), int(n_angles), int(size)
    max_atoms = int(max_atoms or default_max_atoms(v, sampling))
    if acquisition is None:
        acquisition = bool(getattr(spec, "tracks_acquisition", False))
    max_events = int(max_events or 8 * max_atoms)
    checksummed = (*CHECKSUMMED_ARRAYS, *TRACKED_ARRAYS) if acquisition else CHECKSUMMED_ARRAYS
    if alignment:
        checksummed = (*checksummed, *ALIGNED_ARRAYS)
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

    def per_sample(name, shape, dtype, fill=0, group=root, **extra):
        return group.create_array(
            name,
            shape=(n, *shape),
            chunks=(1, *shape),
            dtype=dtype,
            fill_value=fill,
            compressors=compressors,
            **extra,
        )

    def stored_dtype(array):
        return np.float16 if lossy.get(array) == "float16" else np.float32

    per_sample(
        "tilt_series",
        (a, v, v),
        stored_dtype("tilt_series"),
        dimension_names=("sample", "angle", "y", "x"),
    )
    per_sample("angles", (a,), np.float32, dimension_names=("sample", "angle"))
    per_sample("angles_true", (a,), np.float32, dimension_names=("sample", "angle"))
    per_sample(
        "volume", (v, v, v), stored_dtype("volume"), dimension_names=("sample", "z", "y", "x")
    )
    if has_target:
        per_sample(
            "target", (v, v, v), stored_dtype("target"), dimension_names=("sample", "z", "y", "x")
        )
    for array, codec in lossy.items():
        if array in root:
            root[array].attrs["lossy"] = {"codec": codec}
    root["tilt_series"].attrs.update({"units": "detector counts", "axes": "[sample, angle, y, x]"})
    root["angles"].attrs["units"] = "degrees (nominal, recorded)"
    root["angles_true"].attrs["units"] = "degrees (true)"
    root["volume"].attrs.update(
        {"units": "Å² per voxel (HAADF cross-section)", "axes": "[sample, z, y, x]"}
    )
    if has_target:
        root["target"].attrs.update(
            {"units": "Å² per voxel (HAADF cross-section)", "axes": "[sample, z, y, x]"}
        )

    atoms = root.create_group("atoms")
    per_sample("padded_positions", (max_atoms, 3), np.float32, group=atoms)
    per_sample("padded_numbers", (max_atoms,), np.uint8, group=atoms)
    atoms.attrs.update(
        {"positions_units": "Å, (x, y, z) in the volume frame", "consolidated": False}
    )

    meta_group = root.create_group("meta")
    per_sample("n_atoms", (), np.int64, group=meta_group)
    if acquisition:
        root.attrs["acquisition"] = True
        group = root.create_group("acquisition")
        for name, dtype in zip(ACQUISITION_ARRAYS, (np.int32, np.float32, np.float64)):
            per_sample(name, (a,), dtype, group=group, dimension_names=("sample", "angle"))
        group.attrs.update(
            {
                "index": "acquisition step of each stored projection (0 = first acquired)",
                "dose": "e/Å² per projection",
                "cumulative_dose": "e/Å² received before the projection was acquired",
            }
        )
        damage = root.create_group("damage")
        for name, (dtype, tail) in _DAMAGE_DTYPES.items():
            per_sample(f"padded_{name}", (max_events, *tail), dtype, group=damage)
        damage.attrs.update(
            {
                "consolidated": False,
                "max_events": max_events,
                "kind": {"0": "hop", "1": "sputter"},
                "positions_units": "Å, (x, y, z) in the volume frame",
                "id": "row of the sample's stored (initial) atoms",
            }
        )
        for name, (dtype, fill) in ACQUISITION_META.items():
            if name not in (meta or {}):
                per_sample(name, (), dtype, fill, group=meta_group)
    if alignment:
        group = root.create_group("alignment")
        for name in ALIGNMENT_ARRAYS:
            shape, names = (
                ((a, 2), ("sample", "angle", "axis"))
                if "shifts" in name
                else ((a,), ("sample", "angle"))
            )
            per_sample(name, shape, np.float32, np.nan, group=group, dimension_names=names)
        group.attrs.update(
            {
                "shifts": "estimated (dy, dx) translation of each projection in Å (positive: "
                "content moved to larger indices); the series was shifted back by -shifts",
                "shifts_true": "(dy, dx) translation applied by the noise models, Å",
                "angles": "tilt angles the volume was reconstructed with (estimated), degrees",
            }
        )
        for name, (dtype, fill) in ALIGNMENT_META.items():
            if name not in (meta or {}):
                per_sample(name, (), dtype, fill, group=meta_group)
    for array in lossy:
        per_sample(f"{array}_max_error", (), np.float64, group=meta_group)
        per_sample(f"{array}_rms_error", (), np.float64, group=meta_group)
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
    root = _open(store, "r+") if not hasattr(store, "attrs") else store
    n = root["complete"].shape[0]
    if not 0 <= index < n:
        raise ValueError(f"index={index!r}: expected 0 <= index < {n}")
    lossy = dict(root.attrs.get("lossy", {}))
    root["complete"][index] = False

    stored: dict[str, np.ndarray | None] = {}
    for name in SAMPLE_ARRAYS:
        values = getattr(sample, name)
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
        stored[name] = encoded

    positions, numbers = _atoms_arrays(sample.atoms)
    capacity = root["atoms"]["padded_positions"].shape[1]
    if len(positions) > capacity:
        raise ValueError(
            f"atoms: {len(positions)} atoms, more than the store's max_atoms={capacity}"
        )
    padded_positions = np.zeros((capacity, 3), dtype=np.float32)
    padded_positions[: len(positions)] = positions
    padded_numbers = np.zeros(capacity, dtype=np.uint8)
    padded_numbers[: len(numbers)] = numbers
    root["atoms"]["padded_positions"][index] = padded_positions
    root["atoms"]["padded_numbers"][index] = padded_numbers
    root["meta"]["n_atoms"][index] = len(positions)
    stored["atoms_positions"], stored["atoms_numbers"] = positions, numbers
    if "acquisition" in root:
        stored.update(_write_acquisition(root, index, sample))
    if "alignment" in root:
        stored.update(_write_alignment(root, index, sample))

    names = list(root.attrs.get("checksummed_arrays", CHECKSUMMED_ARRAYS))
    digests = sample_digests(stored, names)
    root["checksums"][index] = digests
    root["complete"][index] = True
    return _combined_hex(digests)


def _write_acquisition(root, index: int, sample) -> dict[str, np.ndarray]:
    """Write a sample's acquisition, damage events and their meta; return the stored arrays."""
    acq = getattr(sample, "acquisition", None)
    if acq is None:
        raise ValueError("acquisition: the store records acquisitions; expected sample.acquisition")
    n_angles = root["acquisition"]["index"].shape[1]
    if acq.n_projections != n_angles:
        raise ValueError(f"acquisition: {acq.n_projections} projections, expected {n_angles}")
    stored = {
        "acquisition_index": acq.step.astype(np.int32),
        "acquisition_dose": acq.dose.astype(np.float32),
        "acquisition_cumulative_dose": acq.cumulative_dose.astype(np.float64),
    }
    for name in ACQUISITION_ARRAYS:
        root["acquisition"][name][index] = stored[f"acquisition_{name}"]

    history = getattr(sample, "history", None)
    n_atoms = 0 if sample.atoms is None else len(sample.atoms)
    events = _empty_events() if history is None else history.to_arrays()
    if history is not None and not np.array_equal(history.ids, np.arange(n_atoms)):
        raise ValueError("history: expected atom ids 0..n-1 (rows of the stored atoms)")
    n_events = len(events["step"])
    capacity = root["damage"]["padded_step"].shape[1]
    if n_events > capacity:
        raise ValueError(
            f"history: {n_events} damage events, more than the store's max_events={capacity}"
        )
    for name, (dtype, tail) in _DAMAGE_DTYPES.items():
        values = np.asarray(events[name]).astype(dtype).reshape(n_events, *tail)
        padded = np.zeros((capacity, *tail), dtype=dtype)
        padded[:n_events] = values
        root["damage"][f"padded_{name}"][index] = padded
        stored[f"damage_{name}"] = values

    meta = dict(sample.meta or {})
    values = {
        "total_dose": acq.total_dose,
        "tilt_scheme": acq.scheme,
        "dose_profile": acq.dose_profile,
        "damage_model": meta.get("damage_model", "none"),
        "n_events": n_events,
        "n_sputtered": int(np.count_nonzero(events["kind"] == 1)),
    }
    for name, value in values.items():
        array = root["meta"][name]
        if array.chunks == (1,):  # per-sample fields; plan fields were written by create_store
            array[index] = value
    return stored


def _write_alignment(root, index: int, sample) -> dict[str, np.ndarray]:
    """Write a sample's alignment arrays (NaN where it has none) and meta; return them."""
    n_angles = root["alignment"]["angles"].shape[1]
    stored = {}
    for name in ALIGNMENT_ARRAYS:
        shape = (n_angles, 2) if "shifts" in name else (n_angles,)
        value = getattr(sample, name if name != "angles" else "angles_estimated", None)
        values = (
            np.full(shape, np.nan, dtype=np.float32)
            if value is None
            else np.asarray(value, dtype=np.float32)
        )
        if values.shape != shape:
            raise ValueError(f"alignment {name}.shape={values.shape}: expected {shape}")
        root["alignment"][name][index] = values
        stored[f"alignment_{name}"] = values
    meta = dict(getattr(sample, "meta", None) or {})
    for name, (_dtype, fill) in ALIGNMENT_META.items():
        array = root["meta"][name]
        if array.chunks == (1,):
            array[index] = meta.get(name, fill)
    return stored


def _empty_events() -> dict[str, np.ndarray]:
    return {
        name: np.zeros((0, *tail), dtype=dtype) for name, (dtype, tail) in _DAMAGE_DTYPES.items()
    }


def _atoms_arrays(atoms) -> tuple[np.ndarray, np.ndarray]:
    if atoms is None:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.uint8)
    positions = np.asarray(atoms.get_positions(), dtype=np.float32).reshape(-1, 3)
    numbers = np.asarray(atoms.get_atomic_numbers())
    if numbers.size and (numbers.min() < 1 or numbers.max() > 255):
        raise ValueError(f"atoms: atomic numbers {numbers.min()}..{numbers.max()}: expected 1..255")
    return positions, numbers.astype(np.uint8)


def consolidate(path: str | Path, *, manifest: bool = True) -> dict:
    """Pack complete samples' atoms into the ragged schema and write the checksum manifest.

    Run by a single process (the engine's driver) when no worker is writing. Deletes the padded
    atom arrays once every sample is complete. Returns the manifest dict.
    """
    root = _open(path, "r+")
    complete = read_samples(root["complete"])
    n = complete.shape[0]
    atoms = root["atoms"]
    if "padded_positions" in atoms:
        n_atoms = np.where(complete, read_samples(root["meta"]["n_atoms"]), 0).astype(np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(n_atoms)
        m = int(offsets[-1])
        positions = np.zeros((m, 3), dtype=np.float32)
        numbers = np.zeros(m, dtype=np.uint8)
        for i in np.flatnonzero(n_atoms):
            k = int(n_atoms[i])
            positions[offsets[i] : offsets[i + 1]] = atoms["padded_positions"][i, :k]
            numbers[offsets[i] : offsets[i + 1]] = atoms["padded_numbers"][i, :k]
        from zarr.codecs import ZstdCodec

        chunk = max(1, min(m, 1 << 20))
        for name, values, chunks in (
            ("positions", positions, (chunk, 3)),
            ("numbers", numbers, (chunk,)),
            ("offsets", offsets, (n + 1,)),
        ):
            if name in atoms:
                del atoms[name]
            arr = atoms.create_array(
                name,
                shape=values.shape,
                chunks=chunks,
                dtype=values.dtype,
                fill_value=0,
                compressors=ZstdCodec(level=3),
            )
            if values.size:
                arr[:] = values
        atoms.attrs["consolidated"] = True
        if complete.all():
            del atoms["padded_positions"]
            del atoms["padded_numbers"]
            logger.info("%s: all %d samples complete; padded atom arrays removed", path, n)

    if "damage" in root and "padded_step" in root["damage"]:
        _consolidate_damage(root, complete)

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
    per_sample = {str(i): _combined_hex(checksums[i]) for i in np.flatnonzero(complete)}
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
    }
    if manifest:
        tmp = Path(path) / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, Path(path) / MANIFEST_NAME)
    root.attrs["dataset_sha256"] = dataset_digest
    return result


def _consolidate_damage(root, complete: np.ndarray) -> None:
    """Pack the complete samples' padded damage events into the ragged ``/damage`` arrays."""
    from zarr.codecs import ZstdCodec

    damage = root["damage"]
    n = complete.shape[0]
    counts = np.where(complete, read_samples(root["meta"]["n_events"]), 0).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    m = int(offsets[-1])
    for name, (dtype, tail) in _DAMAGE_DTYPES.items():
        values = np.zeros((m, *tail), dtype=dtype)
        for i in np.flatnonzero(counts):
            values[offsets[i] : offsets[i + 1]] = damage[f"padded_{name}"][i, : int(counts[i])]
        if name in damage:
            del damage[name]
        arr = damage.create_array(
            name,
            shape=values.shape,
            chunks=(max(1, min(m, 1 << 20)), *tail),
            dtype=dtype,
            fill_value=0,
            compressors=ZstdCodec(level=3),
        )
        if values.size:
            arr[:] = values
    if "offsets" in damage:
        del damage["offsets"]
    damage.create_array("offsets", shape=(n + 1,), chunks=(n + 1,), dtype=np.int64, fill_value=0)
    damage["offsets"][:] = offsets
    damage.attrs["consolidated"] = True
    if complete.all():
        for name in _DAMAGE_DTYPES:
            del damage[f"padded_{name}"]


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
    used by ``simgen simulate`` and the importer. The output policy of :mod:`simgen.outputs`
    applies: an existing store is replaced only with ``overwrite`` (after the new one is
    complete), and any other existing path is refused (``param`` names it in the error).
    """
    from simgen.outputs import check_output, staged_output

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
        root = create_store(
            tmp,
            {"name": spec_dict.get("name", path.stem), **spec_dict},
            1,
            n_angles=len(sample.angles),
            size=volume.shape[0],
            sampling=float(spec_dict["sampling"]),
            meta=meta,
            max_atoms=max(1, 0 if sample.atoms is None else len(sample.atoms)),
            has_target=sample.target is not None,
            attrs=attrs,
            acquisition=bool(spec_dict.get("tilt_scheme") or spec_dict.get("damage_model")),
            max_events=max(1, len(getattr(getattr(sample, "history", None), "events", ()) or ())),
        )
        write_sample(root, 0, sample)
        consolidate(tmp)
    return path


# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class _Source:
    path: Path
    root: object
    meta: dict
    complete: np.ndarray
    padded: bool
    offsets: np.ndarray | None
    sampling: float
    acquisition: bool = False
    damage_padded: bool = False
    damage_offsets: np.ndarray | None = None


class Dataset:
    """Read access to a store: ``len``, ``ds[k]`` (k-th sample of this view), iteration, filters.

    ``ds[k]`` is a dict of numpy arrays (``tilt_series``, ``angles``, ``angles_true``,
    ``volume``, ``target`` as float32), the true atoms (``positions`` (M, 3) Å and ``numbers``
    (M,) uint8, also as ``atoms = {"positions", "numbers"}``), ``elements`` (symbols present,
    sorted), ``sampling`` (Å), ``index`` (in the store) and every ``/meta`` field (``dose``,
    ``morphology``, ``composition``, ``noise_model``, ``split``, ``size_nm``, ``n_atoms``, ...).
    By default only complete samples are visible.

    Stores that record the acquisition add ``acquisition_index``, ``acquisition_dose``,
    ``cumulative_dose`` ((A,) arrays, stored order), ``truth`` and the meta fields
    ``total_dose``, ``tilt_scheme``, ``dose_profile``, ``damage_model``, ``n_events``; the true
    atoms are the view's ``truth``: the ``"initial"`` structure (default), the ``"final"`` one
    (after the whole series) or the dose-weighted ``"mean"`` (see
    :meth:`simgen.damage.DamageHistory.dose_weighted_mean`). Without damage all three are the
    stored atoms.
    """

    def __init__(self, source: _Source, indices: np.ndarray, truth: str = "initial") -> None:
        self._source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.truth = _check_truth(truth)

    # ---- properties
    @property
    def path(self) -> Path:
        return self._source.path

    @property
    def sampling(self) -> float:
        return self._source.sampling

    @property
    def attrs(self) -> dict:
        return dict(self._source.root.attrs)

    @property
    def name(self) -> str:
        return str(self._source.root.attrs.get("dataset", ""))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self._source.meta)

    def meta(self, field_name: str) -> np.ndarray:
        """Values of one ``/meta`` field for the samples of this view."""
        if field_name not in self._source.meta:
            raise ValueError(
                f"field={field_name!r}: expected one of {', '.join(self._source.meta)}"
            )
        return self._source.meta[field_name][self.indices]

    @property
    def elements(self) -> tuple[str, ...]:
        """Element symbols present in the samples of this view (sorted)."""
        from ase.data import chemical_symbols

        present: set[int] = set()
        for i in self.indices:
            present.update(int(z) for z in np.unique(self._numbers(int(i))))
        return tuple(sorted(chemical_symbols[z] for z in present))

    # ---- sequence protocol
    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, {len(self)} samples)"

    def __getitem__(self, k: int) -> dict:
        if isinstance(k, slice):
            return Dataset(self._source, self.indices[k], self.truth)
        if not -len(self) <= k < len(self):
            raise IndexError(f"sample {k} out of range for a view of {len(self)} samples")
        return self.read(int(self.indices[k]))

    def read(self, index: int, truth: str | None = None) -> dict:
        """Sample ``index`` of the store (not of the view); ``truth`` overrides the view's."""
        from ase.data import chemical_symbols

        truth = self.truth if truth is None else _check_truth(truth)
        src = self._source
        out: dict = {
            "index": int(index),
            "sampling": src.sampling,
            "complete": bool(src.complete[index]),
        }
        for name in SAMPLE_ARRAYS:
            out[name] = (
                np.asarray(src.root[name][index], dtype=np.float32) if name in src.root else None
            )
        positions, numbers = self._positions(index), self._numbers(index)
        if src.acquisition:
            group = src.root["acquisition"]
            out["acquisition_index"] = np.asarray(group["index"][index], dtype=np.int64)
            out["acquisition_dose"] = np.asarray(group["dose"][index], dtype=np.float32)
            out["cumulative_dose"] = np.asarray(group["cumulative_dose"][index], dtype=np.float64)
            out["truth"] = truth
            if truth != "initial" and int(src.meta["n_events"][index]) > 0:
                positions, numbers = self.truth_atoms(index, truth)
        if "alignment" in src.root:
            group = src.root["alignment"]
            out["shifts"] = np.asarray(group["shifts"][index], dtype=np.float32)
            out["shifts_true"] = np.asarray(group["shifts_true"][index], dtype=np.float32)
            out["angles_estimated"] = np.asarray(group["angles"][index], dtype=np.float32)
        out["positions"], out["numbers"] = positions, numbers
        out["atoms"] = {"positions": positions, "numbers": numbers}
        out["elements"] = tuple(sorted({chemical_symbols[int(z)] for z in np.unique(numbers)}))
        for field_name, values in src.meta.items():
            value = values[index]
            out.setdefault(field_name, value.item() if isinstance(value, np.generic) else value)
        if (
            not out["elements"]
            and "elements" in src.meta
            and isinstance(src.meta["elements"][index], str)
        ):
            # imported data without a true model: the elements the user declared ("Fe,Pt")
            out["elements"] = tuple(e for e in src.meta["elements"][index].split(",") if e)
        return out

    # ---- acquisition and damage
    def events(self, index: int) -> dict[str, np.ndarray]:
        """Damage events of sample ``index``: step, id, kind (0 hop, 1 sputter), old, new (Å)."""
        src = self._source
        if not src.acquisition:
            return _empty_events()
        k = int(src.meta["n_events"][index])
        damage = src.root["damage"]
        if src.damage_padded:
            return {
                name: np.asarray(damage[f"padded_{name}"][index, :k]) for name in _DAMAGE_DTYPES
            }
        a, b = int(src.damage_offsets[index]), int(src.damage_offsets[index + 1])
        return {name: np.asarray(damage[name][a:b]) for name in _DAMAGE_DTYPES}

    def acquisition(self, index: int):
        """The :class:`simgen.acquisition.Acquisition` of sample ``index`` (angles, order, doses)."""
        from simgen.acquisition import Acquisition

        src = self._source
        if not src.acquisition:
            raise ValueError(f"store={str(self.path)!r}: records no acquisition (no damage models)")
        step = np.asarray(src.root["acquisition"]["index"][index], dtype=np.int64)
        order = np.empty_like(step)
        order[step] = np.arange(step.size)
        meta = src.meta
        return Acquisition(
            angles=np.asarray(src.root["angles"][index], dtype=np.float64),
            order=order,
            dose=np.asarray(src.root["acquisition"]["dose"][index], dtype=np.float64),
            scheme=str(meta["tilt_scheme"][index]) if "tilt_scheme" in meta else "explicit",
            dose_profile=str(meta["dose_profile"][index]) if "dose_profile" in meta else "uniform",
        )

    def history(self, index: int):
        """The :class:`simgen.damage.DamageHistory` of sample ``index``, rebuilt from the store.

        Its structures (``structure_at(i)``, ``final()``, ``dose_weighted_mean()``) start from the
        stored float32 atoms (ids = their rows) and apply the stored events, so they equal the
        simulated ones at the store's float32 precision. Doses are the stored float32 values.
        """
        from ase import Atoms

        from simgen.damage import DamageEvent, DamageHistory

        acq = self.acquisition(index)
        atoms = Atoms(
            numbers=self._numbers(index).astype(np.int64),
            positions=self._positions(index).astype(np.float64),
        )
        atoms.arrays["ids"] = np.arange(len(atoms), dtype=np.int64)
        arrays = self.events(index)
        events = tuple(
            DamageEvent(
                step=int(step),
                projection=int(acq.order[step]),
                id=int(atom_id),
                kind="hop" if kind == 0 else "sputter",
                old=tuple(float(v) for v in old),
                new=tuple(float(v) for v in new),
                model="",
            )
            for step, atom_id, kind, old, new in zip(
                arrays["step"], arrays["id"], arrays["kind"], arrays["old"], arrays["new"]
            )
        )
        return DamageHistory(atoms, acq, events)

    def truth_atoms(self, index: int, truth: str = "initial") -> tuple[np.ndarray, np.ndarray]:
        """(positions (M, 3) float32 Å, numbers (M,) uint8) of the chosen ground truth."""
        truth = _check_truth(truth)
        src = self._source
        if truth == "initial" or not src.acquisition or int(src.meta["n_events"][index]) == 0:
            return self._positions(index), self._numbers(index)
        history = self.history(index)
        atoms = history.final() if truth == "final" else history.dose_weighted_mean()
        return (
            np.asarray(atoms.positions, dtype=np.float32).reshape(-1, 3),
            np.asarray(atoms.numbers, dtype=np.uint8),
        )

    def structure_at(self, index: int, projection: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions float32 Å, numbers uint8) seen by stored projection ``projection``."""
        src = self._source
        if not src.acquisition or int(src.meta["n_events"][index]) == 0:
            return self._positions(index), self._numbers(index)
        atoms = self.history(index).structure_at(int(projection))
        return (
            np.asarray(atoms.positions, dtype=np.float32).reshape(-1, 3),
            np.asarray(atoms.numbers, dtype=np.uint8),
        )

    def _positions(self, index: int) -> np.ndarray:
        src = self._source
        if src.padded:
            k = int(src.meta["n_atoms"][index])
            return np.asarray(src.root["atoms"]["padded_positions"][index, :k], dtype=np.float32)
        a, b = int(src.offsets[index]), int(src.offsets[index + 1])
        return np.asarray(src.root["atoms"]["positions"][a:b], dtype=np.float32).reshape(-1, 3)

    def _numbers(self, index: int) -> np.ndarray:
        src = self._source
        if src.padded:
            k = int(src.meta["n_atoms"][index])
            return np.asarray(src.root["atoms"]["padded_numbers"][index, :k], dtype=np.uint8)
        a, b = int(src.offsets[index]), int(src.offsets[index + 1])
        return np.asarray(src.root["atoms"]["numbers"][a:b], dtype=np.uint8)

    # ---- views
    def filter(self, **criteria) -> Dataset:
        """A view of the samples whose meta fields match: ``ds.filter(split="test", dose=[1e3, 1e4])``.

        A value matches by equality (floats within 1e-9 relative); a list/tuple/set matches any
        of its values; a callable is called with the value and must return True.
        """
        keep = np.ones(len(self.indices), dtype=bool)
        for field_name, wanted in criteria.items():
            values = self.meta(field_name)
            if callable(wanted):
                keep &= np.array([bool(wanted(v)) for v in values], dtype=bool)
                continue
            options = (
                list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
            )
            match = np.zeros(len(values), dtype=bool)
            for option in options:
                if values.dtype.kind == "f":
                    match |= np.isclose(values.astype(np.float64), float(option), rtol=1e-9, atol=0)
                else:
                    match |= values.astype(object) == option
            keep &= match
        return Dataset(self._source, self.indices[keep], self.truth)

    def with_truth(self, truth: str) -> Dataset:
        """The same view with another ground truth (``"initial"``, ``"final"`` or ``"mean"``)."""
        return Dataset(self._source, self.indices, truth)


def _check_truth(truth: str) -> str:
    if truth not in TRUTHS:
        raise ValueError(f"truth={truth!r}: expected one of {', '.join(TRUTHS)}")
    return truth


def open_dataset(
    path: str | Path, *, include_incomplete: bool = False, truth: str = "initial"
) -> Dataset:
    """Open a store for reading; only complete samples unless ``include_incomplete``.

    ``truth`` selects the true atoms of damaged samples: ``"initial"`` (default), ``"final"`` or
    the dose-weighted ``"mean"`` structure (identical for undamaged samples).
    """
    _check_truth(truth)
    path = Path(path)
    root = _open(path, "r")
    version = root.attrs.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise ValueError(
            f"store={str(path)!r}: schema_version={version!r}: expected one of "
            f"{list(READABLE_SCHEMAS)}"
        )
    meta = {name: read_samples(arr) for name, arr in root["meta"].arrays()}
    complete = np.asarray(read_samples(root["complete"]), dtype=bool)
    padded = "padded_positions" in root["atoms"]
    offsets = None if padded else np.asarray(root["atoms"]["offsets"][:], dtype=np.int64)
    acquisition = "acquisition" in root
    damage_padded = acquisition and "padded_step" in root["damage"]
    damage_offsets = (
        np.asarray(root["damage"]["offsets"][:], dtype=np.int64)
        if acquisition and not damage_padded
        else None
    )
    source = _Source(
        path,
        root,
        meta,
        complete,
        padded,
        offsets,
        float(root.attrs["sampling"]),
        acquisition,
        damage_padded,
        damage_offsets,
    )
    indices = np.arange(len(complete)) if include_incomplete else np.flatnonzero(complete)
    return Dataset(source, indices, truth)


# --------------------------------------------------------------------------------------------
# Inspection and verification


def _disk_usage(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                continue
    return total


def inspect_store(path: str | Path) -> dict:
    """Summary of a store: completeness, failures, counts by field, shapes, size on disk."""
    path = Path(path)
    root = _open(path, "r")
    complete = np.asarray(read_samples(root["complete"]), dtype=bool)
    failed_reasons = np.asarray(root["failed"][:]) if "failed" in root else np.array([], dtype=str)
    failed = [
        (int(i), str(failed_reasons[i]))
        for i in np.flatnonzero(failed_reasons != "")
        if not complete[i]
    ]
    meta = {name: np.asarray(arr[:]) for name, arr in root["meta"].arrays()}
    counts = {}
    for field_name in (
        "split",
        "morphology",
        "composition",
        "dose",
        "noise_model",
        "tilt_scheme",
        "damage_model",
        "align",
    ):
        if field_name not in meta:
            continue
        values = meta[field_name][complete]
        uniques, n = np.unique(values, return_counts=True)
        counts[field_name] = {
            (u.item() if isinstance(u, np.generic) else u): int(c) for u, c in zip(uniques, n)
        }
    raw = sum(int(np.prod(root[name].shape[1:])) * 4 for name in SAMPLE_ARRAYS if name in root)
    runs = list(root.attrs.get("runs", []))
    alignment = {}
    if "align" in meta and "align_shift_error_pm" in meta:
        for method in np.unique(meta["align"][complete]):
            if not str(method):  # samples without an alignment record (imported data)
                continue
            chosen = complete & (meta["align"] == method)
            shift = meta["align_shift_error_pm"][chosen]
            angle = meta["align_angle_error_deg"][chosen]
            alignment[str(method)] = {
                "n": int(chosen.sum()),
                "shift_error_pm_median": float(np.nanmedian(shift))
                if np.isfinite(shift).any()
                else float("nan"),
                "shift_error_pm_max": float(np.nanmax(shift))
                if np.isfinite(shift).any()
                else float("nan"),
                "angle_error_deg_median": float(np.nanmedian(angle))
                if np.isfinite(angle).any()
                else float("nan"),
            }
    return {
        "path": str(path),
        "dataset": root.attrs.get("dataset", ""),
        "schema_version": root.attrs.get("schema_version"),
        "n_samples": int(len(complete)),
        "n_complete": int(complete.sum()),
        "n_missing": int((~complete).sum()),
        "missing": [int(i) for i in np.flatnonzero(~complete)],
        "n_failed": len(failed),
        "failed": failed,
        "counts": counts,
        "n_atoms_total": int(meta["n_atoms"][complete].sum()) if "n_atoms" in meta else 0,
        "shapes": {name: list(root[name].shape) for name in SAMPLE_ARRAYS if name in root},
        "sampling": float(root.attrs.get("sampling", 0.0)),
        "lossy": {
            name: dict(root[name].attrs.get("lossy", {}))
            for name in dict(root.attrs.get("lossy", {}))
            if name in root
        },
        "size_on_disk": _disk_usage(path),
        "raw_bytes_per_sample": raw,
        "dataset_sha256": root.attrs.get("dataset_sha256", ""),
        "created": dict(root.attrs.get("created", {})),
        "runs": runs,
        "alignment": alignment,
    }


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def format_inspection(info: Mapping) -> str:
    """Text rendering of :func:`inspect_store` for the ``simgen inspect`` command."""
    lines = [
        f"store: {info['path']}",
        f"dataset: {info['dataset']} (schema {info['schema_version']})",
        f"samples: {info['n_samples']} planned, {info['n_complete']} complete, {info['n_missing']} missing, {info['n_failed']} failed",
    ]
    shapes = info["shapes"]
    if shapes:
        lines.append(
            "arrays: "
            + ", ".join(f"{k} {tuple(v[1:])}" for k, v in shapes.items())
            + f" at {info['sampling']:g} Å"
        )
    for field_name, counts in info["counts"].items():
        text = ", ".join(
            f"{k:g}: {v}" if isinstance(k, float) else f"{k}: {v}" for k, v in counts.items()
        )
        lines.append(f"  by {field_name}: {text or '-'}")
    if info["n_complete"]:
        per_sample = info["size_on_disk"] / info["n_complete"]
        lines.append(
            f"size on disk: {_human_bytes(info['size_on_disk'])} ({_human_bytes(per_sample)} per sample; "
            f"raw float32 {_human_bytes(info['raw_bytes_per_sample'])}, ratio {info['raw_bytes_per_sample'] / max(per_sample, 1):.2f})"
        )
    else:
        lines.append(f"size on disk: {_human_bytes(info['size_on_disk'])}")
    if info.get("alignment"):
        lines.append("alignment  samples  shift error (pm, median / max)  angle error (°, median)")
        for method, row in info["alignment"].items():
            lines.append(
                f"  {method:<22} {row['n']:>4}  {row['shift_error_pm_median']:>8.1f} / "
                f"{row['shift_error_pm_max']:<8.1f}  {row['angle_error_deg_median']:>10.3f}"
            )
    for name, lossy in info["lossy"].items():
        if lossy.get("max_abs_error") is not None:
            lines.append(
                f"lossy {name}: {lossy['codec']} (max |error| {lossy['max_abs_error']:.3g}, RMS {lossy['rms_error']:.3g})"
            )
        else:
            lines.append(f"lossy {name}: {lossy.get('codec')}")
    for index, reason in info["failed"][:20]:
        lines.append(f"  failed sample {index}: {reason}")
    if len(info["failed"]) > 20:
        lines.append(f"  ... and {len(info['failed']) - 20} more failed samples")
    if info["dataset_sha256"]:
        lines.append(f"dataset sha256: {info['dataset_sha256']}")
    return "\n".join(lines)


def _read_stored(root, index: int, padded: bool, offsets: np.ndarray | None) -> dict:
    """The stored arrays of one sample, exactly as written (for checksums)."""
    out = {
        name: (np.asarray(root[name][index]) if name in root else None) for name in SAMPLE_ARRAYS
    }
    if padded:
        k = int(root["meta"]["n_atoms"][index])
        out["atoms_positions"] = np.asarray(root["atoms"]["padded_positions"][index, :k])
        out["atoms_numbers"] = np.asarray(root["atoms"]["padded_numbers"][index, :k])
    else:
        a, b = int(offsets[index]), int(offsets[index + 1])
        out["atoms_positions"] = np.asarray(root["atoms"]["positions"][a:b]).reshape(-1, 3)
        out["atoms_numbers"] = np.asarray(root["atoms"]["numbers"][a:b])
    if "acquisition" in root:
        for name in ACQUISITION_ARRAYS:
            out[f"acquisition_{name}"] = np.asarray(root["acquisition"][name][index])
        damage = root["damage"]
        k = int(root["meta"]["n_events"][index])
        if "padded_step" in damage:
            for name in _DAMAGE_DTYPES:
                out[f"damage_{name}"] = np.asarray(damage[f"padded_{name}"][index, :k])
        else:
            offsets = np.asarray(damage["offsets"][index : index + 2], dtype=np.int64)
            for name in _DAMAGE_DTYPES:
                out[f"damage_{name}"] = np.asarray(damage[name][int(offsets[0]) : int(offsets[1])])
    if "alignment" in root:
        for name in ALIGNMENT_ARRAYS:
            out[f"alignment_{name}"] = np.asarray(root["alignment"][name][index])
    return out


def verify_store(path: str | Path, *, require_complete: bool = False) -> list[str]:
    """Recompute every complete sample's checksums; list each problem by sample index.

    Reports chunks that cannot be decoded (truncated or overwritten files), arrays whose values
    changed since generation, disagreements with ``manifest.json`` and (with
    ``require_complete``) samples that are not complete. An empty list means the store is intact.
    """
    path = Path(path)
    try:
        root = _open(path, "r")
    except FileNotFoundError as exc:
        return [str(exc)]
    problems = []
    complete = np.asarray(read_samples(root["complete"]), dtype=bool)
    checksums = read_samples(root["checksums"])
    names = list(root.attrs.get("checksummed_arrays", CHECKSUMMED_ARRAYS))
    padded = "padded_positions" in root["atoms"]
    offsets = None if padded else np.asarray(root["atoms"]["offsets"][:], dtype=np.int64)
    manifest_path = path / MANIFEST_NAME
    manifest = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())["samples"]
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{MANIFEST_NAME}: unreadable ({type(exc).__name__}: {exc})")
    else:
        # Without the manifest nothing can be checked against it: never report "all match".
        problems.append(
            f"{MANIFEST_NAME}: missing (written when generation finishes; "
            "rerun the same `simgen generate` to resume and write it)"
        )
    for index in np.flatnonzero(complete):
        index = int(index)
        try:
            stored = _read_stored(root, index, padded, offsets)
        except Exception as exc:  # a corrupt chunk raises a codec error of any type
            stored = {}
            for name in names:
                try:
                    _read_stored_one(root, name, index, padded, offsets)
                except Exception as inner:
                    problems.append(
                        f"sample {index}: {name}: unreadable chunk ({type(inner).__name__}: {inner})"
                    )
            if not any(p.startswith(f"sample {index}:") for p in problems):
                problems.append(f"sample {index}: unreadable ({type(exc).__name__}: {exc})")
            continue
        digests = sample_digests(stored, names)
        for k, name in enumerate(names):
            if not np.array_equal(digests[k], checksums[index, k]):
                problems.append(
                    f"sample {index}: {name}: checksum mismatch (changed since it was written)"
                )
        if manifest is None:
            continue
        if str(index) not in manifest:
            problems.append(f"sample {index}: complete but not in {MANIFEST_NAME}")
        elif manifest[str(index)] != _combined_hex(checksums[index]):
            problems.append(f"sample {index}: checksums differ from {MANIFEST_NAME}")
    if require_complete and not complete.all():
        missing = np.flatnonzero(~complete)
        problems.append(
            f"{len(missing)} of {len(complete)} samples are not complete (first: {missing[:10].tolist()})"
        )
    return problems


def _read_stored_one(root, name: str, index: int, padded: bool, offsets) -> None:
    if name in TRACKED_ARRAYS or name in ALIGNED_ARRAYS:
        _read_stored(root, index, padded, offsets)
        return
    if name in SAMPLE_ARRAYS:
        if name in root:
            root[name][index]
        return
    if padded:
        root["atoms"]["padded_positions" if name == "atoms_positions" else "padded_numbers"][index]
    else:
        root["atoms"]["positions" if name == "atoms_positions" else "numbers"][
            int(offsets[index]) : int(offsets[index + 1])
        ]
