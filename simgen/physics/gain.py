"""Detector gain of a measured tilt series, and exact lower-dose versions of it.

A HAADF detector that counts electrons with a gain ``g`` (counts per electron) and Gaussian read
noise ``σ`` gives, at a pixel receiving ``λ`` electrons on average, counts ``x = g·N + ε`` with
``N ~ Poisson(λ)``, ``ε ~ N(0, σ²)``: the Poisson–Gaussian model, whose variance is linear in the
mean,

    var(x) = g · E[x] + c,     c = σ² − g·b      (b: a constant offset of the counts, if any).

:func:`estimate_gain` fits that line to local (mean, variance) pairs of the images themselves.
The variance of a block of pixels is taken from a high-pass residual (the separable second
difference ``[1, −2, 1] ⊗ [1, −2, 1]``, whose white-noise gain is 36), which removes a locally
linear signal, so the image's own structure barely enters it; the mean is that of the raw counts
under the same stencil. Blocks are binned by mean and the line is fitted to the bins by weighted
least squares. The images must be in raw counts (not normalised by the dose or filtered).

:func:`thin_counts` draws an exact lower-dose version of a series of counts: each electron of the
measurement is kept with probability ``p = target_dose / source_dose`` (binomial thinning), so a
Poisson count at dose ``D`` becomes an exact Poisson count at dose ``p·D``, with the same
structure and the same detector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["GainEstimate", "estimate_gain", "thin_counts", "electron_counts"]

logger = logging.getLogger(__name__)

#: Σ h² of the separable second-difference stencil [1, −2, 1] ⊗ [1, −2, 1].
_STENCIL_POWER = 36.0


@dataclass(frozen=True)
class GainEstimate:
    """Result of :func:`estimate_gain`.

    Attributes
    ----------
    gain : float
        Counts per electron (slope of variance against mean).
    intercept : float
        Variance at zero mean, counts² (read-noise variance minus gain × offset).
    gain_error : float
        Standard error of ``gain`` from the weighted fit.
    n_blocks : int
        Blocks used.
    mean_range : tuple of float
        Smallest and largest binned mean (counts): the range the line was fitted over.
    """

    gain: float
    intercept: float
    gain_error: float
    n_blocks: int
    mean_range: tuple[float, float]

    def to_dict(self) -> dict:
        return {
            "gain": self.gain,
            "intercept": self.intercept,
            "gain_error": self.gain_error,
            "n_blocks": self.n_blocks,
            "mean_range": list(self.mean_range),
        }


def _second_difference(images: np.ndarray) -> np.ndarray:
    """``[1, −2, 1] ⊗ [1, −2, 1]`` applied to each image (valid part: 2 px smaller per side)."""
    rows = images[:, :-2, :] - 2.0 * images[:, 1:-1, :] + images[:, 2:, :]
    return rows[:, :, :-2] - 2.0 * rows[:, :, 1:-1] + rows[:, :, 2:]


def estimate_gain(
    tilt_series, *, block: int = 8, n_bins: int = 24, min_blocks_per_bin: int = 16
) -> GainEstimate:
    """Detector gain (counts per electron) from the Poisson–Gaussian mean–variance line.

    Parameters
    ----------
    tilt_series
        ``(A, P, P)`` raw counts (or one ``(P, P)`` image).
    block
        Side (pixels) of the square blocks whose mean and residual variance give one point.
    n_bins
        Number of bins (equal numbers of blocks) along the mean; fewer when there are not
        ``min_blocks_per_bin`` blocks for each.
    min_blocks_per_bin
        Fewest blocks per bin; fewer than 4 such bins in all: the fit is refused.

    Returns
    -------
    GainEstimate

    Raises
    ------
    ValueError
        Too few pixels, a constant series, or a non-positive fitted slope (the images are not raw
        counts with shot noise).
    """
    images = np.asarray(tilt_series, dtype=np.float64)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or not np.all(np.isfinite(images)):
        raise ValueError(f"tilt_series.shape={images.shape}: expected finite (A, P, P) counts")
    if int(block) < 2:
        raise ValueError(f"block={block!r}: expected at least 2 pixels")
    residual = _second_difference(images)
    # The mean the residual's variance belongs to: each residual pixel mixes 9 raw pixels with
    # weights h², so the matching mean is the h²-weighted local mean.
    weights = np.outer([1.0, 4.0, 1.0], [1.0, 4.0, 1.0]) / _STENCIL_POWER
    local = np.zeros_like(residual)
    for dy in range(3):
        for dx in range(3):
            local += (
                weights[dy, dx]
                * images[:, dy : dy + residual.shape[1], dx : dx + residual.shape[2]]
            )
    n_y, n_x = residual.shape[1] // block, residual.shape[2] // block
    # Small series: fewer bins (at least 4 of min_blocks_per_bin blocks each).
    n_bins = min(int(n_bins), n_y * n_x * len(images) // int(min_blocks_per_bin))
    if n_bins < 4:
        raise ValueError(
            f"tilt_series.shape={images.shape}: too few {block}×{block} blocks to estimate the gain"
        )

    def blocks(array):
        cut = array[:, : n_y * block, : n_x * block]
        return (
            cut.reshape(len(array), n_y, block, n_x, block)
            .transpose(0, 1, 3, 2, 4)
            .reshape(-1, block * block)
        )

    means = blocks(local).mean(axis=1)
    variances = (blocks(residual) ** 2).mean(axis=1) / _STENCIL_POWER
    if float(np.ptp(means)) <= 0:
        raise ValueError("tilt_series: constant counts; the gain cannot be estimated")
    order = np.argsort(means, kind="stable")
    centres, values, counts = [], [], []
    for chunk in np.array_split(order, n_bins):
        v = variances[chunk]
        # Blocks crossing a sharp edge of the signal leak into the residual: drop outliers far
        # above the bin's median (the noise-only spread of a block variance is ~√(2/n)).
        med = np.median(v)
        spread = 1.4826 * np.median(np.abs(v - med))
        keep = v <= med + 6.0 * max(spread, 1e-12)
        if keep.sum() < 2:
            continue
        centres.append(means[chunk][keep].mean())
        values.append(v[keep].mean())
        counts.append(keep.sum())
    centres, values, counts = map(np.asarray, (centres, values, counts))
    design = np.column_stack([centres, np.ones_like(centres)])
    # Weights from the fitted line, not from each bin's own scatter (which would favour the bins
    # that came out low): a bin mean of n block variances has variance ∝ predicted² / n.
    weight = counts.astype(np.float64)
    for _ in range(3):
        normal = design.T @ (design * weight[:, None])
        slope, intercept = np.linalg.solve(normal, design.T @ (weight * values))
        predicted = np.maximum(design @ np.array([slope, intercept]), 1e-3 * values.max())
        weight = counts / predicted**2
    residual = values - design @ np.array([slope, intercept])
    dof = max(len(values) - 2, 1)
    covariance = np.linalg.inv(design.T @ (design * weight[:, None])) * (
        float(weight @ residual**2) / dof
    )
    if not slope > 0:
        raise ValueError(
            f"tilt_series: the variance does not grow with the mean (slope {slope:.3g}); "
            "expected raw detector counts with shot noise (give --gain)"
        )
    return GainEstimate(
        gain=float(slope),
        intercept=float(intercept),
        gain_error=float(np.sqrt(covariance[0, 0])),
        n_blocks=int(len(means)),
        mean_range=(float(centres.min()), float(centres.max())),
    )


def electron_counts(counts, gain: float) -> tuple[np.ndarray, float]:
    """``counts / gain`` rounded to whole electrons, and the largest rounding (electrons).

    A rounding well below 0.5 means the counts are whole electrons times the gain (binomial
    thinning is then exact); a larger one means read noise or a wrong gain.
    """
    if not (np.isfinite(gain) and gain > 0):
        raise ValueError(f"gain={gain!r}: expected a positive number of counts per electron")
    electrons = np.asarray(counts, dtype=np.float64) / float(gain)
    if np.any(electrons < -0.5):
        raise ValueError(
            f"counts: minimum {float(np.min(counts)):g} < 0; expected raw, non-negative counts"
        )
    whole = np.rint(np.clip(electrons, 0.0, None))
    return whole.astype(np.int64), float(np.max(np.abs(electrons - whole), initial=0.0))


def thin_counts(
    counts, fraction: float, rng: np.random.Generator, *, gain: float = 1.0
) -> np.ndarray:
    """Binomial thinning: keep each detected electron with probability ``fraction``.

    Parameters
    ----------
    counts
        Raw counts (any shape), ``gain`` counts per electron.
    fraction
        Probability of keeping each electron, in (0, 1] (target dose / source dose).
    rng
        Random generator (the only source of randomness).
    gain
        Counts per electron.

    Returns
    -------
    numpy.ndarray
        float32 counts (electrons kept × gain), same shape.
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction={fraction!r}: expected 0 < target dose / source dose <= 1")
    electrons, rounding = electron_counts(counts, gain)
    if rounding > 0.1:
        logger.warning(
            "counts / gain are not whole electrons (largest rounding %.2f e): the thinned series "
            "is only approximately Poisson at the new dose",
            rounding,
        )
    kept = rng.binomial(electrons, float(fraction))
    return (kept * float(gain)).astype(np.float32)
