"""Tomographic reconstruction of a single-axis tilt series with the ASTRA toolbox.

Geometry (docs/design.md, contract): the tilt axis is y, so every y-slice is an independent 2D
parallel-beam problem. The sinogram of y-slice ``j`` is ``tilt_series[:, j, :]`` (angle, x) and it
reconstructs to ``volume[:, j, :]`` (z, x) when ASTRA is given the angles as −θ in radians
(:func:`simgen.physics.geometry.astra_angles`). Volumes are ``[z, y, x]`` with unit voxel size: the
projections are line sums in voxel units, so ``volume.sum(axis=0)`` reproduces the 0° projection.

Backends
--------
``"matrix"`` (CPU default)
    ASTRA builds the 2D projection matrix ``W`` (``(A·P, P·P)``, ``linear`` projector) once; all
    y-slices are then solved together as sparse × dense products ``W @ X`` with ``X`` of shape
    ``(P², P_y)``: fused numba kernels (:mod:`simgen.reconstruction._sparse`, float32, no allocation per
    iteration, cache-blocked over the dense operand's rows in blocks of the L2 size the OS reports,
    :func:`block_bytes`) whose output rows are split over a thread pool, a few ranges per core.
    This is the same SIRT update as ASTRA's CPU ``SIRT`` (identical to float precision) but more than an order of
    magnitude faster than looping ASTRA over slices (``scripts/bench_sirt.py``).
``"astra"``
    ASTRA's own 2D CPU algorithm run slice by slice (``SIRT``, ``CGLS``, ``FBP``, ``SART``).
``"cuda"``
    ASTRA's 3D GPU algorithms (``SIRT3D_CUDA``, ``CGLS3D_CUDA``). Chosen automatically only when
    ``astra.use_cuda()`` is true, after a one-off check that its forward projector agrees with
    :func:`project`; never called otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from simgen.physics.geometry import astra_angles
from simgen.reconstruction import _sparse
from simgen.registry import RECONSTRUCTION_METHODS
from simgen.tools.progress import progress_bar

__all__ = ["METHODS", "reconstruct", "project", "projection_matrix", "cache_sizes", "block_bytes"]

logger = logging.getLogger(__name__)

METHODS = RECONSTRUCTION_METHODS  # the one definition: simgen.registry
BACKENDS = ("auto", "matrix", "astra", "cuda")
_CHUNKS_PER_THREAD = 2  # row ranges per thread and product (load balance on a busy machine)
_DEFAULT_BLOCK_BYTES = 1 << 20  # when the OS does not report the L2 size
_SYSFS_CACHE = "/sys/devices/system/cpu/cpu0/cache"


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _check_tilt_series(tilt_series, angles_deg) -> tuple[np.ndarray, np.ndarray]:
    tilt_series = np.asarray(tilt_series)
    if tilt_series.ndim != 3:
        raise ValueError(
            f"tilt_series.shape={tilt_series.shape}: expected 3 dimensions (angle, y, x)"
        )
    if tilt_series.size == 0:
        raise ValueError(f"tilt_series.shape={tilt_series.shape}: expected a non-empty array")
    if not np.issubdtype(tilt_series.dtype, np.number) or np.iscomplexobj(tilt_series):
        raise ValueError(f"tilt_series.dtype={tilt_series.dtype}: expected real numbers")
    if not np.all(np.isfinite(tilt_series)):
        raise ValueError("tilt_series: expected finite values, found NaN or inf")
    angles = _check_angles(angles_deg, tilt_series.shape[0], "tilt_series")
    return tilt_series.astype(np.float32, copy=False), angles


def _check_angles(angles_deg, count: int, what: str) -> np.ndarray:
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.ndim != 1 or angles.size != count:
        raise ValueError(
            f"angles_deg.shape={angles.shape}: expected ({count},), one angle (degrees) per "
            f"projection of {what}"
        )
    if not np.all(np.isfinite(angles)):
        raise ValueError(f"angles_deg={angles.tolist()}: expected finite angles in degrees")
    return angles


# --------------------------------------------------------------------------------------------
# the 2D projection matrix
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _cached_matrix(size: int, angles: tuple[float, ...], projector: str):
    import astra

    vol_geom = astra.create_vol_geom(size, size)
    proj_geom = astra.create_proj_geom("parallel", 1.0, size, astra_angles(np.array(angles)))
    projector_id = astra.create_projector(projector, proj_geom, vol_geom)
    matrix_id = astra.projector.matrix(projector_id)
    try:
        matrix = astra.matrix.get(matrix_id).astype(np.float32).tocsr()
    finally:
        astra.matrix.delete(matrix_id)
        astra.projector.delete(projector_id)
    matrix.sort_indices()
    transpose = matrix.T.tocsr()
    transpose.sort_indices()
    return matrix, transpose


def projection_matrix(size: int, angles_deg: Sequence[float], projector: str = "linear"):
    """The 2D parallel-beam projection matrix of one y-slice under the geometry contract.

    Parameters
    ----------
    size
        Width ``P`` of the square slice (z, x) and number of detector pixels, in voxels.
    angles_deg
        Tilt angles in degrees.
    projector
        ASTRA CPU projector type: ``"linear"`` (Joseph, default) or ``"strip"`` (area weights).

    Returns
    -------
    (W, W_T)
        ``scipy.sparse.csr_matrix`` float32 of shape ``(A·P, P·P)`` and its transpose (CSR).
        Rows index ``angle * P + x_detector``; columns index ``z * P + x`` of the slice. Cached
        for the last few (size, angles, projector).
    """
    if projector not in ("linear", "strip", "line"):
        raise ValueError(f"projector={projector!r}: expected 'linear', 'strip' or 'line'")
    if int(size) < 1:
        raise ValueError(f"size={size!r}: expected a positive number of voxels")
    angles = tuple(float(a) for a in np.asarray(angles_deg, dtype=np.float64).ravel())
    return _cached_matrix(int(size), angles, projector)


@functools.lru_cache(maxsize=8)
def _cached_splits(
    size: int, angles: tuple[float, ...], projector: str, transposed: bool, blocks: int
):
    matrix = _cached_matrix(size, angles, projector)[int(transposed)]
    return _sparse.block_splits(matrix, blocks)


def _parse_size(text: str) -> int | None:
    """``"32K"``, ``"2048K"``, ``"1M"`` or ``"65536"`` (sysfs cache sizes) in bytes."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if scale > 1 else text
    return int(digits) * scale if digits.isdigit() and int(digits) > 0 else None


@functools.lru_cache(maxsize=1)
def cache_sizes() -> dict[str, int]:
    """Data cache sizes of one core as the operating system reports them, in bytes.

    Reads ``/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size}`` (Linux) and falls back
    to ``os.sysconf("SC_LEVEL{1D,2,3}_CACHE_SIZE")`` where sysfs is missing.

    Returns
    -------
    dict
        Some of ``"L1d"``, ``"L2"``, ``"L3"`` (bytes); empty when nothing is reported. L1d and
        L2 are per core; L3 is the size of the cache cpu0 shares with others.
    """
    sizes: dict[str, int] = {}
    try:
        entries = sorted(os.listdir(_SYSFS_CACHE))
    except OSError:
        entries = []
    for entry in entries:
        if not entry.startswith("index"):
            continue
        try:
            with open(os.path.join(_SYSFS_CACHE, entry, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(_SYSFS_CACHE, entry, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(_SYSFS_CACHE, entry, "size")) as f:
                size = _parse_size(f.read())
        except OSError:
            continue
        if size is None or kind == "Instruction":
            continue
        name = "L1d" if level == "1" else f"L{level}"
        sizes.setdefault(name, size)
    for name, key in (
        ("L1d", "SC_LEVEL1_DCACHE_SIZE"),
        ("L2", "SC_LEVEL2_CACHE_SIZE"),
        ("L3", "SC_LEVEL3_CACHE_SIZE"),
    ):
        if name not in sizes:
            try:
                value = os.sysconf(key)
            except (ValueError, OSError, AttributeError):
                continue
            if value > 0:
                sizes[name] = int(value)
    return sizes


def block_bytes() -> int:
    """Bytes of the dense operand per column block of a batched product (cache blocking).

    ``AET_SIRT_BLOCK_BYTES`` (environment) if set; else the per-core L2 size the OS reports
    (:func:`cache_sizes`); else 1 MiB. On a Zen 4 core (1 MiB L2) blocks of 0.5-2 MiB ran within
    the noise of each other and 1/4 L2 or 8 L2 ran 20-35 % slower (``scripts/bench_sirt.py``).
    The block size never changes the result, only the speed.
    """
    override = os.environ.get("AET_SIRT_BLOCK_BYTES")
    if override:
        value = _parse_size(override)
        if value is None:
            raise ValueError(
                f"AET_SIRT_BLOCK_BYTES={override!r}: expected a positive size in bytes (e.g. 1M)"
            )
        return value
    return cache_sizes().get("L2", _DEFAULT_BLOCK_BYTES)


def _operator(size: int, angles: np.ndarray, transposed: bool, columns: int):
    """``(split, indices, data)`` of ``W`` or ``Wᵀ`` for the kernels, blocked for ``columns`` slices."""
    key = tuple(float(a) for a in np.asarray(angles, dtype=np.float64).ravel())
    matrix = _cached_matrix(size, key, "linear")[int(transposed)]
    operand_bytes = matrix.shape[1] * columns * 4
    blocks = max(1, -(-operand_bytes // block_bytes()))
    return _cached_splits(size, key, "linear", transposed, blocks), matrix.indices, matrix.data


def _threads(threads: int | None) -> int:
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads={threads!r}: expected a positive integer")
        return int(threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _slices_to_columns(stack: np.ndarray) -> np.ndarray:
    """(n0, P_y, P) -> (n0·P, P_y): column j holds y-slice j flattened row-major."""
    n0, ny, nx = stack.shape
    return np.ascontiguousarray(stack.transpose(0, 2, 1).reshape(n0 * nx, ny))


def _columns_to_slices(columns: np.ndarray, n0: int, nx: int) -> np.ndarray:
    ny = columns.shape[1]
    return np.ascontiguousarray(columns.reshape(n0, nx, ny).transpose(0, 2, 1))


# --------------------------------------------------------------------------------------------
# batched iterative solvers on blocks of y-slices
# --------------------------------------------------------------------------------------------


def _inverse_sums(matrix) -> tuple[np.ndarray, np.ndarray]:
    row = np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()
    col = np.asarray(matrix.sum(axis=0), dtype=np.float64).ravel()
    inv_row = np.zeros_like(row)
    inv_col = np.zeros_like(col)
    np.divide(1.0, row, out=inv_row, where=row > 0)
    np.divide(1.0, col, out=inv_col, where=col > 0)
    return inv_row.astype(np.float32), inv_col.astype(np.float32)


class _RowPool:
    """Runs a row kernel over row ranges of a CSR matrix on a few threads.

    The rows are cut into ``_CHUNKS_PER_THREAD`` ranges per thread holding about the same number
    of stored entries each; the threads take ranges from a queue, so a thread that the operating
    system pauses (a busy machine) delays one small range, not half of every product. The kernels
    release the GIL, so the threads run on separate cores. Row ranges are independent: the
    result does not depend on the number of threads or ranges.
    """

    def __init__(self, pool: ThreadPoolExecutor | None, threads: int):
        self.pool = pool
        self.threads = threads

    def ranges(self, matrix) -> list[tuple[int, int]]:
        n = matrix.shape[0]
        pieces = 1 if self.pool is None else self.threads * _CHUNKS_PER_THREAD
        targets = np.linspace(0, matrix.nnz, pieces + 1)[1:-1]
        cuts = [0, *np.searchsorted(matrix.indptr, targets).tolist(), n]
        return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]

    def run(self, kernel, ranges, *args) -> None:
        if self.pool is None or len(ranges) == 1:
            for lo, hi in ranges:
                kernel(*args, lo, hi)
            return
        futures = [self.pool.submit(kernel, *args, lo, hi) for lo, hi in ranges]
        for future in futures:
            future.result()


def _sirt_block(
    matrix,
    transpose,
    w,
    wt,
    inv_row,
    inv_col,
    sinogram,
    iterations,
    relaxation,
    positivity,
    rows,
    tick,
    initial=None,
):
    """SIRT (ASTRA's update): x += λ C Wᵀ R (b − W x), clipped at 0 when positivity is on.

    All y-slices (columns of ``sinogram``) at once; two fused kernel passes per iteration into
    preallocated float32 arrays. ``w``/``wt`` are the kernels' ``(split, indices, data)`` of
    ``matrix`` and ``transpose``. ``initial``: the start ``x`` (columns), zeros by default.
    """
    if initial is None:
        x = np.zeros((matrix.shape[1], sinogram.shape[1]), dtype=np.float32)
    else:
        x = np.array(initial, dtype=np.float32, order="C", copy=True)
    residual = np.empty_like(sinogram)
    accumulated = np.empty_like(x)
    step = (np.float32(relaxation) * inv_col).astype(np.float32)
    forward = rows.ranges(matrix)
    backward = rows.ranges(transpose)
    for _ in range(iterations):
        rows.run(_sparse.sirt_residual, forward, *w, x, sinogram, inv_row, residual)
        rows.run(
            _sparse.sirt_update, backward, *wt, residual, step, x, bool(positivity), accumulated
        )
        tick()
    return x


def _cgls_block(matrix, transpose, w, wt, sinogram, iterations, rows, tick):
    """CGLS (conjugate gradients on the normal equations), one independent solve per column."""
    ny = sinogram.shape[1]
    forward = rows.ranges(matrix)
    backward = rows.ranges(transpose)
    volume_rows = [(lo, hi) for lo, hi in backward]
    sino_rows = [(lo, hi) for lo, hi in forward]
    x = np.zeros((matrix.shape[1], ny), dtype=np.float32)
    r = sinogram.astype(np.float32, copy=True)
    p = np.empty_like(x)
    s = np.empty_like(x)
    q = np.empty_like(r)
    rows.run(_sparse.spmm_rows, backward, *wt, r, p)
    gamma = _sparse.column_norms(p)
    for _ in range(iterations):
        rows.run(_sparse.spmm_rows, forward, *w, p, q)
        qq = _sparse.column_norms(q)
        alpha = np.divide(gamma, qq, out=np.zeros_like(gamma), where=qq > 0).astype(np.float32)
        rows.run(_sparse.cgls_step, volume_rows, x, p, alpha)
        rows.run(_sparse.cgls_step, sino_rows, r, q, -alpha)
        rows.run(_sparse.spmm_rows, backward, *wt, r, s)
        gamma_new = _sparse.column_norms(s)
        beta = np.divide(gamma_new, gamma, out=np.zeros_like(gamma), where=gamma > 0)
        rows.run(_sparse.cgls_direction, volume_rows, p, s, beta.astype(np.float32))
        gamma = gamma_new
        tick()
    return x


def _reconstruct_matrix(
    tilt_series, angles, method, iterations, positivity, relaxation, progress, threads, initial=None
):
    n_angles, ny, nx = tilt_series.shape
    matrix, transpose = projection_matrix(nx, angles)
    sinograms = _slices_to_columns(tilt_series)  # (A·P, P_y), one column per y-slice
    w = _operator(nx, angles, False, ny)
    wt = _operator(nx, angles, True, ny)
    n_threads = _threads(threads)
    with (
        progress_bar(
            total=iterations, desc=f"{method} (batched)", unit="it", enabled=progress
        ) as bar,
        ThreadPoolExecutor(n_threads) if n_threads > 1 else contextlib.nullcontext() as pool,
    ):
        rows = _RowPool(pool, n_threads)

        def tick():
            bar.update(1)

        if method == "sirt":
            inv_row, inv_col = _inverse_sums(matrix)
            x = _sirt_block(
                matrix,
                transpose,
                w,
                wt,
                inv_row,
                inv_col,
                sinograms,
                iterations,
                relaxation,
                positivity,
                rows,
                tick,
                None if initial is None else _slices_to_columns(initial),
            )
        else:
            x = _cgls_block(matrix, transpose, w, wt, sinograms, iterations, rows, tick)
            if positivity:
                np.maximum(x, 0.0, out=x)
    return _columns_to_slices(x, nx, nx)


# --------------------------------------------------------------------------------------------
# ASTRA's own 2D CPU algorithms, slice by slice
# --------------------------------------------------------------------------------------------


def _projection_order(n_angles: int) -> np.ndarray:
    """A fixed SART order that jumps across the tilt range (golden-ratio stride)."""
    return np.argsort((np.arange(n_angles) * 0.6180339887498949) % 1.0, kind="stable")


def _reconstruct_astra(tilt_series, angles, method, iterations, positivity, relaxation, progress):
    import astra

    n_angles, ny, nx = tilt_series.shape
    vol_geom = astra.create_vol_geom(nx, nx)
    proj_geom = astra.create_proj_geom("parallel", 1.0, nx, astra_angles(angles))
    projector_id = astra.create_projector("linear", proj_geom, vol_geom)
    sino_id = astra.data2d.create("-sino", proj_geom, 0.0)
    rec_id = astra.data2d.create("-vol", vol_geom, 0.0)
    volume = np.empty((nx, ny, nx), dtype=np.float32)
    algorithm = {"sirt": "SIRT", "cgls": "CGLS", "fbp": "FBP", "sart": "SART"}[method]
    cfg = astra.astra_dict(algorithm)
    cfg["ProjectorId"] = projector_id
    cfg["ProjectionDataId"] = sino_id
    cfg["ReconstructionDataId"] = rec_id
    options: dict = {}
    if positivity and method in ("sirt", "sart"):
        options["MinConstraint"] = 0.0
    if method in ("sirt", "sart") and relaxation != 1.0:
        options["Relaxation"] = float(relaxation)
    if method == "sart":
        options["ProjectionOrder"] = "custom"
        options["ProjectionOrderList"] = _projection_order(n_angles).astype(np.int32)
    cfg["option"] = options
    # SART updates one projection per ASTRA iteration: run A of them per sweep.
    runs = {"sirt": iterations, "cgls": iterations, "fbp": 1, "sart": iterations * n_angles}[method]
    try:
        for j in progress_bar(
            range(ny), desc=f"{method} (ASTRA per slice)", unit="slice", enabled=progress
        ):
            sinogram = np.ascontiguousarray(tilt_series[:, j, :])
            if not np.any(sinogram):  # ASTRA's CGLS divides 0 by 0 on an empty slice
                volume[:, j, :] = 0.0
                continue
            astra.data2d.store(sino_id, sinogram)
            astra.data2d.store(rec_id, 0.0)
            # A fresh algorithm per slice: ASTRA's CGLS keeps its search direction between runs.
            algorithm_id = astra.algorithm.create(cfg)
            try:
                astra.algorithm.run(algorithm_id, runs)
            finally:
                astra.algorithm.delete(algorithm_id)
            volume[:, j, :] = astra.data2d.get_shared(rec_id)
    finally:
        astra.data2d.delete([sino_id, rec_id])
        astra.projector.delete(projector_id)
    if positivity and method in ("cgls", "fbp"):
        np.maximum(volume, 0.0, out=volume)
    return volume


# --------------------------------------------------------------------------------------------
# ASTRA's 3D CUDA algorithms (only ever called when astra.use_cuda() is true)
# --------------------------------------------------------------------------------------------


def _cuda_available() -> bool:
    try:
        import astra

        return bool(astra.use_cuda())
    except Exception:  # pragma: no cover - astra missing or broken
        return False


def _cuda_geometries(shape, angles):
    import astra

    n_angles, ny, nx = shape
    # ASTRA 3D arrays are (slice, row, col) with the rotation axis along the slices: our y.
    vol_geom = astra.create_vol_geom(nx, nx, ny)  # rows = z, cols = x, slices = y
    proj_geom = astra.create_proj_geom("parallel3d", 1.0, 1.0, ny, nx, astra_angles(angles))
    return vol_geom, proj_geom


def _cuda_project(volume, angles):
    import astra

    shape = (len(angles), volume.shape[1], volume.shape[2])
    vol_geom, proj_geom = _cuda_geometries(shape, angles)
    proj_id, proj = astra.create_sino3d_gpu(
        np.ascontiguousarray(volume.transpose(1, 0, 2)), proj_geom, vol_geom
    )
    astra.data3d.delete(proj_id)
    return np.ascontiguousarray(np.asarray(proj).transpose(1, 0, 2), dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _cuda_geometry_ok() -> bool:
    """Check once that ASTRA's 3D GPU projector follows the contract (compare with the matrix)."""
    if not _cuda_available():
        return False
    try:
        rng = np.random.default_rng(0)
        volume = np.zeros((16, 12, 16), dtype=np.float32)
        volume[3:6, 2:4, 10:13] = 1.0 + rng.random((3, 2, 3), dtype=np.float32)
        angles = np.array([-50.0, -10.0, 25.0, 60.0])
        reference = project(volume, angles, backend="matrix")
        gpu = _cuda_project(volume, angles)
        error = np.linalg.norm(gpu - reference) / np.linalg.norm(reference)
    except Exception as exc:  # pragma: no cover - needs a GPU
        logger.warning("ASTRA CUDA check failed (%s); using the CPU backend", exc)
        return False
    if error > 0.05:  # pragma: no cover - needs a GPU
        logger.warning(
            "ASTRA 3D CUDA geometry disagrees with the contract (rel. error %.3f); using the CPU backend",
            error,
        )
        return False
    return True


def _reconstruct_cuda(
    tilt_series, angles, method, iterations, positivity
):  # pragma: no cover - GPU
    import astra

    vol_geom, proj_geom = _cuda_geometries(tilt_series.shape, angles)
    proj_id = astra.data3d.create(
        "-proj3d", proj_geom, np.ascontiguousarray(tilt_series.transpose(1, 0, 2))
    )
    rec_id = astra.data3d.create("-vol", vol_geom, 0.0)
    cfg = astra.astra_dict({"sirt": "SIRT3D_CUDA", "cgls": "CGLS3D_CUDA"}[method])
    cfg["ProjectionDataId"] = proj_id
    cfg["ReconstructionDataId"] = rec_id
    if positivity and method == "sirt":
        cfg["option"] = {"MinConstraint": 0.0}
    algorithm_id = astra.algorithm.create(cfg)
    try:
        astra.algorithm.run(algorithm_id, iterations)
        volume = astra.data3d.get(rec_id)
    finally:
        astra.algorithm.delete(algorithm_id)
        astra.data3d.delete([proj_id, rec_id])
    volume = np.ascontiguousarray(volume.transpose(1, 0, 2), dtype=np.float32)
    if positivity and method == "cgls":
        np.maximum(volume, 0.0, out=volume)
    return volume


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _choose_backend(backend: str, method: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {list(BACKENDS)}")
    if backend == "cuda":
        if method not in ("sirt", "cgls"):
            raise ValueError(
                f"backend='cuda' with method={method!r}: expected method 'sirt' or 'cgls'"
            )
        if not _cuda_geometry_ok():
            raise ValueError(
                "backend='cuda': expected ASTRA with a working CUDA GPU (astra.use_cuda() is false)"
            )
        return "cuda"
    if backend != "auto":
        if backend == "matrix" and method not in ("sirt", "cgls"):
            return "astra"  # FBP and SART only exist as ASTRA's own per-slice algorithms here
        return backend
    if method in ("sirt", "cgls") and _cuda_geometry_ok():  # pragma: no cover - GPU
        return "cuda"
    return "matrix" if method in ("sirt", "cgls") else "astra"


def reconstruct(
    tilt_series: np.ndarray,
    angles_deg: Sequence[float],
    *,
    method: str = "sirt",
    iterations: int = 50,
    positivity: bool = True,
    progress: bool = False,
    relaxation: float = 1.0,
    backend: str = "auto",
    threads: int | None = None,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """Reconstruct a volume ``[z, y, x]`` from a single-axis (y) tilt series.

    Parameters
    ----------
    tilt_series
        ``(A, P_y, P)`` projections ``[angle, y, x]``, normalised (line sums in voxel units,
        e.g. Å² of HAADF cross-section per pixel).
    angles_deg
        ``(A,)`` tilt angles in degrees (any order, either side of 0°).
    method
        ``"sirt"`` (default), ``"cgls"``, ``"fbp"`` (filtered back-projection, Ram-Lak) or
        ``"sart"``.
    iterations
        Iterations of SIRT/CGLS; for SART, full sweeps over all projections. Ignored by FBP.
    positivity
        Clip negative voxels: at every iteration for SIRT/SART (ASTRA's ``MinConstraint=0``),
        once at the end for CGLS and FBP.
    progress
        Show a progress bar.
    relaxation
        SIRT/SART relaxation factor λ (1.0 = ASTRA's default).
    backend
        ``"auto"`` (3D CUDA when ``astra.use_cuda()``, else the batched matrix solver for
        SIRT/CGLS and ASTRA per slice for FBP/SART), ``"matrix"``, ``"astra"`` or ``"cuda"``.
    threads
        Threads for the batched solver (default: the CPUs this process may use).
    initial
        ``(P, P_y, P)`` volume to start SIRT from (a warm start, e.g. the previous round of an
        alignment); zeros by default. SIRT with the batched ``"matrix"`` solver only.

    Returns
    -------
    numpy.ndarray
        ``(P, P_y, P)`` float32 volume ``[z, y, x]`` with unit voxel size (cubic when the
        projections are square).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {list(METHODS)}")
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations={iterations!r}: expected a positive integer")
    iterations = int(iterations)
    if not np.isfinite(relaxation) or not 0 < relaxation < 2:
        raise ValueError(f"relaxation={relaxation!r}: expected a number in (0, 2)")
    tilt_series, angles = _check_tilt_series(tilt_series, angles_deg)
    chosen = _choose_backend(backend, method)
    if initial is not None:
        n_angles, ny, nx = tilt_series.shape
        initial = np.asarray(initial, dtype=np.float32)
        if initial.shape != (nx, ny, nx) or not np.all(np.isfinite(initial)):
            raise ValueError(
                f"initial.shape={initial.shape}: expected a finite ({nx}, {ny}, {nx}) volume"
            )
        if method != "sirt" or chosen != "matrix":
            raise ValueError(
                f"initial: a warm start needs method='sirt' on the 'matrix' backend, got "
                f"method={method!r} on {chosen!r}"
            )
    logger.info(
        "reconstruct: %s, %d iterations, %s backend, tilt series %s, angles %.1f..%.1f deg",
        method,
        iterations,
        chosen,
        tilt_series.shape,
        angles.min(),
        angles.max(),
    )
    if chosen == "cuda":  # pragma: no cover - GPU
        return _reconstruct_cuda(tilt_series, angles, method, iterations, positivity)
    if chosen == "matrix":
        return _reconstruct_matrix(
            tilt_series,
            angles,
            method,
            iterations,
            positivity,
            relaxation,
            progress,
            threads,
            initial,
        )
    return _reconstruct_astra(
        tilt_series, angles, method, iterations, positivity, relaxation, progress
    )


def project(
    volume: np.ndarray, angles_deg: Sequence[float], *, backend: str = "matrix"
) -> np.ndarray:
    """Forward-project a volume ``[z, y, x]`` to a tilt series ``[angle, y, x]`` (line sums).

    Uses the same projection matrix as :func:`reconstruct` (ASTRA ``linear`` projector, unit
    voxel size) so re-projecting a reconstruction is consistent with it.

    Parameters
    ----------
    volume
        ``(P, P_y, P)`` volume, indexed ``[z, y, x]``.
    angles_deg
        ``(A,)`` tilt angles in degrees.
    backend
        ``"matrix"`` (CPU, default) or ``"cuda"`` (ASTRA 3D GPU; only with ``astra.use_cuda()``).

    Returns
    -------
    numpy.ndarray
        ``(A, P_y, P)`` float32.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3 or volume.size == 0:
        raise ValueError(f"volume.shape={volume.shape}: expected a non-empty 3D array [z, y, x]")
    if volume.shape[0] != volume.shape[2]:
        raise ValueError(f"volume.shape={volume.shape}: expected equal z and x sizes (P, P_y, P)")
    if not np.all(np.isfinite(volume)):
        raise ValueError("volume: expected finite values, found NaN or inf")
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.ndim != 1 or angles.size == 0 or not np.all(np.isfinite(angles)):
        raise ValueError(
            f"angles_deg={angles_deg!r}: expected a non-empty 1D array of finite degrees"
        )
    volume = volume.astype(np.float32, copy=False)
    if backend == "cuda":
        if not _cuda_available():
            raise ValueError("backend='cuda': expected ASTRA with CUDA (astra.use_cuda() is false)")
        return _cuda_project(volume, angles)  # pragma: no cover - GPU
    if backend != "matrix":
        raise ValueError(f"backend={backend!r}: expected 'matrix' or 'cuda'")
    nz, ny, nx = volume.shape
    matrix, _ = projection_matrix(nx, angles)
    sinograms = matrix @ _slices_to_columns(volume)  # (A·P, P_y)
    return _columns_to_slices(sinograms, len(angles), nx)
