"""DINO (Caron et al. 2021): self-distillation with a centred, sharpened EMA teacher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FRACTION, NOT_NEGATIVE, POSITIVE, Config, setting
from ..ema import cosine_decay, ema_update, frozen_copy
from ..losses import dino, dino_teacher_entropy, embedding_std
from ..models import ProjectionHead, feature_dim
from .base import Batch, Method
from .common import build_encoder


@dataclass
class DINOSettings:
    """DINO's settings (``method.KEY``)."""

    out_dim: int = setting(4096, "Outputs of the head's last layer (the paper: 65536; CIFAR setups: 4096).",
                           check=POSITIVE)  # fmt: skip
    student_temp: float = setting(0.1, "Student temperature (the paper: 0.1).", check=POSITIVE)
    teacher_temp: float = setting(0.07, "Teacher temperature after the warm-up ...", check=POSITIVE)
    teacher_temp_start: float = setting(0.04, "... at the start of it ...", check=POSITIVE)
    teacher_temp_warmup: float = setting(30.0, "... and its length in epochs (0 = none).", check=NOT_NEGATIVE)
    center_momentum: float = setting(0.9, "EMA decay of the teacher's output centre (the paper: 0.9).",
                                     check=FRACTION)  # fmt: skip
    momentum: float = setting(
        0.99, "Teacher decay at the start of its cosine schedule towards 1 (the paper: 0.996; CIFAR: 0.99).",
        check=FRACTION,
    )  # fmt: skip
    local_crops: int = setting(
        0, "Small crops (area 5-40 %, same resolution) seen by the student only, beside the two global crops.",
        check=NOT_NEGATIVE,
    )  # fmt: skip
    norm_last_layer: bool = setting(
        True,
        "Fix the norm of each output's weight vector at 1 (the paper's norm_last_layer); false lets it grow, so "
        "the logits, bounded by 1 / temperature otherwise, can sharpen.",
    )


class DINOHead(nn.Module):
    """MLP to a bottleneck, L2 normalisation, then a weight-normalised linear layer to K outputs.

    With ``norm_last`` (the paper's ``norm_last_layer``) the last layer's weight norm is
    fixed at 1, so only its direction is learned and every output lies in [-1, 1];
    without it the norm starts at 1 and is learned too.

    Args:
        sizes: Input size, hidden sizes..., bottleneck size (an MLP with BatchNorm-free GELU
            in the paper; ReLU and BatchNorm here, as the other heads of selfsup).
        out_dim: K, the number of outputs ("prototypes").
        batch_norm: BatchNorm after the MLP's hidden layers (``model.head_bn``).
        norm_last: Fix the last layer's weight norms at 1 (``method.norm_last_layer``).
    """

    def __init__(self, sizes: list[int], out_dim: int, batch_norm: bool = True, norm_last: bool = True) -> None:
        super().__init__()
        self.mlp = ProjectionHead(sizes, batch_norm=batch_norm)
        last = nn.Linear(sizes[-1], out_dim, bias=False)
        self.last = nn.utils.parametrizations.weight_norm(last)
        magnitude = self.last.parametrizations.weight.original0
        magnitude.data.fill_(1.0)
        magnitude.requires_grad_(not norm_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in) -> (B, out_dim)."""
        return self.last(F.normalize(self.mlp(x), dim=1))


class DINO(Method):
    """Student encoder + head; the teacher is their EMA, its outputs centred and sharpened.

    Views: two global crops, plus ``method.local_crops`` smaller crops (crop area 5-40 %,
    at the same resolution: the batch augmentation keeps one image size) that only the
    student sees. The teacher's temperature rises linearly from ``method.teacher_temp_start``
    to ``method.teacher_temp`` over ``method.teacher_temp_warmup`` epochs; its centre is
    an EMA (``method.center_momentum``) of its batch-mean output; its weights follow the
    student with a decay rising from ``method.momentum`` to 1 by a cosine.

    Args:
        backbone: Student encoder (the teacher starts as its copy).
        head: Student head (:class:`DINOHead`).
        settings: Its settings (temperatures, momentum, centre momentum, crops).
    """

    Settings = DINOSettings

    def __init__(self, backbone: nn.Module, head: DINOHead, settings: DINOSettings) -> None:
        super().__init__()
        m = settings
        self.backbone, self.head = backbone, head
        self.teacher_backbone, self.teacher_head = frozen_copy(backbone), frozen_copy(head)
        self.student_temp, self.teacher_temp = m.student_temp, m.teacher_temp
        self.teacher_temp_start, self.warmup = m.teacher_temp_start, m.teacher_temp_warmup
        self.base_momentum, self.center_momentum = m.momentum, m.center_momentum
        self.center: torch.Tensor
        self.register_buffer("center", torch.zeros(head.last.weight.shape[0]))
        # Instance attributes: the number of views depends on the config.
        self.n_views = 2 + m.local_crops
        local: tuple[dict[str, Any], ...] = ({"crop_scale": [0.05, 0.4]},) * m.local_crops
        self.view_augment = ({}, {}, *local) if m.local_crops else ()

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> DINO:
        """Head ``[features, *model.head_dims]`` (the last size the bottleneck) to ``method.out_dim`` outputs."""
        backbone = build_encoder(cfg)
        sizes = [feature_dim(backbone), *cfg.model.head_dims]
        m: DINOSettings = cls.settings(cfg)
        head = DINOHead(sizes, m.out_dim, cfg.model.head_bn, m.norm_last_layer)
        return cls(backbone, head, m)

    def teacher_temperature(self, epoch: float) -> float:
        """Linear warm-up of the teacher's temperature, then constant."""
        if self.warmup <= 0 or epoch >= self.warmup:
            return self.teacher_temp
        return self.teacher_temp_start + (self.teacher_temp - self.teacher_temp_start) * epoch / self.warmup

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """DINO's loss over every (teacher global crop, other student crop) pair; the centre then moves."""
        b = len(batch.labels)
        student = list(self.head(self.backbone(batch.views)).split(b))  # one (B, K) per crop
        temp = self.teacher_temperature(batch.epoch)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(batch.views[: 2 * b]))  # the global crops
        loss = dino(student, list(teacher.split(b)), self.center, self.student_temp, temp)
        entropy = dino_teacher_entropy(teacher, self.center, temp)  # the collapse signal, before the centre moves
        with torch.no_grad():  # the targets above used the old centre; nothing differentiates through it
            self.center.lerp_(teacher.float().mean(0), 1 - self.center_momentum)
        return {
            "loss": loss,
            "embedding_std": embedding_std(student[0]),
            "teacher_temp": loss.new_tensor(temp),
            "teacher_entropy": entropy,
        }

    def after_optimizer_step(self, batch: Batch) -> None:
        """The teacher follows the student, its decay rising to 1 by a cosine."""
        decay = cosine_decay(self.base_momentum, batch.progress)
        ema_update(self.teacher_backbone, self.backbone, decay)
        ema_update(self.teacher_head, self.head, decay)
