"""Atomic model files: one reader per format, chosen by suffix from a registry (as ``ase.io``).

``load_model(path)`` looks the suffix up in :data:`MODEL_FORMATS` (``.npy``, ``.mat``, ``.txt`` /
``.dat``); any other file goes to ``ase.io.read`` (xyz, extxyz, cif, pdb, ...), after a check of
the XYZ atom counts. Every reader returns ``ase.Atoms`` with finite positions in Å and known
elements, or raises a one-line ``ValueError`` naming the file.

MATLAB files are read once, by :func:`read_mat` (also used by :mod:`simgen.importer` for tilt
series): v5 with ``scipy.io.loadmat``; v7.3 (HDF5) with h5py, which sees every array transposed
because MATLAB stores arrays column-major, so each is transposed back to MATLAB's own shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MODEL_FORMATS",
    "ModelFormat",
    "define_model_format",
    "load_model",
    "write_model",
    "read_mat",
]

_POSITION_KEYS = (
    "model",
    "atoms",
    "positions",
    "pos",
    "xyz",
    "coordinates",
    "coords",
    "atom_pos",
    "atomPos",
)
_TYPE_KEYS = (
    "types",
    "atomtype",
    "atom_type",
    "atom_types",
    "atomtypes",
    "species",
    "type",
    "numbers",
    "elements",
)
_EXPECTED = "an atomic model (.xyz/.extxyz/.cif or any ASE format, .npy or .mat 3×N positions with types, .txt 'species x y z')"


@dataclass(frozen=True)
class ModelFormat:
    """A model-file format of our own: its name, suffixes, reader and one line of description."""

    name: str
    suffixes: tuple[str, ...]
    read: Callable
    description: str


#: Our own model formats by name; every other suffix is read by ``ase.io.read``.
MODEL_FORMATS: dict[str, ModelFormat] = {}


def define_model_format(name: str, suffixes: Sequence[str], description: str):
    """Register a reader ``read(path, *, elements, key, types, index_base) -> ase.Atoms``."""

    def decorate(read: Callable) -> Callable:
        MODEL_FORMATS[name] = ModelFormat(name, tuple(suffixes), read, description)
        return read

    return decorate


def _format_for(path: Path) -> ModelFormat | None:
    suffix = path.suffix.lower()
    for model_format in MODEL_FORMATS.values():
        if suffix in model_format.suffixes:
            return model_format
    return None


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _check_symbol(symbol: str, path) -> str:
    from ase.data import atomic_numbers

    if symbol not in atomic_numbers or symbol == "X":
        raise ValueError(
            f"path={str(path)!r}: unknown element {symbol!r}; expected chemical symbols such as 'Pt'"
        )
    return symbol


def _elements_list(elements) -> list[str] | None:
    if elements is None:
        return None
    if isinstance(elements, str):
        elements = [part.strip() for part in elements.split(",") if part.strip()]
    elements = list(elements)
    if not elements:
        raise ValueError("elements=[]: expected element symbols, e.g. ['Fe', 'Pt']")
    from ase.data import atomic_numbers

    for symbol in elements:
        if symbol not in atomic_numbers or symbol == "X":
            raise ValueError(
                f"elements={','.join(map(str, elements))!r}: unknown element {symbol!r}; "
                "expected chemical symbols such as 'Pt'"
            )
    return elements


def _check_finite(atoms, path):
    finite = np.all(np.isfinite(atoms.positions), axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"path={str(path)!r}: atom {first + 1} (of {int((~finite).sum())} such) has a NaN or "
            "infinite coordinate; expected finite positions in Å"
        )
    return atoms


def _atoms_from_arrays(positions, types, elements, path, index_base: int):
    from ase import Atoms

    try:
        positions = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"path={str(path)!r}: positions are not numbers; expected {_EXPECTED}"
        ) from None
    if positions.ndim != 2 or 3 not in positions.shape:
        raise ValueError(
            f"path={str(path)!r}: positions of shape {positions.shape}; expected 3×N or N×3"
        )
    if positions.shape[0] == 3:
        positions = positions.T
    if types is None:
        if elements is None or len(elements) != 1:
            raise ValueError(
                f"elements={elements!r}: {path} holds positions only; expected exactly one element symbol"
            )
        return Atoms(symbols=elements * len(positions), positions=positions, pbc=False)
    types = np.asarray(types).reshape(-1)
    if len(types) != len(positions):
        raise ValueError(
            f"path={str(path)!r}: {len(types)} types for {len(positions)} atoms; expected one per atom"
        )
    if types.dtype.kind in "US":
        symbols = [_check_symbol(str(t).strip(), path) for t in types]
        return Atoms(symbols=symbols, positions=positions, pbc=False)
    species = np.rint(types.astype(np.float64)).astype(np.int64)
    present = sorted(set(species.tolist()))
    if elements is None:
        raise ValueError(
            f"elements=None: {path} labels atoms by species index {present}; expected element symbols for "
            f"indices {index_base}, {index_base + 1}, ... (e.g. elements=['Fe', 'Pt'])"
        )
    if present[0] < index_base or present[-1] >= index_base + len(elements):
        raise ValueError(
            f"elements={elements!r}: {path} has species indices {present}; expected indices "
            f"{index_base}..{index_base + len(elements) - 1} (one element per index)"
        )
    symbols = [elements[s - index_base] for s in species]
    return Atoms(symbols=symbols, positions=positions, pbc=False)


def _split_species(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 4×N or N×4 array: species index first, then x, y, z."""
    if array.shape[0] == 4 and array.shape[1] != 4:
        array = array.T
    return array[:, 1:4], array[:, 0]


# --------------------------------------------------------------------------------------------
# MATLAB
# --------------------------------------------------------------------------------------------


def read_mat(path: str | Path) -> dict[str, np.ndarray]:
    """Every numeric or character array of a MATLAB ``.mat`` file, in MATLAB's own shape.

    v5 files are read by ``scipy.io.loadmat``. v7.3 files are HDF5: MATLAB writes each array in
    column-major order, so h5py sees it transposed (a 3×N MATLAB array reads as N×3); it is
    transposed back here, so both versions give the same arrays. Nested groups give names with
    ``/``; MATLAB ``char`` arrays become arrays of strings (one per row). Raises ``ValueError`` if
    the file is not a MAT-file.
    """
    path = Path(path)
    try:
        from scipy.io import loadmat

        content = loadmat(str(path))
        return {
            k: np.asarray(v)
            for k, v in content.items()
            if not k.startswith("__") and isinstance(v, np.ndarray) and v.dtype.kind in "biufUS"
        }
    except NotImplementedError:  # v7.3
        pass
    except Exception as error:
        raise ValueError(f"path={str(path)!r}: cannot read as MATLAB .mat ({error})") from None
    import h5py

    arrays: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as handle:

            def visit(name, obj):
                if not isinstance(obj, h5py.Dataset) or name.startswith("#refs#"):
                    return
                matlab_class = obj.attrs.get("MATLAB_class", b"")
                if isinstance(matlab_class, bytes):
                    matlab_class = matlab_class.decode(errors="replace")
                data = np.asarray(obj[()])
                if data.dtype.kind not in "biuf":
                    return
                data = data.T
                if matlab_class == "char":
                    rows = np.atleast_2d(data)
                    data = np.array(["".join(map(chr, row)).strip() for row in rows.astype(int)])
                arrays[name] = data

            handle.visititems(visit)
    except OSError as error:
        raise ValueError(f"path={str(path)!r}: cannot read as MATLAB .mat ({error})") from None
    return arrays


@define_model_format(
    "mat",
    (".mat",),
    "MATLAB v5 or v7.3: positions under 'model'/'atoms'/... (3×N), types under 'atomtype'/...",
)
def _read_mat_model(path: Path, *, elements, key, types, index_base):
    try:
        data = read_mat(path)
    except ValueError as error:
        raise ValueError(f"{error}; expected {_EXPECTED}") from None

    def pick(explicit, candidates, what):
        if explicit is not None:
            if explicit not in data:
                raise ValueError(
                    f"key={explicit!r}: not in {path} (keys {sorted(data)}); expected the {what} array"
                )
            return explicit
        lowered = {k.lower(): k for k in data}
        for candidate in candidates:
            if candidate.lower() in lowered:
                return lowered[candidate.lower()]
        return None

    position_key = pick(key, _POSITION_KEYS, "positions")
    if position_key is None:
        raise ValueError(
            f"path={str(path)!r}: no positions among keys {sorted(data)}; pass key= (expected e.g. 'model')"
        )
    positions = np.asarray(data[position_key])
    type_key = pick(None, _TYPE_KEYS, "types")
    mat_types = (
        np.asarray(data[type_key]).reshape(-1)
        if type_key is not None and type_key != position_key
        else None
    )
    if (
        mat_types is None
        and positions.ndim == 2
        and 4 in positions.shape
        and 3 not in positions.shape
    ):
        positions, mat_types = _split_species(positions)
    return _atoms_from_arrays(
        positions, mat_types if types is None else types, elements, path, index_base
    )


# --------------------------------------------------------------------------------------------
# NumPy and text tables
# --------------------------------------------------------------------------------------------


@define_model_format(
    "npy", (".npy",), "3×N or N×3 positions (Å), or 4×N / N×4 with the species index first"
)
def _read_npy(path: Path, *, elements, key, types, index_base):
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ValueError(
            f"path={str(path)!r}: cannot read as .npy ({error}); expected {_EXPECTED}"
        ) from None
    if isinstance(types, (str, Path)):
        types = np.load(types, allow_pickle=False)
    if types is None and array.ndim == 2 and 4 in array.shape and 3 not in array.shape:
        array, types = _split_species(array)
    return _atoms_from_arrays(array, types, elements, path, index_base)


@define_model_format(
    "aet-text",
    (".txt", ".dat"),
    "rows 'species x y z' (species an index or a symbol such as Pt) or 'x y z'; % and # comments",
)
def _read_text_table(path: Path, *, elements, key, types, index_base):
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = line.split("#")[0].split("%")[0].strip()
        if line:
            rows.append((number, line.replace(",", " ").split()))
    if not rows:
        raise ValueError(f"path={str(path)!r}: holds no atoms; expected rows 'species x y z'")
    width = len(rows[0][1])
    for number, fields in rows:
        if len(fields) != width or width not in (3, 4):
            raise ValueError(
                f"path={str(path)!r}: line {number} has {len(fields)} columns; expected 'species x y z' "
                "or 'x y z' on every line"
            )
    symbolic = width == 4 and not _is_number(rows[0][1][0])
    table = []
    species = []
    for number, fields in rows:
        numbers = fields[1:] if width == 4 else fields
        if width == 4:
            species.append(fields[0])
        try:
            table.append([float(v) for v in numbers])
        except ValueError:
            raise ValueError(
                f"path={str(path)!r}: line {number} {' '.join(fields)!r}: expected numbers for x y z"
            ) from None
    positions = np.asarray(table, dtype=np.float64)
    if width == 3:
        return _atoms_from_arrays(positions, types, elements, path, index_base)
    if symbolic:
        return _atoms_from_arrays(positions, np.asarray(species), None, path, index_base)
    try:
        numeric = np.asarray([float(s) for s in species])
    except ValueError:
        bad = next(s for s in species if not _is_number(s))
        raise ValueError(
            f"path={str(path)!r}: species {bad!r} among numeric species; expected one kind per file"
        ) from None
    return _atoms_from_arrays(positions, numeric, elements, path, index_base)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# XYZ and everything else ASE reads
# --------------------------------------------------------------------------------------------


def _check_xyz(path: Path) -> None:
    """Every frame's count line must match the atom lines that follow; every symbol must exist."""
    lines = path.read_text(errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    start = 0
    while start < len(lines):
        head = lines[start].split()
        try:
            count = int(head[0])
        except (IndexError, ValueError):
            if start == 0:
                return  # not an XYZ count line; let ASE decide what the file is
            raise ValueError(
                f"path={str(path)!r}: line {start + 1} {lines[start].strip()!r} follows the atom lines of "
                f"a frame; expected as many atom lines as the count line says"
            ) from None
        atoms = lines[start + 2 : start + 2 + count]
        blank = next((i for i, line in enumerate(atoms) if not line.strip()), None)
        found = len(atoms) if blank is None else blank
        if found < count:
            raise ValueError(
                f"path={str(path)!r}: the count line (line {start + 1}) says {count} atoms but "
                f"{found} atom lines follow; expected them to agree"
            )
        for line in atoms:
            symbol = line.split()[0]
            if not symbol.isdigit():
                _check_symbol(symbol, path)
        start += count + 2


def _read_plain_xyz(path: Path):
    """Tolerant plain-XYZ reader (count line, comment line, 'symbol x y z' rows) or None."""
    from ase import Atoms

    try:
        lines = path.read_text(errors="replace").splitlines()
        count = int(lines[0].split()[0])
        rows = [line.split() for line in lines[2 : 2 + count]]
        symbols = [row[0] for row in rows]
        positions = np.array([[float(v) for v in row[1:4]] for row in rows])
        return Atoms(symbols=symbols, positions=positions, pbc=False)
    except Exception:
        return None


def _read_with_ase(path: Path, format: str | None):
    from ase.io import read

    suffix = path.suffix.lower()
    if format is None and suffix in (".xyz", ".extxyz"):
        _check_xyz(path)
    try:
        atoms = read(str(path), format=format)
    except KeyError as error:  # ASE's message for an unknown symbol is the bare symbol
        raise ValueError(
            f"path={str(path)!r}: unknown element {error.args[0]!r}; expected chemical symbols such as 'Pt'"
        ) from None
    except Exception as error:
        if suffix == ".xyz":
            atoms = _read_plain_xyz(path)
            if atoms is not None:
                return atoms
        raise ValueError(
            f"path={str(path)!r}: ASE could not read it ({error}); expected {_EXPECTED}"
        ) from None
    if isinstance(atoms, list):
        atoms = atoms[-1]
    return atoms


def load_model(
    path,
    *,
    elements: Sequence[str] | str | None = None,
    key: str | None = None,
    types=None,
    index_base: int = 1,
    format: str | None = None,
    allow_empty: bool = False,
):
    """Read an atomic model (positions in Å).

    Parameters
    ----------
    path
        ``.npy``: 3×N or N×3 positions, or 4×N / N×4 with the species index first; ``.mat``
        (MATLAB v5, or v7.3 via h5py, see :func:`read_mat`): positions under ``key`` (default the
        first of 'model', 'atoms', 'positions', ...) and species under 'types'/'atomtype'/... if
        present; ``.txt`` / ``.dat``: rows ``species x y z`` with the species an index or an
        element symbol (``%`` and ``#`` comments), as the AET supplementary data; anything else is
        read by ``ase.io.read`` (xyz, extxyz, cif, pdb, ...; plain XYZ with tabs, CRLF line ends
        or a blank comment line included).
    elements
        Element symbols for species indices ``index_base``, ``index_base + 1``, ... (a list or
        "Fe,Pt"); for positions without types, the one element of every atom.
    key
        ``.mat`` key of the positions array.
    types
        Species indices or symbols (array), or a ``.npy`` file of them, for ``.npy`` positions.
    index_base
        The species index that means ``elements[0]`` (default 1, MATLAB style).
    format
        ASE format name, to override detection by suffix.
    allow_empty
        Accept a model with no atoms (a prediction may rightly be empty).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be read as an atomic model: unreadable, an XYZ count line that
        disagrees with its atom lines, an unknown element, non-finite coordinates, no atoms.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no such file; expected {_EXPECTED}")
    elements = _elements_list(elements)
    model_format = _format_for(path) if format is None else None
    if model_format is not None:
        atoms = model_format.read(
            path, elements=elements, key=key, types=types, index_base=index_base
        )
    else:
        atoms = _read_with_ase(path, format)
    if len(atoms) == 0 and not allow_empty:
        raise ValueError(f"path={str(path)!r}: holds no atoms; expected {_EXPECTED}")
    return _check_finite(atoms, path)


def write_model(atoms, path) -> None:
    """Write ``atoms`` as extended XYZ (``ase.io.write``), readable back by :func:`load_model`."""
    from ase.io import write

    write(str(path), atoms, format="extxyz")
