"""The one linear HAADF forward model, for numpy arrays and torch tensors alike.

Every part of the suite that needs the image of atoms calls this package: the simulator
(:func:`simgen.physics.imaging.simulate_tilt_series`, numpy), the refinement against a tilt series
(:mod:`models.refine`, torch with autograd), stage 1's physics term (:mod:`models.projector`) and
the Cramér–Rao bound (:mod:`benchmark.crlb`, through the Jacobian of :func:`atom_patches`).

``E[counts_θ(p)] = dose · sampling² · Σ_i σ(Z_i) · PSF(p − u_i(θ))``

- :mod:`~simgen.forward.calibrated`: σ(Z) and the probe's transfer from the abTEM calibration;
- :mod:`~simgen.forward.psf`: the PSF (probe ⊗ thermal blur) in Fourier (:func:`psf_transfer`) and
  real space (:class:`RadialPSF`);
- :mod:`~simgen.forward.dft`: the exact model by a non-uniform DFT of the atoms (sub-pixel exact,
  cost ∝ atoms × angles × frequencies);
- :mod:`~simgen.forward.sparse`: the same model patch by patch in real space (cost ∝ atoms × angles ×
  a few hundred pixels: 20,000-atom particles), with its Jacobian;
- :mod:`~simgen.forward.shift`: sub-pixel translation of images by the shift theorem.

The functions are written against the array API standard (``array-api-compat``): the namespace is
taken from the arrays passed in, so numpy in gives numpy out and torch in gives torch out (on the
tensors' device, differentiable).
"""

from __future__ import annotations

from simgen.forward.calibrated import (
    atomic_number,
    calibration,
    cross_section,
    cross_sections,
    default_thermal_sigma,
    probe_transfer_table,
)
from simgen.forward.dft import (
    PSF_PAD,
    LinearGrid,
    images_dft,
    images_fft,
    phase_factors,
    project_atoms,
    projected_x,
    psf_image,
    structure_factor,
    y_factors,
)
from simgen.forward.psf import PATCH_RADIUS, RadialPSF, band_limit, psf_transfer
from simgen.forward.shift import fourier_shift
from simgen.forward.sparse import (
    SPARSE_RADIUS,
    Patches,
    atom_patches,
    project_atoms_sparse,
    radial_lookup,
)

__all__ = [
    "PATCH_RADIUS",
    "PSF_PAD",
    "SPARSE_RADIUS",
    "LinearGrid",
    "Patches",
    "RadialPSF",
    "atom_patches",
    "atomic_number",
    "band_limit",
    "calibration",
    "cross_section",
    "cross_sections",
    "default_thermal_sigma",
    "fourier_shift",
    "images_dft",
    "images_fft",
    "phase_factors",
    "probe_transfer_table",
    "project_atoms",
    "project_atoms_sparse",
    "projected_x",
    "psf_image",
    "psf_transfer",
    "radial_lookup",
    "structure_factor",
    "y_factors",
]
