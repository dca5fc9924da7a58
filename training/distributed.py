"""Process-group plumbing for torchrun: one code path for CPU, one GPU, many GPUs and nodes.

Without torchrun's environment (``WORLD_SIZE`` unset) everything here degrades to a single
process, so the engine never branches on "distributed or not" beyond asking ``is_main()``.
Backends: NCCL on GPUs, gloo on CPU (which is also how the tests exercise multi-process runs).
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "Context",
    "all_gather_objects",
    "all_reduce_mean_",
    "barrier",
    "cleanup",
    "setup",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Context:
    """Join the torchrun job if there is one and pick this process's device.

    ``device`` is ``auto`` (the local GPU when there is one, else CPU), ``cpu`` or ``cuda``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but no GPU is available")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, device_id=dev if use_cuda else None)
        logger.info("rank %d/%d joined (%s, %s)", rank, world_size, backend, dev)
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    """Leave the process group (so torchrun sees a clean exit).

    Whatever still holds the group (a DistributedDataParallel reducer in a reference cycle) is
    collected first: destroyed later, during interpreter shutdown, its Gloo threads can abort
    the process ("terminate called without an active exception"; seen once in CI).
    """
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over processes, in place (no-op in a single process).

    NCCL reduces GPU tensors only, so a CPU tensor makes a round trip through the GPU.
    """
    if not dist.is_initialized():
        return tensor
    work = tensor
    if dist.get_backend() == dist.Backend.NCCL and tensor.device.type == "cpu":
        work = tensor.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    work /= dist.get_world_size()
    if work is not tensor:
        tensor.copy_(work)
    return tensor
