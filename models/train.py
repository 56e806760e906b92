"""Training of PANN (both stages) and of the 3D U-Net baseline on a simgen store.

Data stream from the store (:mod:`models.data`): a sample's chunks are read when a draw needs
them, in DataLoader workers when ``num_workers > 0``, so memory does not grow with the store.
Under ``torchrun`` every rank trains a DistributedDataParallel replica on its share of each global
batch (:mod:`models.distributed`); rank 0 writes checkpoints, weights and curves. Checkpoints are
written every few steps; rerunning the same command resumes.

This module holds the PANN entry points, :func:`train_pann` (stage 1, then stage 2) and
:func:`train_stage2_only` (a new stage 2 behind a kept stage 1, on several stores), with the warm
start and the choice of classes they share. The rest lives in:

- :mod:`models.train_stage1`: the voxel and physics losses and the stage-1 optimiser steps;
- :mod:`models.train_stage2`: candidate labels, the graph cache, fitting and scoring stage 2;
- :mod:`models.train_unet3d`: training and loading the 3D U-Net baseline;
- :mod:`models.train_run`: the run directory, ``config.json``, loss curves, checkpoint cadence,
  mixed precision and the step loader, shared by all trainers.

Their public names, and the stage-2 helpers that scripts use, stay importable from here.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from models.pann import PannConfig, PannModel

# Imports written `name as name` are re-exports (scripts import them from here), unused here.
from models.train_run import CHECKPOINT_EVERY as CHECKPOINT_EVERY
from models.train_run import open_run_dir, plot_curves, write_config
from models.train_stage1 import physics_loss, train_stage1, weighted_voxel_loss
from models.train_stage2 import _accuracies as _accuracies
from models.train_stage2 import _allowed as _allowed
from models.train_stage2 import (
    _fill_graph_cache,
    _items,
    _stage1_digest,
    class_weights,
    fit_stage2,
    label_candidates,
    stage2_confusion,
    train_stage2,
)
from models.train_stage2 import _graph as _graph
from models.train_stage2 import _present as _present
from models.train_unet3d import load_unet3d, train_unet3d
from models.weights import weights_file

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


def load_training_samples(store, split: str, limit: int | None = None) -> list[dict]:
    """The complete samples of one split as dicts of numpy arrays (small stores and tests only;
    training streams with :class:`models.data.StoreSamples`)."""
    from models.data import StoreSamples

    samples = StoreSamples(store, split, limit=limit)
    return [samples[k] for k in range(len(samples))]


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
    path = weights_file(init, "pann.pt")
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
        run_dir = open_run_dir(run_dir, "pann train", world)
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
            write_config(run_dir, config.to_dict(), world, num_workers, **record)
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
            write_config(run_dir, config.to_dict(), world, num_workers, **record)
            plot_curves(
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
    # the new stage 2 predicts with today's inference steps, not those of init's checkpoint
    config.reassign = PannConfig.reassign
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
    run_dir = open_run_dir(run_dir, "pann train --stage2-only", World())
    world = World()
    write_config(run_dir, config.to_dict(), world, 0, global_batch=config.batch_size, **record)
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
    write_config(
        run_dir,
        config.to_dict(),
        world,
        0,
        global_batch=config.batch_size,
        stores=model.history["stores"],
        **record,
    )
    plot_curves(
        {
            k: history[k]
            for k in ("stage2 loss", "stage2 val accuracy", "stage2 val balanced accuracy")
        },
        run_dir / "loss_curves.png",
        "PANN stage 2",
    )
    return model
