"""The Cramér–Rao bound of atom positions (benchmark.crlb)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.crlb import RadialPSF, crlb_positions, spot_fisher

ANGLES = np.linspace(-70.0, 70.0, 29)
CENTRE = 31.5 * 0.4  # the volume centre of 64 voxels at 0.4 Å


def test_single_gaussian_spot_matches_the_closed_form():
    # A well-sampled Gaussian spot of N counts, Poisson only: σ_x = σ_y = s / √N.
    psf = RadialPSF.gaussian(0.5)
    fisher = spot_fisher([0.013, -0.021], 1000.0, 0.05, psf, size=128)
    bound = np.sqrt(np.diag(np.linalg.inv(fisher)))
    np.testing.assert_allclose(bound, 0.5 / np.sqrt(1000.0), rtol=1e-3)
    # read noise only makes it worse
    noisy = spot_fisher([0.013, -0.021], 1000.0, 0.05, psf, size=128, read_noise=1.0)
    assert np.all(np.sqrt(np.diag(np.linalg.inv(noisy))) > bound * 1.01)


@pytest.mark.parametrize(
    ("symbol", "z", "dose", "expected_pm"),
    [
        ("Pt", 78, 1e2, 7.7),
        ("Pt", 78, 316.0, 4.3),
        ("Pt", 78, 1e3, 2.4),
        ("Pt", 78, 1e4, 0.8),
        ("Fe", 26, 1e2, 19.8),
        ("Fe", 26, 1e3, 6.3),
    ],
)
def test_isolated_atom_bound_matches_the_cross_check(symbol, z, dose, expected_pm):
    bound = crlb_positions(
        np.array([[CENTRE, CENTRE, CENTRE]]), [z], ANGLES, dose, 0.4, 64, neighbours=False
    )
    assert bound.shape == (1,)
    assert bound[0] == pytest.approx(expected_pm, rel=0.1)


def test_bound_scales_as_one_over_root_dose_without_read_noise():
    pos = np.array([[CENTRE + 1.0, CENTRE - 0.7, CENTRE + 0.3]])
    low = crlb_positions(pos, [78], ANGLES, 100.0, 0.4, 64, neighbours=False)
    high = crlb_positions(pos, [78], ANGLES, 10000.0, 0.4, 64, neighbours=False)
    assert low[0] / high[0] == pytest.approx(10.0, rel=1e-6)


def test_neighbours_as_nuisance_never_lower_the_bound_and_vanish_when_far_apart():
    far = np.array([[CENTRE - 6, CENTRE - 5, CENTRE], [CENTRE + 6, CENTRE + 5, CENTRE]])
    joint = crlb_positions(far, [78, 26], ANGLES, 1e3, 0.4, 64)
    alone = crlb_positions(far, [78, 26], ANGLES, 1e3, 0.4, 64, neighbours=False)
    np.testing.assert_allclose(joint, alone, rtol=1e-9)
    # two atoms 1.5 Å apart along the beam overlap in the 0° projection and nearby angles
    close = np.array([[CENTRE, CENTRE, CENTRE - 0.75], [CENTRE, CENTRE, CENTRE + 0.75]])
    joint = crlb_positions(close, [78, 78], ANGLES, 1e3, 0.4, 64)
    alone = crlb_positions(close, [78, 78], ANGLES, 1e3, 0.4, 64, neighbours=False)
    assert np.all(joint > alone * 1.05)


def test_one_projection_cannot_locate_an_atom_in_depth():
    bound = crlb_positions(
        np.array([[CENTRE, CENTRE, CENTRE]]), [78], [0.0], 1e3, 0.4, 64, neighbours=False
    )
    assert np.isinf(bound[0])


def test_bad_input_names_the_parameter():
    pos = np.array([[CENTRE, CENTRE, CENTRE]])
    with pytest.raises(ValueError, match="dose="):
        crlb_positions(pos, [78], ANGLES, -1.0, 0.4, 64)
    with pytest.raises(ValueError, match="numbers.shape="):
        crlb_positions(pos, [78, 26], ANGLES, 1.0, 0.4, 64)
    with pytest.raises(ValueError, match="sampling="):
        crlb_positions(pos, [78], ANGLES, 1.0, 0.0, 64)


def test_aet_bench_crlb_prints_the_bound_of_each_sample(tmp_path, capsys):
    from ase import Atoms

    from benchmark.cli import main
    from simgen.sample import Sample
    from simgen.store import StoreLayout, consolidate, create_store, write_sample

    angles = np.linspace(-60.0, 60.0, 7).astype(np.float32)
    spec = {"name": "unit", "noise_models": {"shot": ["poisson", "read:sigma=2"]}}
    path = tmp_path / "s.zarr"
    layout = StoreLayout(1, n_angles=7, size=24, sampling=0.4)
    create_store(path, spec, layout, meta={"dose": [500.0], "noise_model": ["shot"]})
    positions = np.array([[4.6, 4.6, 4.6], [6.0, 4.0, 5.0]])
    atoms = Atoms(numbers=[78, 26], positions=positions)
    write_sample(
        path,
        0,
        Sample(
            atoms=atoms,
            tilt_series=np.zeros((7, 24, 24), np.float32),
            angles=angles,
            angles_true=angles,
            volume=np.zeros((24, 24, 24), np.float32),
            target=np.zeros((24, 24, 24), np.float32),
            meta={},
        ),
    )
    consolidate(path)
    assert main(["crlb", str(path)]) == 0
    out = capsys.readouterr().out
    expected = crlb_positions(
        positions.astype(np.float32),
        [78, 26],
        angles,
        500.0,
        0.4,
        24,
        read_noise=2.0,
        neighbours=False,
    )
    assert f"Pt {expected[0]:.2f}" in out and f"Fe {expected[1]:.2f}" in out
    from benchmark.detection import detectability, recovery_bound

    d_prime = detectability(
        positions.astype(np.float32), [78, 26], angles, 500.0, 0.4, 24, read_noise=2.0
    )
    assert f"recovery bound {100 * recovery_bound(d_prime):.1f}%" in out
