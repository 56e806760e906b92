"""models: the PANN method (arXiv 2603.19942) and the 3D U-Net baseline.

Stage 1 refines a reconstructed volume with a global-local 3D residual U-Net; stage 2 traces atoms,
describes each with 3D Zernike moments and classifies elements with a graph attention Transformer.
Names load on first use, so ``import models`` is cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "PannModel": "models.pann",
    "PannConfig": "models.pann",
    "GlobalLocalResUNet": "models.resunet",
    "sliding_window_predict": "models.resunet",
    "UNet3D": "models.unet3d",
    "SpeciesTransformer": "models.species",
    "build_graph": "models.species",
    "project": "models.projector",
    "trace_atoms": "models.tracing",
    "zernike_descriptors": "models.zernike",
    "atom_descriptors": "models.zernike",
    "ZernikeBasis": "models.zernike",
    "extract_patches": "models.zernike",
    "train_pann": "models.train",
    "train_unet3d": "models.train",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
