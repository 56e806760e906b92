"""Bit-reproducible arithmetic for the data path: the same bytes whatever CPU runs it.

A store's checksums promise the same bytes on every machine, so every float that reaches a stored
array must be computed by the same sequence of IEEE-754 operations everywhere. numpy and OpenBLAS
choose their kernels at run time by CPU, and some of those choices change results in the last bit
(measured on this project's machines with numpy 2.4 and scipy-openblas 0.3.31, by running the
same code under ``NPY_DISABLE_CPU_FEATURES``, ``OPENBLAS_CORETYPE`` and ``OPENBLAS_NUM_THREADS``):

- ``np.exp``, ``np.log`` and ``**`` on float64 arrays (AVX-512 kernels differ from the others);
- ``np.sin``, ``np.cos`` and ``np.exp`` on float32 arrays, and complex multiplication and
  ``np.abs`` (AVX2 kernels, with fused multiply-adds, differ from the older ones);
- every BLAS product (``@``, ``np.dot``, ``matmul``, ``linalg``): the kernel and its blocking depend
  on the CPU's core type and, for some shapes, on the number of threads. ASE's
  ``get_center_of_mass`` is one (``masses @ positions``).

One such bit is enough to change a whole tilt series: a Poisson draw with a rejection sampler
consumes a different number of random numbers when its mean moves by one ulp, and every draw after
it changes. Element-wise arithmetic, float64 ``np.sin``/``np.cos``, complex ``np.exp``, ``np.sum``,
``np.einsum`` and numpy's and scipy's FFTs gave the same bits under every setting. The functions
here replace the others in the data path: element-wise exponentials through the C library one
value at a time, and products as loops in a fixed order (compiled by numba without fast-math, so
nothing is reassociated or fused). A test runs the simulator under two dispatch settings and
compares the bytes.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "exp",
    "complex_multiply",
    "apply_rotation",
    "compose_rotations",
    "center_of_mass",
    "complex_gram",
    "solve_small",
    "inv_small",
]

_exp_scalar = np.frompyfunc(math.exp, 1, 1)


def exp(x) -> np.ndarray:
    """``e**x`` of a float64 array, the same bits on every CPU (the C library's ``exp`` per value).

    ``np.exp`` picks an AVX-512 kernel where the CPU has one, and that kernel rounds differently
    from the others in the last bit. Use for arrays of up to a few 10⁵ values (≈ 50 ns each).
    """
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(_exp_scalar(x), dtype=np.float64).reshape(x.shape)


def complex_multiply(a, b) -> np.ndarray:
    """``a * b`` for complex arrays (broadcast), with four real products and two sums.

    numpy's complex multiply uses fused multiply-adds on AVX2 CPUs and not on older ones, which
    rounds differently; this spells out ``(ar·br − ai·bi) + i(ar·bi + ai·br)``, each operation
    rounded once, in the precision of the inputs.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    dtype = np.result_type(a, b)
    ar, ai, br, bi = a.real, a.imag, b.real, b.imag
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=dtype)
    out.real = ar * br - ai * bi
    out.imag = ar * bi + ai * br
    return out


def apply_rotation(positions: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``positions @ matrix.T`` for ``(N, 3)`` positions, with element-wise products and sums.

    A BLAS product of this shape uses a CPU-specific small-matrix kernel; this evaluates each
    output coordinate as ``(m[i,0]·x + m[i,1]·y) + m[i,2]·z``, in that order.
    """
    positions = np.asarray(positions, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or matrix.shape != (3, 3):
        raise ValueError(
            f"positions.shape={positions.shape}, matrix.shape={matrix.shape}: expected (N, 3) and (3, 3)"
        )
    out = np.empty_like(positions)
    for i in range(3):
        out[:, i] = (matrix[i, 0] * positions[:, 0] + matrix[i, 1] * positions[:, 1]) + matrix[
            i, 2
        ] * positions[:, 2]
    return out


def compose_rotations(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The 3×3 product ``first @ second`` with element-wise products and sums, in a fixed order."""
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    if first.shape != (3, 3) or second.shape != (3, 3):
        raise ValueError(f"shapes {first.shape}, {second.shape}: expected two 3×3 matrices")
    return apply_rotation(second.T, first).T


def center_of_mass(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Mass-weighted mean of ``(N, 3)`` positions (Å), correctly rounded sums (``math.fsum``).

    Replaces ASE's ``Atoms.get_center_of_mass`` (a BLAS product) in the data path.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    masses = np.asarray(masses, dtype=np.float64).reshape(-1)
    if len(positions) != len(masses) or len(masses) == 0:
        raise ValueError(
            f"masses: {len(masses)} values for {len(positions)} positions; expected one per atom"
        )
    total = math.fsum(masses)
    return np.array([math.fsum(masses * positions[:, i]) / total for i in range(3)])


def _power_of_two_scale(values: np.ndarray, bits: int) -> float:
    """The power of two ``s`` with ``max|values| / s <= 2**bits`` (1.0 for an all-zero array)."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if peak == 0.0 or not math.isfinite(peak):
        return 1.0
    return math.ldexp(1.0, math.frexp(peak)[1] - bits)


def complex_gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a.T @ b`` for complex ``a`` (N, K) and ``b`` (N, M), the same bits on every CPU.

    A BLAS product sums in a CPU- and thread-dependent order, and float rounding makes the order
    show. Here both factors are first rounded to integer multiples of a power of two, with so few
    bits (``(53 − log2 N) / 2`` each, at most 24) that every product and every partial sum is an
    integer below 2**53: exact in float64, so any kernel, blocking or thread count gives the same
    sum. The relative precision of each factor is then ``2**-bits`` of its largest value
    (2**-19 ≈ 2e-6 for N = 5,000 atoms; float32 holds 2**-24).

    Returns
    -------
    numpy.ndarray
        complex64 (K, M).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"a.shape={a.shape}, b.shape={b.shape}: expected (N, K) and (N, M)")
    n = max(1, a.shape[0])
    # |Σ a·b| <= 2·N·2**bits·2**bits for complex factors (two products per part).
    bits = min(24, (53 - 1 - math.ceil(math.log2(2 * n))) // 2)
    if bits < 8:
        raise ValueError(f"a.shape={a.shape}: too many terms ({n}) for an exact product")
    scale_a = _power_of_two_scale(a, bits)
    scale_b = _power_of_two_scale(b, bits)
    qa = a.astype(np.complex128)  # a copy, rounded in place (dividing by 2**k is exact)
    qa /= scale_a
    np.round(qa, out=qa)
    qb = b.astype(np.complex128)
    qb /= scale_b
    np.round(qb, out=qb)
    product = qa.T @ qb  # integers below 2**53: exact whatever the summation order
    product *= scale_a * scale_b
    return product.astype(np.complex64)


def solve_small(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``np.linalg.solve`` for a small (n ≤ ~10) system, by Gaussian elimination with partial
    pivoting in Python floats: LAPACK's kernels round by CPU (fused multiply-adds or not).

    Raises ``numpy.linalg.LinAlgError`` for a singular matrix, as ``np.linalg.solve`` does.
    """
    a = [[float(v) for v in row] for row in np.asarray(matrix, dtype=np.float64)]
    b = np.asarray(rhs, dtype=np.float64)
    columns = b.reshape(len(a), -1).T.tolist()  # one list per right-hand side
    n = len(a)
    if any(len(row) != n for row in a) or b.shape[0] != n:
        raise ValueError(
            f"matrix.shape={np.shape(matrix)}, rhs.shape={b.shape}: expected (n, n), (n, ...)"
        )
    for k in range(n):
        pivot = max(range(k, n), key=lambda i: abs(a[i][k]))
        if a[pivot][k] == 0.0:
            raise np.linalg.LinAlgError("Singular matrix")
        a[k], a[pivot] = a[pivot], a[k]
        for col in columns:
            col[k], col[pivot] = col[pivot], col[k]
        for i in range(k + 1, n):
            factor = a[i][k] / a[k][k]
            for j in range(k, n):
                a[i][j] = a[i][j] - factor * a[k][j]
            for col in columns:
                col[i] = col[i] - factor * col[k]
    for col in columns:
        for i in range(n - 1, -1, -1):
            total = col[i]
            for j in range(i + 1, n):
                total = total - a[i][j] * col[j]
            col[i] = total / a[i][i]
    return np.array(columns, dtype=np.float64).T.reshape(b.shape)


def inv_small(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a small matrix by :func:`solve_small` (the same bits on every CPU)."""
    n = np.asarray(matrix).shape[0]
    return solve_small(matrix, np.eye(n))
