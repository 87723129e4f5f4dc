"""VICReg (Bardes et al. 2022): variance, invariance and covariance regularisation."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config
from ..losses import embedding_std, vicreg_terms
from .base import Batch, Method
from .common import build_encoder, projection_head


class VICReg(Method):
    """Encoder + expander; the two views' embeddings close, each dimension spread, dimensions decorrelated.

    Args:
        backbone: Encoder.
        projector: The expander MLP (the paper: three layers of 8192 with BatchNorm).
        weights: (invariance, variance, covariance) weights (the paper: 25, 25, 1).
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module, weights: tuple[float, float, float]) -> None:
        super().__init__()
        self.backbone, self.projector, self.weights = backbone, projector, weights

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> VICReg:
        """Expander ``[features, *model.head_dims]`` (BatchNorm per ``model.head_bn``); ``method.vicreg_weights``."""
        backbone = build_encoder(cfg)
        projector = projection_head(cfg, backbone)
        w = cfg.method.vicreg_weights
        return cls(backbone, projector, (w[0], w[1], w[2]))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The weighted sum of the three terms; each term is logged too."""
        z1, z2 = self.projector(self.backbone(batch.views)).chunk(2)
        inv, var, cov = vicreg_terms(z1, z2)
        loss = self.weights[0] * inv + self.weights[1] * var + self.weights[2] * cov
        return {
            "loss": loss,
            "invariance": inv.detach(),
            "variance": var.detach(),
            "covariance": cov.detach(),
            "embedding_std": embedding_std(z1),
        }
