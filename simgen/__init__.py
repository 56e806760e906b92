"""simgen: simulated low-dose HAADF-STEM atomic electron tomography datasets.

Nanoparticle models (ASE) -> calibrated HAADF tilt series (linear mode or abTEM multislice/PRISM)
-> dose and noise models -> ASTRA reconstruction -> Zarr stores, one sample or a whole dataset
on a Dask cluster. Importing ``simgen`` is cheap and never imports torch; heavy modules load on
first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "open_dataset": "simgen.store",
    "Microscope": "simgen.physics.imaging",
    "simulate_tilt_series": "simgen.physics.imaging",
    "build_particle": "simgen.structures",
    "load_model": "simgen.structures",
    "reconstruct": "simgen.reconstruction.reconstruct",
    "SampleSpec": "simgen.sample",
    "simulate_sample": "simgen.sample",
    "load_catalog": "simgen.catalog",
    "generate": "simgen.engine",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simgen' has no attribute {name!r}")
