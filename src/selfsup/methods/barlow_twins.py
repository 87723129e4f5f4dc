"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of two views' embeddings towards identity."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import NOT_NEGATIVE, Config, setting
from ..losses import barlow_twins, embedding_std
from .base import Batch, Method
from .common import build_encoder, projection_head


@dataclass
class BarlowTwinsSettings:
    """Barlow Twins' settings (``method.KEY``)."""

    lambd: float = setting(0.005, "Weight of the off-diagonal (redundancy) term (the paper: 5e-3).",
                           check=NOT_NEGATIVE)  # fmt: skip


class BarlowTwins(Method):
    """Encoder + projector; invariance on the diagonal, redundancy reduction off it.

    Args:
        backbone: Encoder.
        projector: Projection MLP (the paper: three layers of 8192 with BatchNorm).
        lambd: Weight of the off-diagonal term (the paper: 5e-3).
    """

    Settings = BarlowTwinsSettings

    def __init__(self, backbone: nn.Module, projector: nn.Module, lambd: float) -> None:
        super().__init__()
        self.backbone, self.projector, self.lambd = backbone, projector, lambd

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> BarlowTwins:
        """Projector ``[features, *model.head_dims]`` (BatchNorm per ``model.head_bn``); ``method.lambd``."""
        backbone = build_encoder(cfg)
        projector = projection_head(cfg, backbone)
        return cls(backbone, projector, cls.settings(cfg).lambd)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Barlow Twins' loss of the two views' embeddings."""
        z1, z2 = self.projector(self.backbone(batch.views)).chunk(2)
        return {"loss": barlow_twins(z1, z2, self.lambd), "embedding_std": embedding_std(z1)}
