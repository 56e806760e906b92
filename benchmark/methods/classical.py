"""The classical AET pipeline: iterative reconstruction, atom tracing, intensity clustering.

Reconstruction (SIRT; the sample's own ``volume`` when present) -> optional Gaussian smoothing
-> :func:`models.tracing.trace_atoms` (local maxima, minimum separation, sub-voxel Gaussian fit)
-> element of each atom by 1-D k-means (or a Gaussian mixture) of the integrated intensities, the
brightest cluster given the heaviest element (HAADF contrast grows with Z, roughly Z^1.7), as in
Yang et al., Nature 542, 75 (2017) and Zhou et al., Nature 570, 500 (2019). A cluster far weaker
than the lightest element's ("non-atoms": noise maxima) is dropped.
"""

from __future__ import annotations

import logging

import numpy as np

from benchmark.methods import register
from benchmark.methods.base import Method, Prediction

__all__ = ["ClassicalMethod", "kmeans_1d", "gaussian_mixture_1d"]

logger = logging.getLogger(__name__)


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic 1-D k-means (Lloyd, started from quantiles).

    Returns
    -------
    labels : (N,) int
        Cluster of each value, clusters numbered by increasing centre.
    centres : (k,) float
        Sorted cluster centres.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if k < 1:
        raise ValueError(f"k={k!r}: expected at least one cluster")
    if values.size == 0:
        return np.zeros(0, dtype=np.int64), np.full(k, np.nan)
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    labels = np.zeros(values.size, dtype=np.int64)
    for _ in range(iterations):
        # With sorted centres the nearest one is found from the midpoints between them.
        labels = np.searchsorted(0.5 * (centres[1:] + centres[:-1]), values)
        updated = np.array(
            [values[labels == j].mean() if np.any(labels == j) else centres[j] for j in range(k)]
        )
        updated.sort()
        if np.allclose(updated, centres, rtol=0, atol=1e-12 * max(1.0, np.abs(values).max())):
            centres = updated
            break
        centres = updated
    labels = np.searchsorted(0.5 * (centres[1:] + centres[:-1]), values)
    return labels, centres


def gaussian_mixture_1d(
    values: np.ndarray, k: int, iterations: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D Gaussian mixture by expectation–maximisation, started from :func:`kmeans_1d`.

    Returns
    -------
    labels : (N,) int
        Most probable component, numbered by increasing mean.
    means : (k,) float
        Sorted component means.
    probabilities : (N, k) float
        Posterior probability of each component.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    labels, means = kmeans_1d(values, k)
    if values.size == 0:
        return labels, means, np.zeros((0, k))
    spread = values.std() if values.std() > 0 else 1.0
    variances = np.array(
        [values[labels == j].var() if np.sum(labels == j) > 1 else spread**2 for j in range(k)]
    )
    variances = np.maximum(variances, (1e-3 * spread) ** 2)
    weights = np.array([np.mean(labels == j) for j in range(k)]).clip(1e-6)
    previous = -np.inf
    for _ in range(iterations):
        log_p = (
            -0.5 * (values[:, None] - means) ** 2 / variances
            - 0.5 * np.log(2 * np.pi * variances)
            + np.log(weights)
        )
        top = log_p.max(axis=1, keepdims=True)
        likelihood = top[:, 0] + np.log(np.exp(log_p - top).sum(axis=1))
        probabilities = np.exp(log_p - likelihood[:, None])
        total = probabilities.sum(axis=0).clip(1e-12)
        weights = total / values.size
        means = (probabilities * values[:, None]).sum(axis=0) / total
        variances = np.maximum(
            (probabilities * (values[:, None] - means) ** 2).sum(axis=0) / total,
            (1e-3 * spread) ** 2,
        )
        current = likelihood.sum()
        if abs(current - previous) < 1e-9 * abs(current):
            break
        previous = current
    order = np.argsort(means)
    probabilities = probabilities[:, order]
    return probabilities.argmax(axis=1), means[order], probabilities


def _by_contrast(elements) -> list[str]:
    """Elements sorted by increasing HAADF contrast (atomic number)."""
    from ase.data import atomic_numbers

    unknown = [e for e in elements if e not in atomic_numbers]
    if unknown:
        raise ValueError(f"elements={list(elements)!r}: expected chemical symbols, got {unknown}")
    return sorted(set(elements), key=lambda e: atomic_numbers[e])


@register("classical")
class ClassicalMethod(Method):
    """SIRT + atom tracing + intensity clustering (the standard AET pipeline).

    Parameters
    ----------
    smooth : float
        Standard deviation (Å) of a Gaussian filter applied to the volume before tracing (0: none).
    threshold : float or None
        Peak threshold in volume units (None: automatic, see :func:`models.tracing.trace_atoms`).
    min_distance : float or None
        Minimum atom separation in Å (None: from the elements' bond lengths).
    refine : str
        ``"gaussian"``, ``"polynomial"`` or ``"none"``.
    fit_radius : float
        Half width (Å) of the fitting window, rounded to voxels (at least one).
    species : str
        ``"kmeans"`` or ``"gmm"`` clustering of the integrated intensities.
    reject_weak : float or None
        Drop the weakest of ``k + 1`` intensity clusters (non-atoms) if its centre is below this
        fraction of the lightest element's expected intensity (the brightest centre times
        ``(Z_light / Z_heavy)^1.7``); None keeps every traced peak.
    iterations : int
        SIRT iterations when the sample has no ``volume`` and one is reconstructed here.
    """

    version = "1.0"

    def __init__(
        self,
        *,
        smooth: float = 0.25,
        threshold: float | None = None,
        min_distance: float | None = None,
        refine: str = "gaussian",
        fit_radius: float = 0.6,
        species: str = "kmeans",
        reject_weak: float | None = 0.5,
        iterations: int = 50,
    ):
        if smooth < 0:
            raise ValueError(f"smooth={smooth!r}: expected a filter width >= 0 Å")
        if species not in ("kmeans", "gmm"):
            raise ValueError(f"species={species!r}: expected 'kmeans' or 'gmm'")
        if refine not in ("gaussian", "polynomial", "none"):
            raise ValueError(f"refine={refine!r}: expected 'gaussian', 'polynomial' or 'none'")
        if fit_radius <= 0:
            raise ValueError(f"fit_radius={fit_radius!r}: expected a positive half width in Å")
        if reject_weak is not None and not 0 < reject_weak < 1:
            raise ValueError(f"reject_weak={reject_weak!r}: expected a fraction in (0, 1) or None")
        super().__init__(
            smooth=smooth,
            threshold=threshold,
            min_distance=min_distance,
            refine=refine,
            fit_radius=fit_radius,
            species=species,
            reject_weak=reject_weak,
            iterations=iterations,
        )

    def _volume(self, sample: dict) -> np.ndarray:
        volume = sample.get("volume")
        if volume is not None:
            return np.asarray(volume, dtype=np.float32)
        if sample.get("tilt_series") is None or sample.get("angles") is None:
            raise ValueError(
                "sample: expected a 'volume', or a 'tilt_series' with 'angles' to reconstruct"
            )
        from simgen.reconstruction.reconstruct import reconstruct
        from simgen.sample import normalise_tilt_series

        dose = sample.get("dose")
        series = np.asarray(sample["tilt_series"], dtype=np.float32)
        normalised = normalise_tilt_series(series, float(dose)) if dose else series
        return reconstruct(
            normalised, sample["angles"], method="sirt", iterations=int(self.options["iterations"])
        )

    def predict(self, sample: dict) -> Prediction:
        from scipy import ndimage

        from models.tracing import trace_atoms

        sampling = float(sample["sampling"])
        elements = list(sample.get("elements") or [])
        volume = self._volume(sample)
        smooth = float(self.options["smooth"])
        if smooth > 0:
            volume = ndimage.gaussian_filter(volume.astype(np.float32), smooth / sampling)
        half_width = max(1, int(round(self.options["fit_radius"] / sampling)))
        candidates = trace_atoms(
            volume,
            sampling,
            threshold=self.options["threshold"],
            min_distance=self.options["min_distance"],
            refine=self.options["refine"],
            elements=elements or None,
            fit_half_width=half_width,
        )
        keep, labels, confidence = self._classify(candidates.intensities, elements)
        ordered = _by_contrast(elements) if elements else ["unknown"]
        symbols = [ordered[j] for j in labels]
        return Prediction(
            positions=candidates.positions[keep],
            elements=symbols,
            confidence=None if confidence is None else confidence,
            extra={
                "classes": ordered,
                "threshold": candidates.threshold,
                "min_distance": candidates.min_distance,
                "n_traced": len(candidates),
                "n_rejected_weak": int(len(candidates) - keep.sum()),
            },
        )

    def _classify(self, intensities: np.ndarray, elements: list[str]):
        """(kept mask, element cluster per kept atom, probabilities or None)."""
        from models.tracing import contrast_ratio

        k = max(len(elements), 1)
        keep = np.ones(len(intensities), dtype=bool)
        if len(intensities) == 0:
            return keep, np.zeros(0, dtype=np.int64), None
        reject = self.options["reject_weak"]
        if reject is not None and len(intensities) > k + 1:
            labels, centres = kmeans_1d(intensities, k + 1)
            lightest = contrast_ratio(elements) * centres[-1]  # expected intensity of the lightest
            if centres[0] < reject * lightest:
                keep = labels > 0
                logger.debug(
                    "rejected %d weak peaks (centre %.3g < %.2f × %.3g)",
                    (~keep).sum(),
                    centres[0],
                    reject,
                    lightest,
                )
        values = intensities[keep]
        if k == 1 or len(values) <= k:
            return keep, np.zeros(len(values), dtype=np.int64), None
        if self.options["species"] == "gmm":
            labels, _, probabilities = gaussian_mixture_1d(values, k)
            return keep, labels, probabilities
        labels, _ = kmeans_1d(values, k)
        return keep, labels, None
