"""Projection matching with a split reference and stage-precision priors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simgen import structures
from simgen.physics import imaging, noise
from simgen.reconstruction.alignment import (
    _cross_variance,
    _fit_shift,
    _shrink,
    _shrink_start,
    _signal_sigma,
    align_tilt_series,
    alignment_errors,
)
from simgen.sample import normalise_tilt_series

SIZE, SAMPLING = 40, 0.4
ANGLES = np.linspace(-70.0, 70.0, 15)


@pytest.fixture(scope="module")
def clean():
    rng = np.random.default_rng(1)
    atoms = structures.build_particle("decahedron", "Pt", 1.0, rng=rng)
    atoms = structures.place_in_volume(atoms, SIZE, SAMPLING)
    return np.maximum(imaging.simulate_tilt_series(atoms, ANGLES, size=SIZE, sampling=SAMPLING), 0)


def test_alignment_prior_of_a_chain_is_hand_computed():
    chain = noise.NoiseChain.from_specs(
        ["misalignment:sigma=0.3", "drift:amplitude=0.6", "tilt_error:sigma=0.4", "poisson"]
    )
    prior = chain.alignment_prior()
    # frame-mean drift v/2 + w/3 with v, w ~ N(0, 0.6²/2): variance 0.18 (1/4 + 1/9) = 0.065
    assert prior["shift_sigma"] == pytest.approx(math.sqrt(0.09 + 0.065))
    assert prior["angle_sigma"] == pytest.approx(0.4)
    assert noise.NoiseChain.from_specs(["poisson"]).alignment_prior() == {
        "shift_sigma": 0.0,
        "angle_sigma": 0.0,
    }


def test_shrinkage_is_the_gaussian_posterior_mean():
    # prior N(0, 1), estimate 1.5 with error variance 0.5: posterior mean 1.5 · 1 / 1.5 = 1
    np.testing.assert_allclose(_shrink(np.array([1.5, -3.0]), np.array([0.5, 2.0]), 1.0), [1, -1])
    np.testing.assert_array_equal(_shrink(np.array([1.5]), np.array([0.5]), None), [1.5])
    np.testing.assert_array_equal(_shrink(np.array([1.5]), np.array([0.5]), 0.0), [0.0])
    # method of moments: mean(est²) = 1, mean(var) = 0.5 -> τ² = 0.5, capped by a prior of 0.5²
    estimates, variances = np.array([1.0, -1.0, 1.0, -1.0]), np.full(4, 0.5)
    assert _signal_sigma(estimates, variances, None) == pytest.approx(math.sqrt(0.5))
    assert _signal_sigma(estimates, variances, 0.5) == pytest.approx(0.5)
    assert _signal_sigma(estimates, np.full(4, 2.0), None) == 0.0  # all noise: keep recorded


def test_start_is_shrunk_only_when_it_scatters_more_than_the_prior():
    shifts = np.array([[2.0, 0.5], [-2.0, -0.5], [2.0, 0.5], [-2.0, -0.5]])
    out = _shrink_start(shifts, 1.0)
    # y: A = 4, one gauge dof: E[mean ŝ²] = 1 · 3/4; observed 4 > 0.75 (1 + 2√(2/3)):
    # v = 4 − 0.75, factor 1 / (1 + v) = 1 / 4.25.  x: observed 0.25, kept
    np.testing.assert_allclose(out[:, 0], shifts[:, 0] / 4.25)
    np.testing.assert_array_equal(out[:, 1], shifts[:, 1])


def test_fit_shift_covariance_matches_the_scatter_over_noise_draws():
    x = np.arange(64, dtype=np.float64)
    reference = np.exp(-0.5 * ((x - 30.0) / 2.5) ** 2)
    rng = np.random.default_rng(0)
    fits = [
        _fit_shift(reference, reference + rng.normal(0, 0.05, 64), initial=[0.0])
        for _ in range(300)
    ]
    shifts = np.array([f[0][0] for f in fits])
    predicted = np.mean([f[1][0, 0] for f in fits])
    assert np.var(shifts) == pytest.approx(predicted, rel=0.25)


def test_cross_variance_counts_a_noisy_reference_honestly():
    yy, xx = np.mgrid[:24, :24]
    clean = np.exp(-((yy - 11.5) ** 2 + (xx - 12.0) ** 2) / (2 * 2.0**2))
    rng = np.random.default_rng(1)
    shifts, gauss_newton, cross = [], [], []
    for _ in range(200):
        reference = clean + rng.normal(0, 0.08, clean.shape)  # as noisy as the data
        moving = clean + rng.normal(0, 0.08, clean.shape)
        shift, covariance = _fit_shift(reference, moving, initial=(0.0, 0.0))
        shifts.append(shift)
        gauss_newton.append(np.diag(covariance))
        cross.append(_cross_variance(reference[None], moving[None], shift[None])[0])
    observed = np.var(shifts, axis=0)
    # the reference's noise gradient counted as signal: Gauss–Newton too confident
    assert np.all(np.median(gauss_newton, axis=0) < 0.6 * observed)
    np.testing.assert_allclose(np.median(cross, axis=0), observed, rtol=0.4)


def measure(clean, dose, seed):
    chain = noise.NoiseChain.from_specs(["misalignment:sigma=0.3", "poisson"])
    record: dict = {}
    counts = chain.apply(
        clean * dose, np.random.default_rng(seed), sampling=SAMPLING, dose=dose, record=record
    )
    return normalise_tilt_series(counts, dose), record["shifts"], chain.alignment_prior()


@pytest.mark.parametrize("dose", [30.0, 100.0])
def test_low_dose_alignment_is_not_worse_than_none(clean, dose):
    # mean over three noise draws; at 30 e/Å² the projection matching of old (whole-series
    # reference, no prior) was worse than no alignment (mean 0.49 vs 0.30 Å)
    aligned, unaligned = [], []
    for seed in (3, 4, 5):
        series, true, prior = measure(clean, dose, seed)
        result = align_tilt_series(
            series,
            ANGLES,
            "projection_matching_split",
            shift_prior=prior["shift_sigma"] / SAMPLING,
        )
        aligned.append(alignment_errors(result.shifts * SAMPLING, true, ANGLES)["shift_error"])
        unaligned.append(alignment_errors(np.zeros_like(true), true, ANGLES)["shift_error"])
    assert np.mean(aligned) < np.mean(unaligned)


def test_split_reference_keeps_high_dose_accuracy(clean):
    series, true, prior = measure(clean, 1e5, 5)
    result = align_tilt_series(
        series, ANGLES, "projection_matching_split", shift_prior=prior["shift_sigma"] / SAMPLING
    )
    assert alignment_errors(result.shifts * SAMPLING, true, ANGLES)["shift_error"] < 0.02  # Å


def test_a_zero_prior_means_no_shift_and_bad_options_are_named(clean):
    series, _, _ = measure(clean, 1e3, 6)
    result = align_tilt_series(series, ANGLES, "projection_matching_split", shift_prior=0.0)
    np.testing.assert_array_equal(result.shifts, 0.0)
    with pytest.raises(ValueError, match=r"reference='half': expected 'split' or 'full'"):
        align_tilt_series(series, ANGLES, "projection_matching", reference="half")
    with pytest.raises(ValueError, match=r"shift_prior=-1.0: expected None or a standard"):
        align_tilt_series(series, ANGLES, "projection_matching", shift_prior=-1.0)


def test_generation_runs_the_split_method_with_the_chains_prior():
    from dataclasses import replace

    from simgen.catalog import sample_rng
    from simgen.sample import SampleSpec, simulate_sample

    spec = SampleSpec(
        index=0,
        morphology="cuboctahedron",
        composition="Pt",
        size_nm=0.8,
        dose=1e4,
        angles=tuple(np.linspace(-60.0, 60.0, 9)),
        sampling=0.5,
        size=28,
        noise=("poisson", "misalignment:sigma=0.3"),
        iterations=5,
        structure_seed=11,
        align="projection_matching_split",
    )
    split = simulate_sample(spec, sample_rng(3, 0))
    full = simulate_sample(replace(spec, align="projection_matching"), sample_rng(3, 0))
    # same measured series (the alignment draws nothing), different estimates, both recorded
    np.testing.assert_array_equal(split.tilt_series, full.tilt_series)
    assert split.meta["align"] == "projection_matching_split"
    assert split.meta["align_shift_error_pm"] < 30.0 > full.meta["align_shift_error_pm"]
    assert not np.array_equal(split.shifts, full.shifts)


def test_binning_is_the_block_mean_and_unbinning_keeps_the_line_sums():
    from simgen.reconstruction.alignment import _bin2, _unbin2

    images = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    binned = _bin2(images)
    assert binned.shape == (2, 2, 2)
    assert binned[0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert binned[1, 1, 1] == pytest.approx((26 + 27 + 30 + 31) / 4)
    volume = np.random.default_rng(0).random((3, 2, 3)).astype(np.float32)
    full = _unbin2(volume)
    assert full.shape == (6, 4, 6)
    # a line along z crosses 3 binned voxels or 6 full ones: the same sum
    np.testing.assert_allclose(full.sum(axis=0)[::2, ::2], volume.sum(axis=0), rtol=1e-6)


def test_the_relative_offset_of_the_two_halves_is_measured_and_split():
    """Two half volumes, the even one the odd one translated by D = (dz, dy, dx): the
    projections matched against the odd half get −P D/2, the others +P D/2."""
    from simgen.reconstruction.alignment import _half_offset

    zz, yy, xx = np.mgrid[:32, :32, :32]
    odd = np.exp(-((zz - 15.0) ** 2 + (yy - 16.0) ** 2 + (xx - 14.0) ** 2) / (2 * 3.0**2))
    spectrum = np.fft.fftn(odd)
    k = np.meshgrid(*[np.fft.fftfreq(32)] * 3, indexing="ij")
    offset = (1.0, 0.5, -0.75)  # (dz, dy, dx) voxels
    phase = np.exp(-2j * np.pi * sum(f * d for f, d in zip(k, offset)))
    even = np.fft.ifftn(spectrum * phase).real
    angles = np.array([0.0, 90.0, 30.0])
    got = _half_offset((odd, even), angles)
    c, s = np.cos(np.deg2rad(30.0)), np.sin(np.deg2rad(30.0))
    expected = np.array(
        [
            [-0.25, 0.375],  # index 0 (even, against the odd half): −(dy, dx)/2
            [0.25, 0.5],  # index 1 (odd): +(dy, dz)/2 at 90°
            [-0.25, -0.5 * (-0.75 * c + 1.0 * s)],
        ]
    )
    np.testing.assert_allclose(got, expected, atol=1e-4)
