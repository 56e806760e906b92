"""Bad input through the three CLIs: a one-line error naming the parameter, a non-zero exit and
nothing written; or, where the input is valid but unusual, the right answer (issue 10)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main as bench_main
from models.cli import main as pann_main
from simgen.cli import main as simgen_main

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, prog: str, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: error:"), err
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    """One cuboctahedron of 13 Pt atoms in a 20³ volume (seconds)."""
    out = tmp_path_factory.mktemp("tiny") / "tiny.zarr"
    argv = ["simulate", "--particle", "cuboctahedron", "--size-nm", "0.8", "--sampling", "0.5"]
    argv += ["--size", "20", "--tilt=-60:60:5", "--iterations", "5", "--out", str(out)]
    assert simgen_main(argv) == 0
    return out


@pytest.fixture()
def model_files(tmp_path) -> dict[str, Path]:
    import ase
    import ase.io

    files = {"truth": tmp_path / "truth.xyz", "empty": tmp_path / "empty.xyz"}
    ase.io.write(files["truth"], ase.Atoms("Pt2", positions=[[0, 0, 0], [2.77, 0, 0]]))
    ase.io.write(files["empty"], ase.Atoms(), format="extxyz")
    files["nan"] = tmp_path / "nan.xyz"
    files["nan"].write_text("2\n\nPt 0 0 0\nPt nan 0 0\n")
    files["angles"] = tmp_path / "angles.txt"
    files["angles"].write_text("-60\n0\n100\n")
    return files


# ------------------------------------------------------------------ simgen simulate


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["{truth}", "--composition", "L10:FePt"], ["--composition", "--particle"]),
        (["{truth}", "--size-nm", "3"], ["--size-nm"]),
        (["--particle", "cuboctahedron", "--size", "0"], ["--size=0", "at least 8"]),
        (["--particle", "cuboctahedron", "--angles", "{angles}"], ["--angles=", "100°", "-90..90"]),
        (["--particle", "cuboctahedron", "--tilt=-100:60:5"], ["--tilt"]),
        (["--particle", "cuboctahedron", "--sampling", "1e-6"], ["--sampling=1e-06", "EiB"]),
        (["--particle", "cuboctahedron", "--sampling", "100"], ["--sampling=100", "at most 1.39"]),
        (["--particle", "cuboctahedron", "--size", "100000"], ["--size=100000", "memory"]),
        (["{nan}"], ["nan.xyz", "atom 2", "NaN"]),
    ],
)
def test_simulate_refuses_bad_input_before_work(tmp_path, capsys, model_files, argv, fragments):
    argv = [a.format(**model_files) for a in argv]
    code = simgen_main(["simulate", *argv, "--out", str(tmp_path / "s.zarr")])
    assert code == 2
    _one_line_error(capsys, "simgen", *fragments)
    assert not (tmp_path / "s.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.zarr")]


# ------------------------------------------------------------------ simgen verify / validate


def test_verify_without_manifest_is_an_error(tmp_path, capsys, tiny_store):
    store = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, store)
    assert simgen_main(["verify", str(store)]) == 0
    assert "all samples match" in capsys.readouterr().out
    (store / "manifest.json").unlink()
    assert simgen_main(["verify", str(store)]) == 1
    out = capsys.readouterr().out
    assert "manifest.json: missing" in out and "all samples match" not in out


@pytest.mark.parametrize(
    "edit, name, fragments",
    [
        (lambda t: t.replace("  dose-sweep-poisson:", "  dose-sweep:"), "smoke", ["'dose-sweep'"]),
        (
            lambda t: t.replace("    seed: 7\n", "    seed: 7\n    seed: 8\n", 1),
            "smoke",
            ["'seed'"],
        ),
        (lambda t: t.replace("  smoke:", '  "../x":'), "../x", ["'../x'", "simple name"]),
    ],
)
def test_catalogue_refuses_duplicate_and_unsafe_names(tmp_path, capsys, edit, name, fragments):
    config = tmp_path / "datasets.yaml"
    config.write_text(edit((REPO / "datasets.yaml").read_text()))
    assert (
        simgen_main(["generate", name, "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    )
    _one_line_error(capsys, "simgen", *fragments)
    assert not (tmp_path / "o").exists() and not (tmp_path / "x").exists()
    if name == "smoke":  # a duplicate key fails on reading, before any dataset is built
        assert simgen_main(["validate", str(config)]) == 2
        _one_line_error(capsys, "simgen", *fragments, "given twice")


# ------------------------------------------------------------------ aet-bench run / score / leaderboard


def test_run_unknown_split_lists_the_store_splits(tmp_path, capsys, tiny_store):
    code = bench_main(
        ["run", "--method", "classical", "--data", str(tiny_store), "--split", "tset"]
        + ["--out", str(tmp_path / "r.jsonl")]
    )
    assert code == 2
    _one_line_error(capsys, "aet-bench", "split='tset'", "it has: test")
    assert not (tmp_path / "r.jsonl").exists()


def test_run_on_a_store_without_truth_is_an_error(tmp_path, capsys, tiny_store):
    from simgen.store import open_dataset

    sample = open_dataset(tiny_store)[0]
    np.save(tmp_path / "series.npy", sample["tilt_series"])
    np.savetxt(tmp_path / "angles.txt", sample["angles"])
    imported = tmp_path / "imported.zarr"
    argv = ["import", str(tmp_path / "series.npy"), "--angles", str(tmp_path / "angles.txt")]
    argv += ["--sampling", "0.5", "--elements", "Pt", "--iterations", "5", "--out", str(imported)]
    assert simgen_main(argv) == 0
    capsys.readouterr()
    out = tmp_path / "r.jsonl"
    code = bench_main(["run", "--method", "classical", "--data", str(imported), "--out", str(out)])
    assert code == 2
    _one_line_error(capsys, "aet-bench", "no ground-truth atoms", "pann predict")
    assert not out.exists()


def test_run_on_a_corrupt_chunk_names_sample_and_array(tmp_path, capsys, tiny_store):
    store = tmp_path / "corrupt.zarr"
    shutil.copytree(tiny_store, store)
    (chunk,) = [p for p in (store / "volume" / "c" / "0").rglob("*") if p.is_file()]
    chunk.write_bytes(chunk.read_bytes()[:40])
    out = tmp_path / "r.jsonl"
    code = bench_main(["run", "--method", "classical", "--data", str(store), "--out", str(out)])
    assert code == 2
    _one_line_error(capsys, "aet-bench", "sample 0", "'volume'", "simgen verify")
    assert not out.exists()


def test_score_of_an_empty_prediction_is_recovery_zero(capsys, model_files):
    argv = ["score", str(model_files["empty"]), "--truth", str(model_files["truth"])]
    assert bench_main([*argv, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_pred"] == 0 and metrics["n_true"] == 2
    assert metrics["recovery_rate"] == 0.0 and metrics["precision"] is None
    assert bench_main(argv) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["recovery_rate"] == "0" and lines["precision"] == "undefined"
    assert bench_main([*argv, "--radius", "0"]) == 2
    _one_line_error(capsys, "aet-bench", "--radius=0")


def _record(**fields):
    record = {
        "dataset": "d1",
        "index": 0,
        "method": "classical",
        "dose": 100.0,
        "radius": 1.0,
        "truth": "initial",
        "split": "test",
        "coordinate_error_pm": 30.0,
        "recovery_rate": 0.5,
        "recovery_rate_species": 0.5,
        "precision": 0.5,
        "species_accuracy": 1.0,
    }
    record.update(fields)
    return record


def _write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_leaderboard_separates_datasets_radii_and_truths(tmp_path, capsys):
    a = _write_jsonl(tmp_path / "a.jsonl", [_record(), _record(index=1, recovery_rate=0.7)])
    b = _write_jsonl(
        tmp_path / "b.jsonl",
        [_record(dataset="d2", recovery_rate=0.9), _record(radius=0.5, recovery_rate=0.1)],
    )
    assert bench_main(["leaderboard", str(a), str(b), "--out", str(tmp_path / "lb")]) == 0
    capsys.readouterr()
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith(("| d1 ", "| d2 "))]
    assert len(rows) == 3  # d1 at 1 Å (2 samples), d1 at 0.5 Å, d2: never merged
    assert "dataset" in md and "radius (Å)" in md and "Every row:" in md
    d1 = next(r for r in rows if r.startswith("| d1 |") and "| 1.0 |" in r)
    assert "| 2 |" in d1 and "60.0 ± 14.1" in d1  # recovery of 0.5 and 0.7 only


def test_leaderboard_refuses_the_same_results_twice(tmp_path, capsys):
    a = _write_jsonl(tmp_path / "a.jsonl", [_record()])
    copy = _write_jsonl(tmp_path / "copy.jsonl", [_record()])
    out = tmp_path / "lb"
    assert (
        bench_main(["leaderboard", str(a), str(tmp_path / "." / "a.jsonl"), "--out", str(out)]) == 2
    )
    _one_line_error(capsys, "aet-bench", "given twice")
    assert bench_main(["leaderboard", str(a), str(copy), "--out", str(out)]) == 2
    _one_line_error(capsys, "aet-bench", "sample 0", "appears twice")
    assert not out.exists()


@pytest.mark.parametrize(
    "record, fragment",
    [
        ({"name": "x", "score": 3}, "no method, dose"),
        (_record(dose="high"), "dose='high'"),
        (_record(recovery_rate=[0.5]), "recovery_rate=[0.5]"),
        ([1, 2], "list"),
    ],
)
def test_leaderboard_of_foreign_results_is_a_one_line_error(tmp_path, capsys, record, fragment):
    path = _write_jsonl(tmp_path / "foreign.jsonl", [record])
    assert bench_main(["leaderboard", str(path), "--out", str(tmp_path / "lb")]) == 2
    _one_line_error(capsys, "aet-bench", "foreign.jsonl", "line 1", fragment)
    assert not (tmp_path / "lb").exists()


# ------------------------------------------------------------------ pann predict


def _write_mrc(path: Path, volume: np.ndarray, voxel_size: float | None) -> Path:
    import mrcfile

    with mrcfile.new(path) as handle:
        handle.set_data(volume.astype(np.float32))
        if voxel_size is not None:
            handle.voxel_size = voxel_size
    return path


@pytest.mark.parametrize(
    "voxel_size, argv, fragments",
    [
        (0.4, ["--sampling", "0.5"], ["--sampling=0.5", "0.4 Å", "header"]),
        (None, [], ["--sampling: required", "records none"]),
        (None, ["--sampling", "-1"], ["--sampling=-1"]),
    ],
)
def test_predict_takes_the_voxel_size_from_the_mrc_header(
    tmp_path, capsys, voxel_size, argv, fragments
):
    volume = _write_mrc(tmp_path / "v.mrc", np.zeros((16, 16, 16)), voxel_size)
    out = tmp_path / "p.xyz"
    assert pann_main(["predict", "--volume", str(volume), *argv, "--out", str(out)]) == 2
    _one_line_error(capsys, "pann", *fragments)
    assert not out.exists()


def test_predict_rejects_a_bad_voxel_size_before_torch_is_imported(tmp_path):
    """The input check takes milliseconds: torch (seconds to import) is not loaded before it."""
    volume = tmp_path / "v.npy"
    np.save(volume, np.zeros((8, 8, 8), np.float32))
    code = (
        "import sys; from models.cli import main; "
        f"rc = main(['predict', '--volume', {str(volume)!r}, '--sampling', '-1', '--out', "
        f"{str(tmp_path / 'p.xyz')!r}]); print(rc, 'torch' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert run.stdout.split() == ["2", "False"], run.stdout + run.stderr
    assert "--sampling=-1" in run.stderr
    assert not (tmp_path / "p.xyz").exists()


@pytest.mark.parametrize("value", [0.0, 7.5])
def test_predict_on_a_constant_volume_finds_no_atoms(tmp_path, capsys, value):
    import ase.io

    volume = _write_mrc(tmp_path / "v.mrc", np.full((16, 16, 16), value), 0.4)
    out = tmp_path / "p.xyz"
    argv = ["predict", "--volume", str(volume), "--out", str(out)]
    assert pann_main([*argv, "--elements", "Pt"]) == 0
    assert "0 atoms" in capsys.readouterr().out
    assert len(ase.io.read(out)) == 0


def test_predict_without_elements_is_refused_before_writing(tmp_path, capsys):
    """The shipped weights classify relative to the elements present (stage2_features=2)."""
    volume = _write_mrc(tmp_path / "v.mrc", np.random.default_rng(0).random((16, 16, 16)), 0.4)
    out = tmp_path / "p.xyz"
    assert pann_main(["predict", "--volume", str(volume), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "elements=None" in err and "--elements" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ------------------------------------------------------------------ Ctrl-C


@pytest.mark.slow
def test_ctrl_c_during_generate_one_line_and_resumable(tmp_path):
    store = tmp_path / "smoke.zarr"
    argv = [sys.executable, "-m", "simgen.cli", "generate", "smoke"]
    argv += ["--config", str(REPO / "datasets.yaml"), "--out", str(store), "--workers", "1"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # Interrupt once the cluster is up and the store exists (samples being simulated).
    while not (store / "zarr.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err.strip() == "simgen: interrupted"
    # The same command resumes and completes the store, which then verifies.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert simgen_main(["verify", str(store)]) == 0


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--lr", "0"], ("--lr=0.0", "(0, 1)")),
        (["--init", "no/such/weights"], ("--init='no/such/weights'", "no such weights")),
        (["--model", "unet3d", "--init", "x"], ("--init='x'", "only for --model pann")),
    ],
)
def test_pann_train_rejects_bad_init_and_lr_before_any_work(tmp_path, capsys, argv, fragments):
    out = tmp_path / "run"
    assert pann_main(["train", "--data", str(tmp_path), "--out", str(out), *argv]) == 2
    _one_line_error(capsys, "pann", *fragments)
    assert not out.exists()
