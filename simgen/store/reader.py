"""Reading a store: :func:`open_dataset` and its :class:`Dataset` views, :func:`read_samples`.

This is the store API that ``models`` and ``benchmark`` use (and the only one they may import,
see ``tests/test_layers.py``). Arrays, dtypes and fields come from :mod:`simgen.store.schema`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simgen.store.codecs import meta_digest, sample_digests
from simgen.store.schema import (
    ARRAY_BY_KEY,
    CHECKSUMMED_ARRAYS,
    MANIFEST_NAME,
    RAGGED_COUNTS,
    READABLE_SCHEMAS,
    TRUTHS,
    ArraySpec,
    arrays_of,
)

__all__ = [
    "open_dataset",
    "Dataset",
    "DamagedDataError",
    "read_samples",
    "TRUTHS",
    "READABLE_SCHEMAS",
]

#: Dense float arrays a reader refuses when they hold NaN or infinity.
_FINITE_FIELDS = ("tilt_series", "volume", "target")


class DamagedDataError(ValueError):
    """A stored sample (or meta field) that no longer matches its checksum, or holds non-finite
    values: never scored, trained on or predicted from. The message names the store, the sample
    and the array."""


def open_group(path, mode: str = "r"):
    """The store's root Zarr group; ``FileNotFoundError`` naming the path if it is no store."""
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"store={str(path)!r}: not a Zarr store (no zarr.json)")
    return zarr.open_group(str(path), mode=mode)


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


class RaggedGroup:
    """One ragged group (``atoms``, ``damage``): padded per-sample rows while samples are being
    written, packed rows with ``offsets`` after :func:`simgen.store.consolidate`.

    ``counts`` are the rows of each sample (the group's count field of ``/meta``).
    """

    def __init__(self, root, name: str, counts: np.ndarray | None = None) -> None:
        self.group = root[name]
        first = arrays_of(name)[0]
        self.padded = first.written_name in self.group
        self.counts = read_samples(root["meta"][RAGGED_COUNTS[name]]) if counts is None else counts
        self.offsets = None if self.padded else np.asarray(self.group["offsets"][:], dtype=np.int64)

    def read(self, spec: ArraySpec, index: int) -> np.ndarray:
        """Sample ``index``'s rows of ``spec``, as stored."""
        if self.padded:
            k = int(self.counts[index])
            return np.asarray(self.group[spec.written_name][index, :k])
        a, b = int(self.offsets[index]), int(self.offsets[index + 1])
        return np.asarray(self.group[spec.name][a:b]).reshape(-1, *spec.shape[1:])


def empty_events() -> dict[str, np.ndarray]:
    """No damage events: each damage array with zero rows."""
    return {
        spec.name: np.zeros((0, *spec.shape[1:]), dtype=spec.dtype) for spec in arrays_of("damage")
    }


def read_stored(root, key: str, index: int, ragged: dict[str, RaggedGroup]) -> np.ndarray | None:
    """Checksummed array ``key`` of sample ``index`` exactly as stored (None if the store lacks it)."""
    spec = ARRAY_BY_KEY[key]
    if spec.ragged:
        return ragged[spec.group].read(spec, index)
    container = root[spec.group] if spec.group else root
    if spec.name not in container:
        return None
    return np.asarray(container[spec.name][index])


@dataclass
class _Source:
    path: Path
    root: object
    meta: dict
    complete: np.ndarray
    sampling: float
    atoms: RaggedGroup
    damage: RaggedGroup | None = None
    verify: bool = True
    verified: set = None  # sample indices whose checksums were checked

    @property
    def acquisition(self) -> bool:
        return self.damage is not None


def _check_truth(truth: str) -> str:
    if truth not in TRUTHS:
        raise ValueError(f"truth={truth!r}: expected one of {', '.join(TRUTHS)}")
    return truth


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
    stored atoms. Stores that record the alignment (schema 2) add ``shifts``, ``shifts_true``
    and ``angles_estimated``.
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

    def _read_group(self, group: str, index: int, out: dict) -> None:
        """The dense per-sample arrays of ``group`` that the reader returns, by their field."""
        root = self._source.root
        container = root[group] if group else root
        for spec in arrays_of(group):
            if spec.field is None:
                continue
            out[spec.field] = (
                np.asarray(container[spec.name][index], dtype=spec.read_dtype)
                if spec.name in container
                else None
            )

    def read(self, index: int, truth: str | None = None) -> dict:
        """Sample ``index`` of the store (not of the view); ``truth`` overrides the view's."""
        from ase.data import chemical_symbols

        truth = self.truth if truth is None else _check_truth(truth)
        src = self._source
        if src.verify and src.complete[index]:  # an incomplete sample has no checksums yet
            self.check(index)
        out: dict = {
            "index": int(index),
            "sampling": src.sampling,
            "complete": bool(src.complete[index]),
        }
        self._read_group("", index, out)
        positions, numbers = self._positions(index), self._numbers(index)
        if src.acquisition:
            self._read_group("acquisition", index, out)
            out["truth"] = truth
            if truth != "initial" and int(src.meta["n_events"][index]) > 0:
                positions, numbers = self.truth_atoms(index, truth)
        if "alignment" in src.root:
            self._read_group("alignment", index, out)
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

    def check(self, index: int) -> None:
        """Recompute sample ``index``'s checksums from the bytes on disk; raise
        :class:`DamagedDataError` naming the first array that differs, cannot be decoded or
        (volumes, tilt series) holds non-finite values. Each sample is checked once per open."""
        src = self._source
        if src.verified is not None and index in src.verified:
            return
        root = src.root
        where = f"store={str(src.path)!r}: sample {index}"
        hint = f"; `simgen verify {src.path}` lists every damaged sample"
        if "checksums" not in root:
            return
        names = list(root.attrs.get("checksummed_arrays", CHECKSUMMED_ARRAYS))
        ragged = {"atoms": src.atoms}
        if src.damage is not None:
            ragged["damage"] = src.damage
        stored = {}
        for name in names:
            try:
                stored[name] = read_stored(root, name, index, ragged)
            except Exception as exc:  # a corrupt chunk raises a codec error of any type
                raise DamagedDataError(
                    f"{where}: {name!r}: unreadable chunk ({type(exc).__name__}){hint}"
                ) from None
        expected = np.asarray(root["checksums"][index], dtype=np.uint8)
        digests = sample_digests(stored, names)
        for k, name in enumerate(names):
            if not np.array_equal(digests[k], expected[k]):
                raise DamagedDataError(
                    f"{where}: {name!r}: checksum mismatch (changed since it was written){hint}"
                )
        for name in _FINITE_FIELDS:
            values = stored.get(name)
            if values is not None and not np.all(np.isfinite(values)):
                raise DamagedDataError(f"{where}: {name!r}: holds NaN or infinite values{hint}")
        if src.verified is not None:
            src.verified.add(index)

    # ---- acquisition and damage
    def events(self, index: int) -> dict[str, np.ndarray]:
        """Damage events of sample ``index``: step, id, kind (0 hop, 1 sputter), old, new (Å)."""
        src = self._source
        if not src.acquisition:
            return empty_events()
        return {spec.name: src.damage.read(spec, index) for spec in arrays_of("damage")}

    def acquisition(self, index: int):
        """The :class:`simgen.physics.acquisition.Acquisition` of sample ``index`` (angles, order, doses)."""
        from simgen.physics.acquisition import Acquisition

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
        values = self._source.atoms.read(ARRAY_BY_KEY["atoms_positions"], index)
        return np.asarray(values, dtype=np.float32).reshape(-1, 3)

    def _numbers(self, index: int) -> np.ndarray:
        values = self._source.atoms.read(ARRAY_BY_KEY["atoms_numbers"], index)
        return np.asarray(values, dtype=np.uint8)

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


def _check_manifest_meta(path: Path, meta: dict, complete: np.ndarray) -> None:
    """The meta fields and completion flags against the digests in ``manifest.json``."""
    import json

    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        return  # generation not finished yet: nothing to compare with
    except (OSError, UnicodeDecodeError, ValueError):
        raise DamagedDataError(
            f"store={str(path)!r}: {MANIFEST_NAME} is not valid JSON; `simgen verify {path}`"
        ) from None
    expected = manifest.get("meta_sha256") if isinstance(manifest, dict) else None
    if isinstance(expected, dict):
        for name, digest in expected.items():
            if name not in meta or meta_digest(meta[name]) != digest:
                raise DamagedDataError(
                    f"store={str(path)!r}: meta/{name}: differs from {MANIFEST_NAME} (changed or "
                    f"lost since it was written); `simgen verify {path}` lists every problem"
                )
    digest = manifest.get("complete_sha256") if isinstance(manifest, dict) else None
    if (
        digest
        and meta_digest(complete) != digest
        and int(manifest.get("n_complete", -1)) == int(complete.sum())
    ):
        raise DamagedDataError(
            f"store={str(path)!r}: complete: flags differ from {MANIFEST_NAME}; "
            f"`simgen verify {path}` lists every problem"
        )


def open_dataset(
    path: str | Path,
    *,
    include_incomplete: bool = False,
    truth: str = "initial",
    verify: bool = True,
) -> Dataset:
    """Open a store for reading; only complete samples unless ``include_incomplete``.

    ``truth`` selects the true atoms of damaged samples: ``"initial"`` (default), ``"final"`` or
    the dose-weighted ``"mean"`` structure (identical for undamaged samples).

    With ``verify`` (default) the meta fields are checked against ``manifest.json`` here, and each
    sample's checksums the first time it is read: damaged data raise :class:`DamagedDataError`
    (one line naming the sample and array) instead of being used.
    """
    _check_truth(truth)
    path = Path(path)
    root = open_group(path, "r")
    version = root.attrs.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise ValueError(
            f"store={str(path)!r}: schema_version={version!r}: expected one of "
            f"{list(READABLE_SCHEMAS)}"
        )
    meta = {name: read_samples(arr) for name, arr in root["meta"].arrays()}
    complete = np.asarray(read_samples(root["complete"]), dtype=bool)
    if verify:
        _check_manifest_meta(path, meta, complete)
    source = _Source(
        path,
        root,
        meta,
        complete,
        float(root.attrs["sampling"]),
        RaggedGroup(root, "atoms", meta["n_atoms"]),
        RaggedGroup(root, "damage", meta["n_events"]) if "acquisition" in root else None,
        verify=verify,
        verified=set(),
    )
    indices = np.arange(len(complete)) if include_incomplete else np.flatnonzero(complete)
    return Dataset(source, indices, truth)
