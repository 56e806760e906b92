"""Stage 2 of PANN: the species Transformer trained on candidates traced by stage 1.

Candidates are traced in stage-1 outputs and labelled by one-to-one matching to the truth within
``match_radius`` (:func:`label_candidates`); their positions, features and labels are cached per
sample in the run directory (:class:`models.data.GraphCache`), keyed by a digest of the stage-1
weights and the stage-2 settings (:func:`_stage1_digest`), so a rerun reuses them.
:func:`fit_stage2` trains a new stage 2 on cached graphs and keeps the epoch with the best
balanced accuracy on validation (:func:`stage2_confusion`). :func:`train_stage2` fills the cache
over ranks and fits on rank 0 (called by :func:`models.train.train_pann`);
:func:`models.train.train_stage2_only` fits on the caches of several stores.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.pann import NOT_AN_ATOM, PannModel, build_stage2
from simgen.tools.progress import progress_bar

__all__ = [
    "class_weights",
    "fit_stage2",
    "label_candidates",
    "stage2_confusion",
    "train_stage2",
]

logger = logging.getLogger(__name__)


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
        refined = model.restore_volume(s["volume"], device=world.device)
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
