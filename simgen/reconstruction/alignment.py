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
    iterations) → re-project at the current angles (:func:`simgen.reconstruction.reconstruct.project`) → each
    projection's 2D shift against its re-projection (and, with ``refine_angles``, its tilt angle
    by a parabola through the misfit at nearby angles).

``"projection_matching_split"``
    Projection matching with ``reference="split"`` and, in generation, the stage-precision
    priors of the noise chain (:meth:`simgen.physics.noise.NoiseChain.alignment_prior`). What the
    catalogue's ``auto`` chooses for noise with a geometric error since 2026-11-30.

    **Split reference** (``reference="split"``; ``"full"`` is the default). Matched against a reconstruction
    that contains its own noise, a projection finds that noise again: at low dose (≲300 e/Å²)
    the shift update is near zero or anti-correlated with the truth, and "aligned" data were
    worse than unaligned ones. So the even-indexed projections are matched against the
    re-projection of the reconstruction from the odd-indexed ones and vice versa (two
    half-series SIRT reconstructions cost about one of the whole series). The mean squared
    residual against that independent reference is an honest noise level (Poisson, read noise,
    reference error). The information of a shift is the signal's gradient power, estimated
    without noise bias by the cross product ``Σ ∂r·∂y`` of the reference and the measured
    projection (two independent noisy copies); the Gauss–Newton ``Σ (∂r)²`` counts the
    reference's noise as information (7× too confident when both are equally noisy).

    **Priors** (``shift_prior``, ``angle_prior``: the stage precision, e.g. from
    :meth:`simgen.physics.noise.NoiseChain.alignment_prior`). Each round's estimate of a projection's
    total shift is replaced by its posterior mean under N(0, prior²): ``ŝ · p² / (p² + var)``.
    The start (centroid / common line) is shrunk too when its shifts scatter significantly more
    than the prior allows (mean square above that of N(0, p²) by more than 2 standard
    deviations of its χ²): the excess is its error variance (at very low dose the centroids are
    mostly noise, and matching against references built from them does not undo that).
    Tilt angles are refined against the re-projections of the whole series (the half-series
    ones bias the angle: their streaks lie along the other half's directions), with the
    honest residual level of the split reference for the variance ``2σ²/χ''`` of each angle,
    and shrunk toward the recorded angle with an empirical-Bayes spread: ``τ² = mean(Δθ²) −
    mean(var)`` (at most ``angle_prior²``), so angles that the data cannot determine stay at
    the recorded ones. The angle re-projections come from the two half-series reconstructions
    averaged (no extra reconstruction).

    **Honest variance.** The variance of each matched shift is the cross-product one above
    times :data:`REFERENCE_ERROR_FACTOR` (8): the residual of one projection does not see the
    reference's own, structured error (the other half's residual misalignment and tilt errors,
    SIRT artefacts); on simulated series the squared errors were 5–15× the residual-based
    variance at 100–1e3 e/Å², and the MAP shrinkage trusted noise at low dose. A shift whose
    inflated variance exceeds :data:`THRESHOLD_FACTOR` prior variances carries no information
    (the estimator's threshold region): its posterior is the prior, 0. **Half offset.**
    Each half-series reconstruction sits in the frame of its own projections' shifts; a
    relative translation of the two halves is invisible to matching against the other half and
    flips between the halves from round to round. It is measured by registering the two half
    volumes and split evenly between them (:func:`_half_offset`); at 1e3 e/Å² this removed
    most of the remaining error (an alternating even/odd pattern, lag-1 autocorrelation −0.86).

    **Cost.** The early rounds run on 2×-binned projections (an eighth of the SIRT work), the
    later ones at full resolution; only the first reconstruction starts from zeros, the rest
    are warm-started from the previous round's volumes; rounds stop when the shifts change by
    less than :data:`SHIFT_TOLERANCE` pixels and the angles by less than
    :data:`ANGLE_TOLERANCE` degrees (at most ``iterations`` rounds per resolution); each
    half's reference is projected once per round, at the other half's angles, and the angles
    are refined against the two half volumes averaged (no extra reconstruction).
    ``scripts/bench_alignment.py`` prints the price of the alignment in generation and
    ``scripts/alignment_accuracy.py`` the accuracy of each variant.

    A cross-validated acceptance test (keep the unaligned series if
    it predicts its held-out halves better) was tried and dropped: the halves' shifts are
    fitted against each other, so the held-out misfit adapts to them and the test never chose
    the unaligned series, even where that had the lower error.

Conventions: ``shifts[k] = (dy, dx)`` is the estimated translation of projection ``k`` in pixels
(positive: content moved to larger indices, as :class:`simgen.physics.noise.Misalignment` draws it);
the aligned series is the measured one shifted back by ``−shifts`` exactly (Fourier shift,
:func:`simgen.physics.noise.fourier_shift`). What cannot be known from the data alone is fixed by
convention (the *gauge*): the mean y shift is 0 and the x shifts have no component of a rigid
(x, z) translation of the object (``cosθ``, ``sinθ``); a common angle offset is a rigid rotation.
:func:`alignment_errors` compares estimates with the truth modulo that gauge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simgen.physics.noise import fourier_shift
from simgen.registry import ALIGNMENT_METHODS
from simgen.tools.reproducible import complex_multiply, inv_small, solve_small

__all__ = ["METHODS", "Alignment", "align_tilt_series", "alignment_errors", "estimate_shift"]

logger = logging.getLogger(__name__)

METHODS = ALIGNMENT_METHODS  # the one definition: simgen.registry


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
    # Normal equations with einsum and a small solver, not LAPACK/BLAS (simgen.tools.reproducible)
    coefficients = solve_small(
        np.einsum("ij,ik->jk", basis, basis), np.einsum("ij,i...->j...", basis, values)
    )
    return values - np.einsum("ij,j...->i...", basis, coefficients)


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
    return _fit_shift(reference, moving, steps=steps, initial=initial, max_shift=max_shift)[0]


def _fit_shift(reference, moving, *, steps=4, initial=None, max_shift=None):
    """:func:`estimate_shift` and the (axes, axes) covariance of the shift in pixels².

    The covariance is the Gauss–Newton one, ``σ² (JᵀJ)⁻¹``, with ``σ²`` the mean squared
    residual of the fit: an honest noise variance only when ``reference`` does not contain
    ``moving``'s own noise (the split reference of projection matching)."""
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
        corr = np.fft.ifftn(complex_multiply(spec_mov, np.conj(spec_ref))).real
        lags = np.meshgrid(
            *[np.fft.fftfreq(n) * n for n in reference.shape], indexing="ij"
        )  # signed integer lags
        limit = min(reference.shape) / 4 if max_shift is None else max_shift
        corr[np.sqrt(sum(lag**2 for lag in lags)) > limit] = -np.inf
        peak = np.unravel_index(np.argmax(corr), corr.shape)
        shift = np.array([lag[peak] for lag in lags], dtype=np.float64)
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in reference.shape], indexing="ij")
    scale = 1.0
    last = None  # (residual, jac, step, normal) of the last step taken
    for _ in range(steps):
        phase = np.exp(-2j * np.pi * sum(f * s for f, s in zip(freqs, shift)))
        shifted_spec = complex_multiply(spec_ref, phase)
        model = np.fft.ifftn(shifted_spec).real
        # d model / d s_axis = ifft(-2πi f_axis · R · phase)
        derivs = [np.fft.ifftn(-2j * np.pi * f * shifted_spec).real for f in freqs]
        jac = np.stack([scale * d.ravel() for d in derivs] + [model.ravel()], axis=1)
        residual = (moving - scale * model).ravel()
        # einsum, not BLAS: a BLAS product's summation order depends on the CPU (simgen.tools.reproducible)
        normal = np.einsum("ij,ik->jk", jac, jac)
        if not np.all(np.isfinite(normal)) or np.linalg.cond(normal) > 1e12:
            break
        step = solve_small(normal, np.einsum("ij,i->j", jac, residual))
        step[: len(axes)] = np.clip(step[: len(axes)], -1.0, 1.0)
        shift = shift + step[: len(axes)]
        scale = scale + step[-1]
        last = (residual, jac, step, normal)
        if np.all(np.abs(step[: len(axes)]) < 1e-4):
            break
    if last is None:
        return shift, np.full((len(axes), len(axes)), np.inf)
    residual, jac, step, normal = last
    variance = float(np.mean((residual - np.einsum("ij,j->i", jac, step)) ** 2))
    return shift, variance * inv_small(normal)[: len(axes), : len(axes)]


def _fit_shifts(references, moving, *, steps=4):
    """:func:`_fit_shift` of every projection at once (2D, from zero shift): ``(A, 2)`` shifts
    and ``(A, 2)`` Gauss–Newton variances; batched FFTs instead of a loop over projections."""
    references = np.asarray(references, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    n, ny, nx = references.shape
    spec_ref = np.fft.fft2(references)
    fy = np.fft.fftfreq(ny)[None, :, None]
    fx = np.fft.fftfreq(nx)[None, None, :]
    shift = np.zeros((n, 2))
    scale = np.ones(n)
    active = np.ones(n, dtype=bool)
    variance = np.full((n, 2), np.inf)
    for _ in range(steps):
        phase = np.exp(-2j * np.pi * (fy * shift[:, 0, None, None] + fx * shift[:, 1, None, None]))
        shifted = spec_ref * phase
        model = np.fft.ifft2(shifted).real
        dy = np.fft.ifft2(-2j * np.pi * fy * shifted).real
        dx = np.fft.ifft2(-2j * np.pi * fx * shifted).real
        jac = np.stack(
            [
                scale[:, None] * dy.reshape(n, -1),
                scale[:, None] * dx.reshape(n, -1),
                model.reshape(n, -1),
            ],
            axis=2,
        )  # (A, pixels, 3)
        residual = (moving - scale[:, None, None] * model).reshape(n, -1)
        normal = jac.transpose(0, 2, 1) @ jac
        rhs = (jac.transpose(0, 2, 1) @ residual[..., None])[..., 0]
        ok = active & np.all(np.isfinite(normal), axis=(1, 2))
        ok[ok] &= np.linalg.cond(normal[ok]) < 1e12
        if not np.any(ok):
            break
        step = np.zeros((n, 3))
        step[ok] = np.linalg.solve(normal[ok], rhs[ok][..., None])[..., 0]
        step[:, :2] = np.clip(step[:, :2], -1.0, 1.0)
        shift += step[:, :2]
        scale += step[:, 2]
        after = residual - (jac @ step[..., None])[..., 0]
        inverse = np.linalg.inv(normal[ok])
        variance[ok] = np.mean(after[ok] ** 2, axis=1)[:, None] * np.stack(
            [inverse[:, 0, 0], inverse[:, 1, 1]], axis=1
        )
        active = ok & ~np.all(np.abs(step[:, :2]) < 1e-4, axis=1)
        if not np.any(active):
            break
    return shift, variance


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
    reference: str = "full",
    shift_prior: float | None = None,
    angle_prior: float | None = None,
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
        ``"projection_matching"``: rounds of reconstruct → re-project → shift (and angle) update;
        with the split reference or priors, the most rounds at each resolution (2×-binned, then
        full), fewer when the shifts and angles stop changing (see the module docstring).
    sirt_iterations
        ``"projection_matching"``: SIRT iterations of each round's reconstruction; with the
        split reference or priors, of the first (cold) one only, the warm-started later ones
        take a tenth (binned) or a quarter (full resolution), at least 10.
    refine_angles
        ``"projection_matching"``: also refine each tilt angle (a common offset is kept at 0:
        it is a rigid rotation of the object).
    angle_step
        ``refine_angles``: spacing in degrees of the angles tried around the current estimate.
    reference
        ``"projection_matching"``: ``"full"`` (default) matches each projection against the
        re-projection of the reconstruction from all projections, its own included; ``"split"``
        against that from the other half of the series (even/odd indices).
        ``"projection_matching_split"`` is ``"projection_matching"`` with ``"split"``.
    shift_prior
        Standard deviation in pixels (per axis) of the true shifts, e.g. the stage precision
        (:meth:`simgen.physics.noise.NoiseChain.alignment_prior` divided by the pixel size). Given, each
        projection-matching estimate is replaced by its posterior mean under that prior (MAP
        shrinkage toward 0); ``None``: no shrinkage.
    angle_prior
        Standard deviation in degrees of the true tilt angles about the recorded ones; the same
        shrinkage for ``refine_angles``.

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
    if reference not in ("split", "full"):
        raise ValueError(f"reference={reference!r}: expected 'split' or 'full'")
    for name, value in (("shift_prior", shift_prior), ("angle_prior", angle_prior)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name}={value!r}: expected None or a standard deviation >= 0")
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
    if method == "projection_matching_split":
        reference = "split"
    if method in ("projection_matching", "projection_matching_split"):
        if shift_prior is not None:
            shifts = _shrink_start(shifts, float(shift_prior))
        aligned, shifts, estimated_angles = _projection_matching(
            series,
            angles,
            shifts,
            iterations=int(iterations),
            sirt_iterations=int(sirt_iterations),
            refine_angles=refine_angles,
            angle_step=float(angle_step),
            keep_offset=keep_offset,
            split=reference == "split",
            shift_prior=shift_prior,
            angle_prior=angle_prior,
        )
    logger.info(
        "align: %s, shifts RMS (dy, dx) = (%.3f, %.3f) px, angle changes RMS %.3f deg",
        method,
        *np.sqrt((shifts**2).mean(axis=0)),
        float(np.sqrt(np.mean((estimated_angles - angles) ** 2))),
    )
    return Alignment(aligned.astype(np.float32), shifts, estimated_angles, method)


def _shrink(estimate, variance, prior_sigma):
    """Posterior mean of a quantity with prior N(0, ``prior_sigma``²) and an estimate of it with
    Gaussian error of ``variance``; the estimate unchanged without a prior."""
    if prior_sigma is None:
        return estimate
    prior_var = float(prior_sigma) ** 2
    if prior_var == 0:
        return np.zeros_like(estimate)
    return estimate * prior_var / (prior_var + np.asarray(variance))


def _shrink_start(shifts, prior_sigma):
    """The centroid / common-line start shrunk toward 0 when its spread exceeds the prior's.

    With true shifts ~ N(0, p²) and independent estimation errors of variance v, the gauge-fixed
    estimates have ``E[mean ŝ²] = p²·(A − g)/A + v`` (g = 1 in y, 2 in x). When the observed
    mean square exceeds that of the prior by more than two standard deviations of a χ² with
    A − g degrees of freedom, ``v`` is its excess and each axis is multiplied by the posterior
    factor ``p² / (p² + v)``; otherwise the start is kept."""
    out = shifts.copy()
    n = len(shifts)
    for axis, gauge in ((0, 1), (1, 2)):
        dof = max(n - gauge, 1)
        expected = prior_sigma**2 * dof / n
        observed = float(np.mean(shifts[:, axis] ** 2))
        if observed > expected * (1.0 + 2.0 * np.sqrt(2.0 / dof)):
            out[:, axis] *= prior_sigma**2 / (prior_sigma**2 + observed - expected)
    return out


def _cross_variance(references, aligned, update):
    """(A, 2) variance of each matched shift, the signal's gradient power estimated without
    noise bias: ``σ² / (a Σ ∂r·∂y)`` per axis, with ``σ²`` the residual per pixel, ``r`` the
    independent reference moved by the fitted shift, ``a`` its fitted scale and ``y`` the
    measured projection. A noisy reference's own gradient power ``Σ (∂r)²`` counts its noise as
    information; the cross product of two independent noisy copies does not (its expectation
    is the signal's). Infinite where the cross product is not positive (no information)."""
    moved = fourier_shift(references.astype(np.float64), update)
    y = aligned.astype(np.float64)
    ny, nx = y.shape[1:]
    flat_r, flat_y = moved.reshape(len(y), -1), y.reshape(len(y), -1)
    scale = (flat_r * flat_y).sum(axis=1) / np.maximum((flat_r**2).sum(axis=1), 1e-300)
    residual = ((y - scale[:, None, None] * moved) ** 2).mean(axis=(1, 2))
    spec_r, spec_y = np.fft.fft2(moved), np.fft.fft2(y)
    out = np.empty((len(y), 2))
    for axis, k in enumerate(
        (np.fft.fftfreq(ny)[None, :, None], np.fft.fftfreq(nx)[None, None, :])
    ):
        # Parseval: Σ ∂r ∂y = Σ (2πk)² R Y* / N
        product = complex_multiply((2 * np.pi * k) ** 2 * spec_r, np.conj(spec_y))
        cross = product.real.sum(axis=(1, 2)) / (ny * nx)
        info = scale * cross
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, axis] = np.where(info > 0, residual / info, np.inf)
    return out


def _signal_sigma(estimate, variance, prior_sigma):
    """Empirical-Bayes spread of the true values behind noisy ``estimate`` s (method of moments).

    The estimates scatter by the true spread and their own error: ``τ² = mean(estimate²) −
    mean(variance)`` over the estimates with a finite variance, at least 0 and at most
    ``prior_sigma²`` (the known spread, when given)."""
    finite = np.isfinite(variance)
    if not np.any(finite):
        return 0.0
    tau2 = max(float(np.mean(estimate[finite] ** 2) - np.mean(variance[finite])), 0.0)
    if prior_sigma is not None:
        tau2 = min(tau2, float(prior_sigma) ** 2)
    return np.sqrt(tau2)


def _projection_matching_full(
    series, nominal, shifts, *, iterations, sirt_iterations, refine_angles, angle_step, keep_offset
):
    """Projection matching against the whole series' reconstruction, without priors.

    Kept in its original arithmetic order: every store made with ``"projection_matching"``
    before the split reference existed is reproduced bit for bit."""
    from simgen.reconstruction.reconstruct import project, reconstruct

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


#: The variance of a matched shift from one projection's residual (:func:`_cross_variance`)
#: leaves out the error of the reference itself (the other half's residual misalignment and
#: tilt errors, SIRT artefacts), which is structured, not white: on simulated series the
#: squared errors were 5–15× that variance at every dose (mean z² of the estimates against the
#: drawn shifts, seeds 2 and 3 of ``scripts/alignment_accuracy.py``'s particle, 100–1e3 e/Å²),
#: and the MAP shrinkage trusted the estimates too much at low dose. The variance is multiplied
#: by this factor before the shrinkage.
REFERENCE_ERROR_FACTOR = 8.0
#: A matched shift whose (inflated) variance exceeds this many prior variances (posterior
#: weight below 1/2) is taken as no information: at low SNR the fit locks onto noise peaks and
#: its Gaussian variance is far too small (the threshold effect of matched-filter estimation);
#: shrinking such shifts by a small factor still added ~1 pm at 100 e/Å² over leaving the
#: projections alone (training seeds 2 and 4; 2 and 4 prior variances: +0.4..+1.6 pm).
THRESHOLD_FACTOR = 1.0
#: Projection matching stops when the RMS change of the shifts in a round is below this (pixels)
#: and that of the refined angles below :data:`ANGLE_TOLERANCE` (degrees).
SHIFT_TOLERANCE = 0.05
ANGLE_TOLERANCE = 0.01


def _bin2(images: np.ndarray) -> np.ndarray:
    """(A, P_y, P_x) -> (A, P_y/2, P_x/2): the mean of each 2×2 block."""
    a, ny, nx = images.shape
    return (
        images.reshape(a, ny // 2, 2, nx // 2, 2)
        .mean(axis=(2, 4), dtype=np.float64)
        .astype(np.float32)
    )


def _unbin2(volume: np.ndarray) -> np.ndarray:
    """A volume reconstructed from 2×2-binned projections at full resolution: each voxel
    repeated 2×2×2 and halved (a binned line sum crosses half as many voxels, each 2× longer)."""
    return (0.5 * volume.repeat(2, 0).repeat(2, 1).repeat(2, 2)).astype(np.float32)


def _half_offset(source_volumes, angles):
    """(A, 2) shift (dy, dx) of each projection's reference frame relative to the common one.

    Each half-series reconstruction sits in the frame of its own projections' shifts: a
    relative translation ``D`` of the two halves (an error of their relative mean shift) is
    not seen by matching a projection against the *other* half, and it alternates between the
    halves from round to round. ``D`` is measured by registering the two volumes (Fourier
    shift, Gauss–Newton, on their sums along y and along z) and split evenly: the projections matched against the odd half are
    corrected by ``−P D/2``, those matched against the even half by ``+P D/2``, with ``P`` the
    projection of a 3D translation at each angle, ``(D_y, D_x cosθ + D_z sinθ)``."""
    odd_volume, even_volume = source_volumes
    # Registered through two projections of the volumes ([z, y, x]): along y gives (dz, dx),
    # along z gives (dy, dx); 2D fits are ~100× cheaper than a 3D one and see the same shift.
    dz, dx = _fit_shift(odd_volume.sum(axis=1), even_volume.sum(axis=1), initial=(0.0, 0.0))[0]
    dy = _fit_shift(odd_volume.sum(axis=0), even_volume.sum(axis=0), initial=(0.0, 0.0))[0][0]
    offset = (dz, dy, dx)
    theta = np.deg2rad(angles)
    projected = np.stack(
        [np.full(len(angles), offset[1]), offset[2] * np.cos(theta) + offset[0] * np.sin(theta)],
        axis=1,
    )
    sign = np.where(np.arange(len(angles)) % 2 == 0, -0.5, 0.5)  # even: matched against odd
    return sign[:, None] * projected


def _projection_matching(
    series,
    nominal,
    shifts,
    *,
    iterations,
    sirt_iterations,
    refine_angles,
    angle_step,
    keep_offset,
    split=True,
    shift_prior=None,
    angle_prior=None,
):
    """Projection matching with split references and/or priors (see the module docstring).

    Cost: the early rounds run on 2×-binned projections (an eighth of the SIRT work), up to
    ``iterations`` of them until the shifts change by less than 2 × :data:`SHIFT_TOLERANCE`;
    then up to ``iterations`` full-resolution rounds until they change by less than
    :data:`SHIFT_TOLERANCE` and the refined angles by less than :data:`ANGLE_TOLERANCE`; the
    angles are refined in the full-resolution rounds only (the binned rounds keep one set of
    projection matrices). Only the first reconstruction starts from zeros
    (``sirt_iterations``); every later one is warm-started from the previous round's volumes
    (binned ones upsampled) with a quarter of the iterations (at least 10)."""
    from simgen.reconstruction.reconstruct import project, reconstruct

    split = split and len(nominal) >= 4  # two halves of at least two projections each
    if not split and shift_prior is None and angle_prior is None:
        return _projection_matching_full(
            series,
            nominal,
            shifts,
            iterations=iterations,
            sirt_iterations=sirt_iterations,
            refine_angles=refine_angles,
            angle_step=angle_step,
            keep_offset=keep_offset,
        )
    angles = nominal.copy()
    n_angles = len(angles)
    aligned = fourier_shift(series, -shifts)
    offsets = np.array([-1.0, 0.0, 1.0]) * angle_step
    if split:
        even, odd = np.arange(0, n_angles, 2), np.arange(1, n_angles, 2)
        pairs = [(odd, even), (even, odd)]  # (model from, referenced)
    else:
        every = np.arange(n_angles)
        pairs = [(every, every)]
    can_bin = series.shape[1] % 2 == 0 and series.shape[2] % 2 == 0 and min(series.shape[1:]) >= 32
    phases = (2, 1) if can_bin else (1,)
    warm = None
    # a binned volume has half the voxels along a ray: SIRT converges in about half the sweeps
    cold_iterations = max(int(sirt_iterations) // phases[0], 10)
    # warm rounds: binned ones only follow small shift changes; the full-resolution ones
    # sharpen the upsampled binned volume, which sets the final accuracy at high dose
    warm_iterations = {
        2: max(int(sirt_iterations) // 10, 10),
        1: max(int(sirt_iterations) // 4, 10),
    }
    for factor in phases:
        tolerance = SHIFT_TOLERANCE * factor
        if warm is not None and factor == 1 and phases[0] == 2:
            warm = [_unbin2(v) for v in warm]
        for round_ in range(iterations):
            data = _bin2(aligned) if factor == 2 else aligned
            volumes = []
            references = np.empty_like(data)
            for n, (source, target) in enumerate(pairs):
                volume = reconstruct(
                    data[source],
                    angles[source],
                    method="sirt",
                    iterations=cold_iterations if warm is None else warm_iterations[factor],
                    initial=None if warm is None else warm[n],
                )
                volumes.append(volume)
                references[target] = project(volume, angles[target])
            warm = volumes
            update, variance = _fit_shifts(references, data)
            if split:
                variance = REFERENCE_ERROR_FACTOR * _cross_variance(references, data, update)
                if shift_prior is not None:
                    # a shift whose variance exceeds THRESHOLD_FACTOR prior variances is in the
                    # estimator's threshold region (noise peaks): no information, not a little
                    limit = THRESHOLD_FACTOR * float(shift_prior) ** 2
                    variance[factor**2 * variance > limit] = np.inf
                update = update + _half_offset(volumes, angles)
            total = _shrink(shifts + factor * update, factor**2 * variance, shift_prior)
            total[:, 0] -= total[:, 0].mean()
            if keep_offset:
                total[:, 1] = _remove_rigid_x(total[:, 1], angles)
            change = float(np.sqrt(np.mean((total - shifts) ** 2)))
            shifts = total
            aligned = fourier_shift(series, -shifts)
            angle_change = 0.0
            if refine_angles and factor == 1:
                previous = angles
                angles = _refine_angles(
                    volumes,
                    pairs,
                    references,
                    data,
                    aligned,
                    factor,
                    angles,
                    nominal,
                    offsets,
                    angle_step,
                    angle_prior,
                    split,
                )
                angle_change = float(np.sqrt(np.mean((angles - previous) ** 2)))
            last = (change < tolerance and angle_change < ANGLE_TOLERANCE) or (
                round_ == iterations - 1
            )
            logger.debug("projection matching (bin %d): shift change RMS %.3f px", factor, change)
            if last:
                break
    return aligned, shifts, angles


def _refine_angles(
    volumes,
    pairs,
    references,
    data,
    aligned,
    factor,
    angles,
    nominal,
    offsets,
    angle_step,
    angle_prior,
    split,
):
    """Each tilt angle by a parabola through the misfit at ``angles + offsets`` against the
    re-projections of the whole series' volume (the half volumes averaged, weighted by their
    projections), with the honest residual level of the split reference for its variance, and
    shrunk toward the recorded angle (see the module docstring). ``data`` is the round's
    matched (possibly binned) series; ``aligned`` the series after this round's shifts."""
    from simgen.reconstruction.reconstruct import project

    counts = [len(source) for source, _ in pairs]
    volume = sum(n * v for n, v in zip(counts, volumes)) / sum(counts)
    current = _bin2(aligned) if factor == 2 else aligned
    honest = ((references - current) ** 2).mean(axis=(1, 2))  # (A,)
    trial = (angles[:, None] + offsets[None, :]).ravel()
    candidates = project(volume, trial).reshape(len(angles), len(offsets), *current.shape[1:])
    misfit = ((candidates - current[:, None]) ** 2).sum(axis=(2, 3))  # (A, 3)
    curvature = misfit[:, 0] - 2 * misfit[:, 1] + misfit[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = 0.5 * (misfit[:, 0] - misfit[:, 2]) / curvature
        # χ² = misfit / σ² with σ² the residual per pixel: var(θ) = 2 / χ²''
        angle_var = 2.0 * honest * angle_step**2 / curvature
    good = curvature > 0
    vertex = np.where(good, np.clip(vertex, -1.0, 1.0), 0.0)
    angle_var = np.where(good, angle_var, np.inf)
    estimate = angles + vertex * angle_step - nominal
    estimate -= estimate.mean()
    spread = _signal_sigma(estimate, angle_var, angle_prior) if split else angle_prior
    change = _shrink(estimate, angle_var, spread)
    return nominal + change - change.mean()


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
