"""Tomographic geometry shared by imaging, reconstruction and targets.

Conventions (docs/design.md, contract): lengths in Å; volumes are indexed ``[z, y, x]`` and the centre
of voxel index ``k`` lies at ``k * sampling``; atom positions are ``(x, y, z)`` in Å in that frame.
The beam travels along z at 0°, the single tilt axis is y, and a projection at angle θ images the
object rotated by R_y(θ) about the volume centre::

    (x, y, z) -> (x cosθ + z sinθ,  y,  −x sinθ + z cosθ)

ASTRA's 2D ``parallel`` geometry reproduces this when given the angles as −θ (radians) and the
sinogram of y-slice ``j`` is ``tilt_series[:, j, :]``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["volume_center", "rotate_positions", "astra_angles"]


def volume_center(size: int, sampling: float) -> float:
    """Coordinate (Å) of the centre of a cubic volume of ``size`` voxels at ``sampling`` Å."""
    return (size - 1) / 2.0 * sampling


def rotate_positions(positions: np.ndarray, angle: float, center: float | np.ndarray) -> np.ndarray:
    """Rotate ``(N, 3)`` positions ``(x, y, z)`` by R_y(``angle`` degrees) about ``center`` (Å).

    After rotation, x is the image column coordinate, y the image row coordinate and z lies along
    the beam.
    """
    positions = np.asarray(positions, dtype=np.float64)
    center = np.broadcast_to(np.asarray(center, dtype=np.float64), (3,))
    theta = np.deg2rad(angle)
    c, s = np.cos(theta), np.sin(theta)
    rel = positions - center
    out = np.empty_like(rel)
    out[:, 0] = rel[:, 0] * c + rel[:, 2] * s
    out[:, 1] = rel[:, 1]
    out[:, 2] = -rel[:, 0] * s + rel[:, 2] * c
    return out + center


def astra_angles(angles: np.ndarray) -> np.ndarray:
    """ASTRA 2D parallel-beam angles (radians) for tilt angles in degrees under this contract."""
    return -np.deg2rad(np.asarray(angles, dtype=np.float64))
