"""The detection limit (benchmark.detection): closed forms of the detectability index."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from benchmark.crlb import RadialPSF
from benchmark.detection import (
    detectability,
    detection_probability,
    recovery_bound,
)
from simgen.physics.imaging import cross_section

SAMPLING = 0.4
SIZE = 48
CENTRE = (SIZE - 1) / 2 * SAMPLING


def test_poisson_only_isolated_atom_has_d_prime_sqrt_of_its_counts():
    # Poisson only, nothing else in the pixels: v_p = σ g_p, so d'² = σ Σ g_p = the atom's
    # expected counts over the whole series (the PSF integrates to one).
    psf = RadialPSF.gaussian(0.5)
    angles = np.linspace(-70, 70, 29)
    dose = 100.0
    d = detectability([[CENTRE, CENTRE, CENTRE]], [78], angles, dose, SAMPLING, SIZE, psf=psf)
    counts = cross_section(78) * dose * len(angles)
    assert d[0] == pytest.approx(math.sqrt(counts), rel=2e-3)


def test_read_noise_dominated_d_prime_is_the_matched_filter_snr():
    # v_p ≈ read² ≫ signal: d'² = σ² Σ g² / read²; for a Gaussian PSF of width s,
    # Σ_p (s²·h)² ≈ sampling² / (4π s²) per projection.
    width, read = 0.5, 50.0
    psf = RadialPSF.gaussian(width)
    dose = 1e3
    d = detectability(
        [[CENTRE, CENTRE, CENTRE]], [78], [0.0], dose, SAMPLING, SIZE, psf=psf, read_noise=read
    )
    sigma = cross_section(78)
    expected = sigma * dose * math.sqrt(SAMPLING**2 / (4 * math.pi * width**2)) / read
    assert d[0] == pytest.approx(expected, rel=1e-2)


def test_neighbours_in_the_same_column_lower_the_detectability():
    psf = RadialPSF.gaussian(0.5)
    column = [[CENTRE, CENTRE, CENTRE + dz] for dz in (-2.0, 0.0, 2.0)]
    alone = detectability(column, [78] * 3, [0.0], 100.0, SAMPLING, SIZE, psf=psf, neighbours=False)
    joint = detectability(column, [78] * 3, [0.0], 100.0, SAMPLING, SIZE, psf=psf)
    # at 0° the three atoms project onto one spot: the variance triples, d' falls by sqrt(3)
    assert np.allclose(joint, alone / math.sqrt(3), rtol=1e-6)
    assert np.all(joint < alone)


def test_detection_probability_closed_form():
    alpha = 0.01
    assert detection_probability(0.0, alpha) == pytest.approx(alpha)
    assert detection_probability(norm.ppf(1 - alpha), alpha) == pytest.approx(0.5)
    assert recovery_bound([0.0, 20.0], alpha) == pytest.approx((alpha + 1.0) / 2)
    with pytest.raises(ValueError, match="false_alarm"):
        detection_probability(1.0, 1.5)


def test_lower_dose_lowers_the_recovery_bound():
    psf = RadialPSF.gaussian(0.5)
    angles = np.linspace(-70, 70, 29)
    fe = [[CENTRE, CENTRE, CENTRE]]
    bounds = [
        recovery_bound(detectability(fe, [26], angles, dose, SAMPLING, SIZE, psf=psf))
        for dose in (1.0, 10.0, 100.0)
    ]
    assert bounds[0] < bounds[1] < bounds[2]
    # Fe at 1 e/Å² over 29 tilts: ~0.08 counts in all, d' ≈ 0.29 — barely above chance
    assert bounds[0] < 0.03


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="dose"):
        detectability([[0, 0, 0]], [78], [0.0], -1.0, SAMPLING, SIZE)
    with pytest.raises(ValueError, match="positions"):
        detectability([[0, 0]], [78], [0.0], 1.0, SAMPLING, SIZE)
