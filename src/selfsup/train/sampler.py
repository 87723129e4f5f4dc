"""Which images each training step uses: a pure function of (seed, step).

Two streams:

* the main stream walks through the training split in a fresh random order every
  epoch, ``batch_size`` images per step, dropping the remainder (an epoch is
  ``len(train) // batch_size`` steps);
* with ``labeled`` indices (semi-supervised runs) a labelled stream cycles through that
  subset in its own reshuffled orders, ``labeled_batch_size`` images per step.

Because nothing is carried from step to step, a resumed run draws exactly the batches
an uninterrupted one would.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from ..distributed import rank, world_size
from ..methods.base import Batch
from ..runtime import step_seed, to_device

MAIN_STREAM, LABELED_STREAM = 1, 2


class Sampler(Protocol):
    """What the engine asks of a sampler: the steps of an epoch and each step's indices."""

    steps_per_epoch: int

    def __call__(self, step: int) -> tuple[torch.Tensor, int]:
        """(indices, n_labeled): the step's images, the first ``n_labeled`` of them labelled."""
        ...


class StepSampler:
    """Indices of every step's images.

    Args:
        n_images: Size of the training split.
        batch_size: Images per step from the main stream (0 with ``use_main=False``).
        seed: The run's seed.
        labeled: Indices of the labelled subset, or None.
        labeled_batch_size: Labelled images per step.
        use_main: Draw the main stream (False: labelled images only, e.g. supervised
            training on N labels, with the same number of steps per epoch).
    """

    def __init__(
        self,
        n_images: int,
        batch_size: int,
        seed: int,
        labeled: np.ndarray | None = None,
        labeled_batch_size: int = 0,
        use_main: bool = True,
    ) -> None:
        self.n_images, self.batch_size, self.seed = n_images, batch_size, seed
        self.labeled = None if labeled is None else torch.as_tensor(labeled, dtype=torch.long)
        self.labeled_batch_size = labeled_batch_size if labeled is not None else 0
        self.use_main = use_main
        self.steps_per_epoch = n_images // batch_size
        self._perms: dict[tuple[int, int], torch.Tensor] = {}

    def _perm(self, stream: int, epoch: int, n: int) -> torch.Tensor:
        key = (stream, epoch)
        if key not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator().manual_seed(step_seed(self.seed, epoch, stream=stream))
            self._perms[key] = torch.randperm(n, generator=g)
        return self._perms[key]

    def __call__(self, step: int) -> tuple[torch.Tensor, int]:
        """(indices, n_labeled): the first ``n_labeled`` indices are labelled images.

        Without a labelled subset every image counts as labelled (supervised methods
        see all labels; self-supervised ones ignore them).
        """
        parts = []
        if self.labeled is not None:
            n = len(self.labeled)
            start, parts_l = step * self.labeled_batch_size, []
            remaining = self.labeled_batch_size
            while remaining:
                epoch, offset = divmod(start, n)
                take = min(n - offset, remaining)
                parts_l.append(self._perm(LABELED_STREAM, epoch, n)[offset : offset + take])
                start, remaining = start + take, remaining - take
            parts.append(self.labeled[torch.cat(parts_l)])
        if self.use_main:
            epoch, i = divmod(step, self.steps_per_epoch)
            parts.append(self._perm(MAIN_STREAM, epoch, self.n_images)[i * self.batch_size : (i + 1) * self.batch_size])
        idx = torch.cat(parts)
        return idx, (self.labeled_batch_size if self.labeled is not None else len(idx))


class EpochSampler:
    """Every image of a small set once per epoch, in a fresh order, the last batch short.

    Fine-tuning walks its few labelled images this way: dropping the remainder would
    leave up to a batch of them out of every epoch. A last batch of a single image is
    dropped all the same (BatchNorm needs two).

    Args:
        indices: The images (indices into the training split).
        batch_size: Images per step.
        seed: The run's seed.
    """

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int) -> None:
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self.batch_size, self.seed = batch_size, seed
        n = len(self.indices)
        self.steps_per_epoch = n // batch_size + (n % batch_size > 1)

    def __call__(self, step: int) -> tuple[torch.Tensor, int]:
        """(indices, n_labeled): every image of the step counts as labelled."""
        epoch, i = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(step_seed(self.seed, epoch, stream=MAIN_STREAM))
        order = torch.randperm(len(self.indices), generator=g)
        idx = self.indices[order[i * self.batch_size : (i + 1) * self.batch_size]]
        return idx, len(idx)


def local_positions(total: int, n_labeled: int, part: int, parts: int) -> torch.Tensor:
    """Positions of rank ``part``'s share of a global batch of ``total`` images.

    Each rank takes 1/parts of the labelled images (the first ``n_labeled``) and 1/parts
    of the others, so every rank's batch has the same mix.
    """
    n_other = total - n_labeled
    lab = torch.arange(part * n_labeled // parts, (part + 1) * n_labeled // parts)
    other = n_labeled + torch.arange(part * n_other // parts, (part + 1) * n_other // parts)
    return torch.cat([lab, other])


def next_batch(
    sampler: Sampler, step: int, data: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator
) -> Batch:
    """The record of ``step`` (this rank's share under torchrun): images, labels, where they sit.

    Args:
        sampler: Which images each step takes.
        step: The step.
        data: uint8 images (N, H, W, 3) and labels (N,), on the training device.
        generator: The step's CPU generator (its augmentation and any other draw).

    Returns:
        A :class:`~selfsup.methods.base.Batch` with ``images`` set (``views`` empty until
        the step augments them); unlabelled images get label -1, their truth kept apart.
    """
    images, labels = data
    idx_cpu, n_labeled = sampler(step)
    total, positions, parts = len(idx_cpu), None, world_size()
    if parts > 1:  # this rank's share of the global batch
        positions = local_positions(total, n_labeled, rank(), parts)
        idx_cpu, n_labeled = idx_cpu[positions], n_labeled // parts
    idx = to_device(idx_cpu, images.device)
    truth = batch_labels = labels.index_select(0, idx)
    if n_labeled < len(idx):
        batch_labels = truth.clone()  # the truth stays for health signals only
        batch_labels[n_labeled:] = -1  # unlabelled stream: labels hidden
    empty = torch.empty(0, device=images.device)
    return Batch(empty, batch_labels, generator, step=step, truth=truth, images=images.index_select(0, idx),
                 positions=positions, total=total)  # fmt: skip
