"""Pi-model (Laine & Aila 2017): consistency between two stochastic passes of one network."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import NOT_NEGATIVE, Config, setting
from ..losses import embedding_std, softmax_mse
from .base import Batch, Method
from .common import build_encoder, linear_classifier
from .supervised import masked_cross_entropy


def sigmoid_rampup(epoch: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = epoch / length`` clipped to [0, 1]; 1 when ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(max(epoch / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


@dataclass
class PiModelSettings:
    """The Pi-model's settings (``method.KEY``)."""

    consistency_weight: float = setting(
        100.0, "Maximum weight of the consistency cost (MSE between softmax outputs).", check=NOT_NEGATIVE
    )
    rampup_epochs: float = setting(
        5.0, "Epochs of the sigmoid ramp-up exp(-5 (1 - t)^2) of the consistency weight.", check=NOT_NEGATIVE
    )


class PiModel(Method):
    """Cross-entropy on labelled images plus a ramped-up consistency cost on all images.

    Each image is augmented twice (weak augmentation: flip and translation); the loss is
    ``CE(student(view 1), y) + w(t) * MSE(softmax(student(view 1)), softmax(target(view 2)))``
    with ``w(t) = consistency_weight * exp(-5 (1 - t)^2)`` over ``rampup_epochs``. The
    target is the same network on the second view, not differentiated (as in most
    implementations). Unlabelled images carry label -1.

    Args:
        backbone: Encoder.
        num_classes: Number of classes.
        consistency_weight: Maximum weight of the consistency cost.
        rampup_epochs: Length of the sigmoid ramp-up.
    """

    n_views = 2
    default_augment = "weak"
    uses_labels = True
    semi_supervised = True

    Settings = PiModelSettings

    def __init__(self, backbone: nn.Module, num_classes: int, consistency_weight: float, rampup_epochs: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = linear_classifier(backbone, num_classes)
        self.consistency_weight, self.rampup_epochs = consistency_weight, rampup_epochs

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> PiModel:
        """Build from ``cfg.model`` and its settings."""
        s: PiModelSettings = cls.settings(cfg)
        return cls(build_encoder(cfg), num_classes, s.consistency_weight, s.rampup_epochs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> logits (B, C)."""
        return self.classifier(self.backbone(x))

    def classifiers(self) -> dict[str, nn.Module]:
        """Modules mapping images to logits, by the metric name of their test accuracy."""
        return {"test_top1": nn.Sequential(self.backbone, self.classifier)}

    @torch.no_grad()
    def target_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The consistency target: a second stochastic pass of the same network."""
        return self(x)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One step.

        Args:
            batch: ``views`` (2B, 3, H, W), two views of B images; ``labels`` (B,) with -1
                for unlabelled images; ``epoch`` (float), the training progress.

        Returns:
            ``loss``, and its parts ``ce`` and ``consistency`` (detached).
        """
        x1, x2 = batch.view(0), batch.view(1)
        features = self.backbone(x1)
        logits = self.classifier(features)
        target = self.target_logits(x2)
        ce = masked_cross_entropy(logits, batch.labels)
        consistency = softmax_mse(logits, target)
        weight = self.consistency_weight * sigmoid_rampup(batch.epoch, self.rampup_epochs)
        return {
            "loss": ce + weight * consistency,
            "ce": ce.detach(),
            "consistency": consistency.detach(),
            "embedding_std": embedding_std(features),
        }
