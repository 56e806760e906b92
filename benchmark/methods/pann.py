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
        Name the atoms of a contrast group (e.g. Fe, Co, Ni, Cu) from amplitudes refit against
        the tilt series (``PannConfig.reassign``); default: what the weights' config says (on
        for the shipped weights, off for checkpoints written before the option existed).
    """

    version = "2"  # 2: contrast-group reassignment (PannConfig.reassign)

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
