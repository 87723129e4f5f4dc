"""Backbones (a registry) and heads."""

from .backbones import BACKBONES, PreActResNetCifar, build_backbone, feature_dim, register_backbone
from .heads import ProjectionHead

__all__ = ["BACKBONES", "PreActResNetCifar", "ProjectionHead", "build_backbone", "feature_dim", "register_backbone"]
