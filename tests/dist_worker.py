"""Run by test_distributed.py under torchrun: one training step on this rank's share.

Writes (rank 0) the loss averaged over ranks, the DistributedDataParallel gradients and
MoCo's queue after the step, for comparison with one process on the global batch.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfsup.distributed import all_reduce_mean, init_from_env, rank, shutdown, world_size
from selfsup.methods import Batch
from selfsup.train.step import Steps

GLOBAL_BATCH = 8


class TinyEncoder(nn.Module):
    """No BatchNorm: per-rank statistics would make ranks differ from one process."""

    feature_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build(method: str) -> nn.Module:
    from selfsup.methods import MoCo, SimCLR
    from selfsup.models import ProjectionHead

    torch.manual_seed(0)
    head = ProjectionHead([6, 8, 5], batch_norm=False)
    if method == "simclr":
        return SimCLR(TinyEncoder(), head, temperature=0.3)
    return MoCo(TinyEncoder(), head, queue_size=12, momentum=0.9, temperature=0.2, bn_splits=1)


def global_views() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2 * GLOBAL_BATCH, 3, 8, 8, generator=g)


def local_views(views: torch.Tensor, part: int, parts: int) -> torch.Tensor:
    b = GLOBAL_BATCH // parts
    v1, v2 = views.chunk(2)
    return torch.cat([v1[part * b : (part + 1) * b], v2[part * b : (part + 1) * b]])


def main(method: str, out: str) -> None:
    init_from_env()
    model = build(method)
    views = local_views(global_views(), rank(), world_size())
    ddp = DistributedDataParallel(Steps(model))
    labels = torch.zeros(len(views) // 2, dtype=torch.long)
    loss = ddp(Batch(views, labels, torch.Generator().manual_seed(2)))["loss"]
    loss.backward()
    mean_loss = all_reduce_mean(loss.detach())
    if rank() == 0:
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        extra = {"queue": model.queue.clone()} if method == "moco" else {}
        torch.save({"loss": mean_loss, "grads": grads, **extra}, out)
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
