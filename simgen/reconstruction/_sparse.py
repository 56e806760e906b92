"""Fused, threaded sparse × dense kernels for the batched SIRT/CGLS solvers (numba, float32).

The batched solvers of :mod:`simgen.reconstruction.reconstruct` apply the 2D projection matrix ``W`` (CSR,
``(A·P, P²)``) and its transpose (CSR) to all y-slices at once: the dense operands have one
column per y-slice, so every stored matrix entry multiplies one contiguous row of ``P_y`` floats
(a SIMD loop). Each kernel handles a range of output rows and releases the GIL, so a thread pool
runs the rows of one product on every core; the products write into preallocated arrays (no
allocation per iteration). The arithmetic is done in the same order as scipy's CSR × dense product
followed by the same element-wise steps, so the results equal the scipy path bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "block_splits",
    "sirt_residual",
    "sirt_update",
    "spmm_rows",
    "cgls_step",
    "cgls_direction",
]

_jit = numba.njit(nogil=True, cache=True, boundscheck=False)


def block_splits(matrix, n_blocks: int) -> np.ndarray:
    """Where every row of a CSR matrix enters each of ``n_blocks`` equal column ranges.

    Parameters
    ----------
    matrix
        ``scipy.sparse.csr_matrix`` with sorted column indices.
    n_blocks
        Number of contiguous column ranges (blocks of the dense operand's rows).

    Returns
    -------
    numpy.ndarray
        ``(n_rows, n_blocks + 1)`` int64: the stored entries of row ``i`` whose column lies in
        block ``b`` are ``split[i, b] : split[i, b + 1]``.
    """
    edges = np.linspace(0, matrix.shape[1], int(n_blocks) + 1).round().astype(np.int64)
    return _block_splits(matrix.indptr, matrix.indices, edges)


@_jit
def _block_splits(indptr, indices, edges):  # pragma: no cover - numba
    n = indptr.shape[0] - 1
    nb = edges.shape[0] - 1
    out = np.empty((n, nb + 1), np.int64)
    for i in range(n):
        k = indptr[i]
        for b in range(nb):
            while k < indptr[i + 1] and indices[k] < edges[b]:
                k += 1
            out[i, b] = k
        out[i, nb] = indptr[i + 1]
    return out


# Cache blocking: a product visits the dense operand one block of its rows at a time (all output
# rows of the range per block), so the operand rows that the stored entries gather stay in L2
# instead of being fetched from L3/DRAM once per projection angle. Within a row the entries are
# still added in column order, so the sums are the same, bit for bit, as without blocks.
#
# Four entries per pass: ``_gather`` adds the rows of four stored entries to the output row in one
# vector loop, ``o[c] = (((o[c] + v0·x0[c]) + v1·x1[c]) + v2·x2[c]) + v3·x3[c]``: the same float32
# operations in the same order as four passes of ``o[c] += v·x[c]`` (no fused multiply-add: numba
# does not contract without fastmath), so the bits are unchanged, but the output row is loaded and
# stored once per four entries instead of once per entry (the loads/stores of ``o`` were half the
# memory operations of the loop).


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _gather(o, indices, data, x, k, k1):  # pragma: no cover - numba
    """``o[c] += data[k] · x[indices[k], c]`` for ``k`` in ``[k, k1)``, in order (4 per pass)."""
    m = o.shape[0]
    while k + 4 <= k1:
        v0 = data[k]
        v1 = data[k + 1]
        v2 = data[k + 2]
        v3 = data[k + 3]
        x0 = x[indices[k]]
        x1 = x[indices[k + 1]]
        x2 = x[indices[k + 2]]
        x3 = x[indices[k + 3]]
        for c in range(m):
            o[c] = o[c] + v0 * x0[c] + v1 * x1[c] + v2 * x2[c] + v3 * x3[c]
        k += 4
    while k < k1:
        v = data[k]
        xr = x[indices[k]]
        for c in range(m):
            o[c] += v * xr[c]
        k += 1


@_jit
def sirt_residual(split, indices, data, x, b, inv_row, r, lo, hi):  # pragma: no cover - numba
    """``r[i] = (b[i] − (W x)[i]) · inv_row[i]`` for rows ``lo ≤ i < hi`` (column-blocked)."""
    m = r.shape[1]
    nb = split.shape[1] - 1
    for blk in range(nb):
        for i in range(lo, hi):
            o = r[i]
            if blk == 0:
                for c in range(m):
                    o[c] = 0.0
            _gather(o, indices, data, x, split[i, blk], split[i, blk + 1])
            if blk == nb - 1:
                w = inv_row[i]
                bi = b[i]
                for c in range(m):
                    o[c] = (bi[c] - o[c]) * w


@_jit
def sirt_update(split, indices, data, r, step, x, positivity, acc, lo, hi):  # pragma: no cover
    """``x[j] += step[j] · (Wᵀ r)[j]`` (then ``max(·, 0)``) for rows ``lo ≤ j < hi`` of ``x``.

    ``acc`` is a scratch array shaped like ``x`` (rows ``lo:hi`` are used)."""
    m = x.shape[1]
    nb = split.shape[1] - 1
    for blk in range(nb):
        for j in range(lo, hi):
            a = acc[j]
            if blk == 0:
                for c in range(m):
                    a[c] = 0.0
            _gather(a, indices, data, r, split[j, blk], split[j, blk + 1])
            if blk == nb - 1:
                s = step[j]
                xj = x[j]
                if positivity:
                    for c in range(m):
                        xj[c] = max(xj[c] + a[c] * s, 0.0)
                else:
                    for c in range(m):
                        xj[c] = xj[c] + a[c] * s


@_jit
def spmm_rows(split, indices, data, x, out, lo, hi):  # pragma: no cover - numba
    """``out[i] = (M x)[i]`` for rows ``lo ≤ i < hi`` of a CSR matrix ``M`` (column-blocked)."""
    m = out.shape[1]
    nb = split.shape[1] - 1
    for blk in range(nb):
        for i in range(lo, hi):
            o = out[i]
            if blk == 0:
                for c in range(m):
                    o[c] = 0.0
            _gather(o, indices, data, x, split[i, blk], split[i, blk + 1])


@_jit
def cgls_step(x, p, alpha, lo, hi):  # pragma: no cover - numba
    """``x += alpha · p`` (alpha per column) for rows ``lo ≤ i < hi``."""
    m = x.shape[1]
    for i in range(lo, hi):
        xi = x[i]
        pi = p[i]
        for c in range(m):
            xi[c] += alpha[c] * pi[c]


@_jit
def cgls_direction(p, s, beta, lo, hi):  # pragma: no cover - numba
    """``p = s + beta · p`` (beta per column) for rows ``lo ≤ i < hi``."""
    m = p.shape[1]
    for i in range(lo, hi):
        pi = p[i]
        si = s[i]
        for c in range(m):
            pi[c] = si[c] + beta[c] * pi[c]


def column_norms(a: np.ndarray) -> np.ndarray:
    """Squared norm of every column of ``a``, accumulated in float64."""
    return np.einsum("ij,ij->j", a, a, dtype=np.float64)
