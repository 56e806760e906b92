"""Detection by the measurement (models.atom_selection): the tilt series keeps true atoms only."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from models.atom_selection import SelectionConfig, detection_probability, select_atoms
from simgen.physics.geometry import volume_center
from simgen.physics.imaging import simulate_tilt_series

SIZE, SAMPLING = 32, 0.4
CENTER = volume_center(SIZE, SAMPLING)
ANGLES = np.linspace(-70.0, 70.0, 15)


def _sample(dose, rng):
    true = np.array(
        [
            [CENTER - 2.0, CENTER, CENTER],
            [CENTER + 2.0, CENTER, CENTER],
            [CENTER, CENTER + 2.2, CENTER - 1.0],
            [CENTER, CENTER - 2.2, CENTER + 1.0],
        ]
    )
    elements = ["Pt", "Pt", "Pd", "Pt"]
    clean = simulate_tilt_series(Atoms(elements, positions=true), ANGLES, size=SIZE, sampling=SAMPLING)
    counts = rng.poisson(clean * dose).astype(np.float32)
    sample = {
        "tilt_series": counts,
        "angles": ANGLES.astype(np.float32),
        "sampling": SAMPLING,
        "dose": float(dose),
        "background": 0.0,
        "read_noise": 0.0,
    }
    return sample, true, elements


def test_false_candidates_in_empty_space_are_removed_and_true_atoms_kept():
    rng = np.random.default_rng(0)
    sample, true, elements = _sample(2000.0, rng)
    false = np.array([[CENTER + 3.5, CENTER + 3.5, CENTER + 3.0], [CENTER - 3.5, CENTER - 3.0, CENTER - 3.5]])
    candidates = np.vstack([true, false])
    result = select_atoms(sample, candidates, elements + ["Pt", "Pt"])
    assert result.keep.tolist() == [True] * 4 + [False] * 2
    # true atoms: strongly supported; false: no better than chance
    assert result.score[:4].min() > 10 and result.score[4:].max() < 3
    assert np.all(result.probability[:4] > 0.99) and np.all(result.probability[4:] < 0.01)
    assert result.amplitude[:4] == pytest.approx(1.0, abs=0.25)


def test_detection_probability_is_one_half_at_the_penalty():
    assert detection_probability(4.0, 16.0) == pytest.approx(0.5)
    assert detection_probability(0.0, 16.0) == pytest.approx(1 / (1 + np.exp(8)))


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="penalty"):
        SelectionConfig(penalty=-1)
    with pytest.raises(ValueError, match="prune"):
        SelectionConfig(prune=(4.0, 1.0))
    with pytest.raises(ValueError, match="prune"):
        SelectionConfig(penalty=9.0, prune=(16.0,))
