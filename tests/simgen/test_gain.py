"""Detector gain from the Poisson–Gaussian mean–variance line, and binomial thinning (issue 25)."""

import numpy as np
import pytest

from simgen.physics.gain import electron_counts, estimate_gain, thin_counts


def structured_electrons(rng, n=24, size=64):
    """Mean electrons per pixel: a background of 1.5 e plus smooth blobs up to ~40 e."""
    yy, xx = np.mgrid[:size, :size]
    series = np.full((n, size, size), 1.5)
    for k in range(n):
        for _ in range(14):
            cy, cx = rng.uniform(6, size - 6, 2)
            series[k] += rng.uniform(5, 40) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2)
            )
    return series


@pytest.mark.parametrize("gain,read_noise", [(1.0, 0.0), (2.5, 1.5), (7.0, 4.0)])
def test_gain_is_recovered_within_5_percent(gain, read_noise):
    rng = np.random.default_rng(3)
    mean = structured_electrons(rng)
    counts = gain * rng.poisson(mean) + rng.normal(0.0, read_noise, mean.shape)
    fit = estimate_gain(counts)
    assert abs(fit.gain / gain - 1.0) < 0.05, fit
    # the intercept is the read-noise variance (no offset here)
    assert abs(fit.intercept - read_noise**2) < 0.1 * gain**2 + 0.2 * read_noise**2
    assert fit.mean_range[1] > 10 * gain  # the fit spans the signal, not only the background


def test_gain_refuses_images_without_shot_noise():
    rng = np.random.default_rng(0)
    mean = structured_electrons(rng, n=4)
    with pytest.raises(ValueError, match="constant"):
        estimate_gain(np.full((4, 64, 64), 3.0))
    with pytest.raises(ValueError, match="too few"):
        estimate_gain(mean[:1, :16, :16])


def test_thinning_gives_poisson_counts_at_the_new_dose():
    """Binomial thinning of Poisson(λ)·g is Poisson(pλ)·g: mean p·g·λ and variance p·g²·λ."""
    rng = np.random.default_rng(1)
    gain, lam, p = 2.0, 30.0, 0.2
    counts = gain * rng.poisson(lam, (4, 200, 200))
    thinned = thin_counts(counts, p, np.random.default_rng(7), gain=gain)
    assert thinned.dtype == np.float32
    electrons = thinned / gain
    np.testing.assert_array_equal(electrons, np.rint(electrons))  # whole electrons kept
    assert np.all(thinned <= counts)
    n = electrons.size
    # mean p·λ = 6 e (standard error sqrt(6 / n)); variance = mean for a Poisson count
    assert abs(electrons.mean() - p * lam) < 5 * np.sqrt(p * lam / n)
    assert abs(electrons.var() / electrons.mean() - 1.0) < 0.02
    # and the gain estimated on a thinned structured series is still the detector's
    structured = gain * rng.poisson(structured_electrons(rng))
    fit = estimate_gain(thin_counts(structured, 0.5, np.random.default_rng(2), gain=gain))
    assert abs(fit.gain / gain - 1.0) < 0.05


def test_thinning_is_reproducible_and_checks_its_input():
    counts = np.random.default_rng(0).poisson(5.0, (2, 8, 8)).astype(float)
    a = thin_counts(counts, 0.5, np.random.default_rng(11))
    b = thin_counts(counts, 0.5, np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(thin_counts(counts, 1.0, np.random.default_rng(0)), counts)
    with pytest.raises(ValueError, match="fraction"):
        thin_counts(counts, 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="gain"):
        electron_counts(counts, 0.0)
    whole, rounding = electron_counts(np.array([0.0, 2.0, 4.2]), 2.0)
    np.testing.assert_array_equal(whole, [0, 1, 2])
    assert rounding == pytest.approx(0.1)
