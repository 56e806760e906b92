import numpy as np
import pytest

from simgen.importer import (
    arrange_tilt_series,
    estimate_background,
    import_tilt_series,
    read_angles,
    read_array,
)
from tests.external import EXTERNAL as SHARED

EXTERNAL = SHARED / "paet_asi2nm"


def test_read_array_formats_round_trip(tmp_path):
    import h5py
    import mrcfile
    import scipy.io
    import tifffile

    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", data)
    with mrcfile.new(tmp_path / "a.mrc") as handle:
        handle.set_data(data)
    tifffile.imwrite(tmp_path / "a.tif", data)
    scipy.io.savemat(
        tmp_path / "a.mat", {"small": np.ones((2, 2, 2)), "stack": data, "vector": np.ones(3)}
    )
    for name in ("a.npy", "a.mrc", "a.tif", "a.mat"):
        np.testing.assert_array_equal(
            read_array(tmp_path / name), data
        )  # .mat: the largest 3-D array
    np.testing.assert_array_equal(read_array(tmp_path / "a.mat", key="small"), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="key='nope'"):
        read_array(tmp_path / "a.mat", key="nope")

    # MATLAB v7.3 is HDF5 behind a 512-byte header, arrays stored column-major (transposed).
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle["stack"] = data.T
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + b"\x00" * 8 + b"\x00\x02IM"
    with open(path, "r+b") as handle:
        handle.write(header)
    np.testing.assert_array_equal(read_array(path), data)

    (tmp_path / "a.raw").write_bytes(b"0")
    with pytest.raises(ValueError, match="suffix"):
        read_array(tmp_path / "a.raw")


def test_read_angles_lists_and_euler_tables(tmp_path):
    (tmp_path / "angles.txt").write_text("# tilt\n-60\n0, 60\n")
    np.testing.assert_array_equal(read_angles(tmp_path / "angles.txt"), [-60, 0, 60])
    euler = np.array([[0, -30, 0], [0, 0, 0], [0, 30, 0]])
    np.save(tmp_path / "euler.npy", euler)
    np.testing.assert_array_equal(read_angles(tmp_path / "euler.npy"), [-30, 0, 30])
    euler4 = np.array([[0, -30, 0], [0, 0, 0], [0, 30, 0], [0, 60, 0]])
    np.save(tmp_path / "euler_t.npy", euler4.T)  # 3×N
    np.testing.assert_array_equal(read_angles(tmp_path / "euler_t.npy"), [-30, 0, 30, 60])
    with pytest.raises(ValueError, match="angles"):
        read_angles(tmp_path / "missing.txt")


def test_arrange_finds_the_stack_axis_transposes_and_crops():
    data = np.random.default_rng(0).random((5, 7, 3))  # (row, column, projection)
    arranged = arrange_tilt_series(data, 3)
    np.testing.assert_array_equal(arranged, np.moveaxis(data, 2, 0))
    arranged = arrange_tilt_series(data, 3, tilt_axis="x")
    np.testing.assert_array_equal(arranged[1], data[:, :, 1].T)
    cropped = arrange_tilt_series(data, 3, origin=(3, 2))  # rows 2..4 (half 1), columns 0..4
    np.testing.assert_array_equal(cropped[0], data[2:5, 0:5, 0])
    with pytest.raises(ValueError, match="stack_axis"):
        arrange_tilt_series(np.zeros((4, 4, 4)), 4)
    with pytest.raises(ValueError, match="tilt_axis"):
        arrange_tilt_series(data, 3, tilt_axis="z")


def aet_tilt_series(model, angles, size, sampling, origin, sigma=0.45):
    """Images in the AET benchmark's convention: column follows x (the tilt axis), row follows
    y cosθ − z sinθ; ``origin`` is the pixel of the model origin. Returns (row, column, angle)."""
    index = np.arange(size)
    images = np.zeros((size, size, len(angles)))
    for k, theta in enumerate(np.deg2rad(angles)):
        for x, y, z in model:
            row = origin + (y * np.cos(theta) - z * np.sin(theta)) / sampling
            col = origin + x / sampling
            images[:, :, k] += np.exp(
                -(((index[:, None] - row) ** 2 + (index[None, :] - col) ** 2) * sampling**2)
                / (2 * sigma**2)
            )
    return images


def test_imported_aet_series_reconstructs_atoms_at_the_stored_truth(tmp_path):
    from benchmark.methods import get_method
    from benchmark.metrics import score
    from simgen.store import open_dataset

    sampling, origin = 0.4, 17
    model = np.array(
        [[2.0, -1.2, 2.4], [-2.2, 0.8, -1.6], [0.6, 2.6, 0.4], [-0.4, -2.8, -0.8]]
    )  # Å
    angles = np.arange(0, 180, 6.0)
    images = (
        aet_tilt_series(model, angles, 35, sampling, origin) * 50 + 2.0
    )  # counts over a background
    np.save(tmp_path / "series.npy", images)
    np.savetxt(tmp_path / "angles.txt", angles)
    (tmp_path / "truth.txt").write_text(
        "% 4 atoms\n" + "".join(f"1 {x} {y} {z}\n" for x, y, z in model)
    )
    store = import_tilt_series(
        tmp_path / "series.npy",
        angles=tmp_path / "angles.txt",
        sampling=sampling,
        out=tmp_path / "imported.zarr",
        tilt_axis="x",
        origin=(origin, origin),
        truth=tmp_path / "truth.txt",
        elements=["Si"],
        dose=50.0,
        background="auto",
        iterations=40,
    )
    sample = open_dataset(store)[0]
    assert sample["volume"].shape == (35, 35, 35)
    # The model (x, y, z) maps to (y, x, -z) about the volume centre (a proper rotation).
    centre = 17 * sampling
    expected = np.stack([model[:, 1], model[:, 0], -model[:, 2]], axis=1) + centre
    np.testing.assert_allclose(
        np.sort(sample["positions"], axis=0), np.sort(expected, axis=0), atol=1e-5
    )
    prediction = get_method("classical", smooth=0.0).predict(sample)
    r = score(prediction.positions, prediction.elements, sample["positions"], ["Si"] * 4)
    assert r["n_matched"] == 4 and r["precision"] == 1.0
    assert r["coordinate_error_pm"] < 10.0


def test_background_is_the_mean_of_the_border():
    series = np.full((2, 20, 20), 3.0)
    series[:, 5:15, 5:15] = 10.0
    assert estimate_background(series) == pytest.approx(3.0)


@pytest.mark.skipif(not EXTERNAL.is_dir(), reason="shared/external/paet_asi2nm not present")
def test_paet_series_arranged_in_our_frame_matches_the_projected_ground_truth():
    from simgen.physics.geometry import rotate_positions
    from simgen.structures import load_model

    angles = read_angles(EXTERNAL / "angles.mat")
    assert len(angles) == 60 and angles[1] == 3.0
    raw = read_array(EXTERNAL / "tilt_series_dose1p6e5.mat")
    series = arrange_tilt_series(raw, 60, tilt_axis="x", origin=(64, 64)).astype(float)
    assert series.shape == (60, 127, 127)
    sampling, size = 0.195, 127
    centre = (size - 1) / 2 * sampling
    model = load_model(EXTERNAL / "ground_truth_208_Si.txt", elements=["Si"]).get_positions()
    positions = np.stack([model[:, 1], model[:, 0], -model[:, 2]], axis=1) + centre
    index = np.arange(size) * sampling
    for k in (0, 15, 30, 50):
        projected = rotate_positions(positions, angles[k], centre)
        image = np.zeros((size, size))
        for x, y, _ in projected:
            image += np.exp(-((index[:, None] - y) ** 2 + (index[None, :] - x) ** 2) / (2 * 0.4**2))
        measured = series[k] - series[k].mean()
        correlation = np.corrcoef(image.ravel(), measured.ravel())[0, 1]
        assert correlation > 0.8, (angles[k], correlation)
