"""Training of PANN (both stages) and of the 3D U-Net baseline on a simgen store.

Stage 1 trains on slabs that span the whole volume in z and x and ``slab`` voxels along the tilt
axis y. Because the tilt axis is y, such a slab projects onto exactly the same band of rows of the
measured tilt series, so the physics term (re-project the prediction at the measured angles and
compare with the measured projections) is exact on a patch. Stage 2 trains the species
Transformer on candidates traced in stage-1 outputs, labelled by one-to-one matching to the truth.

Checkpoints are written every few steps; rerunning the same command resumes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.pann import NOT_AN_ATOM, PannConfig, PannModel, build_stage2, volume_scale
from models.weights import CHECKPOINT_ERRORS, DEFAULT_WEIGHTS, load_checkpoint, save_atomic
from simgen.outputs import atomic_path, check_output, write_marker, write_text_atomic
from simgen.progress import progress_bar

__all__ = ["train_pann", "train_unet3d", "load_unet3d", "load_training_samples", "label_candidates"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- data
def load_training_samples(store, split: str, limit: int | None = None) -> list[dict]:
    """The complete samples of one split as dicts of numpy arrays (volumes, series, atoms)."""
    from simgen.store import open_dataset

    ds = open_dataset(store).filter(split=split)
    if len(ds) == 0:
        raise ValueError(f"data={str(store)!r}: no complete samples in split {split!r}")
    n = len(ds) if limit is None else min(limit, len(ds))
    return [ds[i] for i in range(n)]


def _elements_of(samples) -> tuple[str, ...]:
    from ase.data import atomic_numbers, chemical_symbols

    present = sorted({int(z) for s in samples for z in np.unique(s["numbers"])})
    return tuple(sorted((chemical_symbols[z] for z in present), key=lambda e: atomic_numbers[e]))


def _normalised_series(sample) -> np.ndarray:
    from simgen.sample import normalise_tilt_series

    return normalise_tilt_series(sample["tilt_series"], float(sample["dose"]))


def _augment(volume, target, series, rng, angles):
    """Wedge-preserving augmentation of a training triple (see models.augment)."""
    from models.augment import random_wedge_transform

    return random_wedge_transform(volume, target, series, rng, angles=angles)


# ---------------------------------------------------------------------------- stage 1
def _stage1_batch(samples, config: PannConfig, rng, device):
    """A batch of (slab input, global volume, slab origin, slab target, measured rows, angles)."""
    xs, gs, origins, ts, meas, angles = [], [], [], [], [], []
    for _ in range(config.batch_size):
        s = samples[int(rng.integers(len(samples)))]
        volume, target, series = s["volume"], s["target"], _normalised_series(s)
        volume, target, series = _augment(volume, target, series, rng, s["angles"])
        scale = volume_scale(volume)
        ny = volume.shape[1]
        slab = min(config.slab, ny)
        y0 = int(rng.integers(0, ny - slab + 1))
        xs.append(volume[:, y0 : y0 + slab, :] / scale)
        ts.append(target[:, y0 : y0 + slab, :] / scale)
        gs.append(volume / scale)
        origins.append((0, y0, 0))
        meas.append(series[:, y0 : y0 + slab, :] / scale)
        angles.append(np.asarray(s["angles"], dtype=np.float32))

    def stack(arrays):
        return torch.as_tensor(np.stack(arrays)[:, None], dtype=torch.float32, device=device)

    return stack(xs), stack(gs), origins, stack(ts), meas, angles


def _physics_loss(prediction, measured, angles):
    """Mean squared difference between re-projected slabs and the measured rows (per sample angles)."""
    from models.projector import project

    losses = []
    for b in range(prediction.shape[0]):
        proj = project(prediction[b : b + 1], torch.as_tensor(angles[b]))  # (1, A, slab, X)
        target = torch.as_tensor(measured[b], dtype=prediction.dtype, device=prediction.device)[
            None
        ]
        losses.append(F.mse_loss(proj, target) / max(prediction.shape[2], 1))
    return torch.stack(losses).mean()


def _open_run_dir(run_dir, command: str, param: str = "run_dir") -> Path:
    """A new or empty folder, or one of our runs (resumed); never a folder of other files."""
    run_dir = Path(run_dir)
    check_output(run_dir, "run", resume=True, param=param)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_marker(run_dir, "run", command)
    return run_dir


def _save_checkpoint(path: Path, **state):
    save_atomic(state, path)


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
        if np.all(values > 0):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def train_stage1(
    model: PannModel, samples, run_dir: Path, *, progress=True, device="cpu"
) -> list[float]:
    cfg = model.config
    net = model.stage1.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(cfg.stage1_steps, 2), pct_start=0.1
    )
    ckpt = run_dir / "stage1.ckpt"
    start, losses = 0, []
    if ckpt.exists():
        state = load_checkpoint(ckpt, param="resume point", map_location=device)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, losses = state["step"], state["losses"]
        logger.info("resuming stage 1 at step %d", start)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, start]))
    bar = progress_bar(
        range(start, cfg.stage1_steps),
        total=cfg.stage1_steps,
        initial=start,
        desc="stage 1",
        enabled=progress,
    )
    for step in bar:
        x, g, origins, t, meas, angles = _stage1_batch(samples, cfg, rng, device)
        pred = net(x, g, origins)
        voxel = F.mse_loss(pred, t)
        loss = voxel
        if cfg.physics_weight > 0:
            loss = loss + cfg.physics_weight * _physics_loss(pred, meas, angles)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(voxel.detach()))
        bar.set_postfix(mse=f"{float(voxel):.3g}")
        if (step + 1) % 25 == 0 or step + 1 == cfg.stage1_steps:
            _save_checkpoint(
                ckpt,
                model=net.state_dict(),
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                step=step + 1,
                losses=losses,
            )
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


def _stage2_graphs(model: PannModel, samples, *, progress=True):
    cfg = model.config
    graphs = []
    for s in progress_bar(samples, desc="stage 2 graphs", enabled=progress):
        refined = model.refine(s["volume"])
        cand = model.candidates(refined, float(s["sampling"]))
        positions = np.asarray(cand.positions, dtype=np.float64)
        if len(positions) < 2:
            continue
        from models.pann import candidate_features

        features = candidate_features(refined, s["volume"], positions, float(s["sampling"]), cfg)
        labels = label_candidates(
            positions, s["positions"], s["numbers"], list(cfg.classes), cfg.match_radius
        )
        graphs.append((positions, features, labels))
    return graphs


def train_stage2(
    model: PannModel, train_samples, val_samples, run_dir: Path, *, progress=True
) -> dict:
    from models.species import build_graph

    cfg = model.config
    graphs = _stage2_graphs(model, train_samples, progress=progress)
    val_graphs = _stage2_graphs(model, val_samples, progress=progress) if val_samples else []
    if not graphs:
        raise ValueError("data: stage 1 found no candidates in the training volumes")
    all_features = np.concatenate([g[1] for g in graphs])
    mean, std = all_features.mean(axis=0), all_features.std(axis=0) + 1e-6
    model.feature_mean, model.feature_std = mean.astype(np.float32), std.astype(np.float32)

    def to_tensors(gs):
        out = []
        for positions, features, labels in gs:
            ei, ea = build_graph(torch.as_tensor(positions, dtype=torch.float32), k=cfg.knn)
            out.append(
                (
                    torch.as_tensor((features - mean) / std, dtype=torch.float32),
                    ei,
                    ea,
                    torch.as_tensor(labels),
                )
            )
        return out

    train_t, val_t = to_tensors(graphs), to_tensors(val_graphs)
    counts = np.bincount(np.concatenate([g[2] for g in graphs]), minlength=len(cfg.classes)).astype(
        float
    )
    weights = torch.as_tensor(
        np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(cfg.classes), 0.0),
        dtype=torch.float32,
    )
    weights = weights.clamp(max=10.0)
    net = build_stage2(cfg, all_features.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2]))
    history = {"stage2 loss": [], "stage2 val accuracy": []}
    best, best_state = -1.0, None
    for _epoch in progress_bar(range(cfg.stage2_epochs), desc="stage 2", enabled=progress):
        net.train()
        total = 0.0
        for i in rng.permutation(len(train_t)):
            x, ei, ea, y = train_t[i]
            loss = F.cross_entropy(net(x, ei, ea), y, weight=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss)
        history["stage2 loss"].append(total / len(train_t))
        acc = _accuracy(net, val_t or train_t)
        history["stage2 val accuracy"].append(acc)
        if acc >= best:
            best, best_state = acc, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    model.stage2 = net
    return history


def _accuracy(net, graphs) -> float:
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for x, ei, ea, y in graphs:
            correct += int((net(x, ei, ea).argmax(-1) == y).sum())
            total += len(y)
    return correct / max(total, 1)


# ---------------------------------------------------------------------------- entry points
def train_pann(
    store, run_dir, config: PannConfig | None = None, *, progress=True, limit=None
) -> PannModel:
    """Train both PANN stages on the train split of ``store``; write ``run_dir/pann.pt``.

    Rerunning with the same ``run_dir`` resumes stage 1 from its last checkpoint.
    """
    run_dir = _open_run_dir(run_dir, "pann train")
    samples = load_training_samples(store, "train", limit)
    try:
        val = load_training_samples(store, "val", limit)
    except ValueError:
        val = []
    config = config or PannConfig()
    if not config.elements:
        config.elements = _elements_of(samples + val)
    config.sampling = float(samples[0]["sampling"])
    write_text_atomic(run_dir / "config.json", json.dumps(config.to_dict(), indent=2))
    torch.manual_seed(config.seed)
    model = PannModel(config)
    t0 = time.perf_counter()
    losses = train_stage1(model, samples, run_dir, progress=progress)
    t1 = time.perf_counter()
    history = train_stage2(model, samples, val, run_dir, progress=progress)
    history["stage1 voxel MSE"] = losses
    model.history = {
        "stage1_seconds": t1 - t0,
        "stage2_seconds": time.perf_counter() - t1,
        "stage2_val_accuracy": max(history["stage2 val accuracy"]),
        "n_train": len(samples),
        "n_val": len(val),
    }
    model.save(run_dir)
    _plot_curves(
        {k: history[k] for k in ("stage1 voxel MSE", "stage2 loss", "stage2 val accuracy")},
        run_dir / "loss_curves.png",
        "PANN training",
    )
    return model


def train_unet3d(
    store, run_dir, *, steps=300, batch_size=4, patch=32, lr=2e-3, seed=0, progress=True, limit=None
):
    """Train the Lee, Jeong & Yang (2021) 3D U-Net baseline (MSE, volume -> target); write ``unet3d.pt``.

    The network is fully convolutional, so it trains on random ``patch``³ crops (8× cheaper than
    whole 64³ volumes on a CPU) and is applied to whole volumes.
    """
    from models.unet3d import UNet3D

    run_dir = _open_run_dir(run_dir, "pann train --model unet3d")
    samples = load_training_samples(store, "train", limit)
    torch.manual_seed(seed)
    net = UNet3D()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    ckpt = run_dir / "unet3d.ckpt"
    start, losses = 0, []
    if ckpt.exists():
        state = load_checkpoint(ckpt, param="resume point")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, losses = state["step"], state["losses"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3, start]))
    net.train()
    for step in progress_bar(
        range(start, steps), total=steps, initial=start, desc="unet3d", enabled=progress
    ):
        xs, ts = [], []
        for _ in range(batch_size):
            s = samples[int(rng.integers(len(samples)))]
            v, t, _series = _augment(s["volume"], s["target"], None, rng, s["angles"])
            scale = volume_scale(v)
            corner = [int(rng.integers(0, max(n - patch, 0) + 1)) for n in v.shape]
            crop = tuple(slice(c, c + patch) for c in corner)
            xs.append(v[crop] / scale)
            ts.append(t[crop] / scale)
        x = torch.as_tensor(np.stack(xs)[:, None], dtype=torch.float32)
        t = torch.as_tensor(np.stack(ts)[:, None], dtype=torch.float32)
        loss = F.mse_loss(net(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 25 == 0 or step + 1 == steps:
            _save_checkpoint(
                ckpt,
                model=net.state_dict(),
                optimizer=opt.state_dict(),
                step=step + 1,
                losses=losses,
            )
    payload = {
        "version": 1,
        "model": net.state_dict(),
        "sampling": float(samples[0]["sampling"]),
        "elements": list(_elements_of(samples)),
        "steps": steps,
        "patch": patch,
        "batch_size": batch_size,
        "losses": losses,
    }
    save_atomic(payload, run_dir / "unet3d.pt")
    _plot_curves({"unet3d MSE": losses}, run_dir / "unet3d_loss.png", "3D U-Net baseline")
    return net


def load_unet3d(weights=None):
    """The trained 3D U-Net baseline and its metadata from a run directory or ``unet3d.pt``."""
    from models.unet3d import UNet3D

    path = Path(weights) if weights else DEFAULT_WEIGHTS
    if path.is_dir():
        path = path / "unet3d.pt"
    if not path.exists():
        raise FileNotFoundError(f"weights={str(weights or DEFAULT_WEIGHTS)!r}: no unet3d.pt found")
    payload = load_checkpoint(path, what="unet3d checkpoint")
    try:
        net = UNet3D()
        net.load_state_dict(payload["model"])
    except CHECKPOINT_ERRORS as exc:
        raise ValueError(
            f"weights={str(path)!r}: not a valid unet3d checkpoint ({type(exc).__name__})"
        ) from None
    net.eval()
    return net, {k: v for k, v in payload.items() if k != "model"}
