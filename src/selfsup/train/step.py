"""The one training step that pretraining, semi-supervised training and fine-tuning share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..augment import ViewAugment
from ..methods.base import Batch, Method
from ..runtime import autocast

StepFn = Callable[[Batch], dict[str, torch.Tensor]]


@dataclass
class StepContext:
    """Where and how every step of a run computes.

    Attributes:
        device: The training device.
        bf16: Use bf16 autocast.
        step_fn: What computes the losses (default ``model.training_step``; under
            torchrun the DistributedDataParallel wrapper, which syncs gradients).
    """

    device: torch.device
    bf16: bool = False
    step_fn: StepFn | None = None


def train_step(
    model: Method,
    optimizer: torch.optim.Optimizer,
    augment: ViewAugment,
    batch: Batch,
    ctx: StepContext,
) -> dict[str, torch.Tensor]:
    """Augment one batch (each view its own way), run the method's step, update, move EMAs.

    Args:
        model: A method (see :mod:`selfsup.methods`).
        optimizer: Its optimizer, learning rate already set for this step.
        augment: One augmentation per view (the method's ``n_views``).
        batch: The step's record from the sampler: ``images`` uint8 (B, H, W, 3) on the
            device, labels (-1 marks an unlabelled image), the step's generator and its
            place in the run; its ``views`` are filled here.
        ctx: The device, precision and what computes the losses.

    Returns:
        Every scalar the method returned (``loss`` first), detached and still on the
        device: reading them would synchronise.
    """
    if batch.images is not None:
        batch.views = augment(batch.images, batch.generator, positions=batch.positions, total=batch.total,
                              size=batch.size)  # fmt: skip
        batch.images = None
    with autocast(ctx.device, ctx.bf16):
        result = (ctx.step_fn or model.training_step)(batch)
    loss = result["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.after_optimizer_step(batch)
    return {name: value.detach().float() for name, value in result.items()}


class Steps(nn.Module):
    """Makes ``training_step`` the forward pass, so DistributedDataParallel can wrap it."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The wrapped method's ``training_step``."""
        return self.method.training_step(batch)
