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

import numpy as np
import torch

from ..runtime import step_seed

MAIN_STREAM, LABELED_STREAM = 1, 2


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
