"""Backbones (a registry) and heads."""

from .backbones import (
    BACKBONES,
    BackboneSpec,
    PreActResNetCifar,
    backbone_spec,
    build_backbone,
    feature_dim,
    register_backbone,
    torchvision_target,
)
from .heads import ProjectionHead

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "PreActResNetCifar",
    "ProjectionHead",
    "backbone_spec",
    "build_backbone",
    "feature_dim",
    "register_backbone",
    "torchvision_target",
]
