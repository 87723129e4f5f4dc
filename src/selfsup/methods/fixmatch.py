"""FixMatch (Sohn et al. 2020): pseudo-labels from weak views train the strong views, with few labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import FRACTION, Config, setting
from ..ema import ema_update, frozen_copy, warmup_decay
from ..losses import embedding_std, fixmatch_unlabeled
from .base import Batch, Method
from .common import build_encoder, linear_classifier
from .supervised import masked_cross_entropy


@dataclass
class FixMatchSettings:
    """FixMatch's settings (``method.KEY``)."""

    threshold: float = setting(0.95, "Confidence a pseudo-label needs (the paper: 0.95).")
    unlabeled_weight: float = setting(1.0, "Weight lambda_u of the unlabelled loss (the paper: 1).")
    ema_decay: float = setting(0.999, "EMA decay of the evaluated weights (the paper: 0.999).", check=FRACTION)


class FixMatch(Method):
    """Cross-entropy on labelled images plus confident pseudo-labels on unlabelled ones.

    Each image has a weak view (flip and translation: the ``supervised`` preset) and a
    strong one (the same plus RandAugment with two operations and Cutout). The loss is
    ``CE(weak labelled) + unlabeled_weight * mean(mask * CE(strong, argmax p_weak))`` with
    ``mask = max p_weak >= threshold`` (0.95). Batches hold ``semi.labeled_batch_size``
    labelled and ``train.batch_size`` unlabelled images (mu = 7 in the paper: set
    ``train.batch_size`` to 7 x the labelled batch). Evaluation uses an EMA of the weights
    (``method.ema_decay``, 0.999 in the paper, capped early by
    :func:`~selfsup.ema.warmup_decay`): ``test_top1``; the raw weights give
    ``student_test_top1``.

    Logged besides the loss: ``mask_rate`` (the fraction of unlabelled images above the
    threshold) and ``pseudo_accuracy`` (how many of those pseudo-labels are right: the
    true labels of the unlabelled images serve this number only).

    Args:
        backbone: Encoder.
        num_classes: Number of classes.
        threshold: Confidence a pseudo-label needs.
        unlabeled_weight: lambda_u.
        ema_decay: Decay of the evaluated weight average.
    """

    default_augment = "supervised"
    view_augment = ({}, {"randaugment_n": 2, "cutout": 0.5})
    uses_labels = True
    semi_supervised = True

    Settings = FixMatchSettings

    def __init__(
        self, backbone: nn.Module, num_classes: int, threshold: float, unlabeled_weight: float, ema_decay: float
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = linear_classifier(backbone, num_classes)
        self.ema_backbone, self.ema_classifier = frozen_copy(backbone), frozen_copy(self.classifier)
        self.threshold, self.unlabeled_weight, self.ema_decay = threshold, unlabeled_weight, ema_decay

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> FixMatch:
        """Build from ``cfg.model`` and its settings."""
        s: FixMatchSettings = cls.settings(cfg)
        return cls(build_encoder(cfg), num_classes, s.threshold, s.unlabeled_weight, s.ema_decay)

    def classifiers(self) -> dict[str, nn.Module]:
        """The weight average (``test_top1``) and the raw weights (``student_test_top1``)."""
        return {
            "test_top1": nn.Sequential(self.ema_backbone, self.ema_classifier),
            "student_test_top1": nn.Sequential(self.backbone, self.classifier),
        }

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Both views of every image in one pass; labelled images use their weak view only.

        Masks select by label (-1 = unlabelled) rather than by indexing, so nothing is read
        back from the device; the strong views of labelled images are computed and unused
        (1/8 of the batch with mu = 7).
        """
        features = self.backbone(batch.views)
        weak, strong = self.classifier(features).chunk(2)
        unlabeled = batch.labels < 0
        ce = masked_cross_entropy(weak, batch.labels)
        per_image, mask, pseudo = fixmatch_unlabeled(weak, strong, self.threshold, reduce=False)
        n_unl = unlabeled.sum().clamp(min=1)
        loss_u = (per_image * mask * unlabeled).sum() / n_unl
        confident = mask & unlabeled
        out = {
            "loss": ce + self.unlabeled_weight * loss_u,
            "ce": ce.detach(),
            "unlabeled_loss": loss_u.detach(),
            "mask_rate": confident.sum() / n_unl,
            "embedding_std": embedding_std(features),
        }
        if batch.truth is not None:  # the hidden labels, for this health signal only
            right = (pseudo == batch.truth) & confident
            out["pseudo_accuracy"] = right.sum() / confident.sum().clamp(min=1)
        return {k: v.float() for k, v in out.items()}

    def after_optimizer_step(self, batch: Batch) -> None:
        """The evaluated weights average the trained ones (``ema_decay``, shorter early on)."""
        decay = warmup_decay(self.ema_decay, batch.step)
        ema_update(self.ema_backbone, self.backbone, decay)
        ema_update(self.ema_classifier, self.classifier, decay)
