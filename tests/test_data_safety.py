"""Data safety through the three CLIs: damaged data are never scored, writers never race, a
regenerated store is compared with a published manifest, and the same bytes come out whatever
CPU kernels numpy, OpenBLAS and numba pick (issue 27)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from benchmark.cli import main as bench_main
from models.cli import main as pann_main
from simgen.cli import main as simgen_main

TINY = ["--tilt=-30:30:3", "--size", "16", "--iterations", "2", "--noise", "none"]
REPO = Path(__file__).resolve().parents[1]


def _model(path: Path) -> Path:
    path.write_text("2\ntwo Pt atoms\nPt 0 0 0\nPt 2.7 0 0\n")
    return path


def _one_line_error(capsys, *fragments) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture()
def tiny_store(tmp_path):
    out = tmp_path / "tiny.zarr"
    assert (
        simgen_main(["simulate", str(_model(tmp_path / "pt2.xyz")), "--out", str(out), *TINY]) == 0
    )
    return out


def _corrupt_volume(store: Path) -> None:
    """Change one voxel of sample 0 through Zarr (a valid chunk, wrong bytes)."""
    root = zarr.open_group(str(store), mode="r+")
    volume = np.asarray(root["volume"][0])
    volume[0, 0, 0] += 1.0
    root["volume"][0] = volume


# ------------------------------------------------------------------ never score damaged data


def test_readers_refuse_a_sample_whose_checksum_fails(tiny_store, tmp_path, capsys):
    _corrupt_volume(tiny_store)
    run = ["run", "--method", "classical", "--data", str(tiny_store), "--split", "all"]
    assert bench_main([*run, "--out", str(tmp_path / "r.jsonl")]) == 2
    _one_line_error(capsys, "sample 0: 'volume': checksum mismatch")
    assert not (tmp_path / "r.jsonl").exists()
    assert pann_main(["predict", "--data", str(tiny_store), "--out", str(tmp_path / "p")]) == 2
    _one_line_error(capsys, "sample 0: 'volume': checksum mismatch")
    assert not (tmp_path / "p").exists()
    assert bench_main(["crlb", str(tiny_store)]) == 2
    _one_line_error(capsys, "sample 0: 'volume': checksum mismatch")
    sweep = ["sweep", "--store", str(tiny_store), "--split", "all", "--out", str(tmp_path / "s")]
    assert bench_main(sweep) == 2
    _one_line_error(capsys, "sample 0: 'volume': checksum mismatch")


def test_meta_and_complete_are_covered_by_the_manifest(tiny_store, tmp_path, capsys):
    """A lost meta/dose chunk used to pass verify and be scored as dose 0.0."""
    chunks = [
        p
        for p in (tiny_store / "meta" / "dose").rglob("*")
        if p.is_file() and p.name != "zarr.json"
    ]
    assert chunks
    for chunk in chunks:
        chunk.unlink()
    assert simgen_main(["verify", str(tiny_store)]) == 1
    out = capsys.readouterr().out
    assert "meta/dose: differs from manifest.json" in out, out
    run = ["run", "--method", "classical", "--data", str(tiny_store), "--split", "all"]
    assert bench_main([*run, "--out", str(tmp_path / "r.jsonl")]) == 2
    _one_line_error(capsys, "meta/dose: differs from manifest.json")


def test_a_nan_volume_is_an_error_not_an_empty_prediction(tmp_path, capsys):
    volume = np.zeros((16, 16, 16), np.float32)
    volume[3, 4, 5] = np.nan
    np.save(tmp_path / "v.npy", volume)
    argv = ["predict", "--volume", str(tmp_path / "v.npy"), "--sampling", "0.4"]
    assert pann_main([*argv, "--out", str(tmp_path / "p.xyz")]) == 2
    _one_line_error(capsys, "1 of 4096 voxels are NaN or infinite")
    assert not (tmp_path / "p.xyz").exists()


def test_verify_counts_the_missing_samples_of_a_partial_store(tiny_store, capsys):
    root = zarr.open_group(str(tiny_store), mode="r+")
    root["complete"][0] = False  # as a store still being generated
    assert simgen_main(["verify", str(tiny_store)]) == 1
    out = capsys.readouterr().out
    assert "(1 of 1 samples missing: not generated yet)" in out, out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"recovery_rate": 1.5}, "recovery_rate=1.5: expected a fraction in [0, 1]"),
        ({"precision": -0.1}, "precision=-0.1: expected a fraction in [0, 1]"),
        ({"coordinate_error_pm": -3.0}, "coordinate_error_pm=-3.0: expected a finite error >= 0"),
        ({"coordinate_error_pm": float("inf")}, "coordinate_error_pm=inf is not finite"),
    ],
)
def test_leaderboard_validates_every_record(tmp_path, capsys, change, message):
    good = {"method": "m", "index": 0, "dose": 100.0, "recovery_rate": 0.9, "precision": 0.8,
            "coordinate_error_pm": 20.0}  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "index": 1, **change}) + "\n")
    assert bench_main(["leaderboard", str(path), "--out", str(tmp_path / "board")]) == 2
    _one_line_error(capsys, f"results={str(path)!r} line 2", message)
    assert not (tmp_path / "board").exists()


# ------------------------------------------------------------------ writers honour each other's locks


def test_two_bench_runs_on_one_out_cannot_both_succeed(tiny_store, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    lock = tmp_path / ".r.jsonl.lock"  # held by a live process: this one
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    run = ["run", "--method", "classical", "--data", str(tiny_store), "--split", "all"]
    assert bench_main([*run, "--out", str(out)]) == 2
    _one_line_error(capsys, f"--out={str(out)!r}: another command is writing it")
    assert not out.exists()
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))  # stale
    assert bench_main([*run, "--out", str(out)]) == 0
    assert not lock.exists() and len(out.read_text().splitlines()) == 1


def _two_sample_store(tmp_path, make_store) -> Path:
    """A store of two identical tiny samples (one simulated through the CLI, written twice)."""
    import ase

    from simgen.sample import Sample
    from simgen.store import open_dataset

    one = tmp_path / "one.zarr"
    assert (
        simgen_main(["simulate", str(_model(tmp_path / "pt2.xyz")), "--out", str(one), *TINY]) == 0
    )
    s = open_dataset(one)[0]
    made = Sample(
        atoms=ase.Atoms(numbers=s["numbers"], positions=s["positions"]), tilt_series=s["tilt_series"],
        angles=s["angles"], angles_true=s["angles_true"], volume=s["volume"], target=s["target"],
        meta={},
    )  # fmt: skip
    store = make_store(tmp_path / "two.zarr", [made, made], meta={"dose": [1e4, 1e4]})
    return store


def test_bench_run_resumes_an_interrupted_run(tmp_path, make_store, monkeypatch):
    """Finished samples survive an interrupt; the rerun continues and gives the same records."""
    import benchmark.runner as runner

    store = _two_sample_store(tmp_path, make_store)
    out = tmp_path / "r.jsonl"
    run = [
        "run",
        "--method",
        "classical",
        "--data",
        str(store),
        "--split",
        "all",
        "--out",
        str(out),
    ]
    original = runner._run_one
    calls = []

    def interrupted(method, view, position, *args):
        calls.append(position)
        if position == 1 and len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second sample runs
        return original(method, view, position, *args)

    monkeypatch.setattr(runner, "_run_one", interrupted)
    assert bench_main(run) == 130
    assert not out.exists() and (tmp_path / ".r.jsonl.partial").is_file()
    assert bench_main(run) == 0  # continues: only sample 1 runs again
    assert calls == [0, 1, 1]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1]
    assert records[0]["recovery_rate"] == records[1]["recovery_rate"]
    assert not (tmp_path / ".r.jsonl.partial").exists()

    # the same with --models: the prediction files of finished samples resume too
    calls.clear()
    out.unlink()
    models = tmp_path / "models"
    with_models = [*run, "--models", str(models)]
    assert bench_main(with_models) == 130
    staging = tmp_path / ".models.partial"
    assert not models.exists() and (staging / "0.xyz").is_file()
    assert not (staging / "1.xyz").exists()
    assert bench_main(with_models) == 0
    assert calls == [0, 1, 1]
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == [
        "0.xyz",
        "1.xyz",
    ]
    assert not staging.exists() and not (models / ".resume_key.json").exists()
    def scores(rs):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rs]

    assert scores(json.loads(line) for line in out.read_text().splitlines()) == scores(records)
    # a folder of that name that is not ours is refused, never emptied
    (tmp_path / "mine").mkdir()
    (tmp_path / ".mine.partial").mkdir()
    (tmp_path / ".mine.partial" / "notes.txt").write_text("mine")
    other = [*run[:-1], str(tmp_path / "r2.jsonl"), "--models", str(tmp_path / "mine2")]
    (tmp_path / ".mine2.partial").mkdir()
    (tmp_path / ".mine2.partial" / "notes.txt").write_text("mine")
    assert bench_main(other) == 2
    assert (tmp_path / ".mine2.partial" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ clear messages


@pytest.mark.parametrize(
    "main, argv, fragment",
    [
        (simgen_main, ["simulate", "--bogus"], "the following arguments are required: --out"),
        (simgen_main, ["verify", "s.zarr", "--bogus"], "unrecognized arguments: --bogus"),
        (pann_main, ["predict", "--volume"], "argument --volume: expected one argument"),
        (bench_main, ["run", "--method"], "argument --method: expected one argument"),
    ],
)
def test_argparse_errors_are_one_line(main, argv, fragment, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    _one_line_error(capsys, fragment)


# ------------------------------------------------------------------ the same bytes everywhere


def test_verify_against_a_published_manifest_names_the_first_difference(tmp_path, capsys):
    model = _model(tmp_path / "pt2.xyz")
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    noisy = [*TINY[:-2], "--noise", "poisson", "--dose", "1e3"]
    assert simgen_main(["simulate", str(model), "--out", str(a), *noisy, "--seed", "1"]) == 0
    assert simgen_main(["simulate", str(model), "--out", str(b), *noisy, "--seed", "1"]) == 0
    capsys.readouterr()
    assert simgen_main(["verify", str(b), "--against", str(a / "manifest.json")]) == 0
    assert "all samples match the manifest and" in capsys.readouterr().out
    c = tmp_path / "c.zarr"
    assert simgen_main(["simulate", str(model), "--out", str(c), *noisy, "--seed", "2"]) == 0
    capsys.readouterr()
    assert simgen_main(["verify", str(c), "--against", str(a / "manifest.json")]) == 1
    out = capsys.readouterr().out
    assert (
        f"first difference: sample 0: tilt_series differs (also: volume) from {str(a / 'manifest.json')!r}"
        in out
    ), out
    assert f"library versions: the same as {str(a / 'manifest.json')!r}" in out, out
    # a manifest written with another numpy: the difference names it
    published = json.loads((a / "manifest.json").read_text())
    ours = published["versions"]["numpy"]
    published["versions"]["numpy"] = "0.0.1"
    (tmp_path / "other.json").write_text(json.dumps(published))
    assert simgen_main(["verify", str(c), "--against", str(tmp_path / "other.json")]) == 1
    out = capsys.readouterr().out
    assert f"numpy {ours} here, 0.0.1 there" in out, out
    (tmp_path / "bad.json").write_text("{not json")
    assert simgen_main(["verify", str(c), "--against", str(tmp_path / "bad.json")]) == 1
    assert "not a valid manifest" in capsys.readouterr().out


#: Two CPU-dispatch settings on one machine: everything numpy, OpenBLAS, numba and the C library
#: choose by CPU, at their defaults and pinned to the oldest kernels (no AVX2/AVX-512, one thread).
_DISPATCH = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL X86_V3",
    "OPENBLAS_CORETYPE": "Prescott",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_CPU_NAME": "generic",
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F",
}


def _simulate_checksums(out: Path, env: dict) -> dict:
    argv = [
        sys.executable, "-m", "simgen.cli", "simulate", "--particle", "cuboctahedron",
        "--composition", "L10:FePt", "--size-nm", "2.2", "--out", str(out), "--size", "64",
        "--tilt=-60:60:15", "--dose", "2e3", "--noise", "none", "--iterations", "2",
        "--seed", "3",
    ]  # fmt: skip
    done = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert done.returncode == 0, done.stderr
    root = zarr.open_group(str(out), mode="r")
    names = list(root.attrs["checksummed_arrays"])
    checksums = np.asarray(root["checksums"][0])
    return {name: bytes(checksums[k]).hex() for k, name in enumerate(names)}


@pytest.mark.slow  # two simulations in fresh processes
def test_the_same_bytes_under_another_cpu_dispatch(tmp_path):
    default = _simulate_checksums(tmp_path / "a.zarr", {})
    pinned = _simulate_checksums(tmp_path / "b.zarr", _DISPATCH)
    differing = [name for name in default if default[name] != pinned[name]]
    assert differing == [], f"arrays that depend on the CPU kernels: {differing}"


# ------------------------------------------------------------------ bounded before the work


def _npy_header_only(path: Path, shape) -> Path:
    from numpy.lib import format as npy_format

    with open(path, "wb") as handle:
        npy_format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": shape}
        )
        handle.write(b"\0" * 64)
    return path


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--size-nm", "1000"], ["--size-nm=1000.0:", "needs about", "this machine has"]),
        (["--iterations", "1000000000000"], ["--iterations=1000000000000: expected at most 10000"]),
        (["--tilt", "-70:70:100000"], ["100000 projections; expected at most 721"]),
        (["--seed", "-1"], ["--seed=-1: expected a non-negative integer"]),
    ],
)
def test_simulate_is_bounded_before_the_work(tmp_path, capsys, argv, fragments):
    out = tmp_path / "s.zarr"
    try:
        code = simgen_main(["simulate", "--particle", "cuboctahedron", "--out", str(out), *argv])
    except SystemExit as stop:  # argparse's own checks (a bad --seed) exit
        code = stop.code
    assert code == 2
    _one_line_error(capsys, *fragments)
    assert not out.exists()


def test_damaged_or_huge_input_files_are_named(tmp_path, capsys):
    (tmp_path / "angles.txt").write_text("-30\n0\n30\n")
    imp = ["--angles", str(tmp_path / "angles.txt"), "--sampling", "0.5"]
    huge = _npy_header_only(tmp_path / "huge.npy", (10**5, 10**5, 10**5))
    short = _npy_header_only(tmp_path / "short.npy", (3, 16, 16))
    np.save(tmp_path / "empty.npy", np.zeros((0, 16, 16), np.float32))
    (tmp_path / "bad.mrc").write_bytes(b"\0" * 2048)
    (tmp_path / "bad.tif").write_bytes(b"II*\0 not a tiff")
    cases = {
        huge: "NPY header claims shape (100000, 100000, 100000) (1e+15 values",
        short: "not a valid NPY file (the header claims shape (3, 16, 16), 3072 bytes",
        tmp_path / "empty.npy": "an empty NPY array (shape (0, 16, 16))",
        tmp_path / "bad.mrc": "not a valid MRC file (",
        tmp_path / "bad.tif": "TIFF",
    }
    for path, fragment in cases.items():
        out = tmp_path / f"{path.stem}.zarr"
        assert simgen_main(["import", str(path), *imp, "--out", str(out)]) == 2
        _one_line_error(capsys, f"{str(path)!r}", fragment)
        assert not out.exists()


def test_a_catalogue_is_bounded_at_validate(tmp_path, capsys):
    catalogue = tmp_path / "c.yaml"
    catalogue.write_text(
        (REPO / "datasets.yaml").read_text().replace("replicas: 1}", "replicas: 1000000000}", 1)
    )
    assert simgen_main(["validate", str(catalogue)]) == 2
    _one_line_error(
        capsys, "dataset 'smoke': samples.grid.replicas=1000000000", "at most 1e+07 samples"
    )
    out = tmp_path / "s.zarr"
    assert (
        simgen_main(
            ["generate", "smoke", "--config", str(catalogue), "--out", str(out), "--limit", "1"]
        )
        == 2
    )
    _one_line_error(capsys, "samples.grid.replicas=1000000000")
    assert not out.exists()


def test_weights_that_are_torchscript_or_junk_say_what_they_are(tmp_path, capsys):
    import torch

    class Twice(torch.nn.Module):
        def forward(self, x):
            return x * 2

    torch.jit.trace(Twice(), torch.ones(2)).save(str(tmp_path / "net.pt"))
    (tmp_path / "junk.pt").write_bytes(b"hello world")
    np.save(tmp_path / "v.npy", np.zeros((16, 16, 16), np.float32))
    vol = ["predict", "--volume", str(tmp_path / "v.npy"), "--sampling", "0.4"]
    for name, fragment in (
        ("net.pt", "a TorchScript module"),
        ("junk.pt", "not a torch.save file"),
    ):
        weights = ["--weights", str(tmp_path / name), "--out", str(tmp_path / "p.xyz")]
        assert pann_main([*vol, *weights]) == 2
        _one_line_error(capsys, fragment)


def test_a_method_failing_on_one_sample_is_one_line_naming_it(tmp_path, make_store, monkeypatch, capsys):
    """A method that raises on one sample stops the run with one line naming the method, the
    sample and the error; the finished samples are kept and the same command continues."""
    from benchmark.methods.classical import ClassicalMethod

    store = _two_sample_store(tmp_path, make_store)
    original = ClassicalMethod.predict
    calls = []

    def fails_once(self, sample):
        calls.append(sample["index"])
        if len(calls) == 2:
            raise ValueError("log_cross_sections: expected finite values")
        return original(self, sample)

    monkeypatch.setattr(ClassicalMethod, "predict", fails_once)
    out = tmp_path / "r.jsonl"
    run = ["run", "--method", "classical", "--data", str(store), "--split", "all", "--out", str(out)]
    capsys.readouterr()
    assert bench_main(run) == 1
    _one_line_error(
        capsys,
        "classical failed on sample 1: ValueError: log_cross_sections: expected finite values",
        "1 finished sample(s) kept: the same command continues",
    )
    assert not out.exists()
    assert bench_main(run) == 0 and calls == [0, 1, 1]
    assert len(out.read_text().splitlines()) == 2
