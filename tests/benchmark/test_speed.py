"""Structure of the speed table (``benchmark.speed``); no wall-clock assertions."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from benchmark.speed import PROJECTION_WORKERS, SpeedRow, format_table


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _number(text: str) -> float:
    match = re.match(r"^([0-9][0-9,]*(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)", text)
    assert match, f"no number in {text!r}"
    return float(match.group(1).replace(",", ""))


def test_import_is_cheap():
    code = "import sys, benchmark.speed; print(any(m in sys.modules for m in ('torch', 'abtem', 'astra', 'dask')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_format_table_hand_made_rows():
    rows = [
        SpeedRow("x (A) / y (B)", "tiny", 2.0, 0.5, 4.0, "×"),
        SpeedRow("rate", "tiny", None, None, 12345.6, "atoms/s"),
    ]
    text = format_table(rows, ["a note"], "header")
    lines = text.splitlines()
    assert lines[0] == "header"
    assert _cells(lines[4]) == ["x (A) / y (B)", "tiny", "2 s", "0.5 s", "4×"]
    assert _cells(lines[5]) == ["rate", "tiny", "", "", "12,346 atoms/s"]
    assert lines[-1] == "1. a note"


@pytest.fixture(scope="module")
def quick_table():
    from benchmark.speed import run_speed

    return run_speed(quick=True, multislice=False)


@pytest.mark.slow  # runs aet-bench speed
def test_quick_table_rows(quick_table):
    lines = quick_table.splitlines()
    from benchmark.speed_base import machine_line

    assert lines[0].startswith("Speed, ")
    assert re.match(r"^Speed, \d{4}-\d\d-\d\dT\d\d:\d\d: ", lines[0])
    assert f": {machine_line()}; " in lines[0]
    assert re.search(r"; \d+ CPUs, torch threads \d+", lines[0])
    assert _cells(lines[2]) == ["what", "case", "time A", "time B", "ratio / rate"]
    body = [_cells(line) for line in lines[4:] if line.startswith("|")]
    whats = [cells[0] for cells in body]
    expected_starts = [
        "linear HAADF mode",
        "SIRT: ASTRA 2D loop",
        "SIRT per iteration, batched (A) / its memory traffic",
        "generation, 1 worker:",
        "generation, 2 workers:",
        "generation with alignment (A) / without (B)",
        "scaling efficiency rate(2)",
        "scaling efficiency t(1)",
        *[f"projected full pann-benchmark, {n} worker" for n in PROJECTION_WORKERS],
        "3D Zernike invariants",
        "PANN on CPU",
        "3D U-Net baseline forward",
        "PANN stage-1 refine (A) / 3D U-Net",
        "PANN predict, shipped weights",
        *[
            f"PANN stage: {stage}"
            for stage in (
                "stage 1",
                "tracing",
                "Zernike features",
                "stage 2",
                "refinement against the tilt series",
                "species step",
            )
        ],
        "PANN predict with refinement, shipped weights",
        "PANN stage-1 training step on CPU",
        *["projected stage-1 epoch over the pann-benchmark train split"] * 3,
    ]
    assert len(whats) == len(expected_starts), whats
    for what, start in zip(whats, expected_starts):
        assert what.startswith(start), (what, start)
    assert not any("multislice" in what for what in whats)  # skipped
    for cells in body:
        assert len(cells) == 5
        for cell in cells[2:]:
            if cell:
                value = _number(cell)
                assert math.isfinite(value) and value > 0, cells
    # the rows carry their sizes: the quick cases
    assert "32³ voxels, 15 angles, 20 iterations" in body[1][1]
    assert "32³ voxels, 15 angles, 20 iterations" in body[2][1]
    assert "smoke" in body[3][1] and "smoke" in body[5][1]
    assert "2 of them aligned: projection_matching_split" in body[5][1]  # smoke's first 4
    assert "2,000 atoms" in body[13][1]
    # projected time falls as workers are added
    hours = [_number(cells[4]) for cells in body[8:13]]
    assert hours[1:] == sorted(hours[1:], reverse=True) and hours[-1] < hours[0]
    # the projected training epoch: ideal data parallel, so 8 and 64 workers divide the time
    epoch = [_number(cells[4]) for cells in body[-3:]]
    assert epoch[0] / epoch[1] == pytest.approx(8, rel=0.02)
    assert epoch[0] / epoch[2] == pytest.approx(64, rel=0.05)


def test_machine_line_names_the_cpu_and_caches(monkeypatch):
    from benchmark import speed_base
    from simgen.reconstruction import reconstruct

    monkeypatch.setattr(
        reconstruct, "cache_sizes", lambda: {"L1d": 49152, "L2": 2 << 20, "L3": 105 << 20}
    )
    monkeypatch.setattr(speed_base, "cpu_model", lambda: "Some CPU 9000")
    assert speed_base.machine_line() == "Some CPU 9000, L1d 48 KiB, L2 2 MiB per core, L3 105 MiB"
    monkeypatch.setattr(reconstruct, "cache_sizes", lambda: {})
    assert speed_base.machine_line() == "Some CPU 9000, cache sizes not reported"
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    monkeypatch.undo()
    assert speed_base.cpu_model() == names[0]


def test_sirt_traffic_by_hand():
    from benchmark.speed_base import sirt_traffic

    # 10 + 10 entries, 4 voxels, 6 rays, 3 columns, 2 blocks:
    # 20·8 + 4·3·(5·4 + (2 + 4)·6) = 160 + 12·56 = 832 streamed; 20·4·3 = 240 gathered
    assert sirt_traffic(20, 4, 6, 3, 2) == (832, 240)
