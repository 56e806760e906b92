"""aet-bench run / score / leaderboard on the real smoke store."""

import json

import pytest

from benchmark.cli import main as bench_main
from benchmark.runner import read_results, run_method


@pytest.fixture(scope="module")
def classical_results(smoke_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    records = run_method(
        "classical", smoke_store, out / "classical.jsonl", models_dir=out / "models", split=None
    )
    return out, records


def test_run_writes_one_line_per_sample_with_metrics(classical_results, smoke_store):
    from simgen.store import open_dataset

    out, records = classical_results
    lines = (out / "classical.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == len(open_dataset(smoke_store))
    rec = json.loads(lines[0])
    for key in (
        "dataset",
        "index",
        "dose",
        "morphology",
        "composition",
        "method",
        "method_version",
        "coordinate_error_pm",
        "recovery_rate",
        "recovery_rate_species",
        "precision",
        "species_accuracy",
    ):
        assert key in rec
    assert rec["method"] == "classical"
    assert len(list((out / "models").glob("*.xyz"))) == len(records)
    # Every record's numbers are those of its written prediction scored against the stored truth.
    from ase.data import chemical_symbols

    from benchmark.metrics import score
    from simgen.structures import load_model

    ds = open_dataset(smoke_store)
    for record in records:
        truth = ds.read(int(record["index"]))
        predicted = load_model(out / "models" / f"{record['index']}.xyz")
        expected = score(
            predicted.positions,
            predicted.get_chemical_symbols(),
            truth["positions"],
            [chemical_symbols[int(z)] for z in truth["numbers"]],
        )
        assert record["n_true"] == len(truth["positions"]) > 0
        assert record["recovery_rate"] == pytest.approx(expected["recovery_rate"])
        assert record["coordinate_error_pm"] == pytest.approx(expected["coordinate_error_pm"])
    # At 1e4 e/Å² per projection the classical pipeline finds atoms in every smoke particle.
    assert min(r["recovery_rate"] for r in records) > 0


@pytest.mark.slow  # a pool of worker processes
def test_parallel_run_gives_the_same_records(classical_results, smoke_store, tmp_path):
    _, serial = classical_results
    parallel = run_method("classical", smoke_store, tmp_path / "p.jsonl", split=None, workers=2)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(parallel) == strip(serial)


def test_score_cli_exact_rmsd(tmp_path, capsys):
    import ase
    import ase.io

    truth = ase.Atoms("Pt4", positions=[[0, 0, 0], [3, 0, 0], [0, 3, 0], [0, 0, 3]])
    pred = truth.copy()
    pred.positions[:, 0] += [0.1, -0.1, 0.1, -0.1]  # 10 pm along x for every atom
    ase.io.write(tmp_path / "t.xyz", truth)
    ase.io.write(tmp_path / "p.xyz", pred)
    assert (
        bench_main(["score", str(tmp_path / "p.xyz"), "--truth", str(tmp_path / "t.xyz"), "--json"])
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["coordinate_error_pm"] == pytest.approx(10.0)
    assert metrics["recovery_rate"] == 1.0 and metrics["precision"] == 1.0


def test_leaderboard_cli(classical_results, tmp_path, capsys):
    out, _ = classical_results
    assert (
        bench_main(["leaderboard", str(out / "classical.jsonl"), "--out", str(tmp_path / "lb")])
        == 0
    )
    assert "| classical |" in capsys.readouterr().out
    assert (tmp_path / "lb" / "leaderboard.html").exists()


def test_bad_inputs(tmp_path, capsys, smoke_store):
    assert (
        bench_main(
            [
                "run",
                "--method",
                "nope",
                "--data",
                str(smoke_store),
                "--out",
                str(tmp_path / "r.jsonl"),
            ]
        )
        == 2
    )
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1"):
        read_results([tmp_path / "bad.jsonl"])
    assert (
        bench_main(
            [
                "run",
                "--method",
                "classical",
                "--data",
                str(smoke_store),
                "--truth",
                "later",
                "--out",
                str(tmp_path / "r.jsonl"),
            ]
        )
        == 2
    )


def test_method_options_from_the_command_line(smoke_store, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    argv = ["run", "--method", "classical", "--data", str(smoke_store), "--split", "all"]
    argv += ["--limit", "1", "--out", str(out)]
    # JSON values are typed (3 -> int, "none" -> text); the record names the options
    assert bench_main([*argv, "--option", "iterations=3", "--option", 'refine="none"']) == 0
    (record,) = read_results([out])
    assert record["method_options"] == {"iterations": 3, "refine": "none"}
    # default options: no field, so older results and new ones read alike
    assert bench_main([*argv[:-1], str(tmp_path / "d.jsonl")]) == 0
    assert "method_options" not in read_results([tmp_path / "d.jsonl"])[0]
    for bad, message in [
        ("iterations", "expected KEY=VALUE"),
        ("itterations=3", "itterations=3: not an option of method 'classical'"),
        ("iterations=3", "given twice"),
    ]:
        extra = ["--option", "iterations=3"] if message == "given twice" else []
        assert bench_main([*argv[:-1], str(tmp_path / "x.jsonl"), *extra, "--option", bad]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x.jsonl").exists()


def test_pann_refuses_options_it_does_not_take():
    from benchmark.methods import get_method

    with pytest.raises(ValueError, match="reasign=True: not an option of method 'pann\\+refine'"):
        get_method("pann+refine", reasign=True)


def test_records_carry_the_recovery_bound_and_the_leaderboard_shows_it(
    classical_results, smoke_store, tmp_path, capsys
):
    from benchmark.detection import detectability_of_sample, detection_probability
    from simgen.store import open_dataset

    out, records = classical_results
    ds = open_dataset(smoke_store)
    spec = dict(ds.attrs).get("spec") or {}
    for record in records:
        sample = ds.read(int(record["index"]))
        expected = detection_probability(detectability_of_sample(sample, spec)).mean()
        assert record["recovery_bound"] == pytest.approx(expected)
        # the bound limits recovery only up to false alarms: at smoke's 1e4 e/Å² it is ~1
        assert record["recovery_bound"] > 0.99
    bench_main(["leaderboard", str(out / "classical.jsonl"), "--out", str(tmp_path / "lb")])
    table = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "recovery bound (%)" in table and "1% false-alarm rate" in table
