"""SimCLR (Chen et al. 2020): two augmented views, encoder, projection head, NT-Xent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import POSITIVE, Config, setting
from ..distributed import gather_with_grad, rank
from ..losses import embedding_std, margin_triplet, nt_logistic, nt_xent, simclr_top1
from .base import Batch, Method
from .common import build_encoder, projection_head


@dataclass
class SimCLRSettings:
    """SimCLR's settings (``method.KEY``)."""

    temperature: float = setting(0.2, "Softmax temperature of the contrastive loss (NT-Logistic's too).",
                                 check=POSITIVE)  # fmt: skip
    loss: Literal["nt-xent", "nt-logistic", "margin-triplet", "dcl"] = setting(
        "nt-xent",
        "'nt-xent' (the paper's), the two it compares with in its Table 2, or 'dcl' (NT-Xent without the "
        "positive in the denominator; Yeh et al. 2022).",
    )
    margin: float = setting(0.5, "Margin of the margin triplet loss, on cosine similarities.", check=POSITIVE)
    semi_hard: bool = setting(
        False, "NT-Logistic, margin triplet: semi-hard negatives only (the paper's Table 4 'sh')."
    )


class SimCLR(Method):
    """Encoder + MLP projection head trained to match two views of each image.

    The loss is NT-Xent, or for seed 002's loss study one of the two SimCLR compares it
    with (``method.loss``: NT-Logistic, margin triplet; these contrast the views of
    each process's own batch under torchrun), or NT-Xent decoupled ('dcl': the positive
    out of the denominator, Yeh et al. 2022).

    Args:
        backbone: Encoder with a ``feature_dim`` attribute.
        head: Projection head from ``feature_dim`` to the embedding size.
        temperature: NT-Xent (and NT-Logistic) temperature.
        loss: 'nt-xent', 'nt-logistic', 'margin-triplet' or 'dcl'.
        margin: The margin triplet loss's margin.
        semi_hard: Semi-hard negatives only (NT-Logistic, margin triplet).
    """

    Settings = SimCLRSettings

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        temperature: float,
        loss: str = "nt-xent",
        margin: float = 0.5,
        semi_hard: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.temperature = temperature
        self.loss, self.margin, self.semi_hard = loss, margin, semi_hard

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> SimCLR:
        """Build from ``cfg.model`` and ``cfg.method`` (``num_classes`` is unused)."""
        backbone = build_encoder(cfg)
        head = projection_head(cfg, backbone)
        m: SimCLRSettings = cls.settings(cfg)
        return cls(backbone, head, m.temperature, m.loss, m.margin, m.semi_hard)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> encoder features (B, feature_dim)."""
        return self.backbone(x)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One loss evaluation.

        Args:
            batch: ``views``: (2B, 3, H, W), the first B rows are view 1 of each image and
                the last B rows view 2.

        Returns:
            ``{"loss": scalar}``.
        """
        # Both views in one forward pass; BatchNorm sees all 2B samples, as in the paper's
        # single-device setting.
        z = self.head(self.backbone(batch.views))  # (2B, D)
        z1, z2 = z.chunk(2)
        if self.loss == "nt-logistic":
            loss = nt_logistic(z1, z2, self.temperature, self.semi_hard)
        elif self.loss == "margin-triplet":
            loss = margin_triplet(z1, z2, self.margin, self.semi_hard)
        else:
            # Under torchrun: negatives from every rank's views, gradients through the gather.
            z1_all, z2_all = gather_with_grad(z1), gather_with_grad(z2)
            loss = nt_xent(
                z1, z2, self.temperature, z1_all, z2_all, offset=rank() * len(z1), decoupled=self.loss == "dcl"
            )
        return {"loss": loss, "contrastive_top1": simclr_top1(z1, z2), "embedding_std": embedding_std(z1)}
