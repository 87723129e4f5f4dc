"""SimSiam (Chen & He 2021): a predictor and a stop-gradient, and no negatives or momentum encoder."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config
from ..losses import embedding_std, negative_cosine
from .base import Batch, Method
from .common import (
    PredictorRate,
    PredictorSettings,
    build_encoder,
    per_view,
    predictor_head,
    predictor_lr,
    projection_head,
)


class SimSiam(PredictorRate, Method):
    """Encoder + projector (BatchNorm on every layer, its output too) + predictor.

    The loss is ``D(p1, z2) / 2 + D(p2, z1) / 2`` with ``D(p, z) = -cos(p, stopgrad(z))``;
    the stop-gradient is what keeps the representation from collapsing (its std is logged).

    Args:
        backbone: Encoder.
        projector: Projection MLP, ending in BatchNorm.
        predictor: Bottleneck MLP from projections to predictions.
        bn_per_view: Pass each view through on its own (BatchNorm per view), as the paper's code.
    """

    Settings = PredictorSettings

    def __init__(
        self,
        backbone: nn.Module,
        projector: nn.Module,
        predictor: nn.Module,
        bn_per_view: bool = False,
        lr: tuple[dict[str, float], tuple[str, ...]] = ({}, ()),
    ) -> None:
        super().__init__()
        self.backbone, self.projector, self.predictor = backbone, projector, predictor
        self.bn_per_view = bn_per_view
        self.predictor_lr = lr

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> SimSiam:
        """Projector ``[features, *model.head_dims]`` + BatchNorm; predictor hidden ``method.predictor_hidden``."""
        backbone = build_encoder(cfg)
        head = projection_head(cfg, backbone)
        out = head.sizes[-1]
        # The paper's projector: BN after every fc, the output fc included (no ReLU there).
        projector = nn.Sequential(head, nn.BatchNorm1d(out))
        m: PredictorSettings = cls.settings(cfg)
        return cls(backbone, projector, predictor_head(m.predictor_hidden, out), m.bn_per_view, predictor_lr(m))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Symmetric negative cosine of predictions against the other view's projections."""
        apart = self.bn_per_view  # each view its own BatchNorm batch, or both in one pass
        z = per_view(lambda x: self.projector(self.backbone(x)), batch.views, apart)  # (2B, D)
        p1, p2 = per_view(self.predictor, z, apart).chunk(2)
        z1, z2 = z.chunk(2)
        loss = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2
        return {"loss": loss, "embedding_std": embedding_std(z1)}
