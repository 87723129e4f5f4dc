"""Multi-process training with torchrun and DistributedDataParallel.

``torchrun --nproc-per-node N -m selfsup pretrain ...`` starts N processes; each joins
the process group (gloo on CPU, NCCL on GPUs), trains on its own 1/N of every global
batch, and DistributedDataParallel averages the gradients. Contrastive losses gather
embeddings from every rank (with gradients flowing back through the gather), so the
negatives are those of the whole global batch, as on one device. Rank 0 alone writes
files. Without torchrun every function here is a no-op.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether this process belongs to a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment, if it describes one.

    Returns:
        True when running with more than one process.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return True


def local_device(name: str) -> str:
    """Under torchrun, 'auto' or 'cuda' means this rank's own GPU."""
    if is_distributed() and torch.cuda.is_available() and name in ("auto", "cuda"):
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return name


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient for this rank's rows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (dist.get_rank() * x.shape[0], (dist.get_rank() + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        # Every rank's loss depends on every rank's rows; all_reduce (which gloo and NCCL
        # both support) sums those gradients, each rank keeps its own rows.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start, end = ctx.rows
        return grad[start:end]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) per rank -> (world_size * n, ...), rank order; differentiable."""
    if not is_distributed():
        return x
    out = _GatherWithGrad.apply(x)
    assert isinstance(out, torch.Tensor)
    return out


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) per rank -> (world_size * n, ...), rank order; no gradient."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ranks (``x`` itself without a process group)."""
    if not is_distributed():
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (a collective: every rank must call it)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable value; ``obj`` itself without a group)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    """Leave the process group (a process that exits inside one can abort in teardown)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()
