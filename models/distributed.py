"""Data-parallel training under ``torchrun``: process group, device choice, rank-0 duties.

``pann train`` calls :func:`setup` first. Started by ``torchrun --nproc_per_node=N`` (which sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables), it joins the process
group (NCCL on GPUs, gloo on CPUs); started plainly, it is a world of one and nothing changes.
Multi-node runs are the same command with torchrun's rendezvous options (see the README).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "setup", "teardown", "resolve_device", "mean_over_ranks", "barrier"]

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class World:
    """This process's place in the run.

    Args:
        rank: Global rank (0 writes checkpoints, weights and curves).
        world_size: Number of processes.
        local_rank: Rank on this node (selects the GPU).
        device: Torch device of this process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> str:
    """``"cuda:<local_rank>"`` or ``"cpu"`` for ``device`` in ``auto``, ``cpu``, ``cuda``."""
    if device not in DEVICES:
        raise ValueError(f"device={device!r}: expected one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda': no CUDA device is available (use --device cpu or auto)")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def setup(device: str = "auto") -> World:
    """Join the torchrun process group if there is one; return this process's :class:`World`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.startswith("cuda") else "gloo"
        if resolved.startswith("cuda"):
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend=backend)
        logger.info("rank %d of %d joined (%s, %s)", rank, world_size, backend, resolved)
    return World(rank, world_size, local_rank, resolved)


def teardown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def mean_over_ranks(value: float, world: World) -> float:
    """Mean of a scalar over all ranks (identity in a world of one)."""
    if not world.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return float(t.item()) / world.world_size
