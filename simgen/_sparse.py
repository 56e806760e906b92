"""Fused, threaded sparse × dense kernels for the batched SIRT/CGLS solvers (numba, float32).

The batched solvers of :mod:`simgen.reconstruct` apply the 2D projection matrix ``W`` (CSR,
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

__all__ = ["sirt_residual", "sirt_update", "spmm_rows", "cgls_step", "cgls_direction"]

_jit = numba.njit(nogil=True, cache=True, boundscheck=False)


@_jit
def sirt_residual(indptr, indices, data, x, b, inv_row, r, lo, hi):  # pragma: no cover - numba
    """``r[i] = (b[i] − (W x)[i]) · inv_row[i]`` for rows ``lo ≤ i < hi``."""
    m = r.shape[1]
    for i in range(lo, hi):
        o = r[i]
        for c in range(m):
            o[c] = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            v = data[k]
            xr = x[indices[k]]
            for c in range(m):
                o[c] += v * xr[c]
        w = inv_row[i]
        bi = b[i]
        for c in range(m):
            o[c] = (bi[c] - o[c]) * w


@_jit
def sirt_update(indptr, indices, data, r, step, x, positivity, acc, lo, hi):  # pragma: no cover
    """``x[j] += step[j] · (Wᵀ r)[j]`` (then ``max(·, 0)``) for rows ``lo ≤ j < hi`` of ``x``.

    ``acc`` is a ``(P_y,)`` scratch row owned by the calling thread."""
    m = x.shape[1]
    for j in range(lo, hi):
        for c in range(m):
            acc[c] = 0.0
        for k in range(indptr[j], indptr[j + 1]):
            v = data[k]
            rr = r[indices[k]]
            for c in range(m):
                acc[c] += v * rr[c]
        s = step[j]
        xj = x[j]
        if positivity:
            for c in range(m):
                xj[c] = max(xj[c] + acc[c] * s, 0.0)
        else:
            for c in range(m):
                xj[c] = xj[c] + acc[c] * s


@_jit
def spmm_rows(indptr, indices, data, x, out, lo, hi):  # pragma: no cover - numba
    """``out[i] = (M x)[i]`` for rows ``lo ≤ i < hi`` of a CSR matrix ``M``."""
    m = out.shape[1]
    for i in range(lo, hi):
        o = out[i]
        for c in range(m):
            o[c] = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            v = data[k]
            xr = x[indices[k]]
            for c in range(m):
                o[c] += v * xr[c]


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
