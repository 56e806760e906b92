"""Tests of simgen.physics.noise: statistics of each model, ordering, reproducibility and errors."""

from __future__ import annotations

import numpy as np
import pytest

from simgen.physics.noise import (
    NOISE_MODELS,
    Background,
    BeamCurrent,
    Drift,
    Misalignment,
    NoiseChain,
    NoNoise,
    Poisson,
    ReadNoise,
    TiltError,
    parse_noise,
)

SAMPLING = 0.4  # Å
DOSE = 1000.0  # e/Å²


def blob_series(n_angles: int = 3, size: int = 48) -> np.ndarray:
    grid = np.arange(size)
    g = np.exp(-0.5 * ((grid - 20.3) / 2.0) ** 2)
    image = 200.0 * np.outer(np.roll(g, 3), g) + 1.0
    return np.repeat(image[None], n_angles, axis=0).astype(np.float32)


def centre_of_mass(image: np.ndarray) -> np.ndarray:
    ys, xs = np.indices(image.shape)
    return np.array([(ys * image).sum(), (xs * image).sum()]) / image.sum()


def test_poisson_variance_equals_mean_and_mean_is_preserved():
    expected = np.full((4, 128, 128), 50.0, dtype=np.float32)
    measured = NoiseChain.from_specs(["poisson"]).apply(
        expected, np.random.default_rng(0), sampling=SAMPLING, dose=DOSE
    )
    assert measured.dtype == np.float32
    assert np.all(measured == np.round(measured)) and measured.min() >= 0
    # 65 536 pixels: the sample mean is within ~0.03 of 50, the variance within ~0.6 %
    assert abs(measured.mean() - 50.0) < 0.15
    assert abs(measured.var() / measured.mean() - 1.0) < 0.03


def test_none_returns_the_input_exactly():
    expected = blob_series()
    chain = NoiseChain.from_specs(["none"])
    assert len(chain) == 0
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    out = chain.apply(expected, rng, sampling=SAMPLING, dose=DOSE)
    np.testing.assert_array_equal(out, expected)
    assert out is not expected
    assert rng.bit_generator.state == state  # nothing drawn
    assert chain.background(DOSE) == 0.0
    np.testing.assert_array_equal(chain.true_angles([-30.0, 0.0, 30.0], rng), [-30.0, 0.0, 30.0])


def test_tilt_error_changes_true_angles_not_nominal():
    nominal = np.linspace(-60.0, 60.0, 41)
    recorded = nominal.copy()
    chain = NoiseChain.from_specs(["tilt_error:sigma=0.5,offset=1.5"])
    true = chain.true_angles(nominal, np.random.default_rng(2))
    np.testing.assert_array_equal(nominal, recorded)
    error = true - nominal
    assert abs(error.mean() - 1.5) < 3 * 0.5 / np.sqrt(41)
    assert 0.3 < error.std() < 0.7
    # the same draws as documented: offset + rng.normal(0, sigma, A)
    np.testing.assert_allclose(true, nominal + 1.5 + np.random.default_rng(2).normal(0, 0.5, 41))
    # offset alone draws nothing
    offset_only = NoiseChain.from_specs(["tilt_error:sigma=0,offset=-2"])
    np.testing.assert_array_equal(
        offset_only.true_angles(nominal, np.random.default_rng(0)), nominal - 2
    )


ALL_SPECS = [
    "tilt_error:sigma=0.3",
    "misalignment:sigma=0.5",
    "rotation:sigma=1",
    "drift:amplitude=0.8",
    "scan_jitter:sigma=0.3",
    "beam_current:sigma=0.1",
    "background:counts=2,fraction=0.001",
    "poisson",
    "gain:value=1.5,sigma=0.02",
    "read:sigma=2",
]


def run_chain(specs, seed):
    chain = NoiseChain.from_specs(specs)
    rng = np.random.default_rng(seed)
    angles = chain.true_angles(np.array([-20.0, 0.0, 20.0]), rng)
    return angles, chain.apply(blob_series(), rng, sampling=SAMPLING, dose=DOSE)


def test_same_seed_gives_identical_output_and_a_different_seed_does_not():
    angles_a, a = run_chain(ALL_SPECS, 7)
    angles_b, b = run_chain(ALL_SPECS, 7)
    np.testing.assert_array_equal(angles_a, angles_b)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (3, 48, 48)
    _, c = run_chain(ALL_SPECS, 8)
    assert not np.array_equal(a, c)


def test_spec_order_does_not_matter():
    shuffled = [ALL_SPECS[i] for i in np.random.default_rng(0).permutation(len(ALL_SPECS))]
    assert NoiseChain.from_specs(shuffled).specs() == NoiseChain.from_specs(ALL_SPECS).specs()
    np.testing.assert_array_equal(run_chain(shuffled, 3)[1], run_chain(ALL_SPECS, 3)[1])
    stages = [m.stage for m in NoiseChain.from_specs(shuffled).models]
    assert stages == sorted(stages, key=["angles", "expected", "shot", "detector"].index)


def test_read_noise_sigma():
    expected = np.full((2, 128, 128), 10.0, dtype=np.float32)
    out = NoiseChain.from_specs(["read:sigma=3"]).apply(
        expected, np.random.default_rng(4), sampling=SAMPLING, dose=DOSE
    )
    assert abs((out - expected).std() - 3.0) < 0.05
    assert abs((out - expected).mean()) < 0.05


def test_misalignment_moves_the_centre_of_mass_by_the_drawn_amount():
    model = Misalignment(sigma=1.2)
    expected = blob_series(5)
    out = model(expected, np.random.default_rng(5), sampling=SAMPLING, dose=DOSE)
    drawn = model.draw(5, np.random.default_rng(5)) / SAMPLING  # (dy, dx) pixels
    assert np.abs(drawn).max() > 0.5  # a real shift, not a no-op
    background = 1.0  # the flat part of blob_series: remove it so the centroid is the blob's
    for k in range(5):
        moved = centre_of_mass(np.clip(out[k] - background, 0, None))
        original = centre_of_mass(expected[k] - background)
        np.testing.assert_allclose(moved - original, drawn[k], atol=0.02)


def test_beam_current_factors_have_mean_one():
    model = BeamCurrent(sigma=0.1)
    factors = model.draw(20000, np.random.default_rng(6))
    assert abs(factors.mean() - 1.0) < 0.003
    assert abs(factors.std() - 0.1) < 0.003
    expected = blob_series(4)
    out = model(expected, np.random.default_rng(6), sampling=SAMPLING, dose=DOSE)
    np.testing.assert_allclose(
        out.sum(axis=(1, 2)) / expected.sum(axis=(1, 2)),
        model.draw(4, np.random.default_rng(6)),
        rtol=1e-5,
    )


def test_background_adds_the_level_the_chain_reports():
    chain = NoiseChain.from_specs(["background:counts=3,fraction=0.002", "gain:value=2"])
    level = 2 * (3 + 0.002 * DOSE * SAMPLING**2)
    assert chain.background(DOSE, SAMPLING) == pytest.approx(level)
    zeros = np.zeros((1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(
        chain.apply(zeros, np.random.default_rng(0), sampling=SAMPLING, dose=DOSE), level
    )
    assert NoiseChain.from_specs(["background:counts=4"]).background(DOSE) == 4.0
    with pytest.raises(ValueError, match=r"fraction=0\.002 needs sampling="):
        chain.background(DOSE)


def test_geometric_distortions_keep_counts_non_negative_and_conserve_interior_counts():
    expected = blob_series(3, size=64)
    for spec in (
        "rotation:sigma=2",
        "drift:amplitude=1",
        "scan_jitter:sigma=0.4",
        "misalignment:sigma=1",
    ):
        out = NoiseChain.from_specs([spec]).apply(
            expected, np.random.default_rng(9), sampling=SAMPLING, dose=DOSE
        )
        assert out.min() >= 0.0, spec
        assert not np.array_equal(out, expected), spec
        blob = (out - 1.0).clip(0)[:, 8:-8, 8:-8].sum() / (expected - 1.0)[:, 8:-8, 8:-8].sum()
        assert abs(blob - 1.0) < 0.02, spec  # interpolation moves signal, it does not create it


def test_drift_grows_along_the_scan():
    model = Drift(amplitude=2.0)
    size = 64
    image = np.zeros((1, size, size), dtype=np.float32)
    image[0, :, 30:34] = 100.0  # a vertical bar: drift along x shows up as a slanted bar
    out = model(image, np.random.default_rng(11), sampling=SAMPLING, dose=DOSE)
    v, w = model.draw(1, np.random.default_rng(11))[0]  # (velocity, acceleration) × (dy, dx) Å
    xs = np.arange(size)
    for row in (16, 40, 60):
        t = row / (size - 1)
        profile = out[0, row]
        measured = (xs * profile).sum() / profile.sum() - 31.5
        assert measured == pytest.approx((v[1] * t + w[1] * t**2) / SAMPLING, abs=0.25)


def test_parse_noise_round_trip_and_records():
    for name, cls in NOISE_MODELS.items():
        model = cls()
        assert parse_noise(model.spec()) == model
        assert model.to_dict()["name"] == name
    assert parse_noise(" read : sigma = 2.5 ") == ReadNoise(sigma=2.5)
    assert parse_noise("tilt_error:offset=-1") == TiltError(sigma=0.5, offset=-1.0)
    record = NoiseChain.from_specs(["poisson", "tilt_error:sigma=0.2"]).to_dict()
    assert record["specs"] == ["tilt_error:sigma=0.2,offset=0.0", "poisson"]
    assert record["models"][0] == {
        "name": "tilt_error",
        "stage": "angles",
        "sigma": 0.2,
        "offset": 0.0,
    }
    assert isinstance(parse_noise("none"), NoNoise) and isinstance(parse_noise("poisson"), Poisson)
    assert Background().background(DOSE) == 1.0


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("gaussian", r"noise='gaussian': unknown model 'gaussian', expected one of \['background'"),
        (
            "read:sigmaa=2",
            r"noise 'read': unknown key 'sigmaa' in 'read:sigmaa=2', expected \['sigma'\]",
        ),
        (
            "read:sigma=abc",
            r"noise 'read': sigma='abc': expected a finite number >= 0\.0 \(counts per pixel\)",
        ),
        (
            "misalignment:sigma=-1",
            r"noise 'misalignment': sigma=-1\.0: expected a finite number >= 0\.0 \(Å\)",
        ),
        ("drift:amplitude=nan", r"noise 'drift': amplitude=nan: expected a finite number"),
        ("poisson:lam=3", r"noise 'poisson': unknown key 'lam' .* expected no parameters"),
        ("read:sigma", r"noise 'read': sigma: missing '=value'"),
        ("read:sigma=1,sigma=2", r"noise 'read': sigma given twice"),
        ("", r"noise='': expected 'name'"),
    ],
)
def test_parse_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_noise(spec)


def test_chain_errors():
    with pytest.raises(ValueError, match=r"expected 'none' alone"):
        NoiseChain.from_specs(["none", "poisson"])
    with pytest.raises(ValueError, match=r"expected each model at most once, \['read'\] repeated"):
        NoiseChain.from_specs(["read:sigma=1", "poisson", "read:sigma=2"])
    chain = NoiseChain.from_specs(["poisson"])
    rng = np.random.default_rng(0)
    with pytest.raises(
        ValueError, match=r"expected_counts\.shape=\(4, 4\): expected a non-empty \(A, P, P\)"
    ):
        chain.apply(np.ones((4, 4)), rng, sampling=SAMPLING, dose=DOSE)
    with pytest.raises(ValueError, match=r"expected_counts: expected finite values"):
        chain.apply(np.full((1, 4, 4), np.nan), rng, sampling=SAMPLING, dose=DOSE)
    # tiny negative expected counts (FFT ringing) are clipped by the shot noise, not rejected
    assert chain.apply(-np.ones((1, 4, 4)), rng, sampling=SAMPLING, dose=DOSE).min() == 0.0
    with pytest.raises(ValueError, match=r"sampling=0: expected a positive pixel size"):
        chain.apply(np.ones((1, 4, 4)), rng, sampling=0, dose=DOSE)
    with pytest.raises(ValueError, match=r"dose=-5: expected a positive dose"):
        chain.apply(np.ones((1, 4, 4)), rng, sampling=SAMPLING, dose=-5)
    with pytest.raises(ValueError, match=r"angles=\[\]: expected a non-empty 1D array"):
        chain.true_angles([], rng)


def test_fourier_shift_of_a_delta_by_whole_pixels_is_exact_and_conserves_counts():
    from simgen.physics.noise import fourier_shift

    images = np.zeros((2, 16, 17), dtype=np.float32)
    images[:, 5, 7] = 100.0
    out = fourier_shift(images, np.array([[3.0, -2.0], [-4.0, 5.0]]))
    expected = np.zeros_like(images)
    expected[0, 8, 5] = 100.0
    expected[1, 1, 12] = 100.0
    np.testing.assert_allclose(out, expected, atol=1e-4)
    # a sub-pixel shift spreads the delta but keeps every count
    half = fourier_shift(images, np.array([[0.5, 0.25], [-0.3, 0.7]]))
    np.testing.assert_allclose(half.sum(axis=(1, 2)), 100.0, rtol=1e-6)


def test_fourier_shift_round_trip_is_the_identity():
    from simgen.physics.noise import fourier_shift

    rng = np.random.default_rng(3)
    odd = rng.random((3, 15, 21))  # no Nyquist bin: any image comes back exactly
    shifts = rng.normal(0.0, 1.5, (3, 2))
    back = fourier_shift(fourier_shift(odd, shifts), -shifts)
    np.testing.assert_allclose(back, odd, atol=1e-6)
    even = blob_series(3).astype(np.float64)  # band-limited blob on an even grid
    back = fourier_shift(fourier_shift(even, shifts), -shifts)
    np.testing.assert_allclose(back, even, atol=1e-6 * even.max())


def test_chain_records_the_shifts_it_drew():
    chain = NoiseChain.from_specs(["misalignment:sigma=0.7", "poisson"])
    record: dict = {}
    a = chain.apply(
        blob_series(4), np.random.default_rng(9), sampling=SAMPLING, dose=DOSE, record=record
    )
    b = chain.apply(blob_series(4), np.random.default_rng(9), sampling=SAMPLING, dose=DOSE)
    np.testing.assert_array_equal(a, b)  # recording draws nothing more
    np.testing.assert_allclose(
        record["shifts"], Misalignment(sigma=0.7).draw(4, np.random.default_rng(9))
    )
