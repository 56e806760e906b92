"""Speed ratios of the suite's hot paths, measured in one run (``aet-bench speed``).

Each measurement warms up first (imports, FFTW plans, cached matrices, JIT), then times repeated
runs and keeps the median. The machine is shared and noisy, so what a table says is the *ratio*
of two timings taken minutes apart in the same run, not the absolute seconds.

Rows:

1. linear HAADF mode against abTEM multislice (and PRISM) for one projection of a Pt cluster;
2. batched sparse-matrix SIRT (threaded numba kernels) against looping ASTRA's own 2D CPU SIRT
   over the y-slices, and its time per iteration against the bytes an iteration must stream
   from memory at the measured copy bandwidth;
3. end-to-end generation throughput with 1 and 2 Dask workers, the same samples with and
   without alignment (summed per-sample time), the scaling efficiency, the
   projected wall time of the full ``pann-benchmark`` catalogue entry, and the time its store
   takes to set up before the first sample;
4. 3D Zernike invariants (order 8) per second, patch extraction included;
5. PANN inference on CPU without stage 2 (stage-1 refinement, tracing, Zernike features), the
   full prediction with the shipped weights per 64³ and 128³ volume, the 3D U-Net baseline
   forward pass, and a stage-1 training step with the projected epoch over ``pann-benchmark``.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from functools import partial

import numpy as np

from benchmark.speed_base import (
    SpeedRow,
    blob_phantom,
    copy_bandwidth,
    machine_line,
    sirt_traffic,
    timed,
)
from benchmark.speed_models import (
    _pann_rows,
    _pann_stage_rows,
    _shipped_pann_rows,
    _training_rows,
    _zernike_rows,
    simulated_sample,
    stage_times,
)

__all__ = [
    "SpeedRow",
    "measure_speed",
    "format_table",
    "run_speed",
    "simulated_sample",
    "stage_times",
]

logger = logging.getLogger(__name__)

PROJECTION_WORKERS = (1, 2, 16, 64, 256)


# ------------------------------------------------------------------------------------------
# 1. linear mode vs abTEM multislice / PRISM


def _imaging_rows(quick: bool, multislice: bool, notes: list[str]) -> list[SpeedRow]:
    from simgen.physics.calibration import wavelength
    from simgen.physics.imaging import Microscope, simulate_tilt_series
    from simgen.structures import build_particle, place_in_volume

    size, sampling = 24, 0.4
    atoms = build_particle(
        "icosahedron", "Pt", shells=2, rng=np.random.default_rng(0), orientation="none"
    )
    atoms = place_in_volume(atoms, size, sampling)
    case = f"Pt{len(atoms)} icosahedron, {size}² px at {sampling} Å, 1 projection (0°)"

    def linear():
        return simulate_tilt_series(atoms, [0.0], size=size, sampling=sampling, mode="linear")

    logger.info("speed: linear mode, %s", case)
    linear_time, _ = timed(linear, repeats=5 if quick else 20)
    rows = [
        SpeedRow(
            "linear HAADF mode (A)", case, linear_time, None, 1.0 / linear_time, "projections/s"
        )
    ]
    if not multislice:
        return rows

    microscope = Microscope()
    # Coarsest potential sampling whose band limit (2/3 Nyquist) still reaches the detector's
    # outer angle; 1 Å slices; no frozen phonons (each configuration multiplies the time).
    potential_sampling = (
        0.95 * wavelength(microscope.energy) / (3.0 * microscope.detector_outer * 1e-3)
    )
    options = dict(potential_sampling=potential_sampling, slice_thickness=1.0, frozen_phonons=0)
    notes.append(
        f"abTEM: potential sampling {potential_sampling:.4f} Å (band limit just above the "
        f"{microscope.detector_outer:g} mrad detector), 1 Å slices, no frozen phonons (N configurations "
        "cost N×), 2 Å vacuum margin; one timed run after a warm-up on a single atom in a 12² px field."
    )
    warm_atoms = place_in_volume(atoms[:1], 12, sampling)
    cases = [("multislice", {}, "abTEM multislice (B) / linear (A)")]
    cases.append(("prism", {"interpolation": 2}, "abTEM PRISM, interpolation 2 (B) / linear (A)"))
    for mode, extra, label in cases:
        logger.info("speed: abTEM %s warm-up", mode)
        simulate_tilt_series(
            warm_atoms, [0.0], size=12, sampling=sampling, mode=mode, **options, **extra
        )
        logger.info("speed: abTEM %s, %s (a minute or two)", mode, case)
        seconds, _ = timed(
            partial(
                simulate_tilt_series,
                atoms,
                [0.0],
                size=size,
                sampling=sampling,
                mode=mode,
                **options,
                **extra,
            ),
            repeats=1,
            warmup=0,
        )
        rows.append(SpeedRow(label, case, linear_time, seconds, seconds / linear_time, "×"))
    return rows


# ------------------------------------------------------------------------------------------
# 2. batched SIRT vs ASTRA per-slice SIRT


def _sirt_rows(quick: bool) -> list[SpeedRow]:
    from simgen.reconstruction.reconstruct import (
        block_bytes,
        project,
        projection_matrix,
        reconstruct,
    )

    cases = [(32, 15, 20, 3)] if quick else [(64, 29, 50, 3), (128, 51, 100, 1)]
    rows = []
    rng = np.random.default_rng(0)
    for size, n_angles, iterations, repeats in cases:
        angles = np.linspace(-70.0, 70.0, n_angles)
        tilt_series = project(blob_phantom(size, rng), angles)
        projection_matrix(size, angles)  # build and cache the matrix outside the timing
        warm = tilt_series[:, : min(4, size), :]
        for backend in ("matrix", "astra"):
            reconstruct(warm, angles, method="sirt", iterations=2, backend=backend)
        case = f"{size}³ voxels, {n_angles} angles, {iterations} iterations"
        logger.info("speed: SIRT %s", case)
        kwargs = dict(method="sirt", iterations=iterations, positivity=True)
        astra_time, looped = timed(
            partial(reconstruct, tilt_series, angles, backend="astra", **kwargs),
            repeats,
            warmup=0,
        )
        batched_time, batched = timed(
            partial(reconstruct, tilt_series, angles, backend="matrix", **kwargs),
            repeats,
            warmup=0,
        )
        difference = float(np.linalg.norm(batched - looped) / np.linalg.norm(looped))
        logger.info("speed: SIRT %s: relative difference of the volumes %.1e", case, difference)
        rows.append(
            SpeedRow(
                "SIRT: ASTRA 2D loop over slices (A) / batched sparse (B)",
                case,
                astra_time,
                batched_time,
                astra_time / batched_time,
                "×",
            )
        )
    # the largest case against the bytes an iteration must move from memory
    matrix, transpose = projection_matrix(size, angles)
    voxels, rays = matrix.shape[1], matrix.shape[0]
    blocks = -(-voxels * size * 4 // block_bytes())
    streamed, gathered = sirt_traffic(matrix.nnz + transpose.nnz, voxels, rays, size, blocks)
    bandwidth = copy_bandwidth(100_000_000 if quick else 400_000_000)
    per_iteration, bound = batched_time / iterations, streamed / bandwidth
    rows.append(
        SpeedRow(
            "SIRT per iteration, batched (A) / its memory traffic at the copy bandwidth (B)",
            f"{case}; {streamed / 1e6:.0f} MB streamed + {gathered / 1e9:.2f} GB gathered from "
            f"cache per iteration, copy bandwidth {bandwidth / 1e9:.1f} GB/s",
            per_iteration,
            bound,
            per_iteration / bound,
            "×",
        )
    )
    return rows


# ------------------------------------------------------------------------------------------
# 3. end-to-end generation


def _generate(spec, workers: int, limit: int):
    """Generate ``limit`` samples into a fresh temporary store; return the report."""
    import tempfile

    from simgen.engine import generate

    with tempfile.TemporaryDirectory(prefix="aet-speed-") as tmp:
        report = generate(
            spec,
            os.path.join(tmp, f"{spec.name}.zarr"),
            workers=workers,
            limit=limit,
            progress=False,
        )
    if report.failed:
        raise RuntimeError(f"generation of {spec.name!r} failed for samples {report.failed[:3]}")
    return report


def _steady_seconds(report, workers: int) -> float:
    """Median seconds per sample, without each worker's first (import warm-up) sample.

    ``sample_seconds`` is in completion order, so each worker's first task is among the first
    ``workers`` entries.
    """
    seconds = report.sample_seconds
    kept = seconds[workers:] if len(seconds) > workers else seconds
    return float(statistics.median(kept))


def _cost(spec) -> float:
    """Relative cost of one sample: SIRT dominates and scales with voxels × angles × iterations."""
    return float(spec.size) ** 3 * spec.n_angles * spec.iterations


def _generation_rows(quick: bool, notes: list[str]) -> list[SpeedRow]:
    from simgen.catalog import default_catalog_path, get_dataset

    catalog = default_catalog_path()
    name, limit = ("smoke", 4) if quick else ("demo", 8)
    spec = get_dataset(name, catalog)
    target = get_dataset("pann-benchmark", catalog)
    case = f"{name}: {spec.size}³, {spec.n_angles} angles, first {limit} samples"
    rows, rates, steady = [], {}, {}
    from simgen.catalog.planning import resolve_align

    methods = [resolve_align(spec.align, row["noise"]) for row in spec.plan_rows()[:limit]]
    n_aligned = sum(m != "none" for m in methods)
    for workers in (1, 2):
        logger.info("speed: generating %s with %d worker(s)", case, workers)
        report = _generate(spec, workers, limit)
        rates[workers] = report.samples_per_hour
        aligned_seconds = list(report.sample_seconds)
        steady[workers] = _steady_seconds(report, workers)
        rows.append(
            SpeedRow(
                f"generation, {workers} worker{'s' if workers > 1 else ''}: end to end (A), "
                "median per sample (B)",
                case,
                report.seconds,
                steady[workers],
                rates[workers],
                "samples/h",
            )
        )
    import dataclasses

    logger.info("speed: generating %s with 2 workers without alignment", case)
    unaligned = _generate(dataclasses.replace(spec, align="none"), 2, limit)
    aligned_sum, unaligned_sum = sum(aligned_seconds), sum(unaligned.sample_seconds)
    rows.append(
        SpeedRow(
            "generation with alignment (A) / without (B), summed per-sample time, 2 workers",
            f"{case} ({n_aligned} of them aligned: "
            f"{', '.join(sorted(set(methods) - {'none'})) or 'none'})",
            aligned_sum,
            unaligned_sum,
            aligned_sum / unaligned_sum,
            "×",
        )
    )
    efficiency = rates[2] / (2.0 * rates[1])
    # Steady state: each worker busy all the time, so throughput(n) = n / t(n) per second.
    steady_efficiency = steady[1] / steady[2]
    rows.append(
        SpeedRow(
            "scaling efficiency rate(2) / (2·rate(1)), end to end",
            case,
            None,
            None,
            efficiency,
            "×",
        )
    )
    rows.append(
        SpeedRow(
            "scaling efficiency t(1) / t(2), per sample (steady state)",
            case,
            None,
            None,
            steady_efficiency,
            "×",
        )
    )

    if quick:
        # Too slow for a smoke run (creating the 29k-sample store alone takes a minute or more):
        # scale the measured per-sample time by the cost ratio instead.
        per_sample_2 = steady[2] * _cost(target) / _cost(spec)
        setup = 0.0
        source = (
            f"per-sample time at 2 workers scaled from {name} by voxels × angles × iterations "
            f"(×{_cost(target) / _cost(spec):.3g}); store set-up not included"
        )
    else:
        logger.info(
            "speed: generating 4 pann-benchmark samples with 2 workers (store set-up is slow)"
        )
        report = _generate(target, 2, 4)
        per_sample_2 = _steady_seconds(report, 2)
        setup = max(report.seconds - sum(report.sample_seconds) / 2.0, 0.0)
        rows.append(
            SpeedRow(
                "pann-benchmark generation, 2 workers: store set-up etc. (A), median per sample (B)",
                f"pann-benchmark: {target.size}³, {target.n_angles} angles, first 4 samples",
                setup,
                per_sample_2,
                report.samples_per_hour,
                "samples/h",
            )
        )
        source = "per-sample time measured on 4 pann-benchmark samples with 2 workers, plus its measured store set-up"
    n = target.n_samples
    for workers in PROJECTION_WORKERS:
        # t(1) = e·t(2); for n >= 2 workers each sample costs t(2) and n run at once.
        seconds = (
            n * per_sample_2 * steady_efficiency if workers == 1 else n * per_sample_2 / workers
        )
        rows.append(
            SpeedRow(
                f"projected full pann-benchmark, {workers} worker{'s' if workers > 1 else ''}",
                f"{n:,} samples",
                None,
                None,
                (setup + seconds) / 3600.0,
                "h",
            )
        )
    notes.append(
        f"Projection: {source}; 1 worker runs at t(1) = e·t(2) with the measured steady-state "
        f"efficiency e = {steady_efficiency:.2f}; n ≥ 2 workers are assumed to keep that same "
        "efficiency (one core each, no further contention, shared store not a bottleneck)."
    )
    return rows


# ------------------------------------------------------------------------------------------
# 3b. store set-up of the full catalogue entry


def _store_setup_rows() -> list[SpeedRow]:
    """Time from ``generate`` to the first task for ``pann-benchmark``: plan + empty store."""
    import tempfile
    from pathlib import Path

    from simgen.catalog import default_catalog_path, get_dataset
    from simgen.engine import open_or_create_store
    from simgen.store import read_samples

    spec = get_dataset("pann-benchmark", default_catalog_path())
    logger.info("speed: creating the pann-benchmark store (%d planned samples)", spec.n_samples)
    with tempfile.TemporaryDirectory(prefix="aet-speed-") as tmp:
        start = time.perf_counter()
        rows = spec.plan_rows()
        spec.plan(rows=rows)
        root = open_or_create_store(spec, Path(tmp) / "pb.zarr", rows, False)
        read_samples(root["complete"])  # what the engine reads before it starts
        seconds = time.perf_counter() - start
    return [
        SpeedRow(
            "pann-benchmark store set-up: plan + create + read flags (A)",
            f"{spec.n_samples:,} planned samples",
            seconds,
            None,
            seconds,
            "s",
        )
    ]


# ------------------------------------------------------------------------------------------
# table


def measure_speed(quick: bool = False, multislice: bool = True) -> tuple[list[SpeedRow], list[str]]:
    """Run every measurement once; return the rows and the footnotes.

    Parameters
    ----------
    quick
        Smaller cases (seconds instead of tens of minutes), for a smoke run.
    multislice
        Also time abTEM multislice and PRISM (a minute or two per projection on CPU).
    """
    notes: list[str] = []
    rows: list[SpeedRow] = []
    rows += _imaging_rows(quick, multislice, notes)
    rows += _sirt_rows(quick)
    rows += _generation_rows(quick, notes)
    if not quick:
        rows += _store_setup_rows()
    rows += _zernike_rows(quick)
    rows += _pann_rows(quick)
    rows += _shipped_pann_rows(quick)
    rows += _pann_stage_rows(quick)
    rows += _training_rows(quick, notes)
    notes.append(
        "Times are medians of the timed runs after a warm-up (1 run for abTEM, the 128³ cases and "
        "generation); ratios compare timings from this run only (shared, noisy machine)."
    )
    return rows, notes


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3g} s" if value < 1000 else f"{value:,.0f} s"


def _value(value: float, unit: str) -> str:
    text = f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"
    return f"{text}×" if unit == "×" else f"{text} {unit}"


def format_table(rows: list[SpeedRow], notes: list[str], header: str) -> str:
    """Markdown: a header line, the table (what, case, time A, time B, ratio / rate), footnotes."""
    lines = [
        header,
        "",
        "| what | case | time A | time B | ratio / rate |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.what} | {row.case} | {_seconds(row.time_a)} | {_seconds(row.time_b)} | {_value(row.value, row.unit)} |"
        )
    lines.append("")
    lines += [f"{i}. {note}" for i, note in enumerate(notes, start=1)]
    return "\n".join(lines) + "\n"


def run_speed(quick: bool = False, multislice: bool = True) -> str:
    """Measure the speed table in one run and return it as Markdown.

    Parameters
    ----------
    quick
        Smaller cases (32³ SIRT, the ``smoke`` dataset, 2,000 Zernike atoms, 32³ networks).
    multislice
        Time abTEM multislice and PRISM against the linear mode (slow: minutes).

    Returns
    -------
    str
        A header line (date, CPUs, torch threads), the table and its footnotes.
    """
    import datetime

    import torch

    start = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows, notes = measure_speed(quick=quick, multislice=multislice)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    header = (
        f"Speed, {datetime.datetime.now().isoformat(timespec='minutes')}: {machine_line()}; {cpus} CPUs, "
        f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
        f"{', quick' if quick else ''}; measured in {math.ceil(time.perf_counter() - start)} s; "
        f"load average (1 min) {load_start:.1f} at the start, {load_end:.1f} at the end"
    )
    return format_table(rows, notes, header)
