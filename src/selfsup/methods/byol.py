"""BYOL (Grill et al. 2020): an online network with a predictor regresses a slow target network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import FRACTION, Config, setting
from ..ema import cosine_decay, ema_update, frozen_copy
from ..losses import embedding_std, normalized_mse
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


@dataclass
class BYOLSettings(PredictorSettings):
    """BYOL's settings (``method.KEY``): the predictor's, and the target's decay."""

    momentum: float = setting(
        0.99, "Target decay at the start of its cosine schedule towards 1 (the paper: 0.996; CIFAR: 0.99).",
        check=FRACTION,
    )  # fmt: skip


class BYOL(PredictorRate, Method):
    """Online encoder + projector + predictor; target encoder + projector as an EMA of them.

    Per step, each view's online prediction regresses the target projection of the other
    view (normalised MSE, symmetric); the target gets no gradient and, after every
    optimizer step, moves towards the online network with a decay that follows a cosine
    from ``method.momentum`` to 1 over the run. The views are augmented asymmetrically,
    as in the paper: the first never solarised, the second solarised with probability 0.2
    (blur as the preset says, on both views: see ``view_augment``).

    Args:
        backbone: Online encoder (the target starts as its copy).
        projector: Online projection head.
        predictor: Maps projections to predictions of the target's projections.
        base_momentum: Target decay at the start (the paper: 0.996; CIFAR: 0.99).
        bn_per_view: Pass each view through on its own (BatchNorm per view), as the paper's code.
    """

    # The paper's blur (1.0 / 0.1) is for 224-pixel ImageNet crops; CIFAR setups (solo-learn's
    # asymmetric CIFAR recipe) blur neither view, so blur comes from the preset (none for
    # 'simclr'); docs/methods.md compares the two on CIFAR.
    view_augment = ({"solarize_p": 0.0}, {"solarize_p": 0.2})
    Settings = BYOLSettings

    def __init__(
        self,
        backbone: nn.Module,
        projector: nn.Module,
        predictor: nn.Module,
        base_momentum: float,
        bn_per_view: bool = False,
        lr: tuple[dict[str, float], tuple[str, ...]] = ({}, ()),
    ) -> None:
        super().__init__()
        self.backbone, self.projector, self.predictor = backbone, projector, predictor
        self.target_backbone = frozen_copy(backbone)
        self.target_projector = frozen_copy(projector)
        self.base_momentum = base_momentum
        self.bn_per_view = bn_per_view
        self.predictor_lr = lr

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> BYOL:
        """Projector per ``model.head_dims`` and ``model.head_bn``; predictor per ``method.predictor_hidden``."""
        backbone = build_encoder(cfg)
        projector = projection_head(cfg, backbone)
        m: BYOLSettings = cls.settings(cfg)
        predictor = predictor_head(m.predictor_hidden, projector.sizes[-1])
        return cls(backbone, projector, predictor, m.momentum, m.bn_per_view, predictor_lr(m))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``normalized_mse(p1, t2) + normalized_mse(p2, t1)``; logs the projections' spread."""
        apart = self.bn_per_view  # each view its own BatchNorm batch, or both in one pass
        z = per_view(lambda x: self.projector(self.backbone(x)), batch.views, apart)  # (2B, D)
        p1, p2 = per_view(self.predictor, z, apart).chunk(2)
        with torch.no_grad():
            t1, t2 = per_view(lambda x: self.target_projector(self.target_backbone(x)), batch.views, apart).chunk(2)
        loss = normalized_mse(p1, t2) + normalized_mse(p2, t1)
        return {"loss": loss, "embedding_std": embedding_std(z)}

    def after_optimizer_step(self, batch: Batch) -> None:
        """The target follows the online network; its decay rises to 1 by a cosine."""
        decay = cosine_decay(self.base_momentum, batch.progress)
        ema_update(self.target_backbone, self.backbone, decay)
        ema_update(self.target_projector, self.projector, decay)
