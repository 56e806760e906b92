"""``aet-bench speed``: the measurements of the models — 3D Zernike invariants, PANN inference
(stage by stage, with the shipped weights), the 3D U-Net forward pass and a stage-1 training step
with the projected epoch over ``pann-benchmark``. Collected by :func:`benchmark.speed.measure_speed`.
"""

from __future__ import annotations

import logging
import math
import time
from functools import partial

import numpy as np

from benchmark.speed_base import SpeedRow, blob_phantom, timed

__all__ = ["simulated_sample", "stage_times"]

logger = logging.getLogger(__name__)


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
        "elements": sorted(set(s.atoms.get_chemical_symbols())),
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
    from ase.data import atomic_numbers

    from models.pann import NOT_AN_ATOM, candidate_features, refine_config
    from models.refine import refine_sample
    from models.species_refine import reassign_species

    volume, sampling = sample["volume"], sample["sampling"]
    elements = sample["elements"]
    out = {}
    out["stage 1 (sliding window)"], refined = _best(lambda: model.restore_volume(volume), repeats)
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
    probs = model.classify(refined, volume, positions, sampling, elements)
    labels = probs.argmax(axis=1)
    keep = np.array([model.config.classes[i] != NOT_AN_ATOM for i in labels], dtype=bool)
    symbols = [model.config.classes[i] for i in labels[keep]]
    config = refine_config()  # what PannModel.predict runs, for both refits
    out["refinement against the tilt series"], result = _best(
        lambda: refine_sample(sample, positions[keep], symbols, config=config), repeats
    )
    present = sorted(set(elements or symbols), key=atomic_numbers.__getitem__)
    out["species step (amplitude refit + mixture)"], _ = _best(
        lambda: reassign_species(
            sample, result.positions, symbols, present=present, refine_config=config
        ),
        repeats,
    )
    out["predict, all stages"], _ = _best(
        lambda: model.predict(volume, sampling, elements, measurement=sample), repeats
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
        volume = blob_phantom(size, np.random.default_rng(size), blobs=size * 3)
        logger.info("speed: PANN predict with the shipped weights on %d³", size)
        seconds, prediction = timed(
            partial(model.predict, volume, model.config.sampling, ["Pt"]), 1, warmup=int(size <= 64)
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
    model.predict(sample["volume"], sample["sampling"], sample["elements"], measurement=sample)
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
    from simgen.catalog import default_catalog_path, get_dataset

    config = PannConfig(elements=("Fe", "Pt"))
    target = get_dataset("pann-benchmark", default_catalog_path())
    size = 32 if quick else target.size
    net = PannModel(config).stage1.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    volume = torch.from_numpy(blob_phantom(size, np.random.default_rng(3)))[None, None]
    slab = min(config.slab, size)
    x = torch.cat([volume[:, :, :, :slab, :]] * config.batch_size)
    origins = [(0, 0, 0)] * config.batch_size

    def step():
        loss = F.mse_loss(net(x, volume, origins), x * 1.1)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    logger.info("speed: PANN stage-1 training step on CPU, %d³", size)
    seconds, _ = timed(step, 1 if quick else 3)
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
    seconds, _ = timed(
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
    model.restore_volume(warm)
    sizes = [(32, 1)] if quick else [(64, 3), (128, 1)]
    rows = []
    refine_times = {}
    for size, repeats in sizes:
        volume = rng.random((size,) * 3, dtype=np.float32)
        logger.info("speed: PANN inference without stage 2 on %d³", size)
        refine_time, refined = timed(partial(model.restore_volume, volume), repeats, warmup=0)

        def trace_and_describe(refined=refined, volume=volume):
            candidates = model.candidates(refined, sampling)
            positions = np.asarray(candidates.positions, dtype=np.float64)
            candidate_features(refined, volume, positions, sampling, model.config)
            return len(positions)

        rest_time, n_candidates = timed(trace_and_describe, repeats, warmup=0)
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
    unet_time, _ = timed(forward, 1 if quick else 3)
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
