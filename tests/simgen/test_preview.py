"""Tests of the sample preview montage."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.data.colors import jmol_colors

from simgen.preview import preview
from simgen.sample import Sample

A, V = 5, 16


@pytest.fixture()
def store(tmp_path, make_store):
    volume = np.zeros((V, V, V), np.float32)
    volume[8, 4, 12] = 1.0
    atoms = Atoms("FePt", positions=[[6.0, 2.0, 4.0], [2.0, 6.0, 4.0]])
    angles = np.linspace(-60, 60, A).astype(np.float32)
    series = np.random.default_rng(0).poisson(20.0, (A, V, V)).astype(np.float32)
    sample = Sample(atoms, series, angles, angles, volume, volume, {})
    return make_store(
        tmp_path / "one.zarr",
        [sample],
        name="p",
        meta={"dose": [1e3], "morphology": ["sphere"]},
    )


def test_preview_writes_montage_with_atoms_coloured_by_element(store, tmp_path):
    import matplotlib.image

    out = preview(store, 0, tmp_path / "sub" / "p.png")
    image = matplotlib.image.imread(out)[..., :3]
    assert image.shape[:2] == (int(6.4 * 110), int(3.1 * 4 * 110))
    for z in (26, 78):  # Fe and Pt markers and legend entries in their Jmol colours
        distance = np.abs(image - jmol_colors[z][None, None, :].astype(np.float32)).max(axis=-1)
        assert (distance < 0.02).sum() > 10


def test_preview_rejects_bad_index(store, tmp_path):
    with pytest.raises(ValueError, match=r"index=1: expected a sample index in 0..0"):
        preview(store, 1, tmp_path / "p.png")
