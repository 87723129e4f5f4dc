"""Linear probe: a linear classifier trained on cached, frozen features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ProbeResult:
    """Outcome of :func:`linear_probe`.

    Attributes:
        test_top1: Test accuracy (fraction).
        train_top1: Training accuracy at the end (fraction).
        final_loss: Mean training loss of the last epoch.
        losses: Mean training loss per epoch.
    """

    test_top1: float
    train_top1: float
    final_loss: float
    losses: list[float]


@dataclass
class ProbeSettings:
    """How the linear probe trains.

    Attributes:
        epochs: Passes over the training features.
        lr: Learning rate (constant for Adam; cosine-decayed for SGD).
        batch_size: Mini-batch size.
        optimizer: 'adam' (seed 000's protocol) or 'sgd' (momentum 0.9).
        weight_decay: L2 penalty.
        seed: Initialisation and shuffling seed.
    """

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 256
    optimizer: str = "adam"
    weight_decay: float = 0.0
    seed: int = 0


def linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    settings: ProbeSettings | None = None,
) -> ProbeResult:
    """Train ``nn.Linear(D, C)`` on frozen features with cross-entropy, then test it.

    Features are standardised with the training set's mean and std first (an invertible
    affine map the linear layer could absorb; it only makes the optimisation well
    conditioned). No augmentation: each epoch is a seeded shuffle of the cached features,
    which is what training on a frozen encoder without augmentation computes, minus the
    repeated forward passes.

    Args:
        train: Features (N, D) and int64 labels (N,).
        test: Features (M, D) and int64 labels (M,).
        num_classes: C.
        settings: Epochs, learning rate, batch, optimizer, weight decay, seed (:class:`ProbeSettings`).
    """
    (train_features, train_labels), (test_features, test_labels) = train, test
    p = settings or ProbeSettings()
    epochs, lr, batch_size, optimizer, weight_decay, seed = (
        p.epochs, p.lr, p.batch_size, p.optimizer, p.weight_decay, p.seed
    )  # fmt: skip
    device = train_features.device
    gen = torch.Generator().manual_seed(seed)
    mu = train_features.mean(0, keepdim=True)
    sd = train_features.std(0, keepdim=True).clamp_min(1e-6)
    xtr = (train_features - mu) / sd
    xte = (test_features.to(device) - mu) / sd
    ytr = train_labels.to(device)
    torch.manual_seed(seed)
    clf = nn.Linear(xtr.shape[1], num_classes).to(device)
    steps_per_epoch = max(1, -(-len(xtr) // batch_size))
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
        sched = None
    else:
        opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    losses = []
    with torch.enable_grad():
        for _ in range(epochs):
            perm = torch.randperm(len(xtr), generator=gen).to(device)
            total = torch.zeros((), device=device)
            for start in range(0, len(xtr), batch_size):
                idx = perm[start : start + batch_size]
                loss = F.cross_entropy(clf(xtr[idx]), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total += loss.detach() * len(idx)
            losses.append(float(total) / len(xtr))
    with torch.no_grad():
        test_acc = float((clf(xte).argmax(1).cpu() == test_labels.cpu()).float().mean())
        train_acc = float((clf(xtr).argmax(1) == ytr).float().mean())
    return ProbeResult(test_top1=test_acc, train_top1=train_acc, final_loss=losses[-1], losses=losses)
