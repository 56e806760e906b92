"""``X+refine``: any method's atoms refined against the measured tilt series.

The base method ``X`` (``classical``, ``unet3d``, ``pann``, ...) predicts atoms from the
reconstruction; :func:`models.refine.refine_sample` then maximises the likelihood of the measured
tilt series over the atom positions, the per-projection shifts and tilt-angle corrections, the
beam current and a per-element intensity scale, under the calibrated linear forward model. Elements
are kept; the refined per-atom cross-sections are reported in ``Prediction.extra``.

Options of ``X+refine`` are the base method's options plus any field of
:class:`models.refine.RefineConfig` (``iterations``, ``shift_model``, ``position_prior``, ...).
``detect=true`` first judges the base method's candidates against the tilt series
(:func:`models.atom_selection.select_atoms`; z² threshold ``detect_penalty``, 9 by default) and
drops those the measurement does not support; each kept atom's ``detection_probability`` goes into
``Prediction.extra`` and the model file. Off by default (see ``docs/concepts/detection.md``).
A sample that cannot be refined (no tilt series or angles; no dose and no detector gain to
estimate it from) is returned unrefined, with a warning on the terminal and the reason in
``Prediction.extra["skipped_steps"]`` (which ``aet-bench run`` writes into every results record).

``reassign=True`` adds the species step after the refinement
(:func:`models.species_refine.reassign_species`): per-atom amplitudes are refit against the tilt
series and every atom's element is decided by a mixture of the measured log cross-sections whose
means are tied to the calibrated σ(Z) (one global scale, a background component), with the base
method's labels (or its class probabilities over ``extra["classes"]``) as the prior. Its settings
are the fields of :class:`models.species_refine.ReassignConfig` prefixed ``reassign_``
(``reassign_positions="fixed"|"joint"``, ``reassign_prior_floor``, ``reassign_width_floor``, ...).
The per-atom posteriors become the prediction's ``confidence`` (over ``extra["classes"]``) and are
also in ``extra["species_posteriors"]``; the base method's labels are kept in
``extra["base_elements"]``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from benchmark.methods.base import Method, Prediction, flag_option

__all__ = [
    "RefinedMethod",
    "refined_method",
    "skip_step",
    "REFINE_OPTIONS",
    "REASSIGN_OPTIONS",
    "DETECT_OPTIONS",
]

logger = logging.getLogger(__name__)


def _refine_fields() -> tuple[str, ...]:
    from models.refine import RefineConfig

    return tuple(f.name for f in dataclasses.fields(RefineConfig))


#: Option names that configure the refinement (the rest go to the base method).
REFINE_OPTIONS = _refine_fields()


def _reassign_fields() -> tuple[str, ...]:
    from models.species_refine import ReassignConfig

    return ("reassign",) + tuple(f"reassign_{f.name}" for f in dataclasses.fields(ReassignConfig))


#: Option names of the element reassignment (``reassign`` and ``reassign_<ReassignConfig field>``).
REASSIGN_OPTIONS = _reassign_fields()

#: Detection by the measurement before the refinement (:mod:`models.atom_selection`):
#: ``detect`` (bool) and ``detect_penalty`` (the z² threshold; 9 by the validation rule of
#: ``scripts/detection_validation.py``).
DETECT_OPTIONS = ("detect", "detect_penalty")


class RefinedMethod(Method):
    """A base method followed by maximum-likelihood refinement against the tilt series.

    Parameters
    ----------
    **options
        Options of the base method, plus fields of :class:`models.refine.RefineConfig`, plus
        ``reassign`` (bool) and ``reassign_<field>`` of
        :class:`models.species_refine.ReassignConfig`.
    """

    base: str = ""
    base_class: type[Method] = Method
    version = "2"  # 2: reassign=True is the species step for every element

    def __init__(self, **options):
        from models.refine import RefineConfig
        from models.species_refine import ReassignConfig

        super().__init__(**options)
        refine_options = {k: v for k, v in options.items() if k in REFINE_OPTIONS}
        reassign_options = {
            k[len("reassign_") :]: v
            for k, v in options.items()
            if k in REASSIGN_OPTIONS and k != "reassign"
        }
        base_options = {
            k: v
            for k, v in options.items()
            if k not in REFINE_OPTIONS and k not in REASSIGN_OPTIONS and k not in DETECT_OPTIONS
        }
        self.detect = flag_option("detect", options.get("detect", False))
        penalty = options.get("detect_penalty", 9.0)
        if "detect_penalty" in options and not self.detect:
            raise ValueError("detect_penalty: expected only together with detect=true")
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or penalty < 4:
            raise ValueError(f"detect_penalty={penalty!r}: expected a number >= 4 (a z² threshold)")
        self.detect_penalty = float(penalty)
        self.reassign = flag_option("reassign", options.get("reassign", False))
        if reassign_options and not self.reassign:
            raise ValueError(
                f"{sorted('reassign_' + k for k in reassign_options)}: "
                "expected only together with reassign=True"
            )
        self.config = RefineConfig(**refine_options)
        self.reassign_config = ReassignConfig(**reassign_options)
        self.base_method = self.base_class(**base_options)

    @classmethod
    def accepted_options(cls) -> set[str] | None:
        """The base method's options, the refinement's and the reassignment's."""
        base = cls.base_class.accepted_options()
        if base is None:
            return None
        return base | set(REFINE_OPTIONS) | set(REASSIGN_OPTIONS) | set(DETECT_OPTIONS)

    def predict(self, sample: dict) -> Prediction:
        from models.refine import missing_measurement, refine_sample

        prediction = self.base_method.predict(sample)
        missing = missing_measurement(sample)
        if missing:
            return skip_step(
                prediction, f"refine: no {', '.join(missing)}; atoms left unrefined", self.name
            )
        if len(prediction) == 0:
            logger.info("%s: no atoms to refine", self.name)
            return prediction
        from ase.data import atomic_numbers

        listed = [e for e in sample.get("elements") or [] if e in atomic_numbers]
        elements = list(prediction.elements)
        config = self.config
        if "unknown" in elements:
            # No element known: render those atoms as the heaviest element present and let each
            # atom's amplitude float, so their brightness comes from the data.
            present = listed
            if not present:
                return skip_step(
                    prediction,
                    "refine: atoms without elements and no elements listed; left unrefined",
                    self.name,
                )
            heaviest = max(present, key=lambda e: atomic_numbers[e])
            elements = [heaviest if e == "unknown" else e for e in elements]
            config = dataclasses.replace(config, fit_amplitudes=True)
        detection = None
        if self.detect:
            from models.atom_selection import SelectionConfig, select_atoms

            selection = select_atoms(
                sample,
                prediction.positions,
                elements,
                config=SelectionConfig(penalty=self.detect_penalty),
                refine_config=config,
            )
            keep = selection.keep
            detection = selection.probability[keep]
            confidence = prediction.confidence
            prediction = Prediction(
                positions=prediction.positions[keep],
                elements=[e for e, k in zip(prediction.elements, keep) if k],
                confidence=None if confidence is None else np.asarray(confidence)[keep],
                extra={**prediction.extra, "detect_removed": int((~keep).sum())},
            )
            elements = [e for e, k in zip(elements, keep) if k]
            if len(prediction) == 0:
                return prediction
        result = refine_sample(sample, prediction.positions, elements, config=config)
        extra = dict(prediction.extra)
        if detection is not None:
            extra["detection_probability"] = detection
        extra.update(
            {
                "refine_element_scales": result.element_scales,
                "refine_background": result.background,
                "refine_read_noise": result.read_noise,
                "refine_mean_displacement_pm": float(np.mean(result.displacement) * 100.0),
                "cross_sections": result.cross_sections,
            }
        )
        if result.dose_estimated is not None:
            extra["refine_dose_estimated"] = result.dose_estimated
        if result.gain is not None:
            extra["refine_gain"] = result.gain
        elements_out = list(prediction.elements)
        positions = result.positions
        confidence = prediction.confidence
        if self.reassign and "unknown" not in prediction.elements:
            from models.species_refine import reassign_species

            present = sorted(set(listed) | set(elements_out), key=atomic_numbers.get)
            reassigned = reassign_species(
                sample,
                result.positions,
                elements_out,
                config=self.reassign_config,
                refine_config=config,
                present=present,
                prior=_base_prior(prediction, present),
            )
            fit = reassigned.fit
            extra.update(
                {
                    "base_elements": elements_out,
                    "base_classes": extra.get("classes"),
                    "classes": reassigned.classes,
                    "species_classes": reassigned.classes,
                    "species_posteriors": reassigned.posteriors,
                    "species_log_cross_sections": reassigned.log_cross_sections,
                    "species_changed": int(reassigned.changed.sum()),
                    "species_groups": reassigned.groups,
                    "species_scale": None if fit is None else fit.offset,
                    "species_width": None if fit is None else fit.width,
                    "species_outlier": None if fit is None else fit.outlier,
                }
            )
            elements_out = reassigned.elements
            confidence = reassigned.posteriors
            if reassigned.positions is not None:  # moved by a joint refit
                positions = reassigned.positions
        return Prediction(
            positions=positions,
            elements=elements_out,
            confidence=confidence,
            extra=extra,
        )


def skip_step(prediction: Prediction, reason: str, method: str = "") -> Prediction:
    """``prediction`` with ``reason`` appended to ``extra["skipped_steps"]``, and a warning.

    A step of a method that cannot run on a sample (e.g. the refinement without a tilt series)
    says so on the terminal and in the results record, never silently.
    """
    logger.warning("%s%s", f"{method}: " if method else "", reason)
    prediction.extra = {
        **prediction.extra,
        "skipped_steps": [*prediction.extra.get("skipped_steps", []), reason],
    }
    return prediction


def _base_prior(prediction: Prediction, present) -> np.ndarray | None:
    """The base method's class probabilities over ``present`` (None: use its labels)."""
    classes = list(prediction.extra.get("classes") or [])
    confidence = prediction.confidence
    if confidence is None or np.ndim(confidence) != 2 or not set(present) <= set(classes):
        return None
    if np.shape(confidence)[1] != len(classes):
        return None
    return np.asarray(confidence, dtype=np.float64)[:, [classes.index(e) for e in present]]


def refined_method(base: str, base_class: type[Method]) -> type[RefinedMethod]:
    """The ``<base>+refine`` method class (the registry in :mod:`benchmark.methods` registers it).

    Parameters
    ----------
    base
        Name of the base method.
    base_class
        The base method's registered class.
    """
    return type(
        f"Refined{base.title().replace('_', '').replace('-', '')}Method",
        (RefinedMethod,),
        {
            "base": base,
            "base_class": base_class,
            "__doc__": f"``{base}`` followed by refinement against the tilt series.",
        },
    )
