"""Augmentations that keep the missing-wedge geometry of a single-axis tilt series.

A reconstruction from tilt angles Θ about y lacks the Fourier components in a wedge around the
beam axis k_z (those outside the planes tilted by θ ∈ Θ). A transform of the volume is allowed
only if the reconstruction of the transformed object from the same angles would look like the
transformed reconstruction, i.e. if it maps the set of projection directions onto itself.

With the contract's projection at θ = sum over z of R_y(θ)·object (see models.projector):

* flip y commutes with R_y(θ): the projection at θ is the y-flipped projection at θ (θ -> θ);
* flip x: R_y(θ)∘F_x = F_x∘R_y(−θ), so the projection at θ is the x-flipped projection at −θ;
* flip z: R_y(θ)∘F_z = F_z∘R_y(−θ), and the sum over z ignores F_z: the projection at θ is the
  projection at −θ;
* the 180° rotation about y (flip x and z) therefore maps θ -> θ, with x-flipped images.

So the eight axis flips form the group of allowed transforms for a tilt range symmetric about 0
(Θ = −Θ, as the usual ±70°): an odd number of x/z flips maps θ -> −θ. For an asymmetric range
only the four with an even number of x/z flips (identity, flip y, 180° about y, and both) keep
Θ. A 90° rotation about y maps θ -> θ ± 90° (the wedge turns to the x axis); any 90° rotation
or transpose involving y moves the tilt axis: none of those are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "WedgeFlip",
    "WEDGE_FLIPS",
    "allowed_flips",
    "random_wedge_flip",
    "random_wedge_transform",
]


def _flip(array, axes: tuple[int, ...]):
    if not axes:
        return array
    try:
        import torch

        if isinstance(array, torch.Tensor):
            return torch.flip(array, dims=axes)
    except ImportError:  # pragma: no cover - torch is a dependency of models
        pass
    return np.ascontiguousarray(np.flip(np.asarray(array), axis=axes))


@dataclass(frozen=True)
class WedgeFlip:
    """A flip of some of the volume axes z, y, x (an element of the wedge-preserving group).

    Args:
        z: Flip the z (beam) axis.
        y: Flip the y (tilt) axis.
        x: Flip the x axis.
    """

    z: bool = False
    y: bool = False
    x: bool = False

    @property
    def negates_angles(self) -> bool:
        """True when the transform maps tilt angle θ to −θ (an odd number of x/z flips)."""
        return self.x != self.z

    def keeps_angles(self, angles, atol: float = 1e-3) -> bool:
        """Whether the tilt angles (degrees) map onto themselves under this transform."""
        angles = np.asarray(angles, dtype=np.float64)
        if not self.negates_angles:
            return True
        return bool(np.allclose(np.sort(angles), np.sort(-angles), atol=atol))

    def volume(self, volume):
        """Flip a volume ``[..., z, y, x]`` (numpy array or tensor; leading axes untouched)."""
        axes = tuple(a for a, f in zip((-3, -2, -1), (self.z, self.y, self.x)) if f)
        return _flip(volume, axes)

    def angle_order(self, angles, atol: float = 1e-3) -> np.ndarray:
        """Index ``j(i)`` of the original projection that becomes projection ``i`` (angle θ_i).

        Raises:
            ValueError: if the angle set is not mapped onto itself.
        """
        angles = np.asarray(angles, dtype=np.float64)
        if not self.negates_angles:
            return np.arange(len(angles))
        if not self.keeps_angles(angles, atol):
            raise ValueError(
                f"angles={angles.tolist()}: expected a tilt range symmetric about 0° for {self} "
                "(it maps θ to −θ)"
            )
        return np.array([int(np.argmin(np.abs(angles + a))) for a in angles])

    def tilt_series(self, series, angles=None):
        """Tilt series ``[angle, y, x]`` of the transformed object at the same ``angles``.

        Projection ``i`` becomes the projection at the mirrored angle (for an odd number of x/z
        flips), flipped in y if ``y`` and in x if ``x``. ``angles`` (degrees) are needed only
        when the transform negates angles.
        """
        if self.negates_angles:
            if angles is None:
                raise ValueError(f"angles=None: {self} maps θ to −θ, expected the tilt angles")
            series = series[self.angle_order(angles)]
        axes = tuple(a for a, f in zip((-2, -1), (self.y, self.x)) if f)
        return _flip(series, axes)

    def positions(self, positions: np.ndarray, shape, sampling: float) -> np.ndarray:
        """Atom positions (N, 3) Å ``(x, y, z)`` in the frame of a volume of ``shape`` [z, y, x].

        Voxel ``k`` is centred at ``k * sampling``, so a flip maps c -> (n - 1) * sampling - c.
        """
        out = np.array(positions, dtype=np.float64, copy=True)
        nz, ny, nx = shape[-3:]
        for col, (flip, n) in enumerate(((self.x, nx), (self.y, ny), (self.z, nz))):
            if flip:
                out[:, col] = (n - 1) * sampling - out[:, col]
        return out


WEDGE_FLIPS: tuple[WedgeFlip, ...] = tuple(
    WedgeFlip(z=bool(z), y=bool(y), x=bool(x)) for z in (0, 1) for y in (0, 1) for x in (0, 1)
)


def allowed_flips(angles=None, atol: float = 1e-3) -> tuple[WedgeFlip, ...]:
    """The flips that keep the tilt angles (all eight for a symmetric range; four otherwise or
    when ``angles`` is None)."""
    if angles is None:
        return tuple(f for f in WEDGE_FLIPS if not f.negates_angles)
    return tuple(f for f in WEDGE_FLIPS if f.keeps_angles(angles, atol))


def random_wedge_flip(rng: np.random.Generator, angles=None) -> WedgeFlip:
    """A uniformly random element of :func:`allowed_flips` drawn with ``rng``."""
    choices = allowed_flips(angles)
    return choices[int(rng.integers(len(choices)))]


def random_wedge_transform(
    volume, target=None, series=None, rng: np.random.Generator | None = None, *, angles=None
):
    """Apply one random wedge-preserving flip to a training triple.

    Args:
        volume: Reconstruction ``[..., z, y, x]``.
        target: Ideal volume with the same shape (or None).
        series: Tilt series ``[angle, y, x]`` (or None).
        rng: Random generator (required).
        angles: Tilt angles (degrees) of ``series``; with a symmetric range all eight flips are
            drawn, without angles only the four that keep every θ.

    Returns:
        ``(volume, target, series)`` transformed alike (None stays None).
    """
    if rng is None:
        raise ValueError("rng=None: expected a numpy.random.Generator")
    flip = random_wedge_flip(rng, angles)
    return (
        flip.volume(volume),
        None if target is None else flip.volume(target),
        None if series is None else flip.tilt_series(series, angles),
    )
