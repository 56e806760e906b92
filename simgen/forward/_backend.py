"""The few array operations the forward model needs beyond the array API standard."""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, is_numpy_namespace, is_torch_namespace

__all__ = ["array_namespace", "constant", "scatter_add", "is_numpy_namespace"]


def constant(xp, values, like):
    """``values`` (numpy, float64 or complex128) as an array of ``xp`` on ``like``'s device.

    Real values take ``like``'s real dtype, complex ones the matching complex dtype.
    """
    values = np.asarray(values)
    real = like.dtype
    if np.iscomplexobj(values):
        dtype = xp.complex64 if real == xp.float32 else xp.complex128
    else:
        dtype = real
    if is_numpy_namespace(xp):
        return values.astype(dtype, copy=False)
    return xp.asarray(values, dtype=dtype, device=like.device)


def scatter_add(xp, index, values, length: int):
    """``out[index[k]] += values[k]`` into a zero vector of ``length`` (differentiable in torch).

    The array API has no scatter; numpy uses :func:`numpy.bincount`, torch ``index_add``.
    """
    index = xp.reshape(index, (-1,))
    values = xp.reshape(values, (-1,))
    if is_numpy_namespace(xp):
        return np.bincount(index, weights=values, minlength=length).astype(values.dtype, copy=False)
    if is_torch_namespace(xp):
        out = xp.zeros(length, dtype=values.dtype, device=values.device)
        return out.index_add(0, index, values)
    raise TypeError(f"arrays of {xp.__name__}: expected numpy or torch arrays")
