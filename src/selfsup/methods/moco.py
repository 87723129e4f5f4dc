"""MoCo v2 (He et al. 2020; Chen et al. 2020): momentum key encoder and a queue of negatives."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FRACTION, POSITIVE, POSITIVE_INT, Config, setting
from ..distributed import gather
from ..ema import ema_update, frozen_copy
from ..errors import ConfigError
from ..losses import embedding_std, info_nce, info_nce_top1
from ..models import ProjectionHead
from ..models.norm import convert_split_bn
from ..runtime import to_device
from .base import Batch, Method
from .common import build_encoder, projection_head


@dataclass
class MoCoSettings:
    """MoCo's settings (``method.KEY``)."""

    temperature: float = setting(0.2, "InfoNCE temperature (the paper: 0.2).", check=POSITIVE)
    queue_size: int = setting(4096, "Negative keys in the queue (the paper: 65536; CIFAR: 4096).",
                              check=POSITIVE_INT)  # fmt: skip
    momentum: float = setting(0.99, "EMA decay of the key encoder (the paper: 0.999; CIFAR: 0.99).", check=FRACTION)
    bn_splits: int = setting(8, "BatchNorm sub-batches that stand in for GPUs in shuffle-BN (1 = plain BN).",
                             check=POSITIVE_INT)  # fmt: skip


class MoCo(Method):
    """Query encoder + MLP head trained by InfoNCE against a momentum key encoder.

    Per step: the key encoder becomes an EMA of the query encoder (``momentum``), keys of
    the second views are computed without gradient, the loss contrasts each query with
    its key and the ``queue_size`` keys of earlier steps, and the new keys replace the
    oldest in the queue.

    Shuffle-BN on one device: in the paper each GPU normalises its own sub-batch, and
    keys are shuffled across GPUs so that a query and its key never share BatchNorm
    statistics (which would let the model cheat). Here every BatchNorm is a
    :class:`~selfsup.models.norm.SplitBatchNorm` over ``bn_splits`` sub-batches (the
    GPUs), and the key batch is randomly permuted before the key encoder and restored
    after it, so each key is normalised with other samples than its query. This is the
    approach of MoCo's own single-GPU CIFAR demo.

    Args:
        backbone: Query encoder.
        head: Query projection head.
        queue_size: K, the number of negative keys.
        momentum: EMA coefficient m of the key encoder.
        temperature: InfoNCE temperature.
        bn_splits: BatchNorm sub-batches (1 turns shuffle-BN off).
    """

    default_augment = "moco_v2"
    Settings = MoCoSettings

    def __init__(
        self,
        backbone: nn.Module,
        head: ProjectionHead,
        queue_size: int,
        momentum: float,
        temperature: float,
        bn_splits: int,
    ) -> None:
        super().__init__()
        self.backbone = convert_split_bn(backbone, bn_splits)
        self.head = convert_split_bn(head, bn_splits)
        self.key_backbone = frozen_copy(self.backbone)
        self.key_head = frozen_copy(self.head)
        self.momentum, self.temperature, self.bn_splits = momentum, temperature, bn_splits
        dim = head.sizes[-1]
        self.queue: torch.Tensor
        self.queue_ptr: torch.Tensor
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg: Config, num_classes: int) -> MoCo:
        """Build from ``cfg.model`` and ``cfg.method`` (``num_classes`` is unused)."""
        m: MoCoSettings = cls.settings(cfg)
        splits = m.bn_splits
        if cfg.train.batch_size % splits:
            raise ConfigError(
                f"train.batch_size {cfg.train.batch_size} must be a multiple of method.bn_splits {splits}"
            )
        backbone = build_encoder(cfg)
        head = projection_head(cfg, backbone)
        return cls(backbone, head, m.queue_size, m.momentum, m.temperature, splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> query-encoder features (B, feature_dim)."""
        return self.backbone(x)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Normalised keys (B, D) of ``x`` through the shuffled, split-BN key encoder."""
        perm = to_device(torch.randperm(len(x), generator=gen), x.device)
        k = self.key_head(self.key_backbone(x.index_select(0, perm)))  # keys in shuffled order
        k = torch.empty_like(k).index_copy_(0, perm, k)  # back to the input order
        return F.normalize(k.float(), dim=1)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest ``len(keys)`` entries of the queue (FIFO, wrapping around)."""
        k = self.queue.shape[0]
        idx = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % k
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % k)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """InfoNCE of queries (first views) against keys (second views) and the queue.

        Args:
            batch: ``views`` (2B, 3, H, W): B query views then B key views;
                ``generator``: the step's CPU generator (for the key shuffle).

        Returns:
            ``{"loss": scalar}``.
        """
        x_q, x_k = batch.view(0), batch.view(1)
        q = self.head(self.backbone(x_q))  # (B, D)
        k = self._keys(x_k, batch.generator)  # (B, D), no gradient
        # The queue changes below; the loss's backward needs its current values.
        queue = self.queue.clone()
        loss = info_nce(q, k, queue, self.temperature)
        top1 = info_nce_top1(q, k, queue)  # health: is each query's key nearer than the whole queue?
        self._enqueue(gather(k))  # under torchrun: every rank's keys, in rank order
        return {"loss": loss, "contrastive_top1": top1, "embedding_std": embedding_std(q)}

    def after_optimizer_step(self, batch: Batch) -> None:
        """The key encoder becomes an EMA of the query encoder (constant momentum).

        Done here rather than before the next keys: the query encoder does not change in
        between, so the keys are the paper's, and the update is where every EMA is.
        """
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_head, self.head, self.momentum)
