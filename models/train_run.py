"""The run directory of a training and what every trainer does the same way.

A run directory holds one training: its marker (so only our runs are resumed), ``config.json``,
checkpoints written every :data:`CHECKPOINT_EVERY` steps, the weights and the loss curves. The
trainers of :mod:`models.train_stage1`, :mod:`models.train_stage2` and
:mod:`models.train_unet3d` share these pieces, and mixed precision and the step loader, from here.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from simgen.tools.outputs import atomic_path, check_output, write_marker, write_text_atomic

__all__ = [
    "CHECKPOINT_EVERY",
    "batch_loader",
    "mixed_precision",
    "open_run_dir",
    "plot_curves",
    "write_config",
]

CHECKPOINT_EVERY = 25  # steps


def batch_loader(dataset, sampler, num_workers: int):
    """A DataLoader that reads ``dataset`` in the batches ``sampler`` gives.

    Args:
        dataset: Seeded draws (:class:`models.data.SlabDraws` or :class:`models.data.CropDraws`).
        sampler: A rank's share of each global batch (:class:`models.data.StepBatches`).
        num_workers: Worker processes (0 reads in the training process).
    """
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )


def open_run_dir(run_dir, command: str, world, param: str = "run_dir") -> Path:
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


def mixed_precision(device: str):
    """Mixed precision on GPUs: bf16 where supported (no scaler needed), else fp16 + GradScaler.

    Returns:
        A factory of the autocast context (``nullcontext`` off the GPU) and the gradient scaler
        (None unless fp16).
    """
    if not device.startswith("cuda"):
        return nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def context():
        return torch.autocast("cuda", dtype=dtype)

    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return context, scaler


def optimiser_step(loss, opt, scaler, clip_parameters=None, max_norm: float = 1.0) -> None:
    """Backward pass and optimiser step, through the fp16 ``scaler`` when there is one.

    With ``clip_parameters`` the gradients are clipped to ``max_norm`` first (unscaled, so the
    norm is the true one). Zero the gradients before calling.
    """
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_parameters is not None:
            scaler.unscale_(opt)
    else:
        loss.backward()
    if clip_parameters is not None:
        torch.nn.utils.clip_grad_norm_(clip_parameters, max_norm)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()


def plot_curves(history: dict, out: Path, title: str):
    """Write a PNG with one panel per curve of ``history`` (log scale where all are positive)."""
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


def write_config(run_dir: Path, config: dict, world, num_workers: int, **extra) -> None:
    """Write ``run_dir/config.json``: the configuration, how the run was spread over processes,
    and ``extra`` (``global_batch`` is required)."""
    record = {
        **config,
        "world_size": world.world_size,
        "global_batch": extra.pop("global_batch"),
        "device": world.device.split(":")[0],
        "num_workers": num_workers,
        **extra,
    }
    write_text_atomic(run_dir / "config.json", json.dumps(record, indent=2))
