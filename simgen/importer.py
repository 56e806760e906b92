"""Import an external tilt series (experimental or from another simulator) into a one-sample store.

Reads the projections (``.npy``, ``.mrc``, ``.tif``/``.tiff``, ``.mat`` v5 or v7.3), puts them in this
project's geometry (docs/design.md, contract: tilt series ``[angle, y, x]``, tilt axis = y = image rows,
rotation about the volume centre), normalises them, reconstructs the volume with
:func:`simgen.reconstruction.reconstruct.reconstruct`, and writes a store with one sample (and the ground-truth
model, if given, in the volume frame) that every method and the benchmark can read.

Geometry of an input with ``tilt_axis="x"``: the tilt axis runs along the image columns' direction
(the second array axis), so an atom moves between rows as the tilt changes — as in the AET
benchmark of Liao et al. (NP1_aSi_D2nm: the column index follows the model's x, the tilt axis,
and the row index follows ``y cosθ − z sinθ``). Each image is transposed; a model point
``(x_m, y_m, z_m)`` (origin at the rotation centre) then lies at ``(y_m, x_m, −z_m)`` + volume
centre in this project's frame, a proper rotation, and the tilt angles keep their sign. With
``tilt_axis="y"`` the images are used as they are and the model maps to ``(x_m, y_m, z_m)``.

The rotation centre is the image centre ``(P − 1) / 2`` unless ``origin`` gives its pixel index;
the images are then cropped symmetrically about it, so that it becomes the volume centre.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "import_tilt_series",
    "read_array",
    "read_angles",
    "read_truth",
    "arrange_tilt_series",
    "estimate_background",
    "input_axes_matrix",
    "to_input_frame",
    "normalise_and_reconstruct",
    "Measurement",
    "ReconstructionSettings",
    "thin_store",
]

logger = logging.getLogger(__name__)

_SUFFIXES = (".npy", ".mrc", ".mrcs", ".st", ".ali", ".tif", ".tiff", ".mat")


def _mat_arrays(path: Path) -> dict[str, np.ndarray]:
    """Numeric arrays of a MATLAB file in MATLAB's own shape (the one ``.mat`` reader, v5 or v7.3)."""
    from simgen.structures.io import read_mat

    return {k: v for k, v in read_mat(path).items() if v.dtype.kind in "biuf"}


#: Largest array a reader loads (elements): 2**34 float32 values are 64 GiB.
MAX_ELEMENTS = 2**34


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _checked(data: np.ndarray, where: str, kind: str) -> np.ndarray:
    """A numeric, non-empty array (one-line error otherwise)."""
    if data.dtype.kind not in "biuf":
        raise ValueError(
            f"{where}: not a valid {kind} file (values of type {data.dtype}, expected numbers)"
        )
    if data.size == 0:
        raise ValueError(f"{where}: an empty {kind} array (shape {data.shape}); expected values")
    return data


def _read_npy(path: Path, where: str) -> np.ndarray:
    """A ``.npy`` file, its header checked against the file size and the size limit first."""
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as handle:
            version = npy_format.read_magic(handle)
            read_header = (
                npy_format.read_array_header_1_0
                if version == (1, 0)
                else npy_format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
            offset = handle.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise ValueError(f"{where}: not a valid NPY file ({_first_line(exc)})") from None
    if dtype.hasobject:
        raise ValueError(f"{where}: not a valid NPY file (Python objects, expected numbers)")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count == 0:
        raise ValueError(f"{where}: an empty NPY array (shape {shape}); expected values")
    need = count * dtype.itemsize
    have = path.stat().st_size - offset
    if count > MAX_ELEMENTS:
        raise ValueError(
            f"{where}: the NPY header claims shape {shape} ({count:.3g} values, {need:.3g} bytes); "
            f"expected at most {MAX_ELEMENTS:.3g} values"
        )
    if need > have:
        raise ValueError(
            f"{where}: not a valid NPY file (the header claims shape {shape}, {need} bytes, the "
            f"file holds {have})"
        )
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{where}: not a valid NPY file ({_first_line(exc)})") from None
    return _checked(data, where, "NPY")


def read_array(path: str | Path, *, key: str | None = None, ndim: int | None = 3) -> np.ndarray:
    """Read an array from ``.npy``, ``.mrc``, ``.tif`` or ``.mat``.

    Parameters
    ----------
    path
        The file.
    key
        Name of the array inside a ``.mat`` file. Default: the only array of dimension ``ndim``,
        else the largest one.
    ndim
        Expected number of dimensions used to choose among the arrays of a ``.mat`` file (None:
        any).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise ValueError(f"path={str(path)!r}: file does not exist")
    where = f"path={str(path)!r}"
    if suffix == ".npy":
        return _read_npy(path, where)
    if suffix in (".mrc", ".mrcs", ".st", ".ali"):
        import mrcfile

        try:  # strict: a damaged header is an error naming it, not an empty array
            with mrcfile.open(path, permissive=False) as handle:
                data = handle.data
                if data is None or data.ndim == 0 or data.size == 0:
                    raise ValueError(f"no data (shape {None if data is None else data.shape})")
                return _checked(np.asarray(data).copy(), where, "MRC")
        except (ValueError, OSError, EOFError) as exc:
            if str(exc).startswith(where):
                raise
            raise ValueError(f"{where}: not a valid MRC file ({_first_line(exc)})") from None
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            data = np.asarray(tifffile.imread(path))
        except Exception as exc:  # tifffile raises its own error types for damaged files
            raise ValueError(f"{where}: not a valid TIFF file ({_first_line(exc)})") from None
        return _checked(data, where, "TIFF")
    if suffix == ".mat":
        arrays = _mat_arrays(path)
        if key is not None:
            if key not in arrays:
                raise ValueError(
                    f"key={key!r}: expected one of the numeric arrays {sorted(arrays)} in {path.name}"
                )
            return arrays[key]
        candidates = {k: v for k, v in arrays.items() if ndim is None or v.ndim == ndim}
        if not candidates:
            raise ValueError(
                f"path={str(path)!r}: no {ndim}-D numeric array found (arrays: {sorted(arrays)})"
            )
        chosen = max(candidates, key=lambda k: candidates[k].size)
        if len(candidates) > 1:
            logger.info(
                "%s: chose the largest array %r among %s (pass key= to choose)",
                path.name,
                chosen,
                sorted(candidates),
            )
        return candidates[chosen]
    raise ValueError(f"path={str(path)!r}: expected one of the suffixes {_SUFFIXES}")


def read_angles(path: str | Path, *, key: str | None = None) -> np.ndarray:
    """Tilt angles (degrees) from a file of N values, or of N×3 Euler angles (tilt = 2nd column).

    Text files (``.txt``, ``.csv``, ``.dat``: whitespace or comma separated, ``#``/``%``
    comments), ``.npy`` or ``.mat``. An N×3 (or 3×N) array is read as GENFIRE/RESIRE Euler
    angles ``(φ, θ, ψ)`` whose second angle is the tilt.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"angles={str(path)!r}: file does not exist")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".mat"):
        values = np.asarray(read_array(path, key=key, ndim=None), dtype=np.float64)
    else:
        rows = []
        for line in path.read_text().splitlines():
            line = line.split("#")[0].split("%")[0].strip()
            if line:
                rows.append([float(v) for v in line.replace(",", " ").split()])
        if not rows:
            raise ValueError(
                f"angles={str(path)!r}: expected N numbers, or N rows of 3 Euler angles"
            )
        # Rows of equal length form a table (e.g. N×3 Euler angles); otherwise a flat list.
        equal = len({len(r) for r in rows}) == 1
        values = np.asarray(rows if equal else [v for r in rows for v in r], dtype=np.float64)
    values = np.squeeze(values)
    if values.ndim == 2 and 3 in values.shape:
        values = values if values.shape[1] == 3 else values.T
        if np.any(values[:, 0] != 0) or np.any(values[:, 2] != 0):
            logger.warning(
                "angles: Euler angles with nonzero 1st/3rd column; only the tilt (2nd column) is used"
            )
        values = values[:, 1]
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError(
            f"angles={str(path)!r}: expected N finite angles (degrees) or an N×3 Euler table, got shape {values.shape}"
        )
    return values


def arrange_tilt_series(
    data: np.ndarray,
    n_angles: int,
    *,
    tilt_axis: str = "y",
    stack_axis: int | None = None,
    origin: tuple[float, float] | None = None,
) -> np.ndarray:
    """Put a stack of projections into this project's layout ``[angle, y, x]`` (tilt axis = y).

    Parameters
    ----------
    data
        3-D array holding ``n_angles`` images; the projection index may be on any axis.
    n_angles
        Number of projections.
    tilt_axis
        ``"y"``: the tilt axis runs along the image's first (row) direction, as in this project;
        ``"x"``: along its second (column) direction — each image is transposed.
    stack_axis
        Axis of ``data`` that indexes the projections; default: the only axis of length
        ``n_angles``.
    origin
        ``(row, column)`` pixel index of the rotation centre in the input images; the images are
        cropped symmetrically about it. Default: the image centre.
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"tilt_series.shape={data.shape}: expected a 3-D stack of images")
    if tilt_axis not in ("x", "y"):
        raise ValueError(
            f"tilt_axis={tilt_axis!r}: expected 'y' (image rows) or 'x' (image columns)"
        )
    if stack_axis is None:
        matching = [axis for axis, length in enumerate(data.shape) if length == n_angles]
        if len(matching) != 1:
            raise ValueError(
                f"stack_axis=None: expected exactly one axis of length {n_angles} (the number of angles) "
                f"in shape {data.shape}; pass stack_axis"
            )
        stack_axis = matching[0]
    if not -3 <= stack_axis < 3 or data.shape[stack_axis] != n_angles:
        raise ValueError(
            f"stack_axis={stack_axis!r}: expected an axis of length {n_angles} in shape {data.shape}"
        )
    images = np.moveaxis(data, stack_axis, 0)
    if origin is not None:
        rows, cols = images.shape[1:]
        r0, c0 = (float(v) for v in origin)
        if r0 != int(r0) or c0 != int(c0) or not (0 <= r0 < rows and 0 <= c0 < cols):
            raise ValueError(
                f"origin={origin!r}: expected integer pixel indices inside the {rows}×{cols} images"
            )
        half_r, half_c = int(min(r0, rows - 1 - r0)), int(min(c0, cols - 1 - c0))
        images = images[
            :, int(r0) - half_r : int(r0) + half_r + 1, int(c0) - half_c : int(c0) + half_c + 1
        ]
    if tilt_axis == "x":
        images = np.swapaxes(images, 1, 2)
    return np.ascontiguousarray(images)


def input_axes_matrix(tilt_axis: str) -> np.ndarray:
    """3×3 proper rotation taking the user's model frame to this project's volume frame.

    ``tilt_axis="y"``: the identity. ``"x"``: ``(x, y, z) -> (y, x, -z)`` (the images are
    transposed; see the module docstring).
    """
    if tilt_axis == "y":
        return np.eye(3)
    if tilt_axis == "x":
        return np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    raise ValueError(f"tilt_axis={tilt_axis!r}: expected 'y' (image rows) or 'x' (image columns)")


def to_input_frame(positions, input_frame) -> np.ndarray:
    """Volume-frame positions (Å) back in the frame of the user's input model.

    ``input_frame`` is the store attribute written by :func:`import_tilt_series`
    (``{"axes_matrix": 3×3, "origin": 3}``); ``None`` returns the positions unchanged.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if not input_frame:
        return positions
    matrix = np.asarray(input_frame["axes_matrix"], dtype=np.float64)
    origin = np.asarray(input_frame["origin"], dtype=np.float64)
    # The matrix is orthogonal: its inverse is its transpose (row vectors: (p - o) @ M).
    return (positions - origin) @ matrix


def estimate_background(tilt_series: np.ndarray, border: float = 0.08) -> float:
    """Constant background of a tilt series: the mean of the outer ``border`` fraction of pixels.

    For an isolated particle imaged with vacuum around it, those pixels hold only background (and
    its noise); the mean, not the median, is used since at low dose the counts are small integers.
    """
    tilt_series = np.asarray(tilt_series, dtype=np.float64)
    rows, cols = tilt_series.shape[1:]
    width = max(1, int(round(border * min(rows, cols))))
    mask = np.ones((rows, cols), dtype=bool)
    mask[width:-width, width:-width] = False
    return float(tilt_series[:, mask].mean())


def read_truth(path: str | Path, elements=None) -> tuple[np.ndarray, list[str]]:
    """Positions ``(N, 3)`` Å and element symbols of a ground-truth model, in its own frame.

    Read with :func:`simgen.structures.load_model` (AET text tables of ``species x y z`` rows,
    species 1 = ``elements[0]``; xyz, cif, ``.npy``, ``.mat``, ...).
    """
    from simgen.structures import load_model

    atoms = load_model(path, elements=elements)
    return atoms.get_positions(), atoms.get_chemical_symbols()


def import_tilt_series(
    path: str | Path,
    *,
    angles,
    sampling: float,
    out: str | Path,
    tilt_axis: str = "y",
    key: str | None = None,
    stack_axis: int | None = None,
    origin: tuple[float, float] | None = None,
    truth: str | Path | None = None,
    elements: list[str] | None = None,
    dose: float | None = None,
    gain: float | str | None = "auto",
    background: float | str = 0.0,
    method: str = "sirt",
    iterations: int = 100,
    align: bool | str = False,
    overwrite: bool = False,
    param: str = "out",
    progress: bool | None = None,
) -> Path:
    """Import a tilt series, reconstruct it and write a one-sample store.

    Parameters
    ----------
    path
        Projections (``.npy``, ``.mrc``, ``.tif``, ``.mat``), a 3-D stack.
    angles
        Tilt angles in degrees: a sequence, or a file read by :func:`read_angles`.
    sampling
        Pixel size in Å (= voxel size).
    out
        Store to write (a directory). An existing store is replaced only with ``overwrite``
        (atomically, after the new one is complete); any other existing path is refused
        (:mod:`simgen.tools.outputs`; ``param`` names it in the error).
    tilt_axis, stack_axis, origin
        Image geometry, see :func:`arrange_tilt_series`.
    key
        Array name inside a ``.mat`` file.
    truth
        Ground-truth model (centred on the rotation centre, Å), stored in the volume frame.
    elements
        Element symbols present (species index ``k`` of an AET text model = ``elements[k-1]``).
    dose
        Dose per projection (e/Å²) when the images are counts: the series is normalised as
        ``(counts − background) / (gain · dose)`` (Å² per pixel), as simulated samples are.
        Without it the series is scaled to unit mean of the image sums (relative intensities);
        the refinement then estimates the dose from the atoms it refines
        (:func:`models.refine.refine_sample`).
    gain
        Detector counts per electron: a number, ``"auto"`` (default: estimated from the images'
        Poisson–Gaussian mean–variance line, :func:`simgen.physics.gain.estimate_gain`; a series that is
        not raw counts is imported without a gain, with a warning) or ``None`` (none recorded).
        The store records ``gain`` and ``gain_source`` (``"estimated"`` or ``"given"``).
    background
        Constant background (counts) subtracted before normalising, or ``"auto"``: the mean
        of a border strip of the images (see :func:`estimate_background`).
    method, iterations
        Reconstruction (:func:`simgen.reconstruction.reconstruct.reconstruct`).
    align
        Align the projections first: a method of :data:`simgen.reconstruction.alignment.METHODS` (``"none"``,
        ``"com"``, ``"cross_correlation"``, ``"projection_matching"``;
        :func:`simgen.reconstruction.alignment.align_tilt_series`); ``True`` is ``"cross_correlation"`` (along
        the tilt axis, centre of mass across it) and ``False`` ``"none"``.
    progress
        Show a progress bar for the reconstruction (default:
        :func:`simgen.tools.progress.progress_enabled`, off with ``AET_PROGRESS=0``).

    The store records in its ``input_frame`` attribute how a point of the user's model frame maps
    to the volume frame, ``volume = axes_matrix @ model + origin`` (Å); :func:`to_input_frame`
    applies the inverse, so predictions can be written back in the frame of the user's input.

    Returns
    -------
    pathlib.Path
        The store written.
    """
    from simgen.reconstruction.alignment import METHODS
    from simgen.tools.outputs import check_output

    align_method = {True: "cross_correlation", False: "none"}.get(align, align)
    if align_method not in METHODS:
        raise ValueError(f"align={align!r}: expected one of {', '.join(METHODS)} (or True/False)")
    from simgen.tools.progress import progress_enabled

    check_output(out, "store", overwrite=overwrite, param=param)  # before reading or reconstructing
    if progress is None:
        progress = progress_enabled()
    if not np.isfinite(sampling) or sampling <= 0:
        raise ValueError(f"sampling={sampling!r}: expected a positive pixel size in Å")
    if dose is not None and (not np.isfinite(dose) or dose <= 0):
        raise ValueError(f"dose={dose!r}: expected a positive dose in e/Å² per projection")
    angles_deg, counts = _read_series(path, angles, key, tilt_axis, stack_axis, origin)
    if isinstance(background, str):
        if background != "auto":
            raise ValueError(f"background={background!r}: expected a number of counts or 'auto'")
        background = estimate_background(counts)
        logger.info("estimated background: %.4g counts per pixel", background)
    gain_info = _resolve_gain(counts, gain)
    measurement = Measurement(dose=dose, gain=gain_info.get("gain"), background=background)
    recon = ReconstructionSettings(method=method, iterations=iterations, align=align_method)
    volume = normalise_and_reconstruct(counts, angles_deg, measurement, recon, progress=progress)
    size = volume.shape[0]
    centre = (size - 1) / 2.0 * sampling
    axes_matrix = input_axes_matrix(tilt_axis)

    atoms, elements = _truth_atoms(truth, elements, axes_matrix, centre)
    spec = {
        "name": Path(out).name,
        "sampling": float(sampling),
        "size": int(size),
        "source": str(path),
        "tilt_axis_input": tilt_axis,
        **_recorded_settings(measurement, recon, gain_info, elements),
    }
    from simgen.sample import Sample
    from simgen.store import write_single_sample_store

    sample = Sample(
        atoms=atoms,
        tilt_series=counts,
        angles=angles_deg.astype(np.float32),
        angles_true=angles_deg.astype(np.float32),
        volume=volume.astype(np.float32),
        target=None,
        meta={},
    )
    frame = {
        "axes_matrix": axes_matrix.astype(int).tolist(),
        "origin": [float(centre)] * 3,
        "description": "volume position (Å) = axes_matrix @ input-model position + origin",
    }
    out = write_single_sample_store(
        out,
        sample,
        spec,
        overwrite=overwrite,
        attrs={"imported": True, "input_frame": frame},
        param=param,
    )
    logger.info(
        "imported %s -> %s: %d projections, volume %s", path, out, len(angles_deg), volume.shape
    )
    return Path(out)


def _read_series(path, angles, key, tilt_axis, stack_axis, origin):
    """The angles (degrees) and the (A, P, P) float32 counts of an input file, checked."""
    angles_deg = (
        read_angles(angles)
        if isinstance(angles, (str, Path))
        else np.asarray(angles, dtype=np.float64).ravel()
    )
    raw = read_array(path, key=key)
    counts = arrange_tilt_series(
        raw, len(angles_deg), tilt_axis=tilt_axis, stack_axis=stack_axis, origin=origin
    ).astype(np.float32)
    if counts.shape[1] != counts.shape[2]:
        raise ValueError(
            f"tilt_series.shape={counts.shape}: expected square images (crop them first)"
        )
    return angles_deg, counts


def _truth_atoms(truth, elements, axes_matrix: np.ndarray, centre: float):
    """The true atoms in the volume frame (``None`` without a truth) and the elements present."""
    if truth is None:
        return None, elements
    from ase import Atoms

    model_positions, symbols = read_truth(truth, elements)
    model_positions = np.asarray(model_positions, dtype=np.float64)
    atoms = Atoms(symbols=symbols, positions=model_positions @ axes_matrix.T + centre)
    return atoms, (sorted(set(symbols)) if elements is None else elements)


def _recorded_settings(
    measurement: Measurement, recon: ReconstructionSettings, gain_info: dict, elements
) -> dict:
    """The spec fields that record how an imported series was normalised and reconstructed, in
    the order stores have always had them."""
    if measurement.dose is None:
        normalisation = "relative"
    else:
        normalisation = "counts/(gain·dose)" if gain_info.get("gain") else "counts/dose"
    fields = {
        "recon": recon.method,
        "iterations": int(recon.iterations),
        "normalisation": normalisation,
        "background": float(measurement.background),
        "elements": ",".join(elements or []),
        "split": "test",
        "morphology": "imported",
        "import_align": recon.align,
        **gain_info,
    }
    if measurement.dose is not None:
        fields["dose"] = float(measurement.dose)
    return fields


def _resolve_gain(counts: np.ndarray, gain) -> dict:
    """Store fields ``gain``, ``gain_source`` (and the fit's error) for :func:`import_tilt_series`."""
    if gain is None:
        return {}
    if isinstance(gain, str):
        if gain != "auto":
            raise ValueError(f"gain={gain!r}: expected counts per electron or 'auto'")
        from simgen.physics.gain import estimate_gain

        try:
            fit = estimate_gain(counts)
        except ValueError as exc:
            logger.warning("gain: not estimated (%s); none recorded", exc)
            return {}
        logger.info(
            "estimated gain: %.4g ± %.2g counts per electron (means %.3g–%.3g counts)",
            fit.gain,
            fit.gain_error,
            *fit.mean_range,
        )
        return {"gain": fit.gain, "gain_source": "estimated", "gain_error": fit.gain_error}
    gain = float(gain)
    if not (np.isfinite(gain) and gain > 0):
        raise ValueError(f"gain={gain!r}: expected a positive number of counts per electron")
    return {"gain": gain, "gain_source": "given"}


@dataclass(frozen=True)
class Measurement:
    """How a series of raw counts becomes the forward model's units (Å² of cross-section per pixel).

    ``dose`` in e/Å² per projection (``None``: unknown, the series is normalised to a unit mean
    image sum instead), ``gain`` in counts per electron (``None``: 1), ``background`` in counts
    per pixel.
    """

    dose: float | None = None
    gain: float | None = None
    background: float = 0.0


@dataclass(frozen=True)
class ReconstructionSettings:
    """How the volume is made from the normalised series: alignment, then the reconstruction.

    ``method`` and ``iterations`` as :func:`simgen.reconstruction.reconstruct.reconstruct`,
    ``align`` a method of :data:`simgen.reconstruction.alignment.METHODS`.
    """

    method: str = "sirt"
    iterations: int = 100
    align: str = "none"

    @classmethod
    def of_spec(cls, spec: dict) -> ReconstructionSettings:
        """The reconstruction an imported store's spec records (``recon``, ``iterations``,
        ``import_align``)."""
        return cls(
            method=str(spec.get("recon") or "sirt"),
            iterations=int(spec.get("iterations") or 100),
            align=str(spec.get("import_align") or "none"),
        )


def normalise_and_reconstruct(
    counts: np.ndarray,
    angles_deg: np.ndarray,
    measurement: Measurement,
    recon: ReconstructionSettings = ReconstructionSettings(),  # noqa: B008 (frozen)
    *,
    progress: bool = False,
) -> np.ndarray:
    """Volume of a series of raw counts, normalised as :func:`import_tilt_series` does.

    With a dose: ``(counts − background) / (gain · dose)`` (Å² of cross-section per pixel; gain 1
    when ``None``); without: unit mean image sum (relative). Then the optional alignment and the
    reconstruction (:func:`simgen.reconstruction.reconstruct.reconstruct`).
    """
    from simgen.reconstruction.reconstruct import reconstruct

    dose, gain = measurement.dose, measurement.gain
    signal = np.asarray(counts, dtype=np.float64) - float(measurement.background)
    if dose is not None:
        # Counts per pixel / (gain · dose) = Å² of HAADF cross-section per pixel, as simgen.sample does.
        normalised = signal / (float(dose) * (float(gain) if gain else 1.0))
    else:
        sums = signal.sum(axis=(1, 2))
        normalised = signal / max(float(np.mean(sums)), 1e-30) * signal.shape[1]
    normalised = normalised.astype(np.float32)
    if recon.align != "none":
        from simgen.reconstruction.alignment import align_tilt_series

        normalised = align_tilt_series(normalised, angles_deg, recon.align).aligned
    return reconstruct(
        normalised, angles_deg, method=recon.method, iterations=recon.iterations, progress=progress
    )


def _source_dose(store, sample: dict, dose: float, source_dose: float | None) -> float:
    """The dose of the series to thin: recorded, or given (``--source-dose``); checked."""
    recorded = sample.get("dose")
    recorded = float(recorded) if recorded is not None and np.isfinite(recorded) else None
    source = recorded if source_dose is None else float(source_dose)
    if source is None:
        raise ValueError(
            f"store={str(store)!r}: records no dose; give the source dose (--source-dose)"
        )
    if recorded is not None and source_dose is not None and not np.isclose(recorded, source):
        raise ValueError(
            f"--source-dose={source_dose!r}: the store records a dose of {recorded:g} e/Å²"
        )
    if not dose <= source:
        raise ValueError(
            f"--dose={dose!r}: expected at most the source dose {source:g} e/Å² (thinning only lowers it)"
        )
    return source


def _thinning_gain(sample: dict, raw: np.ndarray) -> float:
    """Counts per electron to thin with: the recorded gain, or 1 (none recorded, or whole-number
    counts with an estimate within 5% of 1: those are electron counts already)."""
    gain = sample.get("gain")
    gain = float(gain) if gain is not None and np.isfinite(gain) else None
    if gain is None:
        logger.warning("store records no detector gain: counts taken as electrons (gain 1)")
        return 1.0
    if abs(gain - 1.0) < 0.05 and np.all(raw == np.rint(raw)):
        # Whole-number counts with a gain estimate this close to 1 are electron counts: thinning
        # them with the estimate would split every count by the estimate's error.
        logger.info("integer counts, estimated gain %.4g: thinning whole electrons (gain 1)", gain)
        return 1.0
    return gain


def thin_store(
    store: str | Path,
    *,
    dose: float,
    out: str | Path,
    seed: int = 0,
    source_dose: float | None = None,
    overwrite: bool = False,
    param: str = "--out",
    progress: bool | None = None,
) -> Path:
    """Write an exact lower-dose version of an imported (or simulated) one-sample store.

    Every detected electron of the measured series is kept with probability
    ``p = dose / source_dose`` (binomial thinning of the gain-corrected counts,
    :func:`simgen.physics.gain.thin_counts`): a Poisson count at the source dose becomes an exact Poisson
    count at ``dose``. The background (electrons) scales by ``p``; the volume is reconstructed
    again as the source was (``recon``, ``iterations``, alignment of its spec). The truth and the
    input frame are copied; the store's ``thinned_from`` attribute records the provenance
    (source store, source dose, target dose, fraction, gain, seed).

    Parameters
    ----------
    store
        Source store (one sample, raw counts in ``tilt_series``).
    dose
        Target dose per projection (e/Å²), at most the source dose.
    out
        Store to write (never an existing path unless ``overwrite``, and then only a store).
    seed
        Seed of the thinning (``numpy.random.default_rng``).
    source_dose
        Dose of the source series when its store records none.
    """
    from simgen.physics.gain import thin_counts
    from simgen.store import open_dataset
    from simgen.tools.outputs import check_output
    from simgen.tools.progress import progress_enabled

    check_output(out, "store", overwrite=overwrite, param=param)
    if not (np.isfinite(dose) and dose > 0):
        raise ValueError(f"--dose={dose!r}: expected a positive dose in e/Å² per projection")
    dataset = open_dataset(store)
    if len(dataset) != 1:
        raise ValueError(
            f"store={str(store)!r}: expected a one-sample store, got {len(dataset)} samples"
        )
    sample = dataset[0]
    spec = dict(dataset.attrs.get("spec") or {})
    source = _source_dose(store, sample, dose, source_dose)
    raw = np.asarray(sample["tilt_series"])
    gain = _thinning_gain(sample, raw)
    fraction = float(dose) / source
    rng = np.random.default_rng(int(seed))
    counts = thin_counts(raw, fraction, rng, gain=gain)
    background = float(sample.get("background") or 0.0) * fraction
    angles_deg = np.asarray(sample["angles"], dtype=np.float64)
    volume = normalise_and_reconstruct(
        counts,
        angles_deg,
        Measurement(dose=float(dose), gain=gain, background=background),
        ReconstructionSettings.of_spec(spec),  # again as the source was
        progress=progress_enabled() if progress is None else progress,
    )
    atoms = None
    if sample.get("positions") is not None and len(sample["positions"]):
        from ase import Atoms

        atoms = Atoms(numbers=np.asarray(sample["numbers"]), positions=sample["positions"])
    provenance = {
        "source_store": str(Path(store).resolve()),
        "source_dose": source,
        "target_dose": float(dose),
        "fraction": fraction,
        "gain": gain,
        "seed": int(seed),
        "method": "binomial thinning of the gain-corrected counts (simgen.physics.gain.thin_counts)",
    }
    spec.update(
        {
            "name": Path(out).name,
            "dose": float(dose),
            "background": background,
            "thinned_from": str(Path(store).resolve()),
            "thinning_source_dose": source,
            "thinning_seed": int(seed),
        }
    )
    spec = {k: v for k, v in spec.items() if not isinstance(v, float) or np.isfinite(v)}
    from simgen.sample import Sample
    from simgen.store import write_single_sample_store

    new = Sample(
        atoms=atoms,
        tilt_series=counts,
        angles=angles_deg.astype(np.float32),
        angles_true=np.asarray(sample.get("angles_true", angles_deg), dtype=np.float32),
        volume=volume.astype(np.float32),
        target=None,
        meta={},
    )
    attrs = {"imported": bool(dataset.attrs.get("imported", False)), "thinned_from": provenance}
    if dataset.attrs.get("input_frame"):
        attrs["input_frame"] = dataset.attrs["input_frame"]
    path = write_single_sample_store(out, new, spec, overwrite=overwrite, attrs=attrs, param=param)
    logger.info(
        "thinned %s (%g e/Å²) -> %s (%g e/Å², p = %.4g)", store, source, path, dose, fraction
    )
    return Path(path)
