"""Placement: a particle's diameter, its orientation, and its position in the reconstruction volume.

The *diameter* of a particle is the diameter of the smallest sphere about its centre of mass that
holds every atom centre (``particle_diameter``): it is what must fit in the reconstruction volume
at every tilt.
"""

from __future__ import annotations

import math

import numpy as np

from simgen.tools.reproducible import apply_rotation, center_of_mass, compose_rotations

__all__ = ["particle_diameter", "rotation_matrix", "random_orientation", "place_in_volume"]


def particle_diameter(atoms_or_positions) -> float:
    """Diameter (Å) of the sphere about the centre of mass that holds every atom centre."""
    if hasattr(atoms_or_positions, "get_center_of_mass"):
        positions = atoms_or_positions.get_positions()
        center = (
            center_of_mass(positions, atoms_or_positions.get_masses())
            if len(atoms_or_positions)
            else np.zeros(3)
        )
    else:
        positions = np.asarray(atoms_or_positions, dtype=np.float64).reshape(-1, 3)
        center = positions.mean(axis=0) if len(positions) else np.zeros(3)
    if len(positions) == 0:
        return 0.0
    return 2.0 * float(np.linalg.norm(positions - center, axis=1).max())


def rotation_matrix(orientation, rng: np.random.Generator | None = None) -> np.ndarray:
    """3×3 rotation matrix for an orientation spec.

    ``"none"`` gives the identity; ``"random"`` a uniformly distributed rotation (a random unit
    quaternion, drawn as a normalised 4D Gaussian vector from ``rng``); a triple
    ``(phi, theta, psi)`` in degrees gives the intrinsic z-y-z Euler rotation
    R = R_z(phi) R_y(theta) R_z(psi).
    """
    if isinstance(orientation, str):
        if orientation == "none":
            return np.eye(3)
        if orientation == "random":
            if rng is None:
                raise ValueError(
                    "rng=None: expected a numpy.random.Generator for a random orientation"
                )
            q = rng.normal(size=4)
            q /= np.linalg.norm(q)
            w, x, y, z = q
            return np.array(
                [
                    [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
                ]
            )
    else:
        try:
            angles = np.asarray(orientation, dtype=np.float64)
        except (TypeError, ValueError):
            angles = np.empty(0)
        if angles.shape == (3,) and np.all(np.isfinite(angles)):
            phi, theta, psi = np.deg2rad(angles)

            def rz(t):
                return np.array(
                    [[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]]
                )

            ry = np.array(
                [
                    [np.cos(theta), 0.0, np.sin(theta)],
                    [0.0, 1.0, 0.0],
                    [-np.sin(theta), 0.0, np.cos(theta)],
                ]
            )
            return compose_rotations(compose_rotations(rz(phi), ry), rz(psi))
    raise ValueError(
        f"orientation={orientation!r}: expected 'random', 'none' or three Euler angles in degrees"
    )


def random_orientation(atoms, rng: np.random.Generator):
    """A copy of ``atoms`` rotated by a uniformly random rotation about its centre of mass."""
    rotated = atoms.copy()
    if len(rotated) == 0:
        return rotated
    center = center_of_mass(rotated.positions, rotated.get_masses())
    matrix = rotation_matrix("random", rng)
    rotated.positions = apply_rotation(rotated.positions - center, matrix) + center
    return rotated


def place_in_volume(atoms, size: int, sampling: float, margin: float = 2.0):
    """A copy of ``atoms`` with its centre of mass at the volume centre on all three axes.

    Parameters
    ----------
    atoms
        ``ase.Atoms`` (positions in Å).
    size
        Volume edge in voxels.
    sampling
        Voxel size in Å.
    margin
        Clearance in Å added to the particle diameter before comparing with ``size * sampling``.

    Raises
    ------
    ValueError
        If the diameter (about the centre of mass) plus ``margin`` exceeds ``size * sampling``:
        only a sphere about the rotation centre fits in the volume at every tilt angle.
    """
    from simgen.physics.geometry import volume_center

    if (
        isinstance(size, bool)
        or not isinstance(size, (int, np.integer, float))
        or size <= 0
        or size != int(size)
    ):
        raise ValueError(f"size={size!r}: expected a positive number of voxels")
    size = int(size)
    if not np.isfinite(sampling) or sampling <= 0:
        raise ValueError(f"sampling={sampling!r}: expected a positive voxel size in Å")
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin={margin!r}: expected a non-negative clearance in Å")
    if len(atoms) == 0:
        raise ValueError("atoms: expected at least one atom")
    placed = atoms.copy()
    diameter = particle_diameter(placed)
    extent = size * sampling
    if diameter + margin > extent:
        raise ValueError(
            f"particle diameter {diameter:.1f} Å does not fit in a volume of {size}×{sampling:g} Å = {extent:.1f} Å "
            f"at every tilt angle (needs {diameter + margin:.1f} Å including a {margin:g} Å margin: "
            f"size >= {math.ceil((diameter + margin) / sampling)} voxels)"
        )
    center = volume_center(size, sampling)
    placed.positions = (
        placed.positions - center_of_mass(placed.positions, placed.get_masses()) + center
    )
    placed.cell = np.eye(3) * extent
    placed.pbc = False
    return placed
