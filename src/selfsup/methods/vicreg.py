"""VICReg (Bardes et al. 2022): variance, invariance and covariance regularisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import Check, Config, setting
from ..losses import embedding_std, vicreg_terms
from .base import Batch, Method
from .common import build_encoder, projection_head


@dataclass
class VICRegSettings:
    """VICReg's settings (``method.KEY``)."""

    vicreg_weights: list[float] = setting(
        lambda: [25.0, 25.0, 1.0],
        "Weights of invariance, variance and covariance (the paper: 25, 25, 1).",
        check=Check(lambda v: len(v) == 3 and min(v) >= 0, "needs three weights, none negative"),
        factory=True,
    )


class VICReg(Method):
    """Encoder + expander; the two views' embeddings close, each dimension spread, dimensions decorrelated.

    Args:
        backbone: Encoder.
        projector: The expander MLP (the paper: three layers of 8192 with BatchNorm).
        weights: (invariance, variance, covariance) weights (the paper: 25, 25, 1).
    """

    Settings = VICRegSettings

    def __init__(self, backbone: nn.Module, projector: nn.Module, weights: tuple[float, float, float]) -> None:
        super().__init__()
        self.backbone, self.projector, self.weights = backbone, projector, weights

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> VICReg:
        """Expander ``[features, *model.head_dims]`` (BatchNorm per ``model.head_bn``); ``method.vicreg_weights``."""
        backbone = build_encoder(cfg)
        projector = projection_head(cfg, backbone)
        w = cls.settings(cfg).vicreg_weights
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
