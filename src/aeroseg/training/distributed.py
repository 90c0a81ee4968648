"""One process per GPU with PyTorch DDP, set up from the environment that ``torchrun`` exports.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) training runs in a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from aeroseg.errors import UserError


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and shows progress."""
        return self.rank == 0

    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (a one-item list without DDP)."""
        if self.world_size == 1:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def _pick_device(requested: str | None, local_rank: int, distributed: bool) -> torch.device:
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {requested}: CUDA is not available here; use --device cpu")
        if distributed:  # torchrun: one GPU per process, chosen by LOCAL_RANK
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def setup(requested_device: str | None) -> Distributed:
    """Join the process group when launched by ``torchrun``; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(0, 1, _pick_device(requested_device, 0, distributed=False))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(requested_device, local_rank, distributed=True)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
