"""Training of PANN (both stages) and of the 3D U-Net baseline on a simgen store.

Data stream from the store (:mod:`models.data`): a sample's chunks are read when a draw needs
them, in DataLoader workers when ``num_workers > 0``, so memory does not grow with the store.
Under ``torchrun`` every rank trains a DistributedDataParallel replica on its share of each global
batch (:mod:`models.distributed`); rank 0 writes checkpoints, weights and curves.

Stage 1 trains on slabs that span the whole volume in z and x and ``slab`` voxels along the tilt
axis y. Because the tilt axis is y, such a slab projects onto exactly the same band of rows of the
measured tilt series, so the physics term is exact on a patch (up to the PSF's reach, whose
rows are left out). The physics term is the Poisson deviance between the measured rows
(background subtracted as ``simgen.sample`` does, dose-normalised) and the calibrated forward
model of the prediction: projection at the sample's true tilt angles, then the probe PSF. The
targets are blurred by a Gaussian of the store's target width, so the measured rows are blurred
by the same Gaussian before the comparison: both sides are then the atoms ⊛ PSF ⊛ Gaussian, and
the ideal target fits the data better than any reconstruction. The voxel term weights each voxel
so that every atom counts alike whatever its element (:func:`models.data.element_weights`).

Stage 2 trains the species Transformer on candidates traced in stage-1 outputs, labelled by
one-to-one matching to the truth within ``match_radius``; candidates and features are cached
per sample in the run directory.

Checkpoints are written every few steps; rerunning the same command resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.pann import NOT_AN_ATOM, PannConfig, PannModel, build_stage2
from models.weights import CHECKPOINT_ERRORS, DEFAULT_WEIGHTS, load_checkpoint, save_atomic
from simgen.outputs import atomic_path, check_output, write_marker, write_text_atomic
from simgen.progress import progress_bar

__all__ = [
    "train_pann",
    "train_unet3d",
    "load_unet3d",
    "load_training_samples",
    "label_candidates",
    "train_stage2_only",
    "fit_stage2",
    "stage2_confusion",
    "class_weights",
    "physics_loss",
    "weighted_voxel_loss",
]

logger = logging.getLogger(__name__)

CHECKPOINT_EVERY = 25  # steps


# ---------------------------------------------------------------------------- data
def load_training_samples(store, split: str, limit: int | None = None) -> list[dict]:
    """The complete samples of one split as dicts of numpy arrays (small stores and tests only;
    training streams with :class:`models.data.StoreSamples`)."""
    from models.data import StoreSamples

    samples = StoreSamples(store, split, limit=limit)
    return [samples[k] for k in range(len(samples))]


def _loader(dataset, sampler, num_workers: int):
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )


def _open_run_dir(run_dir, command: str, world, param: str = "run_dir") -> Path:
    """A new or empty folder, or one of our runs (resumed); never a folder of other files.

    Rank 0 checks and marks the folder; the other ranks wait for it.
    """
    from models.distributed import barrier

    run_dir = Path(run_dir)
    if world.is_main:
        check_output(run_dir, "run", resume=True, param=param)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_marker(run_dir, "run", command)
    barrier(world)
    return run_dir


def _autocast(device: str):
    """Mixed precision on GPUs: bf16 where supported (no scaler needed), else fp16 + GradScaler."""
    if not device.startswith("cuda"):
        return nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def context():
        return torch.autocast("cuda", dtype=dtype)

    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return context, scaler


# ---------------------------------------------------------------------------- stage 1
def weighted_voxel_loss(prediction, target, weights):
    """Per-sample weighted mean squared error, averaged over the batch.

    Normalising per sample (not over the batch) makes the mean over a global batch split across
    ranks equal to the single-process loss.
    """
    err = weights * (prediction.float() - target) ** 2
    dims = tuple(range(1, err.ndim))
    return (err.sum(dims) / weights.sum(dims)).mean()


def physics_loss(prediction, measured, angles, offset, psf, blur):
    """Poisson deviance of the measured rows under the calibrated forward model of a prediction.

    Args:
        prediction: (B, 1, Z, h, X) predicted slabs (volume units / scale).
        measured: (B, A, h, X) background-subtracted, dose-normalised rows (same units).
        angles: (B, A) tilt angles (degrees) of the projections.
        offset: (B,) background per dose (same units).
        psf: Probe PSF kernel (:func:`models.projector.psf_kernel`).
        blur: The targets' Gaussian kernel (:func:`models.projector.gaussian_kernel`).

    Returns:
        Mean over the batch of the per-sample mean deviance; rows within the kernels' reach of a
        slab edge are left out (they depend on voxels outside the slab).
    """
    from models.projector import blur_series, poisson_deviance, project

    reach = max(np.shape(psf)[-1], np.shape(blur)[-1]) // 2
    rows = prediction.shape[3]
    keep = slice(reach, rows - reach) if rows > 2 * reach else slice(None)
    losses = []
    for b in range(prediction.shape[0]):
        model = blur_series(project(prediction[b : b + 1].float(), angles[b]), psf)
        data = blur_series(measured[b : b + 1].float(), blur)
        losses.append(poisson_deviance(model[:, :, keep], data[:, :, keep], offset[b]))
    return torch.stack(losses).mean()


def _plot_curves(history: dict, out: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(history), figsize=(4.5 * len(history), 3.4), squeeze=False)
    for ax, (name, values) in zip(axes[0], history.items()):
        values = np.asarray(values, dtype=float)
        ax.plot(values, lw=0.8, alpha=0.5)
        if len(values) > 10:
            k = max(len(values) // 20, 2)
            ax.plot(
                np.arange(k - 1, len(values)), np.convolve(values, np.ones(k) / k, "valid"), lw=1.8
            )
        ax.set_title(name)
        ax.set_xlabel("step" if "stage1" in name or "unet" in name else "epoch")
        if values.size and np.all(values > 0):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def train_stage1(
    model: PannModel, samples, run_dir: Path, *, world=None, progress=True, num_workers: int = 0
) -> list[float]:
    """Stage-1 optimiser steps (resumable); returns the voxel loss per step (mean over ranks)."""
    from models.data import SlabDraws, StepBatches
    from models.distributed import World, mean_over_ranks
    from models.projector import gaussian_kernel, psf_kernel
    from simgen.imaging import Microscope

    world = world or World()
    cfg, device = model.config, world.device
    net = model.stage1.to(device).train()
    train_net = net
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_net = DistributedDataParallel(
            net, device_ids=[torch.device(device).index] if device.startswith("cuda") else None
        )
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(cfg.stage1_steps, 2), pct_start=0.1
    )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "stage1.ckpt"
    start, losses = 0, []
    if ckpt.exists():
        state = load_checkpoint(ckpt, param="resume point", map_location=device)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, losses = int(state["step"]), list(state["losses"])
        logger.info("resuming stage 1 at step %d", start)
    psf = psf_kernel(samples.sampling, microscope=Microscope.from_dict(samples.microscope))
    blur = gaussian_kernel(samples.sampling, samples.target_sigma)
    draws = SlabDraws(
        samples, slab=cfg.slab, total=cfg.stage1_steps * cfg.batch_size, seed=cfg.seed
    )
    batches = StepBatches(start, cfg.stage1_steps, cfg.batch_size, world.rank, world.world_size)
    autocast, scaler = _autocast(device)
    bar = progress_bar(
        range(start, cfg.stage1_steps),
        total=cfg.stage1_steps,
        initial=start,
        desc="stage 1",
        enabled=progress and world.is_main,
    )
    for step, batch in zip(bar, _loader(draws, batches, num_workers)):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        origins = [(0, int(y0), 0) for y0 in batch["y0"]]
        with autocast():
            pred = train_net(batch["x"], batch["g"], origins)
        voxel = weighted_voxel_loss(pred, batch["t"], batch["w"])
        loss = voxel
        if cfg.physics_weight > 0:
            loss = loss + cfg.physics_weight * physics_loss(
                pred, batch["meas"], batch["angles"], batch["offset"], psf, blur
            )
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        sched.step()
        losses.append(mean_over_ranks(float(voxel.detach()), world))
        bar.set_postfix(loss=f"{losses[-1]:.3g}")
        if world.is_main and ((step + 1) % CHECKPOINT_EVERY == 0 or step + 1 == cfg.stage1_steps):
            save_atomic(
                {
                    "model": net.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "step": step + 1,
                    "losses": losses,
                },
                ckpt,
            )
    net.eval()
    return losses


# ---------------------------------------------------------------------------- stage 2
def label_candidates(
    candidates: np.ndarray, true_positions, true_numbers, classes, radius: float
) -> np.ndarray:
    """Class index of each candidate: its matched true atom's element, else "not an atom"."""
    from ase.data import chemical_symbols

    from simgen.matching import match_atoms

    labels = np.full(len(candidates), classes.index(NOT_AN_ATOM), dtype=np.int64)
    if len(candidates) and len(true_positions):
        m = match_atoms(candidates, true_positions, radius=radius)
        for p, t in zip(m.pred_idx, m.true_idx):
            labels[p] = classes.index(chemical_symbols[int(true_numbers[t])])
    return labels


def _stage1_digest(model: PannModel) -> str:
    """A short hash of the stage-1 weights, the stage-2 settings and the classes (keys the graph
    cache)."""
    h = hashlib.sha256()
    for name, value in sorted(model.stage1.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    cfg = model.config
    h.update(
        json.dumps(
            [cfg.zernike_order, cfg.zernike_radius, cfg.trace_threshold, cfg.match_radius]
            + list(cfg.classes)  # the labels' class indices
        ).encode()
    )
    return h.hexdigest()[:16]


def _fill_graph_cache(model: PannModel, samples, cache, world, *, progress=True) -> None:
    """Trace and featurise the samples of this rank that the cache lacks (resumable)."""
    from models.pann import candidate_features

    cfg = model.config
    mine = range(world.rank, len(samples), world.world_size)
    todo = [k for k in mine if not cache.has(int(samples.indices[k]))]
    for k in progress_bar(todo, desc="stage 2 graphs", enabled=progress and world.is_main):
        s = samples[k]
        refined = model.refine(s["volume"], device=world.device)
        positions = np.asarray(
            model.candidates(refined, float(s["sampling"])).positions, dtype=np.float64
        ).reshape(-1, 3)
        if len(positions) >= 2:
            features = candidate_features(
                refined, s["volume"], positions, float(s["sampling"]), cfg
            )
            labels = label_candidates(
                positions, s["positions"], s["numbers"], list(cfg.classes), cfg.match_radius
            )
        else:
            features, labels = np.zeros((len(positions), 0), np.float32), np.zeros(0, np.int64)
        cache.write(int(s["index"]), positions, features, labels)


def _present(samples, index: int) -> tuple[str, ...]:
    """Elements of one sample's true atoms (what a user states and inference masks to)."""
    from ase.data import chemical_symbols

    numbers = samples._open()._numbers(int(index))
    return tuple(sorted({chemical_symbols[int(z)] for z in np.unique(numbers)}))


def _items(samples, cache) -> list[tuple]:
    """Stage-2 training items of a selection: (cache, sample index, elements present)."""
    if samples is None:
        return []
    return [(cache, int(i), _present(samples, int(i))) for i in samples.indices]


def _graph(item, mean, std, config):
    """Standardised stage-2 inputs of one cached sample, or None (fewer than two candidates)."""
    from models.pann import stage2_features
    from models.species import build_graph

    cache, index, present = item
    positions, features, labels = cache.read(index)
    if len(positions) < 2:
        return None
    features = stage2_features(features, config, present)
    ei, ea = build_graph(torch.as_tensor(positions, dtype=torch.float32), k=config.knn)
    x = torch.as_tensor((features - mean) / std, dtype=torch.float32)
    return x, ei, ea, torch.as_tensor(labels), _allowed(config, present)


def _allowed(config, present) -> torch.Tensor:
    """Classes the loss and the prediction may choose: the elements present and "none" (v2)."""
    if config.stage2_features == 1:
        return torch.ones(len(config.classes), dtype=torch.bool)
    return torch.tensor([c in present or c == NOT_AN_ATOM for c in config.classes])


def class_weights(counts, power: float = 1.0) -> torch.Tensor:
    """Cross-entropy weights ``(total / (classes · count))**power``, at most 10.

    ``power=1`` gives every class the same total weight; ``power=0.5`` only half-way (in log)
    from plain cross-entropy, so rare classes are not favoured where candidates are ambiguous.
    ``counts[c]`` labelled candidates of class ``c``; absent classes get weight 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    balanced = counts.sum() / np.maximum(counts, 1) / len(counts)
    return torch.as_tensor(np.where(counts > 0, balanced**power, 0.0), dtype=torch.float32).clamp(
        max=10.0
    )


def train_stage2(
    model: PannModel, train_samples, val_samples, run_dir: Path, *, world=None, progress=True
) -> dict:
    """Fill the per-sample graph cache (sharded over ranks) and train stage 2 (on rank 0)."""
    from models.data import GraphCache
    from models.distributed import World, barrier

    world = world or World()
    cache = GraphCache(Path(run_dir) / "stage2_cache" / _stage1_digest(model))
    _fill_graph_cache(model, train_samples, cache, world, progress=progress)
    if val_samples is not None:
        _fill_graph_cache(model, val_samples, cache, world, progress=progress)
    barrier(world)
    if not world.is_main:
        return {"stage2 loss": [], "stage2 val accuracy": []}
    return fit_stage2(
        model, _items(train_samples, cache), _items(val_samples, cache), progress=progress
    )


def fit_stage2(model: PannModel, train_items, val_items, *, progress=True) -> dict:
    """Train ``model.stage2`` anew on cached graphs; keep the epoch best on validation.

    Args:
        model: Its config (``stage2_features``, ``stage2_epochs``, ``lr``, ``seed``...) is used;
            ``stage2``, ``feature_mean`` and ``feature_std`` are replaced.
        train_items: (cache, sample index, elements present) per training sample.
        val_items: The same for validation samples (empty: select on the training samples).

    The loss is class-weighted (:func:`class_weights`; every class counts alike) and, for
    ``stage2_features=2``, sees only the elements present and "none". The kept epoch has the
    best balanced accuracy (mean recall over the classes present) on ``val_items``.
    """
    cfg = model.config
    # Streaming statistics: one graph in memory at a time.
    n, total, total_sq, counts, width = 0, 0.0, 0.0, np.zeros(len(cfg.classes)), None
    from models.pann import stage2_features

    for cache, i, present in train_items:
        positions, features, labels = cache.read(i)
        if len(positions) < 2:
            continue
        features = stage2_features(features, cfg, present)
        width = features.shape[1]
        n += len(features)
        total = total + features.sum(axis=0, dtype=np.float64)
        total_sq = total_sq + (features.astype(np.float64) ** 2).sum(axis=0)
        counts += np.bincount(labels, minlength=len(cfg.classes))
    if n == 0:
        raise ValueError("data: stage 1 found no candidates in the training volumes")
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0)) + 1e-6
    model.feature_mean, model.feature_std = mean.astype(np.float32), std.astype(np.float32)
    weights = class_weights(counts, cfg.class_weight_power)
    logger.info("stage 2: %d candidates, per class %s", n, dict(zip(cfg.classes, counts.tolist())))
    net = build_stage2(cfg, width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2]))
    history = {"stage2 loss": [], "stage2 val accuracy": [], "stage2 val balanced accuracy": []}
    best, best_state = -1.0, None
    for _epoch in progress_bar(range(cfg.stage2_epochs), desc="stage 2", enabled=progress):
        net.train()
        loss_sum, graphs = 0.0, 0
        for k in rng.permutation(len(train_items)):
            g = _graph(train_items[k], mean, std, cfg)
            if g is None:
                continue
            x, ei, ea, y, allowed = g
            logits = net(x, ei, ea).masked_fill(~allowed, -1e4)
            loss = F.cross_entropy(logits, y, weight=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum, graphs = loss_sum + loss.item(), graphs + 1
        history["stage2 loss"].append(loss_sum / max(graphs, 1))
        confusion = stage2_confusion(net, val_items or train_items, mean, std, cfg)
        acc, balanced = _accuracies(confusion)
        history["stage2 val accuracy"].append(acc)
        history["stage2 val balanced accuracy"].append(balanced)
        logger.info("stage 2 epoch %d: val accuracy %.4f, balanced %.4f", _epoch, acc, balanced)
        if balanced >= best:
            best, best_state = balanced, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    model.stage2 = net
    return history


def stage2_confusion(net, items, mean, std, config) -> np.ndarray:
    """Confusion matrix (rows: true class, columns: predicted) of stage 2 on cached graphs, the
    logits masked to each sample's elements (+ "none") as inference does."""
    net.eval()
    k = len(config.classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    with torch.no_grad():
        for cache, i, present in items:
            g = _graph((cache, i, present), mean, std, config)
            if g is None:
                continue
            x, ei, ea, y, _ = g
            allowed = torch.tensor([c in present or c == NOT_AN_ATOM for c in config.classes])
            pred = net(x, ei, ea).masked_fill(~allowed, float("-inf")).argmax(-1)
            np.add.at(confusion, (y.numpy(), pred.numpy()), 1)
    return confusion


def _accuracies(confusion: np.ndarray) -> tuple[float, float]:
    """Overall accuracy and balanced accuracy (mean recall over the classes present)."""
    support = confusion.sum(axis=1)
    acc = float(np.trace(confusion) / max(support.sum(), 1))
    has = support > 0
    balanced = float(np.mean(np.diag(confusion)[has] / support[has])) if has.any() else 0.0
    return acc, balanced


# ---------------------------------------------------------------------------- entry points
def _write_config(run_dir: Path, config: dict, world, num_workers: int, **extra) -> None:
    record = {
        **config,
        "world_size": world.world_size,
        "global_batch": extra.pop("global_batch"),
        "device": world.device.split(":")[0],
        "num_workers": num_workers,
        **extra,
    }
    write_text_atomic(run_dir / "config.json", json.dumps(record, indent=2))


#: Configuration fields that fix the stage-1 network's shape (a warm start needs them equal).
_STAGE1_SHAPE = ("base_channels", "levels", "global_size", "slab")


def _warm_start(model: PannModel, init) -> dict:
    """Load stage 1 of the weights ``init`` into ``model``; return a record for config.json."""
    source = PannModel.load(init)
    different = {
        f: (getattr(source.config, f), getattr(model.config, f))
        for f in _STAGE1_SHAPE
        if getattr(source.config, f) != getattr(model.config, f)
    }
    if different:
        raise ValueError(
            f"init={str(init)!r}: stage 1 of these weights has another shape "
            f"({', '.join(f'{k}={a} here {b}' for k, (a, b) in different.items())})"
        )
    model.stage1.load_state_dict(source.stage1.state_dict())
    path = Path(init) / "pann.pt" if Path(init).is_dir() else Path(init)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    logger.info("stage 1 starts from %s (sha256 %s)", path, digest[:12])
    return {"weights": str(path), "sha256": digest}


def _selection(store, split, limit):
    from models.data import StoreSamples

    try:
        return StoreSamples(store, split, limit=limit)
    except ValueError:
        return None


def train_pann(
    store,
    run_dir,
    config: PannConfig | None = None,
    *,
    progress=True,
    limit=None,
    device: str = "auto",
    num_workers: int = 0,
    init=None,
) -> PannModel:
    """Train both PANN stages on the train split of ``store``; write ``run_dir/pann.pt``.

    Rerunning with the same ``run_dir`` resumes stage 1 from its last checkpoint and stage 2
    from its graph cache. Under ``torchrun`` each rank trains on its share of every global batch
    (``config.batch_size`` draws per step over all ranks); rank 0 writes the files.

    Args:
        store: simgen store with a ``train`` (and optionally ``val``) split.
        run_dir: Run directory.
        config: Hyperparameters (default :class:`PannConfig`).
        progress: Show progress bars (rank 0).
        limit: Use at most this many samples per split.
        device: ``auto``, ``cpu`` or ``cuda``.
        num_workers: DataLoader worker processes per rank (0 reads in the training process).
        init: PANN weights (run directory or ``pann.pt``) whose stage 1 starts this run (a
            warm start; the stage-1 architecture must match). Stage 2 is always trained anew. A
            resumed run continues from its own checkpoint instead.
    """
    from models.data import StoreSamples
    from models.distributed import barrier, setup, teardown

    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers={num_workers!r}: expected a non-negative integer")
    import torch.distributed as dist

    joined = not dist.is_initialized()
    world = setup(device)
    try:
        samples = StoreSamples(store, "train", limit=limit)
        val = _selection(store, "val", limit)
        config = config or PannConfig()
        if config.batch_size % world.world_size:
            raise ValueError(
                f"batch_size={config.batch_size}: expected a multiple of the world size "
                f"{world.world_size} (the global batch is split evenly over ranks)"
            )
        run_dir = _open_run_dir(run_dir, "pann train", world)
        if not config.elements:
            names = set(samples.elements()) | set(val.elements() if val is not None else ())
            from ase.data import atomic_numbers

            config.elements = tuple(sorted(names, key=atomic_numbers.get))
        config.sampling = samples.sampling
        torch.manual_seed(config.seed)
        model = PannModel(config)
        # What config.json records besides the configuration (written now and again at the end).
        record = {"global_batch": config.batch_size}
        if init is not None:
            record["init"] = _warm_start(model, init)
        if world.is_main:
            _write_config(run_dir, config.to_dict(), world, num_workers, **record)
        t0 = time.perf_counter()
        losses = train_stage1(
            model, samples, run_dir, world=world, progress=progress, num_workers=num_workers
        )
        t1 = time.perf_counter()
        history = train_stage2(model, samples, val, run_dir, world=world, progress=progress)
        if world.is_main:
            history["stage1 voxel MSE"] = losses
            model.history = {
                "stage1_seconds": t1 - t0,
                "stage2_seconds": time.perf_counter() - t1,
                **_selected(history),
                "n_train": len(samples),
                "n_val": len(val) if val is not None else 0,
                "world_size": world.world_size,
            }
            if "init" in record:
                model.history["init"] = record["init"]
            model.save(run_dir)
            _write_config(run_dir, config.to_dict(), world, num_workers, **record)
            _plot_curves(
                {k: history[k] for k in ("stage1 voxel MSE", "stage2 loss", "stage2 val accuracy")},
                run_dir / "loss_curves.png",
                "PANN training",
            )
        barrier(world)
        model.stage1.to("cpu")
        return model
    finally:
        if joined:
            teardown()


def _selected(history: dict) -> dict:
    """Validation accuracies of the kept stage-2 epoch (best balanced accuracy, last on ties)."""
    balanced = history["stage2 val balanced accuracy"]
    k = len(balanced) - 1 - int(np.argmax(balanced[::-1]))
    return {
        "stage2_val_accuracy": history["stage2 val accuracy"][k],
        "stage2_val_balanced_accuracy": balanced[k],
        "stage2_epoch": k + 1,
    }


def _union_elements(elements, selections) -> tuple[str, ...]:
    """The weights' elements plus those of the stores, lightest first.

    The classes may grow only where tracing stays the same: its default minimum distance and
    contrast ratio depend on the elements (:mod:`models.tracing`), and the kept stage 1's
    candidates must be those it was trained with.
    """
    from ase.data import atomic_numbers

    from models.tracing import contrast_ratio, default_min_distance

    names = set(elements)
    for train, val in selections:
        names |= set(train.elements()) | set(val.elements() if val is not None else ())
    union = tuple(sorted(names, key=atomic_numbers.get))
    if union != tuple(elements):
        before = (default_min_distance(elements), contrast_ratio(elements))
        after = (default_min_distance(union), contrast_ratio(union))
        if not np.allclose(before, after):
            raise ValueError(
                f"stores: elements {list(union)} would change how candidates are traced "
                f"(min distance, contrast ratio {before} -> {after}); the weights know "
                f"{list(elements)}"
            )
        logger.info("stage 2 classes: %s (the weights had %s)", union, tuple(elements))
    return union


def train_stage2_only(
    init,
    stores,
    run_dir,
    *,
    epochs=None,
    lr=None,
    seed=0,
    class_weight_power=None,
    progress=True,
    limit=None,
) -> PannModel:
    """Keep the stage 1 of ``init``; train a new stage 2 (``stage2_features=2``) on the union of
    the train splits of ``stores``, selected on the union of their val splits.

    Candidates are traced with ``init``'s stage 1 and cached per store in
    ``run_dir/stage2_cache/<stage-1 digest>/<store name>/`` (a rerun reuses them). Writes
    ``run_dir/pann.pt``, ``config.json`` and ``loss_curves.png``.

    Args:
        init: PANN weights (run directory or ``pann.pt``) whose stage 1 is kept.
        stores: simgen stores, each with a ``train`` (and optionally ``val``) split. Elements
            that ``init`` does not know become new classes when that leaves tracing unchanged
            (:func:`_union_elements`).
        run_dir: Run directory.
        epochs: Stage-2 epochs (default: ``init``'s).
        lr: Learning rate (default: ``init``'s).
        seed: Seed of stage-2 initialisation and sample order.
        class_weight_power: Exponent of the class weights (:func:`class_weights`; default
            ``init``'s).
        limit: Use at most this many samples per split and store.
    """
    from models.data import GraphCache, StoreSamples
    from models.distributed import World

    stores = [Path(s) for s in stores]
    names = [s.name for s in stores]
    if not stores or len(set(names)) != len(names):
        raise ValueError(f"stores={[str(s) for s in stores]}: expected stores with distinct names")
    model = PannModel.load(init)
    record = {"init": _warm_start(model, init)}
    model.stage2 = None
    config = model.config
    config.stage2_features, config.seed = 2, int(seed)
    if epochs is not None:
        config.stage2_epochs = int(epochs)
    if lr is not None:
        config.lr = float(lr)
    if class_weight_power is not None:
        if not 0.0 <= class_weight_power <= 1.0:
            raise ValueError(
                f"class_weight_power={class_weight_power!r}: expected a value in [0, 1]"
            )
        config.class_weight_power = float(class_weight_power)
    selections = [
        (StoreSamples(s, "train", limit=limit), _selection(s, "val", limit)) for s in stores
    ]
    for store, (train, _) in zip(stores, selections):
        if abs(train.sampling - config.sampling) > 1e-6:
            raise ValueError(
                f"stores: {str(store)!r} has sampling {train.sampling} Å, the weights "
                f"{config.sampling} Å"
            )
    config.elements = _union_elements(config.elements, selections)
    run_dir = _open_run_dir(run_dir, "pann train --stage2-only", World())
    world = World()
    _write_config(run_dir, config.to_dict(), world, 0, global_batch=config.batch_size, **record)
    t0 = time.perf_counter()
    digest = _stage1_digest(model)
    train_items, val_items = [], []
    for store, (train, val) in zip(stores, selections):
        cache = GraphCache(run_dir / "stage2_cache" / digest / store.name)
        for part in (train, val):
            if part is not None:
                _fill_graph_cache(model, part, cache, world, progress=progress)
        train_items += _items(train, cache)
        val_items += _items(val, cache)
    t1 = time.perf_counter()
    history = fit_stage2(model, train_items, val_items, progress=progress)
    model.history = {
        "stage2_cache_seconds": t1 - t0,
        "stage2_seconds": time.perf_counter() - t1,
        **_selected(history),
        "n_train": len(train_items),
        "n_val": len(val_items),
        "stores": [str(s) for s in stores],
        "world_size": 1,
        **record,
    }
    model.save(run_dir)
    _write_config(
        run_dir,
        config.to_dict(),
        world,
        0,
        global_batch=config.batch_size,
        stores=model.history["stores"],
        **record,
    )
    _plot_curves(
        {
            k: history[k]
            for k in ("stage2 loss", "stage2 val accuracy", "stage2 val balanced accuracy")
        },
        run_dir / "loss_curves.png",
        "PANN stage 2",
    )
    return model


def train_unet3d(
    store,
    run_dir,
    *,
    steps=300,
    batch_size=4,
    patch=32,
    lr=2e-3,
    seed=0,
    progress=True,
    limit=None,
    device: str = "auto",
    num_workers: int = 0,
    architecture: str = "lee2021",
):
    """Train the 3D U-Net baseline (MSE, volume -> target); write ``unet3d.pt``.

    The network is fully convolutional, so it trains on random ``patch``³ crops and is applied to
    whole volumes. ``architecture="lee2021"`` is the published network
    (:class:`models.unet3d.Lee2021UNet3D`); ``"unet3d-v1"`` the earlier variant.
    """
    import torch.distributed as dist

    from models.data import CropDraws, StepBatches, StoreSamples
    from models.distributed import mean_over_ranks, setup, teardown
    from models.unet3d import build_unet3d

    joined = not dist.is_initialized()
    world = setup(device)
    try:
        if batch_size % world.world_size:
            raise ValueError(
                f"batch_size={batch_size}: expected a multiple of the world size {world.world_size}"
            )
        samples = StoreSamples(store, "train", limit=limit)
        run_dir = _open_run_dir(run_dir, "pann train --model unet3d", world)
        torch.manual_seed(seed)
        net = build_unet3d(architecture).to(world.device)
        train_net = net
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            dev = torch.device(world.device)
            train_net = DistributedDataParallel(
                net, device_ids=[dev.index] if dev.type == "cuda" else None
            )
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        ckpt = run_dir / "unet3d.ckpt"
        start, losses = 0, []
        if ckpt.exists():
            state = load_checkpoint(ckpt, param="resume point", map_location=world.device)
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, losses = int(state["step"]), list(state["losses"])
        if world.is_main:
            _write_config(
                run_dir,
                {"model": "unet3d", "architecture": architecture, "steps": steps, "patch": patch},
                world,
                num_workers,
                global_batch=batch_size,
            )
        draws = CropDraws(samples, patch=patch, total=steps * batch_size, seed=seed)
        batches = StepBatches(start, steps, batch_size, world.rank, world.world_size)
        autocast, scaler = _autocast(world.device)
        net.train()
        bar = progress_bar(
            range(start, steps),
            total=steps,
            initial=start,
            desc="unet3d",
            enabled=progress and world.is_main,
        )
        for step, batch in zip(bar, _loader(draws, batches, num_workers)):
            x, t = batch["x"].to(world.device), batch["t"].to(world.device)
            with autocast():
                out = train_net(x)
            loss = F.mse_loss(out.float(), t)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            losses.append(mean_over_ranks(float(loss.detach()), world))
            if world.is_main and ((step + 1) % CHECKPOINT_EVERY == 0 or step + 1 == steps):
                save_atomic(
                    {
                        "model": net.state_dict(),
                        "optimizer": opt.state_dict(),
                        "step": step + 1,
                        "losses": losses,
                    },
                    ckpt,
                )
        if world.is_main:
            payload = {
                "version": 2,
                "architecture": architecture,
                "model": net.state_dict(),
                "sampling": samples.sampling,
                "elements": list(samples.elements()),
                "steps": steps,
                "patch": patch,
                "batch_size": batch_size,
                "losses": losses,
            }
            save_atomic(payload, run_dir / "unet3d.pt")
            _plot_curves({"unet3d MSE": losses}, run_dir / "unet3d_loss.png", "3D U-Net baseline")
        net.to("cpu").eval()
        return net
    finally:
        if joined:
            teardown()


def load_unet3d(weights=None):
    """A 3D U-Net baseline and its metadata from a run directory, ``unet3d.pt`` or a published
    Lee, Jeong & Yang (2021) state dict (``DL_aug_Pt_FCC_Bf5`` etc.)."""
    from models.unet3d import build_unet3d, from_published_state

    path = Path(weights) if weights else DEFAULT_WEIGHTS
    if path.is_dir():
        path = path / "unet3d.pt"
    if not path.exists():
        raise FileNotFoundError(f"weights={str(weights or DEFAULT_WEIGHTS)!r}: no unet3d.pt found")
    payload = load_checkpoint(path, what="unet3d checkpoint")
    try:
        if "model" in payload:
            net = build_unet3d(payload.get("architecture", "unet3d-v1"))
            net.load_state_dict(payload["model"])
            info = {k: v for k, v in payload.items() if k != "model"}
            info.setdefault("architecture", "unet3d-v1")
        else:
            net, info = from_published_state(payload)
    except CHECKPOINT_ERRORS as exc:
        raise ValueError(
            f"weights={str(path)!r}: not a valid unet3d checkpoint ({type(exc).__name__})"
        ) from None
    net.eval()
    return net, info
