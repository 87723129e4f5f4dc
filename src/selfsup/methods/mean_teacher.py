"""Mean Teacher (Tarvainen & Valpola 2017): the consistency target is an EMA of the student."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import FRACTION, Config, setting
from ..ema import ema_update, frozen_copy, two_phase_decay
from .base import Batch
from .common import build_encoder
from .pi_model import PiModel, PiModelSettings


@dataclass
class MeanTeacherSettings(PiModelSettings):
    """Mean Teacher's settings (``method.KEY``): the Pi-model's and the teacher's decay."""

    ema_decay: float = setting(0.999, "EMA decay of the teacher after the ramp-up ...", check=FRACTION)
    ema_decay_rampup: float = setting(0.99, "... and during it.", check=FRACTION)


class MeanTeacher(PiModel):
    """The Pi-model with the target computed by a teacher whose weights average the student's.

    After every optimizer step the teacher becomes ``decay * teacher + (1 - decay) *
    student`` (parameters and BatchNorm statistics), with ``decay = ema_decay_rampup``
    during the consistency ramp-up and ``ema_decay`` after, capped by ``1 - 1/(step + 1)``
    so that early on the teacher is the true average of the steps so far (as the
    authors' code does). The teacher is what ``test_top1`` evaluates; the student's
    accuracy is reported as ``student_test_top1``.

    Args:
        backbone: Student encoder (the teacher starts as its copy).
        num_classes: Number of classes.
        consistency_weight: Maximum weight of the consistency cost.
        rampup_epochs: Length of the sigmoid ramp-up.
        ema_decay: Teacher decay after the ramp-up.
        ema_decay_rampup: Teacher decay during the ramp-up.
    """

    Settings = MeanTeacherSettings

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        consistency_weight: float,
        rampup_epochs: float,
        ema_decay: float,
        ema_decay_rampup: float,
    ) -> None:
        super().__init__(backbone, num_classes, consistency_weight, rampup_epochs)
        self.teacher_backbone = frozen_copy(self.backbone)
        self.teacher_classifier = frozen_copy(self.classifier)
        self.ema_decay, self.ema_decay_rampup = ema_decay, ema_decay_rampup

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> MeanTeacher:
        """Build from ``cfg.model`` and its settings."""
        s: MeanTeacherSettings = cls.settings(cfg)
        return cls(
            build_encoder(cfg), num_classes, s.consistency_weight, s.rampup_epochs, s.ema_decay, s.ema_decay_rampup
        )

    def classifiers(self) -> dict[str, nn.Module]:
        """The teacher (``test_top1``) and the student (``student_test_top1``)."""
        return {
            "test_top1": nn.Sequential(self.teacher_backbone, self.teacher_classifier),
            "student_test_top1": nn.Sequential(self.backbone, self.classifier),
        }

    @torch.no_grad()
    def target_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The consistency target: the teacher's logits."""
        return self.teacher_classifier(self.teacher_backbone(x))

    def after_optimizer_step(self, batch: Batch) -> None:
        """Move the teacher towards the student."""
        decay = two_phase_decay(batch.step, batch.epoch, self.rampup_epochs, self.ema_decay_rampup, self.ema_decay)
        ema_update(self.teacher_backbone, self.backbone, decay)
        ema_update(self.teacher_classifier, self.classifier, decay)
