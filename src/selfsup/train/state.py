"""What a checkpoint holds, as one object with a format version checked on load."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

#: Bumped whenever the layout below changes; older layouts are read where they can be.
FORMAT = 2


class TrainState:
    """The counters a run carries across steps and checkpoints.

    Every scalar a method returns is summed on the device over the current log interval
    and the current epoch (reading them every step would synchronise a GPU); the loop
    reads the sums when it logs.

    Attributes:
        step: Steps done.
        train_time: Seconds spent in training steps (evaluation and checkpoints excluded).
        count: Steps in the current log interval.
        interval: Per-scalar sums over the current log interval.
        epoch: Per-scalar sums over the current epoch.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.step, self.train_time, self.count = 0, 0.0, 0
        self.interval: dict[str, torch.Tensor] = {}
        self.epoch: dict[str, torch.Tensor] = {}

    def add(self, scalars: dict[str, torch.Tensor]) -> None:
        """Accumulate one step's scalars (on the device, no read-back)."""
        for sums in (self.interval, self.epoch):
            for name, value in scalars.items():
                if name in sums:
                    sums[name] += value
                else:
                    sums[name] = value.clone()
        self.count += 1

    def checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, **extra: Any) -> dict[str, Any]:
        """Everything a checkpoint holds: model, optimizer, CPU RNG, counters, ``extra``.

        The schedule, the data order and the augmentations are not saved: each is a
        function of (seed, step).
        """
        return {
            "format": FORMAT,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "step": self.step,
            "train_time_s": self.train_time,
            "count": self.count,
            "interval_sums": {k: v.cpu() for k, v in self.interval.items()},
            "epoch_sums": {k: v.cpu() for k, v in self.epoch.items()},
            **extra,
        }

    def restore(self, state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load a checkpoint made by :meth:`checkpoint` (or by selfsup's format 1).

        Raises:
            CheckpointError: For a format this version does not read.
        """
        fmt = state.get("format")
        if fmt not in (1, FORMAT):
            raise CheckpointError(
                f"checkpoint format {fmt!r} is not one this selfsup reads ({FORMAT}, or 1); "
                "resume it with the selfsup version that wrote it"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        self.step, self.train_time = int(state["step"]), float(state["train_time_s"])
        if fmt == 1:  # the loss alone, under its own keys
            self.count = int(state["loss_count"])
            interval, epoch = {"loss": state["loss_sum"]}, {"loss": state["epoch_loss_sum"]}
        else:
            self.count, interval, epoch = int(state["count"]), state["interval_sums"], state["epoch_sums"]
        self.interval = {k: v.to(self.device) for k, v in interval.items()}
        self.epoch = {k: v.to(self.device) for k, v in epoch.items()}
