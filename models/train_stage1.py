"""Stage 1 of PANN: the refinement network trained on slabs of the store's volumes.

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

The losses are :func:`weighted_voxel_loss` and :func:`physics_loss`; :func:`train_stage1` runs
the resumable optimiser steps (called by :func:`models.train.train_pann`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from models.pann import PannModel
from models.train_run import CHECKPOINT_EVERY, batch_loader, mixed_precision, optimiser_step
from models.weights import load_checkpoint, save_atomic
from simgen.tools.progress import progress_bar

__all__ = ["physics_loss", "train_stage1", "weighted_voxel_loss"]

logger = logging.getLogger(__name__)


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


def train_stage1(
    model: PannModel, samples, run_dir: Path, *, world=None, progress=True, num_workers: int = 0
) -> list[float]:
    """Stage-1 optimiser steps (resumable); returns the voxel loss per step (mean over ranks)."""
    from models.data import SlabDraws, StepBatches
    from models.distributed import World, mean_over_ranks
    from models.projector import gaussian_kernel, psf_kernel
    from simgen.physics.imaging import Microscope

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
    autocast, scaler = mixed_precision(device)
    bar = progress_bar(
        range(start, cfg.stage1_steps),
        total=cfg.stage1_steps,
        initial=start,
        desc="stage 1",
        enabled=progress and world.is_main,
    )
    for step, batch in zip(bar, batch_loader(draws, batches, num_workers)):
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
        optimiser_step(loss, opt, scaler, clip_parameters=net.parameters())
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
