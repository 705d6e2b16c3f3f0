"""Multi-process training through torchrun: process group set-up and the few collectives we use.

Launch with ``torchrun --standalone --nproc_per_node=G -m kpdiff.cli train CONFIG`` (one node)
or ``torchrun --nnodes=N --node_rank=R --rdzv_endpoint=HOST:PORT -m kpdiff.cli train CONFIG``
(several); ``-m kpdiff.cli`` because torchrun runs a script or a module, not a console
command. NCCL is used on GPUs, gloo on CPUs. Without torchrun's environment everything runs as
a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from kpdiff.errors import KpdiffInputError

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "amp_dtype",
    "barrier",
    "cleanup",
    "init_distributed",
    "mean",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun set up (if any) and pick this process' device.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (GPU
            ``N`` when single-process; under torchrun each process takes its local rank's GPU).
            Default ``"auto"``.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise KpdiffInputError(
            f"runtime.device: {device!r} asks for a GPU, but CUDA is not available here "
            f"(use 'auto' or 'cpu')"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        # torchrun: one GPU per local rank; one process: the GPU that "cuda:N" names
        index = int(device[5:]) if device.startswith("cuda:") and world == 1 else local_rank
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def barrier() -> None:
    """Wait for every process (no-op when single-process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean(value: float, info: DistInfo) -> float:
    """The mean of a scalar across processes."""
    if not info.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process' ``obj``, in rank order (``[obj]`` when single-process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    """Leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``runtime.amp`` / ``--amp`` (``"bf16"``, ``"fp16"``, ``"none"``)
    on ``device``: ``None`` (no autocast) off CUDA or for ``"none"``.

    Raises:
        KpdiffInputError: another value of ``amp``.
    """
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
    if amp not in dtypes:
        raise KpdiffInputError(f"amp: expected 'bf16', 'fp16' or 'none', got {amp!r}")
    return dtypes[amp] if device.type == "cuda" else None
