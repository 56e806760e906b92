"""The output-path policy (simgen.tools.outputs) through the three CLIs: users' files survive."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main as bench_main
from models.cli import main as pann_main
from simgen.cli import main as simgen_main
from simgen.store import open_dataset, verify_store
from simgen.tools.outputs import (
    MARKER_NAME,
    OutputError,
    check_output,
    is_our_output,
    staged_output,
    write_text_atomic,
)

TINY = ["--tilt=-30:30:3", "--size", "16", "--iterations", "2", "--noise", "none"]


def _model(path: Path) -> Path:
    path.write_text("2\ntwo Pt atoms\nPt 0 0 0\nPt 2.7 0 0\n")
    return path


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative names)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("months of work\n")
    (path / "data").mkdir()
    (path / "data" / "series.npy").write_bytes(b"\x93NUMPY fake")
    return path


def _one_line_error(capsys, *fragments) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _no_temporaries(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


@pytest.fixture()
def tiny_store(tmp_path):
    out = tmp_path / "tiny.zarr"
    assert (
        simgen_main(["simulate", str(_model(tmp_path / "pt2.xyz")), "--out", str(out), *TINY]) == 0
    )
    return out


# ------------------------------------------------------------------ simgen simulate / import


def test_simulate_never_touches_a_users_folder(tmp_path, capsys, monkeypatch):
    model = _model(tmp_path / "pt2.xyz")
    user = _user_folder(tmp_path / "user")
    before = _snapshot(user)
    for extra in ([], ["--overwrite"]):
        assert simgen_main(["simulate", str(model), "--out", str(user), *TINY, *extra]) == 2
        _one_line_error(capsys, f"--out={str(user)!r}", "folder with other files")
    assert _snapshot(user) == before
    # --out . --overwrite from inside the user's folder: nothing removed
    monkeypatch.chdir(user)
    assert simgen_main(["simulate", str(model), "--out", ".", "--overwrite", *TINY]) == 2
    _one_line_error(capsys, "--out='.'", "current folder")
    assert _snapshot(user) == before
    # a plain file is neither replaced nor written into
    assert simgen_main(["simulate", str(model), "--out", "notes.txt", "--overwrite", *TINY]) == 2
    _one_line_error(capsys, "--out='notes.txt'", "not a folder")
    assert _snapshot(user) == before


def test_simulate_replaces_own_store_only_with_overwrite_and_atomically(tiny_store, capsys):
    tmp_path = tiny_store.parent
    model = tmp_path / "pt2.xyz"
    before = _snapshot(tiny_store)
    assert simgen_main(["simulate", str(model), "--out", str(tiny_store), *TINY]) == 2
    _one_line_error(capsys, "already exists (use --overwrite to replace it)")
    assert _snapshot(tiny_store) == before
    # A run that fails after the output check (the model does not fit an 8-voxel volume) leaves
    # the old store intact and no temporary folder behind.
    args = [
        "simulate",
        str(model),
        "--out",
        str(tiny_store),
        "--overwrite",
        *TINY[:1],
        "--size",
        "4",
    ]
    assert simgen_main(args) == 2
    capsys.readouterr()
    assert _snapshot(tiny_store) == before and verify_store(tiny_store) == []
    _no_temporaries(tmp_path)
    # With --overwrite a successful run replaces it (another dose: different counts, so different
    # bytes; a seed alone changes nothing without noise, and timestamps must not be relied on).
    assert (
        simgen_main(
            [
                "simulate",
                str(model),
                "--out",
                str(tiny_store),
                "--overwrite",
                *TINY,
                "--dose",
                "1234",
            ]
        )
        == 0
    )
    assert _snapshot(tiny_store) != before and verify_store(tiny_store) == []
    _no_temporaries(tmp_path)


def test_simulate_checks_preview_path_before_simulating(tmp_path, capsys):
    model = _model(tmp_path / "pt2.xyz")
    png = tmp_path / "mine.png"
    png.write_bytes(b"user image")
    out = tmp_path / "new.zarr"
    assert (
        simgen_main(["simulate", str(model), "--out", str(out), "--preview", str(png), *TINY]) == 2
    )
    _one_line_error(capsys, f"--preview={str(png)!r}", "not written by this project")
    assert not out.exists() and png.read_bytes() == b"user image"


def _tilt_series(tmp_path: Path) -> tuple[Path, Path]:
    series = np.random.default_rng(0).poisson(5.0, size=(3, 12, 12)).astype(np.float32)
    np.save(tmp_path / "series.npy", series)
    (tmp_path / "angles.txt").write_text("-30\n0\n30\n")
    return tmp_path / "series.npy", tmp_path / "angles.txt"


def test_import_needs_overwrite_and_never_replaces_a_users_folder(tmp_path, capsys):
    series, angles = _tilt_series(tmp_path)
    base = [str(series), "--angles", str(angles), "--sampling", "0.5", "--iterations", "2"]
    out = tmp_path / "imp.zarr"
    assert simgen_main(["import", *base, "--out", str(out)]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert simgen_main(["import", *base, "--out", str(out)]) == 2
    _one_line_error(capsys, f"--out={str(out)!r}", "already exists")
    assert _snapshot(out) == before
    # input that fails after the output check: the old store survives intact
    (tmp_path / "bad_angles.txt").write_text("-30\n30\n")
    bad = [str(series), "--angles", str(tmp_path / "bad_angles.txt"), "--sampling", "0.5"]
    assert simgen_main(["import", *bad, "--out", str(out), "--overwrite"]) == 2
    capsys.readouterr()
    assert _snapshot(out) == before
    _no_temporaries(tmp_path)
    user = _user_folder(tmp_path / "user")
    snap = _snapshot(user)
    assert simgen_main(["import", *base, "--out", str(user), "--overwrite"]) == 2
    _one_line_error(capsys, "folder with other files")
    assert _snapshot(user) == snap


def test_generate_refuses_a_users_folder_before_any_work(tmp_path, capsys):
    user = _user_folder(tmp_path / "user")
    before = _snapshot(user)
    assert simgen_main(["generate", "smoke", "--out", str(user)]) == 2
    _one_line_error(capsys, f"--out={str(user)!r}", "folder with other files")
    assert _snapshot(user) == before and not (user / ".generate.lock").exists()


def test_preview_needs_overwrite(tiny_store, capsys):
    png = tiny_store.parent / "p.png"
    assert simgen_main(["preview", str(tiny_store), "--out", str(png)]) == 0
    first = png.read_bytes()
    assert first[:4] == b"\x89PNG"
    capsys.readouterr()
    assert simgen_main(["preview", str(tiny_store), "--out", str(png)]) == 2
    _one_line_error(capsys, "already exists (use --overwrite")
    assert simgen_main(["preview", str(tiny_store), "--out", str(png), "--overwrite"]) == 0
    assert png.read_bytes() == first


def test_overwrite_never_replaces_a_users_file(tiny_store, capsys):
    """--overwrite replaces only a file this project wrote (and the user has not changed since)."""
    holiday = tiny_store.parent / "holiday.png"
    holiday.write_bytes(b"\x89PNG my holiday")
    assert simgen_main(["preview", str(tiny_store), "--out", str(holiday), "--overwrite"]) == 2
    _one_line_error(capsys, f"--out={str(holiday)!r}", "not written by this project")
    assert holiday.read_bytes() == b"\x89PNG my holiday"
    # a preview we wrote, then edited by the user, is the user's file now
    ours = tiny_store.parent / "ours.png"
    assert simgen_main(["preview", str(tiny_store), "--out", str(ours)]) == 0
    ours.write_bytes(ours.read_bytes() + b"annotated")
    edited = ours.read_bytes()
    capsys.readouterr()
    assert simgen_main(["preview", str(tiny_store), "--out", str(ours), "--overwrite"]) == 2
    _one_line_error(capsys, "not written by this project (or was changed since)")
    assert ours.read_bytes() == edited
    # pann predict --volume: a user's notes.txt survives --overwrite
    np.save(tiny_store.parent / "v.npy", open_dataset(tiny_store)[0]["volume"])
    notes = tiny_store.parent / "notes.txt"
    notes.write_text("my notes\n")
    vol = ["predict", "--volume", str(tiny_store.parent / "v.npy"), "--sampling", "0.4"]
    assert pann_main([*vol, "--out", str(notes), "--overwrite"]) == 2
    _one_line_error(capsys, f"--out={str(notes)!r}", "not written by this project")
    assert notes.read_text() == "my notes\n"


def test_overwrite_refuses_a_folder_holding_a_users_file(tiny_store, capsys):
    """A file a user put inside a folder we wrote (predictions, leaderboard, store) is named."""
    tmp_path = tiny_store.parent
    pred = tmp_path / "pred"
    assert pann_main(["predict", "--data", str(tiny_store), "--out", str(pred)]) == 0
    (pred / "my_analysis.txt").write_text("keep me\n")
    capsys.readouterr()
    args = ["predict", "--data", str(tiny_store), "--out", str(pred), "--overwrite"]
    assert pann_main(args) == 2
    _one_line_error(capsys, "'my_analysis.txt'", "not written by this project")
    assert (pred / "my_analysis.txt").read_text() == "keep me\n"
    (pred / "my_analysis.txt").unlink()
    assert pann_main(args) == 0
    # a store: simulate --overwrite onto a store holding a user's file refuses, naming it
    store = tmp_path / "s.zarr"
    assert (
        simgen_main(["simulate", str(_model(tmp_path / "m.xyz")), "--out", str(store), *TINY]) == 0
    )
    (store / "tilt_series" / "README.txt").write_text("notes\n")
    capsys.readouterr()
    argv = ["simulate", str(tmp_path / "m.xyz"), "--out", str(store), "--overwrite", *TINY]
    assert simgen_main(argv) == 2
    _one_line_error(capsys, "'tilt_series/README.txt'")
    assert (store / "tilt_series" / "README.txt").read_text() == "notes\n"


def test_overwrite_refuses_a_store_a_running_generate_holds(tiny_store, capsys):
    """simulate/import --overwrite onto a store whose lock a live process holds is refused."""
    import socket

    lock = tiny_store / ".generate.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    before = _snapshot(tiny_store)
    model = _model(tiny_store.parent / "m2.xyz")
    argv = ["simulate", str(model), "--out", str(tiny_store), "--overwrite", *TINY]
    assert simgen_main(argv) == 2
    _one_line_error(capsys, "a running simgen generate is writing it")
    series, angles = _tilt_series(tiny_store.parent)
    imp = [str(series), "--angles", str(angles), "--sampling", "0.5", "--iterations", "2"]
    assert simgen_main(["import", *imp, "--out", str(tiny_store), "--overwrite"]) == 2
    _one_line_error(capsys, "a running simgen generate is writing it")
    assert _snapshot(tiny_store) == before


# ------------------------------------------------------------------ pann


def test_pann_predict_output_policy(tiny_store, capsys):
    tmp_path = tiny_store.parent
    user = _user_folder(tmp_path / "user")
    before = _snapshot(user)
    assert pann_main(["predict", "--data", str(tiny_store), "--out", str(user), "--overwrite"]) == 2
    _one_line_error(capsys, f"--out={str(user)!r}", "folder with other files")
    assert _snapshot(user) == before
    out = tmp_path / "pred"
    assert pann_main(["predict", "--data", str(tiny_store), "--out", str(out)]) == 0
    assert (out / "0.xyz").is_file() and is_our_output(out, "predictions")
    capsys.readouterr()
    assert pann_main(["predict", "--data", str(tiny_store), "--out", str(out)]) == 2
    _one_line_error(capsys, "already exists (use --overwrite")
    assert pann_main(["predict", "--data", str(tiny_store), "--out", str(out), "--overwrite"]) == 0
    _no_temporaries(tmp_path)
    # --volume: a folder is not a file name; an existing file needs --overwrite
    np.save(tmp_path / "v.npy", open_dataset(tiny_store)[0]["volume"])
    vol = ["predict", "--volume", str(tmp_path / "v.npy"), "--sampling", "0.4"]
    assert pann_main([*vol, "--out", str(user)]) == 2
    _one_line_error(capsys, "is a folder, expected a file name")
    (tmp_path / "mine.xyz").write_text("user model\n")
    assert pann_main([*vol, "--out", str(tmp_path / "mine.xyz")]) == 2
    _one_line_error(capsys, "not written by this project")
    assert (tmp_path / "mine.xyz").read_text() == "user model\n"


@pytest.mark.slow  # end-to-end: simulate, then PANN inference twice
def test_pann_predict_reads_a_zarr_volume(tiny_store, tmp_path, capsys):
    import zarr

    volume = open_dataset(tiny_store)[0]["volume"]
    zarr.save_array(str(tmp_path / "v.zarr"), volume)
    npy = tmp_path / "v.npy"
    np.save(npy, volume)
    common = ["--sampling", "0.4", "--elements", "Pt"]
    assert (
        pann_main(
            [
                "predict",
                "--volume",
                str(tmp_path / "v.zarr"),
                *common,
                "--out",
                str(tmp_path / "a.xyz"),
            ]
        )
        == 0
    )
    assert (
        pann_main(["predict", "--volume", str(npy), *common, "--out", str(tmp_path / "b.xyz")]) == 0
    )
    # the same volume read from Zarr and from .npy gives the same atoms
    a = (tmp_path / "a.xyz").read_text().splitlines()
    b = (tmp_path / "b.xyz").read_text().splitlines()
    assert a[0] == b[0] and a[2:] == b[2:]
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("rec", data=volume)
    capsys.readouterr()
    assert (
        pann_main(
            [
                "predict",
                "--volume",
                str(tmp_path / "g.zarr"),
                *common,
                "--out",
                str(tmp_path / "c.xyz"),
            ]
        )
        == 2
    )
    _one_line_error(capsys, "give --key", "'rec'")
    assert (
        pann_main(
            [
                "predict",
                "--volume",
                str(tmp_path / "g.zarr"),
                "--key",
                "rec",
                *common,
                "--out",
                str(tmp_path / "c.xyz"),
            ]
        )
        == 0
    )
    assert (tmp_path / "c.xyz").read_text().splitlines()[2:] == a[2:]


def test_pann_train_refuses_a_users_folder(tiny_store, capsys):
    user = _user_folder(tiny_store.parent / "user")
    before = _snapshot(user)
    assert pann_main(["train", "--data", str(tiny_store), "--out", str(user), "--steps", "1"]) == 2
    _one_line_error(capsys, f"--out={str(user)!r}", "not a training run")
    assert _snapshot(user) == before


# ------------------------------------------------------------------ aet-bench


def test_bench_run_and_leaderboard_output_policy(tiny_store, capsys):
    tmp_path = tiny_store.parent
    results = tmp_path / "r.jsonl"
    run = ["run", "--method", "classical", "--data", str(tiny_store), "--split", "all"]
    assert bench_main([*run, "--out", str(results), "--models", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "0.xyz").is_file()
    assert stat.S_IMODE(results.stat().st_mode) == 0o666 & ~_umask()
    capsys.readouterr()
    assert bench_main([*run, "--out", str(results)]) == 2
    _one_line_error(capsys, "already exists (use --overwrite")
    # a user's file that is not our results is never replaced, even with --overwrite
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my own notes\n")
    assert bench_main([*run, "--out", str(notes), "--overwrite"]) == 2
    _one_line_error(capsys, f"--out={str(notes)!r}", "not a results file")
    assert notes.read_text() == "my own notes\n"
    user = _user_folder(tmp_path / "user")
    before = _snapshot(user)
    assert (
        bench_main(
            [*run, "--out", str(tmp_path / "r2.jsonl"), "--models", str(user), "--overwrite"]
        )
        == 2
    )
    _one_line_error(capsys, f"--models={str(user)!r}")
    assert bench_main(["leaderboard", str(results), "--out", str(user), "--overwrite"]) == 2
    _one_line_error(capsys, "folder with other files")
    assert _snapshot(user) == before and not (tmp_path / "r2.jsonl").exists()
    board = tmp_path / "board"
    assert bench_main(["leaderboard", str(results), "--out", str(board)]) == 0
    assert {p.name for p in board.iterdir()} == {
        "leaderboard.md",
        "leaderboard.html",
        "leaderboard.csv",
        "leaderboard.png",
        MARKER_NAME,
    }
    for p in board.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~_umask()
    capsys.readouterr()
    assert bench_main(["leaderboard", str(results), "--out", str(board)]) == 2
    _one_line_error(capsys, "already exists")
    assert bench_main(["leaderboard", str(results), "--out", str(board), "--overwrite"]) == 0
    _no_temporaries(tmp_path)


def test_bench_sweep_refuses_a_users_folder(tmp_path, capsys):
    user = _user_folder(tmp_path / "user")
    before = _snapshot(user)
    assert bench_main(["sweep", "--dataset", "smoke", "--out", str(user)]) == 2
    _one_line_error(capsys, "folder with other files")
    assert _snapshot(user) == before


# ------------------------------------------------------------------ the library pieces


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_files_have_normal_permissions(tmp_path):
    path = write_text_atomic(tmp_path / "a.json", json.dumps({"x": 1}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_staged_output_keeps_the_old_output_when_writing_fails(tmp_path):
    out = tmp_path / "pred"
    with staged_output(out, "predictions") as tmp:
        (tmp / "0.xyz").write_text("old\n")
    with pytest.raises(RuntimeError), staged_output(out, "predictions", overwrite=True) as tmp:
        (tmp / "0.xyz").write_text("new\n")
        raise RuntimeError("killed midway")
    assert (out / "0.xyz").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]


@pytest.mark.parametrize("where", ["/", "~"])
def test_root_and_home_are_never_outputs(where):
    with pytest.raises(OutputError, match="is the (root|home) folder"):
        check_output(Path(where).expanduser(), "store", overwrite=True)
