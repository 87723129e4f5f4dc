"""Pieces the methods share: the encoder (optionally initialised from a run) and a classifier."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import POSITIVE, Config, setting
from ..errors import CheckpointError, ConfigError
from ..models import ProjectionHead, build_backbone, feature_dim


def build_encoder(cfg: Config) -> nn.Module:
    """``cfg.model.backbone``, with the weights of ``cfg.model.init`` when it is set."""
    backbone = build_backbone(cfg.model.backbone, cfg.model.width, cfg.model.stem)
    if cfg.model.init:
        load_backbone_weights(backbone, cfg.model.init)
    return backbone


def load_backbone_weights(backbone: nn.Module, source: str | Path) -> None:
    """Copy the encoder weights of a run (its newest checkpoint) or checkpoint file into ``backbone``.

    Raises:
        ConfigError: If ``source`` does not exist.
        CheckpointError: If it holds no encoder, or one of another architecture.
    """
    from ..checkpoint import load_checkpoint, load_latest

    path = Path(source)
    if path.is_dir():
        loaded = load_latest(path)
        if loaded is None:
            raise CheckpointError(f"model.init: {path} has no checkpoint to initialise from")
        state = loaded[0]
    elif path.is_file():
        state = load_checkpoint(path)
    else:
        raise ConfigError(f"model.init: {path} does not exist (give a run directory or a checkpoint file)")
    weights = {k.removeprefix("backbone."): v for k, v in state["model"].items() if k.startswith("backbone.")}
    if not weights:
        raise CheckpointError(f"model.init: {path} holds no encoder weights")
    ours = backbone.state_dict()
    if set(weights) != set(ours) or any(weights[k].shape != ours[k].shape for k in ours):
        raise CheckpointError(f"model.init: the encoder in {path} is not a {type(backbone).__name__} of this shape")
    backbone.load_state_dict(weights)


def projection_head(cfg: Config, backbone: nn.Module) -> ProjectionHead:
    """The projection head ``[features, *model.head_dims]``, BatchNorm after hidden layers per ``model.head_bn``."""
    return ProjectionHead([feature_dim(backbone), *cfg.model.head_dims], batch_norm=cfg.model.head_bn)


@dataclass
class PredictorSettings:
    """The settings of a method with a predictor (BYOL, SimSiam; ``method.KEY``)."""

    predictor_hidden: int = setting(512, "Hidden size of the predictor MLP (BYOL: 4096; SimSiam: 512).",
                                    check=POSITIVE)  # fmt: skip
    predictor_lr: float = setting(
        1.0,
        "The predictor's learning rate as a multiple of the others' (Tian et al. 2021, 'Understanding "
        "self-supervised learning dynamics without contrastive pairs': the predictor's relative rate decides "
        "how fast these methods start).",
        check=POSITIVE,
    )
    predictor_fixed_lr: bool = setting(
        False,
        "Keep the predictor at its peak learning rate, without warm-up or decay (SimSiam's paper and code: "
        "'fix_pred_lr').",
    )
    bn_per_view: bool = setting(
        False,
        "Pass each view through the networks on its own, so that BatchNorm normalises each view over its own "
        "batch, as the papers' code does; false: both views in one pass, BatchNorm over all 2B of them (one "
        "larger batch, a little faster on a CPU).",
    )


def predictor_head(hidden: int, dim: int) -> ProjectionHead:
    """BYOL's and SimSiam's predictor: ``dim -> hidden -> dim`` with BatchNorm."""
    return ProjectionHead([dim, hidden, dim], batch_norm=True)


class PredictorRate:
    """Mixin of the methods with a predictor (BYOL, SimSiam): its learning rate is its own.

    ``predictor_lr`` is what :func:`predictor_lr` made of the method's settings.
    """

    predictor_lr: tuple[dict[str, float], tuple[str, ...]] = ({}, ())

    def lr_multipliers(self) -> tuple[dict[str, float], tuple[str, ...]]:
        """The predictor's own rate (``method.predictor_lr``, ``method.predictor_fixed_lr``)."""
        return self.predictor_lr


def predictor_lr(settings: PredictorSettings) -> tuple[dict[str, float], tuple[str, ...]]:
    """The predictor's learning-rate multiplier and whether it is held (see :meth:`Method.lr_multipliers`)."""
    mult = {"predictor.": settings.predictor_lr} if settings.predictor_lr != 1.0 else {}
    return mult, ("predictor.",) if settings.predictor_fixed_lr else ()


def linear_classifier(backbone: nn.Module, num_classes: int) -> nn.Linear:
    """A linear layer from the backbone's features to ``num_classes`` logits."""
    return nn.Linear(feature_dim(backbone), num_classes)


def per_view(fn: Callable[[torch.Tensor], torch.Tensor], views: torch.Tensor, separately: bool) -> torch.Tensor:
    """``fn`` on both views stacked (2B, ...) in one call, or on each view's half on its own.

    Separately, every BatchNorm inside ``fn`` normalises one view over its own B images
    (the BYOL and SimSiam papers' code); in one call, over all 2B. The output is (2B, ...)
    either way, the first view's rows first.
    """
    if not separately:
        return fn(views)
    return torch.cat([fn(v) for v in views.chunk(2)])
