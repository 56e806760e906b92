"""Elements from the tilt series: per-atom cross-sections and a within-contrast-group mixture.

Neighbouring elements (Fe, Co, Ni, Cu: Z 26–29) differ in HAADF cross-section by only ~7 % per
atomic-number step (σ ∝ Z^~1.7, a log-step of ~0.07), too little for a network or an intensity
k-means on the reconstruction, but the measured tilt series still carries it at adequate dose.
:func:`reassign_species` therefore

1. refits the atoms against the tilt series with a free amplitude per atom
   (:func:`models.refine.refine_sample` with ``fit_amplitudes=True``), positions either held
   (``positions="fixed"``) or refined with everything else (``"joint"``); every atom of a contrast
   group is labelled with one representative element for this fit, so the amplitude prior does not
   pull atoms towards the labels being tested;
2. splits the elements present into *contrast groups* (:func:`contrast_groups`): elements sorted by
   Z whose neighbours differ by at most ``max_z_gap`` (default 3). Elements further apart are
   separated well by the base method's intensities (Fe/Pt, Pd/Pt, Ni/Pt: log-ratios > 1) and keep
   its labels. A gap of 3 keeps the 3d metals together and Pt/Au (78/79) together, while
   Pd (46), Ag (47) never join Pt or the 3d metals;
3. within each group of ≥ 2 elements fits, by EM, a 1-D Gaussian mixture to the atoms' log
   cross-sections ``x_i``: component ``e`` has mean ``log σ(Z_e) + δ`` with one offset δ per group
   (fitted, so a calibration offset shared by the group cancels, such as the one the realistic
   noise chain's detector response leaves), one shared width ``w`` (floored by the root-mean-square
   Fisher standard error of ``x_i`` and by ``width_floor``) and free mixing weights. Every atom
   that was labelled with an element of the group gets the group element of highest posterior.

Assumptions: the cross-section *ratios* within a group are those of the calibrated linear mode
(:func:`simgen.imaging.cross_section`, abTEM single atoms at the project's microscope), i.e. the
data are incoherent (linear-mode) HAADF images; channelling along dense columns in multislice
data changes the ratios and the offset δ is then not shared exactly. Only a shared (multiplicative)
calibration error cancels; an error in the ratios between group elements does not.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ReassignConfig",
    "MixtureFit",
    "ReassignResult",
    "contrast_groups",
    "fit_group_mixture",
    "reassign_species",
]

logger = logging.getLogger(__name__)

_POSITION_MODES = ("fixed", "joint")


@dataclass(frozen=True)
class ReassignConfig:
    """How atoms are reassigned within contrast groups.

    Args:
        positions: ``"fixed"``: the amplitude fit holds the atom positions (shifts, angles, beam
            current, background and scales are refit); ``"joint"`` (default, chosen on the
            validation split: HEA light-atom accuracy 0.54/0.51 vs 0.54/0.49 with fixed positions
            for classical/pann): positions are refit too.
        max_z_gap: Largest atomic-number difference between neighbouring elements (sorted by Z)
            of one contrast group.
        width_floor: Smallest mixture width, in natural-log units of the cross-section.
        use_standard_errors: Also floor the width by the atoms' root-mean-square Fisher standard
            error of the log cross-section. Off by default: at low dose that floor reaches the
            component spacing and free weights then empty components (validation split of
            ``pann-train.zarr``: HEA light-atom accuracy 0.44 with it, 0.54 without, classical).
        amplitude_prior: Standard deviation of the per-atom log-amplitude prior of the refit.
        weights: ``"free"``: mixing weights fitted by EM; ``"equal"``: held at 1/K (an
            equimolar group, e.g. a high-entropy alloy), which stops a broad mixture from
            emptying components.
        starts: EM starts, with offsets spread over ± one mean component spacing around the
            median-matched offset; the fit of highest likelihood wins.
        iterations: Largest number of EM iterations per start.
    """

    positions: str = "joint"
    max_z_gap: int = 3
    width_floor: float = 0.0
    use_standard_errors: bool = False
    amplitude_prior: float = 1.0
    weights: str = "free"
    starts: int = 5
    iterations: int = 500

    def __post_init__(self) -> None:
        if self.positions not in _POSITION_MODES:
            raise ValueError(
                f"reassign_positions={self.positions!r}: expected one of {_POSITION_MODES}"
            )
        _check_z_gap(self.max_z_gap, "reassign_max_z_gap")
        if not (isinstance(self.width_floor, (int, float)) and 0 <= self.width_floor < math.inf):
            raise ValueError(
                f"reassign_width_floor={self.width_floor!r}: expected a log width >= 0"
            )
        if not (isinstance(self.amplitude_prior, (int, float)) and self.amplitude_prior > 0):
            raise ValueError(
                f"reassign_amplitude_prior={self.amplitude_prior!r}: expected a log width > 0"
            )
        if self.weights not in ("free", "equal"):
            raise ValueError(f"reassign_weights={self.weights!r}: expected 'free' or 'equal'")
        if isinstance(self.starts, bool) or not isinstance(self.starts, int) or self.starts < 1:
            raise ValueError(f"reassign_starts={self.starts!r}: expected an integer >= 1")
        if (
            isinstance(self.iterations, bool)
            or not isinstance(self.iterations, int)
            or self.iterations < 1
        ):
            raise ValueError(f"reassign_iterations={self.iterations!r}: expected an integer >= 1")


@dataclass
class MixtureFit:
    """A within-group mixture of log cross-sections.

    Args:
        elements: Group elements, by increasing Z (component order).
        means: (K,) component means, log Å² (log σ(Z_e) + offset).
        offset: The fitted shared offset δ (natural log).
        width: Shared component width used (after flooring), natural log.
        weights: (K,) mixing weights.
        posteriors: (N, K) posterior probability of each element per atom.
        labels: (N,) index of the most probable element.
        outlier: (N,) posterior probability that an atom belongs to the outlier component (a
            uniform density over the data's range: false atoms, failed amplitude fits); its element
            posterior is then still the best guess among the group.
        log_likelihood: Mean log-likelihood per atom at the fit.
        iterations: EM iterations of the winning start.
    """

    elements: list[str]
    means: np.ndarray
    offset: float
    width: float
    weights: np.ndarray
    posteriors: np.ndarray
    labels: np.ndarray
    outlier: np.ndarray
    log_likelihood: float
    iterations: int


@dataclass
class ReassignResult:
    """Elements reassigned from the tilt series.

    Args:
        elements: N element symbols after reassignment.
        changed: (N,) bool, atoms whose element changed.
        classes: Element classes of ``posteriors`` (the elements present, by increasing Z).
        posteriors: (N, len(classes)) per-atom posterior over ``classes``; atoms outside every
            reassigned group carry a one-hot row of their (kept) label.
        log_cross_sections: (N,) fitted log cross-section of each atom, log Å².
        standard_errors: (N,) Fisher standard errors of ``log_cross_sections`` (or ``None``).
        groups: Contrast groups of the elements present.
        fits: Mixture fit per reassigned group (keyed by ``"Fe,Co,Ni,Cu"``).
        positions: (N, 3) positions of the amplitude refit, Å (moved only with ``"joint"``).
    """

    elements: list[str]
    changed: np.ndarray
    classes: list[str]
    posteriors: np.ndarray
    log_cross_sections: np.ndarray
    standard_errors: np.ndarray | None
    groups: list[list[str]]
    fits: dict[str, MixtureFit] = field(default_factory=dict)
    positions: np.ndarray | None = None


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


def fit_group_mixture(
    log_cross_sections,
    reference_log_sigma,
    *,
    elements: Sequence[str] | None = None,
    standard_errors=None,
    width_floor: float = 0.0,
    equal_weights: bool = False,
    starts: int = 5,
    iterations: int = 500,
    tolerance: float = 1e-10,
) -> MixtureFit:
    """EM fit of a 1-D Gaussian mixture with fixed relative means and one shared offset.

    Component ``k`` is ``N(reference_log_sigma[k] + δ, w²)`` with weight ``π_k``, plus a uniform
    outlier component over the range of the data; δ, w, π and the outlier fraction are fitted by expectation–maximisation (Dempster, Laird & Rubin 1977). The width is held at
    ``max(w, floor)`` with ``floor = max(width_floor, rms(standard_errors))``.

    Args:
        log_cross_sections: (N,) log cross-section of each atom.
        reference_log_sigma: (K,) log of the calibrated cross-sections of the group elements,
            increasing.
        elements: Names of the K components (for the result).
        standard_errors: (N,) standard errors of ``log_cross_sections`` (optional).
        width_floor: Smallest width, natural log.
        equal_weights: Hold the mixing weights at 1/K instead of fitting them.
        starts: EM starts over offsets within ± one component spacing of the median match.
        iterations: Largest number of EM iterations per start.
        tolerance: Stop when the mean log-likelihood changes by less than this.

    Returns:
        The fit of highest likelihood (:class:`MixtureFit`).
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
    names = list(elements) if elements is not None else [str(k) for k in range(reference.size)]
    floor = float(width_floor)
    if standard_errors is not None:
        se = np.asarray(standard_errors, dtype=np.float64).ravel()
        if se.shape != x.shape or not np.all(np.isfinite(se)) or np.any(se < 0):
            raise ValueError(
                f"standard_errors.shape={se.shape}: expected {x.shape[0]} finite values >= 0"
            )
        floor = max(floor, float(np.sqrt(np.mean(se**2))))
    floor = max(floor, 1e-6)
    k = reference.size
    spacing = float(np.mean(np.diff(reference))) if k > 1 else max(float(np.std(x)), floor)
    centre = float(np.median(x) - np.mean(reference))
    offsets = [centre] if starts == 1 else list(centre + spacing * np.linspace(-1.0, 1.0, starts))
    best = None
    for offset in offsets:
        fit = _em(x, reference, offset, floor, iterations, tolerance, equal_weights)
        if best is None or fit[-2] > best[-2] + 1e-12:
            best = fit
    offset, width, weights, posteriors, outlier, log_likelihood, n_iter = best
    return MixtureFit(
        elements=names,
        means=reference + offset,
        offset=offset,
        width=width,
        weights=weights,
        posteriors=posteriors,
        labels=posteriors.argmax(axis=1),
        outlier=outlier,
        log_likelihood=log_likelihood,
        iterations=n_iter,
    )


def _e_step(x, reference, offset, width, weights, outlier, span):
    """Element posteriors (N, K), outlier posterior (N,) and mean log-likelihood per atom."""
    from scipy.special import logsumexp

    z = (x[:, None] - reference[None, :] - offset) / width
    log_p = (
        np.log(np.clip(weights, 1e-300, None))[None, :]
        - 0.5 * z**2
        - math.log(width)
        - 0.5 * math.log(2.0 * math.pi)
    )
    # A uniform component over the data's range takes false atoms and failed fits, which would
    # otherwise widen the shared width until the components merge.
    log_p = np.concatenate([log_p, np.full((x.size, 1), math.log(max(outlier, 1e-300) / span))], 1)
    norm = logsumexp(log_p, axis=1)
    posteriors = np.exp(log_p - norm[:, None])
    return posteriors[:, :-1], posteriors[:, -1], float(np.mean(norm))


def _em(x, reference, offset, floor, iterations, tolerance, equal_weights=False):
    k = reference.size
    outlier = 0.05
    weights = np.full(k, (1.0 - outlier) / k)
    span = max(float(np.ptp(x)), 10.0 * floor)
    width = max(float(np.std(x - np.median(x))), floor)
    previous, n_iter = -np.inf, 0
    while n_iter < iterations:
        n_iter += 1
        posteriors, outlying, log_likelihood = _e_step(
            x, reference, offset, width, weights, outlier, span
        )
        # M step: one shared offset, one shared width (floored), weights, outlier fraction.
        total = max(float(posteriors.sum()), 1e-12)
        offset = float(np.sum(posteriors * (x[:, None] - reference[None, :])) / total)
        residual = x[:, None] - reference[None, :] - offset
        width = max(math.sqrt(float(np.sum(posteriors * residual**2)) / total), floor)
        outlier = float(np.clip(outlying.mean(), 1e-6, 0.5))
        if equal_weights:
            weights = np.full(k, (1.0 - outlier) / k)
        else:
            weights = posteriors.mean(axis=0)
        if abs(log_likelihood - previous) < tolerance:
            break
        previous = log_likelihood
    posteriors, outlying, log_likelihood = _e_step(
        x, reference, offset, width, weights, outlier, span
    )
    elements = posteriors / np.clip(posteriors.sum(axis=1, keepdims=True), 1e-300, None)
    return offset, width, weights / weights.sum(), elements, outlying, log_likelihood, n_iter


def reassign_species(
    sample: dict,
    positions,
    elements: Sequence[str],
    *,
    config: ReassignConfig | None = None,
    refine_config=None,
    present: Sequence[str] | None = None,
    microscope=None,
) -> ReassignResult:
    """Reassign atoms within contrast groups from amplitudes fitted to the tilt series.

    Args:
        sample: A store sample with its tilt series (see :func:`models.refine.refine_sample`).
        positions: (N, 3) atom positions, Å (e.g. after the usual refinement).
        elements: N element labels from the base method.
        config: Reassignment settings (:class:`ReassignConfig`).
        refine_config: ``models.refine.RefineConfig`` of the amplitude refit (its
            ``fit_amplitudes``, ``amplitude_prior`` and ``fit_positions`` are set here).
        present: Elements that may be assigned (default: ``sample["elements"]``, else the labels).
        microscope: ``simgen.imaging.Microscope`` (project default when ``None``).

    Returns:
        The new labels, per-atom posteriors and the fits (:class:`ReassignResult`).
    """
    from models.refine import RefineConfig, refine_sample
    from simgen.imaging import Microscope, cross_section

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
        present = list(sample.get("elements") or []) or sorted(set(labels))
    unknown = sorted(set(labels) - set(present))
    if unknown:
        raise ValueError(f"elements: labels {unknown} are not among the elements present {present}")
    groups = contrast_groups(present, config.max_z_gap)
    classes = [e for g in groups for e in g]
    index = {e: j for j, e in enumerate(classes)}
    n = len(labels)
    posteriors = np.zeros((n, len(classes)))
    posteriors[np.arange(n), [index[e] for e in labels]] = 1.0
    mixed = [g for g in groups if len(g) >= 2]
    if n == 0 or not mixed:
        return ReassignResult(
            labels, np.zeros(n, bool), classes, posteriors, np.zeros(n), None, groups
        )

    # One representative label per group, so the amplitude prior is neutral within the group.
    representative = {}
    for group in mixed:
        middle = group[(len(group) - 1) // 2]
        for e in group:
            representative[e] = middle
    fit_labels = [representative.get(e, e) for e in labels]
    refit = refine_sample(
        sample,
        positions,
        fit_labels,
        config=dataclasses.replace(
            refine_config,
            fit_amplitudes=True,
            amplitude_prior=config.amplitude_prior,
            fit_positions=config.positions == "joint",
        ),
        microscope=microscope,
    )
    log_cs = np.log(np.clip(refit.cross_sections, 1e-30, None))
    se = refit.amplitude_standard_errors if config.use_standard_errors else None
    new_labels = list(labels)
    fits = {}
    for group in mixed:
        members = np.array([e in group for e in labels])
        if members.sum() < 2:
            continue
        reference = np.log([cross_section(e, microscope) for e in group])
        fit = fit_group_mixture(
            log_cs[members],
            reference,
            elements=group,
            standard_errors=None if se is None else se[members],
            width_floor=config.width_floor,
            equal_weights=config.weights == "equal",
            starts=config.starts,
            iterations=config.iterations,
        )
        fits[",".join(group)] = fit
        rows = np.flatnonzero(members)
        posteriors[rows] = 0.0
        posteriors[np.ix_(rows, [index[e] for e in group])] = fit.posteriors
        for row, label in zip(rows, fit.labels):
            new_labels[row] = group[int(label)]
        logger.debug(
            "group %s: %d atoms, offset %+.3f, width %.3f, weights %s",
            group,
            rows.size,
            fit.offset,
            fit.width,
            np.round(fit.weights, 3),
        )
    changed = np.array([a != b for a, b in zip(labels, new_labels)])
    return ReassignResult(
        elements=new_labels,
        changed=changed,
        classes=classes,
        posteriors=posteriors,
        log_cross_sections=log_cs,
        standard_errors=se,
        groups=groups,
        fits=fits,
        positions=refit.positions,
    )
