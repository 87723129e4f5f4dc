"""The one training step that pretraining, semi-supervised training and fine-tuning share."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..augment import ViewAugment
from ..methods.base import Batch, Method
from ..runtime import autocast

StepFn = Callable[[Batch], dict[str, torch.Tensor]]


def train_step(
    model: Method,
    optimizer: torch.optim.Optimizer,
    augment: ViewAugment,
    images: torch.Tensor,
    labels: torch.Tensor,
    gen: torch.Generator,
    device: torch.device,
    bf16: bool,
    step: int = 0,
    epoch: float = 0.0,
    progress: float = 0.0,
    step_fn: StepFn | None = None,
    positions: torch.Tensor | None = None,
    total: int | None = None,
    truth: torch.Tensor | None = None,
    size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Augment one batch (each view its own way), run the method's step, update, move EMAs.

    Args:
        model: A method (see :mod:`selfsup.methods`).
        optimizer: Its optimizer, learning rate already set for this step.
        augment: One augmentation per view (the method's ``n_views``).
        images: uint8 (B, H, W, 3) on ``device``.
        labels: (B,) on ``device``; -1 marks an unlabelled image.
        gen: CPU generator for this step's randomness.
        device: The training device.
        bf16: Use bf16 autocast.
        step: Global step index.
        epoch: Training progress in epochs (for ramp-ups).
        progress: Position in the whole run, in [0, 1] (for schedules).
        step_fn: What computes the losses (default ``model.training_step``; under
            torchrun the DistributedDataParallel wrapper, which syncs gradients).
        positions: Under torchrun, where these images sit in the global batch ...
        total: ... of this many images (so augmentation draws as one process would).
        truth: The true labels of these images, for health signals only.
        size: Side of the views in pixels (progressive resizing); None = the images'.

    Returns:
        Every scalar the method returned (``loss`` first), detached and still on the
        device: reading them would synchronise.
    """
    views = augment(images, gen, positions=positions, total=total, size=size)
    batch = Batch(views, labels, gen, step, progress, epoch, truth)
    with autocast(device, bf16):
        result = (step_fn or model.training_step)(batch)
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
