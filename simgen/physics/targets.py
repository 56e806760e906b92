"""Ideal volumes: the training target of stage 1 (docs/design.md, "targets").

Each atom becomes a 3D Gaussian of width ``sigma`` (Å) sampled at the voxel centres, normalised
to unit sum over the voxels of the volume and weighted by the atom's HAADF cross-section σ(Z)
(Å², :func:`simgen.physics.imaging.cross_section`). The volume is thus in Å² per voxel, like a
reconstruction of the dose-normalised tilt series, and its sum along z is the ideal normalised 0°
projection with a Gaussian point-spread function of the same width.

The Gaussian is separable, so each atom needs three 1D profiles on a local window of
``±ceil(4·sigma / sampling)`` voxels; their outer products are scattered into the volume with
one ``numpy.bincount`` per batch of atoms.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from simgen.tools.reproducible import exp as reproducible_exp

__all__ = ["ideal_volume"]

logger = logging.getLogger(__name__)

_WINDOW_SIGMAS = 4.0  # half-width of the local window, in Gaussian widths
_BATCH_VOXELS = 4_000_000  # window voxels scattered per bincount (bounds the memory)


def _cross_sections(symbols: list[str], microscope) -> np.ndarray:
    try:
        from simgen.physics.imaging import Microscope, cross_section
    except ImportError as exc:  # pragma: no cover - imaging is part of the package
        raise ValueError(
            "weights=None: expected simgen.physics.imaging.cross_section to be available, or explicit weights"
        ) from exc
    if microscope is None:
        microscope = Microscope()
    table = {symbol: float(cross_section(symbol, microscope)) for symbol in sorted(set(symbols))}
    return np.array([table[s] for s in symbols], dtype=np.float64)


def ideal_volume(
    atoms,
    size: int,
    sampling: float,
    *,
    microscope=None,
    sigma: float = 0.35,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Sum of normalised 3D Gaussians, one per atom, weighted by its HAADF cross-section.

    Parameters
    ----------
    atoms
        ``ase.Atoms`` with positions ``(x, y, z)`` in Å in the volume frame (voxel ``k`` centred at
        ``k * sampling``), or an ``(N, 3)`` array of positions (then ``weights`` is required).
    size
        Voxels per side ``V``.
    sampling
        Voxel size in Å.
    microscope
        :class:`simgen.physics.imaging.Microscope` for σ(Z) (default: the project's default microscope).
    sigma
        Gaussian width (standard deviation) in Å.
    weights
        ``(N,)`` per-atom weights in Å² used instead of σ(Z) (e.g. all ones to count atoms).

    Returns
    -------
    numpy.ndarray
        ``(V, V, V)`` float32 volume ``[z, y, x]`` in Å² per voxel; its total is ``Σ weights``.

    Raises
    ------
    ValueError
        For a non-positive ``size``, ``sampling`` or ``sigma``, weights of the wrong shape or not
        finite, or an atom whose centre lies outside the volume.
    """
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"size={size!r}: expected a positive number of voxels")
    size = int(size)
    if not (np.isfinite(sampling) and sampling > 0):
        raise ValueError(f"sampling={sampling!r}: expected a positive voxel size in Å")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma={sigma!r}: expected a positive Gaussian width in Å")

    if hasattr(atoms, "get_positions"):
        positions = np.asarray(atoms.get_positions(), dtype=np.float64)
        symbols = list(atoms.get_chemical_symbols())
    else:
        positions = np.asarray(atoms, dtype=np.float64)
        symbols = None
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"atoms: positions of shape {positions.shape}: expected (N, 3) in Å")
    if not np.all(np.isfinite(positions)):
        raise ValueError("atoms: expected finite positions")
    n_atoms = len(positions)

    if weights is None:
        if symbols is None:
            raise ValueError(
                "weights=None: expected weights (Å²) when atoms is a plain position array"
            )
        weights = _cross_sections(symbols, microscope)
    else:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (n_atoms,):
            raise ValueError(
                f"weights.shape={weights.shape}: expected ({n_atoms},), one weight per atom"
            )
        if not np.all(np.isfinite(weights)):
            raise ValueError("weights: expected finite values")

    volume_flat = np.zeros(size**3, dtype=np.float64)
    if n_atoms == 0:
        return volume_flat.reshape(size, size, size).astype(np.float32)

    centres = positions / sampling  # voxel units, (x, y, z)
    outside = np.any((centres < -0.5) | (centres > size - 0.5), axis=1)
    if np.any(outside):
        index = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"atoms[{index}].position={positions[index].tolist()} Å: expected inside the volume "
            f"[0, {(size - 1) * sampling:g}] Å ({size} voxels of {sampling:g} Å)"
        )

    half = max(1, math.ceil(_WINDOW_SIGMAS * sigma / sampling))
    offsets = np.arange(-half, half + 1)
    width = len(offsets)
    sigma_voxels = sigma / sampling
    batch = max(1, _BATCH_VOXELS // width**3)

    for start in range(0, n_atoms, batch):
        stop = min(start + batch, n_atoms)
        c = centres[start:stop]  # (n, 3) x, y, z
        nearest = np.rint(c).astype(np.int64)
        index = nearest[:, :, None] + offsets[None, None, :]  # (n, 3, w)
        inside = (index >= 0) & (index < size)
        # reproducible.exp: np.exp's AVX-512 kernel rounds differently (simgen.tools.reproducible)
        profile = reproducible_exp(-0.5 * ((index - c[:, :, None]) / sigma_voxels) ** 2) * inside
        profile /= profile.sum(axis=2, keepdims=True)  # unit sum over the voxels in the volume
        index = np.clip(index, 0, size - 1)
        gx, gy, gz = profile[:, 0], profile[:, 1], profile[:, 2]
        ix, iy, iz = index[:, 0], index[:, 1], index[:, 2]
        values = (
            weights[start:stop, None, None, None]
            * gz[:, :, None, None]
            * gy[:, None, :, None]
            * gx[:, None, None, :]
        )
        flat = (iz[:, :, None, None] * size + iy[:, None, :, None]) * size + ix[:, None, None, :]
        volume_flat += np.bincount(flat.ravel(), weights=values.ravel(), minlength=size**3)
    return volume_flat.reshape(size, size, size).astype(np.float32)
