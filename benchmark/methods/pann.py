"""The ``pann`` method: PANN (arXiv 2603.19942) with shipped or user-trained weights."""

from __future__ import annotations

import dataclasses

from benchmark.methods import register
from benchmark.methods.base import Method, Prediction, flag_option

__all__ = ["PannMethod"]


@register("pann")
class PannMethod(Method):
    """Stage-1 refinement, tracing, Zernike descriptors and graph-attention species classification.

    Parameters
    ----------
    weights
        Run directory (or ``pann.pt``) from ``pann train``; default: the shipped demo weights.
    reassign
        The species step (``PannConfig.reassign``): every atom's element decided by its
        cross-section refit against the tilt series (or, without one, the refined volume's
        integrated intensity), stage 2 as the prior; default: what the weights' config says (on
        for the shipped weights, off for checkpoints written before the option existed).
    """

    version = "3"  # 3: the species step for every element (2: contrast groups only)

    def __init__(self, weights=None, reassign=None):
        options = {"weights": weights}
        if reassign is not None:
            options["reassign"] = flag_option("reassign", reassign)
        super().__init__(**options)
        from models.pann import PannModel
        from models.weights import DEFAULT_WEIGHTS

        self.model = PannModel.load(weights or DEFAULT_WEIGHTS)
        if reassign is not None:
            self.model.config = dataclasses.replace(self.model.config, reassign=reassign)

    def predict(self, sample: dict) -> Prediction:
        # Every element listed; those the weights never saw are classified through proxies of
        # the same contrast rank (models.contrast_rank).
        elements = list(sample.get("elements") or []) or None
        pred = self.model.predict(
            sample["volume"],
            float(sample["sampling"]),
            elements,
            keep_refined=False,
            measurement=sample,
        )
        return Prediction(
            pred.positions,
            pred.elements,
            pred.probabilities,
            extra={"classes": list(pred.classes), **pred.extra},
        )
