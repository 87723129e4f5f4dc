"""Training methods, in a plain dict registry.

A method is an ``nn.Module`` with

* ``from_config(cfg, num_classes)``: builds itself (backbone, heads) from a Config;
* ``training_step(batch) -> dict`` with a scalar ``"loss"``; ``batch["views"]`` holds
  ``n_views`` augmented views of B images stacked on dim 0, ``batch["labels"]`` their
  labels (B,), and ``batch["generator"]`` a CPU generator seeded for this step;
* ``backbone``: the encoder that evaluation and export use;
* class attributes ``n_views``, ``default_augment`` (a preset name), ``uses_labels``
  and, for methods that need few labels and many unlabelled images,
  ``semi_supervised = True``;
* optionally ``classifiers() -> {metric name: module images -> logits}`` for methods
  that learn a classifier, and ``after_optimizer_step()``, called after each optimizer
  step.

``batch`` also holds ``step`` (int) and ``epoch`` (float progress, for ramp-ups).

It never builds optimizers or data loaders.
"""

from __future__ import annotations

from torch import nn

from ..config import Config
from ..errors import ConfigError
from .mean_teacher import MeanTeacher
from .moco import MoCo
from .pi_model import PiModel
from .simclr import SimCLR
from .supervised import Supervised

#: name -> method class
METHODS: dict[str, type[nn.Module]] = {
    "simclr": SimCLR,
    "moco": MoCo,
    "supervised": Supervised,
    "pi": PiModel,
    "mean-teacher": MeanTeacher,
}


def method_class(name: str) -> type[nn.Module]:
    """The registered class for ``name``; :class:`ConfigError` if unknown."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r} (method.name); known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_method(cfg: Config, num_classes: int) -> nn.Module:
    """Instantiate ``cfg.method.name`` from the config."""
    return method_class(cfg.method.name).from_config(cfg, num_classes)  # type: ignore[attr-defined]


__all__ = ["METHODS", "MeanTeacher", "MoCo", "PiModel", "SimCLR", "Supervised", "build_method", "method_class"]
