"""Atom tracing: local maxima of a reconstructed volume, refined to sub-voxel positions.

The procedure follows the atom tracing of atomic electron tomography (Miao, Ercius & Billinge,
Science 353, aaf2157 (2016); Yang et al., Nature 542, 75 (2017); Zhou et al., Nature 570, 500
(2019)): find local intensity maxima, keep those above a threshold and at least a minimum distance
from any stronger maximum, then refine each position by fitting a smooth function (a 3D Gaussian or
a quadratic polynomial) to the voxels around it.

Frames and units: volumes are indexed ``[z, y, x]``; the centre of voxel index ``k`` lies at
``k * sampling`` Å; positions are returned as ``(x, y, z)`` in Å in that frame.

This module uses numpy and scipy only (no torch), so the classical baseline can run without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Candidates",
    "trace_atoms",
    "noise_level",
    "default_min_distance",
    "otsu_threshold",
    "contrast_ratio",
]

logger = logging.getLogger(__name__)

_REFINE = ("gaussian", "polynomial", "none")
_FALLBACK_MIN_DISTANCE = 2.0  # Å, when no elements are given


@dataclass
class Candidates:
    """Traced atom candidates.

    Attributes:
        positions: ``(N, 3)`` float64, ``(x, y, z)`` in Å in the volume frame.
        peak_values: ``(N,)`` volume value at the peak voxel (volume units).
        intensities: ``(N,)`` integrated intensity: the sum of voxel values within a sphere of
            radius ``integration_radius`` Å about the peak voxel (volume units × voxels).
        fit_quality: ``(N,)`` coefficient of determination R² of the local fit (1 = perfect; NaN
            without refinement).
        voxels: ``(N, 3)`` int64 ``[z, y, x]`` index of each peak voxel.
        threshold: the peak-value threshold used (volume units).
        min_distance: the minimum separation used (Å).
        integration_radius: radius (Å) of the integration sphere.
        background: robust background level of the volume (its median; volume units).
        noise_sigma: robust noise standard deviation of the volume (1.4826 × its median absolute
            deviation; volume units); peaks had to exceed ``background + significance ×
            noise_sigma``.
    """

    positions: np.ndarray
    peak_values: np.ndarray
    intensities: np.ndarray
    fit_quality: np.ndarray
    voxels: np.ndarray
    threshold: float
    min_distance: float
    integration_radius: float
    background: float = 0.0
    noise_sigma: float = 0.0

    def __len__(self) -> int:
        return len(self.positions)


def default_min_distance(
    elements: list[str] | tuple[str, ...] | None, factor: float = 0.8
) -> float:
    """Minimum atom separation (Å) from the elements' bulk nearest-neighbour distances.

    ``factor`` × the smallest nearest-neighbour distance among the elements' reference bulk
    structures (``ase.data.reference_states``: fcc a/√2, bcc a√3/2, diamond a√3/4, hcp/sc a;
    otherwise twice the covalent radius). Without elements: 2.0 Å.

    Args:
        elements: Element symbols present, or None.
        factor: Fraction of the nearest-neighbour distance.

    Returns:
        The minimum distance in Å.
    """
    if not elements:
        return _FALLBACK_MIN_DISTANCE
    from ase.data import atomic_numbers, covalent_radii, reference_states

    distances = []
    for symbol in elements:
        if symbol not in atomic_numbers:
            raise ValueError(f"elements={elements!r}: expected chemical symbols, got {symbol!r}")
        z = atomic_numbers[symbol]
        state = reference_states[z] or {}
        symmetry, a = state.get("symmetry"), state.get("a")
        per_symmetry = {
            "fcc": np.sqrt(0.5),
            "bcc": np.sqrt(3) / 2,
            "diamond": np.sqrt(3) / 4,
            "hcp": 1.0,
            "sc": 1.0,
        }
        if symmetry in per_symmetry and a:
            distances.append(per_symmetry[symmetry] * a)
        else:
            distances.append(2.0 * covalent_radii[z])
    return factor * float(min(distances))


def contrast_ratio(elements: list[str] | tuple[str, ...] | None, exponent: float = 1.7) -> float:
    """HAADF contrast of the lightest relative to the heaviest element, ``(Z_light / Z_heavy)^1.7``.

    Z-contrast (HAADF) intensity grows roughly as Z^1.6–1.9 (Pennycook & Jesson, Ultramicroscopy
    37, 14 (1991)); 1 without elements.
    """
    if not elements:
        return 1.0
    from ase.data import atomic_numbers

    numbers = [atomic_numbers[e] for e in elements]
    return float((min(numbers) / max(numbers)) ** exponent)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance of a 1-D histogram."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size < 2 or values.min() == values.max():
        return float(values.min()) if values.size else 0.0
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(hist * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    # Every cut inside an empty gap scores the same: take the middle of that plateau.
    on_plateau = between >= between.max() * (1 - 1e-12)
    first = last = int(np.argmax(on_plateau))
    while last + 1 < len(on_plateau) and on_plateau[last + 1]:
        last += 1
    return float(0.5 * (edges[first + 1] + edges[last + 1]))


def noise_level(volume: np.ndarray) -> tuple[float, float]:
    """Robust background and noise level of a volume: its median and 1.4826 × its median absolute
    deviation (the standard deviation for Gaussian noise; Rousseeuw & Croux, JASA 88, 1273 (1993)).

    Atoms fill a minority of the voxels of a reconstruction, so both statistics describe the
    background. Where more than half of the voxels equal the background exactly (a reconstruction
    clipped at zero, say), the deviation is 0: the noise level cannot be estimated there and every
    peak above the background counts as significant.

    Args:
        volume: Any array (volume units).

    Returns:
        ``(background, sigma)`` in volume units.
    """
    values = np.asarray(volume, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 0.0
    background = float(np.median(values))
    return background, float(1.4826 * np.median(np.abs(values - background)))


def _local_maxima(volume: np.ndarray) -> np.ndarray:
    """``[z, y, x]`` indices of voxels that are the maximum of their 3×3×3 neighbourhood."""
    from scipy import ndimage

    local_max = ndimage.maximum_filter(volume, size=3, mode="nearest")
    is_peak = (volume == local_max) & (volume > np.min(volume))
    # Plateaus give several equal maxima side by side; the min-distance suppression keeps one.
    return np.argwhere(is_peak)


def _suppress_close(points: np.ndarray, strength: np.ndarray, min_distance: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression: strongest first, drop any within range."""
    from scipy.spatial import cKDTree

    order = np.argsort(-strength, kind="stable")
    if len(points) == 0 or min_distance <= 0:
        return order
    tree = cKDTree(points)
    pairs = tree.query_pairs(min_distance, output_type="ndarray")
    if len(pairs) == 0:
        return order
    # Neighbour lists in CSR form; a peak survives unless a stronger surviving peak is a neighbour.
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    starts = np.searchsorted(both[:, 0], np.arange(len(points) + 1))
    neighbours = both[:, 1]
    suppressed = np.zeros(len(points), dtype=bool)
    has_neighbours = np.diff(starts) > 0
    for i in order:
        if suppressed[i] or not has_neighbours[i]:
            continue
        suppressed[neighbours[starts[i] : starts[i + 1]]] = True
    keep = order[~suppressed[order]]
    return keep


def _ball_offsets(radius_voxels: float) -> np.ndarray:
    r = int(np.floor(radius_voxels))
    grid = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1].reshape(3, -1).T
    return grid[(grid**2).sum(axis=1) <= radius_voxels**2 + 1e-9]


def _gather(padded: np.ndarray, pad: int, voxels: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Values ``(N, K)`` of the (edge-padded) volume at ``voxels + offsets``."""
    idx = voxels[:, None, :] + offsets[None, :, :] + pad
    return padded[idx[..., 0], idx[..., 1], idx[..., 2]]


def _cube_offsets(half: int) -> np.ndarray:
    return np.mgrid[-half : half + 1, -half : half + 1, -half : half + 1].reshape(3, -1).T


def _r_squared(values: np.ndarray, model: np.ndarray) -> np.ndarray:
    residual = ((values - model) ** 2).sum(axis=1)
    total = ((values - values.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - residual / total, np.nan)


def _refine_polynomial(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quadratic fit ``c + g·d + ½ dᵀHd`` on the window; offset of its stationary point (voxels)."""
    d = offsets.astype(np.float64)
    z, y, x = d.T
    design = np.stack([np.ones_like(z), z, y, x, z * z, y * y, x * x, z * y, z * x, y * x], axis=1)
    coefficients = values @ np.linalg.pinv(design).T  # (N, 10)
    g = coefficients[:, 1:4]
    hessian = np.empty((len(values), 3, 3))
    hessian[:, 0, 0] = 2 * coefficients[:, 4]
    hessian[:, 1, 1] = 2 * coefficients[:, 5]
    hessian[:, 2, 2] = 2 * coefficients[:, 6]
    hessian[:, 0, 1] = hessian[:, 1, 0] = coefficients[:, 7]
    hessian[:, 0, 2] = hessian[:, 2, 0] = coefficients[:, 8]
    hessian[:, 1, 2] = hessian[:, 2, 1] = coefficients[:, 9]
    shift = np.full((len(values), 3), np.nan)
    # A maximum needs a negative-definite Hessian; elsewhere the stationary point is meaningless.
    negative_definite = np.all(np.linalg.eigvalsh(hessian) < 0, axis=1)
    if negative_definite.any():
        shift[negative_definite] = np.linalg.solve(
            hessian[negative_definite], -g[negative_definite, :, None]
        )[..., 0]
    quality = _r_squared(values, coefficients @ design.T)
    return shift, quality


def _refine_gaussian(
    values: np.ndarray, offsets: np.ndarray, sigma0: float, iterations: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic 3D Gaussian plus constant, fitted by damped Gauss–Newton, all peaks at once.

    Model ``b + A·exp(−|d − μ|² / 2s²)`` with parameters ``(A, μz, μy, μx, s, b)``; returns μ
    (voxels, relative to the peak voxel) and R².
    """
    n = len(values)
    d = offsets.astype(np.float64)[None, :, :]  # (1, K, 3)
    background = values.min(axis=1)
    params = np.zeros((n, 6))
    params[:, 0] = np.maximum(values.max(axis=1) - background, 1e-12)
    params[:, 4] = sigma0
    params[:, 5] = background
    damping = np.full(n, 1e-3)

    def evaluate(p):
        delta = d - p[:, None, 1:4]
        r2 = (delta**2).sum(axis=2)
        s2 = p[:, 4:5] ** 2
        e = np.exp(-0.5 * r2 / s2)
        return p[:, 5:6] + p[:, 0:1] * e, delta, r2, s2, e

    model, delta, r2, s2, e = evaluate(params)
    cost = ((values - model) ** 2).sum(axis=1)
    for _ in range(iterations):
        jacobian = np.empty((n, values.shape[1], 6))
        jacobian[..., 0] = e
        jacobian[..., 1:4] = (params[:, 0:1] * e / s2)[..., None] * delta
        jacobian[..., 4] = params[:, 0:1] * e * r2 / (s2 * params[:, 4:5])
        jacobian[..., 5] = 1.0
        residual = values - model
        jtj = np.einsum("nki,nkj->nij", jacobian, jacobian)
        jtr = np.einsum("nki,nk->ni", jacobian, residual)
        diagonal = np.einsum("nii->ni", jtj)
        lhs = jtj + (damping[:, None] * (diagonal + 1e-12))[:, :, None] * np.eye(6)
        try:
            step = np.linalg.solve(lhs, jtr[..., None])[..., 0]
        except np.linalg.LinAlgError:
            break
        trial = params + step
        trial[:, 4] = np.abs(trial[:, 4])
        t_model, t_delta, t_r2, t_s2, t_e = evaluate(trial)
        t_cost = ((values - t_model) ** 2).sum(axis=1)
        better = np.isfinite(t_cost) & (t_cost < cost)
        params[better] = trial[better]
        model[better], delta[better], r2[better], e[better] = (
            t_model[better],
            t_delta[better],
            t_r2[better],
            t_e[better],
        )
        s2[better] = t_s2[better]
        cost[better] = t_cost[better]
        damping = np.where(better, damping * 0.3, damping * 10.0)
    shift = params[:, 1:4].copy()
    valid = (params[:, 0] > 0) & (params[:, 4] > 0.2)
    shift[~valid] = np.nan
    return shift, _r_squared(values, model)


def trace_atoms(
    volume: np.ndarray,
    sampling: float,
    *,
    threshold: float | None = None,
    min_distance: float | None = None,
    refine: str = "gaussian",
    elements: list[str] | tuple[str, ...] | None = None,
    fit_half_width: int = 1,
    integration_radius: float | None = None,
    threshold_floor: float = 0.1,
    significance: float | None = 5.0,
) -> Candidates:
    """Trace atoms in a reconstructed volume.

    Steps: (1) every voxel that is the maximum of its 3×3×3 neighbourhood is a peak; (2) peaks
    whose value is below ``threshold`` are removed; (3) each remaining peak is refined to sub-voxel
    precision by a fit on the ``(2·fit_half_width + 1)³`` voxels about it; (4) peaks closer than
    ``min_distance`` (refined positions) to a stronger peak are removed, strongest first.

    Whatever the threshold, a peak must also stand ``significance`` noise standard deviations above
    the volume's background (:func:`noise_level`), so a threshold relative to the volume's own
    maximum cannot turn noise into atoms: a constant volume has no peaks, and pure Gaussian noise
    (64³ voxels) exceeds 5σ in fewer than one voxel on average.

    The automatic threshold is Otsu's cut of the histogram of the (suppressed) peak values, which
    separates the population of noise maxima from that of atoms. It is kept between
    ``threshold_floor`` and 0.5 times the expected peak of the lightest element, taken as the 99th
    percentile of the peak values times :func:`contrast_ratio` of ``elements`` (guards for volumes
    with few noise maxima, and for Otsu splitting a light from a heavy element).

    Args:
        volume: ``(V, V, V)`` reconstruction indexed ``[z, y, x]``.
        sampling: Voxel size in Å.
        threshold: Minimum peak value (volume units); None for automatic.
        min_distance: Minimum separation of atoms in Å; None for 0.8 × the smallest bulk
            nearest-neighbour distance of ``elements`` (2.0 Å without elements).
        refine: ``"gaussian"`` (isotropic 3D Gaussian + constant, Levenberg–Marquardt),
            ``"polynomial"`` (quadratic polynomial, its stationary point) or ``"none"``.
        elements: Element symbols present, used for the default ``min_distance``.
        fit_half_width: Half width (voxels) of the fitting window.
        integration_radius: Radius (Å) of the integration sphere; None for 0.4 × ``min_distance``.
        threshold_floor: Lower bound of the automatic threshold, as a fraction of the expected
            peak of the lightest element.
        significance: Minimum peak height above the background in units of the volume's robust
            noise standard deviation; None to keep every peak that passes ``threshold``.

    Returns:
        The traced :class:`Candidates`, sorted by decreasing peak value. A fit whose maximum falls
        outside its window (or fails) keeps the voxel centre.

    Shapes:
        volume: ``(Z, Y, X)``; positions: ``(N, 3)`` as ``(x, y, z)``.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume.shape={volume.shape}: expected a 3-D array [z, y, x]")
    if not np.isfinite(sampling) or sampling <= 0:
        raise ValueError(f"sampling={sampling!r}: expected a positive voxel size in Å")
    if refine not in _REFINE:
        raise ValueError(f"refine={refine!r}: expected one of {_REFINE}")
    if fit_half_width < 1:
        raise ValueError(f"fit_half_width={fit_half_width!r}: expected an integer >= 1")
    if min_distance is None:
        min_distance = default_min_distance(elements)
    if min_distance < 0:
        raise ValueError(f"min_distance={min_distance!r}: expected a distance >= 0 Å")
    if significance is not None and not (np.isfinite(significance) and significance >= 0):
        raise ValueError(f"significance={significance!r}: expected a number of σ >= 0, or None")
    if integration_radius is None:
        integration_radius = 0.4 * min_distance if min_distance > 0 else sampling
    volume = volume.astype(np.float64, copy=False)

    voxels = _local_maxima(volume)
    peak_values = volume[tuple(voxels.T)] if len(voxels) else np.zeros(0)
    background, noise_sigma = noise_level(volume)
    if significance is not None:
        significant = peak_values > background + significance * noise_sigma
        voxels, peak_values = voxels[significant], peak_values[significant]
    if threshold is None:
        # The threshold is set on the peaks that survive suppression, so the noise maxima on the
        # flanks of atoms do not weigh in the histogram.
        kept = peak_values[_suppress_close(voxels * sampling, peak_values, min_distance)]
        if len(kept) >= 2:
            top = np.percentile(kept, 99)
            # Otsu may split two elements instead of noise and atoms: cap the cut at half the
            # expected peak of the lightest element.
            ceiling = 0.5 * contrast_ratio(elements) * top
            threshold = max(
                min(otsu_threshold(kept), ceiling), threshold_floor * contrast_ratio(elements) * top
            )
        else:
            threshold = -np.inf
        logger.debug("automatic threshold %.4g from %d peaks", threshold, len(kept))
    above = peak_values >= threshold
    voxels, peak_values = voxels[above], peak_values[above]

    pad = max(fit_half_width, int(np.ceil(integration_radius / sampling)))
    padded = np.pad(volume, pad, mode="edge")
    shift = np.zeros((len(voxels), 3))
    quality = np.full(len(voxels), np.nan)
    if refine != "none" and len(voxels):
        window = _cube_offsets(fit_half_width)
        values = _gather(padded, pad, voxels, window)
        if refine == "polynomial":
            shift, quality = _refine_polynomial(values, window)
        else:
            shift, quality = _refine_gaussian(
                values, window, sigma0=max(1.0, 0.5 * fit_half_width + 0.5)
            )
        bad = ~np.all(np.isfinite(shift), axis=1) | np.any(np.abs(shift) > fit_half_width, axis=1)
        if bad.any():
            logger.debug(
                "%d of %d fits fell outside their window; kept voxel centres", bad.sum(), len(bad)
            )
        shift[bad] = 0.0
    # Suppress on refined positions: voxel rounding alone can move two atoms 0.87 voxel closer.
    keep = _suppress_close((voxels + shift) * sampling, peak_values, min_distance)
    voxels, peak_values, shift, quality = (
        voxels[keep],
        peak_values[keep],
        shift[keep],
        quality[keep],
    )
    ball = _ball_offsets(integration_radius / sampling)
    intensities = _gather(padded, pad, voxels, ball).sum(axis=1) if len(voxels) else np.zeros(0)
    zyx = (voxels + shift) * sampling
    positions = zyx[:, ::-1].copy()
    return Candidates(
        positions=positions,
        peak_values=peak_values,
        intensities=intensities,
        fit_quality=quality,
        voxels=voxels.astype(np.int64),
        threshold=float(threshold),
        min_distance=float(min_distance),
        integration_radius=float(integration_radius),
        background=background,
        noise_sigma=noise_sigma,
    )
