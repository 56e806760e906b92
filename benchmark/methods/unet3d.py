"""The ``unet3d`` baseline: the 3D U-Net augmentation of Lee, Jeong & Yang (Nat. Commun. 12, 1962,
2021) applied to the reconstruction, followed by the classical tracing and k-means species step.

``--weights`` takes this suite's ``unet3d.pt`` (from ``pann train --model unet3d``) or one of the
authors' published weight files (``DL_aug_Pt_FCC_Bf5``, ``DL_aug_Pt_FCC_Bf3.2``,
``DL_aug_Pt_amorphous_Bf5`` from MDAIL-KAIST/DL-augmentation). Published weights run at their
training voxel size, 0.357 Å (the volume is resampled there and back), on inputs normalised as
the authors normalise GENFIRE volumes (mean 3×3×3 intensity at the atom peaks = 1) and multiplied
by 13 as their ``run_DL_augmentation_Pt.py`` does for the Bf5 weights (use ``input_scale=8`` for
Bf3.2).
"""

from __future__ import annotations

import numpy as np

from benchmark.methods import register
from benchmark.methods.classical import ClassicalMethod

__all__ = ["UNet3DMethod"]


@register("unet3d")
class UNet3DMethod(ClassicalMethod):
    """U-Net-refined volume -> :class:`ClassicalMethod` tracing and species.

    Parameters
    ----------
    weights
        Run directory or ``unet3d.pt`` from ``pann train --model unet3d``, or a published
        Lee 2021 weight file; default: shipped demo weights.
    input_scale
        Factor after normalising the input (default: 13 for published weights, 1 otherwise).
    smooth
        Extra Gaussian smoothing (Å) before tracing; the network output is already smooth.
    """

    version = "1.1"

    def __init__(self, weights=None, *, input_scale: float | None = None, smooth=0.0, **options):
        super().__init__(smooth=smooth, **options)
        from models.train import load_unet3d

        self.net, self.info = load_unet3d(weights)
        published = self.info.get("architecture") == "lee2021-published"
        if input_scale is None:
            input_scale = float(self.info.get("input_scale", 1.0))
        if not input_scale > 0:
            raise ValueError(f"input_scale={input_scale!r}: expected a positive factor")
        self.options.update(
            weights=weights,
            architecture=self.info.get("architecture"),
            input_scale=float(input_scale),
            normalise="peaks" if published else "scale",
        )

    def _volume(self, sample: dict) -> np.ndarray:
        from benchmark.methods.torch_model import apply_volume_network

        volume = super()._volume(sample)
        published = self.options["normalise"] == "peaks"
        self.net.eval()
        return apply_volume_network(
            self.net,
            volume,
            float(sample["sampling"]),
            # our own weights saw the store's sampling; only published weights are resampled
            net_sampling=float(self.info["sampling"]) if published else None,
            normalise=self.options["normalise"],
            input_scale=self.options["input_scale"],
        )
