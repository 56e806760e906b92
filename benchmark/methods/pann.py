"""The ``pann`` method: PANN (arXiv 2603.19942) with shipped or user-trained weights."""

from __future__ import annotations

from benchmark.methods import register
from benchmark.methods.base import Method, Prediction

__all__ = ["PannMethod"]


@register("pann")
class PannMethod(Method):
    """Stage-1 refinement, tracing, Zernike descriptors and graph-attention species classification.

    Parameters
    ----------
    weights
        Run directory (or ``pann.pt``) from ``pann train``; default: the shipped demo weights.
    """

    version = "1"

    def __init__(self, weights=None):
        super().__init__(weights=weights)
        from models.pann import PannModel
        from models.weights import DEFAULT_WEIGHTS

        self.model = PannModel.load(weights or DEFAULT_WEIGHTS)

    def predict(self, sample: dict) -> Prediction:
        elements = [
            e for e in sample.get("elements") or [] if e in self.model.config.elements
        ] or None
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
