"""The ``unet3d`` baseline: the 3D U-Net augmentation of Lee, Jeong & Yang (Nat. Commun. 12, 1962,
2021) applied to the reconstruction, followed by the classical tracing and k-means species step."""

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
        Run directory (or ``unet3d.pt``) from ``pann train --model unet3d``; default: shipped demo weights.
    smooth
        Extra Gaussian smoothing (Å) before tracing; the network output is already smooth.
    """

    version = "1.0"

    def __init__(self, weights=None, *, smooth: float = 0.0, **options):
        super().__init__(smooth=smooth, **options)
        self.options["weights"] = weights
        from models.train import load_unet3d

        self.net, self.info = load_unet3d(weights)

    def _volume(self, sample: dict) -> np.ndarray:
        import torch

        from models.pann import volume_scale

        volume = super()._volume(sample)
        scale = volume_scale(volume)
        self.net.eval()
        with torch.no_grad():
            out = self.net(torch.as_tensor(volume / scale, dtype=torch.float32)[None, None])[
                0, 0
            ].numpy()
        return out * scale
