"""Usable outside the repository: shipped catalogue, multislice/PRISM from the CLI with defaults,
imported predictions in the user's frame, progress bars."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.cli import main as pann_main
from simgen.catalog import PACKAGED_CATALOG, default_catalog_path, load_catalog
from simgen.cli import main as simgen_main
from simgen.physics.calibration import max_scattering_angle, wavelength
from simgen.physics.imaging import Microscope, default_potential_sampling
from simgen.store import open_dataset

REPO = Path(__file__).resolve().parents[1]


def _cli(args, cwd, **env):
    environ = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=environ, capture_output=True, text=True
    )


def test_catalogue_is_shipped_as_a_single_source(tmp_path, monkeypatch):
    # simgen/data/datasets.yaml is the repository's datasets.yaml (a link), not a copy that drifts
    assert PACKAGED_CATALOG.resolve() == (REPO / "datasets.yaml").resolve()
    monkeypatch.chdir(tmp_path)
    assert default_catalog_path() == PACKAGED_CATALOG
    (tmp_path / "datasets.yaml").write_text("datasets: {}\n")
    assert default_catalog_path() == Path("datasets.yaml")  # the user's own file wins


def test_generate_dry_run_and_help_from_another_folder(tmp_path):
    result = _cli(["simgen.cli", "generate", "demo", "--dry-run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dataset: demo" in result.stdout and "samples: 240" in result.stdout
    assert not any(tmp_path.iterdir())
    helptext = _cli(["benchmark.cli", "sweep", "--help"], cwd=tmp_path).stdout
    assert "shipped with simgen" in helptext


def test_default_potential_sampling_resolves_the_detector():
    micro = Microscope()  # 200 kV, 200 mrad outer angle: 0.05 Å resolves only 167 mrad
    assert max_scattering_angle(micro.energy, 0.05) < micro.detector_outer
    d = default_potential_sampling(micro)
    assert d == pytest.approx(0.95 * wavelength(200e3) / 0.6) and d == pytest.approx(
        0.03971, abs=1e-5
    )
    assert max_scattering_angle(micro.energy, d) >= micro.detector_outer
    # a detector that 0.05 Å already resolves keeps the coarser (cheaper) sampling
    assert default_potential_sampling(Microscope(detector_outer=100.0)) == 0.05


def test_every_prism_validation_sample_passes_the_checks_before_abtem():
    """What made prism-validation fail: the detector angle; and every particle must fit."""
    from simgen import structures
    from simgen.physics.geometry import volume_center
    from simgen.physics.imaging import _validate_atoms

    spec = load_catalog(PACKAGED_CATALOG)["prism-validation"]
    for sample in spec.plan():
        micro = sample.microscope
        assert sample.mode == "prism"
        d = default_potential_sampling(micro)
        assert max_scattering_angle(micro.energy, d) >= micro.detector_outer
        rng = np.random.default_rng(0)
        atoms = structures.build_particle(
            sample.morphology, sample.composition, sample.size_nm, rng=rng, orientation="random"
        )
        atoms = structures.place_in_volume(atoms, sample.size, sample.sampling)
        centre = volume_center(sample.size, sample.sampling)
        _validate_atoms(atoms, np.asarray(sample.angles), sample.size, sample.sampling, centre)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["multislice", "prism"])
def test_abtem_modes_run_from_the_cli_with_defaults(tmp_path, mode):
    model = tmp_path / "pt.xyz"
    model.write_text("1\none Pt atom\nPt 0 0 0\n")
    out = tmp_path / f"{mode}.zarr"
    args = [str(model), "--mode", mode, "--out", str(out), "--tilt=-30:30:2", "--size", "8"]
    assert simgen_main(["simulate", *args, "--noise", "none", "--iterations", "2"]) == 0
    series = open_dataset(out)[0]["tilt_series"]
    # one Pt atom at the centre: every projection holds the same (positive) signal
    sums = series.sum(axis=(1, 2))
    assert np.all(sums > 0) and sums[0] == pytest.approx(sums[1], rel=1e-3)


@pytest.mark.slow  # end-to-end CLI runs in subprocesses
def test_progress_bars_on_simulate_and_switch_off(tmp_path):
    model = tmp_path / "pt2.xyz"
    model.write_text("2\ntwo Pt atoms\nPt 0 0 0\nPt 2.7 0 0\n")
    args = ["simgen.cli", "simulate", str(model), "--tilt=-30:30:3", "--size", "16"]
    args += ["--iterations", "2", "--noise", "none"]
    on = _cli([*args, "--out", "a.zarr"], cwd=tmp_path, AET_PROGRESS="1")
    off = _cli([*args, "--out", "b.zarr"], cwd=tmp_path, AET_PROGRESS="0")
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert "linear HAADF" in on.stderr and "sirt" in on.stderr
    assert off.stderr == ""


@pytest.mark.slow  # end-to-end CLI runs in subprocesses
def test_imported_predictions_are_written_in_the_users_frame(tmp_path):
    """--tilt-axis x swaps axes in the store; predictions come back in the input model's frame."""
    from simgen.importer import to_input_frame

    # A simulated particle's tilt series (tilt axis along y), turned so the axis runs along x:
    # real atoms to predict, since pure noise yields none.
    particle = tmp_path / "particle.zarr"
    simulate = ["simulate", "--particle", "cuboctahedron", "--size-nm", "0.8", "--size", "24"]
    simulate += ["--tilt=-60:60:13", "--iterations", "20", "--out", str(particle)]
    assert simgen_main(simulate) == 0
    simulated = open_dataset(particle)[0]
    np.save(tmp_path / "series.npy", np.swapaxes(simulated["tilt_series"], 1, 2))
    np.savetxt(tmp_path / "angles.txt", simulated["angles"])
    truth = np.array([[1.0, -2.0, 0.5], [-1.5, 0.5, 2.0], [0.0, 2.5, -1.0]])
    (tmp_path / "truth.xyz").write_text(
        "3\nuser model\n" + "".join(f"Pt {x} {y} {z}\n" for x, y, z in truth)
    )
    store = tmp_path / "imp.zarr"
    args = ["import", str(tmp_path / "series.npy"), "--angles", str(tmp_path / "angles.txt")]
    args += ["--sampling", "0.4", "--tilt-axis", "x", "--truth", str(tmp_path / "truth.xyz")]
    assert simgen_main([*args, "--iterations", "20", "--out", str(store)]) == 0
    ds = open_dataset(store)
    frame = ds.attrs["input_frame"]
    stored = ds[0]["positions"]
    assert not np.allclose(stored - stored.mean(0), truth - truth.mean(0))  # axes swapped
    np.testing.assert_allclose(to_input_frame(stored, frame), truth, atol=1e-5)
    # pann predict writes the same transform back
    out = tmp_path / "pred"
    assert pann_main(["predict", "--data", str(store), "--out", str(out)]) == 0
    header = (out / "0.xyz").read_text().splitlines()[1]
    assert "input model" in header
    import ase.io

    from models.pann import PannModel
    from models.weights import DEFAULT_WEIGHTS

    sample = ds[0]
    expected = PannModel.load(DEFAULT_WEIGHTS).predict(
        sample["volume"], float(sample["sampling"]), list(sample["elements"])
    )
    assert len(expected.positions) > 0  # else the comparison below would be vacuous
    written = ase.io.read(out / "0.xyz").get_positions()
    np.testing.assert_allclose(written, to_input_frame(expected.positions, frame), atol=1e-6)
    # aet-bench run --models writes the same frame (scores stay in the volume frame)
    from benchmark.cli import main as bench_main
    from benchmark.methods import get_method

    models = tmp_path / "models"
    run = ["run", "--method", "classical", "--data", str(store), "--out", str(tmp_path / "r.jsonl")]
    assert bench_main([*run, "--models", str(models)]) == 0
    classical = get_method("classical").predict(dict(sample))
    assert len(classical.positions) > 0
    np.testing.assert_allclose(
        ase.io.read(models / "0.xyz").get_positions(),
        to_input_frame(classical.positions, frame),
        atol=1e-6,
    )
