"""LARS against a hand-computed update; schedules; learning-rate scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from selfsup.config import OptimConfig
from selfsup.optim import LARS, build_optimizer, lr_factor, param_groups, scaled_lr


def test_lars_matches_hand_computed_update() -> None:
    w0 = np.array([[3.0, 4.0]])  # ||w|| = 5
    b0 = np.array([1.0])
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w0))
        lin.bias.copy_(torch.tensor(b0))
    lr, mom, wd, eta = 0.5, 0.9, 0.1, 0.01
    opt = LARS(param_groups(lin, wd), lr=lr, momentum=mom, trust_coefficient=eta)
    gw = np.array([[0.6, 0.8]])
    gb = np.array([2.0])
    w, b = w0.copy(), b0.copy()
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(2):
        lin.weight.grad = torch.tensor(gw, dtype=torch.float32)
        lin.bias.grad = torch.tensor(gb, dtype=torch.float32)
        opt.step()
        # By hand: decayed gradient, trust ratio eta * ||w|| / ||g||, momentum on lr * trust * g.
        g = gw + wd * w
        trust = eta * np.linalg.norm(w) / np.linalg.norm(g)
        vw = mom * vw + lr * trust * g
        w = w - vw
        # Bias: no weight decay, no trust ratio.
        vb = mom * vb + lr * gb
        b = b - vb
        np.testing.assert_allclose(lin.weight.detach().numpy(), w, rtol=1e-6)
        np.testing.assert_allclose(lin.bias.detach().numpy(), b, rtol=1e-6)


def test_lars_zero_weight_uses_unit_trust() -> None:
    p = nn.Parameter(torch.zeros(2, 2))
    opt = LARS([{"params": [p], "weight_decay": 0.0, "lars": True}], lr=1.0, momentum=0.0)
    p.grad = torch.ones(2, 2)
    opt.step()
    assert torch.equal(p.detach(), -torch.ones(2, 2))


def test_param_groups_exclude_bias_and_bn() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = param_groups(net, 1e-4)
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[2].weight)}
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0 and not no_decay["lars"]


@pytest.mark.parametrize(
    "name,cls", [("lars", LARS), ("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_build_optimizer(name: str, cls: type) -> None:
    opt = build_optimizer(nn.Linear(3, 2), OptimConfig(name=name, lr=0.1), batch_size=512)
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)


def test_lr_scaling() -> None:
    assert scaled_lr(OptimConfig(lr=0.3), 1024) == pytest.approx(1.2)
    assert scaled_lr(OptimConfig(lr=0.075, lr_scaling="sqrt"), 4096) == pytest.approx(0.3)
    assert scaled_lr(OptimConfig(lr=0.5, lr_scaling="none"), 64) == 0.5


def test_warmup_then_cosine() -> None:
    total, warm = 100, 10
    factors = [lr_factor(s, total, warm) for s in range(total)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:9], factors[1:10]))  # linear ramp
    assert factors[10] == pytest.approx(1.0)
    mid = 10 + 45
    assert factors[mid] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # monotone decay
    assert lr_factor(total, total, warm) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, total, warm, "constant") == 1.0
    steps = [lr_factor(s, 100, 0, "step") for s in range(100)]
    assert steps[:60] == [1.0] * 60 and steps[60:80] == pytest.approx([0.1] * 20)
    assert steps[80:] == pytest.approx([0.01] * 20)
    assert lr_factor(0, total, 0) == 1.0


def test_learning_rate_multipliers_by_parameter_name() -> None:
    from selfsup.optim import set_lr

    model = nn.ModuleDict({"backbone": nn.Linear(3, 4), "head": nn.Linear(4, 2)})
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.4, lr_scaling="none"), 64, {"backbone.": 0.1})
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(model["backbone"].weight)] == pytest.approx(0.04) and lrs[id(model["head"].weight)] == 0.4
    assert lrs[id(model["backbone"].bias)] == pytest.approx(0.04)  # biases too, without weight decay
    set_lr(opt, 0.2)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(model["backbone"].weight)] == pytest.approx(0.02) and lrs[id(model["head"].bias)] == 0.2
    # Without multipliers the groups are what they always were: weights, then biases.
    plain = build_optimizer(model, OptimConfig(name="sgd", lr=0.4, lr_scaling="none"), 64)
    assert [g["weight_decay"] for g in plain.param_groups] == [1e-6, 0.0]


def _lrs(opt: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}


def test_fixed_groups_keep_their_peak_rate() -> None:
    from selfsup.optim import set_lr

    model = nn.ModuleDict({"backbone": nn.Linear(3, 4), "predictor": nn.Linear(4, 4)})
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.4, lr_scaling="none"), 64, fixed=("predictor.",))
    # Weight decay still follows the parameter kind inside the held group.
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(model["predictor"].weight)] == 1e-6 and decay[id(model["predictor"].bias)] == 0.0
    set_lr(opt, 0.1)
    lrs = _lrs(opt)
    assert lrs[id(model["backbone"].weight)] == pytest.approx(0.1)
    assert lrs[id(model["predictor"].weight)] == lrs[id(model["predictor"].bias)] == pytest.approx(0.4)
    assert sum(len(g["params"]) for g in opt.param_groups) == 4


@pytest.mark.parametrize("method", ["simsiam", "byol"])
def test_predictor_learning_rate_options(method: str) -> None:
    from selfsup.config import Config
    from selfsup.methods import build_method
    from selfsup.optim import method_optimizer, set_lr

    cfg = Config()
    cfg.method.name, cfg.model.backbone = method, "preact_resnet8"
    cfg.optim.name, cfg.optim.lr, cfg.optim.lr_scaling = "sgd", 0.2, "none"
    model = build_method(cfg, 10)
    pred, back = model.predictor.parameters().__next__(), model.backbone.parameters().__next__()
    assert len(_lrs(method_optimizer(model, cfg))) == sum(1 for p in model.parameters() if p.requires_grad)
    assert set(_lrs(method_optimizer(model, cfg)).values()) == {0.2}  # the defaults change nothing
    cfg.method.values.update(predictor_lr=10.0, predictor_fixed_lr=True)
    model = build_method(cfg, 10)  # the method owns its settings: they are read when it is built
    pred, back = model.predictor.parameters().__next__(), model.backbone.parameters().__next__()
    opt = method_optimizer(model, cfg)
    set_lr(opt, 0.05)  # the schedule has moved on; the predictor stays at 10 x the peak
    assert _lrs(opt)[id(back)] == pytest.approx(0.05) and _lrs(opt)[id(pred)] == pytest.approx(2.0)
    cfg.method.values["predictor_fixed_lr"] = False
    model = build_method(cfg, 10)
    pred = model.predictor.parameters().__next__()
    opt = method_optimizer(model, cfg)
    set_lr(opt, 0.05)
    assert _lrs(opt)[id(pred)] == pytest.approx(0.5)


def test_predictor_options_ignored_without_a_predictor() -> None:
    from selfsup.config import Config
    from selfsup.methods import build_method
    from selfsup.optim import method_optimizer

    cfg = Config()
    cfg.model.backbone = "preact_resnet8"
    cfg.method.values.update(predictor_lr=10.0, predictor_fixed_lr=True)  # BYOL's keys, in a SimCLR config
    opt = method_optimizer(build_method(cfg, 10), cfg)  # SimCLR: one schedule for all
    assert not any(g.get("fixed_lr") or g.get("lr_mult") for g in opt.param_groups)
