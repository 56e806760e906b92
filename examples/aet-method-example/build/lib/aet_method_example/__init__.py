"""A minimal benchmarked method, packaged as a plugin of aet-suite.

``PeaksMethod`` takes the local maxima of the reconstructed volume above a fraction of its
maximum as atoms and gives every atom the first element the sample lists. It is a
template, not a good method: copy this package, replace :meth:`PeaksMethod.predict` with your
own, keep the entry point in ``pyproject.toml``, ``pip install`` it into the environment of
aet-suite, and run ``aet-bench run --method <your name> --data STORE --out RESULTS.jsonl``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from benchmark.methods import Method, Prediction

__all__ = ["PeaksMethod"]


class PeaksMethod(Method):
    """Local maxima of the volume as atoms.

    Parameters
    ----------
    threshold
        Fraction of the volume's maximum a peak must exceed (0 < threshold < 1; default 0.3).
    min_distance
        Minimum separation of two peaks, Å (default 1.8).
    """

    version = "1"

    def __init__(self, threshold=0.3, min_distance=1.8):
        if not 0 < float(threshold) < 1:
            raise ValueError(f"threshold={threshold!r}: expected a fraction between 0 and 1")
        if not float(min_distance) > 0:
            raise ValueError(f"min_distance={min_distance!r}: expected a distance > 0 in Å")
        super().__init__(threshold=float(threshold), min_distance=float(min_distance))

    def predict(self, sample: dict) -> Prediction:
        volume = np.asarray(sample["volume"], dtype=np.float64)  # [z, y, x]
        sampling = float(sample["sampling"])  # Å per voxel
        size = max(3, int(round(self.options["min_distance"] / sampling)) | 1)
        peaks = (volume == ndimage.maximum_filter(volume, size=size)) & (
            volume > self.options["threshold"] * volume.max()
        )
        zyx = np.argwhere(peaks)
        positions = zyx[:, ::-1] * sampling  # (x, y, z) in Å, voxel k at k * sampling
        elements = list(sample.get("elements") or ["unknown"])
        return Prediction(positions, [elements[0]] * len(positions))
