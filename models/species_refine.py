"""Elements from the measurement: a Bayesian species step for every element present.

Each atom's element is decided by its measured scattering strength, with the base method's labels
(PANN's stage-2 probabilities, or a hard label) as the prior:

1. **Measurement.** :func:`reassign_species` refits the atoms against the tilt series with a free
   amplitude per atom (:func:`models.refine.refine_sample` with ``fit_amplitudes=True``; positions
   held with ``positions="fixed"`` or refit with ``"joint"``). Every atom is rendered as one
   representative element (the one whose log σ is nearest the middle of the elements present), so
   the amplitude prior pulls no atom towards the label under test. The refit gives each atom's
   log cross-section ``x_i`` and its Fisher standard error; the amplitude prior's shrinkage is
   undone (:func:`measured_log_cross_sections`), so ``x_i ± s_i`` is the likelihood alone. Without a
   tilt series (:func:`species_from_volume`), ``x_i`` is the log of the volume's intensity
   integrated over a small sphere around the atom, without standard errors.
2. **Likelihood** (:func:`fit_species_mixture`). Element ``e`` predicts
   ``x_i ~ N(log σ(Z_e) + δ, s_i² + w²)``: the component means are tied to the calibrated
   cross-section *ratios* of :func:`simgen.physics.imaging.cross_section` (the abTEM calibration table);
   only **one global log-scale δ** (dose, gain or detector calibration) and one intrinsic width
   ``w`` (model error, neighbours) are fitted, plus a uniform **background** component over the
   data's range that takes false atoms and failed fits (at most 20% of the atoms). δ and ``w``
   are fitted to the measurement alone (equal element weights), so a confident wrong prior
   cannot drag the scale or widen the width; refit cross-sections are absolute (known dose,
   calibrated σ), so δ has a Gaussian prior around 0 (``scale_prior``) that stops it sliding by
   one element's σ ratio where one element dominates. There are no free per-element offsets and
   no free mixing weights: with those, a mixture at low dose can slide a component onto the
   neighbouring element's atoms and swap the labels of a whole group.
3. **Prior and posterior.** ``posterior_ie ∝ prior_ie × N(x_i; log σ_e + δ, s_i² + w²)``, where
   ``prior = (1 − prior_floor) · p + prior_floor / K`` and ``p`` is stage 2's probability over the
   elements present (or the base label one-hot); the floor lets the measurement overrule an
   over-confident network. The EM (Dempster, Laird & Rubin 1977) runs from several starting
   scales; the measurement's marginal likelihood picks among them, the prior breaking ties.

Where the data separate the elements (Pd/Pt: log σ ratio 0.75, Fe/Pt 1.7) the likelihood decides
and a wrong network is overruled; where they do not (Fe/Co: 0.07 per Z step, below ``s_i`` at
moderate dose) the likelihood is nearly flat and the prior decides.

Assumptions: the cross-section ratios are those of the calibrated linear (incoherent) mode;
channelling in multislice data changes them, and a calibration error that differs between elements
is not absorbed by the one scale δ. A single-element particle needs no species step.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ReassignConfig",
    "MixtureFit",
    "ReassignResult",
    "contrast_groups",
    "fit_species_mixture",
    "measured_log_cross_sections",
    "integrated_intensities",
    "species_posteriors",
    "reassign_species",
    "species_from_volume",
]

logger = logging.getLogger(__name__)

_POSITION_MODES = ("fixed", "joint")


@dataclass(frozen=True)
class ReassignConfig:
    """How the measurement names the atoms.

    Defaults were set before any evaluation on the crops reported in ``docs/notes/realdata.md``
    (none was tuned on them).

    Args:
        positions: ``"fixed"``: the amplitude refit holds the atom positions (shifts, angles,
            beam current, background and the scale are refit); ``"joint"`` (default): positions
            are refit too.
        amplitude_prior: Standard deviation of the refit's per-atom log-amplitude prior (its
            shrinkage is undone before the mixture; it only regularises the refit).
        prior_floor: Weight of a uniform prior mixed into the base method's probabilities, so a
            probability of ~1 from an over-confident network can still be overruled.
        width_floor: Smallest intrinsic width ``w`` of the mixture, natural log units.
        scale_prior: Standard deviation of a Gaussian prior on the global log-scale δ around 0,
            for the tilt-series refit (its cross-sections are absolute: known dose, calibrated
            σ; 0.25 admits a ±30% calibration error). It stops the scale sliding by one
            element's σ ratio when one element dominates a crop (e.g. 34 Pd and 2 Pt: δ = 0 and
            δ = −0.88 fit the measurement almost equally). ``None``: a free scale (data of unknown
            dose or gain). The volume path's intensities have no absolute scale and never use it.
        use_standard_errors: Add each atom's Fisher standard error ``s_i`` to its component
            variance (``s_i² + w²``); off: ``w`` alone.
        volume_radius: Radius (Å) of the sphere over which :func:`species_from_volume`
            integrates the volume around each atom.
        starts: EM starts, over global scales within ± the largest neighbour spacing of log σ.
        iterations: Largest number of EM iterations per start.
    """

    positions: str = "joint"
    amplitude_prior: float = 1.0
    prior_floor: float = 0.1
    width_floor: float = 0.03
    scale_prior: float | None = 0.25
    use_standard_errors: bool = True
    volume_radius: float = 1.0
    starts: int = 7
    iterations: int = 300

    def __post_init__(self) -> None:
        if self.positions not in _POSITION_MODES:
            raise ValueError(
                f"reassign_positions={self.positions!r}: expected one of {_POSITION_MODES}"
            )
        for name in ("amplitude_prior", "volume_radius"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (
                isinstance(value, (int, float)) and 0 < value < math.inf
            ):
                raise ValueError(f"reassign_{name}={value!r}: expected a number > 0")
        if isinstance(self.prior_floor, bool) or not (
            isinstance(self.prior_floor, (int, float)) and 0 <= self.prior_floor <= 1
        ):
            raise ValueError(
                f"reassign_prior_floor={self.prior_floor!r}: expected a weight in [0, 1]"
            )
        if isinstance(self.width_floor, bool) or not (
            isinstance(self.width_floor, (int, float)) and 0 < self.width_floor < math.inf
        ):
            raise ValueError(f"reassign_width_floor={self.width_floor!r}: expected a log width > 0")
        if self.scale_prior is not None and (
            isinstance(self.scale_prior, bool)
            or not (isinstance(self.scale_prior, (int, float)) and 0 < self.scale_prior < math.inf)
        ):
            raise ValueError(
                f"reassign_scale_prior={self.scale_prior!r}: expected a log width > 0 or None"
            )
        if not isinstance(self.use_standard_errors, bool):
            raise ValueError(
                f"reassign_use_standard_errors={self.use_standard_errors!r}: expected true or false"
            )
        for name in ("starts", "iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"reassign_{name}={value!r}: expected an integer >= 1")


@dataclass
class MixtureFit:
    """The species mixture of log cross-sections (:func:`fit_species_mixture`).

    Args:
        elements: Component elements, by increasing Z.
        means: (K,) component means, log Å² (``log σ(Z_e) + offset``).
        offset: The fitted global log-scale δ (natural log).
        width: Fitted intrinsic width ``w`` (after flooring), natural log.
        posteriors: (N, K) posterior probability of each element per atom (rows sum to 1).
        log_likelihoods: (N, K) log-likelihood of each atom's measurement under each element.
        labels: (N,) index of the most probable element.
        outlier: (N,) posterior probability of the background component (a false atom or a
            failed amplitude fit); the element posterior is then still the best guess.
        background: Fitted background fraction.
        log_evidence: Mean log marginal likelihood per atom (prior included) at the fit.
        measurement_evidence: The same with equal element weights (the measurement alone).
        iterations: EM iterations of the winning start.
    """

    elements: list[str]
    means: np.ndarray
    offset: float
    width: float
    posteriors: np.ndarray
    log_likelihoods: np.ndarray
    labels: np.ndarray
    outlier: np.ndarray
    background: float
    log_evidence: float
    measurement_evidence: float
    iterations: int


@dataclass
class ReassignResult:
    """Elements named by the measurement.

    Args:
        elements: N element symbols after the species step.
        changed: (N,) bool, atoms whose element changed.
        classes: Element classes of ``posteriors`` (the elements present, by increasing Z).
        posteriors: (N, len(classes)) per-atom posterior over ``classes`` (rows sum to 1).
        log_cross_sections: (N,) measured log cross-section of each atom, log Å² (or, from a
            volume, the log integrated intensity).
        standard_errors: (N,) standard errors of ``log_cross_sections`` (``None`` when unused).
        groups: Contrast groups of the elements present (elements within 3 in Z; informative).
        fit: The mixture fit (``None`` for a single element or no atoms).
        positions: (N, 3) positions of the amplitude refit, Å (moved only with ``"joint"``).
    """

    elements: list[str]
    changed: np.ndarray
    classes: list[str]
    posteriors: np.ndarray
    log_cross_sections: np.ndarray
    standard_errors: np.ndarray | None
    groups: list[list[str]]
    fit: MixtureFit | None = None
    positions: np.ndarray | None = None

    @property
    def max_posterior(self) -> np.ndarray:
        """(N,) posterior probability of each atom's assigned element."""
        if len(self.posteriors) == 0:
            return np.zeros(0)
        return self.posteriors.max(axis=1)


def _check_z_gap(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r}: expected an integer >= 1")


def _atomic_number(element: str) -> int:
    from ase.data import atomic_numbers

    if element not in atomic_numbers:
        raise ValueError(f"elements: {element!r} is not a chemical symbol")
    return atomic_numbers[element]


def contrast_groups(elements: Sequence[str], max_z_gap: int = 3) -> list[list[str]]:
    """Split elements into groups of similar HAADF contrast.

    Elements are sorted by atomic number; a new group starts wherever two neighbours differ by
    more than ``max_z_gap``.

    Args:
        elements: Element symbols (duplicates ignored).
        max_z_gap: Largest Z difference between neighbours of one group.

    Returns:
        Groups (each sorted by Z), ordered by increasing Z; singletons included.

    Example:
        ``contrast_groups(["Pt", "Fe", "Cu", "Co", "Ni"])`` is
        ``[["Fe", "Co", "Ni", "Cu"], ["Pt"]]``.
    """
    _check_z_gap(max_z_gap, "max_z_gap")
    ordered = sorted(set(elements), key=_atomic_number)
    groups: list[list[str]] = []
    for element in ordered:
        if groups and _atomic_number(element) - _atomic_number(groups[-1][-1]) <= max_z_gap:
            groups[-1].append(element)
        else:
            groups.append([element])
    return groups


def _prior_matrix(prior, labels, classes, floor: float) -> np.ndarray:
    """(N, K) prior over ``classes``: ``prior`` rows (or one-hot labels) renormalised, floored."""
    n, k = len(labels), len(classes)
    if prior is None:
        p = np.zeros((n, k))
        index = {e: j for j, e in enumerate(classes)}
        p[np.arange(n), [index[e] for e in labels]] = 1.0
    else:
        p = np.asarray(prior, dtype=np.float64)
        if p.shape != (n, k) or not np.all(np.isfinite(p)) or np.any(p < 0):
            raise ValueError(
                f"prior.shape={p.shape}: expected ({n}, {k}) finite probabilities >= 0 "
                f"over {classes}"
            )
        total = p.sum(axis=1, keepdims=True)
        p = np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / k)
    return (1.0 - floor) * p + floor / k


def fit_species_mixture(
    log_cross_sections,
    reference_log_sigma,
    prior,
    *,
    elements: Sequence[str] | None = None,
    standard_errors=None,
    width_floor: float = 0.03,
    scale_prior: float | None = None,
    starts: int = 7,
    iterations: int = 300,
    tolerance: float = 1e-9,
) -> MixtureFit:
    """EM fit of the species mixture: means tied to calibrated log σ, one global scale.

    Component ``e`` of atom ``i`` is ``N(reference_log_sigma[e] + δ, s_i² + w²)`` with the fixed
    per-atom weight ``prior[i, e]``; a uniform background component over the data's range has
    the weight ``η ≤ 0.2``. δ, ``w ≥ width_floor`` and ``η`` are fitted by EM to the measurement
    alone (equal element weights); the posteriors are ``prior × likelihood``. Among the starts
    the measurement's marginal likelihood picks the scale, and the marginal likelihood *with the
    prior* breaks ties (within 0.5 nat in total), so the prior anchors the scale only where the
    measurement alone cannot (e.g. every atom Fe or every atom Co).

    Args:
        log_cross_sections: (N,) measured log cross-section (or log intensity) of each atom.
        reference_log_sigma: (K,) log calibrated cross-sections of the elements, increasing.
        prior: (N, K) prior probabilities per atom (rows sum to 1).
        elements: Names of the K components (for the result).
        standard_errors: (N,) standard errors ``s_i`` of ``log_cross_sections`` (default 0).
        width_floor: Smallest intrinsic width ``w``, natural log.
        scale_prior: Standard deviation of a Gaussian prior on δ around 0 (``None``: flat); δ is
            then its maximum a posteriori and the prior enters the choice among starts.
        starts: EM starts, at global scales spread over ± the largest spacing of the references
            around the median match of the prior's labels.
        iterations: Largest number of EM iterations per start.
        tolerance: Stop when the mean log marginal likelihood changes by less than this.

    Returns:
        The fit of highest marginal likelihood (:class:`MixtureFit`).
    """
    x = np.asarray(log_cross_sections, dtype=np.float64).ravel()
    reference = np.asarray(reference_log_sigma, dtype=np.float64).ravel()
    if x.size < 1 or not np.all(np.isfinite(x)):
        raise ValueError(
            f"log_cross_sections: expected finite values (got {x.size}, "
            f"{int(np.sum(~np.isfinite(x)))} not finite)"
        )
    if reference.size < 1 or not np.all(np.isfinite(reference)):
        raise ValueError(f"reference_log_sigma={reference!r}: expected finite log cross-sections")
    p = np.asarray(prior, dtype=np.float64)
    if p.shape != (x.size, reference.size) or not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(
            f"prior.shape={p.shape}: expected ({x.size}, {reference.size}) probabilities >= 0"
        )
    if not width_floor > 0:
        raise ValueError(f"width_floor={width_floor!r}: expected a log width > 0")
    se = np.zeros_like(x)
    if standard_errors is not None:
        se = np.asarray(standard_errors, dtype=np.float64).ravel()
        if se.shape != x.shape or not np.all(np.isfinite(se)) or np.any(se < 0):
            raise ValueError(
                f"standard_errors.shape={se.shape}: expected {x.shape[0]} finite values >= 0"
            )
    names = list(elements) if elements is not None else [str(k) for k in range(reference.size)]
    log_prior = np.log(np.clip(p, 1e-300, None))
    spread = float(np.max(np.diff(reference))) if reference.size > 1 else 0.5
    centre = float(np.median(x - reference[p.argmax(axis=1)]))
    offsets = [centre]
    if starts > 1:
        offsets += [o for o in centre + spread * np.linspace(-1.0, 1.0, starts) if o != centre]
    # the background is uniform over the range of the data and of the elements, plus 1 (log)
    span = max(float(np.ptp(x)), float(np.ptp(reference))) + 1.0
    if scale_prior is not None:
        offsets.append(0.0)
    precision = 0.0 if scale_prior is None else 1.0 / scale_prior**2
    fits = [
        _em(x, se, reference, log_prior, o, width_floor, span, iterations, tolerance, precision)
        for o in offsets
    ]
    # The measurement (and the scale prior) pick the scale; the labels' prior only breaks ties
    # (within 0.5 nat in total), as when every atom could be one element or its neighbour in Z.
    for f in fits:
        f["score"] = x.size * f["measurement_evidence"] - 0.5 * precision * f["offset"] ** 2
    fits = [f for f in fits if np.isfinite(f["score"])] or fits[:1]
    top = max(f["score"] for f in fits)
    tied = [f for f in fits if f["score"] >= top - 0.5]
    best = max(tied, key=lambda f: f["evidence"])
    return MixtureFit(
        elements=names,
        means=reference + best["offset"],
        offset=best["offset"],
        width=best["width"],
        posteriors=best["posteriors"],
        log_likelihoods=best["log_likelihoods"],
        labels=best["posteriors"].argmax(axis=1),
        outlier=best["outlier"],
        background=best["background"],
        log_evidence=best["evidence"],
        measurement_evidence=best["measurement_evidence"],
        iterations=best["iterations"],
    )


def _e_step(x, se, reference, log_prior, offset, width, background, span):
    """Posteriors over the elements (N, K), background posterior (N,), log-likelihoods (N, K),
    residuals, variances and the mean log marginal likelihood per atom under ``log_prior``."""
    from scipy.special import logsumexp

    variance = se[:, None] ** 2 + width**2
    residual = x[:, None] - reference[None, :] - offset
    log_likelihoods = -0.5 * residual**2 / variance - 0.5 * np.log(2.0 * math.pi * variance)
    joint = log_prior + log_likelihoods
    log_element = logsumexp(joint, axis=1)
    log_background = math.log(background) - math.log(span)
    log_atom = np.logaddexp(math.log1p(-background) + log_element, log_background)
    outlier = np.exp(log_background - log_atom)
    posteriors = np.exp(joint - log_element[:, None])  # over the elements only
    return posteriors, outlier, log_likelihoods, residual, variance, float(np.mean(log_atom))


#: Largest background fraction: false atoms and failed fits are a minority, and a larger cap lets
#: a wrong global scale park every atom of one element in the background.
_MAX_BACKGROUND = 0.2


def _em(x, se, reference, log_prior, offset, floor, span, iterations, tolerance, precision=0.0):
    """EM from one starting scale. The M step fits δ, ``w`` and the background fraction to the
    measurement alone (equal element weights, ratios fixed), so a confident wrong prior can
    neither drag the scale nor widen ``w``; the prior enters the posteriors and, through the
    marginal likelihood, the choice among starts."""
    k = reference.size
    flat = np.full_like(log_prior, -math.log(k))
    width = max(floor, float(np.median(np.abs(x - np.median(x)))) / 2.0)
    background = 0.05
    previous, n_iter = -np.inf, 0
    while n_iter < iterations:
        n_iter += 1
        posteriors, outlier, _, residual, variance, log_l = _e_step(
            x, se, reference, flat, offset, width, background, span
        )
        r = posteriors * (1.0 - outlier)[:, None]
        total = float(r.sum())
        if not total > 1e-9:  # every atom in the background: this start has nothing to fit
            break
        # δ: the weighted mean of x − log σ_e, shrunk towards 0 by the scale prior's precision
        target = residual + offset
        offset = float(np.sum(r * target / variance) / (np.sum(r / variance) + precision))
        residual = x[:, None] - reference[None, :] - offset
        excess = float(np.sum(r * (residual**2 - se[:, None] ** 2)) / total)
        width = max(math.sqrt(max(excess, 0.0)), floor)
        background = float(np.clip(outlier.mean(), 1e-4, _MAX_BACKGROUND))
        if abs(log_l - previous) < tolerance:
            break
        previous = log_l
    *_, measurement_evidence = _e_step(x, se, reference, flat, offset, width, background, span)
    posteriors, outlier, log_likelihoods, _, _, evidence = _e_step(
        x, se, reference, log_prior, offset, width, background, span
    )
    return {
        "measurement_evidence": measurement_evidence,
        "offset": offset,
        "width": width,
        "background": background,
        "posteriors": posteriors,
        "outlier": outlier,
        "log_likelihoods": log_likelihoods,
        "evidence": evidence,
        "iterations": n_iter,
    }


def measured_log_cross_sections(refit, representative: str, amplitude_prior: float, microscope):
    """Per-atom log cross-sections and standard errors of the measurement alone.

    The refit maximised likelihood × a log-normal amplitude prior of width ``amplitude_prior``
    centred on the representative element; with the Fisher (diagonal) posterior precision
    ``P_i`` and the data's precision ``F_i = P_i − 1/τ²``, the measurement alone is
    ``m_i P_i / F_i ± 1 / √F_i`` in log amplitude (the Gaussian shrinkage undone).

    Args:
        refit: ``models.refine.RefineResult`` of a refit with ``fit_amplitudes=True``.
        representative: The one element every atom was rendered as.
        amplitude_prior: The refit's ``amplitude_prior`` τ.
        microscope: The ``simgen.physics.imaging.Microscope`` of the refit.

    Returns:
        ``(x, s)``: (N,) log cross-sections (log Å²) and (N,) standard errors.
    """
    from simgen.physics.imaging import cross_section

    log_cs = np.log(np.clip(np.asarray(refit.cross_sections, dtype=np.float64), 1e-30, None))
    centre = math.log(cross_section(representative, microscope)) + math.log(
        float(refit.element_scales.get(representative, 1.0))
    )
    if refit.amplitude_standard_errors is None:
        return log_cs, None
    precision = 1.0 / np.asarray(refit.amplitude_standard_errors, dtype=np.float64) ** 2
    prior_precision = 1.0 / amplitude_prior**2
    data_precision = np.maximum(precision - prior_precision, 1e-3 * prior_precision)
    x = centre + (log_cs - centre) * precision / data_precision
    return x, 1.0 / np.sqrt(data_precision)


def _reference(classes, microscope) -> np.ndarray:
    from simgen.physics.imaging import cross_section

    return np.log([cross_section(e, microscope) for e in classes])


def species_posteriors(
    log_cross_sections,
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    prior=None,
    standard_errors=None,
    config: ReassignConfig | None = None,
    microscope=None,
    absolute: bool = True,
) -> tuple[list[str], MixtureFit]:
    """The species step on given measurements: labels and the mixture fit.

    Args:
        log_cross_sections: (N,) log cross-section (or log integrated intensity) per atom.
        labels: N base labels (the prior when ``prior`` is None), each among ``classes``.
        classes: Elements present, by increasing Z.
        prior: (N, len(classes)) base probabilities over ``classes`` (e.g. stage 2's).
        standard_errors: (N,) standard errors of ``log_cross_sections``.
        config: :class:`ReassignConfig` (``prior_floor``, ``width_floor``, EM settings).
        microscope: ``simgen.physics.imaging.Microscope`` of the calibrated σ (project default).
        absolute: The measurements are absolute cross-sections (apply ``config.scale_prior``);
            False for intensities of arbitrary scale.

    Returns:
        ``(elements, fit)``.
    """
    from simgen.physics.imaging import Microscope

    config = ReassignConfig() if config is None else config
    microscope = Microscope() if microscope is None else microscope
    classes = list(classes)
    p = _prior_matrix(prior, list(labels), classes, config.prior_floor)
    fit = fit_species_mixture(
        log_cross_sections,
        _reference(classes, microscope),
        p,
        elements=classes,
        standard_errors=standard_errors if config.use_standard_errors else None,
        width_floor=config.width_floor,
        scale_prior=config.scale_prior if absolute else None,
        starts=config.starts,
        iterations=config.iterations,
    )
    logger.debug(
        "species mixture %s: scale %+.3f, width %.3f, background %.3f",
        classes,
        fit.offset,
        fit.width,
        fit.background,
    )
    return [classes[int(k)] for k in fit.labels], fit


def _classes(labels, present) -> list[str]:
    if present is None:
        present = sorted(set(labels))
    unknown = sorted(set(labels) - set(present))
    if unknown:
        raise ValueError(f"elements: labels {unknown} are not among the elements present {present}")
    return sorted(set(present), key=_atomic_number)


def _unchanged(labels, classes, log_values=None) -> ReassignResult:
    n = len(labels)
    posteriors = np.zeros((n, len(classes)))
    if n:
        posteriors[np.arange(n), [classes.index(e) for e in labels]] = 1.0
    return ReassignResult(
        list(labels),
        np.zeros(n, bool),
        classes,
        posteriors,
        np.zeros(n) if log_values is None else log_values,
        None,
        contrast_groups(classes),
    )


def _representative(classes, microscope) -> str:
    """The element whose log σ is nearest the middle of the elements present."""
    reference = _reference(classes, microscope)
    middle = 0.5 * (reference.min() + reference.max())
    return classes[int(np.argmin(np.abs(reference - middle)))]


def reassign_species(
    sample: dict,
    positions,
    elements: Sequence[str],
    *,
    config: ReassignConfig | None = None,
    refine_config=None,
    present: Sequence[str] | None = None,
    prior=None,
    microscope=None,
) -> ReassignResult:
    """Name every atom from per-atom cross-sections refit against the tilt series.

    Args:
        sample: A store sample with its tilt series (see :func:`models.refine.refine_sample`).
        positions: (N, 3) atom positions, Å (e.g. after the usual refinement).
        elements: N element labels from the base method (the prior when ``prior`` is None).
        config: Species-step settings (:class:`ReassignConfig`).
        refine_config: ``models.refine.RefineConfig`` of the amplitude refit (its
            ``fit_amplitudes``, ``amplitude_prior`` and ``fit_positions`` are set here).
        present: Elements that may be assigned (default: ``sample["elements"]``, else the labels).
        prior: (N, K) base probabilities over ``present`` sorted by Z (e.g. PANN's stage 2);
            default: the labels, one-hot.
        microscope: ``simgen.physics.imaging.Microscope`` (project default when ``None``).

    Returns:
        The new labels, per-atom posteriors and the fit (:class:`ReassignResult`).
    """
    from models.refine import RefineConfig, refine_sample
    from simgen.physics.imaging import Microscope

    config = ReassignConfig() if config is None else config
    refine_config = RefineConfig() if refine_config is None else refine_config
    microscope = Microscope() if microscope is None else microscope
    labels = [str(e) for e in elements]
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(labels) != len(positions):
        raise ValueError(
            f"elements: expected {len(positions)} symbols (one per atom), got {len(labels)}"
        )
    if present is None:
        present = list(sample.get("elements") or []) or None
    classes = _classes(labels, present)
    if len(labels) == 0 or len(classes) < 2:
        return _unchanged(labels, classes)
    representative = _representative(classes, microscope)
    refit = refine_sample(
        sample,
        positions,
        [representative] * len(labels),
        config=dataclasses.replace(
            refine_config,
            fit_amplitudes=True,
            amplitude_prior=config.amplitude_prior,
            fit_positions=config.positions == "joint",
        ),
        microscope=microscope,
    )
    x, se = measured_log_cross_sections(refit, representative, config.amplitude_prior, microscope)
    new_labels, fit = species_posteriors(
        x,
        labels,
        classes,
        prior=prior,
        standard_errors=se,
        config=config,
        microscope=microscope,
    )
    return ReassignResult(
        elements=new_labels,
        changed=np.array([a != b for a, b in zip(labels, new_labels)]),
        classes=classes,
        posteriors=fit.posteriors,
        log_cross_sections=x,
        standard_errors=se,
        groups=contrast_groups(classes),
        fit=fit,
        positions=refit.positions,
    )


def integrated_intensities(volume, positions, sampling: float, radius: float) -> np.ndarray:
    """Sum of the voxels within ``radius`` (Å) of each atom (volume ``[z, y, x]``, positions Å).

    Args:
        volume: (Z, Y, X) array, voxel ``k`` centred at ``k * sampling``.
        positions: (N, 3) ``(x, y, z)`` in Å.
        sampling: Voxel size, Å.
        radius: Sphere radius, Å.

    Returns:
        (N,) integrated intensities (volume units × voxels).
    """
    volume = np.asarray(volume, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    reach = int(math.ceil(radius / sampling))
    offsets = np.arange(-reach, reach + 1)
    out = np.zeros(len(positions))
    shape = np.array(volume.shape)
    for i, (x, y, z) in enumerate(positions):
        centre = np.rint(np.array([z, y, x]) / sampling).astype(int)
        grids = [np.clip(c + offsets, 0, s - 1) for c, s in zip(centre, shape)]
        zz, yy, xx = np.meshgrid(*grids, indexing="ij")
        distance2 = (zz * sampling - z) ** 2 + (yy * sampling - y) ** 2 + (xx * sampling - x) ** 2
        inside = distance2 <= radius**2
        out[i] = float(volume[zz[inside], yy[inside], xx[inside]].sum())
    return out


def species_from_volume(
    volume,
    positions,
    sampling: float,
    elements: Sequence[str],
    *,
    present: Sequence[str] | None = None,
    prior=None,
    config: ReassignConfig | None = None,
    microscope=None,
) -> ReassignResult:
    """The species step without a tilt series: the same mixture on integrated intensities.

    The log of each atom's intensity integrated over ``config.volume_radius`` stands in for its
    log cross-section (a reconstruction is linear in σ up to the one global scale δ fitted by the
    mixture); there are no standard errors, so the fitted width ``w`` carries all the scatter and
    the prior decides wherever that width blurs the elements.

    Args:
        volume: Reconstruction or refined volume ``[z, y, x]``.
        positions: (N, 3) atom positions, Å, in the volume's frame.
        sampling: Voxel size, Å.
        elements: N base labels.
        present: Elements that may be assigned (default: the labels).
        prior: (N, K) base probabilities over ``present`` sorted by Z.
        config: :class:`ReassignConfig`.
        microscope: ``simgen.physics.imaging.Microscope`` of the calibrated σ.
    """
    config = ReassignConfig() if config is None else config
    labels = [str(e) for e in elements]
    classes = _classes(labels, present)
    if len(labels) == 0 or len(classes) < 2:
        return _unchanged(labels, classes)
    intensity = integrated_intensities(volume, positions, sampling, config.volume_radius)
    floor = max(float(np.max(intensity)) * 1e-3, 1e-30)
    x = np.log(np.clip(intensity, floor, None))
    new_labels, fit = species_posteriors(
        x, labels, classes, prior=prior, config=config, microscope=microscope, absolute=False
    )
    return ReassignResult(
        elements=new_labels,
        changed=np.array([a != b for a, b in zip(labels, new_labels)]),
        classes=classes,
        posteriors=fit.posteriors,
        log_cross_sections=x,
        standard_errors=None,
        groups=contrast_groups(classes),
        fit=fit,
        positions=None,
    )
