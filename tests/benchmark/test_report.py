"""aet-bench report: results pages from results files and sweep folders, stamped."""

import json
import re

import pytest

from benchmark.cli import main as bench_main
from benchmark.report import git_commit


def _records(method, doses, sha="ab" * 32, offset=0.0):
    out = []
    for k, dose in enumerate(doses):
        for index in range(2):
            out.append(
                {
                    "schema_version": 1,
                    "dataset": "tiny",
                    "dataset_sha256": sha,
                    "index": 2 * k + index,
                    "dose": dose,
                    "method": method,
                    "method_version": "1",
                    "radius": 1.0,
                    "coordinate_error_pm": 10.0 + offset + index,
                    "recovery_rate": 0.5 + 0.25 * index,
                    "recovery_rate_species": 0.5,
                    "precision": 1.0,
                    "species_accuracy": 1.0,
                }
            )
    return out


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_report_pages_are_stamped_and_hold_the_numbers(tmp_path, capsys):
    a = _write(tmp_path / "alpha.jsonl", _records("alpha", [100.0, 1000.0]))
    b = _write(tmp_path / "beta.jsonl", _records("beta", [100.0, 1000.0], offset=4.0))
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    _write(sweep / "results_alpha.jsonl", _records("alpha", [100.0, 1000.0]))
    (sweep / "sweep.csv").write_text("method,dose,n,recovery_rate\nalpha,100,2,62.5\n")
    out = tmp_path / "pages"
    assert bench_main(["report", str(a), str(b), str(sweep), "--out", str(out)]) == 0
    index = (out / "index.md").read_text()
    assert ["leaderboard", "sweep"] == re.findall(r"^(leaderboard|sweep)$", index, re.M)
    page = (out / "leaderboard.md").read_text()
    assert "`alpha.jsonl`, `beta.jsonl` (8 records)" in page
    assert f"commit:   {git_commit()}" in page
    assert "aet-bench report " in page and "--out" in page
    assert "dataset:  tiny sha256 " + "ab" * 32 in page
    # The mean over the two samples of each dose: (10 + 11) / 2 pm, (50 + 75) / 2 %.
    assert "10.5 ± 0.7" in page and "62.5 ± 17.7" in page  # alpha
    assert "14.5 ± 0.7" in page  # beta
    assert (out / "figures" / "leaderboard.png").stat().st_size > 0
    assert "| alpha | 100 | 2 | 62.5 |" in (out / "sweep.md").read_text()
    # A second run is refused without --overwrite, and replaces the pages with it.
    capsys.readouterr()
    assert bench_main(["report", str(a), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert bench_main(["report", str(a), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "sweep.md").exists()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p / "missing.jsonl", "no such file"),
        (lambda p: (p / "d").mkdir() or p / "d", "without sweep.csv"),
        (lambda p: _write(p / "bad.jsonl", [{"method": "m", "dose": "x"}]), "is not a number"),
    ],
)
def test_report_bad_input_writes_nothing(tmp_path, capsys, make, words):
    path = make(tmp_path)
    out = tmp_path / "pages"
    assert bench_main(["report", str(path), "--out", str(out)]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_user_folder_is_never_written(tmp_path, capsys):
    a = _write(tmp_path / "a.jsonl", _records("alpha", [100.0]))
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.md").write_text("mine")
    assert bench_main(["report", str(a), "--out", str(user), "--overwrite"]) == 2
    assert sorted(p.name for p in user.iterdir()) == ["notes.md"]
