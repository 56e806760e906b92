"""The warm start of SIRT (``reconstruct(..., initial=...)``), used between alignment rounds."""

from __future__ import annotations

import numpy as np
import pytest

from simgen.reconstruction.reconstruct import project, reconstruct


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(0)
    volume = np.zeros((24, 10, 24), dtype=np.float32)
    volume[8:14, 3:7, 10:17] = 1.0
    volume[15:18, 2:5, 5:9] = 2.0
    angles = np.linspace(-60.0, 60.0, 9)
    measured = project(volume, angles) + rng.normal(0, 0.05, (9, 10, 24)).astype(np.float32)
    return measured.astype(np.float32), angles


def test_ten_plus_ten_warm_iterations_are_twenty_bit_for_bit(series):
    measured, angles = series
    twenty = reconstruct(measured, angles, iterations=20, threads=1)
    ten = reconstruct(measured, angles, iterations=10, threads=1)
    resumed = reconstruct(measured, angles, iterations=10, threads=1, initial=ten)
    np.testing.assert_array_equal(resumed, twenty)
    assert not np.array_equal(ten, twenty)  # the second ten iterations did change the volume


def test_a_bad_start_is_named(series):
    measured, angles = series
    with pytest.raises(ValueError, match=r"initial.shape=\(24, 24, 24\): expected a finite"):
        reconstruct(measured, angles, initial=np.zeros((24, 24, 24)))
    with pytest.raises(ValueError, match="initial: a warm start needs method='sirt'"):
        reconstruct(measured, angles, method="cgls", initial=np.zeros((24, 10, 24)))
