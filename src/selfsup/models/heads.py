"""Projection and prediction heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ProjectionHead(nn.Sequential):
    """An MLP built from a list of layer sizes.

    ``ProjectionHead([64, 64, 32])`` is seed 000's head (Linear 64->64, ReLU, Linear 64->32);
    ``ProjectionHead([2048, 2048, 128], batch_norm=True)`` is the SimCLR paper's, with
    BatchNorm after each hidden layer. The last layer is linear, without activation.

    Args:
        sizes: Input size, hidden sizes..., output size; the input size alone is no head
            at all (the identity: SimCLR's "none" projection, Figure 8).
        batch_norm: Put BatchNorm1d between each hidden Linear and its ReLU.
    """

    def __init__(self, sizes: Sequence[int], batch_norm: bool = False) -> None:
        if len(sizes) < 1 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"a head needs positive layer sizes, got {list(sizes)}")
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            layers.append(nn.Linear(n_in, n_out, bias=last or not batch_norm))
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(n_out))
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.sizes = list(sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - (B, in) -> (B, out)
        return super().forward(x)
