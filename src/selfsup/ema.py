"""Exponential moving averages of a model and their decay schedules, in one place.

MoCo's key encoder (constant momentum), Mean Teacher's teacher (:func:`two_phase_decay`),
BYOL's target (:func:`cosine_decay`) and FixMatch's evaluated
average (:func:`warmup_decay`) all move with :func:`ema_update`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters take no gradient (an EMA target)."""
    target = copy.deepcopy(model)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def two_phase_decay(step: int, epoch: float, rampup_epochs: float, during: float, after: float) -> float:
    """Mean Teacher's decay: ``during`` the consistency ramp-up, ``after`` it.

    Capped by ``1 - 1 / (step + 1)`` so that early on the teacher is the true average of
    the steps so far (as the authors' code does).
    """
    decay = during if epoch < rampup_epochs else after
    return min(decay, 1.0 - 1.0 / (step + 1))


def warmup_decay(decay: float, step: int) -> float:
    """A constant decay capped early by ``(1 + step) / (10 + step)``.

    A 0.999 average started at initialisation still holds 1/e of the random weights
    after 1,000 steps; in a short run it evaluates a model that barely trained (far
    below its raw weights after a few hundred steps; docs/methods.md). The
    cap (the ``num_updates`` form of TensorFlow's ExponentialMovingAverage) makes early
    averages short and reaches ``decay`` by itself (0.999 after about 9,000 steps).

    Args:
        decay: The decay of a long run.
        step: Optimizer steps taken so far (0 at the first update).
    """
    return min(decay, (1.0 + step) / (10.0 + step))


def cosine_decay(base: float, progress: float) -> float:
    """BYOL's target decay: ``1 - (1 - base) (cos(pi progress) + 1) / 2``, from ``base`` to 1.

    Args:
        base: The decay at the start (BYOL: 0.996; 0.99 for short CIFAR runs).
        progress: Position in the whole run, in [0, 1].
    """
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


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
