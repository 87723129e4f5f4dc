"""One training run as the engine sees it: a :class:`Job` record.

Pretraining, semi-supervised training and fine-tuning each build a :class:`Job` (the
config, the method, its optimizer, which images each step takes, where records go) and
hand it to the engine (:mod:`selfsup.train.loop`); the time-budget plan
(:mod:`selfsup.train.plan`) times steps of the same job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..augment import ViewAugment, view_configs
from ..config import Config
from ..methods.base import Method
from .sampler import Sampler
from .state import TrainState
from .step import StepContext


class EpochMonitor(Protocol):
    """Measures the model at the end of every ``every``-th epoch (rank 0).

    The kNN monitor of pretraining and fine-tuning's validation are monitors. One that
    keeps state across epochs (fine-tuning's best epoch so far) also has
    ``state_dict()`` and ``load_state_dict(state)``: the engine saves that state with
    every checkpoint and restores it on ``--resume``.
    """

    every: int

    def __call__(self, model: Method, epoch: float) -> dict[str, float]:
        """Scalars to record with the epoch, e.g. ``{"knn_top1": 0.41}``."""
        ...


@dataclass
class Job:
    """Everything one training run needs.

    Attributes:
        cfg: The resolved config: ``train`` (length, seed, checkpoints, logging), ``optim``
            (the learning-rate schedule) and ``augment`` (the views) are read.
        model: The method, on the device.
        optimizer: Its optimizer.
        sampler: Which images each step takes.
        data: uint8 images (N, H, W, 3) and labels (N,), resident on the device.
        run_dir: Where checkpoints and records go (rank 0).
        ctx: The device, precision and what computes the losses.
        extra: More entries for every checkpoint (classes, method name).
        monitor: Measures the model every few epochs (rank 0), or None.
        state: The counters, made here (restored from a checkpoint by :func:`~selfsup.train.loop.start`).
        total: Steps of the whole run (set by :func:`~selfsup.train.loop.start`).
        lr_key: The setting that a run whose loss diverged should lower (named in the error).
    """

    cfg: Config
    model: Method
    optimizer: torch.optim.Optimizer
    sampler: Sampler
    data: tuple[torch.Tensor, torch.Tensor]
    run_dir: Path
    ctx: StepContext
    extra: dict[str, Any] = field(default_factory=dict)
    monitor: EpochMonitor | None = None
    total: int | None = None
    lr_key: str = "optim.lr"
    state: TrainState = field(init=False)

    def __post_init__(self) -> None:
        self.state = TrainState(self.ctx.device)


def view_augment(cfg: Config, method: Method, compile: bool | None = None) -> ViewAugment:
    """The method's views: the run's augmentation with each view's own changes.

    ``compile`` (default ``train.compile``) compiles the augmentation as well as the
    model, on a GPU (see :class:`~selfsup.augment.BatchAugment`).
    """
    compile = cfg.train.compile if compile is None else compile
    return ViewAugment(view_configs(cfg.augment, method.view_augment, method.n_views), compile=compile)
