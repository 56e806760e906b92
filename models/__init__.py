"""models: the PANN method (arXiv 2603.19942) and the 3D U-Net baseline.

Stage 1 refines a reconstructed volume with a global-local 3D residual U-Net; stage 2 traces atoms,
describes each with 3D Zernike moments and classifies elements with a graph attention Transformer.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
