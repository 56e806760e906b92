"""The physics of a low-dose HAADF-STEM tilt series, one concept per module.

- :mod:`~simgen.physics.microscope`: STEM settings, wavelength, the calibration table;
- :mod:`~simgen.physics.calibration`: the linear model's σ(Z) and PSF measured against abTEM;
- :mod:`~simgen.physics.imaging`: tilt series of atomic models (linear mode, abTEM multislice/PRISM);
- :mod:`~simgen.physics.noise`: named, composable noise models; :mod:`~simgen.physics.gain`: the
  detector gain of a measured series and exact lower-dose versions of it;
- :mod:`~simgen.physics.acquisition`: tilt order and per-projection doses;
- :mod:`~simgen.physics.geometry`: the tomographic geometry shared with reconstruction;
- :mod:`~simgen.physics.targets`: ideal volumes (stage 1's training target).

The linear forward model itself (PSF, projection of atoms, its Jacobian; numpy or torch) is
:mod:`simgen.forward`; beam damage is :mod:`simgen.damage`. Nothing is imported here: import
the module you need.
"""
