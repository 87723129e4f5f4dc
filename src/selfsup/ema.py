"""Exponential moving averages of a model: MoCo's key encoder and Mean Teacher's teacher."""

from __future__ import annotations

import copy

import torch
from torch import nn


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters take no gradient (an EMA target)."""
    target = copy.deepcopy(model)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """``target <- decay * target + (1 - decay) * source``, in place.

    Applies to every parameter and every floating-point buffer (BatchNorm running
    statistics); integer buffers such as ``num_batches_tracked`` are copied. ``target``
    must have ``source``'s structure (e.g. made by :func:`frozen_copy`).

    Args:
        target: The averaged model (key encoder, teacher).
        source: The trained model (query encoder, student).
        decay: Weight of the old average, in [0, 1]; 0 copies ``source``.
    """
    t_params: list[torch.Tensor] = list(target.parameters())
    s_params: list[torch.Tensor] = list(source.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("ema_update needs two models of the same structure")
    torch._foreach_lerp_(t_params, s_params, 1.0 - decay)
    for t_buf, s_buf in zip(target.buffers(), source.buffers(), strict=True):
        if t_buf.dtype.is_floating_point:
            t_buf.lerp_(s_buf, 1.0 - decay)
        else:
            t_buf.copy_(s_buf)
