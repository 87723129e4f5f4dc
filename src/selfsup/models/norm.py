"""Split BatchNorm: per-sub-batch statistics on one device, standing in for several GPUs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics come from ``splits`` disjoint sub-batches.

    Sample ``i`` of a batch is normalised with the statistics of the samples
    ``j == i (mod splits)``, as if each residue class sat on its own GPU. In eval mode
    it is plain BatchNorm with the running statistics (averaged over the sub-batches).
    Works for (N, C) and (N, C, H, W) inputs; parameter and buffer names are
    BatchNorm's, so state dicts load into ordinary BatchNorm layers.
    """

    def __init__(self, num_features: int, splits: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.splits = splits

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 4):
            raise ValueError(f"expected 2D or 4D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (N, C[, H, W]); N must be a multiple of ``splits`` in training."""
        s = self.splits
        if not self.training or s == 1:
            return super().forward(x)
        n, c = x.shape[:2]
        if n % s:
            raise ValueError(f"batch of {n} does not split into {s} BatchNorm sub-batches")
        # (N, C, ...) -> (N / s, s * C, ...): channel block k holds samples k, k + s, ...
        rest = x.shape[2:]
        folded = x.reshape(n // s, s * c, *rest)
        assert self.running_mean is not None and self.running_var is not None
        mean_split = self.running_mean.repeat(s)
        var_split = self.running_var.repeat(s)
        out = F.batch_norm(
            folded,
            mean_split,
            var_split,
            self.weight.repeat(s),
            self.bias.repeat(s),
            True,
            self.momentum if self.momentum is not None else 0.1,
            self.eps,
        )
        # Each sub-batch updated its own copy of the running statistics; keep their mean.
        with torch.no_grad():
            self.running_mean.copy_(mean_split.view(s, c).mean(0))
            self.running_var.copy_(var_split.view(s, c).mean(0))
            if self.num_batches_tracked is not None:
                self.num_batches_tracked += 1
        return out.reshape(x.shape)


def convert_split_bn(module: nn.Module, splits: int) -> nn.Module:
    """Replace every BatchNorm1d/2d in ``module`` by a :class:`SplitBatchNorm` (in place).

    Weights and running statistics are kept. ``splits == 1`` leaves the module alone.
    """
    if splits == 1:
        return module
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(child, SplitBatchNorm):
            new = SplitBatchNorm(child.num_features, splits, child.eps, child.momentum or 0.1)
            new.load_state_dict(child.state_dict())
            new.to(child.weight.device)
            setattr(module, name, new)
        else:
            convert_split_bn(child, splits)
    return module
