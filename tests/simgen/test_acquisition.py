"""Tilt schemes, per-projection doses and cumulative dose of simgen.physics.acquisition."""

from __future__ import annotations

import numpy as np
import pytest

from simgen.physics.acquisition import Acquisition, acquisition_order
from simgen.physics.geometry import rotate_positions


def test_dose_symmetric_odd_count():
    angles = [-60, -40, -20, 0, 20, 40, 60]
    # 0, +20, -20, +40, -40, +60, -60
    assert acquisition_order(angles, "dose_symmetric").tolist() == [3, 4, 2, 5, 1, 6, 0]


def test_dose_symmetric_even_count():
    angles = [-30, -10, 10, 30]
    # +10 (nearest 0, tie to +), -10, +30, -30
    assert acquisition_order(angles, "dose_symmetric").tolist() == [2, 1, 3, 0]


def test_dose_symmetric_asymmetric_ranges():
    # the negative side runs out after -20; the positive side continues alone
    assert acquisition_order([-20, 0, 20, 40, 60], "dose_symmetric").tolist() == [1, 2, 0, 3, 4]
    # the positive side runs out after +20
    assert acquisition_order([-60, -40, -20, 0, 20], "dose_symmetric").tolist() == [3, 4, 2, 1, 0]


def test_dose_symmetric_unsorted_storage_and_groups():
    angles = np.array([20, -20, 0, 40, -40])
    # 0 (index 2), +20 (0), -20 (1), +40 (3), -40 (4)
    assert acquisition_order(angles, "dose_symmetric").tolist() == [2, 0, 1, 3, 4]
    angles = np.arange(-60, 61, 10)  # index 6 is 0°
    # Hagen grouped: 0, +10, +20, -10, -20, +30, +40, -30, -40, +50, +60, -50, -60
    expected = [6, 7, 8, 5, 4, 9, 10, 3, 2, 11, 12, 1, 0]
    assert acquisition_order(angles, "dose_symmetric", group=2).tolist() == expected


def test_sequential_and_bidirectional():
    assert acquisition_order([10, -30, 30, -10], "sequential").tolist() == [1, 3, 0, 2]
    angles = [-60, -40, -20, 0, 20, 40, 60]
    assert acquisition_order(angles, "bidirectional").tolist() == [3, 4, 5, 6, 2, 1, 0]
    assert acquisition_order([-30, -10, 10, 30], "bidirectional").tolist() == [2, 3, 1, 0]
    # second branch starts at the angle nearest the start not yet taken
    assert acquisition_order(angles, "bidirectional", start_angle=-20).tolist() == [
        2,
        3,
        4,
        5,
        6,
        1,
        0,
    ]


def test_every_scheme_is_a_permutation():
    rng = np.random.default_rng(3)
    for _ in range(20):
        angles = rng.uniform(-70, 70, size=rng.integers(1, 30))
        for scheme in ("sequential", "bidirectional", "dose_symmetric"):
            order = acquisition_order(angles, scheme)
            assert sorted(order.tolist()) == list(range(len(angles)))


def test_explicit_order_is_validated():
    assert acquisition_order([0, 10, 20], [2, 0, 1]).tolist() == [2, 0, 1]
    for bad in ([0, 0, 1], [0, 1], [0, 1, 3], [0.5, 1, 2], ["a", "b", "c"]):
        with pytest.raises(ValueError, match="scheme="):
            acquisition_order([0, 10, 20], bad)
    with pytest.raises(ValueError, match="scheme='spiral'"):
        acquisition_order([0, 10], "spiral")
    with pytest.raises(ValueError, match="angles_deg="):
        acquisition_order([0, np.nan], "sequential")
    with pytest.raises(ValueError, match="group="):
        acquisition_order([0, 10], "dose_symmetric", group=0)


def test_cumulative_dose_is_running_sum_in_acquisition_order():
    acquisition = Acquisition(angles=[-20, 0, 20], order=[1, 2, 0], dose=[1.0, 2.0, 4.0])
    # acquired: 0° (dose 2), +20° (dose 4), -20° (dose 1)
    assert acquisition.cumulative_dose.tolist() == [6.0, 0.0, 2.0]
    assert acquisition.step.tolist() == [2, 0, 1]
    assert acquisition.total_dose == 7.0

    angles = np.linspace(-60, 60, 13)
    acquisition = Acquisition.from_scheme(angles, "dose_symmetric", dose=100.0, dose_profile="cos")
    running = 0.0
    for index in acquisition.order:
        assert acquisition.cumulative_dose[index] == pytest.approx(running, rel=1e-12)
        running += acquisition.dose[index]
    assert running == pytest.approx(acquisition.total_dose)


def test_dose_profiles():
    angles = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])
    uniform = Acquisition.from_scheme(angles, dose=50.0)
    assert uniform.dose.tolist() == [50.0] * 5
    base = Acquisition.from_scheme(angles, dose=50.0, dose_profile="cos")
    assert base.dose[2] == 50.0  # the base dose is the dose at 0°
    assert base.dose[0] == pytest.approx(100.0)  # 1/cos 60° = 2
    np.testing.assert_allclose(base.dose * np.cos(np.deg2rad(angles)), 50.0)
    total = Acquisition.from_scheme(angles, "bidirectional", total_dose=1000.0, dose_profile="cos")
    assert total.total_dose == pytest.approx(1000.0)
    np.testing.assert_allclose(total.dose / base.dose, total.dose[2] / 50.0)


def test_acquisition_errors_name_the_parameter():
    with pytest.raises(ValueError, match="dose=None, total_dose=None"):
        Acquisition.from_scheme([0, 10])
    with pytest.raises(ValueError, match="dose=1.0, total_dose=2.0"):
        Acquisition.from_scheme([0, 10], dose=1.0, total_dose=2.0)
    with pytest.raises(ValueError, match="dose=-1"):
        Acquisition.from_scheme([0, 10], dose=-1.0)
    with pytest.raises(ValueError, match="dose_profile='sec'"):
        Acquisition.from_scheme([0, 10], dose=1.0, dose_profile="sec")
    with pytest.raises(ValueError, match="angles_deg="):
        Acquisition.from_scheme([0, 90], dose=1.0, dose_profile="cos")
    with pytest.raises(ValueError, match="dose="):
        Acquisition(angles=[0, 10], order=[0, 1], dose=[1.0])


def test_beam_direction_is_z_after_rotation():
    acquisition = Acquisition.from_scheme([-50.0, 0.0, 35.0], dose=1.0)
    for index, angle in enumerate(acquisition.angles):
        beam = acquisition.beam_direction(index)
        rotated = rotate_positions(beam[None, :], angle, 0.0)[0]
        np.testing.assert_allclose(rotated, [0.0, 0.0, 1.0], atol=1e-12)
