"""Checks of the shape and chemistry options: a one-line ``ValueError`` naming the option and its value."""

from __future__ import annotations

import numpy as np

__all__ = ["check_int", "check_float"]


def check_int(name: str, value, minimum: int) -> int | None:
    """``value`` as an int >= ``minimum`` (``None`` passes through)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def check_float(name: str, value, default: float | None, minimum: float = 0.0) -> float | None:
    """``value`` (or ``default`` when ``None``) as a finite float > ``minimum``."""
    value = default if value is None else value
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a number") from None
    if not np.isfinite(value) or value <= minimum:
        raise ValueError(f"{name}={value!r}: expected a number > {minimum:g}")
    return value
