"""Tests of distributed generation on the `smoke` dataset: determinism across worker counts,
kill-and-resume, the lock, failures, limits, inspection and the same-particle design."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from simgen.catalog import DatasetSpec, get_dataset
from simgen.engine import StoreLockedError, acquire_lock, generate, release_lock
from simgen.store import inspect_store, open_dataset, verify_store

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "datasets.yaml"
ARRAYS = ("tilt_series", "angles", "angles_true", "volume", "target", "positions", "numbers")


@pytest.fixture(scope="module")
def smoke():
    return get_dataset("smoke", CATALOG)


@pytest.fixture(scope="module")
def reference(smoke, tmp_path_factory):
    """The smoke dataset generated on a LocalCluster with one worker."""
    out = tmp_path_factory.mktemp("ref") / "smoke.zarr"
    report = generate(smoke, out, workers=1, progress=False)
    assert report.failed == [] and report.n_written == smoke.n_samples
    return out


def _assert_same_samples(a: Path, b: Path) -> None:
    da, db = open_dataset(a), open_dataset(b)
    assert len(da) == len(db) > 0
    for i in range(len(da)):
        sa, sb = da[i], db[i]
        for name in ARRAYS:
            assert sa[name].dtype == sb[name].dtype
            assert sa[name].tobytes() == sb[name].tobytes(), (i, name)
    assert inspect_store(a)["dataset_sha256"] == inspect_store(b)["dataset_sha256"] != ""


@pytest.mark.slow  # Dask LocalCluster (the reference store)
def test_reference_store_content(reference, smoke):
    rows = smoke.plan_rows()
    info = inspect_store(reference)
    assert (info["n_complete"], info["n_missing"], info["n_failed"]) == (smoke.n_samples, 0, 0)
    expected_splits = {s: sum(r["split"] == s for r in rows) for s in {r["split"] for r in rows}}
    assert info["counts"]["split"] == expected_splits
    ds = open_dataset(reference)
    test = ds.filter(split="test")
    assert list(test.indices) == [r["index"] for r in rows if r["split"] == "test"]
    assert {s["morphology"] for s in test} == {"sphere"}  # held out
    sample = ds[0]
    assert sample["tilt_series"].shape == (smoke.n_angles, smoke.size, smoke.size)
    assert sample["volume"].shape == (smoke.size,) * 3
    np.testing.assert_allclose(sample["angles"], smoke.angles, atol=1e-5)
    assert len(sample["positions"]) == sample["n_atoms"] > 0
    # atoms lie inside the volume (Å, voxel k centred at k·sampling)
    assert (
        sample["positions"].min() >= 0
        and sample["positions"].max() <= (smoke.size - 1) * smoke.sampling
    )
    assert verify_store(reference) == []
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["n_complete"] == smoke.n_samples and len(manifest["samples"]) == smoke.n_samples


@pytest.mark.slow  # Dask LocalCluster (the reference store)
def test_two_workers_give_identical_store(reference, smoke, tmp_path):
    report = generate(smoke, tmp_path / "two.zarr", workers=2, progress=False)
    assert report.workers == 2 and report.failed == []
    _assert_same_samples(reference, tmp_path / "two.zarr")


@pytest.mark.slow  # SIGKILL of a real generate on a Dask cluster
def test_sigkill_then_resume_is_byte_identical(reference, smoke, tmp_path):
    out = tmp_path / "killed.zarr"
    code = (
        "from simgen.catalog import get_dataset; from simgen.engine import generate; "
        f"generate(get_dataset('smoke', {str(CATALOG)!r}), {str(out)!r}, workers=1, progress=False)"
    )
    env = {**os.environ, "AET_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            flags = out / "complete" / "c"
            if (
                flags.is_dir() and len(list(flags.iterdir())) >= 1
            ):  # one chunk file per written flag
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "generation finished before it could be killed"
    killed = inspect_store(out)
    assert 1 <= killed["n_complete"] < smoke.n_samples
    assert (out / ".generate.lock").exists()  # stale: its pid is dead, the next run takes it over
    # a half-written sample: garbage in a chunk of a sample whose flag is not set
    first_missing = killed["missing"][0]
    chunk = out / "volume" / "c" / str(first_missing) / "0" / "0" / "0"
    chunk.parent.mkdir(parents=True, exist_ok=True)
    chunk.write_bytes(b"half-written")

    report = generate(smoke, out, scheduler="synchronous", progress=False)
    assert report.n_skipped == killed["n_complete"]
    assert report.n_written == smoke.n_samples - killed["n_complete"] and report.failed == []
    assert not (out / ".generate.lock").exists()
    assert verify_store(out) == []
    _assert_same_samples(reference, out)


def test_concurrent_generate_is_refused(smoke, tmp_path):
    out = tmp_path / "locked.zarr"
    lock = acquire_lock(out)
    try:
        with pytest.raises(
            StoreLockedError, match=rf"another generate is running \(pid {os.getpid()}"
        ):
            generate(smoke, out, scheduler="synchronous", progress=False)
    finally:
        release_lock(lock)
    # a lock left by a dead process on this host is stale and taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".generate.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    report = generate(smoke, out, scheduler="synchronous", limit=1, progress=False)
    assert report.n_written == 1 and not (out / ".generate.lock").exists()


@pytest.mark.slow  # Dask LocalCluster (the reference store)
def test_failed_sample_is_recorded_then_recovered(reference, smoke, tmp_path):
    out = tmp_path / "failing.zarr"
    plan = smoke.plan()
    plan[2] = dataclasses.replace(plan[2], size=8)  # the particle cannot fit an 8-voxel volume
    report = generate(smoke, out, scheduler="synchronous", plan=plan, retries=1, progress=False)
    assert [i for i, _ in report.failed] == [2] and "does not fit" in report.failed[0][1]
    assert report.n_written == smoke.n_samples - 1
    info = inspect_store(out)
    assert info["n_failed"] == 1 and info["failed"][0][0] == 2 and info["missing"] == [2]
    assert "failed sample 2" in report.summary()
    # rerun with the right plan: only sample 2 is simulated, and the failure record is cleared
    report = generate(smoke, out, scheduler="synchronous", progress=False)
    assert (report.n_written, report.n_skipped, report.failed) == (1, smoke.n_samples - 1, [])
    assert inspect_store(out)["n_failed"] == 0
    _assert_same_samples(reference, out)


def test_limit_and_spec_mismatch(smoke, tmp_path):
    out = tmp_path / "limited.zarr"
    report = generate(smoke, out, scheduler="synchronous", limit=2, progress=False)
    assert (report.n_requested, report.n_written) == (2, 2)
    info = inspect_store(out)
    assert info["n_complete"] == 2 and info["missing"] == list(range(2, smoke.n_samples))
    other = DatasetSpec.from_dict("smoke", {**smoke.to_dict(), "seed": 8})
    with pytest.raises(ValueError, match="generated from a different spec"):
        generate(other, out, scheduler="synchronous", progress=False)
    with pytest.raises(ValueError, match="limit=0"):
        generate(smoke, out, limit=0)


def test_same_particle_across_doses(smoke, tmp_path):
    data = smoke.to_dict()
    data["doses"] = [1.0e3, 1.0e4]
    data["noise_models"] = {"poisson": ["poisson"]}
    data["samples"] = {
        "grid": {"axes": ["morphology", "dose"], "replicas": 1},
        "same_structure_across": ["dose"],
    }
    data["split"] = {"fractions": {"test": 1.0}}
    spec = DatasetSpec.from_dict("paired", data)
    generate(spec, tmp_path / "paired.zarr", scheduler="synchronous", progress=False)
    ds = open_dataset(tmp_path / "paired.zarr")
    for morphology in spec.morphologies:
        low, high = (
            ds.filter(morphology=morphology, dose=1e3)[0],
            ds.filter(morphology=morphology, dose=1e4)[0],
        )
        np.testing.assert_array_equal(low["positions"], high["positions"])
        np.testing.assert_array_equal(low["numbers"], high["numbers"])
        # Poisson counts scale with dose: ten times the dose, about ten times the counts
        ratio = high["tilt_series"].sum() / low["tilt_series"].sum()
        assert 9.5 < ratio < 10.5
    positions = [ds.filter(morphology=m, dose=1e3)[0]["positions"] for m in spec.morphologies]
    assert positions[0].shape != positions[1].shape or not np.array_equal(*positions)
