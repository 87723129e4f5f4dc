"""Supervised training with labels: the upper reference of every table, and the few-label baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..losses import embedding_std
from .base import Batch, Method
from .common import build_encoder, linear_classifier


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over samples whose label is not -1 (0 when there are none).

    Unlike ``ignore_index``, a batch without labels gives 0 rather than NaN, and nothing
    is read back from the device.
    """
    known = labels >= 0
    per_sample = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    return (per_sample * known).sum() / known.sum().clamp(min=1)


class Supervised(Method):
    """Encoder + linear classifier trained with cross-entropy on labelled images.

    Args:
        backbone: Encoder.
        num_classes: Number of classes.
        frozen_epochs: Train the classifier alone, the encoder frozen with its BatchNorm
            statistics kept, while the run is this many epochs in (fine-tuning's LP-FT
            head epochs; ``inf`` for a linear classifier on a frozen encoder).
    """

    n_views = 1
    default_augment = "supervised"
    uses_labels = True

    def __init__(self, backbone: nn.Module, num_classes: int, frozen_epochs: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = linear_classifier(backbone, num_classes)
        self.frozen_epochs = frozen_epochs

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> Supervised:
        """Build from ``cfg.model``."""
        return cls(build_encoder(cfg), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> logits (B, C)."""
        return self.classifier(self.backbone(x))

    def classifiers(self) -> dict[str, nn.Module]:
        """Modules mapping images to logits, by the metric name of their test accuracy."""
        return {"test_top1": nn.Sequential(self.backbone, self.classifier)}

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Cross-entropy of ``views`` (B, 3, H, W) against ``labels`` (B,), -1 = unlabelled."""
        if batch.epoch < self.frozen_epochs:
            self.backbone.eval()  # a frozen encoder keeps its BatchNorm statistics
            with torch.no_grad():
                features = self.backbone(batch.views)
        else:
            self.backbone.train(self.training)
            features = self.backbone(batch.views)
        loss = masked_cross_entropy(self.classifier(features), batch.labels)
        return {"loss": loss, "embedding_std": embedding_std(features)}
