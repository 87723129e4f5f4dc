"""The method protocol: what the training engine hands a method, and what it gets back.

A method is a :class:`Method` (an ``nn.Module``) in one file of this package plus one
line in the registry (:data:`selfsup.methods.METHODS`). The loop augments each image
once per view (``n_views``, each view with the method's own changes to the
augmentation, ``view_augment``), calls :meth:`Method.training_step` with a
:class:`Batch`, steps the optimizer, then calls :meth:`Method.after_optimizer_step`
(where EMA targets move). A method never builds optimizers or data loaders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import Config
from .settings import settings_from


@dataclass
class Batch:
    """One training step's input.

    Attributes:
        views: (V * B, 3, H, W) normalised views, view ``v`` of image ``i`` at row
            ``v * B + i`` (so ``views.chunk(V)`` gives one tensor per view).
        labels: (B,) class indices; -1 marks an unlabelled image.
        generator: A CPU generator seeded for this step (randomness beyond augmentation).
        step: Global step index, from 0.
        progress: ``step / total_steps``, in [0, 1): the position in the whole run, which
            schedules (EMA momentum, temperatures) follow.
        epoch: ``step / steps_per_epoch``: ramp-ups counted in epochs.
        truth: (B,) the true labels, unlabelled images included, for health signals only
            (e.g. FixMatch's pseudo-label accuracy); None where the loop does not give them.
        images: (B, H, W, 3) uint8, the images before augmentation (the sampler fills
            them, the step turns them into ``views``); None once augmented.
        positions: Under torchrun, where these images sit in the global batch ...
        total: ... of this many images (so augmentation draws as one process would).
        size: Side of the views in pixels (progressive resizing); None = the images'.
    """

    views: torch.Tensor
    labels: torch.Tensor
    generator: torch.Generator
    step: int = 0
    progress: float = 0.0
    epoch: float = 0.0
    truth: torch.Tensor | None = None
    images: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    total: int | None = None
    size: int | None = None

    def view(self, index: int) -> torch.Tensor:
        """(B, 3, H, W): view ``index`` of every image."""
        b = len(self.labels)
        return self.views[index * b : (index + 1) * b]


class Method(nn.Module):
    """Base class of the methods: their class attributes and the two calls of the loop."""

    #: Views the loop augments per image (an instance may set its own, e.g. DINO's crops).
    n_views: int = 2
    #: Augmentation preset when the config names none.
    default_augment: ClassVar[str] = "simclr"
    #: Changes to the augmentation per view (AugmentConfig fields), one mapping per view;
    #: empty: every view alike (e.g. BYOL: blur 1.0 / 0.1, solarize 0.0 / 0.2).
    view_augment: tuple[dict[str, Any], ...] = ()
    #: Whether training reads labels (supervised, semi-supervised methods).
    uses_labels: ClassVar[bool] = False
    #: Whether it learns from few labels and many unlabelled images (``selfsup semi``).
    semi_supervised: ClassVar[bool] = False
    #: Its own settings (``method.KEY``): a dataclass of :func:`selfsup.config.setting`
    #: fields declared beside the method; None for a method without any.
    Settings: ClassVar[type | None] = None

    #: The encoder that evaluation and export use.
    backbone: nn.Module

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> Method:
        """Build the method (encoder, heads) from a config."""
        raise NotImplementedError

    @classmethod
    def settings(cls, cfg: Config) -> Any:
        """This method's settings in ``cfg`` (an instance of :attr:`Settings`), typed and checked."""
        return settings_from(cls.Settings, cfg.method.values)

    def lr_multipliers(self) -> tuple[dict[str, float], tuple[str, ...]]:
        """Learning-rate multipliers by parameter-name prefix, and prefixes held at the peak rate.

        Default: one rate for every parameter (BYOL and SimSiam give their predictor its own).
        """
        return {}, ()

    def projection_head(self) -> nn.Module | None:
        """The head between the encoder and the loss (SimCLR's g), or None for a method without one.

        The methods name it ``head`` (SimCLR, MoCo, DINO) or ``projector`` (BYOL, SimSiam,
        Barlow Twins, VICReg); ``selfsup eval --after-head`` evaluates its output.
        """
        for name in ("head", "projector"):
            module = getattr(self, name, None)
            if isinstance(module, nn.Module):
                return module
        return None

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The loss (``"loss"``, a scalar) and any scalars worth logging (detached)."""
        raise NotImplementedError

    def after_optimizer_step(self, batch: Batch) -> None:
        """Called after every optimizer step with the step's batch (EMA targets move here)."""

    def classifiers(self) -> dict[str, nn.Module]:
        """Modules mapping images to logits, by the metric name of their test accuracy."""
        return {}
