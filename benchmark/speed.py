"""Speed ratios of the suite's hot paths, measured in one run (``aet-bench speed``).

Each measurement warms up first (imports, FFTW plans, cached matrices, JIT), then times repeated
runs and keeps the median. The machine is shared and noisy, so what a table says is the *ratio*
of two timings taken minutes apart in the same run, not the absolute seconds.

Rows:

1. linear HAADF mode against abTEM multislice (and PRISM) for one projection of a Pt cluster;
2. batched sparse-matrix SIRT (threaded numba kernels) against looping ASTRA's own 2D CPU SIRT
   over the y-slices;
3. end-to-end generation throughput with 1 and 2 Dask workers, the scaling efficiency, the
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
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

__all__ = ["SpeedRow", "measure_speed", "format_table", "run_speed"]

logger = logging.getLogger(__name__)

PROJECTION_WORKERS = (1, 2, 16, 64, 256)


@dataclass(frozen=True)
class SpeedRow:
    """One line of the speed table.

    Parameters
    ----------
    what
        What is measured, naming the timings A and B.
    case
        The problem size.
    time_a, time_b
        Median wall times in seconds (``None`` where the row has no such timing).
    value
        The ratio or rate the row reports, in ``unit``.
    unit
        ``"×"`` for a ratio, else the unit of a rate or duration (``"samples/h"``, ``"h"``, ...).
    """

    what: str
    case: str
    time_a: float | None
    time_b: float | None
    value: float
    unit: str


def _timed(
    function: Callable[[], object], repeats: int, warmup: bool = True
) -> tuple[float, object]:
    """Median wall time (s) of ``repeats`` calls, after one untimed warm-up call if asked."""
    if warmup:
        function()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


# ------------------------------------------------------------------------------------------
# 1. linear mode vs abTEM multislice / PRISM


def _imaging_rows(quick: bool, multislice: bool, notes: list[str]) -> list[SpeedRow]:
    from simgen.calibration import wavelength
    from simgen.imaging import Microscope, simulate_tilt_series
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
    linear_time, _ = _timed(linear, repeats=5 if quick else 20)
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
        seconds, _ = _timed(
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
            warmup=False,
        )
        rows.append(SpeedRow(label, case, linear_time, seconds, seconds / linear_time, "×"))
    return rows


# ------------------------------------------------------------------------------------------
# 2. batched SIRT vs ASTRA per-slice SIRT


def _blob_phantom(size: int, rng: np.random.Generator, blobs: int = 60) -> np.ndarray:
    """Volume ``[z, y, x]`` of unit Gaussian blobs (σ = 1 voxel) inside the central 60 %."""
    grid = np.arange(size, dtype=np.float32)
    volume = np.zeros((size,) * 3, dtype=np.float32)
    centres = (size - 1) / 2 + rng.uniform(-0.3, 0.3, size=(blobs, 3)) * size
    for z, y, x in centres:
        gz, gy, gx = (np.exp(-((grid - c) ** 2) / 2.0) for c in (z, y, x))
        volume += gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return volume


def _sirt_rows(quick: bool) -> list[SpeedRow]:
    from simgen.reconstruct import project, projection_matrix, reconstruct

    cases = [(32, 15, 20, 3)] if quick else [(64, 29, 50, 3), (128, 51, 100, 1)]
    rows = []
    rng = np.random.default_rng(0)
    for size, n_angles, iterations, repeats in cases:
        angles = np.linspace(-70.0, 70.0, n_angles)
        tilt_series = project(_blob_phantom(size, rng), angles)
        projection_matrix(size, angles)  # build and cache the matrix outside the timing
        warm = tilt_series[:, : min(4, size), :]
        for backend in ("matrix", "astra"):
            reconstruct(warm, angles, method="sirt", iterations=2, backend=backend)
        case = f"{size}³ voxels, {n_angles} angles, {iterations} iterations"
        logger.info("speed: SIRT %s", case)
        kwargs = dict(method="sirt", iterations=iterations, positivity=True)
        astra_time, looped = _timed(
            partial(reconstruct, tilt_series, angles, backend="astra", **kwargs),
            repeats,
            warmup=False,
        )
        batched_time, batched = _timed(
            partial(reconstruct, tilt_series, angles, backend="matrix", **kwargs),
            repeats,
            warmup=False,
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
    from simgen.config import default_catalog_path, get_dataset

    catalog = default_catalog_path()
    name, limit = ("smoke", 4) if quick else ("demo", 8)
    spec = get_dataset(name, catalog)
    target = get_dataset("pann-benchmark", catalog)
    case = f"{name}: {spec.size}³, {spec.n_angles} angles, first {limit} samples"
    rows, rates, steady = [], {}, {}
    for workers in (1, 2):
        logger.info("speed: generating %s with %d worker(s)", case, workers)
        report = _generate(spec, workers, limit)
        rates[workers] = report.samples_per_hour
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

    from simgen.config import default_catalog_path, get_dataset
    from simgen.engine import _open_or_create
    from simgen.store import read_samples

    spec = get_dataset("pann-benchmark", default_catalog_path())
    logger.info("speed: creating the pann-benchmark store (%d planned samples)", spec.n_samples)
    with tempfile.TemporaryDirectory(prefix="aet-speed-") as tmp:
        start = time.perf_counter()
        rows = spec.plan_rows()
        spec.plan(rows=rows)
        root = _open_or_create(spec, Path(tmp) / "pb.zarr", rows, False)
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
# 5b. PANN with the shipped weights, stage by stage, and a training epoch


PARTICLE_NM = {32: 0.8, 64: 1.5, 128: 3.0}


def simulated_sample(size: int, seed: int = 0) -> dict:
    """A store-like sample dict of one decahedron in a ``size``³ volume at 0.4 Å.

    Parameters
    ----------
    size
        Volume side in voxels (the particle is 0.8, 1.5 or 3.0 nm for 32, 64 or 128).
    seed
        Seed of the particle and the noise.
    """
    from simgen.sample import SampleSpec, simulate_sample

    spec = SampleSpec(
        index=0,
        morphology="decahedron",
        composition="L10:FePt",
        size_nm=PARTICLE_NM.get(size, size * 0.4 / 20),
        dose=1e4,
        angles=tuple(np.linspace(-70, 70, 29)),
        sampling=0.4,
        size=size,
        noise=("poisson",),
        noise_model="poisson",
        thermal_sigma=0.05,
        structure_seed=seed,
    )
    s = simulate_sample(spec, np.random.default_rng(seed))
    return {
        "volume": s.volume,
        "sampling": 0.4,
        "tilt_series": s.tilt_series,
        "angles": s.angles,
        "dose": 1e4,
        "shifts": s.shifts,
        "angles_estimated": s.angles_estimated,
        "n_atoms": len(s.atoms),
    }


def _best(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def stage_times(model, sample: dict, repeats: int = 1) -> dict:
    """Seconds per stage of ``model.predict`` on ``sample`` (best of ``repeats``), and counts.

    Parameters
    ----------
    model
        A :class:`models.pann.PannModel` with both stages trained.
    sample
        A store-like sample (:func:`simulated_sample`).
    repeats
        Timed runs per stage; the best is kept.
    """
    import torch

    from models.pann import NOT_AN_ATOM, candidate_features
    from models.refine import refine_sample

    volume, sampling = sample["volume"], sample["sampling"]
    out = {}
    out["stage 1 (sliding window)"], refined = _best(lambda: model.refine(volume), repeats)
    out["tracing"], cand = _best(lambda: model.candidates(refined, sampling), repeats)
    positions = np.asarray(cand.positions, dtype=np.float64).reshape(-1, 3)
    out["Zernike features"], _ = _best(
        lambda: candidate_features(refined, volume, positions, sampling, model.config), repeats
    )
    x = model.graph_inputs(refined, volume, positions, sampling)[0]

    def stage2():
        from models.species import build_graph

        graph = build_graph(torch.as_tensor(positions, dtype=torch.float32), k=model.config.knn)
        with torch.inference_mode():
            return model.stage2.eval()(x, *graph)

    out["stage 2 (graph + transformer)"], _ = _best(stage2, repeats)
    probs = model.classify(refined, volume, positions, sampling)
    labels = probs.argmax(axis=1)
    keep = np.array([model.config.classes[i] != NOT_AN_ATOM for i in labels], dtype=bool)
    symbols = [model.config.classes[i] for i in labels[keep]]
    out["refinement against the tilt series"], _ = _best(
        lambda: refine_sample(sample, positions[keep], symbols), repeats
    )
    out["predict, all stages"], _ = _best(
        lambda: model.predict(volume, sampling, measurement=sample), repeats
    )
    out["_candidates"] = len(positions)
    out["_atoms"] = int(keep.sum())
    return out


def _shipped_pann_rows(quick: bool) -> list[SpeedRow]:
    from pathlib import Path

    import torch

    from models.pann import PannModel

    weights = Path(__file__).resolve().parents[1] / "models" / "weights" / "demo"
    if not (weights / "pann.pt").is_file():
        return []
    model = PannModel.load(weights)
    rows = []
    for size in (32,) if quick else (64, 128):
        volume = _blob_phantom(size, np.random.default_rng(size), blobs=size * 3)
        logger.info("speed: PANN predict with the shipped weights on %d³", size)
        seconds, prediction = _timed(
            partial(model.predict, volume, model.config.sampling), 1, warmup=size <= 64
        )
        rows.append(
            SpeedRow(
                f"PANN predict, shipped weights, {torch.get_num_threads()} torch threads (A)",
                f"{size}³ blob volume, {prediction.extra['n_candidates']:,} candidates",
                seconds,
                None,
                seconds,
                "s/volume",
            )
        )
    return rows


def _pann_stage_rows(quick: bool) -> list[SpeedRow]:
    """PANN predict with the shipped weights on a simulated sample, stage by stage."""
    from pathlib import Path

    import torch

    from models.pann import PannModel

    weights = Path(__file__).resolve().parents[1] / "models" / "weights" / "demo"
    if not (weights / "pann.pt").is_file():
        return []
    model = PannModel.load(weights)
    size = 32 if quick else 64
    sample = simulated_sample(size)
    model.predict(sample["volume"], sample["sampling"], measurement=sample)  # warm-up
    logger.info("speed: PANN stages with refinement on a simulated %d³ sample", size)
    times = stage_times(model, sample)
    case = (
        f"{size}³ simulated decahedron, {sample['n_atoms']} atoms, {times['_candidates']} "
        f"candidates, {torch.get_num_threads()} torch threads"
    )
    total = times["predict, all stages"]
    rows = []
    for key, seconds in times.items():
        if key.startswith("_") or key == "predict, all stages":
            continue
        rows.append(
            SpeedRow(
                f"PANN stage: {key} (A) / whole predict (B)",
                case,
                seconds,
                total,
                seconds / total,
                "×",
            )
        )
    rows.append(
        SpeedRow(
            "PANN predict with refinement, shipped weights (A)",
            case,
            total,
            None,
            total,
            "s/volume",
        )
    )
    return rows


def _training_rows(quick: bool, notes: list[str]) -> list[SpeedRow]:
    import torch
    import torch.nn.functional as F

    from models.pann import PannConfig, PannModel
    from simgen.config import default_catalog_path, get_dataset

    config = PannConfig(elements=("Fe", "Pt"))
    target = get_dataset("pann-benchmark", default_catalog_path())
    size = 32 if quick else target.size
    net = PannModel(config).stage1.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    volume = torch.from_numpy(_blob_phantom(size, np.random.default_rng(3)))[None, None]
    slab = min(config.slab, size)
    x = torch.cat([volume[:, :, :, :slab, :]] * config.batch_size)
    origins = [(0, 0, 0)] * config.batch_size

    def step():
        loss = F.mse_loss(net(x, volume, origins), x * 1.1)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    logger.info("speed: PANN stage-1 training step on CPU, %d³", size)
    seconds, _ = _timed(step, 1 if quick else 3)
    fractions = dict(target.split.fractions)
    n_train = int(round(target.n_samples * fractions.get("train", 1.0)))
    steps = math.ceil(n_train / config.batch_size)
    per_step = seconds * (target.size / size) ** 3
    rows = [
        SpeedRow(
            "PANN stage-1 training step on CPU (A), voxel loss only",
            f"batch {config.batch_size} slabs {size}×{slab}×{size} + global {size}³",
            seconds,
            None,
            seconds,
            "s/step",
        )
    ]
    for workers in (1, 8, 64):
        rows.append(
            SpeedRow(
                f"projected stage-1 epoch over the pann-benchmark train split, {workers} CPU "
                f"worker{'s' if workers > 1 else ''} (data parallel)",
                f"{n_train:,} samples, {steps:,} steps",
                None,
                None,
                steps * per_step / workers / 3600.0,
                "h",
            )
        )
    notes.append(
        "Training projection: one epoch = every train-split sample once as a slab "
        f"({config.batch_size} per step); step time measured on this CPU"
        + (f", scaled from {size}³ by volume" if size != target.size else "")
        + "; n workers assumed ideal data parallel (no all-reduce cost). GPU step times come "
        "from scripts/gpu_check.py, which has not run on a GPU."
    )
    return rows


# ------------------------------------------------------------------------------------------
# 4. Zernike descriptors


def _zernike_rows(quick: bool) -> list[SpeedRow]:
    from models.zernike import atom_descriptors

    size, sampling, radius, order = 128, 0.4, 1.6, 8
    n_atoms = 2000 if quick else 10000
    rng = np.random.default_rng(0)
    volume = rng.random((size,) * 3, dtype=np.float32)
    positions = rng.uniform(0, (size - 1) * sampling, size=(n_atoms, 3))
    case = f"{size}³ volume, {n_atoms:,} atoms, order {order}, radius {radius} Å ({radius / sampling:g} voxels)"
    logger.info("speed: Zernike, %s", case)
    seconds, _ = _timed(
        lambda: atom_descriptors(volume, positions, sampling, radius, order=order),
        3 if quick else 5,
    )
    return [
        SpeedRow(
            "3D Zernike invariants, patches included (A)",
            case,
            seconds,
            None,
            n_atoms / seconds,
            "atoms/s",
        )
    ]


# ------------------------------------------------------------------------------------------
# 5. PANN and U-Net inference


def _pann_rows(quick: bool) -> list[SpeedRow]:
    import torch

    from models.pann import PannConfig, PannModel, candidate_features
    from models.unet3d import UNet3D

    sampling = 0.4
    model = PannModel(PannConfig(elements=("Fe", "Pt")))
    rng = np.random.default_rng(0)
    logger.info("speed: PANN warm-up")
    warm = rng.random((32,) * 3, dtype=np.float32)
    model.refine(warm)
    sizes = [(32, 1)] if quick else [(64, 3), (128, 1)]
    rows = []
    refine_times = {}
    for size, repeats in sizes:
        volume = rng.random((size,) * 3, dtype=np.float32)
        logger.info("speed: PANN inference without stage 2 on %d³", size)
        refine_time, refined = _timed(partial(model.refine, volume), repeats, warmup=False)

        def trace_and_describe(refined=refined, volume=volume):
            candidates = model.candidates(refined, sampling)
            positions = np.asarray(candidates.positions, dtype=np.float64)
            candidate_features(refined, volume, positions, sampling, model.config)
            return len(positions)

        rest_time, n_candidates = _timed(trace_and_describe, repeats, warmup=False)
        refine_times[size] = refine_time
        rows.append(
            SpeedRow(
                "PANN on CPU, untrained: stage-1 refine (A), + tracing + Zernike features (B)",
                f"{size}³ random volume, {n_candidates:,} candidates",
                refine_time,
                refine_time + rest_time,
                refine_time + rest_time,
                "s/volume",
            )
        )
    size = sizes[0][0]
    unet = UNet3D().eval()
    x = torch.from_numpy(rng.random((1, 1, size, size, size), dtype=np.float32))

    def forward():
        with torch.no_grad():
            return unet(x)

    logger.info("speed: 3D U-Net forward on %d³", size)
    unet_time, _ = _timed(forward, 1 if quick else 3)
    rows.append(
        SpeedRow(
            "3D U-Net baseline forward (A)",
            f"{size}³ random volume",
            unet_time,
            None,
            unet_time,
            "s/volume",
        )
    )
    rows.append(
        SpeedRow(
            "PANN stage-1 refine (A) / 3D U-Net forward (B)",
            f"{size}³ random volume",
            refine_times[size],
            unet_time,
            refine_times[size] / unet_time,
            "×",
        )
    )
    return rows


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
        f"Speed, {datetime.datetime.now().isoformat(timespec='minutes')}: {cpus} CPUs, "
        f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
        f"{', quick' if quick else ''}; measured in {math.ceil(time.perf_counter() - start)} s; "
        f"load average (1 min) {load_start:.1f} at the start, {load_end:.1f} at the end"
    )
    return format_table(rows, notes, header)
