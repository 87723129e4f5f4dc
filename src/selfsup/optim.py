"""Optimizers (LARS, SGD, Adam) and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .config import Config, OptimConfig


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as SimCLR uses it: SGD with momentum and a per-layer trust ratio.

    For a parameter ``w`` with gradient ``g`` in a group with ``lars=True``::

        g <- g + weight_decay * w
        trust = eta * ||w|| / ||g||      (1 when either norm is 0)
        v <- momentum * v + lr * trust * g
        w <- w - v

    Groups with ``lars=False`` (biases and BatchNorm, by :func:`param_groups`) skip both
    the weight decay and the trust ratio: ``v <- momentum * v + lr * g``.

    Args:
        params: Parameters or groups; a group may set ``lars`` and ``weight_decay``.
        lr: Learning rate.
        momentum: Momentum factor.
        weight_decay: L2 coefficient, added to the gradient.
        trust_coefficient: eta.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, lars=True
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        """One update (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["lars"]:
                if group["weight_decay"]:
                    grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                w_norms = torch._foreach_norm(params)
                g_norms = torch._foreach_norm(grads)
                scales = []
                for w_n, g_n in zip(w_norms, g_norms):
                    ratio = group["trust_coefficient"] * w_n / g_n
                    # where() rather than an if: no host sync on the device.
                    ok = (w_n > 0) & (g_n > 0)
                    scales.append(torch.where(ok, ratio, torch.ones_like(ratio)) * group["lr"])
                grads = torch._foreach_mul(grads, scales)
            else:
                grads = torch._foreach_mul(grads, group["lr"])
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_sub_(params, bufs)
        return loss


def _excluded(name: str, param: torch.Tensor) -> bool:
    """Biases and normalisation parameters (1-D tensors) get no decay and no adaptation."""
    return param.ndim <= 1 or name.endswith(".bias")


def param_groups(
    model: nn.Module, weight_decay: float, lr_mult: dict[str, float] | None = None, fixed: tuple[str, ...] = ()
) -> list[dict]:
    """Weights (decayed, LARS-adapted) and biases/BN (neither), per learning-rate multiplier.

    Args:
        model: Its trainable parameters are grouped.
        weight_decay: Of the weights.
        lr_mult: Parameter-name prefix -> multiplier of the learning rate (``set_lr``
            applies it), e.g. ``{"backbone.": 0.1}``; the rest get 1.
        fixed: Parameter-name prefixes whose groups are marked ``fixed_lr`` (``set_lr``
            leaves their rate as built).
    """
    mults = lr_mult or {}
    buckets: dict[tuple[bool, float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            mult = next((m for prefix, m in mults.items() if name.startswith(prefix)), 1.0)
            held = bool(fixed) and name.startswith(fixed)
            buckets.setdefault((_excluded(name, p), mult, held), []).append(p)
    groups = []
    for (excluded, mult, held), params in sorted(buckets.items(), key=lambda kv: kv[0]):
        group = {"params": params, "weight_decay": 0.0 if excluded else weight_decay, "lars": not excluded}
        if mult != 1.0:
            group["lr_mult"] = mult
        if held:
            group["fixed_lr"] = True
        groups.append(group)
    if not groups:
        groups = [{"params": [], "weight_decay": weight_decay, "lars": True}]
    return groups


def scaled_lr(cfg: OptimConfig, batch_size: int) -> float:
    """The peak learning rate: ``cfg.lr`` scaled by the batch size relative to 256."""
    if cfg.lr_scaling == "linear":
        return cfg.lr * batch_size / 256
    if cfg.lr_scaling == "sqrt":
        return cfg.lr * math.sqrt(batch_size / 256)
    return cfg.lr


def build_optimizer(
    model: nn.Module,
    cfg: OptimConfig,
    batch_size: int,
    lr_mult: dict[str, float] | None = None,
    fixed: tuple[str, ...] = (),
) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` over ``model``'s trainable parameters.

    Weight decay never applies to biases and BatchNorm parameters; for LARS they are
    also excluded from the trust-ratio adaptation. ``lr_mult`` scales the learning rate
    of parameters by name prefix (see :func:`param_groups`); parameters whose names start
    with a prefix in ``fixed`` keep their peak learning rate (:func:`set_lr` leaves them).
    """
    lr = scaled_lr(cfg, batch_size)
    groups = param_groups(model, cfg.weight_decay, lr_mult, fixed)
    for g in groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, trust_coefficient=cfg.trust_coefficient)
    for g in groups:
        g.pop("lars")
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def method_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The pretraining optimizer: ``cfg.optim`` over a method, with the rates the method asks for.

    A method may give parameter groups their own multiple of the learning rate, or hold
    them at its peak (``lr_multipliers()``: BYOL's and SimSiam's predictor).
    """
    ask = getattr(model, "lr_multipliers", None)
    lr_mult, fixed = ask() if callable(ask) else ({}, ())
    return build_optimizer(model, cfg.optim, cfg.train.batch_size, lr_mult or None, fixed)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str = "cosine") -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based, per iteration).

    Linear warm-up from ``1 / warmup_steps`` to 1 over ``warmup_steps``, then cosine
    decay to 0 at ``total_steps``, constant, or 'step': x0.1 at 60 % and again at 80 % of
    the run (MoCo v1's drops at epochs 120 and 160 of 200).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 0.1 ** sum(step >= f * total_steps for f in (0.6, 0.8))
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (one schedule; a group's ``lr_mult`` scales it).

    Groups marked ``fixed_lr`` (see :func:`build_optimizer`) keep the rate they were built with.
    """
    for group in optimizer.param_groups:
        if not group.get("fixed_lr"):
            group["lr"] = lr * group.get("lr_mult", 1.0)
