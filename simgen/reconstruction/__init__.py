"""From a tilt series to a volume, as a real AET pipeline does.

- :mod:`~simgen.reconstruction.alignment`: alignment of the tilt series (shifts, tilt-axis
  offset) before reconstruction;
- :mod:`~simgen.reconstruction.reconstruct`: ASTRA reconstructions (SIRT, FBP, CGLS, batched
  SIRT/CGLS on the CPU) and the method registry;
- ``_sparse``: the fused numba kernels of the batched solvers (private to this package).

Nothing is imported here: import the module you need (``simgen.reconstruct`` is the function).
"""
