"""Detection by the measurement: keep a candidate atom only if the tilt series asks for it.

Any method's tracer proposes candidates; at low dose most of them can be noise (at 100 e/Å² the
classical tracer proposes several candidates per true atom). Each candidate ``i`` gets a free
amplitude ``a_i`` (its cross-section over its element's calibrated σ(Z)) and the amplitudes are fit
to the measured tilt series under the linear forward model (:func:`models.refine.refine_sample`
with ``fit_amplitudes=True``, a wide log-normal prior). The Wald statistic of the amplitude,

    z_i = â_i / SE(â_i) = 1 / SE(log â_i),

approximates the likelihood ratio of the tilt series with and without the candidate
(``2 ΔlogL ≈ z²``). A candidate is kept when ``z_i² > penalty``: penalised-likelihood model-order
selection (the MAP rule of Fatermans et al., Phys. Rev. Lett. 121, 056101 (2018), for atoms in 2D
HAADF-STEM images, here in 3D over the whole tilt series); the posterior probability that the atom
is there, with the penalty as the log prior odds, is::

    P_i = 1 / (1 + exp(−(z_i² − penalty) / 2))

At low dose a true atom's counts are shared among the several candidates traced around it, so no
one of them looks significant at first. Candidates are therefore removed in annealed passes: those
with ``z² < prune[0]`` go, the rest are refit (the counts move to the survivors), then
``z² < prune[1]``, and so on; the final fit's ``z`` is each candidate's score. The fits hold positions
at the candidates' (cheap: false atoms go before the full refinement); the penalty is chosen on
validation particles (``scripts/detection_validation.py``), never on test particles.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SelectionConfig", "SelectionResult", "select_atoms", "detection_probability"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectionConfig:
    """How candidates are judged against the tilt series.

    Args:
        penalty: Threshold on ``z² ≈ 2 ΔlogL`` (the model-order penalty; also the log prior odds
            against an atom, times two).
        amplitude_prior: Width of the log-normal prior on each candidate's amplitude (wide, so a
            false candidate's amplitude can fall towards zero).
        iterations: L-BFGS iterations of each amplitude fit.
        prune: Increasing ``z²`` levels of the annealed passes before the final fit (each at most
            ``penalty``); empty: one fit.
        fit_positions: Let positions move during the fits (slower; off: the candidates' own).
    """

    penalty: float = 16.0
    amplitude_prior: float = 3.0
    iterations: int = 40
    prune: tuple[float, ...] = (1.0, 2.0, 4.0)
    fit_positions: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.penalty) and self.penalty >= 0):
            raise ValueError(f"penalty={self.penalty!r}: expected a non-negative number")
        if not self.amplitude_prior > 0:
            raise ValueError(f"amplitude_prior={self.amplitude_prior!r}: expected > 0")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"iterations={self.iterations!r}: expected a positive integer")
        prune = tuple(float(p) for p in self.prune)
        if any(b < a for a, b in zip(prune, prune[1:])) or any(
            not (math.isfinite(p) and 0 <= p <= self.penalty) for p in prune
        ):
            raise ValueError(
                f"prune={self.prune!r}: expected increasing levels in [0, penalty={self.penalty}]"
            )
        object.__setattr__(self, "prune", prune)


@dataclass
class SelectionResult:
    """Which candidates the tilt series keeps.

    Args:
        keep: (N,) bool, the candidates kept.
        score: (N,) Wald statistic ``z`` of each candidate's amplitude at its last fit.
        probability: (N,) posterior probability that the candidate is an atom.
        amplitude: (N,) fitted amplitude (cross-section over the element's σ(Z)) at its last fit.
        passes: Fits run (candidates removed by a pass keep the score of their last fit).
    """

    keep: np.ndarray
    score: np.ndarray
    probability: np.ndarray
    amplitude: np.ndarray
    passes: int


def detection_probability(score, penalty: float) -> np.ndarray:
    """``1 / (1 + exp(−(z² − penalty)/2))``: the posterior probability of an atom."""
    z2 = np.asarray(score, dtype=float) ** 2
    return 0.5 * (1.0 + np.tanh((z2 - penalty) / 4.0))


def _fit(sample, positions, elements, config: SelectionConfig, refine_config, microscope):
    from models.refine import RefineConfig, refine_sample
    from simgen.physics.imaging import cross_section

    base = RefineConfig() if refine_config is None else refine_config
    fit_config = dataclasses.replace(
        base,
        fit_positions=config.fit_positions,
        fit_amplitudes=True,
        amplitude_prior=config.amplitude_prior,
        iterations=config.iterations,
        rounds=1,
        fit_angles=False,
        fit_beam_current=False,
    )
    result = refine_sample(sample, positions, elements, config=fit_config, microscope=microscope)
    if microscope is None:
        from simgen.physics.microscope import Microscope

        microscope = Microscope()
    calibrated = np.array(
        [cross_section(e, microscope) for e in elements], dtype=float
    ) * np.array([result.element_scales.get(e, 1.0) for e in elements], dtype=float)
    amplitude = np.asarray(result.cross_sections, dtype=float) / calibrated
    score = 1.0 / np.maximum(np.asarray(result.amplitude_standard_errors, dtype=float), 1e-12)
    return score, amplitude


def select_atoms(
    sample: dict,
    positions,
    elements: Sequence[str],
    *,
    config: SelectionConfig | None = None,
    refine_config=None,
    microscope=None,
) -> SelectionResult:
    """Keep the candidates whose amplitude the tilt series supports (see the module docstring).

    Args:
        sample: A store sample with its tilt series, angles, sampling and dose (see
            :func:`models.refine.refine_sample`).
        positions: (N, 3) Å, candidate positions in the volume frame.
        elements: N element symbols (the amplitude is relative to each element's σ(Z)).
        config: The selection's settings.
        refine_config: The refinement settings the fits start from (shift model, read noise...).
        microscope: Probe and detector of the calibration (the default when ``None``).

    Returns:
        Which candidates to keep, their scores and detection probabilities.
    """
    config = SelectionConfig() if config is None else config
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    elements = list(elements)
    n = len(positions)
    score = np.zeros(n)
    amplitude = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    passes = 0
    for level in (*config.prune, None):  # None: the final fit
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        s, a = _fit(
            sample, positions[idx], [elements[i] for i in idx], config, refine_config, microscope
        )
        passes += 1
        score[idx], amplitude[idx] = s, a
        if level is not None:
            weak = s**2 < level
            logger.info(
                "atom selection pass %d: %d of %d candidates with z² < %g removed",
                passes,
                int(weak.sum()),
                idx.size,
                level,
            )
            alive[idx[weak]] = False
            if not weak.any():  # nothing moved: the next fits would give the same scores
                break
    keep = alive & (score**2 > config.penalty)
    return SelectionResult(
        keep=keep,
        score=score,
        probability=detection_probability(score, config.penalty),
        amplitude=amplitude,
        passes=passes,
    )
