"""Alignment of a tilt series before reconstruction (simgen.reconstruction.alignment)."""

from __future__ import annotations

import numpy as np
import pytest

from simgen import structures
from simgen.physics import imaging, noise
from simgen.physics.noise import fourier_shift
from simgen.reconstruction.alignment import align_tilt_series, alignment_errors, estimate_shift
from simgen.sample import normalise_tilt_series

SIZE, SAMPLING = 40, 0.4
ANGLES = np.linspace(-70.0, 70.0, 13)


@pytest.fixture(scope="module")
def clean():
    """The linear-HAADF tilt series of a small Pt particle (counts per unit dose)."""
    rng = np.random.default_rng(1)
    atoms = structures.build_particle("decahedron", "Pt", 1.0, rng=rng, orientation="random")
    atoms = structures.place_in_volume(atoms, SIZE, SAMPLING)
    series = imaging.simulate_tilt_series(atoms, ANGLES, size=SIZE, sampling=SAMPLING)
    return np.maximum(series, 0.0)


def measure(clean, dose, seed=2, sigma=0.5):
    chain = noise.NoiseChain.from_specs([f"misalignment:sigma={sigma}", "poisson"])
    record: dict = {}
    counts = chain.apply(
        clean * dose, np.random.default_rng(seed), sampling=SAMPLING, dose=dose, record=record
    )
    return normalise_tilt_series(counts, dose), record["shifts"]


def test_estimate_shift_is_exact_for_a_fourier_shifted_image(clean):
    moved = fourier_shift(clean[5:6], np.array([[1.37, -2.61]]))[0]
    np.testing.assert_allclose(estimate_shift(clean[5], 3.0 * moved), [1.37, -2.61], atol=2e-3)


@pytest.mark.parametrize("method", ["com", "cross_correlation", "projection_matching"])
def test_alignment_recovers_random_shifts_and_improves_with_dose(clean, method):
    errors = []
    for dose in (3e2, 1e5):
        series, true = measure(clean, dose)
        result = align_tilt_series(series, ANGLES, method, iterations=2)
        assert result.aligned.shape == series.shape and result.shifts.shape == (len(ANGLES), 2)
        errors.append(alignment_errors(result.shifts * SAMPLING, true, ANGLES)["shift_error"])
    before = alignment_errors(np.zeros((len(ANGLES), 2)), true, ANGLES)["shift_error"]
    assert before > 0.3  # 0.5 Å drawn: a real misalignment, Å
    assert errors[1] < errors[0]  # the error falls with dose
    assert errors[1] < 0.1 * SAMPLING * (4 if method == "com" else 1)  # a fraction of a pixel


def test_projection_matching_beats_the_centre_of_mass_at_high_dose(clean):
    series, true = measure(clean, 1e5, seed=5)
    com = align_tilt_series(series, ANGLES, "com")
    matched = align_tilt_series(series, ANGLES, "projection_matching", iterations=2)
    e_com = alignment_errors(com.shifts * SAMPLING, true, ANGLES)["shift_error"]
    e_pm = alignment_errors(matched.shifts * SAMPLING, true, ANGLES)["shift_error"]
    assert e_pm < 0.6 * e_com


def test_alignment_errors_ignore_the_gauge():
    angles = np.linspace(-60, 60, 9)
    theta = np.deg2rad(angles)
    true = np.zeros((9, 2))
    # a common y shift and a rigid x/z translation of the object are not errors
    estimated = np.stack([np.full(9, 0.7), 0.3 * np.cos(theta) - 0.2 * np.sin(theta)], axis=1)
    out = alignment_errors(estimated, true, angles, angles + 0.4, angles)
    assert out["shift_error"] == pytest.approx(0.0, abs=1e-12)
    assert out["angle_error"] == pytest.approx(0.0, abs=1e-12)
    # one projection off by 0.9 Å in y: RMS of the de-meaned error over 9 projections
    estimated[4, 0] += 0.9
    expected = np.sqrt(((0.9 - 0.1) ** 2 + 8 * 0.1**2) / 9)
    assert alignment_errors(estimated, true, angles)["shift_error_y"] == pytest.approx(expected)


def test_none_leaves_the_series_alone_and_bad_methods_are_named(clean):
    result = align_tilt_series(clean, ANGLES, "none")
    np.testing.assert_array_equal(result.aligned, clean.astype(np.float32))
    np.testing.assert_array_equal(result.angles, ANGLES)
    with pytest.raises(ValueError, match=r"method='com_': .*did you mean 'com'"):
        align_tilt_series(clean, ANGLES, "com_")
    with pytest.raises(ValueError, match=r"angles_deg\.shape=\(3,\)"):
        align_tilt_series(clean, ANGLES[:3], "com")
