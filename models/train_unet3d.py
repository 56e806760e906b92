"""Training and loading of the 3D U-Net baseline (Lee, Jeong & Yang 2021).

:func:`train_unet3d` writes ``unet3d.pt`` (this project's format, version 2) in a run directory;
:func:`load_unet3d` reads it back, or a published Lee 2021 state dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.train_run import (
    CHECKPOINT_EVERY,
    batch_loader,
    mixed_precision,
    open_run_dir,
    optimiser_step,
    plot_curves,
    write_config,
)
from models.weights import (
    CHECKPOINT_ERRORS,
    DEFAULT_WEIGHTS,
    load_checkpoint,
    save_atomic,
    weights_file,
)
from simgen.tools.progress import progress_bar

__all__ = ["load_unet3d", "train_unet3d"]


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
        run_dir = open_run_dir(run_dir, "pann train --model unet3d", world)
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
            write_config(
                run_dir,
                {"model": "unet3d", "architecture": architecture, "steps": steps, "patch": patch},
                world,
                num_workers,
                global_batch=batch_size,
            )
        draws = CropDraws(samples, patch=patch, total=steps * batch_size, seed=seed)
        batches = StepBatches(start, steps, batch_size, world.rank, world.world_size)
        autocast, scaler = mixed_precision(world.device)
        net.train()
        bar = progress_bar(
            range(start, steps),
            total=steps,
            initial=start,
            desc="unet3d",
            enabled=progress and world.is_main,
        )
        for step, batch in zip(bar, batch_loader(draws, batches, num_workers)):
            x, t = batch["x"].to(world.device), batch["t"].to(world.device)
            with autocast():
                out = train_net(x)
            loss = F.mse_loss(out.float(), t)
            opt.zero_grad(set_to_none=True)
            optimiser_step(loss, opt, scaler)
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
            plot_curves({"unet3d MSE": losses}, run_dir / "unet3d_loss.png", "3D U-Net baseline")
        net.to("cpu").eval()
        return net
    finally:
        if joined:
            teardown()


def load_unet3d(weights=None):
    """A 3D U-Net baseline and its metadata from a run directory, ``unet3d.pt`` or a published
    Lee, Jeong & Yang (2021) state dict (``DL_aug_Pt_FCC_Bf5`` etc.)."""
    from models.unet3d import build_unet3d, from_published_state

    path = weights_file(weights or DEFAULT_WEIGHTS, "unet3d.pt")
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
