"""Predictions from anywhere: the ``files`` method, the results schema, sweeps and plugins."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main as bench_main
from benchmark.results_schema import SCHEMA_VERSION, validate_record
from benchmark.runner import read_results

REPO = Path(__file__).resolve().parents[2]
# Fields that name the method, not what it predicted.
_METHOD_FIELDS = {"method", "method_version", "method_options", "seconds"}


def _strip(records):
    return [{k: v for k, v in r.items() if k not in _METHOD_FIELDS} for r in records]


def _flat(value, prefix=""):
    """Leaves of nested records as {path: value}."""
    if isinstance(value, dict):
        return {k2: v2 for k, v in value.items() for k2, v2 in _flat(v, f"{prefix}/{k}").items()}
    if isinstance(value, list):
        return {k2: v2 for i, v in enumerate(value) for k2, v2 in _flat(v, f"{prefix}/{i}").items()}
    return {prefix: value}


def _assert_same_scores(a, b):
    """The same records up to the method fields; numbers to 1e-7 relative (model files keep
    positions to 1e-8 Å)."""
    flat_a, flat_b = _flat(_strip(a)), _flat(_strip(b))
    assert flat_a.keys() == flat_b.keys()
    numbers = {k: v for k, v in flat_a.items() if isinstance(v, float)}
    assert {k: flat_b[k] for k in numbers} == pytest.approx(numbers, rel=1e-7, abs=1e-6)
    assert {k: v for k, v in flat_a.items() if k not in numbers} == {
        k: v for k, v in flat_b.items() if k not in numbers
    }


@pytest.fixture(scope="module")
def classical_run(smoke_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("files")
    argv = ["run", "--method", "classical", "--data", str(smoke_store), "--split", "all"]
    assert bench_main([*argv, "--out", str(out / "c.jsonl"), "--models", str(out / "m")]) == 0
    return out, read_results([out / "c.jsonl"])


def test_files_method_scores_exactly_as_the_method_that_wrote_them(
    classical_run, smoke_store, capsys
):
    out, classical = classical_run
    assert all(r["schema_version"] == SCHEMA_VERSION for r in classical)
    # Renamed by the naming rule (zero-padded, a prefix): the same files, the same scores.
    renamed = out / "renamed"
    renamed.mkdir()
    for path in (out / "m").glob("*.xyz"):
        shutil.copy(path, renamed / f"sample_{int(path.stem):04d}.xyz")
    (renamed / "README.md").write_text("notes, not a prediction\n")
    for folder, name in ((out / "m", "f1"), (renamed, "f2")):
        argv = ["run", "--method", "files", "--predictions", str(folder), "--split", "all"]
        argv += ["--data", str(smoke_store), "--option", "label=my-method"]
        assert bench_main([*argv, "--out", str(out / f"{name}.jsonl")]) == 0
        files = read_results([out / f"{name}.jsonl"])
        assert {r["method"] for r in files} == {"my-method"}
        _assert_same_scores(files, classical)
    # Both reach one leaderboard beside the built-in method.
    capsys.readouterr()
    board = out / "board"
    results = [str(out / "c.jsonl"), str(out / "f2.jsonl")]
    assert bench_main(["leaderboard", *results, "--out", str(board)]) == 0
    text = (board / "leaderboard.md").read_text()
    assert "my-method" in text and "classical" in text


def test_missing_file_is_a_one_line_error_before_anything_is_written(
    classical_run, smoke_store, tmp_path, capsys
):
    out, classical = classical_run
    partial = tmp_path / "partial"
    shutil.copytree(out / "m", partial)
    missing = sorted(int(p.stem) for p in partial.glob("*.xyz"))[1]
    (partial / f"{missing}.xyz").unlink()
    argv = ["run", "--method", "files", "--predictions", str(partial), "--data", str(smoke_store)]
    argv += ["--split", "all", "--out", str(tmp_path / "r.jsonl")]
    capsys.readouterr()
    assert bench_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"no file for sample(s) {missing} " in err and "missing=empty" in err
    assert not (tmp_path / "r.jsonl").exists()
    # Scored as an empty model when asked: recovery 0 there, the others unchanged.
    assert bench_main([*argv, "--option", "missing=empty"]) == 0
    by_index = {r["index"]: r for r in read_results([tmp_path / "r.jsonl"])}
    assert by_index[missing]["recovery_rate"] == 0.0 and by_index[missing]["n_pred"] == 0
    for record in classical:
        if record["index"] != missing:
            assert by_index[record["index"]]["recovery_rate"] == record["recovery_rate"]


def test_files_bad_input(tmp_path, smoke_store, capsys):
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "3.xyz").write_text("1\n\nPt 0 0 0\n")
    (twice / "0003.xyz").write_text("1\n\nPt 0 0 0\n")
    base = ["run", "--method", "files", "--data", str(smoke_store), "--out", str(tmp_path / "r")]
    for extra, words in (
        (["--predictions", str(twice)], ["0003.xyz and 3.xyz both name sample 3"]),
        (["--predictions", str(tmp_path / "nope")], ["not a directory"]),
        ([], ["predictions=None"]),
        (["--predictions", str(twice), "--option", "missing=skip"], ["missing='skip'"]),
    ):
        capsys.readouterr()
        assert bench_main([*base, *extra]) == 2
        err = capsys.readouterr().err
        for word in words:
            assert word in err
    assert not (tmp_path / "r").exists()


def test_confidence_column_is_read(tmp_path):
    import ase
    import ase.io
    import numpy as np

    from benchmark.methods import get_method

    folder = tmp_path / "p"
    folder.mkdir()
    atoms = ase.Atoms("PtX", positions=[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    atoms.new_array("confidence", np.array([0.9, 0.25]))
    ase.io.write(folder / "7.extxyz", atoms, format="extxyz")
    prediction = get_method("files", predictions=str(folder)).predict({"index": 7})
    assert prediction.elements == ["Pt", "unknown"]
    np.testing.assert_allclose(prediction.confidence, [0.9, 0.25])
    np.testing.assert_allclose(prediction.positions, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    "record, words",
    [
        ([], "list"),
        ({"dose": 1.0}, "no method"),
        ({"method": "m", "dose": "high"}, "dose='high' is not a number"),
        ({"method": "m", "dose": 1.0, "recovery_rate": float("nan")}, "not finite"),
        ({"method": "m", "dose": 1.0, "schema_version": SCHEMA_VERSION + 1}, "upgrade"),
        ({"method": "m", "dose": 1.0, "index": 1.5}, "index=1.5"),
    ],
)
def test_validate_record_rejects(record, words):
    with pytest.raises(ValueError, match=words):
        validate_record(record, "here")


def test_validate_record_accepts_old_and_new_records():
    old = {"method": "m", "dose": 1e3, "recovery_rate": 0.5, "precision": None}
    assert validate_record(old) is old
    assert validate_record({**old, "schema_version": SCHEMA_VERSION, "extra_field": [1]})


@pytest.mark.slow  # generates a small dose sweep
def test_sweep_limit_covers_every_dose_and_takes_predictions(tmp_path, capsys):
    config = REPO / "docs" / "tutorials" / "tiny.yaml"
    sweep = tmp_path / "sweep"
    argv = ["sweep", "--config", str(config), "--dataset", "tiny-sweep", "--limit", "1"]
    assert bench_main([*argv, "--out", str(sweep)]) == 0
    rows = read_results([sweep / "results_classical.jsonl"])
    assert sorted(r["dose"] for r in rows) == pytest.approx([1e3, 1e4, 1e5])  # 1 per dose
    store = sweep / "tiny-sweep.zarr"
    preds = tmp_path / "preds"
    assert (
        bench_main(
            ["run", "--method", "classical", "--data", str(store), "--models", str(preds),
             "--out", str(tmp_path / "c.jsonl")]
        )
        == 0
    )
    again = tmp_path / "sweep2"
    argv = ["sweep", "--store", str(store), "--methods", "classical,files"]
    argv += ["--predictions", str(preds), "--option", "label=mine", "--out", str(again)]
    capsys.readouterr()
    assert bench_main(argv) == 0
    printed = capsys.readouterr().out
    assert "mine" in printed
    mine = read_results([again / "results_files.jsonl"])
    assert {r["method"] for r in mine} == {"mine"}
    _assert_same_scores(mine, read_results([again / "results_classical.jsonl"]))
    # `run --limit N --limit-per dose`: the same slice as the sweep's, from the run command
    sliced = tmp_path / "sliced.jsonl"
    run = ["run", "--method", "classical", "--data", str(store), "--split", "all", "--limit", "1"]
    assert bench_main([*run, "--limit-per", "dose", "--out", str(sliced)]) == 0
    assert sorted(r["dose"] for r in read_results([sliced])) == pytest.approx([1e3, 1e4, 1e5])
    capsys.readouterr()
    assert bench_main([*run[:-2], "--limit-per", "dose", "--out", str(tmp_path / "n.jsonl")]) == 2
    assert "--limit-per='dose': expected --limit N beside it" in capsys.readouterr().err
    # An option no method of the sweep takes is a one-line error.
    capsys.readouterr()
    bad = ["sweep", "--store", str(store), "--option", "nonsense=3", "--out", str(tmp_path / "x")]
    assert bench_main(bad) == 2
    assert "not an option of any method" in capsys.readouterr().err


def test_example_plugin_installs_and_runs(smoke_store, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(REPO / "examples" / "aet-method-example")],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO)])}
    out = tmp_path / "r.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "benchmark.cli", "run", "--method", "peaks-example", "--data",
         str(smoke_store), "--split", "all", "--option", "threshold=0.4", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["method"] for r in records} == {"peaks-example"}
    assert all(r["method_options"] == {"threshold": 0.4} for r in records)
    assert max(r["recovery_rate"] for r in records) > 0.3  # the peaks are atoms
