"""Acquisition of a tilt series: the order the projections are recorded in, and their doses.

A tilt series is stored in tilt order (the order of its ``angles``), but it is *acquired* in an
order set by the tilt scheme, and every projection adds its dose to the sample. Beam damage
(:mod:`simgen.damage`) depends on the dose received *before* each projection, so the scheme
matters even though the stored arrays look the same.

Tilt schemes (``acquisition_order``):

``"sequential"``
    From the most negative to the most positive angle (−α → +α).
``"bidirectional"``
    From the angle nearest ``start_angle`` (default 0°) up to +α, then from the angle nearest
    ``start_angle`` not yet taken down to −α.
``"dose_symmetric"``
    Hagen et al., *J. Struct. Biol.* 197, 191 (2017): 0, +Δ, −Δ, +2Δ, −2Δ, … The series starts at
    the angle nearest 0° (ties go to the positive angle) and then alternates sides, taking the
    untaken angle nearest 0° on each side. The start counts as a step on its own side: after a
    start at 0° (or at a positive angle, e.g. +Δ/2 for an even count) the next angle is on the
    other side (+ after 0°, − after +Δ/2). When one side runs out (asymmetric range) the other
    side continues alone. ``group`` > 1 takes that many angles per side in turn
    (the grouped variant of the same paper).
explicit
    A permutation of ``range(A)``: ``order[s]`` is the stored index acquired at step ``s``.

Doses (``Acquisition.from_scheme``): ``dose_profile="uniform"`` gives every projection the same
dose; ``dose_profile="cos"`` makes the dose ∝ 1/cos θ, compensating the 1/cos θ growth of the
projected thickness of a slab so that each image has a similar signal-to-noise ratio. The
profile is scaled either to a base dose ``dose`` (the dose at 0°, e/Å²) or to a ``total_dose``
(e/Å², summed over the series): give exactly one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SCHEMES", "DOSE_PROFILES", "acquisition_order", "Acquisition"]

logger = logging.getLogger(__name__)

SCHEMES = ("sequential", "bidirectional", "dose_symmetric")
DOSE_PROFILES = ("uniform", "cos")


def _as_angles(angles_deg) -> np.ndarray:
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.ndim != 1 or angles.size == 0 or not np.all(np.isfinite(angles)):
        raise ValueError(
            f"angles_deg={angles_deg!r}: expected a non-empty 1D sequence of finite angles in degrees"
        )
    return angles


def _nearest(angles: np.ndarray, candidates: np.ndarray, target: float) -> int:
    """Index (into ``angles``) of the candidate nearest ``target``; ties go to the larger angle."""
    distance = np.abs(angles[candidates] - target)
    best = candidates[distance == distance.min()]
    return int(best[np.argmax(angles[best])])


def _validate_order(order, n: int) -> np.ndarray:
    message = f"scheme={order!r}: expected a permutation of range({n}) (each stored index once)"
    try:
        array = np.asarray(order, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(message) from error
    if (
        array.shape != (n,)
        or not np.all(np.isfinite(array))
        or not np.all(array == np.round(array))
    ):
        raise ValueError(message)
    array = array.astype(np.int64)
    if not np.array_equal(np.sort(array), np.arange(n)):
        raise ValueError(message)
    return array


def acquisition_order(
    angles_deg: Sequence[float] | np.ndarray,
    scheme: str | Sequence[int] = "sequential",
    *,
    start_angle: float = 0.0,
    group: int = 1,
) -> np.ndarray:
    """Indices of ``angles_deg`` in the order the projections are acquired.

    Parameters
    ----------
    angles_deg
        Tilt angles in degrees, in the order the tilt series is stored.
    scheme
        ``"sequential"``, ``"bidirectional"``, ``"dose_symmetric"`` (see the module docstring), or
        an explicit order: a permutation of ``range(len(angles_deg))``.
    start_angle
        Bidirectional only: the first branch starts at the angle nearest this (degrees).
    group
        Dose-symmetric only: number of consecutive angles taken on one side before switching.

    Returns
    -------
    numpy.ndarray
        ``(A,)`` int64; ``order[s]`` is the stored index of the projection acquired at step ``s``.
    """
    angles = _as_angles(angles_deg)
    n = angles.size
    if not isinstance(scheme, str):
        return _validate_order(scheme, n)
    if scheme not in SCHEMES:
        raise ValueError(
            f"scheme={scheme!r}: expected one of {', '.join(SCHEMES)} or a permutation of range({n})"
        )
    every = np.arange(n)
    if scheme == "sequential":
        return np.argsort(angles, kind="stable").astype(np.int64)

    if scheme == "bidirectional":
        if not np.isfinite(start_angle):
            raise ValueError(f"start_angle={start_angle!r}: expected a finite angle in degrees")
        start = _nearest(angles, every, start_angle)
        rest = every[every != start]
        up = rest[angles[rest] >= angles[start]]
        up = up[np.argsort(angles[up], kind="stable")]
        down = rest[angles[rest] < angles[start]]
        down = down[np.argsort(-angles[down], kind="stable")]
        return np.concatenate([[start], up, down]).astype(np.int64)

    # dose_symmetric
    if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 1:
        raise ValueError(f"group={group!r}: expected a positive integer")
    start = _nearest(angles, every, 0.0)
    rest = every[every != start]
    positive = (
        rest[angles[rest] >= 0.0] if angles[start] < 0 else rest[angles[rest] >= angles[start]]
    )
    positive = positive[np.argsort(angles[positive], kind="stable")]
    negative = np.setdiff1d(rest, positive)
    negative = negative[np.argsort(-angles[negative], kind="stable")]
    sides = {+1: list(positive), -1: list(negative)}
    # The start is a step on its own side; a 0° start counts as negative so that + comes next.
    side = -1 if angles[start] <= 0.0 else +1
    order = [start]
    while sides[+1] or sides[-1]:
        side = -side
        if not sides[side]:
            side = -side
        for _ in range(group):
            if not sides[side]:
                break
            order.append(sides[side].pop(0))
    return np.asarray(order, dtype=np.int64)


@dataclass(frozen=True)
class Acquisition:
    """A tilt series as acquired: angles in stored order, acquisition order and per-projection dose.

    Attributes
    ----------
    angles
        ``(A,)`` float64, tilt angles in degrees, in the order the tilt series is stored.
    order
        ``(A,)`` int64, ``order[s]`` = stored index of the projection acquired at step ``s``.
    dose
        ``(A,)`` float64, dose of each projection in e/Å², stored order.
    scheme
        Name of the tilt scheme (``"explicit"`` for a given permutation).
    dose_profile
        ``"uniform"`` or ``"cos"``.
    """

    angles: np.ndarray
    order: np.ndarray
    dose: np.ndarray
    scheme: str = "sequential"
    dose_profile: str = "uniform"

    def __post_init__(self) -> None:
        angles = _as_angles(self.angles)
        order = _validate_order(self.order, angles.size)
        dose = np.asarray(self.dose, dtype=np.float64)
        if dose.shape != angles.shape or not np.all(np.isfinite(dose)) or np.any(dose < 0):
            raise ValueError(
                f"dose={self.dose!r}: expected {angles.size} finite non-negative doses in e/Å², one per angle"
            )
        for name, value in (("angles", angles), ("order", order), ("dose", dose)):
            value = value.copy()
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @classmethod
    def from_scheme(
        cls,
        angles_deg: Sequence[float] | np.ndarray,
        scheme: str | Sequence[int] = "sequential",
        *,
        dose: float | None = None,
        total_dose: float | None = None,
        dose_profile: str = "uniform",
        start_angle: float = 0.0,
        group: int = 1,
    ) -> Acquisition:
        """Build an acquisition from a tilt scheme and a dose budget.

        Parameters
        ----------
        angles_deg
            Tilt angles in degrees, stored order.
        scheme
            Tilt scheme or explicit order, see :func:`acquisition_order`.
        dose
            Base dose in e/Å²: the dose of every projection (``"uniform"``) or of a projection at
            0° (``"cos"``: projection ``i`` gets ``dose / cos θ_i``).
        total_dose
            Alternatively, the summed dose of the whole series in e/Å²; the profile is scaled so
            that the doses add up to it.
        dose_profile
            ``"uniform"`` or ``"cos"`` (dose ∝ 1/cos θ).
        start_angle, group
            Passed to :func:`acquisition_order`.
        """
        angles = _as_angles(angles_deg)
        if dose_profile not in DOSE_PROFILES:
            raise ValueError(
                f"dose_profile={dose_profile!r}: expected one of {', '.join(DOSE_PROFILES)}"
            )
        if (dose is None) == (total_dose is None):
            raise ValueError(
                f"dose={dose!r}, total_dose={total_dose!r}: expected exactly one of them (e/Å² per projection "
                "at 0°, or e/Å² for the whole series)"
            )
        for name, value in (("dose", dose), ("total_dose", total_dose)):
            if value is not None and (not np.isfinite(value) or value <= 0):
                raise ValueError(f"{name}={value!r}: expected a positive number of e/Å²")
        if dose_profile == "cos":
            if np.any(np.abs(angles) >= 90.0):
                raise ValueError(
                    f"angles_deg={angles_deg!r}: dose_profile='cos' needs |angle| < 90 degrees"
                )
            profile = 1.0 / np.cos(np.deg2rad(angles))
        else:
            profile = np.ones_like(angles)
        doses = profile * dose if dose is not None else profile * (total_dose / profile.sum())
        order = acquisition_order(angles, scheme, start_angle=start_angle, group=group)
        name = scheme if isinstance(scheme, str) else "explicit"
        return cls(angles=angles, order=order, dose=doses, scheme=name, dose_profile=dose_profile)

    @property
    def n_projections(self) -> int:
        return int(self.angles.size)

    @property
    def step(self) -> np.ndarray:
        """``(A,)`` int64: acquisition step of each stored projection (inverse of ``order``)."""
        step = np.empty_like(self.order)
        step[self.order] = np.arange(self.order.size)
        return step

    @property
    def cumulative_dose(self) -> np.ndarray:
        """``(A,)`` e/Å² received by the sample before each stored projection was acquired.

        The running sum of the doses in acquisition order, excluding the projection itself.
        """
        in_order = self.dose[self.order]
        before = np.concatenate([[0.0], np.cumsum(in_order)[:-1]])
        out = np.empty_like(before)
        out[self.order] = before
        return out

    @property
    def total_dose(self) -> float:
        """Summed dose of the whole series in e/Å²."""
        return float(self.dose.sum())

    def beam_direction(self, index: int) -> np.ndarray:
        """Unit vector (x, y, z) of the beam in the sample frame for stored projection ``index``.

        The beam travels along +z of the rotated frame (geometry contract); in the sample frame
        that is R_y(θ)ᵀ ẑ = (−sin θ, 0, cos θ).
        """
        theta = np.deg2rad(self.angles[index])
        return np.array([-np.sin(theta), 0.0, np.cos(theta)])

    def to_dict(self) -> dict:
        """Plain arrays and scalars for a store or a log (stored order)."""
        return {
            "angles": self.angles.tolist(),
            "order": self.order.tolist(),
            "dose": self.dose.tolist(),
            "cumulative_dose": self.cumulative_dose.tolist(),
            "scheme": self.scheme,
            "dose_profile": self.dose_profile,
        }
