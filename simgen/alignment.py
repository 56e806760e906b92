"""Alignment of a single-axis tilt series before reconstruction, as real AET pipelines do.

A measured projection is the ideal one translated by an unknown ``(dy, dx)`` (stage shifts,
drift) and taken at a tilt angle that may differ from the recorded one. Every AET pipeline
estimates those before (and while) reconstructing: centre of mass across the tilt axis,
cross-correlation or common lines along it, then iterative refinement of shifts and angles
against re-projections of the current reconstruction (GENFIRE, Pryor et al., Sci. Rep. 7, 10409
(2017); RESIRE, Pham et al., Sci. Rep. 13, 5624 (2023)).

Methods (:data:`METHODS`)
-------------------------
``"none"``
    No alignment.
``"com"``
    Centre of mass. Along the tilt axis (y) the centroid of a projection does not depend on the
    angle: each projection's y centroid is moved to the mean one. Across it (x) the centroid of a
    rigid object follows ``c + x₀ cosθ + z₀ sinθ``: each x centroid is moved onto that track,
    fitted by least squares (``keep_offset=True``, the default: the particle stays where it is,
    so the volume stays registered with its atoms), or onto the tilt axis (``keep_offset=False``:
    the particle's centre of mass is put on the axis, as in Scott et al., Nature 483, 444 (2012)).
``"cross_correlation"``
    x as ``"com"``; y by cross-correlating each projection's y profile (its sum over x, the same
    at every tilt angle for a rigid object: the common line of a single-axis series) with one
    common reference, the mean profile of the series as aligned so far (three rounds). Every
    projection is referenced to the same profile, so no error accumulates from one projection to
    the next (neighbour-to-neighbour correlation drifts). Sub-pixel by Gauss–Newton on the Fourier
    shift.
``"projection_matching"``
    Start from ``"cross_correlation"``; then ``iterations`` rounds of: reconstruct (SIRT, a few
    iterations) → re-project at the current angles (:func:`simgen.reconstruct.project`) → each
    projection's 2D shift against its re-projection (and, with ``refine_angles``, its tilt angle
    by a parabola through the misfit at nearby angles).

Conventions: ``shifts[k] = (dy, dx)`` is the estimated translation of projection ``k`` in pixels
(positive: content moved to larger indices, as :class:`simgen.noise.Misalignment` draws it);
the aligned series is the measured one shifted back by ``−shifts`` exactly (Fourier shift,
:func:`simgen.noise.fourier_shift`). What cannot be known from the data alone is fixed by
convention (the *gauge*): the mean y shift is 0 and the x shifts have no component of a rigid
(x, z) translation of the object (``cosθ``, ``sinθ``); a common angle offset is a rigid rotation.
:func:`alignment_errors` compares estimates with the truth modulo that gauge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simgen.noise import fourier_shift

__all__ = ["METHODS", "Alignment", "align_tilt_series", "alignment_errors", "estimate_shift"]

logger = logging.getLogger(__name__)

METHODS = ("none", "com", "cross_correlation", "projection_matching")


@dataclass
class Alignment:
    """The result of :func:`align_tilt_series`."""

    aligned: np.ndarray  # (A, P_y, P_x) float32, the series shifted back by -shifts
    shifts: np.ndarray  # (A, 2) estimated (dy, dx) translation of each projection, pixels
    angles: np.ndarray  # (A,) estimated tilt angles, degrees (the nominal ones unless refined)
    method: str


def _check(tilt_series, angles_deg) -> tuple[np.ndarray, np.ndarray]:
    series = np.asarray(tilt_series)
    if series.ndim != 3 or series.size == 0:
        raise ValueError(
            f"tilt_series.shape={series.shape}: expected a non-empty (angle, y, x) array"
        )
    if not np.all(np.isfinite(series)):
        raise ValueError("tilt_series: expected finite values, found NaN or inf")
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.shape != series.shape[:1] or not np.all(np.isfinite(angles)):
        raise ValueError(
            f"angles_deg.shape={angles.shape}: expected ({series.shape[0]},) finite tilt angles"
        )
    return series.astype(np.float32, copy=False), angles


def _centroids(images: np.ndarray) -> np.ndarray:
    """(A, 2) intensity centroids (y, x) in pixels, negative values counted as zero."""
    weights = np.clip(images, 0.0, None).astype(np.float64)
    totals = weights.sum(axis=(1, 2))
    if np.any(totals <= 0):
        raise ValueError(
            "tilt_series: expected every projection to have positive total intensity for alignment"
        )
    ys = np.arange(images.shape[1], dtype=np.float64)
    xs = np.arange(images.shape[2], dtype=np.float64)
    cy = np.einsum("aij,i->a", weights, ys) / totals
    cx = np.einsum("aij,j->a", weights, xs) / totals
    return np.stack([cy, cx], axis=1)


def _rigid_x_basis(angles_deg: np.ndarray) -> np.ndarray:
    theta = np.deg2rad(angles_deg)
    return np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _remove_rigid_x(values: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """``values`` minus their least-squares fit by ``a cosθ + b sinθ`` (a rigid x/z translation)."""
    basis = _rigid_x_basis(angles_deg)
    if len(values) < 3 or np.ptp(angles_deg) == 0:
        return values - values.mean()
    coefficients, *_ = np.linalg.lstsq(basis, values, rcond=None)
    return values - basis @ coefficients


def _com_x(series: np.ndarray, angles: np.ndarray, keep_offset: bool) -> np.ndarray:
    cx = _centroids(series)[:, 1]
    if keep_offset:
        return _remove_rigid_x(cx - (series.shape[2] - 1) / 2.0, angles)
    return cx - (series.shape[2] - 1) / 2.0


def estimate_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    steps: int = 4,
    initial: Sequence[float] | None = None,
    max_shift: float | None = None,
) -> np.ndarray:
    """The translation ``s`` (pixels, one per axis) with ``moving ≈ a · shift(reference, s)``.

    1D or 2D. Starts from ``initial`` or else the integer peak of the cross-correlation within
    ``max_shift`` pixels (default: a quarter of the image), then ``steps`` Gauss–Newton steps on
    the exact Fourier shift (with a free scale ``a``), so the estimate is sub-pixel without a
    parabola bias. The images are treated as periodic.
    """
    reference = np.asarray(reference, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    if reference.shape != moving.shape or reference.ndim not in (1, 2):
        raise ValueError(
            f"moving.shape={moving.shape}: expected the 1D or 2D shape of reference "
            f"{reference.shape}"
        )
    axes = tuple(range(reference.ndim))
    spec_ref = np.fft.fftn(reference)
    spec_mov = np.fft.fftn(moving)
    if initial is not None:
        shift = np.asarray(initial, dtype=np.float64).reshape(len(axes)).copy()
    else:
        corr = np.fft.ifftn(spec_mov * np.conj(spec_ref)).real
        lags = np.meshgrid(
            *[np.fft.fftfreq(n) * n for n in reference.shape], indexing="ij"
        )  # signed integer lags
        limit = min(reference.shape) / 4 if max_shift is None else max_shift
        corr[np.sqrt(sum(lag**2 for lag in lags)) > limit] = -np.inf
        peak = np.unravel_index(np.argmax(corr), corr.shape)
        shift = np.array([lag[peak] for lag in lags], dtype=np.float64)
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in reference.shape], indexing="ij")
    scale = 1.0
    for _ in range(steps):
        phase = np.exp(-2j * np.pi * sum(f * s for f, s in zip(freqs, shift)))
        shifted_spec = spec_ref * phase
        model = np.fft.ifftn(shifted_spec).real
        # d model / d s_axis = ifft(-2πi f_axis · R · phase)
        derivs = [np.fft.ifftn(-2j * np.pi * f * shifted_spec).real for f in freqs]
        jac = np.stack([scale * d.ravel() for d in derivs] + [model.ravel()], axis=1)
        residual = (moving - scale * model).ravel()
        normal = jac.T @ jac
        if not np.all(np.isfinite(normal)) or np.linalg.cond(normal) > 1e12:
            break
        step = np.linalg.solve(normal, jac.T @ residual)
        step[: len(axes)] = np.clip(step[: len(axes)], -1.0, 1.0)
        shift = shift + step[: len(axes)]
        scale = scale + step[-1]
        if np.all(np.abs(step[: len(axes)]) < 1e-4):
            break
    return shift


def _profile_y(series: np.ndarray, initial: np.ndarray, rounds: int = 3) -> np.ndarray:
    """y shifts from the y profiles against their common mean (gauge: mean shift 0).

    Starts from ``initial`` (the centroid estimate), so a noisy correlation cannot jump to a far
    peak."""
    profiles = series.sum(axis=2).astype(np.float64)  # (A, P_y): the common line
    shifts = np.asarray(initial, dtype=np.float64).copy()
    for _ in range(rounds):
        aligned = fourier_shift(profiles[:, :, None], np.stack([-shifts, 0 * shifts], axis=1))
        reference = aligned[:, :, 0].mean(axis=0)
        shifts = np.array(
            [estimate_shift(reference, p, initial=[d])[0] for p, d in zip(profiles, shifts)]
        )
        shifts -= shifts.mean()
    return shifts


def align_tilt_series(
    tilt_series: np.ndarray,
    angles_deg: Sequence[float],
    method: str = "cross_correlation",
    *,
    keep_offset: bool = True,
    iterations: int = 3,
    sirt_iterations: int = 100,
    refine_angles: bool = False,
    angle_step: float = 0.25,
) -> Alignment:
    """Estimate and remove the translation (and optionally tilt-angle error) of each projection.

    Parameters
    ----------
    tilt_series
        ``(A, P_y, P_x)`` projections ``[angle, y, x]``, normalised (e.g. Å² per pixel) or counts
        with the background removed.
    angles_deg
        ``(A,)`` recorded tilt angles in degrees.
    method
        One of :data:`METHODS` (see the module docstring).
    keep_offset
        ``"com"`` and the x of the other methods: keep the particle's centroid on its fitted
        rigid track (``True``) or put it on the tilt axis (``False``).
    iterations
        ``"projection_matching"``: rounds of reconstruct → re-project → shift (and angle) update.
    sirt_iterations
        ``"projection_matching"``: SIRT iterations of each round's reconstruction.
    refine_angles
        ``"projection_matching"``: also refine each tilt angle (a common offset is kept at 0:
        it is a rigid rotation of the object).
    angle_step
        ``refine_angles``: spacing in degrees of the angles tried around the current estimate.

    Returns
    -------
    Alignment
        The aligned series, the estimated shifts (pixels) and angles (degrees), the method.
    """
    if method not in METHODS:
        from difflib import get_close_matches

        close = get_close_matches(str(method), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"method={method!r}: expected one of {list(METHODS)}{hint}")
    for name, value in (("iterations", iterations), ("sirt_iterations", sirt_iterations)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer")
    if not (np.isfinite(angle_step) and angle_step > 0):
        raise ValueError(f"angle_step={angle_step!r}: expected a positive number of degrees")
    series, angles = _check(tilt_series, angles_deg)
    n_angles = len(angles)
    shifts = np.zeros((n_angles, 2))
    estimated_angles = angles.copy()
    if method == "none":
        return Alignment(series.copy(), shifts, estimated_angles, method)

    centroids = _centroids(series)
    shifts[:, 0] = centroids[:, 0] - centroids[:, 0].mean()
    if method != "com":
        shifts[:, 0] = _profile_y(series, shifts[:, 0])
    shifts[:, 1] = _com_x(series, angles, keep_offset)
    aligned = fourier_shift(series, -shifts)
    if method == "projection_matching":
        aligned, shifts, estimated_angles = _projection_matching(
            series,
            angles,
            shifts,
            iterations=int(iterations),
            sirt_iterations=int(sirt_iterations),
            refine_angles=refine_angles,
            angle_step=float(angle_step),
            keep_offset=keep_offset,
        )
    logger.info(
        "align: %s, shifts RMS (dy, dx) = (%.3f, %.3f) px, angle changes RMS %.3f deg",
        method,
        *np.sqrt((shifts**2).mean(axis=0)),
        float(np.sqrt(np.mean((estimated_angles - angles) ** 2))),
    )
    return Alignment(aligned.astype(np.float32), shifts, estimated_angles, method)


def _projection_matching(
    series, nominal, shifts, *, iterations, sirt_iterations, refine_angles, angle_step, keep_offset
):
    from simgen.reconstruct import project, reconstruct

    angles = nominal.copy()
    aligned = fourier_shift(series, -shifts)
    offsets = np.array([-1.0, 0.0, 1.0]) * angle_step
    for _ in range(iterations):
        volume = reconstruct(aligned, angles, method="sirt", iterations=sirt_iterations)
        reprojection = project(volume, angles)
        update = np.array(
            [
                estimate_shift(reprojection[k], aligned[k], initial=(0.0, 0.0))
                for k in range(len(angles))
            ]
        )
        update[:, 0] -= update[:, 0].mean()
        if keep_offset:
            update[:, 1] = _remove_rigid_x(update[:, 1], angles)
        shifts = shifts + update
        aligned = fourier_shift(series, -shifts)
        if refine_angles:
            trial = (angles[:, None] + offsets[None, :]).ravel()
            candidates = project(volume, trial).reshape(
                len(angles), len(offsets), *series.shape[1:]
            )
            misfit = ((candidates - aligned[:, None]) ** 2).sum(axis=(2, 3))  # (A, 3)
            curvature = misfit[:, 0] - 2 * misfit[:, 1] + misfit[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                vertex = 0.5 * (misfit[:, 0] - misfit[:, 2]) / curvature
            vertex = np.where(curvature > 0, np.clip(vertex, -1.0, 1.0), 0.0)
            change = vertex * angle_step
            angles = angles + change - change.mean()
    return aligned, shifts, angles


def alignment_errors(
    estimated_shifts: np.ndarray,
    true_shifts: np.ndarray,
    angles_deg: np.ndarray,
    estimated_angles: np.ndarray | None = None,
    true_angles: np.ndarray | None = None,
) -> dict:
    """RMS errors of estimated shifts (same unit as given) and angles (degrees), modulo the gauge.

    The y error has its mean removed (a common y shift moves the object, undetectable); the x
    error has its least-squares ``a cosθ + b sinθ`` component removed (a rigid x/z translation of
    the object); the angle error has its mean removed (a rigid rotation about the tilt axis).

    Returns
    -------
    dict
        ``shift_error_y``, ``shift_error_x``, ``shift_error`` (RMS of both), and ``angle_error``
        (degrees, NaN without angles); ``residual`` (A, 2) the per-projection shift errors.
    """
    estimated = np.asarray(estimated_shifts, dtype=np.float64)
    true = np.asarray(true_shifts, dtype=np.float64)
    angles = np.asarray(angles_deg, dtype=np.float64)
    if estimated.shape != true.shape or estimated.shape != (len(angles), 2):
        raise ValueError(
            f"estimated_shifts.shape={estimated.shape}: expected ({len(angles)}, 2) like "
            f"true_shifts {true.shape}"
        )
    error = estimated - true
    residual = np.stack(
        [error[:, 0] - error[:, 0].mean(), _remove_rigid_x(error[:, 1], angles)], axis=1
    )
    out = {
        "shift_error_y": float(np.sqrt(np.mean(residual[:, 0] ** 2))),
        "shift_error_x": float(np.sqrt(np.mean(residual[:, 1] ** 2))),
        "shift_error": float(np.sqrt(np.mean(residual**2))),
        "angle_error": float("nan"),
        "residual": residual,
    }
    if estimated_angles is not None and true_angles is not None:
        diff = np.asarray(estimated_angles, dtype=np.float64) - np.asarray(true_angles)
        out["angle_error"] = float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))
    return out
