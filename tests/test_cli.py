"""The three CLIs: instant help, one-line errors with a non-zero exit, nothing half-written."""

import subprocess
import sys

import pytest

from simgen.cli import main as simgen_main
from simgen.cli import parse_tilt


@pytest.mark.parametrize("module", ["simgen.cli", "models.cli", "benchmark.cli"])
def test_help(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "usage" in result.stdout


def test_simgen_import_does_not_import_torch():
    code = "import simgen, simgen.cli, simgen.sample, simgen.config; import sys; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_parse_tilt():
    angles = parse_tilt("-60:60:5")
    assert angles == (-60.0, -30.0, 0.0, 30.0, 60.0)
    for bad in ["-60:60", "a:b:c", "60:-60:5", "-60:60:1", "-95:60:5"]:
        with pytest.raises(ValueError, match="--tilt"):
            parse_tilt(bad)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["simulate", "missing.xyz", "--out", "{tmp}/s.zarr"], "missing.xyz"),
        (
            [
                "simulate",
                "--particle",
                "cuboctahedron",
                "--composition",
                "Xx",
                "--out",
                "{tmp}/s.zarr",
            ],
            "Xx",
        ),
        (
            [
                "simulate",
                "--particle",
                "cuboctahedron",
                "--tilt",
                "10:0:5",
                "--out",
                "{tmp}/s.zarr",
            ],
            "--tilt",
        ),
        (["generate", "no-such-dataset", "--dry-run"], "no-such-dataset"),
    ],
)
def test_bad_input_one_line_error_nothing_written(tmp_path, capsys, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = simgen_main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("simgen: error:") and len(err.splitlines()) == 1
    assert fragment in err
    assert not (tmp_path / "s.zarr").exists()
