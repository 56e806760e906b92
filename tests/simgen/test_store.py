"""Tests of the Zarr store: schema, ragged atoms, lossy error bounds, checksums, verify, inspect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from simgen.catalog import StorageSpec
from simgen.sample import Sample, SampleSpec
from simgen.store import (
    StoreLayout,
    consolidate,
    create_store,
    encode_lossy,
    format_inspection,
    inspect_store,
    open_dataset,
    read_samples,
    verify_store,
    write_sample,
    write_single_sample_store,
)
from tests.conftest import write_tiny_store

N, A, V = 4, 5, 12
META = {
    "dose": [1e3, 1e4, 1e3, 1e4],
    "morphology": ["icosahedron", "cuboctahedron", "icosahedron", "decahedron"],
    "split": ["train", "test", "train", "test"],
}


def _sample(i: int) -> Sample:
    rng = np.random.default_rng(i)
    n_atoms = 3 + i
    atoms = Atoms(
        numbers=[78 if k % 2 else 26 for k in range(n_atoms)],
        positions=rng.uniform(1, 5, (n_atoms, 3)),
    )
    angles = np.linspace(-60, 60, A).astype(np.float32)
    return Sample(
        atoms=atoms,
        tilt_series=rng.poisson(50.0, (A, V, V)).astype(np.float32),
        angles=angles,
        angles_true=angles + np.float32(0.1 * i),
        volume=rng.random((V, V, V), dtype=np.float32),
        target=rng.random((V, V, V), dtype=np.float32),
        meta={},
    )


def _store(path: Path, written=range(N), **kwargs) -> Path:
    return write_tiny_store(
        path,
        [_sample(i) for i in range(N)],
        written=written,
        name="unit",
        spec={"note": "test"},
        meta=META,
        **kwargs,
    )


def test_round_trip_and_ragged_atoms(tmp_path):
    path = _store(tmp_path / "s.zarr")
    ds = open_dataset(path)
    assert len(ds) == N and ds.sampling == 0.5 and ds.name == "unit"
    for i in range(N):
        expected, got = _sample(i), ds[i]
        for name in ("tilt_series", "angles", "angles_true", "volume", "target"):
            np.testing.assert_array_equal(got[name], getattr(expected, name))
        np.testing.assert_array_equal(got["positions"], expected.atoms.positions.astype(np.float32))
        np.testing.assert_array_equal(got["numbers"], expected.atoms.numbers)
        assert got["elements"] == ("Fe", "Pt") and got["n_atoms"] == 3 + i
        assert got["dose"] == META["dose"][i] and got["morphology"] == META["morphology"][i]
    import zarr

    root = zarr.open_group(str(path), mode="r")
    # all complete: the padded staging arrays are gone, the ragged schema holds 3+4+5+6 atoms
    assert "padded_positions" not in root["atoms"]
    np.testing.assert_array_equal(root["atoms"]["offsets"][:], [0, 3, 7, 12, 18])
    assert (
        root["atoms"]["positions"].shape == (18, 3) and root["atoms"]["numbers"].dtype == np.uint8
    )
    assert root["tilt_series"].chunks == (1, A, V, V) and root["volume"].chunks == (1, V, V, V)
    assert root.attrs["schema_version"] == 2 and root.attrs["spec"]["note"] == "test"
    assert verify_store(path) == []


def test_incomplete_samples_hidden_and_resumable(tmp_path):
    path = _store(tmp_path / "s.zarr", written=[0, 2])
    ds = open_dataset(path)
    assert len(ds) == 2 and list(ds.indices) == [0, 2]
    assert len(open_dataset(path, include_incomplete=True)) == N
    info = inspect_store(path)
    assert (info["n_complete"], info["n_missing"], info["missing"]) == (2, 2, [1, 3])
    assert info["counts"]["morphology"] == {"icosahedron": 2}
    # writing the rest later, then consolidating, gives the same store as writing all at once
    for i in (1, 3):
        write_sample(path, i, _sample(i))
    consolidate(path)
    whole = _store(tmp_path / "whole.zarr")
    assert inspect_store(path)["dataset_sha256"] == inspect_store(whole)["dataset_sha256"] != ""
    np.testing.assert_array_equal(
        open_dataset(path)[3]["positions"], open_dataset(whole)[3]["positions"]
    )


def test_filter_views(tmp_path):
    ds = open_dataset(_store(tmp_path / "s.zarr"))
    assert list(ds.filter(split="test").indices) == [1, 3]
    assert list(ds.filter(dose=1e3).indices) == [0, 2]
    assert list(ds.filter(dose=[1e4], morphology=("decahedron", "icosahedron")).indices) == [3]
    assert list(ds.filter(n_atoms=lambda n: n > 4).indices) == [2, 3]
    view = ds.filter(split="test")
    assert [s["index"] for s in view] == [1, 3] and view[-1]["morphology"] == "decahedron"
    with pytest.raises(ValueError, match="field='colour'"):
        ds.filter(colour="red")


def test_read_samples_reads_only_written_chunks_with_the_same_values(tmp_path):
    import zarr

    path = _store(tmp_path / "s.zarr", written=[1, 3])
    root = zarr.open_group(str(path), mode="r")
    for name in ("complete", "checksums", "meta/n_atoms", "angles", "failed", "meta/dose"):
        np.testing.assert_array_equal(read_samples(root[name]), root[name][:])
    assert read_samples(root["complete"]).tolist() == [False, True, False, True]
    assert read_samples(root["meta/n_atoms"]).tolist() == [0, 4, 0, 6]  # 3 + i atoms


def test_planned_metadata_types_match_the_value_by_value_rule(tmp_path):
    # the bulk type decision keeps the per-value rule: bools mixed with ints are stored as text
    meta = {
        "flag": [True, False, np.True_, False],
        "count": [1, np.int32(2), 3, 4],
        "dose": [1, 2.5, np.float32(3), 4],
        "mixed": [True, 1, 2, 3],
        "name": ["a", None, "c", 4],
    }
    layout = StoreLayout(N, n_angles=A, size=V, sampling=0.5)
    root = create_store(tmp_path / "m.zarr", {"name": "x"}, layout, meta=meta)
    stored = {name: root["meta"][name][:] for name in meta}
    assert stored["flag"].dtype == np.bool_ and stored["flag"].tolist() == [1, 0, 1, 0]
    assert stored["count"].dtype == np.int64 and stored["count"].tolist() == [1, 2, 3, 4]
    assert stored["dose"].dtype == np.float64 and stored["dose"].tolist() == [1.0, 2.5, 3.0, 4.0]
    assert stored["mixed"].tolist() == ["True", "1", "2", "3"]
    assert stored["name"].tolist() == ["a", "None", "c", "4"]


def test_bitround_and_float16_errors():
    x = np.array([1.0, 1.0 + 2.0**-10, 1.0 + 3 * 2.0**-9, -2.5, 0.0], dtype=np.float32)
    stored, max_err, rms = encode_lossy(x, "bitround:8")
    # 8 mantissa bits: 1 + 2^-10 rounds to 1; 1 + 3·2^-9 is a tie between 1+2^-8 and 1+2^-7 -> even
    np.testing.assert_array_equal(stored, [1.0, 1.0, 1.0 + 2.0**-7, -2.5, 0.0])
    assert max_err == pytest.approx(2.0**-9) and rms == pytest.approx(
        np.sqrt((2.0**-20 + 2.0**-18) / 5)
    )
    values = np.random.default_rng(0).uniform(0, 100, 10000).astype(np.float32)
    stored, max_err, _ = encode_lossy(values, "bitround:10")
    assert max_err <= 100 * 2.0**-11 and np.max(np.abs(stored - values) / values) <= 2.0**-11
    stored, max_err, _ = encode_lossy(values, "float16")
    assert stored.dtype == np.float16 and max_err == pytest.approx(
        np.abs(stored.astype(np.float64) - values).max()
    )
    with pytest.raises(ValueError, match="overflow float16"):
        encode_lossy(np.array([1e5], np.float32), "float16")
    with pytest.raises(ValueError, match="bitround:K"):
        encode_lossy(values, "bitround:30")


def test_lossy_store_records_errors_and_compresses(tmp_path):
    lossless = _store(tmp_path / "a.zarr")
    lossy = _store(tmp_path / "b.zarr", lossy={"volume": "bitround:6", "target": "float16"})
    info = inspect_store(lossy)
    ds = open_dataset(lossy)
    err = max(np.abs(ds[i]["volume"] - _sample(i).volume).max() for i in range(N))
    assert info["lossy"]["volume"]["max_abs_error"] == pytest.approx(err)
    assert 0 < err <= 2.0**-7  # values in [0, 1): half a unit in the 6th mantissa bit
    assert info["lossy"]["target"]["codec"] == "float16"
    assert info["size_on_disk"] < inspect_store(lossless)["size_on_disk"]
    assert verify_store(lossy) == []
    assert "lossy volume: bitround:6" in format_inspection(info)


def _chunk(path: Path, array: str, index: int) -> Path:
    files = [p for p in (path / array / "c" / str(index)).rglob("*") if p.is_file()]
    assert len(files) == 1
    return files[0]


def test_verify_reports_corrupted_and_swapped_chunks(tmp_path):
    path = _store(tmp_path / "s.zarr")
    volume_chunk = _chunk(path, "volume", 2)
    volume_chunk.write_bytes(volume_chunk.read_bytes()[:50])  # truncated
    _chunk(path, "tilt_series", 1).write_bytes(
        _chunk(path, "tilt_series", 0).read_bytes()
    )  # valid but wrong
    problems = verify_store(path)
    assert any(p.startswith("sample 2: volume: unreadable chunk") for p in problems)
    assert "sample 1: tilt_series: checksum mismatch (changed since it was written)" in problems
    assert not any(p.startswith(("sample 0", "sample 3")) for p in problems)
    _chunk(path, "angles", 3).unlink()  # a missing chunk reads as zeros
    assert "sample 3: angles: checksum mismatch (changed since it was written)" in verify_store(
        path
    )


def test_create_and_write_validate_input(tmp_path):
    path = _store(tmp_path / "s.zarr", written=[])
    with pytest.raises(FileExistsError, match="already exists"):
        create_store(path, {"name": "x"}, StoreLayout(N, n_angles=A, size=V, sampling=0.5))
    with pytest.raises(ValueError, match="n_samples=0: expected a positive integer"):
        StoreLayout(0, n_angles=A, size=V, sampling=0.5)
    with pytest.raises(ValueError, match="sampling=0.0: expected a positive voxel size"):
        StoreLayout(1, n_angles=A, size=V, sampling=0.0)
    with pytest.raises(ValueError, match="lossy.volume='float8'"):
        create_store(
            tmp_path / "t.zarr",
            {"name": "x"},
            StoreLayout(1, n_angles=A, size=V, sampling=0.5),
            storage=StorageSpec(lossy=(("volume", "float8"),)),
        )
    bad = _sample(0)
    bad.volume = np.zeros((V, V, V + 1), np.float32)
    with pytest.raises(ValueError, match=r"volume.shape=\(12, 12, 13\): expected \(12, 12, 12\)"):
        write_sample(path, 0, bad)
    with pytest.raises(ValueError, match="index=4"):
        write_sample(path, 4, _sample(0))
    small = _store(tmp_path / "small.zarr", written=[], max_atoms=4)
    with pytest.raises(ValueError, match="6 atoms, more than the store's max_atoms=4"):
        write_sample(small, 3, _sample(3))
    assert not open_dataset(small, include_incomplete=True)[3]["complete"]


def test_single_sample_store_is_atomic(tmp_path):
    spec = SampleSpec(
        index=0,
        morphology="model.xyz",
        composition="Fe+Pt",
        size_nm=0.0,
        dose=1e4,
        angles=tuple(np.linspace(-60, 60, A)),
        sampling=0.5,
        size=V,
    )
    out = tmp_path / "one.zarr"
    write_single_sample_store(out, _sample(1), spec)
    assert [p.name for p in tmp_path.iterdir()] == ["one.zarr"]  # no temporary directory left
    sample = open_dataset(out)[0]
    assert sample["dose"] == 1e4 and sample["n_atoms"] == 4 and sample["morphology"] == "model.xyz"
    with pytest.raises(FileExistsError):
        write_single_sample_store(out, _sample(2), spec)
    write_single_sample_store(out, _sample(2), spec, overwrite=True)
    assert open_dataset(out)[0]["n_atoms"] == 5 and verify_store(out) == []
    # imported data: no true atoms and no target; the declared elements are kept
    imported = _sample(0)
    imported.atoms, imported.target = None, None
    write_single_sample_store(
        tmp_path / "imp.zarr", imported, {"name": "imp", "sampling": 0.5, "elements": "Fe,Pt"}
    )
    sample = open_dataset(tmp_path / "imp.zarr")[0]
    assert sample["target"] is None and sample["positions"].shape == (0, 3)
    assert sample["elements"] == ("Fe", "Pt") and verify_store(tmp_path / "imp.zarr") == []


def test_alignment_arrays_round_trip_and_show_in_inspect(tmp_path):
    path = tmp_path / "a.zarr"
    create_store(path, {"name": "unit"}, StoreLayout(2, n_angles=A, size=V, sampling=0.5), meta={})
    aligned = _sample(0)
    aligned.shifts = np.arange(2 * A, dtype=np.float32).reshape(A, 2) / 10
    aligned.shifts_true = aligned.shifts + np.float32(0.01)
    aligned.angles_estimated = aligned.angles + np.float32(0.05)
    aligned.meta = {
        "align": "projection_matching",
        "align_shift_error_pm": 2.5,
        "align_angle_error_deg": 0.125,
    }
    write_sample(path, 0, aligned)
    write_sample(path, 1, _sample(1))  # a sample without alignment: NaN, method ""
    consolidate(path)
    ds = open_dataset(path)
    np.testing.assert_array_equal(ds[0]["shifts"], aligned.shifts)
    np.testing.assert_array_equal(ds[0]["shifts_true"], aligned.shifts_true)
    np.testing.assert_array_equal(ds[0]["angles_estimated"], aligned.angles_estimated)
    assert ds[0]["align"] == "projection_matching" and ds[0]["align_shift_error_pm"] == 2.5
    assert np.all(np.isnan(ds[1]["shifts"]))
    assert verify_store(path) == []
    info = inspect_store(path)
    assert info["alignment"]["projection_matching"]["shift_error_pm_median"] == 2.5
    text = format_inspection(info)
    assert "alignment" in text and "projection_matching" in text and "2.5" in text


def test_reader_still_opens_a_schema_1_store(tmp_path):
    import zarr

    path = tmp_path / "old.zarr"
    layout = StoreLayout(1, n_angles=A, size=V, sampling=0.5, alignment=False)
    create_store(path, {"name": "old"}, layout, meta={})
    write_sample(path, 0, _sample(0))
    consolidate(path)
    zarr.open_group(str(path), mode="r+").attrs["schema_version"] = 1
    ds = open_dataset(path)
    assert len(ds) == 1 and "shifts" not in ds[0]
    np.testing.assert_array_equal(ds[0]["tilt_series"], _sample(0).tilt_series)
    assert verify_store(path) == []
    zarr.open_group(str(path), mode="r+").attrs["schema_version"] = 99
    with pytest.raises(ValueError, match=r"schema_version=99: expected one of \[1, 2\]"):
        open_dataset(path)


@pytest.mark.parametrize("consolidated", [False, True])
def test_a_written_store_is_what_the_schema_declares(tmp_path, consolidated):
    """Every array of :data:`simgen.store.schema.ARRAYS` is where the table says, with its dtype,
    per-sample shape and fill; the checksum order and meta fields are the table's too."""
    import zarr

    from simgen.store.schema import ARRAYS, META_BY_NAME, checksummed_names

    path = _store(tmp_path / "s.zarr", written=range(N - 1), consolidated=consolidated)
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["checksummed_arrays"] == list(
        checksummed_names(acquisition=False, alignment=True)
    )
    sizes = {"A": A, "V": V, "max_atoms": root.attrs["max_atoms"]}
    checked = 0
    for spec in ARRAYS:
        if spec.when == "acquisition":
            assert spec.group not in root
            continue
        group = root[spec.group] if spec.group else root
        if spec.ragged and consolidated:
            # packed: (M, ...) rows of the complete samples, with offsets (N + 1,)
            array = group[spec.name]
            n_rows = sum(3 + i for i in range(N - 1))
            assert array.shape == (n_rows, *spec.shape[1:]) and array.dtype == spec.dtype
            assert group["offsets"][-1] == n_rows
            assert spec.written_name in group  # the padded rows stay while a sample is missing
        else:
            array = group[spec.written_name]
            assert array.shape == (N, *spec.sample_shape(sizes))
            assert array.chunks == (1, *spec.sample_shape(sizes))
            assert array.dtype == spec.dtype
            unwritten = np.asarray(array[N - 1])
            np.testing.assert_array_equal(
                unwritten, np.full(unwritten.shape, spec.fill, spec.dtype)
            )
        checked += 1
    assert checked == 10  # 5 dense, 2 atom arrays, 3 alignment arrays
    for name in ("n_atoms", "align_shift_error_pm", "align_angle_error_deg"):
        assert root["meta"][name].dtype == np.dtype(META_BY_NAME[name].dtype)


def test_the_documented_schema_is_the_declared_one():
    """docs/architecture.md's schema table lists every array and meta field of the schema module,
    with the same path and dtype."""
    from simgen.store.schema import ARRAYS, META_FIELDS

    text = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    for spec in ARRAYS:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{spec.key}` |"))
        assert f"`/{spec.path}`" in row and f"| {np.dtype(spec.dtype).name}" in row, row
    for field in META_FIELDS:
        assert f"| `{field.name}` |" in text, field.name
